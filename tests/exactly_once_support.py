"""Helpers of the exactly-once and nonce-concurrency tests (run in forked worker processes).

Everything the workers need is imported here, once, before the processes are forked.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from airflow_provider_ocean.chain.rpc import JsonRpcClient
from airflow_provider_ocean.chain.tx import TransactionSender
from airflow_provider_ocean.hooks.ocean import OceanComputeHook
from airflow_provider_ocean.signing import NonceAllocator

ONE = 10**18
CONTAINER = {
    "entrypoint": "python $ALGO",
    "image": "python",
    "tag": "3.11-slim",
    "checksum": "sha256:" + "0" * 64,
}
QUICK_RAW = {"rawcode": "print('quick')\n", "container": CONTAINER}
SLOW_RAW = {"rawcode": "import time\ntime.sleep(4)\nprint('slow')\n", "container": CONTAINER}


def top_up(sandbox: dict[str, Any], keys: tuple[str, ...], at_least: int) -> None:
    """Mint datatokens of the given sample assets to the consumer so that it holds ``at_least`` of each.

    :param sandbox: the sandbox fixture's info.
    :param keys: asset keys (``dataset``, ``algorithm``, ``dataset_raw``...).
    :param at_least: whole datatokens wanted.
    """
    from airflow_provider_ocean.chain import abi
    from airflow_provider_ocean.chain.tx import call_function

    rpc = JsonRpcClient(sandbox["rpc_url"])
    publisher = TransactionSender(rpc, sandbox["publisher"]["key"])
    consumer = sandbox["consumer"]["address"]
    for key in keys:
        token = sandbox["assets"][key]["datatoken"]
        (held,) = call_function(rpc, token, abi.ERC20_BALANCE_OF, (consumer,), ["uint256"])
        if held < at_least * ONE:
            publisher.transact(
                token, abi.encode_call("mint(address,uint256)", consumer, at_least * ONE - held), gas=200_000
            )


class _Counter(logging.Handler):
    """Counts log records that mention nonces (internal retries), per message kind."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.provider_resigned = 0
        self.chain_refetched = 0

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "refused nonce" in text:
            self.provider_resigned += 1
        elif "was taken" in text and "Nonce" in text:
            self.chain_refetched += 1


def pay_and_start_tasks(
    conn_json: str, process_index: int, tasks: int, dataset: str, algorithm: Any, barrier: Any
) -> dict[str, Any]:
    """One worker process: ``tasks`` threads, each a task that pays its own orders and starts one job.

    Every thread has its own hook (its own transaction sender and wire client), as separate task
    instances would. All processes start together at ``barrier``.
    """
    os.environ["AIRFLOW_CONN_OCEAN_DEFAULT"] = conn_json
    counter = _Counter()
    logger = logging.getLogger("airflow_provider_ocean")
    logger.addHandler(counter)
    logger.setLevel(logging.INFO)
    results: list[dict[str, Any]] = [{} for _ in range(tasks)]

    def task(slot: int) -> None:
        name = f"p{process_index}-t{slot}"
        started = time.monotonic()
        try:
            hook = OceanComputeHook("ocean_default", retry_delay=0.2)
            payment = hook.pay_for_compute([dataset], algorithm)
            paid = time.monotonic()
            txs = [o["transfer_tx_id"] for o in payment["datasets"]]
            if payment.get("algorithm"):
                txs.append(payment["algorithm"]["transfer_tx_id"])
            job = hook.start_compute([dataset], algorithm, payment=payment)
            results[slot] = {
                "task": name,
                "job_id": job.job_id,
                "agreement_id": job.agreement_id,
                "transfer_tx_ids": txs,
                "actions": [o["action"] for o in payment["datasets"]]
                + ([payment["algorithm"]["action"]] if payment.get("algorithm") else []),
                "seconds": time.monotonic() - started,
                "pay_seconds": paid - started,
            }
        except Exception as exc:  # reported, not raised: the test counts them
            results[slot] = {"task": name, "error": f"{type(exc).__name__}: {exc}"}

    barrier.wait(timeout=180)
    threads = [threading.Thread(target=task, args=(slot,)) for slot in range(tasks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    logger.removeHandler(counter)
    return {
        "results": results,
        "provider_resigned": counter.provider_resigned,
        "chain_refetched": counter.chain_refetched,
    }


def send_transactions(
    rpc_url: str, key: str, process_index: int, count: int, lock_dir: str | None, barrier: Any
) -> list[dict[str, Any]]:
    """One worker process: ``count`` threads each send one distinct transaction from ``key`` at once."""
    out: list[dict[str, Any]] = [{} for _ in range(count)]

    def one(slot: int) -> None:
        sender = TransactionSender(JsonRpcClient(rpc_url), key, lock_dir=lock_dir)
        try:
            # a distinct value per transaction: two identical transactions would be one
            sent = sender.send(sender.address, b"", value=process_index * 1000 + slot + 1, gas=21_000)
            receipt = sender.wait(sent)
            out[slot] = {"hash": sent.tx_hash, "nonce": sent.tx["nonce"], "status": receipt["status"]}
        except Exception as exc:
            out[slot] = {"error": f"{type(exc).__name__}: {exc}"}

    barrier.wait(timeout=180)
    threads = [threading.Thread(target=one, args=(slot,)) for slot in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def allocate_nonces(lock_dir: str | None, count: int, barrier: Any) -> list[int]:
    """One worker process: ``count`` Provider nonces for one wallet with a frozen clock."""
    allocator = NonceAllocator(clock=lambda: 1_000, lock_dir=lock_dir)
    barrier.wait(timeout=60)
    return [int(allocator.next_nonce("http://provider.test", "0xWallet", "1")) for _ in range(count)]


def allocate_salted_nonces(lock_dir: str, count: int, barrier: Any) -> list[str]:
    """One worker "host" (its own lock directory): ``count`` salted v4 nonces with a frozen clock."""
    allocator = NonceAllocator(clock=lambda: 1_000, lock_dir=lock_dir)
    barrier.wait(timeout=60)
    return [allocator.next_nonce("http://provider.test", "0xWallet", "1", salt=True) for _ in range(count)]
