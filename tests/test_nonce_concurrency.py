"""Nonces of one wallet shared by many threads, processes and tasks: never reused, never out of order.

- Provider nonces: the process-wide allocator locks a per-(Provider, address) file (``fcntl.flock``)
  that records the last nonce handed out;
- chain nonces: every sender of an account reserves and broadcasts under a per-(chain, address) lock;
  a transaction that is not mined is rebroadcast as the same signed bytes (same nonce, same hash);
- end to end: 32 tasks in 8 processes with one key each pay their own orders and start a job at once
  against the sandbox: no nonce error surfaces, and exactly 32 distinct jobs appear.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_ocean.chain.errors import ReceiptTimeoutError, RpcError, RpcUnavailableError
from airflow_provider_ocean.chain.rpc import JsonRpcClient
from airflow_provider_ocean.chain.tx import TransactionSender
from tests import exactly_once_support as support

if TYPE_CHECKING:
    from collections.abc import Callable

# Forked, not spawned: each worker is a separate process with its own locks, sessions and hooks, as
# forked executor workers are, without paying for a fresh Airflow import in each (2-CPU CI machines).
FORK = multiprocessing.get_context("fork")


def run_in_processes(
    function: Callable[..., Any], processes: int, make_args: Callable[[int], tuple[Any, ...]]
) -> tuple[list[Any], float]:
    """Run ``function(*make_args(index), barrier)`` in ``processes`` processes that start together."""
    with FORK.Manager() as manager:
        barrier = manager.Barrier(processes)
        with ProcessPoolExecutor(max_workers=processes, mp_context=FORK) as pool:
            started = time.monotonic()
            futures = [pool.submit(function, *make_args(i), barrier) for i in range(processes)]
            results = [f.result(timeout=300) for f in futures]
            return results, time.monotonic() - started


class TestProviderNoncesAcrossProcesses:
    def test_processes_sharing_a_wallet_never_get_the_same_nonce(self, tmp_path):
        results, _ = run_in_processes(support.allocate_nonces, 6, lambda i: (str(tmp_path), 150))
        values = [v for chunk in results for v in chunk]
        assert len(values) == 900
        assert len(set(values)) == 900
        for chunk in results:  # each process sees its own nonces strictly increasing
            assert chunk == sorted(chunk)
            assert len(set(chunk)) == len(chunk)
        assert (tmp_path / next(p.name for p in tmp_path.iterdir())).read_text() == str(max(values))

    def test_control_without_the_lock_file_processes_collide(self):
        """What the lock file prevents: with a frozen clock, unlocked processes hand out equal nonces."""
        results, _ = run_in_processes(support.allocate_nonces, 4, lambda i: (None, 50))
        values = [v for chunk in results for v in chunk]
        assert len(set(values)) < len(values)

    def test_hosts_without_a_shared_lock_never_send_equal_v4_nonces(self, tmp_path):
        """Six "hosts" (own lock directory each) and a frozen clock: the integer parts collide, the salted
        nonces never do (Provider v4 would accept an equal one and fail after running the command)."""
        from airflow_provider_ocean.signing import process_salt

        hosts = 6
        process_salt()  # drawn in the parent before the fork: each child must draw its own
        results, _ = run_in_processes(
            support.allocate_salted_nonces, hosts, lambda i: (str(tmp_path / f"host{i}"), 100)
        )
        values = [Decimal(v) for chunk in results for v in chunk]
        assert len(set(values)) == len(values) == hosts * 100
        assert len({int(v) for v in values}) == 100  # what the salt fixes: every host counts 1001, 1002...
        assert len({chunk[0].split(".")[1] for chunk in results}) == hosts  # a salt per process
        for chunk in results:
            assert [Decimal(v) for v in chunk] == sorted(Decimal(v) for v in chunk)

    def test_the_lock_is_released_when_the_holder_dies(self, tmp_path):
        from airflow_provider_ocean.locks import file_lock

        process = FORK.Process(target=_hold_lock_forever, args=(str(tmp_path),))
        process.start()
        try:
            deadline = time.monotonic() + 60
            while not (tmp_path / "held").exists():
                assert time.monotonic() < deadline
                time.sleep(0.05)
            acquired = threading.Event()

            def take() -> None:
                with file_lock(str(tmp_path), "wallet.lock"):
                    acquired.set()

            waiter = threading.Thread(target=take, daemon=True)
            waiter.start()
            assert not acquired.wait(0.5)  # held by the other process
            process.kill()
            assert acquired.wait(10)  # the kernel dropped the dead holder's lock
        finally:
            process.kill()
            process.join(10)


def _hold_lock_forever(lock_dir: str) -> None:
    from pathlib import Path

    from airflow_provider_ocean.locks import file_lock

    with file_lock(lock_dir, "wallet.lock"):
        (Path(lock_dir) / "held").write_text("1")
        time.sleep(600)


class _FakeRpc:
    """Answers like a node whose pending count lags: the first nonce offered is taken."""

    url = "fake"

    def __init__(self) -> None:
        self.sent_nonces: list[int] = []
        self.taken = {5}
        self.message = "nonce too low"

    def chain_id(self) -> int:
        return 8996

    def get_transaction_count(self, address: str, block: str = "pending") -> int:
        return 5  # stale: nonce 5 is already used

    def get_block(self, block: Any = "latest") -> dict[str, Any]:
        return {}

    def gas_price(self) -> int:
        return 1

    def send_raw_transaction(self, raw: bytes) -> str:
        import rlp

        nonce = int.from_bytes(rlp.decode(raw)[0], "big")  # legacy transaction: [nonce, gasPrice, ...]
        self.sent_nonces.append(nonce)
        if nonce in self.taken:
            raise RpcError("eth_sendRawTransaction", -32000, self.message)
        return "0x"


@pytest.mark.parametrize(
    "message",
    ["nonce too low", "the tx doesn't have the correct nonce. account has nonce of: 6 tx has nonce of: 5."],
    ids=["geth", "ganache"],
)
def test_a_taken_nonce_is_bumped_not_retried_as_is(tmp_path, message):
    rpc = _FakeRpc()
    rpc.message = message
    sender = TransactionSender(rpc, "0x" + "11" * 32, lock_dir=str(tmp_path))  # type: ignore[arg-type]
    sent = sender.send(sender.address, b"", gas=21_000)
    assert rpc.sent_nonces == [5, 6]
    assert sent.tx["nonce"] == 6
    assert "raw" not in repr(sent)


@pytest.mark.chain
class TestChainNonces:
    def test_one_key_8_processes_32_transactions(self, sandbox, tmp_path):
        rpc = JsonRpcClient(sandbox["rpc_url"])
        address = sandbox["other"]["address"]
        before = rpc.get_transaction_count(address, "latest")
        results, seconds = run_in_processes(
            support.send_transactions,
            8,
            lambda i: (sandbox["rpc_url"], sandbox["other"]["key"], i, 4, str(tmp_path)),
        )
        sends = [r for chunk in results for r in chunk]
        errors = [r["error"] for r in sends if "error" in r]
        assert errors == []
        assert len({r["hash"] for r in sends}) == 32
        assert sorted(r["nonce"] for r in sends) == list(range(before, before + 32))
        assert rpc.get_transaction_count(address, "latest") == before + 32
        print(f"\n32 transactions from one key in 8 processes: {seconds:.1f} s, 0 errors")

    def test_a_dropped_transaction_is_rebroadcast_with_the_same_nonce_and_bytes(self, sandbox):
        rpc = _DroppingRpc(sandbox["rpc_url"])
        sender = TransactionSender(rpc, sandbox["other"]["key"], receipt_timeout=30, rebroadcast_interval=0.3)
        before = rpc.get_transaction_count(sender.address, "latest")
        sent = sender.send(sender.address, b"", value=7, gas=21_000)
        assert rpc.get_transaction_receipt(sent.tx_hash) is None  # the node never got it
        receipt = sender.wait(sent)
        assert receipt["transactionHash"] == sent.tx_hash
        assert rpc.raw_sent[0] == rpc.raw_sent[1]  # the very same signed transaction
        assert rpc.get_transaction_count(sender.address, "latest") == before + 1

    @pytest.mark.parametrize("received", [True, False], ids=["answer-lost", "never-arrived"])
    def test_a_broadcast_without_answer_is_kept_not_resigned(self, sandbox, received):
        rpc = _ResetOnFirstBroadcast(sandbox["rpc_url"], forward=received)
        sender = TransactionSender(rpc, sandbox["other"]["key"], receipt_timeout=30, rebroadcast_interval=0.3)
        before = rpc.get_transaction_count(sender.address, "latest")
        receipt = sender.transact(sender.address, b"", value=10, gas=21_000)
        assert rpc.raw_sent[0] == rpc.raw_sent[-1]  # only ever the same signed bytes
        assert receipt["transactionHash"] == "0x" + _keccak(rpc.raw_sent[0])
        assert rpc.get_transaction_count(sender.address, "latest") == before + 1
        assert len(rpc.raw_sent) == (1 if received else 2)

    def test_control_a_dropped_transaction_without_rebroadcast_is_never_mined(self, sandbox):
        rpc = _DroppingRpc(sandbox["rpc_url"])
        sender = TransactionSender(rpc, sandbox["other"]["key"], receipt_timeout=1, rebroadcast_interval=60)
        with pytest.raises(ReceiptTimeoutError):
            sender.transact(sender.address, b"", value=8, gas=21_000)

    def test_rebroadcasts_while_the_chain_stalls_mine_one_transaction(self, sandbox):
        rpc = JsonRpcClient(sandbox["rpc_url"])
        sender = TransactionSender(rpc, sandbox["other"]["key"], receipt_timeout=30, rebroadcast_interval=0.2)
        before = rpc.get_transaction_count(sender.address, "latest")
        rpc.request("miner_stop", [])
        try:
            sent = sender.send(sender.address, b"", value=9, gas=21_000)
            result: dict[str, Any] = {}
            waiter = threading.Thread(target=lambda: result.update(receipt=sender.wait(sent)))
            waiter.start()
            time.sleep(1.2)  # several rebroadcasts of the pending transaction
        finally:
            rpc.request("miner_start", [])
        waiter.join(30)
        assert result["receipt"]["transactionHash"] == sent.tx_hash
        assert rpc.get_transaction_count(sender.address, "latest") == before + 1


def _keccak(raw: bytes) -> str:
    from eth_utils import keccak

    return keccak(raw).hex()


class _ResetOnFirstBroadcast(JsonRpcClient):
    """The first broadcast's connection breaks: after the node got it (``forward``) or before."""

    def __init__(self, url: str, *, forward: bool) -> None:
        super().__init__(url)
        self.forward = forward
        self.raw_sent: list[bytes] = []

    def send_raw_transaction(self, raw: bytes) -> str:
        self.raw_sent.append(raw)
        if len(self.raw_sent) == 1:
            if self.forward:
                super().send_raw_transaction(raw)
            raise RpcUnavailableError("RPC unreachable for eth_sendRawTransaction: ConnectionError")
        return super().send_raw_transaction(raw)


class _DroppingRpc(JsonRpcClient):
    """A node that accepts the first broadcast and then loses it (a real node can drop a pooled tx)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.raw_sent: list[bytes] = []

    def send_raw_transaction(self, raw: bytes) -> str:
        self.raw_sent.append(raw)
        if len(self.raw_sent) == 1:
            return "0x"  # "accepted", never forwarded
        return super().send_raw_transaction(raw)


@pytest.mark.chain
def test_32_tasks_in_8_processes_with_one_key_pay_and_start_exactly_once(sandbox, ocean_conn):
    """Each task pays its own order (so agreementIds are distinct) and starts one job, all at once.

    A raw algorithm on ``dataset_raw`` keeps it to one order per task (the agreementId is the dataset's
    order); the published-algorithm path is the same code with a second order.
    """
    from airflow_provider_ocean.hooks.ocean import OceanComputeHook

    tasks_per_process, processes = 4, 8
    total = tasks_per_process * processes
    support.top_up(sandbox, ("dataset_raw",), total + 20)
    hook = OceanComputeHook(ocean_conn)
    before = {j.job_id for j in hook.list_jobs()}
    dataset = sandbox["assets"]["dataset_raw"]["did"]
    algorithm = support.QUICK_RAW

    # ganache answers one call at a time: 32 simultaneous payers queue their gas estimates behind each
    # other, which on a small loaded machine can exceed the default 30 s read timeout; and under that
    # load ganache now and then never answers a call at all, which the client's read retry absorbs.
    conn = json.loads(sandbox["conn_json"])
    conn["extra"]["timeout"] = 60
    chunks, seconds = run_in_processes(
        support.pay_and_start_tasks,
        processes,
        lambda i: (json.dumps(conn), i, tasks_per_process, dataset, algorithm),
    )
    results = [r for chunk in chunks for r in chunk["results"]]
    errors = [r for r in results if "error" in r]
    nonce_errors = [r for r in errors if "nonce" in r["error"].lower()]
    jobs = {j.job_id: j for j in hook.list_jobs() if j.job_id not in before}
    job_ids = [r.get("job_id") for r in results]

    print(
        f"\n{total} tasks in {processes} processes, one key: {seconds:.1f} s wall; "
        f"{len(errors)} errors ({len(nonce_errors)} nonce errors); "
        f"{len(jobs)} new jobs for {len(set(job_ids))} distinct job ids; internal retries: Provider "
        f"re-signs {sum(c['provider_resigned'] for c in chunks)}, chain nonce refetches "
        f"{sum(c['chain_refetched'] for c in chunks)}; slowest task "
        f"{max((r.get('seconds', 0) for r in results), default=0):.1f} s (paying: "
        f"{max((r.get('pay_seconds', 0) for r in results), default=0):.1f} s)"
    )
    assert nonce_errors == []
    assert errors == []
    assert len(results) == total
    assert len(set(job_ids)) == total  # each task got its own job ...
    assert set(jobs) == set(job_ids)  # ... and the owner has exactly those new jobs: no duplicate
    for result in results:
        assert result["actions"] == ["start"]  # every task paid its own order
        assert jobs[result["job_id"]].agreement_id in result["transfer_tx_ids"]
    agreements = Counter(j.agreement_id for j in jobs.values())
    assert max(agreements.values()) == 1
    _wait_for(hook, set(job_ids))


def _wait_for(hook: Any, job_ids: set[str], timeout: float = 90) -> None:
    """Let the jobs end so that later tests find an idle engine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [j for j in hook.list_jobs() if j.job_id in job_ids and not j.is_terminal]
        if not running:
            return
        time.sleep(0.5)
