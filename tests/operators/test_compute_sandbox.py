"""OceanComputeStartOperator / OceanComputeStopOperator in real Airflow (``dag.test()``) against the sandbox.

Every test that takes ``any_sandbox`` runs against both personalities of the sandbox (``[provider_v4]``,
``[ocean_node]``, see ``tests/personalities.py``) with the same DAG code: real orders (and, on the node, the
real Escrow) on the local chain, real jobs on the sandbox engine; outcomes are read back from the Airflow
metadata DB (task states, XComs) and from the sandbox (job status, chain).
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import DAG

from airflow_provider_ocean.chain import abi
from airflow_provider_ocean.chain.tx import call_function
from airflow_provider_ocean.hooks.ocean import OceanComputeHook
from airflow_provider_ocean.links import ddo_url, job_status_url
from airflow_provider_ocean.models import JobStatus
from airflow_provider_ocean.operators.compute import OceanComputeStartOperator, OceanComputeStopOperator
from airflow_provider_ocean.operators.results import OceanComputeResultsOperator
from airflow_provider_ocean.payment.escrow import EscrowPayer
from airflow_provider_ocean.sensors.ocean import OceanComputeJobStatusSensor
from tests.operators.support import (
    failure,
    make_hook,
    raw_algorithm,
    record_failure,
    run_dag,
    sleeping_algorithm,
    stop_if_running,
    task_states,
    triggers_for,
    unique_dag_id,
    wait_terminal,
    xcom,
    xcoms,
)
from tests.personalities import Personality

pytestmark = pytest.mark.chain

TX_RE = re.compile(r"^0x[0-9a-f]{64}$")
TRIGGER_CLASSPATH = "airflow_provider_ocean.triggers.ocean.OceanComputeJobTrigger"
SAMPLE = Path(__file__).parents[2] / "sandbox" / "ocean_sandbox" / "data" / "sample_algorithm.py"
ONE = 10**18
START_XCOM_KEYS = {
    "return_value",
    "ocean_job_id",
    "ocean_payment",
    "ocean_job_status_url",
    "ocean_dataset_ddo_url",
}


@pytest.fixture
def hook(any_conn: str) -> OceanComputeHook:
    """The hook on ``any_sandbox`` (both personalities)."""
    return make_hook(any_conn)


@pytest.fixture
def v4_hook(ocean_conn: str) -> OceanComputeHook:
    """The hook on the Provider v4 sandbox only."""
    return make_hook(ocean_conn)


def start_dag(dag_id: str, **op_kwargs: Any) -> DAG:
    op_kwargs.setdefault("poll_interval", 0.5)
    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        OceanComputeStartOperator(task_id="start", on_failure_callback=record_failure, **op_kwargs)
    return dag


def registered(sandbox: dict[str, Any], column: str = "rain_mm") -> dict[str, Any]:
    """Provider v4 only: dataset + registered (trusted) algorithm with custom data."""
    return {
        "datasets": [sandbox["assets"]["dataset"]["did"]],
        "algorithm": {
            "did": sandbox["assets"]["algorithm"]["did"],
            "algocustomdata": {"column": column, "group_by": "station"},
        },
    }


def orders(payment: dict[str, Any]) -> list[dict[str, Any]]:
    return [*payment["datasets"], *([payment["algorithm"]] if payment.get("algorithm") else [])]


def balance(hook: OceanComputeHook, token: str) -> int:
    return int(call_function(hook.rpc, token, abi.ERC20_BALANCE_OF, (hook.consumer_address,), ["uint256"])[0])


def algorithm_log(hook: OceanComputeHook, job: JobStatus) -> str:
    import io

    entry = next(r for r in job.results if r.type == "algorithmLog")
    sink = io.BytesIO()
    hook.download_result(job.job_id, entry.index, sink)
    return sink.getvalue().decode()


class TestStartAndWait:
    def test_sync_wait_succeeds_with_payment_job_id_and_links(
        self, hook: OceanComputeHook, any_sandbox: Personality, airflow_db: str
    ) -> None:
        """A job with orders for both inputs (on a node: a paid job, DID orders to the node + escrow)."""
        box = any_sandbox
        dag_id = unique_dag_id("start_sync")
        dr = run_dag(start_dag(dag_id, deferrable=False, **box.registered("rain_mm"), **box.paid()))

        assert dr.state == "success", failure(dag_id, "start")
        assert task_states(dr) == {"start": "success"}
        job_id = xcom(dr, "start")
        assert box.job_id_re.match(job_id)
        assert triggers_for(job_id) == []  # the sync path never defers
        assert set(xcoms(dr, "start")) == {("start", key) for key in START_XCOM_KEYS}
        assert xcom(dr, "start", "ocean_job_id") == job_id

        payment = xcom(dr, "start", "ocean_payment")
        assert payment["environment"] == box["environments"]["paid" if box.is_node else "free"]
        assert [o["role"] for o in orders(payment)] == ["dataset", "algorithm"]
        assert [o["did"] for o in orders(payment)] == [box.registered_dataset, box.assets["algorithm"]["did"]]
        for order in orders(payment):
            assert order["action"] == "start"
            assert TX_RE.match(order["transfer_tx_id"])
            receipt = hook.rpc.get_transaction_receipt(order["transfer_tx_id"])
            assert receipt is not None
            assert int(receipt["status"], 16) == 1

        job = hook.get_job_status(job_id)
        assert job.is_succeeded
        assert job.status == 70
        assert job.stopreq == 0
        if box.is_node:
            # paid through the Escrow: the node locked the quoted amount from its own key
            assert payment["backend"] == "ocean_node"
            assert payment["ocean_node"]["free"] is False
            assert int(payment["ocean_node"]["amount"]) > 0
            lock = hook.rpc.get_transaction_receipt(job.agreement_id)
            assert lock is not None
            assert int(lock["status"], 16) == 1
        else:
            assert job.agreement_id in [o["transfer_tx_id"] for o in orders(payment)]
        # algocustomdata reached the algorithm
        assert '"column": "rain_mm"' in algorithm_log(hook, job)

        assert xcom(dr, "start", "ocean_job_status_url") == job_status_url(
            box["provider_url"], box["consumer"]["address"], job_id
        )
        assert xcom(dr, "start", "ocean_dataset_ddo_url") == ddo_url(
            box["aquarius_url"], box.registered_dataset
        )

    def test_deferrable_succeeds_through_the_trigger(
        self, hook: OceanComputeHook, any_sandbox: Personality, airflow_db: str
    ) -> None:
        dag_id = unique_dag_id("start_deferrable")
        dr = run_dag(
            start_dag(dag_id, deferrable=True, wait_timeout=120, **any_sandbox.registered("temperature_c"))
        )

        assert dr.state == "success", failure(dag_id, "start")
        job_id = xcom(dr, "start")
        assert any_sandbox.job_id_re.match(job_id)
        # it really deferred (the serialized trigger is in the DB) and resumed in execute_complete
        [(classpath, kwargs)] = triggers_for(job_id)
        assert classpath == TRIGGER_CLASSPATH
        assert kwargs["ocean_conn_id"] == "ocean_default"
        assert kwargs["poll_interval"] == 0.5
        assert kwargs["stop_on_kill"] is True
        assert 0 < kwargs["end_time"] - time.time() <= 120  # the wait timeout became the deadline
        job = hook.get_job_status(job_id)
        assert job.is_succeeded
        assert '"column": "temperature_c"' in algorithm_log(hook, job)

    @pytest.mark.parametrize(
        ("algorithm_kind", "expected_state"), [("registered", "success"), ("raw_x", "failed")]
    )
    def test_deferrable_does_not_defer_when_the_job_already_ended(
        self,
        any_sandbox: Personality,
        any_conn: str,
        airflow_db: str,
        algorithm_kind: str,
        expected_state: str,
    ) -> None:
        """A job that ended before the first status check finishes the task at once (no trigger)."""
        if algorithm_kind == "registered":
            inputs = any_sandbox.registered()
        else:
            inputs = {"datasets": any_sandbox.raw_datasets(), "algorithm": raw_algorithm("x")}
        dag_id = unique_dag_id("start_no_defer")
        with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1)) as dag:
            JobEndsBeforeFirstCheckOperator(
                task_id="start",
                deferrable=True,
                poll_interval=0.5,
                on_failure_callback=record_failure,
                **inputs,
            )
        dr = run_dag(dag)

        assert task_states(dr) == {"start": expected_state}, failure(dag_id, "start")
        assert triggers_for(xcom(dr, "start", "ocean_job_id")) == []  # finished without deferring
        if expected_state == "failed":
            assert any_sandbox.failure_fragments[0] in failure(dag_id, "start")


class _HookWhoseJobEndsBeforeTheFirstCheck(OceanComputeHook):
    """The real hook, but ``start_compute`` returns only once the job has ended (a very fast job)."""

    def start_compute(self, *args: Any, **kwargs: Any) -> JobStatus:
        job = super().start_compute(*args, **kwargs)
        wait_terminal(self, job.job_id)
        return job


class JobEndsBeforeFirstCheckOperator(OceanComputeStartOperator):
    @cached_property
    def hook(self) -> OceanComputeHook:  # type: ignore[override]
        return _HookWhoseJobEndsBeforeTheFirstCheck(ocean_conn_id=self.ocean_conn_id)


class TestNoWait:
    def test_returns_right_after_the_start(
        self, hook: OceanComputeHook, any_sandbox: Personality, airflow_db: str
    ) -> None:
        dag_id = unique_dag_id("start_nowait")
        dag = start_dag(
            dag_id,
            datasets=any_sandbox.raw_datasets(),
            algorithm=sleeping_algorithm(50),
            wait_for_completion=False,
            deferrable=True,  # ignored without waiting
        )
        job_id = None
        try:
            started = time.monotonic()
            dr = run_dag(dag)
            elapsed = time.monotonic() - started
            assert dr.state == "success", failure(dag_id, "start")
            job_id = xcom(dr, "start")
            assert any_sandbox.job_id_re.match(job_id)
            payment = xcom(dr, "start", "ocean_payment")
            assert payment["datasets"][0]["action"] == any_sandbox.raw_dataset_action
            # the run is over while the 50 s algorithm still runs
            assert not hook.get_job_status(job_id).is_terminal
            assert elapsed < 45
        finally:
            stop_if_running(hook, job_id)


class TestFailures:
    @pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
    def test_failing_algorithm_fails_the_task(
        self, hook: OceanComputeHook, any_sandbox: Personality, airflow_db: str, deferrable: bool
    ) -> None:
        """v4 refuses raw code of <= 10 characters (status 32); a node runs it and it exits with 1."""
        dag_id = unique_dag_id("start_failing")
        dag = start_dag(
            dag_id, datasets=any_sandbox.raw_datasets(), algorithm=raw_algorithm("x"), deferrable=deferrable
        )
        dr = run_dag(dag)

        assert dr.state == "failed"
        assert task_states(dr) == {"start": "failed"}
        message = failure(dag_id, "start")
        assert "OceanJobError" in message
        for fragment in any_sandbox.failure_fragments:  # the status and the log tail explain why
            assert fragment in message
        job_id = xcom(dr, "start", "ocean_job_id")  # pushed before waiting
        job = hook.get_job_status(job_id)
        assert job.is_terminal
        assert job.outcome == "failed"
        if not any_sandbox.is_node:
            assert job.status == 32

    @pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
    def test_wait_timeout_stops_the_job_and_fails(
        self, hook: OceanComputeHook, any_sandbox: Personality, airflow_db: str, deferrable: bool
    ) -> None:
        dag_id = unique_dag_id("start_wait_timeout")
        dag = start_dag(
            dag_id,
            datasets=any_sandbox.raw_datasets(),
            algorithm=sleeping_algorithm(40),
            deferrable=deferrable,
            wait_timeout=3,
        )
        job_id = None
        try:
            started = time.monotonic()
            dr = run_dag(dag)
            elapsed = time.monotonic() - started
            job_id = xcom(dr, "start", "ocean_job_id")

            assert task_states(dr) == {"start": "failed"}
            message = failure(dag_id, "start")
            assert "did not finish" in message
            assert "stopped" in message
            assert elapsed < 30  # it gave up at the wait timeout, not at the job's 40 s
            job = wait_terminal(hook, job_id, timeout=30)
            assert job.stopreq == 1  # stopped by the operator (2 would be the engine's max duration)
            assert job.outcome == "stopped"
        finally:
            stop_if_running(hook, job_id)

    @pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
    def test_execution_timeout_stops_the_job_before_airflow_kills_the_task(
        self, hook: OceanComputeHook, any_sandbox: Personality, airflow_db: str, deferrable: bool
    ) -> None:
        """execution_timeout (minus the 10 s margin) is a wait deadline too: the job is stopped first."""
        dag_id = unique_dag_id("start_exec_timeout")
        dag = start_dag(
            dag_id,
            datasets=any_sandbox.raw_datasets(),
            algorithm=sleeping_algorithm(40),
            deferrable=deferrable,
            execution_timeout=timedelta(seconds=14),
        )
        job_id = None
        try:
            dr = run_dag(dag)
            job_id = xcom(dr, "start", "ocean_job_id")
            assert task_states(dr) == {"start": "failed"}
            message = failure(dag_id, "start")
            assert "OceanJobError" in message  # our deadline, not Airflow's AirflowTaskTimeout
            assert "did not finish" in message
            job = wait_terminal(hook, job_id, timeout=30)
            assert job.stopreq == 1
        finally:
            stop_if_running(hook, job_id)


class TestBadInputsBeforeSpending:
    def test_fee_above_max_fee_fails_before_anything_is_sent(
        self, hook: OceanComputeHook, any_sandbox: Personality, airflow_db: str
    ) -> None:
        """The paid environment costs more than ``max_fee`` (given as rendered text): refused before any
        transaction (v4: the provider fees of the orders; node: the escrow quote)."""
        box = any_sandbox
        tokens = [box.assets[name]["datatoken"] for name in ("dataset_trusted", "dataset", "algorithm")]
        balances_before = [balance(hook, t) for t in tokens]
        nonce_before = hook.rpc.get_transaction_count(hook.consumer_address, "latest")
        jobs_before = {j.job_id for j in hook.list_jobs()}
        dag_id = unique_dag_id("start_fee_cap")
        dag = start_dag(
            dag_id, **box.registered(), environment=box["environments"]["paid"], max_fee="1", retries=0
        )
        dr = run_dag(dag)

        assert task_states(dr) == {"start": "failed"}
        message = failure(dag_id, "start")
        assert "OceanFeeCapError" in message
        assert "above max_fee 1" in message
        assert hook.rpc.get_transaction_count(hook.consumer_address, "latest") == nonce_before
        assert [balance(hook, t) for t in tokens] == balances_before
        assert {j.job_id for j in hook.list_jobs()} == jobs_before
        pushed = {key for _task, key in xcoms(dr, "start")}
        assert not pushed & {"ocean_payment", "ocean_job_id", "return_value"}  # neither a payment nor a job

    def test_empty_datasets_fail_before_anything_is_sent(
        self, hook: OceanComputeHook, any_sandbox: Personality, airflow_db: str
    ) -> None:
        nonce_before = hook.rpc.get_transaction_count(hook.consumer_address, "latest")
        jobs_before = {j.job_id for j in hook.list_jobs()}
        dag_id = unique_dag_id("start_no_datasets")
        dr = run_dag(start_dag(dag_id, datasets=[], algorithm=any_sandbox.registered()["algorithm"]))

        assert task_states(dr) == {"start": "failed"}
        assert "`datasets` is empty" in failure(dag_id, "start")
        assert hook.rpc.get_transaction_count(hook.consumer_address, "latest") == nonce_before
        assert {j.job_id for j in hook.list_jobs()} == jobs_before


class TestTemplating:
    def test_templated_fields_are_rendered_and_xcoms_carry_no_secret(
        self, hook: OceanComputeHook, any_sandbox: Personality, airflow_db: str, tmp_path: Path
    ) -> None:
        """Datasets, the algorithm's nested custom data, the environment and the connection of the start
        operator, and the job id and destination of the results operator, all from templates."""
        box = any_sandbox
        dag_id = unique_dag_id("start_templated")
        inputs = box.registered()
        params = {
            "dataset": inputs["datasets"][0],
            "algorithm": inputs["algorithm"]["did"],
            "column": "rain_mm",
            "environment": box["environments"]["free"],
            "conn": "ocean_default",
            "out": str(tmp_path),
        }
        with DAG(
            dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, params=params
        ) as dag:
            start = OceanComputeStartOperator(
                task_id="start",
                datasets="{{ params.dataset }}",
                algorithm={
                    "did": "{{ params.algorithm }}",
                    "algocustomdata": {"column": "{{ params.column }}"},
                },
                environment="{{ params.environment }}",
                ocean_conn_id="{{ params.conn }}",
                poll_interval=0.5,
                on_failure_callback=record_failure,
            )
            collect = OceanComputeResultsOperator(
                task_id="collect",
                job_id="{{ ti.xcom_pull(task_ids='start') }}",
                destination="{{ params.out }}/{{ run_id }}",
                ocean_conn_id="{{ params.conn }}",
                unpack_outputs=True,
                on_failure_callback=record_failure,
            )
            start >> collect
        dr = run_dag(dag)

        assert dr.state == "success", failure(dag_id, "start") or failure(dag_id, "collect")
        job_id = xcom(dr, "start")
        payment = xcom(dr, "start", "ocean_payment")
        assert payment["environment"] == params["environment"]
        assert [o["did"] for o in orders(payment)] == [params["dataset"], params["algorithm"]]
        folder = tmp_path / dr.run_id
        manifest = xcom(dr, "collect")
        written = {e["uri"].removeprefix("file://") for e in manifest}
        assert written == {str(folder / e["name"]) for e in manifest}
        summary = (folder / "summary.json").read_text()
        assert json.loads(summary)["column"] == "rain_mm"  # the rendered custom data reached the job
        assert hook.get_job_status(job_id).is_succeeded
        # no XCom of the run carries the wallet key (or its bare hex)
        key = box["consumer"]["key"].lower().removeprefix("0x")
        everything = json.dumps({f"{t}.{k}": v for (t, k), v in xcoms(dr).items()}, default=str).lower()
        assert key not in everything


class TestOrderReuse:
    """Provider v4 only: a second run reuses still-valid orders and sends no transaction at all. On an Ocean
    Node the orders of DID inputs are reused the same way, but every paid job needs its own escrow lock (and
    free jobs have no orders), so "no transaction" is not a node property; the node's reuse of orders and
    escrow funds is checked in tests/operators/test_reattach.py."""

    @pytest.mark.parametrize(
        "order_validity",
        [
            None,
            timedelta(days=2),
        ],
        ids=["default-validity", "order_validity-2d-as-in-scheduled-dag"],
    )
    def test_second_run_reuses_the_orders_without_a_transaction(
        self,
        v4_hook: OceanComputeHook,
        sandbox: dict[str, Any],
        airflow_db: str,
        order_validity: timedelta | None,
    ) -> None:
        hook = v4_hook
        dag_id = unique_dag_id("start_reuse")
        dag = start_dag(
            dag_id, deferrable=False, order_validity=order_validity, reuse_orders=True, **registered(sandbox)
        )
        first_run = run_dag(dag, logical_date=datetime(2026, 2, 1, tzinfo=timezone.utc))
        assert first_run.state == "success", failure(dag_id, "start")
        first = xcom(first_run, "start", "ocean_payment")
        assert [o["action"] for o in orders(first)] == ["start", "start"]

        tokens = [sandbox["assets"]["dataset"]["datatoken"], sandbox["assets"]["algorithm"]["datatoken"]]
        balances_before = [balance(hook, t) for t in tokens]
        nonce_before = hook.rpc.get_transaction_count(hook.consumer_address, "latest")

        second_run = run_dag(dag, logical_date=datetime(2026, 2, 2, tzinfo=timezone.utc))
        assert second_run.state == "success", failure(dag_id, "start")
        assert second_run.run_id != first_run.run_id
        second = xcom(second_run, "start", "ocean_payment")

        assert [o["action"] for o in orders(second)] == ["valid", "valid"]
        assert [o["transfer_tx_id"] for o in orders(second)] == [o["transfer_tx_id"] for o in orders(first)]
        assert [balance(hook, t) for t in tokens] == balances_before  # no datatoken spent
        assert hook.rpc.get_transaction_count(hook.consumer_address, "latest") == nonce_before  # no tx
        assert xcom(second_run, "start") != xcom(first_run, "start")  # but a new job
        assert hook.get_job_status(xcom(second_run, "start")).is_succeeded


class TestStopAndKill:
    def test_stop_operator_stops_a_running_job(
        self, hook: OceanComputeHook, any_sandbox: Personality, airflow_db: str
    ) -> None:
        dag_id = unique_dag_id("stop_operator")
        with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1)) as dag:
            start = OceanComputeStartOperator(
                task_id="start",
                datasets=any_sandbox.raw_datasets(),
                algorithm=sleeping_algorithm(40),
                wait_for_completion=False,
            )
            OceanComputeStopOperator(task_id="stop", job_id=start.output, on_failure_callback=record_failure)
        job_id = None
        try:
            dr = run_dag(dag)
            job_id = xcom(dr, "start")
            assert task_states(dr) == {"start": "success", "stop": "success"}, failure(dag_id, "stop")
            answered = xcom(dr, "stop")
            assert answered["job_id"] == job_id
            assert answered["date_finished"] is None
            if not any_sandbox.is_node:  # operator-service reads the status back after setting stopreq=1
                assert answered["stopreq"] == 1
            job = wait_terminal(hook, job_id, timeout=30)
            assert job.stopreq == 1
            assert job.outcome == "stopped"
            assert set(xcoms(dr, "stop")) >= {("stop", "return_value")}
        finally:
            stop_if_running(hook, job_id)

    def test_stop_operator_leaves_a_finished_job_succeeded(
        self, hook: OceanComputeHook, any_sandbox: Personality, airflow_db: str
    ) -> None:
        """A stop of an ended job is not sent. On Provider v4 it would mark the job ``stopreq`` 1 for good
        (operator-service ``data_store.py`` ``stop_sql_job``: ``UPDATE jobs SET stopreq=1 WHERE
        workflowId=%s``, no condition on the job's state): the succeeded job would read as "stopped"."""
        job_id = any_sandbox.start_raw(hook, raw_algorithm("print('quick')"))
        done = wait_terminal(hook, job_id, timeout=60)
        assert done.outcome == "succeeded"
        dag_id = unique_dag_id("stop_finished")
        with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1)) as dag:
            OceanComputeStopOperator(task_id="stop", job_id=job_id, on_failure_callback=record_failure)
        dr = run_dag(dag)
        assert task_states(dr) == {"stop": "success"}, failure(dag_id, "stop")
        answered = xcom(dr, "stop")
        expected = done.to_dict()
        if any_sandbox.is_node:
            # A node's succeeded job reads 71 "Job settling" until its payment cron passes, then 70 "Job
            # finished"; the client reports 70 for both and keeps the node's own text.
            assert answered.pop("status_text") in ("Job settling", "Job finished")
            expected.pop("status_text")
        assert answered == expected
        time.sleep(1.0)
        after = hook.get_job_status(job_id)
        assert (after.stopreq, after.outcome) == (0, "succeeded")

    def test_on_kill_stops_the_job_only_when_asked(
        self, hook: OceanComputeHook, any_sandbox: Personality
    ) -> None:
        job_id = any_sandbox.start_raw(hook, sleeping_algorithm(40))
        try:
            kwargs: dict[str, Any] = {"datasets": any_sandbox.raw_datasets(), "algorithm": "x"}
            keep = OceanComputeStartOperator(task_id="keep", stop_on_kill=False, **kwargs)
            keep.job_id = job_id
            keep.on_kill()
            time.sleep(1.0)
            assert hook.get_job_status(job_id).stopreq == 0

            stopper = OceanComputeStartOperator(task_id="stopper", **kwargs)
            stopper.on_kill()  # no job yet: nothing to do, no error
            stopper.job_id = job_id
            stopper.on_kill()
            job = wait_terminal(hook, job_id, timeout=30)
            assert job.stopreq == 1
        finally:
            stop_if_running(hook, job_id)


class TestNodeOptions:
    """``resources``, ``max_job_duration``, ``queue_max_wait_time`` and ``free`` exist on Ocean Node only
    (environments with priced resources, escrow payment); a Provider v4 connection refuses them."""

    @pytest.mark.parametrize("personality", ["ocean_node"], indirect=True)
    def test_paid_job_with_node_options_then_deferrable_sensor(
        self, hook: OceanComputeHook, any_sandbox: Personality, airflow_db: str
    ) -> None:
        box = any_sandbox
        dag_id = unique_dag_id("node_paid")
        with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
            start = OceanComputeStartOperator(
                task_id="start",
                datasets=box.raw_datasets(),
                algorithm=raw_algorithm(SAMPLE.read_text()),
                environment=box["environments"]["paid"],
                max_fee=20 * ONE,
                resources={"cpu": 2, "ram": 2},
                max_job_duration=60,
                queue_max_wait_time=0,
                wait_for_completion=False,
                on_failure_callback=record_failure,
            )
            sensor = OceanComputeJobStatusSensor(
                task_id="wait",
                job_id="{{ ti.xcom_pull(task_ids='start') }}",
                poke_interval=0.5,
                timeout=120,
                deferrable=True,
                on_failure_callback=record_failure,
            )
            start >> sensor
        dr = run_dag(dag)

        assert dr.state == "success", failure(dag_id, "start") or failure(dag_id, "wait")
        node = xcom(dr, "start", "ocean_payment")["ocean_node"]
        assert node["free"] is False
        assert node["options"]["resources"] == [{"id": "cpu", "amount": 2}, {"id": "ram", "amount": 2}]
        # (2 cpu × 2 + 2 ram × 1 + 1 disk × 0.2) per minute × 1 minute
        assert int(node["amount"]) == int(6.2 * ONE)
        job = xcom(dr, "wait")
        assert job["job_id"] == xcom(dr, "start")
        assert job["status"] == 70
        [(classpath, _kwargs)] = triggers_for(job["job_id"])  # the sensor really deferred
        assert classpath == TRIGGER_CLASSPATH
        escrow = EscrowPayer(hook.rpc, box["addresses"]["Escrow"])
        (auth,) = escrow.authorizations(
            hook.consumer_address, box["addresses"]["Ocean"], box["provider_address"]
        )
        assert auth.max_lock_seconds >= 60 + 3600  # maxJobDuration + the node's claim timeout

    @pytest.mark.parametrize("personality", ["provider_v4"], indirect=True)
    def test_node_options_are_refused_on_a_provider_before_spending(
        self, hook: OceanComputeHook, any_sandbox: Personality, airflow_db: str
    ) -> None:
        nonce_before = hook.rpc.get_transaction_count(hook.consumer_address, "latest")
        dag_id = unique_dag_id("v4_node_options")
        dr = run_dag(start_dag(dag_id, **any_sandbox.registered(), resources={"cpu": 2}, retries=0))

        assert task_states(dr) == {"start": "failed"}
        message = failure(dag_id, "start")
        assert "OceanValidationError" in message
        assert "only apply to Ocean Node" in message
        assert hook.rpc.get_transaction_count(hook.consumer_address, "latest") == nonce_before


class TestLiveLog:
    # Ocean Node only: a Provider v4 has no live log route (its algorithm log is a result file).
    @pytest.mark.parametrize("personality", ["ocean_node"], indirect=True)
    def test_algorithm_output_reaches_the_task_log_while_the_job_runs(
        self,
        hook: OceanComputeHook,
        any_sandbox: Personality,
        airflow_db: str,
        capfd: pytest.CaptureFixture,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Synchronous wait on a node: the algorithm's lines are copied into the task log as they are
        written (computeStreamableLogs), prefixed with ``[algorithm]``."""
        code = "import time\nprint('tick one', flush=True)\ntime.sleep(3)\nprint('tick two', flush=True)\n"
        dag_id = unique_dag_id("node_live_log")
        dr = run_dag(
            start_dag(
                dag_id,
                datasets=any_sandbox.raw_datasets(),
                algorithm=raw_algorithm(code),
                deferrable=False,
                poll_interval=0.3,
            )
        )
        lines = (capfd.readouterr().out + caplog.text).splitlines()
        assert dr.state == "success", failure(dag_id, "start")

        def logged_at(fragment: str) -> datetime:
            [line] = [line for line in lines if fragment in line]  # once: one stream, no replay
            return datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))

        first, second = logged_at("[algorithm] tick one"), logged_at("[algorithm] tick two")
        finished = logged_at("Finished: job")
        # live: the first line reached the task log while the algorithm still slept, not copied at the end
        assert (finished - first).total_seconds() >= 2.0
        assert first < second <= finished  # and the last line before the task finished
        text = "\n".join(lines)
        assert "signature=" not in text  # the stream is signed in its query string: never logged
        assert any_sandbox["consumer"]["key"].lower().removeprefix("0x") not in text.lower()
