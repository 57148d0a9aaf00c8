"""The shipped example DAGs, run with ``airflow dags test`` (a real Airflow CLI process) against the sandbox.

The two runs go in parallel, each with its own fresh AIRFLOW_HOME whose metadata DB is a copy of the
session's migrated one (SQLite has a single writer; both pay with the same wallet, which the provider's
inter-process nonce lock must handle). The secret checks look at what these runs stored.
``airflow dags test`` runs the tasks in-process and writes their logs to its own stdout/stderr (no files
under ``$AIRFLOW_HOME/logs``): the task-log checks therefore read both the log folder and that output.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.faults import airflow_cli

pytestmark = pytest.mark.chain

REPO = Path(__file__).resolve().parents[2]
SCHEDULED_DATE = "2026-03-04"


@dataclass
class CliRun:
    dag_id: str
    home: Path
    returncode: int
    output: str

    @property
    def db(self) -> Path:
        return self.home / "airflow.db"

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute(sql, params).fetchall()

    def dag_run(self) -> tuple[str, str]:
        [(run_id, state)] = self.query("SELECT run_id, state FROM dag_run WHERE dag_id = ?", self.dag_id)
        return run_id, state

    def task_states(self) -> dict[str, str]:
        return dict(self.query("SELECT task_id, state FROM task_instance WHERE dag_id = ?", self.dag_id))

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        [(value,)] = self.query(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = ?", self.dag_id, task_id, key
        )
        return json.loads(value) if isinstance(value, str | bytes) else value


@dataclass
class ExampleRuns:
    results_dir: Path
    example: CliRun
    scheduled: CliRun


@pytest.fixture(scope="module")
def example_runs(
    sandbox: dict[str, Any], airflow_db: str, tmp_path_factory: pytest.TempPathFactory
) -> ExampleRuns:
    results_dir = tmp_path_factory.mktemp("ocean-results")
    airflow = str(Path(sys.executable).with_name("airflow"))

    def launch(dag_id: str, *args: str) -> tuple[str, Path, subprocess.Popen[str]]:
        home = tmp_path_factory.mktemp(f"airflow-home-{dag_id}")
        # a pristine migrated DB: the session one holds what this worker's earlier tests wrote
        env = airflow_cli.fresh_home(
            home,
            REPO / "dags",
            AIRFLOW_CONN_OCEAN_DEFAULT=sandbox["conn_json"],
            AIRFLOW_VAR_OCEAN_DATASET_DID=sandbox["assets"]["dataset"]["did"],
            AIRFLOW_VAR_OCEAN_ALGORITHM_DID=sandbox["assets"]["algorithm"]["did"],
            AIRFLOW_VAR_OCEAN_RESULTS_DIR=str(results_dir),
        )
        process = subprocess.Popen(
            [airflow, "dags", "test", dag_id, *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return dag_id, home, process

    def finish(dag_id: str, home: Path, process: subprocess.Popen[str]) -> CliRun:
        try:
            output, _ = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        return CliRun(dag_id, home, process.returncode, output)

    launched = [launch("ocean_compute_example"), launch("ocean_compute_scheduled", SCHEDULED_DATE)]
    example, scheduled = (finish(*item) for item in launched)
    return ExampleRuns(results_dir, example, scheduled)


def check_summary(path: Path) -> None:
    lines = path.read_text().splitlines()
    assert lines[0] == "station,count,mean,min,max"
    assert len(lines) >= 2
    assert all(len(line.split(",")) == 5 for line in lines)


def test_example_dag_succeeds_and_writes_results(example_runs: ExampleRuns) -> None:
    run = example_runs.example
    assert run.returncode == 0, run.output[-3000:]
    run_id, state = run.dag_run()
    assert state == "success", run.output[-3000:]
    assert run.task_states() == {
        "pay_and_start": "success",
        "wait_for_job": "success",
        "collect_results": "success",
    }
    folder = example_runs.results_dir / run_id.replace(":", "_")
    written = sorted(p.name for p in folder.iterdir())
    assert {"algorithm.log", "summary.csv", "summary.json"} <= set(written)
    check_summary(folder / "summary.csv")
    manifest = run.xcom("collect_results")
    assert sorted(e["name"] for e in manifest) == written  # exactly the files of the manifest
    assert {e["type"] for e in manifest} == {"output", "algorithmLog"}
    job_id = run.xcom("pay_and_start")
    waited = run.xcom("wait_for_job")
    assert waited["job_id"] == job_id
    assert waited["status"] == 70
    assert waited["stopreq"] == 0


def test_scheduled_dag_succeeds_and_partitions_by_date(example_runs: ExampleRuns) -> None:
    run = example_runs.scheduled
    assert run.returncode == 0, run.output[-3000:]
    _run_id, state = run.dag_run()
    assert state == "success", run.output[-3000:]
    assert run.task_states() == {
        "daily_statistics": "success",
        "collect": "success",
    }
    folder = example_runs.results_dir / "daily" / f"ds={SCHEDULED_DATE}"
    written = sorted(p.name for p in folder.iterdir())
    assert {"summary.csv", "summary.json"} <= set(written)
    assert "algorithm.log" not in written  # result_types=["output"]
    manifest = run.xcom("collect")
    assert sorted(e["name"] for e in manifest) == written
    assert {e["type"] for e in manifest} == {"output"}
    check_summary(folder / "summary.csv")
    # rain_mm, as the scheduled DAG asks, not the example's temperature_c
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["column"] == "rain_mm"
    # the results asset got an event carrying the job id
    job_id = run.xcom("daily_statistics")
    extras = [json.loads(e) for (e,) in run.query("SELECT extra FROM asset_event")]
    assert any(e.get("job_id") == job_id for e in extras)


def test_consumer_key_leaks_nowhere(example_runs: ExampleRuns, sandbox: dict[str, Any]) -> None:
    key = sandbox["consumer"]["key"]
    bare = (key[2:] if key.lower().startswith("0x") else key).lower()
    needles = {bare, bare.upper(), "0x" + bare}

    def leaks(text: Any) -> bool:
        return bare in str(text).lower()  # covers the 0x form and any case

    runs = (example_runs.example, example_runs.scheduled)
    # the runs happened and produced task logs worth checking
    for run in runs:
        assert "Paid: dataset" in run.output, run.output[-2000:]
        assert "Started: job" in run.output, run.output[-2000:]
    assert "Algorithm log of job" in example_runs.example.output

    deferred = False
    for run in runs:
        assert not leaks(run.output), f"the private key appears in the task output of {run.dag_id}"
        for path in (p for p in (run.home / "logs").rglob("*") if p.is_file()):
            assert not leaks(path.read_text(errors="replace")), f"the private key appears in {path}"

        # XComs, trigger kwargs and rendered fields in the metadata DB ...
        xcoms = run.query("SELECT dag_id, task_id, key, value FROM xcom WHERE dag_id = ?", run.dag_id)
        assert len(xcoms) >= 4
        for dag_id, task_id, xcom_key, value in xcoms:
            assert not leaks(value), f"the private key is in XCom {dag_id}.{task_id}.{xcom_key}"
        for classpath, kwargs in run.query("SELECT classpath, kwargs FROM trigger"):
            deferred |= classpath == "airflow_provider_ocean.triggers.ocean.OceanComputeJobTrigger"
            assert not leaks(kwargs)
            assert sandbox["consumer"]["address"].lower() not in kwargs.lower()
        for (fields,) in run.query("SELECT rendered_fields FROM rendered_task_instance_fields"):
            assert not leaks(fields)
        # ... and not anywhere else in the database file either
        raw = run.db.read_bytes()
        for needle in needles:
            assert needle.encode() not in raw, f"the private key is stored in {run.db}"
    # the scheduled DAG's start operator always defers (its job outlasts the first check)
    assert deferred
