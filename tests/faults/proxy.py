"""A scripted fault-injection HTTP proxy with real sockets, for the Provider and the chain RPC.

The proxy listens on 127.0.0.1 only, reads one HTTP/1.1 request per client connection, decides what to do
from its rules (first matching rule with hits left), usually forwards the request to the upstream server
on a fresh connection, and answers the client with ``Connection: close``. It counts every request per
route (``"METHOD /path"``) and can record them (for the secrets scan).

Rule actions:

- ``forward``: pass through unchanged;
- ``reset``: forward the request (the server acts on it), then reset the client connection (RST);
- ``reset_before``: reset the client connection without forwarding anything;
- ``error``: answer ``status`` (default 503) without forwarding; with ``after_forward=True`` the request is
  forwarded first and the server's answer is replaced by the error;
- ``delay``: forward, hold the answer ``delay`` seconds, then send it;
- ``truncate``: forward, send the headers and only the first ``truncate_after`` body bytes, then close;
- ``replay``: forward the same request twice and answer with the second answer;
- ``rewrite``: forward and pass the answer through ``rewrite(UpstreamResponse) -> UpstreamResponse``.

A rule applies to ``times`` matching requests (``None`` = all); "N x 5xx then forward" is an ``error`` rule
with ``times=N``. Every loop is bounded: the proxy stops by itself after ``max_lifetime`` seconds or
``max_requests`` requests, and every socket has a timeout.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 512 * 1024 * 1024
SOCKET_TIMEOUT = 120.0
ACTIONS = ("forward", "reset", "reset_before", "error", "delay", "truncate", "replay", "rewrite")


@dataclasses.dataclass
class RecordedRequest:
    """One request as the proxy received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"

    def text(self) -> str:
        """Query and body as text (for scanning)."""
        return self.query + "\n" + self.body.decode("utf-8", errors="replace")


@dataclasses.dataclass
class UpstreamResponse:
    """A complete answer of the upstream server (body de-chunked)."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def with_header(self, name: str, value: str) -> UpstreamResponse:
        headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()]
        headers.append((name, value))
        return dataclasses.replace(self, headers=headers)

    def json(self) -> Any:
        return json.loads(self.body)

    def with_json(self, value: Any) -> UpstreamResponse:
        return dataclasses.replace(self, body=json.dumps(value).encode())


@dataclasses.dataclass
class Rule:
    """What to do with matching requests.

    :param method: HTTP method to match (``None``: any).
    :param path: exact path without the query string (``None``: any).
    :param body_contains: a substring the body or the query string must contain (``None``: any).
    :param action: one of :data:`ACTIONS`.
    :param times: how many matching requests the rule handles (``None``: unlimited).
    :param status: the status of an ``error`` answer.
    :param after_forward: ``error`` only: forward first, then answer the error.
    :param delay: ``delay`` only: seconds to hold the answer.
    :param truncate_after: ``truncate`` only: body bytes sent before closing.
    :param rewrite: ``rewrite`` only: transforms the upstream answer.
    """

    method: str | None = None
    path: str | None = None
    body_contains: str | None = None
    action: str = "forward"
    times: int | None = 1
    status: int = 503
    after_forward: bool = False
    delay: float = 0.0
    truncate_after: int = 0
    rewrite: Callable[[UpstreamResponse], UpstreamResponse] | None = None
    hits: int = 0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}")

    def matches(self, method: str, path: str, query: str, body: bytes) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        if self.path is not None and self.path.rstrip("/") != path.rstrip("/"):
            return False
        if self.body_contains is not None:
            needle = self.body_contains.encode()
            return needle in body or needle in query.encode()
        return True


class FaultProxy:
    """An HTTP proxy in front of one upstream base URL, with scripted faults.

    :param upstream: the upstream base URL (``http://127.0.0.1:PORT``).
    :param record: keep every request (bounded) in :attr:`requests`.
    :param tls: serve HTTPS with this server-side SSL context (the upstream stays plain HTTP).
    :param max_lifetime: seconds after which the proxy stops by itself.
    :param max_requests: requests after which the proxy stops by itself.
    """

    def __init__(
        self,
        upstream: str,
        *,
        record: bool = False,
        tls: ssl.SSLContext | None = None,
        max_lifetime: float = 1800.0,
        max_requests: int = 200_000,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        if parts.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError("the proxy only talks to 127.0.0.1")
        self.upstream_host = "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.record = record
        self.tls = tls
        self.max_lifetime = max_lifetime
        self.max_requests = max_requests
        self.rules: list[Rule] = []
        self.counts: collections.Counter[str] = collections.Counter()
        self.requests: collections.deque[RecordedRequest] = collections.deque(maxlen=20_000)
        self.sequence: collections.deque[str] = collections.deque(maxlen=20_000)
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._total = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name=f"fault-proxy-{self.port}", daemon=True)

    # -- public API -----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def add(self, rule: Rule | None = None, **kwargs: Any) -> Rule:
        """Append a rule (or build one from keyword arguments) and return it."""
        rule = rule or Rule(**kwargs)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Forget rules, counts and recorded requests."""
        with self._lock:
            self.rules.clear()
            self.counts.clear()
            self.requests.clear()
            self.sequence.clear()
            self.errors.clear()

    def count(self, method: str, path: str) -> int:
        with self._lock:
            return self.counts[f"{method.upper()} {path}"]

    # -- serving --------------------------------------------------------------------------------------
    def _serve(self) -> None:
        deadline = self._started + self.max_lifetime
        while not self._stop.is_set() and time.monotonic() < deadline and self._total < self.max_requests:
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            self._total += 1
            threading.Thread(target=self._handle_safely, args=(client,), daemon=True).start()
        with contextlib.suppress(OSError):
            self._sock.close()

    def _handle_safely(self, client: socket.socket) -> None:
        try:
            client.settimeout(SOCKET_TIMEOUT)
            if self.tls is not None:
                client = self.tls.wrap_socket(client, server_side=True)
            self._handle(client)
        except Exception as exc:  # a broken client must never stop the proxy
            with self._lock:
                self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(OSError):
                client.close()

    def _pick(self, method: str, path: str, query: str, body: bytes) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path, query, body):
                    rule.hits += 1
                    return rule
        return None

    def _handle(self, client: socket.socket) -> None:
        request = _read_message(client, is_request=True)
        if request is None:
            return
        start_line, headers, body = request
        method, target, _version = start_line.split(" ", 2)
        parts = urlsplit(target)
        path = parts.path or "/"
        with self._lock:
            self.counts[f"{method} {path}"] += 1
            self.sequence.append(f"{method} {path}")
            if self.record:
                self.requests.append(
                    RecordedRequest(method, path, parts.query, {k: v for k, v in headers}, body)
                )
        rule = self._pick(method, path, parts.query, body)
        action = rule.action if rule else "forward"
        if action == "reset_before":
            _reset(client)
            return
        if action == "error" and rule is not None and not rule.after_forward:
            client.sendall(_error_bytes(rule.status))
            return
        response = self._forward(method, target, headers, body)
        if action == "replay":
            response = self._forward(method, target, headers, body)
        if action == "reset":
            _reset(client)
            return
        if action == "error" and rule is not None:
            client.sendall(_error_bytes(rule.status))
            return
        if action == "rewrite" and rule is not None and rule.rewrite is not None:
            response = rule.rewrite(response)
        if action == "delay" and rule is not None:
            self._stop.wait(min(rule.delay, SOCKET_TIMEOUT))
        if action == "truncate" and rule is not None:
            head = _response_head(response, content_length=len(response.body))
            client.sendall(head + response.body[: rule.truncate_after])
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            return
        client.sendall(_response_head(response, content_length=len(response.body)) + response.body)

    def _forward(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> UpstreamResponse:
        upstream = socket.create_connection((self.upstream_host, self.upstream_port), timeout=SOCKET_TIMEOUT)
        try:
            skip = {
                "host",
                "connection",
                "keep-alive",
                "proxy-connection",
                "content-length",
                "transfer-encoding",
            }
            lines = [f"{method} {target} HTTP/1.1", f"Host: {self.upstream_host}:{self.upstream_port}"]
            lines += [f"{k}: {v}" for k, v in headers if k.lower() not in skip]
            lines += [f"Content-Length: {len(body)}", "Connection: close"]
            upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            message = _read_message(upstream, is_request=False, head_request=method == "HEAD")
        finally:
            upstream.close()
        if message is None:
            raise ConnectionError("the upstream closed without answering")
        status_line, response_headers, response_body = message
        _version, status, *reason = status_line.split(" ", 2)
        return UpstreamResponse(int(status), reason[0] if reason else "", response_headers, response_body)


# -- HTTP framing helpers -----------------------------------------------------------------------------
def _read_message(
    sock: socket.socket, *, is_request: bool, head_request: bool = False
) -> tuple[str, list[tuple[str, str]], bytes] | None:
    """Read one HTTP message: (start line, headers, de-chunked body); ``None`` on a silent close."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_HEADER_BYTES:
            raise ValueError("headers too large")
        chunk = sock.recv(65536)
        if not chunk:
            if not buffer:
                return None
            raise ConnectionError("connection closed inside the headers")
        buffer += chunk
    head, rest = buffer.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers.append((key.strip(), value.strip()))
    lookup = {k.lower(): v for k, v in headers}
    if head_request:
        return lines[0], headers, b""
    if "chunked" in lookup.get("transfer-encoding", "").lower():
        body = _read_chunked(sock, rest)
    elif "content-length" in lookup:
        length = int(lookup["content-length"])
        if length > MAX_BODY_BYTES:
            raise ValueError("body too large")
        body = rest
        while len(body) < length:
            chunk = sock.recv(min(1 << 20, length - len(body)))
            if not chunk:
                raise ConnectionError("connection closed inside the body")
            body += chunk
        body = body[:length]
    elif is_request:
        body = b""
    else:  # a response without framing: read until the server closes
        body = rest
        while len(body) <= MAX_BODY_BYTES:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            body += chunk
    return lines[0], headers, body


def _read_chunked(sock: socket.socket, rest: bytes) -> bytes:
    buffer = rest
    body = b""

    def fill(predicate: Callable[[bytes], bool]) -> None:
        nonlocal buffer
        while not predicate(buffer):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed inside a chunked body")
            buffer += chunk

    for _ in range(1_000_000):
        fill(lambda b: b"\r\n" in b)
        size_line, buffer = buffer.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            fill(lambda b: b"\r\n" in b)  # trailers are not used by the servers here
            return body
        if len(body) + size > MAX_BODY_BYTES:
            raise ValueError("body too large")
        fill(lambda b, n=size: len(b) >= n + 2)
        body += buffer[:size]
        buffer = buffer[size + 2 :]
    raise ValueError("too many chunks")


def _response_head(response: UpstreamResponse, *, content_length: int) -> bytes:
    skip = {"connection", "keep-alive", "content-length", "transfer-encoding"}
    lines = [f"HTTP/1.1 {response.status} {response.reason}".rstrip()]
    lines += [f"{k}: {v}" for k, v in response.headers if k.lower() not in skip]
    lines += [f"Content-Length: {content_length}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _error_bytes(status: int) -> bytes:
    body = json.dumps({"error": f"injected fault: HTTP {status}"}).encode()
    response = UpstreamResponse(status, "Injected Fault", [("Content-Type", "application/json")], body)
    return _response_head(response, content_length=len(body)) + body


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER on, timeout 0) so that the client sees 'connection reset'."""
    with contextlib.suppress(OSError):
        raw = sock.unwrap() if isinstance(sock, ssl.SSLSocket) else sock
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()


@contextlib.contextmanager
def running(upstream: str, **kwargs: Any) -> Iterator[FaultProxy]:
    """A started proxy, stopped on exit."""
    proxy = FaultProxy(upstream, **kwargs).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def self_signed_context(directory: Any) -> tuple[ssl.SSLContext, str]:
    """A server SSL context with a fresh self-signed certificate for 127.0.0.1: (context, cert path)."""
    import datetime
    import ipaddress
    from pathlib import Path

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    folder = Path(directory)
    cert_path, key_path = folder / "proxy-cert.pem", folder / "proxy-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, str(cert_path)
