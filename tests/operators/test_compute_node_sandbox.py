"""The operators, the sensor, the trigger and the results operator in real Airflow (``dag.test()``) against
the sandbox's **Ocean Node** personality: the same DAG code as for a Provider v4, with the connection
pointing at a node (backend detected from ``GET /``) and the node-only parameters where they apply.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import DAG

from airflow_provider_ocean.escrow import EscrowPayer
from airflow_provider_ocean.hooks.ocean import OceanComputeHook
from airflow_provider_ocean.operators.compute import OceanComputeStartOperator
from airflow_provider_ocean.operators.results import OceanComputeResultsOperator
from airflow_provider_ocean.sensors.ocean import OceanComputeJobStatusSensor
from tests.operators.support import (
    failure,
    record_failure,
    run_dag,
    stop_if_running,
    task_states,
    unique_dag_id,
    xcom,
)

pytestmark = pytest.mark.chain

ONE = 10**18
NODE_JOB_ID = re.compile(r"^[0-9a-f]{64}-[0-9a-f]{64}$")
SAMPLE = Path(__file__).parents[2] / "airflow_provider_ocean" / "sandbox" / "data" / "sample_algorithm.py"


@pytest.fixture
def node_conn(node_sandbox: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_OCEAN_NODE", node_sandbox["conn_json"])
    return "ocean_node"


def weather(info: dict[str, Any]) -> str:
    return info["provider_url"] + "/sandbox/files/weather.csv"


def sample(**extra: Any) -> dict[str, Any]:
    return {
        "rawcode": SAMPLE.read_text(),
        "container": {"entrypoint": "python $ALGO", "image": "python"},
        **extra,
    }


def dag_with(dag_id: str, build: Any) -> DAG:
    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        build()
    return dag


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_free_job_then_results_unpacked(
    node_conn: str, node_sandbox: dict[str, Any], airflow_db: str, tmp_path: Path, deferrable: bool
) -> None:
    dag_id = unique_dag_id("node_free")
    destination = tmp_path / "results"

    def build() -> None:
        start = OceanComputeStartOperator(
            task_id="start",
            ocean_conn_id=node_conn,
            datasets=[weather(node_sandbox)],
            algorithm=sample(algocustomdata={"column": "rain_mm"}),
            deferrable=deferrable,
            poll_interval=0.5,
            on_failure_callback=record_failure,
        )
        results = OceanComputeResultsOperator(
            task_id="results",
            ocean_conn_id=node_conn,
            job_id="{{ ti.xcom_pull(task_ids='start') }}",
            destination=str(destination),
            unpack_outputs=True,
            on_failure_callback=record_failure,
        )
        start >> results

    dr = run_dag(dag_with(dag_id, build))
    assert dr.state == "success", failure(dag_id, "start") or failure(dag_id, "results")
    assert task_states(dr) == {"start": "success", "results": "success"}
    job_id = xcom(dr, "start")
    assert NODE_JOB_ID.match(job_id)  # the full id, engine prefix included
    payment = xcom(dr, "start", "ocean_payment")
    assert payment["ocean_node"]["free"] is True
    manifest = xcom(dr, "results")
    names = {entry["name"] for entry in manifest}
    assert {"outputs.tar", "algorithm.log", "summary.json", "summary.csv"} <= names
    summary = json.loads((destination / "summary.json").read_text())
    assert summary["column"] == "rain_mm"
    assert (destination / "outputs.tar").stat().st_size > 0


def test_paid_job_with_node_options_and_sensor(
    node_conn: str, node_sandbox: dict[str, Any], airflow_db: str
) -> None:
    dag_id = unique_dag_id("node_paid")
    ocean = node_sandbox["addresses"]["Ocean"]

    def build() -> None:
        start = OceanComputeStartOperator(
            task_id="start",
            ocean_conn_id=node_conn,
            datasets=[weather(node_sandbox)],
            algorithm=sample(),
            environment=node_sandbox["environments"]["paid"],
            max_fee=20 * ONE,
            resources={"cpu": 2, "ram": 2},
            max_job_duration=60,
            queue_max_wait_time=0,
            wait_for_completion=False,
            on_failure_callback=record_failure,
        )
        sensor = OceanComputeJobStatusSensor(
            task_id="wait",
            ocean_conn_id=node_conn,
            job_id="{{ ti.xcom_pull(task_ids='start') }}",
            poke_interval=0.5,
            timeout=120,
            deferrable=True,
            on_failure_callback=record_failure,
        )
        start >> sensor

    dr = run_dag(dag_with(dag_id, build))
    assert dr.state == "success", failure(dag_id, "start") or failure(dag_id, "wait")
    payment = xcom(dr, "start", "ocean_payment")
    node = payment["ocean_node"]
    assert node["free"] is False
    assert node["options"]["resources"] == [{"id": "cpu", "amount": 2}, {"id": "ram", "amount": 2}]
    # (2 cpu × 2 + 2 ram × 1 + 1 disk × 0.2) per minute × 1 minute
    assert int(node["amount"]) == int(6.2 * ONE)
    job = xcom(dr, "wait")
    assert job["job_id"] == xcom(dr, "start")
    assert job["status"] == 70
    hook = OceanComputeHook(node_conn)
    escrow = EscrowPayer(hook.rpc, node_sandbox["addresses"]["Escrow"])
    (auth,) = escrow.authorizations(hook.consumer_address, ocean, node_sandbox["provider_address"])
    assert auth.max_lock_seconds >= 60 + 3600


def test_failing_algorithm_fails_the_task(
    node_conn: str, node_sandbox: dict[str, Any], airflow_db: str
) -> None:
    dag_id = unique_dag_id("node_fail")

    def build() -> None:
        OceanComputeStartOperator(
            task_id="start",
            ocean_conn_id=node_conn,
            datasets=[weather(node_sandbox)],
            algorithm={"rawcode": "import sys\nprint('no luck')\nsys.exit(4)\n"},
            poll_interval=0.5,
            retries=0,
            on_failure_callback=record_failure,
        )

    dr = run_dag(dag_with(dag_id, build))
    assert dr.state == "failed"
    message = failure(dag_id, "start")
    assert "exit code 4" in message
    assert "no luck" in message  # the algorithm log tail


def test_wait_timeout_stops_the_node_job(
    node_conn: str, node_sandbox: dict[str, Any], airflow_db: str
) -> None:
    dag_id = unique_dag_id("node_timeout")
    code = "import time\nprint('long', flush=True)\nfor _ in range(600):\n    time.sleep(0.1)\n"

    def build() -> None:
        OceanComputeStartOperator(
            task_id="start",
            ocean_conn_id=node_conn,
            datasets=[weather(node_sandbox)],
            algorithm={"rawcode": code},
            wait_timeout=6,
            poll_interval=0.5,
            retries=0,
            on_failure_callback=record_failure,
        )

    dr = run_dag(dag_with(dag_id, build))
    assert dr.state == "failed"
    hook = OceanComputeHook(node_conn)
    job_id = xcom(dr, "start", "ocean_job_id")
    try:
        job = hook.get_job_status(job_id)
        assert job.stopreq == 1 or job.is_terminal
    finally:
        stop_if_running(hook, job_id)
