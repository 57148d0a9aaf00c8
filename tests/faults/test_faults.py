"""Exactly-once under faults: real sockets between the client and the sandbox Provider / chain RPC.

Every scenario counts from outside the client: the owner's jobs straight from the sandbox Provider, the
orders on chain (``OrderStarted``/``OrderReused`` logs with the consumer as payer), and result bytes against
the files the sandbox published. A scenario the product cannot pass yet is a strict xfail naming what is
missing.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults import airflow_cli, harness, scenarios
from tests.faults.scenarios import FaultLab, Outcome

pytestmark = pytest.mark.chain


@pytest.fixture(scope="module")
def lab(sandbox: dict[str, Any]) -> Iterator[FaultLab]:
    variable = f"AIRFLOW_CONN_{scenarios.CONN_ID.upper()}"
    saved = os.environ.get(variable)
    fault_lab = FaultLab(sandbox)
    yield fault_lab
    fault_lab.close()
    if saved is None:
        os.environ.pop(variable, None)
    else:
        os.environ[variable] = saved


def assert_exactly_once(outcome: Outcome, *, orders: int = 1) -> None:
    """One job, returned to the client; one order per datatoken; terminal; every result intact."""
    detail = outcome.summary()
    assert outcome.error is None, detail
    assert outcome.jobs == [outcome.job_id], detail
    assert outcome.orders, detail
    assert set(outcome.orders.values()) == {orders}, detail
    assert outcome.terminal, detail
    assert outcome.results_expected > 0, detail
    assert outcome.results_ok == outcome.results_expected, detail


# (1) --------------------------------------------------------------------------------------------------------
def test_reset_after_start_was_sent_finds_the_job(lab: FaultLab) -> None:
    outcome = scenarios.reset_after_start(lab, "hook")
    assert outcome.counts["POST /api/services/compute"] == 1, "found, not started again"
    assert_exactly_once(outcome)
    assert outcome.transactions == 2  # no second payment


# (2) --------------------------------------------------------------------------------------------------------
def test_5xx_burst_on_reads_is_retried(lab: FaultLab) -> None:
    outcome = scenarios.errors_on_reads(lab, "hook")
    assert_exactly_once(outcome)
    assert outcome.notes["rule_hits"] == [2, 2, 2], "every burst was served"
    for route in (
        "GET /api/services/computeEnvironments",
        "GET /api/services/nonce",
        "GET /api/services/compute",
    ):
        assert outcome.counts[route] >= 3, (route, outcome.counts)
    assert outcome.counts["POST /api/services/compute"] == 1


# (3) --------------------------------------------------------------------------------------------------------
def test_5xx_before_the_provider_saw_the_start_is_not_retried_blindly(lab: FaultLab) -> None:
    outcome = scenarios.error_on_start(lab, "hook", after_forward=False)
    assert scenarios.blind_retries(outcome.sequence) == 0, outcome.sequence
    assert set(outcome.orders.values()) == {1}, "paid exactly once"
    if outcome.error is None:  # resolved: it checked there was no job, then started one
        assert_exactly_once(outcome)
    else:
        assert outcome.error_type == "OceanProviderError", outcome.summary()
        assert "start compute" in outcome.error
        assert "503" in outcome.error
        assert outcome.jobs == [], outcome.summary()


def test_5xx_after_the_provider_started_the_job_resolves_to_that_job(lab: FaultLab) -> None:
    outcome = scenarios.error_on_start(lab, "hook", after_forward=True)
    assert scenarios.blind_retries(outcome.sequence) == 0, outcome.sequence
    assert_exactly_once(outcome)


# (4) --------------------------------------------------------------------------------------------------------
def test_slow_status_answer_still_works(lab: FaultLab) -> None:
    outcome = scenarios.slow_status(lab, "hook", delay=3.0)
    assert_exactly_once(outcome)
    assert outcome.elapsed >= 3.0
    assert lab.provider.rules == []  # cleared after the scenario
    assert outcome.notes["status_requests"] >= 1


def test_status_answer_slower_than_the_read_timeout_is_retried(lab: FaultLab) -> None:
    outcome = scenarios.slow_status(lab, "hook", delay=3.0, read_timeout=1.5)
    assert_exactly_once(outcome)
    assert outcome.notes["status_requests"] >= 2, "the timed-out read was retried"


# (5) --------------------------------------------------------------------------------------------------------
def test_truncated_download_with_the_hook(lab: FaultLab) -> None:
    outcome = scenarios.truncated_download(lab, "hook")
    assert outcome.notes["truncations"] == 1
    assert outcome.error_type == "OceanConnectionError", outcome.summary()
    assert "broke" in (outcome.error or "")
    assert outcome.notes["left_after_failure"] == [], "no partial file (nor .part) left behind"
    assert outcome.results_ok == 1, outcome.notes
    assert outcome.jobs == [outcome.job_id]


def test_truncated_download_with_the_results_operator(lab: FaultLab) -> None:
    outcome = scenarios.truncated_download(lab, "task")
    assert outcome.notes["truncations"] == 1
    assert outcome.error_type is not None, outcome.summary()
    assert outcome.error_type.startswith("Ocean"), outcome.summary()
    assert outcome.results_ok == 1, outcome.notes
    assert outcome.notes["left_after_failure"] == [], "no partial file left behind"


# (6) --------------------------------------------------------------------------------------------------------
@pytest.mark.alone  # the restarted server must answer within the task's three status attempts
def test_server_restart_mid_job(lab: FaultLab) -> None:
    outcome = scenarios.server_restart(lab, "task", run_seconds=3.0)
    assert outcome.notes["restarted"], "the server was restarted while the algorithm ran"
    assert_exactly_once(outcome)


# (7) --------------------------------------------------------------------------------------------------------


def test_rpc_reset_after_send_raw_transaction_hook(lab: FaultLab) -> None:
    outcome = scenarios.rpc_reset_after_send(lab, "hook")
    assert outcome.transactions <= 2, "never a second transaction for the same order"
    assert_exactly_once(outcome)
    assert outcome.transactions == 2


def test_rpc_reset_after_send_raw_transaction_task_retry(lab: FaultLab) -> None:
    outcome = scenarios.rpc_reset_after_send(lab, "task")
    assert outcome.duplicate_orders == 0, outcome.summary()
    assert_exactly_once(outcome)


# (8) --------------------------------------------------------------------------------------------------------
def test_duplicate_nonce_503_on_start_finds_the_job(lab: FaultLab) -> None:
    outcome = scenarios.duplicate_nonce_on_start(lab, "hook")
    assert outcome.counts["POST /api/services/compute"] == 1
    assert_exactly_once(outcome)


# (9) --------------------------------------------------------------------------------------------------------
SIGKILL_DAG = """
from __future__ import annotations

import json
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_ocean.operators.compute import OceanComputeStartOperator

with DAG(dag_id="faults_sigkill", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    OceanComputeStartOperator(
        task_id="start",
        datasets=json.loads({datasets!r}),
        algorithm=json.loads({algorithm!r}),
        ocean_conn_id={conn_id!r},
        wait_for_completion=True,
        deferrable=False,
        poll_interval=0.3,
        wait_timeout=120,
    )
"""


@pytest.mark.slow
def test_sigkill_while_waiting_then_rerun_reattaches(lab: FaultLab, tmp_path: Path) -> None:
    import json

    job = scenarios.sleeping_job(lab, 5.0)
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "faults_sigkill.py").write_text(
        SIGKILL_DAG.format(
            datasets=json.dumps(job.datasets), algorithm=json.dumps(job.algorithm), conn_id=scenarios.CONN_ID
        )
    )
    with scenarios.observed(lab, "sigkill_airflow_task", "airflow", job) as outcome:
        variable = f"AIRFLOW_CONN_{scenarios.CONN_ID.upper()}"
        env = airflow_cli.fresh_home(tmp_path / "home", dags, **{variable: os.environ[variable]})
        for args in (("dags", "reserialize"), ("dags", "trigger", "faults_sigkill", "-r", "faults_run")):
            done = airflow_cli.airflow(env, *args)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        before = harness.job_ids(lab.info["provider_url"], lab.owner)
        first = airflow_cli.popen(
            env, tmp_path / "first.log", "tasks", "test", "faults_sigkill", "start", "faults_run"
        )
        killed = False
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:
            if harness.job_ids(lab.info["provider_url"], lab.owner) - before:
                time.sleep(1.0)  # the task is now waiting on the job
                os.killpg(first.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.2)
        first.wait(timeout=30)
        assert killed, (tmp_path / "first.log").read_text()[-3000:]
        assert harness.job_ids(lab.info["provider_url"], lab.owner) - before, "the job had started"
        second = airflow_cli.airflow(
            env, "tasks", "test", "faults_sigkill", "start", "faults_run", timeout=240
        )
        outcome.notes["second_rc"] = second.returncode
        output = second.stdout + second.stderr
        outcome.job_id = next(iter(harness.job_ids(lab.info["provider_url"], lab.owner) - before), None)
    assert outcome.duplicate_orders == 0, outcome.summary()
    assert len(outcome.jobs) == 1, outcome.summary() + "\n" + output[-3000:]
    assert second.returncode == 0, output[-3000:]
    assert outcome.terminal


# (10) -------------------------------------------------------------------------------------------------------
def test_triggerer_restart_fires_exactly_one_event(lab: FaultLab) -> None:
    outcome = scenarios.triggerer_restart(lab, "trigger", run_seconds=3.0)
    assert outcome.notes["cancelled_mid_wait"], "the first trigger was cancelled while the job ran"
    assert outcome.notes["old_events"] == []
    events = outcome.notes["new_events"]
    assert len(events) == 1, events
    assert events[0]["status"] == "succeeded"
    assert events[0]["job_id"] == outcome.job_id
    assert_exactly_once(outcome)
