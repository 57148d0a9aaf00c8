"""Bring your own algorithm and data: ``ocean-sandbox publish`` (the console script) of a CSV and a Python
script, then the example DAG computes on the two DIDs in a real ``airflow dags test`` process.

The sandbox is the session's shared one; the run gets its own AIRFLOW_HOME with a copy of the session's
migrated metadata DB, as in test_example_dags.py.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.faults import airflow_cli

pytestmark = pytest.mark.chain

REPO = Path(__file__).resolve().parents[2]
CSV = "station,temperature_c\nnorth,10.5\nnorth,12.5\nsouth,20\n"
ALGORITHM = '''\
"""Count rows per station of every input CSV; portable: $INPUTS/$OUTPUTS or the /data defaults."""
import csv, json, os

inputs = os.environ.get("INPUTS", "/data/inputs")
outputs = os.environ.get("OUTPUTS", "/data/outputs")
custom = {}
if os.path.exists(os.path.join(inputs, "algoCustomData.json")):
    custom = json.load(open(os.path.join(inputs, "algoCustomData.json"))) or {}  # null: none sent
group_by = custom.get("group_by", "station")
counts = {}
for root, _dirs, files in os.walk(inputs):
    for name in files:
        if name == "algoCustomData.json":
            continue
        with open(os.path.join(root, name)) as handle:
            for row in csv.DictReader(handle):
                counts[row[group_by]] = counts.get(row[group_by], 0) + 1
with open(os.path.join(outputs, "counts.json"), "w") as handle:
    json.dump(counts, handle)
print("counted", counts)
'''


def publish(sandbox: dict[str, Any], *args: str) -> dict[str, Any]:
    command = [str(Path(sys.executable).with_name("ocean-sandbox")), "--state-dir", sandbox["state_dir"]]
    result = subprocess.run(
        [*command, "publish", *args, "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_example_dag_computes_on_published_csv_and_script(
    sandbox: dict[str, Any], airflow_db: str, tmp_path: Path
) -> None:
    (tmp_path / "readings.csv").write_text(CSV)
    (tmp_path / "count.py").write_text(ALGORITHM)
    algorithm = publish(sandbox, "algorithm", str(tmp_path / "count.py"), "--name", "Row counter")
    dataset = publish(
        sandbox, "dataset", str(tmp_path / "readings.csv"), "--trusted-algorithm", algorithm["did"]
    )
    assert algorithm["did"] != dataset["did"]
    assert (algorithm["kind"], dataset["kind"]) == ("algorithm", "dataset")
    served = Path(sandbox["state_dir"]) / "files"
    assert any(p.name.endswith("-readings.csv") for p in served.iterdir())  # served by the sandbox

    home = tmp_path / "airflow-home"
    results = tmp_path / "results"
    # a pristine migrated DB: the session one holds what this worker's earlier tests wrote
    env = airflow_cli.fresh_home(
        home,
        REPO / "dags",
        AIRFLOW_CONN_OCEAN_DEFAULT=sandbox["conn_json"],
        AIRFLOW_VAR_OCEAN_DATASET_DID=dataset["did"],
        AIRFLOW_VAR_OCEAN_ALGORITHM_DID=algorithm["did"],
        AIRFLOW_VAR_OCEAN_RESULTS_DIR=str(results),
    )
    airflow = str(Path(sys.executable).with_name("airflow"))
    run = subprocess.run(
        [airflow, "dags", "test", "ocean_compute_example"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    with sqlite3.connect(home / "airflow.db") as conn:
        states = dict(conn.execute("SELECT task_id, state FROM task_instance").fetchall())
    assert states == {"pay_and_start": "success", "wait_for_job": "success", "collect_results": "success"}
    [folder] = list(results.iterdir())
    assert json.loads((folder / "counts.json").read_text()) == {"north": 2, "south": 1}
    assert "counted" in (folder / "algorithm.log").read_text()
