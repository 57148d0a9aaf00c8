"""OceanComputeHook against the sandbox's Ocean Node personality (backend detected from ``GET /``).

Free jobs, paid jobs through the real Escrow contract, DID inputs ordered to the node, stop, results.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from typing import Any

import pytest

from airflow_provider_ocean.exceptions import OceanConnectionError, OceanFeeCapError, OceanValidationError
from airflow_provider_ocean.hooks.ocean import OceanComputeHook
from airflow_provider_ocean.models import JobStatus
from airflow_provider_ocean.payment.escrow import EscrowPayer

pytestmark = pytest.mark.chain

ONE = 10**18
SAMPLE = "sandbox/ocean_sandbox/data/sample_algorithm.py"


@pytest.fixture
def node_conn(node_sandbox: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_OCEAN_NODE", node_sandbox["conn_json"])
    return "ocean_node"


@pytest.fixture
def hook(node_conn: str) -> OceanComputeHook:
    return OceanComputeHook(node_conn, retry_delay=0.2)


def weather(info: dict[str, Any]) -> str:
    return info["provider_url"] + "/sandbox/files/weather.csv"


def sample_algorithm(**extra: Any) -> dict[str, Any]:
    from pathlib import Path

    code = (Path(__file__).parents[2] / SAMPLE).read_text()
    return {
        "rawcode": code,
        "container": {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11"},
        **extra,
    }


def wait(hook: OceanComputeHook, job_id: str, timeout: float = 90.0) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        job = hook.get_job_status(job_id)
        if job.is_terminal:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still running ({job.status})"
        time.sleep(0.3)


def test_backend_is_detected(hook: OceanComputeHook, node_sandbox: dict[str, Any]) -> None:
    assert hook.backend == "ocean_node"
    assert hook.is_ocean_node
    ok, message = hook.test_connection()
    assert ok, message
    assert node_sandbox["provider_address"] in message
    envs = hook.get_environments()
    assert [e.id for e in envs] == [
        node_sandbox["environments"]["free"],
        node_sandbox["environments"]["paid"],
    ]


def test_free_job_with_raw_dataset_and_inline_algorithm(
    hook: OceanComputeHook,
    node_sandbox: dict[str, Any],
) -> None:
    datasets = [weather(node_sandbox)]
    algorithm = sample_algorithm(algocustomdata={"column": "temperature_c"})
    result = hook.run_compute(datasets, algorithm)
    payment = result["payment"]
    assert payment["backend"] == "ocean_node"
    assert payment["ocean_node"]["free"] is True
    assert payment["environment"] == node_sandbox["environments"]["free"]
    assert payment["datasets"][0]["action"] == "raw"
    job_id = result["job_id"]
    assert job_id.split("-", 1)[0] == payment["environment"].split("-", 1)[0]  # full id kept
    job = wait(hook, job_id)
    assert job.outcome == "succeeded", job.status_text
    assert job.job_id == job_id
    output = next(r for r in job.results if r.type == "output")
    buffer = io.BytesIO()
    written = hook.download_result(job_id, output.index, buffer)
    assert written.bytes_written == output.filesize
    with tarfile.open(fileobj=io.BytesIO(buffer.getvalue())) as archive:
        summary = json.load(archive.extractfile("outputs/summary.json"))
    assert summary["column"] == "temperature_c"
    assert summary["inputs"] == 1
    assert [j.job_id for j in hook.list_jobs() if j.job_id == job_id] == [job_id]
    # after the payment cron (71 -> 70) the verdict is unchanged
    time.sleep(1.5)
    assert hook.get_job_status(job_id).outcome == "succeeded"


def test_failing_algorithm_fails_even_after_the_cron(
    hook: OceanComputeHook, node_sandbox: dict[str, Any]
) -> None:
    algorithm = {
        "rawcode": "import sys\nprint('bad')\nsys.exit(2)\n",
        "container": {"entrypoint": "python $ALGO"},
    }
    job_id = hook.run_compute([weather(node_sandbox)], algorithm)["job_id"]
    job = wait(hook, job_id)
    assert job.outcome == "failed"
    assert "exit code 2" in job.status_text
    time.sleep(1.5)
    later = OceanComputeHook(hook.ocean_conn_id).get_job_status(job_id)  # a fresh hook: no memory
    assert later.outcome == "failed"
    assert later.status != 70


def pay_small_paid_job(hook: OceanComputeHook, node_sandbox: dict[str, Any]) -> dict[str, Any]:
    """Pay for one CPU for 60 s of the sample algorithm on the paid environment (3.2 OCEAN)."""
    return hook.pay_for_compute(
        [weather(node_sandbox)],
        sample_algorithm(),
        node_sandbox["environments"]["paid"],
        max_fee=10 * ONE,
        resources={"cpu": 1},
        max_job_duration=60,
    )


def test_paid_job_through_the_escrow(hook: OceanComputeHook, node_sandbox: dict[str, Any]) -> None:
    ocean = node_sandbox["addresses"]["Ocean"]
    escrow = EscrowPayer(hook.rpc, node_sandbox["addresses"]["Escrow"])
    before = escrow.funds(hook.consumer_address, ocean)
    payment = pay_small_paid_job(hook, node_sandbox)
    node = payment["ocean_node"]
    assert node["free"] is False
    assert int(node["amount"]) == int(3.2 * ONE)
    funds = escrow.funds(hook.consumer_address, ocean)
    assert funds.available >= int(node["amount"])
    assert funds.available - before.available <= int(node["amount"])  # only the shortfall was deposited
    (auth,) = escrow.authorizations(hook.consumer_address, ocean, node_sandbox["provider_address"])
    assert auth.fits(int(node["amount"]), node["min_lock_seconds"])

    job = hook.start_compute([weather(node_sandbox)], sample_algorithm(), payment=payment)
    assert job.agreement_id  # the lock tx
    locked = escrow.funds(hook.consumer_address, ocean)
    assert locked.locked >= int(node["amount"])
    finished = wait(hook, job.job_id)
    assert finished.outcome == "succeeded", finished.status_text


def test_fee_cap_is_checked_before_spending(hook: OceanComputeHook, node_sandbox: dict[str, Any]) -> None:
    nonce = hook.rpc.get_transaction_count(hook.consumer_address, "latest")
    with pytest.raises(OceanFeeCapError):
        hook.pay_for_compute(
            [weather(node_sandbox)],
            sample_algorithm(),
            node_sandbox["environments"]["paid"],
            max_fee=ONE,
            max_job_duration=60,
        )
    assert hook.rpc.get_transaction_count(hook.consumer_address, "latest") == nonce


def test_paid_job_with_did_inputs(hook: OceanComputeHook, node_sandbox: dict[str, Any]) -> None:
    assets = node_sandbox["assets"]
    datasets = [assets["dataset_trusted"]["did"]]
    algorithm = assets["algorithm"]["did"]
    result = hook.run_compute(datasets, algorithm, node_sandbox["environments"]["paid"], max_fee=20 * ONE)
    payment = result["payment"]
    assert payment["datasets"][0]["action"] == "start"
    assert payment["algorithm"]["action"] == "start"
    job = wait(hook, result["job_id"])
    assert job.outcome == "succeeded", job.status_text


def test_paid_job_with_raw_and_did_datasets(hook: OceanComputeHook, node_sandbox: dict[str, Any]) -> None:
    # the node quotes DID datasets only (400 "Missing dataset did" for a raw one): the order fee of the
    # DID dataset must still be matched to it when a raw URL stands before it
    assets = node_sandbox["assets"]
    datasets = [weather(node_sandbox), assets["dataset_trusted"]["did"]]
    result = hook.run_compute(
        datasets, assets["algorithm"]["did"], node_sandbox["environments"]["paid"], max_fee=20 * ONE
    )
    actions = [d.get("action") for d in result["payment"]["datasets"]]
    assert "start" in actions, actions
    job = wait(hook, result["job_id"])
    assert job.outcome == "succeeded", job.status_text


def test_stop(hook: OceanComputeHook, node_sandbox: dict[str, Any]) -> None:
    code = "import time\nprint('sleeping', flush=True)\nfor _ in range(400):\n    time.sleep(0.1)\n"
    job_id = hook.run_compute([weather(node_sandbox)], {"rawcode": code})["job_id"]
    deadline = time.monotonic() + 30
    while hook.get_job_status(job_id).status != 40:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    lines = []
    for line in hook.node.stream_logs(job_id):
        lines.append(line)
        break
    assert lines == ["sleeping"]
    hook.stop_job(job_id)
    job = wait(hook, job_id)
    assert job.outcome == "stopped"
    assert job.stopreq == 1


def test_node_options_are_refused_on_a_provider(ocean_conn: str) -> None:
    with pytest.raises(OceanValidationError, match="only apply to Ocean Node"):
        OceanComputeHook(ocean_conn).pay_for_compute(
            ["did:op:" + "0" * 64], "did:op:" + "1" * 64, resources={"cpu": 1}
        )


def test_paid_job_with_an_unreachable_rpc_is_a_connection_error_before_anything_is_sent(
    node_sandbox: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node backend checks the RPC node as the Provider v4 backend does (it used to let the chain
    client's raw error through)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    conn = json.loads(node_sandbox["conn_json"])
    conn["extra"]["rpc_url"] = f"http://127.0.0.1:{closed}"
    monkeypatch.setenv("AIRFLOW_CONN_OCEAN_NODE_NO_RPC", json.dumps(conn))
    hook = OceanComputeHook("ocean_node_no_rpc", retry_delay=0.0)
    with pytest.raises(OceanConnectionError, match="cannot be reached"):
        hook.pay_for_compute(
            [weather(node_sandbox)],
            sample_algorithm(),
            node_sandbox["environments"]["paid"],
            max_fee=10 * ONE,
            max_job_duration=60,
        )


def test_parallel_paid_starts_from_one_new_wallet_all_start(
    node_sandbox: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three tasks of one new wallet pay and start at once: each plans the escrow against what the others
    locked (the node refuses a start over the authorized lock count or amount, or beyond the funds)."""
    import threading

    from eth_account import Account

    from airflow_provider_ocean.chain.abi import encode_call
    from airflow_provider_ocean.chain.rpc import JsonRpcClient
    from airflow_provider_ocean.chain.tx import TransactionSender

    wallet = Account.create()
    rpc = JsonRpcClient(node_sandbox["rpc_url"])
    funder = TransactionSender(rpc, node_sandbox["publisher"]["key"])
    funder.transact(wallet.address, b"", value=10**18, gas=21_000, what="gas money")
    funder.transact(
        node_sandbox["addresses"]["Ocean"],
        encode_call("transfer(address,uint256)", wallet.address, 30 * ONE),
        gas=200_000,
        what="OCEAN",
    )
    conn = json.loads(node_sandbox["conn_json"])
    monkeypatch.setenv("AIRFLOW_CONN_OCEAN_NODE_PARALLEL", json.dumps({**conn, "password": wallet.key.hex()}))
    started: list[JobStatus] = []
    failed: list[BaseException] = []
    go = threading.Barrier(3)

    def one_task() -> None:
        try:
            hook = OceanComputeHook("ocean_node_parallel", retry_delay=0.2)
            go.wait(timeout=30)
            payment = pay_small_paid_job(hook, node_sandbox)
            started.append(hook.start_compute([weather(node_sandbox)], sample_algorithm(), payment=payment))
        except BaseException as exc:  # reported below
            failed.append(exc)

    tasks = [threading.Thread(target=one_task) for _ in range(3)]
    for task in tasks:
        task.start()
    for task in tasks:
        task.join(timeout=300)
    assert not failed, [f"{type(e).__name__}: {e}" for e in failed]
    assert len({job.job_id for job in started}) == 3
    assert len({job.agreement_id for job in started}) == 3  # three locks
    hook = OceanComputeHook("ocean_node_parallel", retry_delay=0.2)
    for job in started:
        assert wait(hook, job.job_id).outcome == "succeeded"
