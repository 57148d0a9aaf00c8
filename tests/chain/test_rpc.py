"""The JSON-RPC client's retry policy, against a small local HTTP server that misbehaves on purpose.

Reads (everything but ``eth_sendRawTransaction``) are retried on no answer, a timeout, a reset, HTTP 429
and 5xx; a JSON-RPC error object is an answer and is never retried; a raw transaction is sent once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_provider_ocean.chain.errors import RpcError, RpcUnavailableError
from airflow_provider_ocean.chain.rpc import JsonRpcClient


class FlakyNode:
    """Answers ``eth_chainId`` with 8996 after ``failures`` bad answers of the configured ``kind``."""

    def __init__(self) -> None:
        self.kind = "503"
        self.failures = 0
        self.batches = True
        self.calls: list[str] = []
        self.lock = threading.Lock()
        node = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if isinstance(body, list):
                    with node.lock:
                        node.calls.append("batch:" + ",".join(item["method"] for item in body))
                    if node.batches:
                        answers = [{"jsonrpc": "2.0", "id": item["id"], "result": "0x2324"} for item in body]
                        self._send(200, list(reversed(answers)))  # any order: matched by id
                    else:  # a node without batch support answers one error object
                        self._send(
                            200, {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "no"}}
                        )
                    return
                with node.lock:
                    node.calls.append(body["method"])
                    fail = node.failures > 0
                    node.failures -= 1
                if body["method"] == "eth_noSuchMethod":
                    error = {"code": -32601, "message": "no such method"}
                    self._send(200, {"jsonrpc": "2.0", "id": body["id"], "error": error})
                elif fail and node.kind == "hang":
                    time.sleep(1.5)
                    self._send(200, {"jsonrpc": "2.0", "id": body["id"], "result": "0x1"})
                elif fail and node.kind == "reset":
                    self.close_connection = True
                    self.connection.shutdown(2)
                elif fail:
                    self._send(int(node.kind), b"busy")
                else:
                    self._send(200, {"jsonrpc": "2.0", "id": body["id"], "result": "0x2324"})

            def _send(self, status: int, payload: object) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # a short poll interval: shutdown() returns within it (the default 0.5 s was paid by every test)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )


@pytest.fixture
def node() -> Iterator[FlakyNode]:
    flaky = FlakyNode()
    flaky.thread.start()
    yield flaky
    flaky.server.shutdown()
    flaky.server.server_close()


@pytest.mark.parametrize("kind", ["503", "429", "502", "reset"])
def test_a_read_is_retried_after_a_transient_failure(node: FlakyNode, kind: str) -> None:
    node.kind, node.failures = kind, 2
    client = JsonRpcClient(node.url, timeout=5, retries=3, retry_delay=0.01)
    assert client.chain_id() == 8996
    assert node.calls == ["eth_chainId"] * 3


def test_a_read_that_gets_no_answer_in_time_is_asked_again(node: FlakyNode) -> None:
    node.kind, node.failures = "hang", 1
    client = JsonRpcClient(node.url, timeout=0.5, retries=2, retry_delay=0.01)
    assert client.chain_id() == 8996
    assert node.calls == ["eth_chainId"] * 2


def test_retries_are_bounded_and_the_last_error_is_raised(node: FlakyNode) -> None:
    node.kind, node.failures = "503", 10
    client = JsonRpcClient(node.url, timeout=5, retries=3, retry_delay=0.01)
    with pytest.raises(RpcUnavailableError, match="HTTP 503") as excinfo:
        client.chain_id()
    assert excinfo.value.transient
    assert len(node.calls) == 3


def test_a_client_error_status_is_not_retried(node: FlakyNode) -> None:
    node.kind, node.failures = "400", 10
    client = JsonRpcClient(node.url, timeout=5, retries=3, retry_delay=0.01)
    with pytest.raises(RpcUnavailableError, match="HTTP 400"):
        client.chain_id()
    assert len(node.calls) == 1


def test_an_error_object_is_an_answer_and_is_not_retried(node: FlakyNode) -> None:
    client = JsonRpcClient(node.url, timeout=5, retries=3, retry_delay=0.01)
    with pytest.raises(RpcError):
        client.request("eth_noSuchMethod")
    assert node.calls == ["eth_noSuchMethod"]


def test_a_raw_transaction_is_sent_once_whatever_happens(node: FlakyNode) -> None:
    """Repeating a send is the transaction layer's decision (same signed bytes, after a nonce check)."""
    node.kind, node.failures = "503", 10
    client = JsonRpcClient(node.url, timeout=5, retries=3, retry_delay=0.01)
    with pytest.raises(RpcUnavailableError):
        client.send_raw_transaction(b"\x01\x02")
    assert node.calls == ["eth_sendRawTransaction"]


def test_a_batch_is_one_request_matched_by_id(node: FlakyNode) -> None:
    client = JsonRpcClient(node.url, timeout=5)
    assert client.request_batch([("eth_chainId", []), ("eth_gasPrice", [])]) == ["0x2324", "0x2324"]
    assert node.calls == ["batch:eth_chainId,eth_gasPrice"]


def test_a_node_without_batches_gets_the_calls_one_by_one(node: FlakyNode) -> None:
    node.batches = False
    client = JsonRpcClient(node.url, timeout=5)
    results = client.request_batch([("eth_chainId", []), ("eth_noSuchMethod", [])])
    assert results[0] == "0x2324"
    assert isinstance(results[1], RpcError)
    assert node.calls == ["batch:eth_chainId,eth_noSuchMethod", "eth_chainId", "eth_noSuchMethod"]


def test_a_batch_refuses_state_changing_calls(node: FlakyNode) -> None:
    with pytest.raises(ValueError, match="reads only"):
        JsonRpcClient(node.url).request_batch([("eth_chainId", []), ("eth_sendRawTransaction", ["0x00"])])
    assert node.calls == []
