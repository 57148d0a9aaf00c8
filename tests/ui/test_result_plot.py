"""The sample algorithm's picture: ``summary.png`` next to the unchanged ``summary.json``/``summary.csv``.

The algorithm runs as C2D would run it (a separate ``python`` process with ``INPUTS``/``OUTPUTS``), and
the PNG is checked with this test suite's own decoder, not with the code that wrote it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ui.support import decode_png

DATA = Path(__file__).resolve().parents[2] / "sandbox" / "ocean_sandbox" / "data"
ALGORITHM = DATA / "sample_algorithm.py"
# The bar colour (76, 132, 196) and whisker colour (200, 60, 40) of the chart.
BAR = bytes((76, 132, 196))
WHISKER = bytes((200, 60, 40))
# summary.csv / summary.json of weather.csv with the default custom data, as before the plot existed.
CSV_TEMPERATURE = "station,count,mean,min,max\nlisbon,180,14.9083,2.8,28.6\noslo,180,2.7783,-8.4,16.7\n"
JSON_TEMPERATURE_SHA256 = "eca6ede976a8cb8ceacab0d06e9accc30fba4c772aa174916b8cb6f3eada91a0"


def run_algorithm(tmp_path: Path, custom: dict | None, csv_text: str | None = None) -> tuple[Path, str]:
    inputs, outputs = tmp_path / "inputs", tmp_path / "outputs"
    (inputs / "6d2e14").mkdir(parents=True)
    outputs.mkdir()
    if csv_text is None:
        shutil.copyfile(DATA / "weather.csv", inputs / "6d2e14" / "0")
    else:
        (inputs / "6d2e14" / "0").write_text(csv_text)
    if custom is not None:
        (inputs / "algoCustomData.json").write_text(json.dumps(custom))
    env = {**os.environ, "INPUTS": str(inputs), "OUTPUTS": str(outputs)}
    result = subprocess.run(
        [sys.executable, str(ALGORITHM)], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    return outputs, result.stdout + result.stderr


def pixels(rows: list[bytes], colour: bytes) -> int:
    return sum(row[i : i + 3] == colour for row in rows for i in range(0, len(row), 3))


def test_plot_is_a_valid_png_of_the_statistics(tmp_path: Path) -> None:
    outputs, log = run_algorithm(tmp_path, {"column": "temperature_c", "group_by": "station"})
    assert "wrote summary.png" in log
    assert sorted(p.name for p in outputs.iterdir()) == ["summary.csv", "summary.json", "summary.png"]
    # The statistics files are byte-for-byte what they were before the plot was added.
    assert (outputs / "summary.csv").read_text() == CSV_TEMPERATURE
    assert hashlib.sha256((outputs / "summary.json").read_bytes()).hexdigest() == JSON_TEMPERATURE_SHA256

    width, height, rows = decode_png((outputs / "summary.png").read_bytes())
    assert (width, height) == (760, 440)
    assert pixels(rows, BAR) > 5000  # two bars
    assert pixels(rows, WHISKER) > 500  # two whiskers with caps
    # Lisbon's bar (mean 14.9) is taller than Oslo's (mean 2.8): count bar pixels per half.
    left = sum(row[i : i + 3] == BAR for row in rows for i in range(0, width * 3 // 2, 3))
    right = sum(row[i : i + 3] == BAR for row in rows for i in range(width * 3 // 2, width * 3, 3))
    assert left > 3 * right


def test_plot_is_deterministic(tmp_path: Path) -> None:
    first, _ = run_algorithm(tmp_path / "a", None)
    second, _ = run_algorithm(tmp_path / "b", None)
    assert (first / "summary.png").read_bytes() == (second / "summary.png").read_bytes()


@pytest.mark.parametrize(
    ("csv_text", "groups"),
    [
        ("g,v\n" + "".join(f"station-{i:02d},{i * 1.5 - 20}\n" for i in range(55)), 55),
        ("g,v\nS\u00e3o Paulo,-3\nS\u00e3o Paulo,-1\nx,-120.5\n", 2),
        ("g,v\nonly,0\n", 1),
    ],
    ids=["many-groups", "negative-unicode", "single-zero"],
)
def test_plot_handles_awkward_data(tmp_path: Path, csv_text: str, groups: int) -> None:
    outputs, log = run_algorithm(tmp_path, {"column": "v", "group_by": "g"}, csv_text)
    assert f"wrote summary for {groups} groups" in log
    width, height, rows = decode_png((outputs / "summary.png").read_bytes())
    assert (width, height) == (760, 440)
    assert pixels(rows, WHISKER) > 0


def test_no_plot_without_values(tmp_path: Path) -> None:
    outputs, log = run_algorithm(tmp_path, {"column": "missing"})
    assert "no numeric values" in log
    assert [p.name for p in outputs.iterdir()] == ["error.txt"]
