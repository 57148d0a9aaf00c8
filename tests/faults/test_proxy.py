"""The fault-injection proxy itself, against a tiny local HTTP server (no sandbox needed)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from tests.faults.proxy import FaultProxy, Rule, UpstreamResponse, self_signed_context

BODY = b"0123456789" * 100


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        received = self.rfile.read(length) if length else b""
        self.server.seen.append((self.command, self.path, received))  # type: ignore[attr-defined]
        payload = BODY if self.path.startswith("/file") else json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Disposition", "attachment;filename=out.bin")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _answer
    do_POST = _answer


@pytest.fixture
def upstream() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(upstream: ThreadingHTTPServer) -> Iterator[FaultProxy]:
    with FaultProxy(f"http://127.0.0.1:{upstream.server_address[1]}", record=True) as running:
        yield running


def test_forward_counts_and_records(proxy: FaultProxy, upstream: ThreadingHTTPServer) -> None:
    for _ in range(3):
        assert requests.get(proxy.url + "/a?x=1", timeout=5).json() == {"path": "/a?x=1"}
    assert requests.post(proxy.url + "/b", json={"k": "v"}, timeout=5).ok
    assert proxy.count("GET", "/a") == 3
    assert proxy.count("POST", "/b") == 1
    assert [r.route for r in proxy.requests] == ["GET /a"] * 3 + ["POST /b"]
    assert json.loads(proxy.requests[-1].body) == {"k": "v"}
    assert len(upstream.seen) == 4  # type: ignore[attr-defined]


def test_reset_after_forward_reaches_the_server(proxy: FaultProxy, upstream: ThreadingHTTPServer) -> None:
    proxy.add(method="POST", path="/start", action="reset", times=1)
    with pytest.raises(requests.ConnectionError):
        requests.post(proxy.url + "/start", json={}, timeout=5)
    assert [s[1] for s in upstream.seen] == ["/start"]  # type: ignore[attr-defined]
    assert requests.post(proxy.url + "/start", json={}, timeout=5).ok  # the rule is used up


def test_reset_before_forward_does_not(proxy: FaultProxy, upstream: ThreadingHTTPServer) -> None:
    proxy.add(path="/start", action="reset_before", times=1)
    with pytest.raises(requests.ConnectionError):
        requests.get(proxy.url + "/start", timeout=5)
    assert upstream.seen == []  # type: ignore[attr-defined]


def test_errors_then_forward(proxy: FaultProxy, upstream: ThreadingHTTPServer) -> None:
    rule = proxy.add(method="GET", path="/s", action="error", status=503, times=2)
    statuses = [requests.get(proxy.url + "/s", timeout=5).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert rule.hits == 2
    assert len(upstream.seen) == 1  # type: ignore[attr-defined]


def test_error_after_forward(proxy: FaultProxy, upstream: ThreadingHTTPServer) -> None:
    proxy.add(path="/s", action="error", status=502, after_forward=True)
    assert requests.get(proxy.url + "/s", timeout=5).status_code == 502
    assert len(upstream.seen) == 1  # type: ignore[attr-defined]


def test_body_substring_match(proxy: FaultProxy) -> None:
    proxy.add(method="POST", body_contains="eth_sendRawTransaction", action="error", times=None)
    assert requests.post(proxy.url, json={"method": "eth_call"}, timeout=5).ok
    assert requests.post(proxy.url, json={"method": "eth_sendRawTransaction"}, timeout=5).status_code == 503
    proxy.add(method="GET", body_contains="index=1", action="error", times=None)
    assert requests.get(proxy.url + "/r?index=0", timeout=5).ok
    assert requests.get(proxy.url + "/r?index=1", timeout=5).status_code == 503


def test_delay(proxy: FaultProxy) -> None:
    proxy.add(path="/slow", action="delay", delay=1.0)
    started = time.monotonic()
    assert requests.get(proxy.url + "/slow", timeout=5).ok
    assert time.monotonic() - started >= 1.0
    proxy.add(path="/slow", action="delay", delay=2.0)
    with pytest.raises(requests.Timeout):
        requests.get(proxy.url + "/slow", timeout=0.5)


def test_truncate(proxy: FaultProxy) -> None:
    proxy.add(path="/file", action="truncate", truncate_after=25)
    with (
        pytest.raises(requests.exceptions.ChunkedEncodingError),
        requests.get(proxy.url + "/file", stream=True, timeout=5) as response,
    ):
        b"".join(response.iter_content(8))
    assert requests.get(proxy.url + "/file", timeout=5).content == BODY


def test_replay_sends_twice(proxy: FaultProxy, upstream: ThreadingHTTPServer) -> None:
    proxy.add(method="POST", path="/start", action="replay")
    assert requests.post(proxy.url + "/start", json={"n": 1}, timeout=5).ok
    assert [s[2] for s in upstream.seen] == [b'{"n": 1}'] * 2  # type: ignore[attr-defined]


def test_rewrite(proxy: FaultProxy) -> None:
    def evil(response: UpstreamResponse) -> UpstreamResponse:
        return response.with_header("Content-Disposition", "attachment;filename=../../evil").with_json([1])

    proxy.add(path="/x", action="rewrite", rewrite=evil)
    response = requests.get(proxy.url + "/x", timeout=5)
    assert response.json() == [1]
    assert response.headers["Content-Disposition"] == "attachment;filename=../../evil"


def test_binds_loopback_only_and_stops_by_itself(upstream: ThreadingHTTPServer) -> None:
    with pytest.raises(ValueError, match="127.0.0.1"):
        FaultProxy("http://10.0.0.1:80")
    proxy = FaultProxy(f"http://127.0.0.1:{upstream.server_address[1]}", max_lifetime=0.5).start()
    assert proxy._sock.getsockname()[0] == "127.0.0.1"
    time.sleep(1.0)
    assert not proxy._thread.is_alive()
    with pytest.raises(requests.ConnectionError):
        requests.get(proxy.url + "/a", timeout=2)
    proxy.stop()


def test_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown action"):
        Rule(action="explode")


def test_tls(upstream: ThreadingHTTPServer, tmp_path: Any) -> None:
    context, cert = self_signed_context(tmp_path)
    with FaultProxy(f"http://127.0.0.1:{upstream.server_address[1]}", tls=context) as tls_proxy:
        assert tls_proxy.url.startswith("https://")
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(tls_proxy.url + "/a", timeout=5)
        assert requests.get(tls_proxy.url + "/a", timeout=5, verify=cert).json() == {"path": "/a"}
