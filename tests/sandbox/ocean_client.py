"""An independent, minimal Ocean v4 compute-to-data client used to check the sandbox.

Written from the protocol references only (docs/reference/provider-v4-api.md,
docs/reference/contracts-and-payment.md) with raw
eth-account / eth-abi / requests. It deliberately imports nothing from the project's own client code
(``airflow_provider_ocean.chain``, ``signing``, ``provider_v4``, ``payment``, ``hooks``), so the sandbox is
checked against a second implementation of the protocol rather than against itself.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
from eth_abi import decode, encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak, to_checksum_address

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
ONE_TOKEN = 10**18

PROVIDER_FEE_TYPE = "(address,address,uint256,uint8,bytes32,bytes32,uint256,bytes)"
CONSUME_MARKET_FEE_TYPE = "(address,address,uint256)"
START_ORDER_SIGNATURE = f"startOrder(address,uint256,{PROVIDER_FEE_TYPE},{CONSUME_MARKET_FEE_TYPE})"
REUSE_ORDER_SIGNATURE = f"reuseOrder(bytes32,{PROVIDER_FEE_TYPE})"
START_ORDER_SELECTOR = bytes.fromhex("79d9d7f3")
REUSE_ORDER_SELECTOR = bytes.fromhex("361fef49")
APPROVE_SELECTOR = bytes.fromhex("095ea7b3")  # approve(address,uint256)
TRANSFER_SELECTOR = bytes.fromhex("a9059cbb")  # transfer(address,uint256)
BALANCE_OF_SELECTOR = bytes.fromhex("70a08231")  # balanceOf(address)

ORDER_STARTED_TOPIC = "0xe1c4fa794edfa8f619b8257a077398950357b9c6398528f94480307352f9afcc"
ORDER_REUSED_TOPIC = "0x526e31449ea46e2aecf9b480c8d7dfa191348ef74ffdf75b445a6ab726daa6ff"
PROVIDER_FEE_TOPIC = "0xf8ed11cdaaf10eca2b6c941fb802cb8682afe86cac1eb93f70d0780fa062c544"

HTTP_TIMEOUT = 60.0


# -- request signing (docs/reference/provider-v4-api.md §3) --------------------------------------------------
_nonce_lock = threading.Lock()
_last_nonce = 0


def next_nonce() -> str:
    """A millisecond-time nonce, strictly rising across the whole test session, as a digit string."""
    global _last_nonce
    with _nonce_lock:
        _last_nonce = max(int(time.time() * 1000), _last_nonce + 1)
        return str(_last_nonce)


def hex0x(data: bytes) -> str:
    return "0x" + bytes(data).hex()


def sign_request(key: str, message: str) -> str:
    """EIP-191 personal_sign over the 32-byte keccak of the UTF-8 ``message``; 0x-prefixed 65-byte hex."""
    signed = Account.sign_message(encode_defunct(primitive=keccak(text=message)), key)
    return hex0x(signed.signature)


def recover_request_signer(message: str, signature: str) -> str:
    return Account.recover_message(
        encode_defunct(primitive=keccak(text=message)), signature=bytes.fromhex(signature[2:])
    )


def start_message(consumer: str, did: str, nonce: str) -> str:
    return f"{consumer}{did}{nonce}"


def stop_message(consumer: str, job_id: str, did: str, nonce: str) -> str:
    return f"{consumer}{job_id}{did}{nonce}"


def result_message(consumer: str, job_id: str, index: int | str, nonce: str) -> str:
    return f"{consumer}{job_id}{index}{nonce}"


# -- provider fees (docs/reference/provider-v4-api.md §4, docs/reference/contracts-and-payment.md §2) --------
def _b(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text.removeprefix("0x"))


def fee_tuple(fee: dict[str, Any]) -> tuple[Any, ...]:
    """The initializeCompute ``providerFee`` JSON as the on-chain tuple, ``providerData`` LAST."""
    return (
        to_checksum_address(fee["providerFeeAddress"]),
        to_checksum_address(fee["providerFeeToken"]),
        int(fee["providerFeeAmount"]),
        int(fee["v"]),
        _b(fee["r"]),
        _b(fee["s"]),
        int(fee["validUntil"]),
        _b(fee["providerData"]),
    )


def provider_fee_hash(provider_data: bytes, fee_address: str, fee_token: str, amount: int, valid_until: int):
    """``keccak256(abi.encodePacked(bytes providerData, address, address, uint256, uint256))``, by hand."""
    packed = (
        provider_data
        + _b(fee_address)
        + _b(fee_token)
        + amount.to_bytes(32, "big")
        + valid_until.to_bytes(32, "big")
    )
    return keccak(packed)


def provider_fee_signer(fee: dict[str, Any]) -> str:
    """Who signed a providerFee JSON (the address ``startOrder``'s ecrecover would compute)."""
    digest = provider_fee_hash(
        _b(fee["providerData"]),
        fee["providerFeeAddress"],
        fee["providerFeeToken"],
        int(fee["providerFeeAmount"]),
        int(fee["validUntil"]),
    )
    return Account.recover_message(
        encode_defunct(primitive=digest), vrs=(int(fee["v"]), _b(fee["r"]), _b(fee["s"]))
    )


def provider_data(fee: dict[str, Any]) -> dict[str, Any]:
    return json.loads(_b(fee["providerData"]).decode())


# -- chain -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Wallet:
    address: str
    key: str

    @classmethod
    def create(cls) -> Wallet:
        account = Account.create()
        return cls(account.address, hex0x(account.key))

    @classmethod
    def of(cls, info: dict[str, str]) -> Wallet:
        return cls(info["address"], info["key"])


class RpcError(RuntimeError):
    pass


def legacy_gas_price(gas_price: int, latest_block: dict[str, Any]) -> int:
    """The gas price of a legacy transaction that every hardfork of the sandbox accepts.

    On istanbul ``eth_gasPrice`` (1 wei); on london blocks carry a base fee that 1 wei does not cover, so at
    least twice the latest ``baseFeePerGas`` (a legacy transaction pays its whole gas price).

    :param gas_price: ``eth_gasPrice``.
    :param latest_block: the latest block (``eth_getBlockByNumber``).
    """
    base_fee = latest_block.get("baseFeePerGas")
    return max(gas_price, 2 * int(base_fee, 16)) if base_fee else gas_price


class Chain:
    """JSON-RPC + legacy transactions (priced over the base fee when the chain runs london)."""

    def __init__(self, rpc_url: str, chain_id: int) -> None:
        self.rpc_url = rpc_url
        self.chain_id = chain_id
        self._lock = threading.Lock()

    def rpc(self, method: str, params: list[Any]) -> Any:
        answer = requests.post(
            self.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, timeout=30
        ).json()
        if "error" in answer:
            raise RpcError(f"{method}: {answer['error']}")
        return answer["result"]

    def call(self, to: str, data: bytes) -> bytes:
        return _b(self.rpc("eth_call", [{"to": to, "data": hex0x(data)}, "latest"]))

    def receipt(self, tx_hash: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            receipt = self.rpc("eth_getTransactionReceipt", [tx_hash])
            if receipt:
                return receipt
            if time.monotonic() > deadline:
                raise RpcError(f"no receipt for {tx_hash} after {timeout} s")
            time.sleep(0.05)

    def send(self, key: str, to: str, data: bytes = b"", value: int = 0, gas: int = 1_000_000) -> dict:
        """Sign and send a legacy tx and wait for its receipt (returned whatever its status)."""
        sender = Account.from_key(key).address
        with self._lock:
            tx = {
                "to": to_checksum_address(to),
                "data": data,
                "value": value,
                "gas": gas,
                "gasPrice": self.gas_price(),
                "nonce": int(self.rpc("eth_getTransactionCount", [sender, "pending"]), 16),
                "chainId": self.chain_id,
            }
            signed = Account.sign_transaction(tx, key)
            tx_hash = self.rpc("eth_sendRawTransaction", [hex0x(signed.raw_transaction)])
        return self.receipt(tx_hash)

    def gas_price(self) -> int:
        """A legacy transaction's gas price on this chain (:func:`legacy_gas_price`)."""
        latest = self.rpc("eth_getBlockByNumber", ["latest", False])
        return legacy_gas_price(int(self.rpc("eth_gasPrice", []), 16), latest)

    def block_timestamp(self, block_number: str) -> int:
        return int(self.rpc("eth_getBlockByNumber", [block_number, False])["timestamp"], 16)

    def eth_balance(self, address: str) -> int:
        return int(self.rpc("eth_getBalance", [address, "latest"]), 16)


def ok(receipt: dict[str, Any]) -> str:
    """The tx hash of a successful receipt (raises on a reverted one)."""
    if int(receipt["status"], 16) != 1:
        raise RpcError(f"transaction {receipt['transactionHash']} reverted")
    return receipt["transactionHash"]


def balance_of(chain: Chain, token: str, owner: str) -> int:
    return decode(["uint256"], chain.call(token, BALANCE_OF_SELECTOR + encode(["address"], [owner])))[0]


def transfer(chain: Chain, key: str, token: str, to: str, amount: int) -> dict[str, Any]:
    return chain.send(key, token, TRANSFER_SELECTOR + encode(["address", "uint256"], [to, amount]))


def approve(chain: Chain, key: str, token: str, spender: str, amount: int) -> dict[str, Any]:
    return chain.send(key, token, APPROVE_SELECTOR + encode(["address", "uint256"], [spender, amount]))


def start_order(
    chain: Chain, key: str, datatoken: str, consumer: str, service_index: int, provider_fee: dict[str, Any]
) -> dict[str, Any]:
    """``startOrder(consumer, serviceIndex, providerFee, (0,0,0))`` on ``datatoken``; returns the receipt."""
    data = START_ORDER_SELECTOR + encode(
        ["address", "uint256", PROVIDER_FEE_TYPE, CONSUME_MARKET_FEE_TYPE],
        [consumer, service_index, fee_tuple(provider_fee), (ZERO_ADDRESS, ZERO_ADDRESS, 0)],
    )
    return chain.send(key, datatoken, data)


def reuse_order(
    chain: Chain, key: str, datatoken: str, order_tx: str, provider_fee: dict[str, Any]
) -> dict[str, Any]:
    """``reuseOrder(orderTxId, providerFee)`` on ``datatoken``; returns the receipt."""
    data = REUSE_ORDER_SELECTOR + encode(
        ["bytes32", PROVIDER_FEE_TYPE], [_b(order_tx), fee_tuple(provider_fee)]
    )
    return chain.send(key, datatoken, data)


def _logs(receipt: dict[str, Any], topic: str) -> list[dict[str, Any]]:
    return [log for log in receipt.get("logs", []) if log["topics"] and log["topics"][0].lower() == topic]


def order_started_events(receipt: dict[str, Any]) -> list[dict[str, Any]]:
    """Decode OrderStarted: consumer and publishMarket are indexed; data = payer .. blockNumber."""
    events = []
    for log in _logs(receipt, ORDER_STARTED_TOPIC):
        payer, amount, service_index, timestamp, block = decode(
            ["address", "uint256", "uint256", "uint256", "uint256"], _b(log["data"])
        )
        events.append(
            {
                "emitter": to_checksum_address(log["address"]),
                "consumer": to_checksum_address(log["topics"][1][-40:]),
                "payer": to_checksum_address(payer),
                "amount": amount,
                "serviceIndex": service_index,
                "timestamp": timestamp,
                "blockNumber": block,
            }
        )
    return events


def order_reused_events(receipt: dict[str, Any]) -> list[dict[str, Any]]:
    events = []
    for log in _logs(receipt, ORDER_REUSED_TOPIC):
        order_tx, caller, timestamp, number = decode(
            ["bytes32", "address", "uint256", "uint256"], _b(log["data"])
        )
        events.append({"orderTxId": hex0x(order_tx), "caller": to_checksum_address(caller)})
    return events


def provider_fee_events(receipt: dict[str, Any]) -> list[dict[str, Any]]:
    events = []
    for log in _logs(receipt, PROVIDER_FEE_TOPIC):
        amount, data, v, r, s, valid_until = decode(
            ["uint256", "bytes", "uint8", "bytes32", "bytes32", "uint256"], _b(log["data"])
        )
        events.append(
            {
                "providerFeeAddress": to_checksum_address(log["topics"][1][-40:]),
                "providerFeeToken": to_checksum_address(log["topics"][2][-40:]),
                "providerFeeAmount": amount,
                "providerData": json.loads(data.decode()),
                "validUntil": valid_until,
            }
        )
    return events


# -- Provider HTTP API ---------------------------------------------------------------------------------
class ProviderClient:
    """Thin wrappers over the Provider v4 routes; every method returns the raw ``requests.Response``."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def get(self, path: str, **params: Any) -> requests.Response:
        return requests.get(self.base_url + path, params=params or None, timeout=HTTP_TIMEOUT)

    def root(self) -> requests.Response:
        return self.get("/")

    def nonce(self, address: str | None) -> requests.Response:
        return self.get("/api/services/nonce", **({"userAddress": address} if address is not None else {}))

    def environments(self) -> requests.Response:
        return self.get("/api/services/computeEnvironments")

    def ddo(self, did: str) -> requests.Response:
        return self.get(f"/api/aquarius/assets/ddo/{did}")

    def initialize_compute(
        self,
        datasets: list[dict[str, Any]],
        algorithm: dict[str, Any],
        env: str,
        valid_until: int | str,
        consumer_address: str,
    ) -> requests.Response:
        body = {
            "datasets": datasets,
            "algorithm": algorithm,
            "compute": {"env": env, "validUntil": valid_until},
            "consumerAddress": consumer_address,
        }
        return requests.post(
            self.base_url + "/api/services/initializeCompute", json=body, timeout=HTTP_TIMEOUT
        )

    def start_body(
        self,
        wallet: Wallet,
        dataset: dict[str, Any],
        algorithm: dict[str, Any],
        environment: str,
        *,
        additional: Any = None,
        nonce: str | None = None,
        signer: Wallet | None = None,
    ) -> dict[str, Any]:
        """A signed computeStart body (``signer`` defaults to ``wallet``)."""
        nonce = nonce or next_nonce()
        body: dict[str, Any] = {
            "dataset": dataset,
            "algorithm": algorithm,
            "environment": environment,
            "consumerAddress": wallet.address,
            "nonce": nonce,
            "signature": sign_request(
                (signer or wallet).key,
                start_message(wallet.address, str(dataset.get("documentId", "")), nonce),
            ),
        }
        if additional is not None:
            body["additionalDatasets"] = additional
        return body

    def start(self, body: dict[str, Any]) -> requests.Response:
        return requests.post(self.base_url + "/api/services/compute", json=body, timeout=HTTP_TIMEOUT)

    def status(self, consumer: str, job_id: str | None = None) -> requests.Response:
        params = {"consumerAddress": consumer}
        if job_id:
            params["jobId"] = job_id
        return self.get("/api/services/compute", **params)

    def stop_params(self, wallet: Wallet, job_id: str, did: str, nonce: str | None = None) -> dict[str, str]:
        nonce = nonce or next_nonce()
        return {
            "consumerAddress": wallet.address,
            "jobId": job_id,
            "documentId": did,
            "nonce": nonce,
            "signature": sign_request(wallet.key, stop_message(wallet.address, job_id, did, nonce)),
        }

    def stop(self, params: dict[str, str]) -> requests.Response:
        return requests.put(self.base_url + "/api/services/compute", params=params, timeout=HTTP_TIMEOUT)

    def delete(self, params: dict[str, str]) -> requests.Response:
        return requests.delete(self.base_url + "/api/services/compute", params=params, timeout=HTTP_TIMEOUT)

    def result(self, wallet: Wallet, job_id: str, index: int, nonce: str | None = None) -> requests.Response:
        nonce = nonce or next_nonce()
        params = {
            "jobId": job_id,
            "index": str(index),
            "consumerAddress": wallet.address,
            "nonce": nonce,
            "signature": sign_request(wallet.key, result_message(wallet.address, job_id, index, nonce)),
        }
        return self.get("/api/services/computeResult", **params)

    def wait_finished(
        self, consumer: str, job_id: str, timeout: float = 30.0, poll: float = 0.05
    ) -> tuple[dict[str, Any], list[int]]:
        """Poll the status until ``dateFinished``; return the last status object and the codes seen."""
        seen: list[int] = []
        deadline = time.monotonic() + timeout
        while True:
            response = self.status(consumer, job_id)
            response.raise_for_status()
            (job,) = response.json()
            if not seen or seen[-1] != job["status"]:
                seen.append(job["status"])
            if job["dateFinished"] is not None:
                return job, seen
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not finished after {timeout} s; statuses {seen}")
            time.sleep(poll)


# -- a small harness around the sandbox fixture ----------------------------------------------------------
class Lab:
    """The sandbox seen through the independent client: funding fresh users, quoting and paying inputs.

    :param info: the ``sandbox`` session fixture (URLs, accounts, assets, environments).
    """

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self.chain = Chain(info["rpc_url"], int(info["chain_id"]))
        self.provider = ProviderClient(info["provider_url"])
        self.assets: dict[str, dict[str, Any]] = info["assets"]
        self.free_env: str = info["environments"]["free"]
        self.paid_env: str = info["environments"]["paid"]
        self.ocean: str = info["addresses"]["Ocean"]
        self.provider_address: str = info["provider_address"]
        self.funder = Wallet.of(info["other"])
        envs = self.provider.environments().json()[str(info["chain_id"])]
        self.env_consumer = {env["id"]: env["consumerAddress"] for env in envs}

    def new_user(self, datatokens: dict[str, int] | None = None, ocean: int = 0) -> Wallet:
        """A fresh account funded by ``other``: ETH, ``ocean`` OCEAN, whole datatokens per asset key."""
        user = Wallet.create()
        ok(self.chain.send(self.funder.key, user.address, value=10**18, gas=21_000))
        if ocean:
            ok(transfer(self.chain, self.funder.key, self.ocean, user.address, ocean * ONE_TOKEN))
        for asset, count in (datatokens or {}).items():
            token = self.assets[asset]["datatoken"]
            ok(transfer(self.chain, self.funder.key, token, user.address, count * ONE_TOKEN))
        return user

    def ref(self, asset: str, tx: str | None = None, service_id: str | None = None, **extra: Any) -> dict:
        """An input reference for initializeCompute/start: documentId, serviceId (+ transferTxId)."""
        ref: dict[str, Any] = {
            "documentId": self.assets[asset]["did"],
            "serviceId": service_id if service_id is not None else self.assets[asset]["service_id"],
        }
        if tx is not None:
            ref["transferTxId"] = tx
        ref.update(extra)
        return ref

    def initialize(
        self, datasets: list[dict[str, Any]], algorithm: dict[str, Any], env: str, valid_until: int | str
    ) -> requests.Response:
        """initializeCompute with the environment's consumerAddress, as ocean.py sends it."""
        consumer = self.env_consumer.get(env, self.env_consumer[self.free_env])
        return self.provider.initialize_compute(datasets, algorithm, env, valid_until, consumer)

    def order(
        self, user: Wallet, answer: dict[str, Any], asset: str, env: str, service_index: int | None = None
    ) -> str:
        """startOrder for one initializeCompute answer (consumer = the env's consumerAddress); tx hash."""
        assert answer["datatoken"].lower() == self.assets[asset]["datatoken"].lower()
        index = self.assets[asset]["service_index"] if service_index is None else service_index
        receipt = start_order(
            self.chain, user.key, answer["datatoken"], self.env_consumer[env], index, answer["providerFee"]
        )
        return ok(receipt)

    def quote_and_order(
        self,
        user: Wallet,
        datasets: list[str],
        algorithm: str,
        env: str,
        valid_until: int,
        service_index: int | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """initializeCompute + one startOrder per input (free fees only); the refs with transferTxId."""
        response = self.initialize([self.ref(d) for d in datasets], self.ref(algorithm), env, valid_until)
        assert response.status_code == 200, response.text
        quote = response.json()
        refs = []
        for asset, answer in zip(datasets, quote["datasets"], strict=True):
            refs.append(self.ref(asset, self.order(user, answer, asset, env, service_index)))
        algo_ref = self.ref(algorithm, self.order(user, quote["algorithm"], algorithm, env))
        return refs, algo_ref
