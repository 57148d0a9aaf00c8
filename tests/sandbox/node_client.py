"""An independent, minimal Ocean Node client used to check the sandbox's node personality.

Written from docs/reference/ocean-node-api.md only, with raw eth-account / eth-abi / requests. Like
``ocean_client.py`` it imports nothing from the project's client code (``ocean_node``, ``escrow``,
``signing``, ``chain``), so the sandbox is checked against a second implementation of the protocol.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import requests
from eth_abi import decode, encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak, to_checksum_address

from tests.sandbox.ocean_client import Chain, Wallet, ok

TIMEOUT = 60.0
CONTAINER = {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11-slim", "checksum": ""}
# Escrow (§7), selectors recomputed here from the canonical signatures
DEPOSIT = keccak(text="deposit(address,uint256)")[:4]
AUTHORIZE = keccak(text="authorize(address,address,uint256,uint256,uint256)")[:4]
GET_USER_FUNDS = keccak(text="getUserFunds(address,address)")[:4]
GET_AUTHORIZATIONS = keccak(text="getAuthorizations(address,address,address)")[:4]
GET_LOCKS = keccak(text="getLocks(address,address,address)")[:4]
APPROVE = bytes.fromhex("095ea7b3")
LOCK_TOPIC = "0x" + keccak(text="Lock(address,address,uint256,uint256,uint256,address)").hex()
CLAIMED_TOPIC = "0x" + keccak(text="Claimed(address,uint256,address,address,uint256,bytes)").hex()
TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
# what a released node's payment cron sends first (§7): one batch claim of its ended jobs
CLAIM_LOCKS_AND_WITHDRAW = keccak(
    text="claimLocksAndWithdraw(uint256[],address[],address[],uint256[],bytes[])"
)[:4]
GET_OPC_FEE = keccak(text="getOPCFee(address)")[:4]

_lock = threading.Lock()
_last = 0


def next_nonce() -> int:
    """Millisecond nonces, strictly rising across the session."""
    global _last
    with _lock:
        _last = max(int(time.time() * 1000), _last + 1)
        return _last


def sign(key: str, address: str, nonce: int | str, command: str) -> str:
    """§4: EIP-191 over keccak256(address + nonce + command)."""
    digest = keccak(text=f"{address}{nonce}{command}")
    return "0x" + Account.sign_message(encode_defunct(primitive=digest), key).signature.hex().removeprefix(
        "0x"
    )


class Node:
    """HTTP calls to one node, each returning the raw ``requests.Response``."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def get(self, path: str, **params: Any) -> requests.Response:
        return requests.get(self.base_url + path, params=params, timeout=TIMEOUT)

    def nonce(self, address: str) -> requests.Response:
        return self.get("/api/services/nonce", userAddress=address)

    def signed_body(
        self, wallet: Wallet, command: str, body: dict[str, Any], nonce: int | None = None
    ) -> dict:
        nonce = next_nonce() if nonce is None else nonce
        return {
            **body,
            "consumerAddress": wallet.address,
            "nonce": str(nonce),
            "signature": sign(wallet.key, wallet.address, nonce, command),
        }

    def free_start(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> requests.Response:
        return requests.post(
            self.base_url + "/api/services/freeCompute", json=body, headers=headers, timeout=TIMEOUT
        )

    def paid_start(self, body: dict[str, Any]) -> requests.Response:
        return requests.post(self.base_url + "/api/services/compute", json=body, timeout=TIMEOUT)

    def initialize(self, body: dict[str, Any]) -> requests.Response:
        return requests.post(self.base_url + "/api/services/initializeCompute", json=body, timeout=TIMEOUT)

    def status(self, **params: Any) -> requests.Response:
        return self.get("/api/services/compute", **params)

    def stop(self, wallet: Wallet, job_id: str, nonce: int | None = None) -> requests.Response:
        nonce = next_nonce() if nonce is None else nonce
        params = {
            "consumerAddress": wallet.address,
            "jobId": job_id,
            "nonce": str(nonce),
            "signature": sign(wallet.key, wallet.address, nonce, "stopCompute"),
        }
        return requests.put(self.base_url + "/api/services/compute", params=params, timeout=TIMEOUT)

    def result(
        self, wallet: Wallet, job_id: str, index: int, address: str | None = None
    ) -> requests.Response:
        nonce = next_nonce()
        address = address or wallet.address
        params = {
            "consumerAddress": address,
            "jobId": job_id,
            "index": str(index),
            "nonce": str(nonce),
            "signature": sign(wallet.key, address, nonce, "getComputeResult"),
        }
        return self.get("/api/services/computeResult", **params)

    def logs(self, wallet: Wallet, job_id: str, stream: bool = False) -> requests.Response:
        nonce = next_nonce()
        params = {
            "consumerAddress": wallet.address,
            "jobId": job_id,
            "nonce": str(nonce),
            "signature": sign(wallet.key, wallet.address, nonce, "getComputeStreamableLogs"),
        }
        return requests.get(
            self.base_url + "/api/services/computeStreamableLogs",
            params=params,
            timeout=TIMEOUT,
            stream=stream,
        )

    def wait(self, job_id: str, done: Any = None, timeout: float = 90.0) -> tuple[dict[str, Any], list[int]]:
        """Poll until ``done(entry)`` (default: dateFinished set); returns the entry and the codes seen."""
        done = done or (lambda entry: entry["dateFinished"] is not None)
        seen: list[int] = []
        deadline = time.monotonic() + timeout
        while True:
            response = self.status(jobId=job_id)
            assert response.status_code == 200, response.text
            (entry,) = response.json()
            if not seen or seen[-1] != entry["status"]:
                seen.append(entry["status"])
            if done(entry):
                return entry, seen
            assert time.monotonic() < deadline, f"job {job_id} still at {entry['status']} ({seen})"
            time.sleep(0.1)


def raw_algorithm(code: str, **extra: Any) -> dict[str, Any]:
    return {"meta": {"rawcode": code, "container": dict(CONTAINER)}, **extra}


def url_dataset(base_url: str, name: str = "weather.csv") -> dict[str, Any]:
    return {"fileObject": {"type": "url", "url": f"{base_url}/sandbox/files/{name}", "method": "get"}}


# -- escrow (payer side) ----------------------------------------------------------------------------
def escrow_deposit(chain: Chain, wallet: Wallet, escrow: str, token: str, amount: int) -> None:
    ok(chain.send(wallet.key, token, APPROVE + encode(["address", "uint256"], [escrow, amount])))
    ok(chain.send(wallet.key, escrow, DEPOSIT + encode(["address", "uint256"], [token, amount])))


def escrow_authorize(
    chain: Chain,
    wallet: Wallet,
    escrow: str,
    token: str,
    payee: str,
    max_locked: int,
    seconds: int,
    counts: int,
) -> None:
    data = AUTHORIZE + encode(
        ["address", "address", "uint256", "uint256", "uint256"], [token, payee, max_locked, seconds, counts]
    )
    ok(chain.send(wallet.key, escrow, data))


def escrow_funds(chain: Chain, escrow: str, payer: str, token: str) -> tuple[int, int]:
    (funds,) = decode(
        ["(uint256,uint256)"],
        chain.call(escrow, GET_USER_FUNDS + encode(["address", "address"], [payer, token])),
    )
    return funds


def escrow_auths(chain: Chain, escrow: str, token: str, payer: str, payee: str) -> list[tuple]:
    (auths,) = decode(
        ["(address,uint256,uint256,uint256,uint256,uint256)[]"],
        chain.call(
            escrow, GET_AUTHORIZATIONS + encode(["address", "address", "address"], [token, payer, payee])
        ),
    )
    return list(auths)


def escrow_locks(chain: Chain, escrow: str, token: str, payer: str, payee: str) -> list[tuple]:
    """The sandbox's Escrow (npm @oceanprotocol/contracts 2.6.0): (jobId, payer, amount, expiry, token)."""
    (locks,) = decode(
        ["(uint256,address,uint256,uint256,address)[]"],
        chain.call(escrow, GET_LOCKS + encode(["address", "address", "address"], [token, payer, payee])),
    )
    return list(locks)


def claimed_events(receipt: dict[str, Any]) -> list[dict[str, Any]]:
    """``Claimed(payee indexed, jobId, token, payer indexed, amount, proof)`` logs of a receipt."""
    out = []
    for log in receipt["logs"]:
        if log["topics"][0] != CLAIMED_TOPIC:
            continue
        job_id, token, amount, proof = decode(
            ["uint256", "address", "uint256", "bytes"], bytes.fromhex(log["data"][2:])
        )
        payee, payer = (to_checksum_address("0x" + topic[-40:]) for topic in log["topics"][1:3])
        out.append(
            {"payee": payee, "jobId": job_id, "token": to_checksum_address(token), "payer": payer}
            | {"amount": amount, "proof": proof, "escrow": to_checksum_address(log["address"])}
        )
    return out


def transfers(receipt: dict[str, Any], token: str) -> list[tuple[str, str, int]]:
    """ERC20 ``Transfer(from, to, value)`` logs of ``token`` in a receipt."""
    return [
        (
            to_checksum_address("0x" + log["topics"][1][-40:]),
            to_checksum_address("0x" + log["topics"][2][-40:]),
            int(log["data"], 16),
        )
        for log in receipt["logs"]
        if log["topics"][0] == TRANSFER_TOPIC and log["address"].lower() == token.lower()
    ]


def opc_fee(chain: Chain, router: str, token: str) -> int:
    """The router's OPC fee rate for ``token`` (1e18 = 100 %), taken by the Escrow at claim time (§7)."""
    (rate,) = decode(["uint256"], chain.call(router, GET_OPC_FEE + encode(["address"], [token])))
    return rate


def lock_job_id(bare_job_id: str) -> int:
    """The lock's jobId: sha256 of the node's (bare) job id, as a uint256."""
    return int(hashlib.sha256(bare_job_id.encode()).hexdigest(), 16)
