"""Smoke runs of the benchmark scripts (``benchmarks/*.py --small``, some sizes smaller still): each starts
its own sandbox, prints its figures and exits 0. Timing goals are not enforced in ``--small`` runs (the
machine is shared); the structural ones (request counts, memory, lazy imports, orders in flight together)
are.

The figures themselves come from the full runs (``python benchmarks/<name>.py``), see
``benchmarks/README.md``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.chain]

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
#: Each script with ``--small`` and, where the smoke run can be smaller still without losing a structural
#: goal, the smallest sizes: 12 jobs (more than the engine's 10 in flight, so some wait queued) over two
#: waiting intervals; one round of the 64 MiB download (held in memory, it would miss the 64 MB goal);
#: half-second blocks, and the hook alone (``--no-oceanpy``: the ocean.py comparison needs PyPI once);
#: the triggerer stop without its ``asyncio.to_thread`` baseline (``--no-baseline``).
SCRIPTS = {
    "batched_polling": ["--small", "--jobs", "12", "--intervals", "2"],
    "stream_results": ["--small", "--rounds", "1"],
    "pay_start": ["--small", "--block-time", "0.5", "--no-oceanpy"],  # no PyPI at test time
    "dag_parse_cost": ["--small"],
    # no sandbox; the to_thread baseline's rounds alone take ~45 s (--small with them: ~75 s)
    "triggerer_stop": ["--small", "--no-baseline"],
}


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_small_run_prints_its_figures_and_passes(name: str, tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in ("AIRFLOW_CONN_OCEAN_DEFAULT", "BENCH_AIRFLOW_HOME")
    }
    env["TMPDIR"] = str(tmp_path)  # every temporary directory of the run lands here
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), *SCRIPTS[name]],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    report = f"stdout:\n{out.stdout[-4000:]}\nstderr:\n{out.stderr[-4000:]}"
    assert out.returncode == 0, report
    assert f"FIGURES {name} {{" in out.stdout, report
    assert f"RESULT {name}: PASS" in out.stdout, report
