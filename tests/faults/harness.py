"""What the fault scenarios observe from outside the client: the owner's jobs (straight from the sandbox
Provider, bypassing any proxy), the orders paid on chain (``OrderStarted``/``OrderReused`` logs with the
account as payer), balances, and helpers to point an ``ocean`` connection at a proxy.

Shared by ``tests/faults/test_faults.py``, ``tests/test_bad_inputs.py``, ``tests/test_secrets.py`` and
``benchmarks/faults_repeat.py``; it never uses the code under test to count.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import requests
from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address

ONE = 10**18
CONTAINER = {
    "entrypoint": "python $ALGO",
    "image": "python",
    "tag": "3.11-slim",
    "checksum": "sha256:" + "0" * 64,
}
ORDER_STARTED_TOPIC = (
    "0x" + keccak(text="OrderStarted(address,address,uint256,uint256,uint256,address,uint256)").hex()
)
ORDER_REUSED_TOPIC = "0x" + keccak(text="OrderReused(bytes32,address,uint256,uint256)").hex()


def raw_sleep_algorithm(seconds: float) -> dict[str, Any]:
    """A raw algorithm that runs ``seconds`` and writes one output file."""
    code = (
        "import os, time\n"
        f"time.sleep({seconds!r})\n"
        "out = os.environ.get('OUTPUTS', '/data/outputs')\n"
        "open(os.path.join(out, 'slept.txt'), 'w').write('slept %s\\n' % " + repr(seconds) + ")\n"
        "print('done sleeping')\n"
    )
    return {"rawcode": code, "container": dict(CONTAINER)}


# -- direct views of the sandbox ------------------------------------------------------------------------
def rpc_call(rpc_url: str, method: str, params: list[Any]) -> Any:
    """A JSON-RPC call straight to the node (no proxy, no product code)."""
    answer = requests.post(
        rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, timeout=30
    ).json()
    if answer.get("error"):
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


def block_number(rpc_url: str) -> int:
    return int(rpc_call(rpc_url, "eth_blockNumber", []), 16)


def tx_count(rpc_url: str, address: str) -> int:
    return int(rpc_call(rpc_url, "eth_getTransactionCount", [address, "latest"]), 16)


def eth_balance(rpc_url: str, address: str) -> int:
    return int(rpc_call(rpc_url, "eth_getBalance", [address, "latest"]), 16)


def token_balance(rpc_url: str, token: str, address: str) -> int:
    data = (
        "0x" + keccak(text="balanceOf(address)")[:4].hex() + address.lower().replace("0x", "").rjust(64, "0")
    )
    return int(rpc_call(rpc_url, "eth_call", [{"to": token, "data": data}, "latest"]), 16)


def jobs_of(provider_url: str, owner: str) -> list[dict[str, Any]]:
    """Every job of ``owner``, straight from the sandbox Provider."""
    response = requests.get(
        provider_url.rstrip("/") + "/api/services/compute", params={"consumerAddress": owner}, timeout=30
    )
    response.raise_for_status()
    body = response.json()
    return body if isinstance(body, list) else []


def job_ids(provider_url: str, owner: str) -> set[str]:
    return {job["jobId"] for job in jobs_of(provider_url, owner)}


def orders_since(rpc_url: str, datatokens: Iterable[str], payer: str, from_block: int) -> dict[str, int]:
    """``OrderStarted`` (payer = ``payer``) plus ``OrderReused`` (caller = ``payer``) logs per datatoken."""
    out: dict[str, int] = {}
    for token in datatokens:
        logs = rpc_call(
            rpc_url,
            "eth_getLogs",
            [
                {
                    "fromBlock": hex(from_block + 1),
                    "toBlock": "latest",
                    "address": token,
                    "topics": [[ORDER_STARTED_TOPIC, ORDER_REUSED_TOPIC]],
                }
            ],
        )
        count = 0
        for log in logs:
            data = bytes.fromhex(log["data"][2:])
            if log["topics"][0].lower() == ORDER_STARTED_TOPIC:
                who = abi_decode(["address", "uint256", "uint256", "uint256", "uint256"], data)[0]
            else:
                who = abi_decode(["bytes32", "address", "uint256", "uint256"], data)[1]
            if to_checksum_address(who) == to_checksum_address(payer):
                count += 1
        out[to_checksum_address(token)] = count
    return out


def wait_until_terminal(provider_url: str, owner: str, ids: Iterable[str], timeout: float = 90.0) -> bool:
    """Wait (bounded) until every job in ``ids`` has ``dateFinished``; returns whether they all did."""
    wanted = set(ids)
    deadline = time.monotonic() + timeout
    while True:
        jobs = {j["jobId"]: j for j in jobs_of(provider_url, owner) if j["jobId"] in wanted}
        if all(jobs.get(i, {}).get("dateFinished") for i in wanted):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.25)


def job_dir(sandbox_info: dict[str, Any], job_id: str) -> Path:
    """The sandbox's own folder of a job (to compare downloaded bytes with the originals)."""
    for path in Path(sandbox_info["state_dir"]).rglob(job_id):
        if path.is_dir():
            return path
    raise FileNotFoundError(f"no folder for job {job_id} under {sandbox_info['state_dir']}")


def original_result(sandbox_info: dict[str, Any], job_id: str, filename: str) -> bytes:
    """The bytes the sandbox published for ``filename`` of ``job_id``."""
    matches = [p for p in job_dir(sandbox_info, job_id).rglob(filename) if p.is_file()]
    if not matches:
        raise FileNotFoundError(f"{filename} of job {job_id}")
    return matches[0].read_bytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclasses.dataclass
class Ledger:
    """A before-snapshot of what the fault scenarios count; :meth:`delta` gives what happened since."""

    provider_url: str
    rpc_url: str
    owner: str
    datatokens: list[str]
    block: int
    jobs: set[str]
    nonce: int

    @classmethod
    def take(cls, sandbox_info: dict[str, Any], owner: str, datatokens: Iterable[str]) -> Ledger:
        return cls(
            provider_url=sandbox_info["provider_url"],
            rpc_url=sandbox_info["rpc_url"],
            owner=owner,
            datatokens=list(datatokens),
            block=block_number(sandbox_info["rpc_url"]),
            jobs=job_ids(sandbox_info["provider_url"], owner),
            nonce=tx_count(sandbox_info["rpc_url"], owner),
        )

    def new_jobs(self) -> list[str]:
        return sorted(job_ids(self.provider_url, self.owner) - self.jobs)

    def orders(self) -> dict[str, int]:
        return orders_since(self.rpc_url, self.datatokens, self.owner, self.block)

    def transactions(self) -> int:
        return tx_count(self.rpc_url, self.owner) - self.nonce


# -- connections ------------------------------------------------------------------------------------------
def conn_json(
    sandbox_info: dict[str, Any],
    *,
    host: str | None = None,
    rpc_url: str | None = None,
    aquarius_url: str | None = None,
    password: str | None = None,
    **extra: Any,
) -> str:
    """The sandbox connection as JSON, optionally pointed at proxies or another key."""
    conn = json.loads(sandbox_info["conn_json"])
    provider = host or sandbox_info["provider_url"]
    conn["host"] = provider
    if password is not None:
        conn["password"] = password
    conn["extra"]["rpc_url"] = rpc_url or sandbox_info["rpc_url"]
    conn["extra"]["aquarius_url"] = aquarius_url or provider
    conn["extra"].update(extra)
    return json.dumps(conn)


def set_connection(conn_id: str, value: str) -> None:
    """Define ``conn_id`` through its ``AIRFLOW_CONN_*`` variable (what the hook reads)."""
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = value


# -- a minimal task context for running operators in-process ------------------------------------------------
class MemoryTaskStateStore:
    """``context['task_state_store']`` with the accessor's get/set/delete/clear, kept in a dict."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data = data if data is not None else {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any, **_: Any) -> None:
        self.data[key] = json.loads(json.dumps(value))

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def clear(self) -> None:
        self.data.clear()


class MemoryTaskInstance:
    """The parts of a task instance the Ocean operators use; XComs are JSON round-tripped like Airflow's."""

    def __init__(self, task_id: str, xcoms: dict[str, Any] | None = None, try_number: int = 1) -> None:
        self.task_id = task_id
        self.dag_id = "faults"
        self.run_id = "faults_run"
        self.map_index = -1
        self.try_number = try_number
        self.stats_tags: dict[str, str] = {}
        self.start_date = datetime.datetime.now(datetime.timezone.utc)
        self.xcoms = xcoms if xcoms is not None else {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = json.loads(json.dumps(value))

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **_: Any) -> Any:
        return self.xcoms.get(key)


def task_context(
    task_id: str,
    *,
    xcoms: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    try_number: int = 1,
) -> dict[str, Any]:
    """A context dict good enough for ``execute`` of the Ocean operators outside Airflow."""
    ti = MemoryTaskInstance(task_id, xcoms, try_number)
    return {
        "ti": ti,
        "task_instance": ti,
        "task_state_store": MemoryTaskStateStore(state),
        "run_id": ti.run_id,
        "logical_date": ti.start_date,
        "outlet_events": {},
    }


# -- funding fresh accounts (independent of the code under test) -----------------------------------------
def legacy_gas_price(rpc_url: str) -> int:
    """``eth_gasPrice``, raised to twice the latest base fee on a london chain (a legacy tx pays it all)."""
    base_fee = rpc_call(rpc_url, "eth_getBlockByNumber", ["latest", False]).get("baseFeePerGas")
    gas_price = int(rpc_call(rpc_url, "eth_gasPrice", []), 16)
    return max(gas_price, 2 * int(base_fee, 16)) if base_fee else gas_price


def send_transaction(
    rpc_url: str, key: str, to: str, *, value: int = 0, data: bytes = b"", gas: int = 300_000
) -> dict[str, Any]:
    """Sign with ``key`` (legacy gas price), send, and wait for a successful receipt."""
    from eth_account import Account

    account = Account.from_key(key)
    tx = {
        "to": to_checksum_address(to),
        "value": value,
        "data": data,
        "gas": gas,
        "gasPrice": legacy_gas_price(rpc_url),
        "nonce": int(rpc_call(rpc_url, "eth_getTransactionCount", [account.address, "pending"]), 16),
        "chainId": int(rpc_call(rpc_url, "eth_chainId", []), 16),
    }
    signed = account.sign_transaction(tx)
    tx_hash = rpc_call(rpc_url, "eth_sendRawTransaction", ["0x" + signed.raw_transaction.hex()])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        receipt = rpc_call(rpc_url, "eth_getTransactionReceipt", [tx_hash])
        if receipt is not None:
            if int(receipt["status"], 16) != 1:
                raise RuntimeError(f"transaction {tx_hash} reverted")
            return receipt
        time.sleep(0.1)
    raise TimeoutError(f"no receipt for {tx_hash}")


def erc20_call_data(signature: str, address: str, amount: int) -> bytes:
    """``transfer(address,uint256)`` / ``mint(address,uint256)`` call data."""
    return (
        keccak(text=signature)[:4]
        + bytes.fromhex(address.lower().replace("0x", "").rjust(64, "0"))
        + amount.to_bytes(32, "big")
    )
