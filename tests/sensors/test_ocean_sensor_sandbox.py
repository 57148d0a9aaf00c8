"""OceanComputeJobStatusSensor in real Airflow (``dag.test()``) against the sandbox, in its three modes.

``dag.test()`` in Airflow 3.3 runs reschedules (it re-runs UP_FOR_RESCHEDULE tasks once their date passed,
about every second) and deferrals (the trigger runs in-line), so all three modes run for real here, against
both sandbox personalities (``[provider_v4]``, ``[ocean_node]``).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest
from airflow.sdk import DAG

from airflow_provider_ocean.hooks.ocean import OceanComputeHook
from airflow_provider_ocean.links import job_status_url
from airflow_provider_ocean.operators.compute import OceanComputeStartOperator, OceanComputeStopOperator
from airflow_provider_ocean.sensors.ocean import OceanComputeJobStatusSensor
from tests.operators.support import (
    failure,
    make_hook,
    raw_algorithm,
    record_failure,
    reschedule_count,
    run_dag,
    sleeping_algorithm,
    stop_if_running,
    task_states,
    triggers_for,
    unique_dag_id,
    wait_terminal,
    xcom,
)
from tests.personalities import Personality

pytestmark = pytest.mark.chain

MODES = ["poke", "reschedule", "deferrable"]


@pytest.fixture
def hook(any_conn: str) -> OceanComputeHook:
    return make_hook(any_conn)


def sensor_kwargs(mode: str) -> dict[str, Any]:
    if mode == "deferrable":
        return {"deferrable": True, "mode": "poke"}
    return {"deferrable": False, "mode": mode}


def sensor_dag(
    dag_id: str, sandbox: Personality, algorithm: dict[str, Any], mode: str, **sensor_args: Any
) -> DAG:
    """start (no wait) >> sensor on the started job."""
    sensor_args.setdefault("poke_interval", 0.5)
    sensor_args.setdefault("timeout", 60)
    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        start = OceanComputeStartOperator(
            task_id="start",
            datasets=sandbox.raw_datasets(),
            algorithm=algorithm,
            wait_for_completion=False,
        )
        start >> OceanComputeJobStatusSensor(
            task_id="sense",
            job_id=start.output,
            on_failure_callback=record_failure,
            **sensor_kwargs(mode),
            **sensor_args,
        )
    return dag


@pytest.mark.parametrize("mode", MODES)
def test_sensor_succeeds_when_the_job_finishes(
    hook: OceanComputeHook, any_sandbox: Personality, airflow_db: str, mode: str
) -> None:
    dag_id = unique_dag_id(f"sensor_ok_{mode}")
    # a 4 s job: still running when the sensor first looks, so each mode really has to wait
    dr = run_dag(sensor_dag(dag_id, any_sandbox, sleeping_algorithm(4), mode))

    assert dr.state == "success", failure(dag_id, "sense")
    assert task_states(dr) == {"start": "success", "sense": "success"}
    job_id = xcom(dr, "start")
    result = xcom(dr, "sense")
    assert result["job_id"] == job_id
    assert result["status"] == 70
    assert result["stopreq"] == 0
    assert result["date_finished"]
    assert hook.get_job_status(job_id).is_succeeded
    assert xcom(dr, "sense", "ocean_job_status_url") == job_status_url(
        any_sandbox["provider_url"], any_sandbox["consumer"]["address"], job_id
    )
    # each mode really waited the way it claims to
    rescheduled = reschedule_count(dr, "sense")
    triggers = triggers_for(job_id)
    if mode == "reschedule":
        assert rescheduled >= 1
        assert triggers == []
    elif mode == "deferrable":
        assert rescheduled == 0
        assert len(triggers) == 1
        kwargs = triggers[0][1]
        assert kwargs["poll_interval"] == 0.5
        assert kwargs["stop_on_kill"] is True
        assert 0 < kwargs["end_time"] - time.time() <= 60  # the sensor timeout became the deadline
    else:
        assert rescheduled == 0
        assert triggers == []


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
@pytest.mark.parametrize("soft_fail", [False, True], ids=["hard", "soft_fail"])
def test_failed_job_fails_the_sensor(
    hook: OceanComputeHook, any_sandbox: Personality, airflow_db: str, mode: str, soft_fail: bool
) -> None:
    """A failed job fails the sensor at once with the status text and the log tail; soft_fail skips.
    (v4: provisioning failure, status 32; node: the algorithm exits with 1.)"""
    dag_id = unique_dag_id(f"sensor_failed_{mode}")
    dr = run_dag(sensor_dag(dag_id, any_sandbox, raw_algorithm("x"), mode, soft_fail=soft_fail))

    job = hook.get_job_status(xcom(dr, "start"))
    assert job.outcome == "failed"
    if not any_sandbox.is_node:
        assert job.status == 32
    if soft_fail:
        assert task_states(dr) == {"start": "success", "sense": "skipped"}
        assert failure(dag_id, "sense") == ""
        return
    assert task_states(dr) == {"start": "success", "sense": "failed"}
    message = failure(dag_id, "sense")
    assert "OceanJobError" in message
    for fragment in any_sandbox.failure_fragments:
        assert fragment in message
    if any_sandbox.is_node:
        assert "--- algorithmLog (tail) ---" in message
        assert "name 'x' is not defined" in message  # a line of the algorithm log itself
    else:
        assert "--- configrationLog (tail) ---" in message
        assert "algorithm provisioning failed" in message  # a line of the configure log itself


def test_stopped_job_fails_the_rescheduling_sensor(
    hook: OceanComputeHook, any_sandbox: Personality, airflow_db: str
) -> None:
    """The job is stopped by a parallel task while the sensor waits (reschedule mode frees the slot)."""
    dag_id = unique_dag_id("sensor_stopped")
    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        start = OceanComputeStartOperator(
            task_id="start",
            datasets=any_sandbox.raw_datasets(),
            algorithm=sleeping_algorithm(40),
            wait_for_completion=False,
        )
        sense = OceanComputeJobStatusSensor(
            task_id="sense",
            job_id=start.output,
            mode="reschedule",
            poke_interval=0.5,
            timeout=60,
            on_failure_callback=record_failure,
        )
        stop = OceanComputeStopOperator(task_id="stop", job_id=start.output)
        start >> [sense, stop]
    job_id = None
    try:
        dr = run_dag(dag)
        job_id = xcom(dr, "start")
        assert task_states(dr) == {"start": "success", "stop": "success", "sense": "failed"}
        message = failure(dag_id, "sense")
        assert "stopped" in message
        assert "stopreq 1" in message
        assert hook.get_job_status(job_id).stopreq == 1
    finally:
        stop_if_running(hook, job_id)


def test_stopped_job_fails_the_deferred_sensor(
    hook: OceanComputeHook, any_sandbox: Personality, airflow_db: str
) -> None:
    dag_id = unique_dag_id("sensor_stopped_deferred")
    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        start = OceanComputeStartOperator(
            task_id="start",
            datasets=any_sandbox.raw_datasets(),
            algorithm=sleeping_algorithm(40),
            wait_for_completion=False,
        )
        stop = OceanComputeStopOperator(task_id="stop", job_id=start.output)
        sense = OceanComputeJobStatusSensor(
            task_id="sense",
            job_id=start.output,
            deferrable=True,
            poke_interval=0.5,
            timeout=60,
            on_failure_callback=record_failure,
        )
        start >> stop >> sense
    job_id = None
    try:
        dr = run_dag(dag)
        job_id = xcom(dr, "start")
        assert task_states(dr) == {"start": "success", "stop": "success", "sense": "failed"}
        message = failure(dag_id, "sense")
        assert "stopped" in message
        assert "stopreq 1" in message
        # usually it deferred (the stop takes a moment to land); a job already ended fails at the first poke
        assert len(triggers_for(job_id)) <= 1
    finally:
        stop_if_running(hook, job_id)


@pytest.mark.parametrize(
    ("mode", "soft_fail"),
    [("poke", False), ("reschedule", False), ("deferrable", False), ("deferrable", True), ("poke", True)],
)
def test_sensor_timeout_stops_the_job(
    hook: OceanComputeHook, any_sandbox: Personality, airflow_db: str, mode: str, soft_fail: bool
) -> None:
    dag_id = unique_dag_id(f"sensor_timeout_{mode}")
    dag = sensor_dag(dag_id, any_sandbox, sleeping_algorithm(40), mode, timeout=2, soft_fail=soft_fail)
    job_id = None
    try:
        started = time.monotonic()
        dr = run_dag(dag)
        elapsed = time.monotonic() - started
        job_id = xcom(dr, "start")

        expected = "skipped" if soft_fail else "failed"
        assert task_states(dr) == {"start": "success", "sense": expected}
        if not soft_fail:
            message = failure(dag_id, "sense")
            assert "AirflowSensorTimeout" in message
            assert "timed out" in message
        assert elapsed < 30
        job = wait_terminal(hook, job_id, timeout=30)
        assert job.stopreq == 1, "the sensor must stop the job it gave up on"
    finally:
        stop_if_running(hook, job_id)


# Ocean Node only: a Provider v4 has no live log route (its algorithm log is a result file).
@pytest.mark.parametrize("personality", ["ocean_node"], indirect=True)
def test_poking_sensor_copies_the_live_log_into_the_task_log(
    any_sandbox: Personality, any_conn: str, airflow_db: str, capfd: pytest.CaptureFixture
) -> None:
    code = "import time\nprint('tick one', flush=True)\ntime.sleep(3)\nprint('tick two', flush=True)\n"
    dag_id = unique_dag_id("sensor_live_log")
    dr = run_dag(sensor_dag(dag_id, any_sandbox, raw_algorithm(code), "poke", poke_interval=0.3))
    lines = capfd.readouterr().out.splitlines()
    assert dr.state == "success", failure(dag_id, "sense")

    def logged_at(fragment: str) -> datetime:
        [line] = [line for line in lines if fragment in line]  # once: one stream, no replay
        return datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))

    first, second = logged_at("[algorithm] tick one"), logged_at("[algorithm] tick two")
    finished = logged_at(f"Job {xcom(dr, 'start')} finished")
    assert (finished - first).total_seconds() >= 2.0  # live, not copied at the end
    assert first < second <= finished
    assert "signature=" not in "\n".join(lines)
