"""OceanComputeStartOperator retries in real Airflow (``dag.test`` runs the retries) on the real sandbox.

Each scenario makes the first try fail at a chosen point after the job was started, then checks that the
second try reattached: exactly one new job for the owner, no second payment, the same job id returned.
The failure points stand in for a worker crash; the state the next try sees is the same.

The scenarios run against both sandbox personalities (``[provider_v4]``, ``[ocean_node]``) unless a comment
says why one exists on Provider v4 only.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ocean.hooks.ocean import OceanComputeHook
from tests.personalities import Personality

pytestmark = pytest.mark.chain

CONTAINER = {
    "entrypoint": "python $ALGO",
    "image": "python",
    "tag": "3.11-slim",
    "checksum": "sha256:" + "0" * 64,
}
#: Runs ~3 s: still active when the second try starts.
SLOW_RAW = {"rawcode": "import time\ntime.sleep(3)\nprint('done')\n", "container": CONTAINER}

DAG_TEMPLATE = '''
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_ocean.operators.compute import OceanComputeStartOperator
from airflow_provider_ocean.operators.resumable import LegacyResumableJobMixin

TRIES: list[dict] = []


class FailingTrigger(BaseTrigger):
    """A triggerer failure: errors at once, while the job keeps running."""

    def __init__(self, job_id):
        super().__init__()
        self.job_id = job_id

    def serialize(self):
        return (f"{{type(self).__module__}}.{{type(self).__qualname__}}", {{"job_id": self.job_id}})

    async def run(self):
        message = "simulated triggerer failure"
        yield TriggerEvent({{"status": "error", "job_id": self.job_id, "message": message}})


class Probe(OceanComputeStartOperator):
    """Records what each try sees, and fails the first try at ``fail_at``."""

    fail_at = None

    def execute(self, context):
        ti = context["ti"]
        TRIES.append(
            {{
                "try": ti.try_number,
                "xcom_payment": ti.xcom_pull(
                    task_ids=self.task_id, key="ocean_payment", include_prior_dates=False
                ),
                "state": {{
                    k: self._state_get(context, k)
                    for k in ("ocean_job", "ocean_payment", "ocean_pending_start", "ocean_pending_orders")
                }},
                "tx_count": self.hook.rpc.get_transaction_count(self.hook.consumer_address, "latest"),
            }}
        )
        return super().execute(context)

    def _pay(self, context, datasets, previous):
        if self.fail_at == "order_pending" and context["ti"].try_number == 1:
            # the chain stops mining; the order is broadcast and this try dies waiting for its receipt
            import threading

            rpc = self.hook.rpc
            rpc.request("miner_stop", [])
            threading.Timer(6.0, lambda: rpc.request("miner_start", [])).start()

            sender = self.hook.context.sender
            original, died = sender.wait, []

            def killed(sent):  # once: a later try may run on the same objects
                if not died:
                    died.append(sent)
                    raise RuntimeError("simulated: the worker died while its order was pending")
                return original(sent)

            sender.wait = killed
        if self.fail_at == "paid_not_recorded" and context["ti"].try_number == 1:
            self.hook.pay_for_compute(datasets, self.algorithm)  # paid on chain, recorded nowhere
            raise RuntimeError("simulated crash between paying and recording the payment")
        payment = super()._pay(context, datasets, previous)
        if self.fail_at == "after_pay" and context["ti"].try_number == 1:
            raise RuntimeError("simulated crash after paying, before starting")
        return payment

    def _start(self, context, datasets, payment):
        result = super()._start(context, datasets, payment)
        if self.fail_at == "after_start" and context["ti"].try_number == 1:
            raise ConnectionResetError("simulated: the answer to the start was lost, the worker died")
        return result

    def poll_until_complete(self, external_id, context):
        if self.fail_at == "trigger_error" and context["ti"].try_number == 1:
            self.defer(trigger=FailingTrigger(external_id["job_id"]), method_name="execute_complete")
        if self.fail_at == "waiting" and context["ti"].try_number == 1:
            raise RuntimeError("simulated worker crash while waiting for the job")
        return super().poll_until_complete(external_id, context)

    def execute_complete(self, context, event=None):
        if self.fail_at == "complete" and context["ti"].try_number == 1:
            raise RuntimeError("simulated failure after the deferral")
        return super().execute_complete(context, event)


class LegacyProbe(LegacyResumableJobMixin, Probe):
    """The Airflow 3.0-3.2 stand-in (Variables instead of task_state_store)."""

    external_id_key = "ocean_job"  # as on OceanComputeStartOperator (the mixin comes first here)

    def __init__(self, **kwargs):  # an own __init__, so that BaseOperatorMeta wraps it
        super().__init__(**kwargs)


class NonDurableProbe(Probe):
    def __init__(self, **kwargs):
        super().__init__(durable=False, **kwargs)


with DAG({dag_id!r}, schedule=None, start_date=datetime(2024, 1, 1, tzinfo=timezone.utc)) as dag:
    op = {cls}(
        task_id="start",
        datasets={datasets!r},
        algorithm={algorithm!r},
        poll_interval=0.3,
        deferrable={deferrable!r},
        retries=1,
        retry_delay=timedelta(seconds=0),
        **{extra!r},
    )
    op.fail_at = {fail_at!r}
'''


@pytest.fixture
def dag_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_db: str, any_conn: str) -> Path:
    """A DAGs folder for this test only (dag.test serialises the DAG from its bundle)."""
    import airflow.settings

    folder = tmp_path / "dags"
    folder.mkdir()
    monkeypatch.setattr(airflow.settings, "DAGS_FOLDER", str(folder))
    return folder


@pytest.fixture
def hook(any_conn: str) -> OceanComputeHook:
    return OceanComputeHook(any_conn, retry_delay=0.2)


def tx_count(hook: OceanComputeHook) -> int:
    return hook.rpc.get_transaction_count(hook.consumer_address, "latest")


def load_dag(folder: Path, **params: Any) -> Any:
    path = folder / f"{params['dag_id']}.py"
    path.write_text(textwrap.dedent(DAG_TEMPLATE.format(**params)))
    spec = importlib.util.spec_from_file_location(f"reattach_{params['dag_id']}", path)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run(folder: Path, hook: OceanComputeHook, **params: Any) -> Outcome:
    """Write and load the DAG, run ``dag.test()`` (retries included), return what happened."""
    params.setdefault("deferrable", False)
    params.setdefault("cls", "Probe")
    params.setdefault("extra", {})
    module = load_dag(folder, **params)
    before = {j.job_id for j in hook.list_jobs()}
    dag_run = module.dag.test()
    new_jobs = [j for j in hook.list_jobs() if j.job_id not in before]
    return Outcome(dag_run, new_jobs, module.TRIES, stored(dag_run.dag_id, dag_run.run_id))


class Outcome:
    def __init__(self, dag_run: Any, new_jobs: list[Any], tries: list[dict[str, Any]], db: dict[str, Any]):
        self.dag_run = dag_run
        self.new_jobs = new_jobs
        self.tries = tries
        self.db = db


def stored(dag_id: str, run_id: str) -> dict[str, Any]:
    """What the metadata DB holds for the run afterwards: task state keys, XComs, our Variables."""
    from airflow.models.task_state_store import TaskStateStoreModel
    from airflow.models.variable import Variable as VariableModel
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_provider_ocean.operators.resumable import VARIABLE_PREFIX

    with create_session() as session:
        state = dict(
            session.execute(
                select(TaskStateStoreModel.key, TaskStateStoreModel.value).where(
                    TaskStateStoreModel.dag_id == dag_id, TaskStateStoreModel.run_id == run_id
                )
            ).all()
        )
        xcoms = dict(
            session.execute(
                select(XComModel.key, XComModel.value).where(
                    XComModel.dag_id == dag_id, XComModel.run_id == run_id
                )
            ).all()
        )
        variables = list(
            session.scalars(select(VariableModel.key).where(VariableModel.key.like(f"{VARIABLE_PREFIX}.%")))
        )
    return {"state": state, "xcom": xcoms, "variables": variables}


def assert_reattached(outcome: Outcome) -> str:
    """Two tries, one new job, no transaction and no XCom-visible payment in try 2; returns the job id."""
    assert outcome.dag_run.state == "success"
    assert [t["try"] for t in outcome.tries] == [1, 2]
    assert len(outcome.new_jobs) == 1, [j.job_id for j in outcome.new_jobs]
    job = outcome.new_jobs[0]
    first, second = outcome.tries
    # Airflow 3 deletes the XComs of a task instance when its next try starts ...
    assert second["xcom_payment"] is None
    # ... and the task state still held the payment, so try 2 sent no transaction at all.
    assert second["state"]["ocean_payment"] is not None or second["state"]["ocean_job"] is not None
    assert outcome.db["xcom"]["return_value"] == job.job_id
    assert outcome.db["xcom"]["ocean_job_id"] == job.job_id
    return job.job_id


def raw(box: Personality) -> dict[str, Any]:
    """A ~3 s raw job on the datasets raw algorithms may use."""
    return {"datasets": box.raw_datasets(), "algorithm": SLOW_RAW}


def registered(box: Personality) -> dict[str, Any]:
    """The dataset with the published algorithm (v4: two orders; node: a free job, no order)."""
    inputs = box.registered()
    return {"datasets": inputs["datasets"], "algorithm": {"did": inputs["algorithm"]["did"]}}


def test_crash_while_waiting_reattaches_to_the_running_job(dag_folder, hook, any_sandbox):
    outcome = run(dag_folder, hook, dag_id="reattach_waiting", fail_at="waiting", **raw(any_sandbox))
    job_id = assert_reattached(outcome)
    second = outcome.tries[1]
    assert second["state"]["ocean_job"]["job_id"] == job_id
    assert second["state"]["ocean_job"]["owner"] == hook.consumer_address
    assert second["state"]["ocean_job"]["provider_url"] == hook.settings.provider_url
    assert second["state"]["ocean_job"]["chain_id"] == any_sandbox["chain_id"]
    assert outcome.new_jobs[0].is_succeeded
    assert tx_count(hook) == second["tx_count"]  # try 2 paid nothing
    assert "ocean_job" not in outcome.db["state"]  # forgotten on success: clearing the task runs anew
    assert "ocean_payment" in outcome.db["state"]


def test_lost_start_answer_is_found_again(dag_folder, hook, any_sandbox):
    """The start reached the server, its answer never reached the task: try 2 finds that job (v4: by the
    orders the start carried; node: by the unique tag the start put in the job's metadata, since a free
    node job has no order at all) instead of starting a second one."""
    outcome = run(
        dag_folder, hook, dag_id="reattach_lost_answer", fail_at="after_start", **registered(any_sandbox)
    )
    job_id = assert_reattached(outcome)
    second = outcome.tries[1]
    assert second["state"]["ocean_job"] is None  # the reference was never stored ...
    pending = second["state"]["ocean_pending_start"]  # ... but what identifies the start was
    if any_sandbox.is_node:
        from airflow_provider_ocean.backends.ocean_node import START_TAG_KEY

        assert pending["transfer_tx_ids"] == []  # nothing to recognise the job by but the tag
        [entry] = hook.node.client.get_status(consumer_address=hook.consumer_address, job_id=job_id)
        assert entry["metadata"] == {START_TAG_KEY: pending["start_id"]}
    else:
        assert outcome.new_jobs[0].agreement_id in pending["transfer_tx_ids"]
    assert tx_count(hook) == second["tx_count"]
    assert job_id == outcome.new_jobs[0].job_id
    assert "ocean_pending_start" not in outcome.db["state"]


def test_deferrable_retry_after_the_deferral_does_not_start_a_second_job(dag_folder, hook, any_sandbox):
    outcome = run(
        dag_folder,
        hook,
        dag_id="reattach_deferred",
        deferrable=True,
        fail_at="complete",
        **registered(any_sandbox),
    )
    assert_reattached(outcome)
    assert outcome.tries[1]["state"]["ocean_job"]["job_id"] == outcome.new_jobs[0].job_id
    assert tx_count(hook) == outcome.tries[1]["tx_count"]


def test_deferrable_retry_after_a_failed_deferral_defers_again_on_the_running_job(
    dag_folder, hook, any_sandbox
):
    outcome = run(
        dag_folder,
        hook,
        dag_id="reattach_deferred_active",
        deferrable=True,
        fail_at="trigger_error",
        **raw(any_sandbox),
    )
    job_id = assert_reattached(outcome)
    assert outcome.tries[1]["state"]["ocean_job"]["job_id"] == job_id
    assert outcome.new_jobs[0].is_succeeded  # try 2 waited (deferred) on the same job until it ended
    assert tx_count(hook) == outcome.tries[1]["tx_count"]


def test_airflow_3_0_to_3_2_stand_in_reattaches_through_variables(dag_folder, hook, any_sandbox):
    outcome = run(
        dag_folder, hook, dag_id="reattach_legacy", cls="LegacyProbe", fail_at="waiting", **raw(any_sandbox)
    )
    job_id = assert_reattached(outcome)
    assert outcome.tries[1]["state"]["ocean_job"]["job_id"] == job_id  # read back from a Variable
    assert tx_count(hook) == outcome.tries[1]["tx_count"]
    assert outcome.db["state"] == {}  # task_state_store was not used
    assert not [v for v in outcome.db["variables"] if ".reattach_legacy." in v]  # deleted on success


def test_without_durability_a_retry_starts_a_second_job(dag_folder, hook, any_sandbox):
    """Control: the same crash with ``durable=False`` duplicates the job (what the tests above catch)."""
    outcome = run(
        dag_folder,
        hook,
        dag_id="reattach_control",
        cls="NonDurableProbe",
        fail_at="waiting",
        **registered(any_sandbox),
    )
    assert outcome.dag_run.state == "success"
    assert len(outcome.new_jobs) == 2


def test_orders_paid_by_a_failed_try_are_reused_not_paid_again(dag_folder, hook, any_sandbox):
    """Try 1 paid, then died before starting; try 2 reuses its orders (node: a paid job, so also the
    escrow deposit and authorization try 1 made) and sends no transaction at all."""
    outcome = run(
        dag_folder,
        hook,
        dag_id="reattach_paid_then_failed",
        fail_at="after_pay",
        extra=any_sandbox.paid(),
        **registered(any_sandbox),
    )
    assert outcome.dag_run.state == "success"
    assert len(outcome.new_jobs) == 1
    first, second = outcome.tries
    assert second["xcom_payment"] is None  # the failed try's XCom is gone ...
    paid = second["state"]["ocean_payment"]  # ... its task state is not
    assert second["state"]["ocean_job"] is None
    assert tx_count(hook) == second["tx_count"]  # try 2 sent no transaction: the orders were still valid
    assert second["tx_count"] > first["tx_count"]  # (try 1 did pay)
    final = outcome.db["xcom"]["ocean_payment"]
    assert [o["transfer_tx_id"] for o in final["datasets"]] == [o["transfer_tx_id"] for o in paid["datasets"]]
    assert final["algorithm"]["transfer_tx_id"] == paid["algorithm"]["transfer_tx_id"]
    assert {o["action"] for o in final["datasets"]} | {final["algorithm"]["action"]} == {"valid"}
    if any_sandbox.is_node:
        assert final["ocean_node"]["free"] is False
        assert outcome.new_jobs[0].agreement_id  # the node's escrow lock
    else:
        assert outcome.new_jobs[0].agreement_id == paid["algorithm"]["transfer_tx_id"]


# Provider v4 only: finding the orders of a try that died before recording them reads OrderStarted events
# whose consumer is the environment's address (OceanComputeHook.recent_orders); that lookup is not
# implemented for Ocean Node connections, where such orders are paid again (the job still starts once).
@pytest.mark.parametrize("personality", ["provider_v4"], indirect=True)
def test_orders_paid_by_a_try_that_died_before_recording_them_are_found_on_chain(
    dag_folder, hook, any_sandbox
):
    sandbox = any_sandbox
    outcome = run(
        dag_folder,
        hook,
        dag_id="reattach_paid_not_recorded",
        datasets=[sandbox["assets"]["dataset"]["did"]],
        algorithm={"did": sandbox["assets"]["algorithm"]["did"]},
        fail_at="paid_not_recorded",
    )
    assert outcome.dag_run.state == "success"
    assert len(outcome.new_jobs) == 1
    first, second = outcome.tries
    assert second["state"]["ocean_payment"] is None  # nothing recorded anywhere ...
    assert second["xcom_payment"] is None
    assert second["tx_count"] == first["tx_count"] + 2  # ... but try 1 did pay (dataset + algorithm)
    assert tx_count(hook) == second["tx_count"]  # and try 2 found those orders instead of paying again
    final = outcome.db["xcom"]["ocean_payment"]
    assert {o["action"] for o in final["datasets"]} | {final["algorithm"]["action"]} == {"valid"}


# Provider v4 only (the node personality's free job sends no order).
@pytest.mark.parametrize("personality", ["provider_v4"], indirect=True)
def test_an_order_still_pending_when_its_try_died_is_settled_not_paid_again(dag_folder, hook, any_sandbox):
    """Try 1 broadcasts its order while the chain does not mine, and dies; try 2 starts before the order
    is mined. The order, recorded before its broadcast, is settled and reused: one order, one job.
    Without the journal nothing tells try 2 about the pending order (seen: it reused another run's order,
    and the pending one was mined after the run, for nothing) - these assertions then fail."""
    from tests.faults.harness import ORDER_REUSED_TOPIC, ORDER_STARTED_TOPIC, rpc_call

    sandbox = any_sandbox
    datatoken = sandbox["assets"]["dataset_raw"]["datatoken"]
    block = hook.rpc.block_number()
    outcome = run(
        dag_folder,
        hook,
        dag_id="reattach_order_pending",
        fail_at="order_pending",
        **raw(any_sandbox),
    )
    logs = rpc_call(sandbox["rpc_url"], "eth_getLogs", [{"fromBlock": hex(block + 1), "address": datatoken}])
    started = [log["transactionHash"] for log in logs if log["topics"][0] == ORDER_STARTED_TOPIC]
    reused = [log["transactionHash"] for log in logs if log["topics"][0] == ORDER_REUSED_TOPIC]
    print(f"\norders started {started}, reused {reused}")
    assert outcome.dag_run.state == "success"
    assert len(outcome.new_jobs) == 1
    first, second = outcome.tries
    recorded = second["state"]["ocean_pending_orders"]  # try 1 recorded its order before broadcasting it
    assert recorded
    pending_order = recorded[0]["tx_hash"]
    assert set(started) == {pending_order}  # one order, the pending one, mined ...
    assert outcome.new_jobs[0].agreement_id in started + reused  # ... and used by the job
