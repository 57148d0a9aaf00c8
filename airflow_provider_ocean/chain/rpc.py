"""JSON-RPC calls to an EVM node over ``requests``."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import requests

from airflow_provider_ocean.chain.abi import decode_revert_reason
from airflow_provider_ocean.chain.errors import ReceiptTimeoutError, RpcError, RpcUnavailableError
from airflow_provider_ocean.retry import read_retrying

if TYPE_CHECKING:
    from tenacity import Retrying

log = logging.getLogger(__name__)

#: Methods that change state: never repeated by the client (the transaction layer decides).
NOT_RETRIED = frozenset({"eth_sendRawTransaction", "eth_sendTransaction"})


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, RpcUnavailableError) and exc.transient


def to_hex(value: int) -> str:
    """Encode an integer as a JSON-RPC quantity."""
    return hex(value)


def from_hex(value: str | int | None) -> int:
    """Decode a JSON-RPC quantity (``None`` is 0)."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    return int(value, 16)


class JsonRpcClient:
    """A minimal JSON-RPC client for the calls the provider needs.

    :param url: the node's HTTP(S) JSON-RPC URL.
    :param timeout: read timeout in seconds for each call.
    :param verify: verify TLS certificates.
    :param session: an optional ``requests.Session`` to reuse connections.
    :param retries: attempts for a read that failed transiently (no answer, a timeout, a reset, HTTP
        429 or 5xx); ``eth_sendRawTransaction`` is sent once, whatever happens.
    :param retry_delay: base of the exponential backoff between attempts, in seconds (plus jitter).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        verify: bool = True,
        session: requests.Session | None = None,
        retries: int = 3,
        retry_delay: float = 0.5,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.verify = verify
        self.retries = max(1, retries)
        self.retry_delay = retry_delay
        self._session = session or requests.Session()
        self._ids = itertools.count(1)
        self._id_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"JsonRpcClient({self.url!r})"

    def request(self, method: str, params: list[Any] | None = None) -> Any:
        """Call ``method`` and return its ``result``; reads are retried on transient failures.

        :raises RpcError: the node answered with an error object.
        :raises RpcUnavailableError: the node could not be reached or did not answer JSON-RPC.
        """
        if method in NOT_RETRIED or self.retries == 1:
            return self._request_once(method, params)
        return self._retrying(f"RPC {method}")(self._request_once, method, params)

    def _post(self, payload: Any, what: str) -> requests.Response:
        try:
            return self._session.post(
                self.url, json=payload, timeout=(min(10.0, self.timeout), self.timeout), verify=self.verify
            )
        except requests.RequestException as exc:
            raise RpcUnavailableError(
                f"RPC {self.url} unreachable for {what}: {type(exc).__name__}", transient=True
            ) from exc

    def _request_once(self, method: str, params: list[Any] | None) -> Any:
        with self._id_lock:
            request_id = next(self._ids)
        payload = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or []}
        response = self._post(payload, method)
        try:
            body = response.json()
        except ValueError:
            raise RpcUnavailableError(
                f"RPC {self.url} answered {method} with HTTP {response.status_code} and no JSON-RPC body",
                transient=response.status_code == 429 or response.status_code >= 500,
            ) from None
        if not isinstance(body, dict):
            raise RpcUnavailableError(f"RPC {self.url} answered {method} with a non-object body")
        if body.get("error"):
            error = body["error"]
            if isinstance(error, dict):
                raise RpcError(method, error.get("code"), str(error.get("message", "")), error.get("data"))
            raise RpcError(method, None, str(error))
        if "result" not in body:
            raise RpcUnavailableError(f"RPC {self.url} answered {method} without a result")
        return body["result"]

    def request_batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """Send several read calls in one HTTP request (a JSON-RPC batch); retried like :meth:`request`.

        Each item of the answer is the call's ``result``, or the :class:`RpcError` the node answered for
        that call (returned, not raised: the caller decides). A node that does not answer batches with a
        list of results gets the calls one by one instead.

        :param calls: ``(method, params)`` pairs; state-changing methods are refused.
        :raises RpcUnavailableError: the node could not be reached.
        """
        if not calls:
            return []
        if any(method in NOT_RETRIED for method, _params in calls):
            raise ValueError("request_batch() is for reads only")
        if len(calls) == 1:
            return [self._result_or_error(*calls[0])]
        if self.retries == 1:
            return self._batch_once(calls)
        return self._retrying(f"RPC batch of {len(calls)}")(self._batch_once, calls)

    def _retrying(self, what: str) -> Retrying:
        return read_retrying(
            attempts=self.retries,
            delay=self.retry_delay,
            max_delay=10.0,
            transient=_is_transient,
            what=what,
            log=log,
        )

    def _result_or_error(self, method: str, params: list[Any]) -> Any:
        try:
            return self.request(method, params)
        except RpcError as exc:
            return exc

    def _batch_once(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        with self._id_lock:
            ids = [next(self._ids) for _ in calls]
        payload = [
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
            for request_id, (method, params) in zip(ids, calls, strict=True)
        ]
        names = ",".join(sorted({method for method, _params in calls}))
        response = self._post(payload, f"a batch of {names}")
        if response.status_code == 429 or response.status_code >= 500:
            raise RpcUnavailableError(
                f"RPC {self.url} answered a batch of {names} with HTTP {response.status_code}", transient=True
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        by_id = (
            {item.get("id"): item for item in body if isinstance(item, dict)}
            if isinstance(body, list)
            else {}
        )
        if not set(ids) <= set(by_id):
            # No batch support (an error object, a partial list): ask one by one.
            log.debug(
                "RPC %s did not answer a batch of %s calls; sending them one by one", self.url, len(calls)
            )
            return [self._result_or_error(method, params) for method, params in calls]
        out: list[Any] = []
        for request_id, (method, _params) in zip(ids, calls, strict=True):
            item = by_id[request_id]
            error = item.get("error")
            if error:
                if isinstance(error, dict):
                    out.append(
                        RpcError(method, error.get("code"), str(error.get("message", "")), error.get("data"))
                    )
                else:
                    out.append(RpcError(method, None, str(error)))
            elif "result" not in item:
                out.append(RpcError(method, None, "no result in the batch answer"))
            else:
                out.append(item["result"])
        return out

    # -- reads ---------------------------------------------------------------------------------------
    def chain_id(self) -> int:
        return from_hex(self.request("eth_chainId"))

    def block_number(self) -> int:
        return from_hex(self.request("eth_blockNumber"))

    def get_block(self, block: int | str = "latest") -> dict[str, Any]:
        tag = to_hex(block) if isinstance(block, int) else block
        result = self.request("eth_getBlockByNumber", [tag, False])
        if result is None:
            raise RpcError("eth_getBlockByNumber", None, f"block {block} not found")
        return result

    def get_balance(self, address: str, block: str = "latest") -> int:
        return from_hex(self.request("eth_getBalance", [address, block]))

    def get_transaction_count(self, address: str, block: str = "pending") -> int:
        return from_hex(self.request("eth_getTransactionCount", [address, block]))

    def gas_price(self) -> int:
        return from_hex(self.request("eth_gasPrice"))

    def max_priority_fee(self) -> int | None:
        try:
            return from_hex(self.request("eth_maxPriorityFeePerGas"))
        except RpcError:
            return None

    def estimate_gas(self, tx: dict[str, Any]) -> int:
        return from_hex(self.request("eth_estimateGas", [_rpc_tx(tx)]))

    def call(self, to: str, data: bytes, *, sender: str | None = None, block: int | str = "latest") -> bytes:
        """``eth_call``; a revert raises :class:`RpcError` whose ``data`` may carry the reason."""
        tx: dict[str, Any] = {"to": to, "data": "0x" + data.hex()}
        if sender:
            tx["from"] = sender
        tag = to_hex(block) if isinstance(block, int) else block
        result = self.request("eth_call", [tx, tag])
        return bytes.fromhex(result[2:]) if result and result != "0x" else b""

    def get_transaction(self, tx_hash: str) -> dict[str, Any] | None:
        return self.request("eth_getTransactionByHash", [tx_hash])

    def get_transaction_receipt(self, tx_hash: str) -> dict[str, Any] | None:
        return self.request("eth_getTransactionReceipt", [tx_hash])

    def get_logs(self, filter_params: dict[str, Any]) -> list[dict[str, Any]]:
        return self.request("eth_getLogs", [filter_params])

    def get_code(self, address: str) -> bytes:
        result = self.request("eth_getCode", [address, "latest"])
        return bytes.fromhex(result[2:]) if result and result != "0x" else b""

    # -- writes --------------------------------------------------------------------------------------
    def send_raw_transaction(self, raw: bytes) -> str:
        return self.request("eth_sendRawTransaction", ["0x" + raw.hex()])

    def wait_for_receipt(self, tx_hash: str, *, timeout: float = 120.0, poll: float = 0.1) -> dict[str, Any]:
        """Poll for a receipt until ``timeout`` seconds have passed.

        :raises ReceiptTimeoutError: no receipt in time.
        """
        deadline = time.monotonic() + timeout
        delay = poll
        while True:
            receipt = self.get_transaction_receipt(tx_hash)
            if receipt is not None:
                return receipt
            if time.monotonic() >= deadline:
                raise ReceiptTimeoutError(tx_hash, timeout)
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    def revert_reason(self, tx: dict[str, Any], block: int) -> str | None:
        """Replay a failed transaction with ``eth_call`` at ``block`` and return the revert reason."""
        call = {k: v for k, v in _rpc_tx(tx).items() if k in {"from", "to", "data", "value", "gas"}}
        try:
            self.request("eth_call", [call, to_hex(block)])
        except RpcError as exc:
            data = exc.data
            if isinstance(data, dict):
                data = data.get("result") or data.get("data")
            reason = decode_revert_reason(data) if isinstance(data, str) else None
            if reason:
                return reason
            message = exc.rpc_message
            marker = "revert "
            return message.split(marker, 1)[1] if marker in message else message
        except RpcUnavailableError:
            return None
        return None


def _rpc_tx(tx: dict[str, Any]) -> dict[str, Any]:
    """A transaction dict as JSON-RPC wants it: quantities as hex, data as 0x-hex."""
    out: dict[str, Any] = {}
    for key, value in tx.items():
        if key in {"chainId", "nonce", "gas", "gasPrice", "value", "maxFeePerGas", "maxPriorityFeePerGas"}:
            out[key] = to_hex(value) if isinstance(value, int) else value
        elif key == "data" and isinstance(value, bytes | bytearray):
            out[key] = "0x" + bytes(value).hex()
        elif key != "type":
            out[key] = value
    return out


#: Public name of the transaction encoder, for batched calls built outside this module.
rpc_tx = _rpc_tx
