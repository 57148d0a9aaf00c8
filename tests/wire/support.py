"""Servers and clients shared by the transport and download tests of both backends.

Both clients talk to real sockets on 127.0.0.1: the recording server of tests/wire/test_provider_v4.py
(answering as a Provider or, with the node's ``GET /``, as an Ocean Node) and :class:`ScriptedServer`, which
answers a fixed number of connections and then stops listening, so that the next connection is refused
by the kernel (or holds a connection open without answering, for a read timeout).
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

from airflow_provider_ocean.signing import NonceAllocator
from airflow_provider_ocean.wire.ocean_node import OceanNodeClient
from airflow_provider_ocean.wire.provider_v4 import ProviderV4Client
from tests.wire.test_ocean_node import ROOT as NODE_ROOT
from tests.wire.test_provider_v4 import RecordingServer, Reply, root_body

BACKENDS = ("provider_v4", "ocean_node")


def make(backend: str, url: str, **kwargs: Any) -> ProviderV4Client | OceanNodeClient:
    """A client of ``backend`` for ``url`` that never sleeps and owns its nonces."""
    kwargs.setdefault("retry_delay", 0.0)
    kwargs.setdefault("sleep", lambda _seconds: None)
    kwargs.setdefault("nonces", NonceAllocator())
    cls = ProviderV4Client if backend == "provider_v4" else OceanNodeClient
    return cls(url, **kwargs)


def serve(backend: str) -> RecordingServer:
    """A recording server answering ``GET /`` and the nonce route as ``backend`` does."""
    server = RecordingServer()
    root = root_body() if backend == "provider_v4" else NODE_ROOT
    server.routes[("GET", "/")] = Reply(body=root)
    server.routes[("GET", "/api/services/nonce")] = Reply(body={"nonce": "1"})
    return server


def http_answer(body: Any, status: str = "200 OK") -> bytes:
    """A complete HTTP/1.1 answer that closes its connection."""
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + payload


class ScriptedServer:
    """Answers one connection per entry of ``answers`` (bytes, or ``None`` = read the request and never
    answer), then closes its listening socket *before* giving the last answer: every later connection to
    its port is refused.

    :param answers: what each connection gets, in order.
    """

    def __init__(self, answers: list[bytes | None]) -> None:
        self.answers = answers
        self.request_lines: list[str] = []
        self._held: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        for number, answer in enumerate(self.answers, start=1):
            try:
                connection, _peer = self._listener.accept()
            except OSError:  # closed by close(): the client gave up earlier
                return
            connection.settimeout(10)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = connection.recv(65536)
                if not chunk:
                    break
                request += chunk
            self.request_lines.append(request.split(b"\r\n", 1)[0].decode("latin-1"))
            if number == len(self.answers):
                self._listener.close()
            if answer is None:
                self._held.append(connection)
                continue
            connection.sendall(answer)
            connection.close()

    def close(self) -> None:
        self._listener.close()
        self._thread.join(timeout=10)
        for connection in self._held:
            connection.close()


def closed_port_url() -> str:
    """The URL of a 127.0.0.1 port nothing listens on (connections to it are refused)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"http://127.0.0.1:{port}"
