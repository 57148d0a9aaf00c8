"""The sandbox chain's JSON-RPC front: a thin proxy before ganache that keeps ganache from hanging.

Why: ganache 7.9.2 runs ``eth_estimateGas`` on its *live* state trie (``blockchain.trie.copy(false)``
without the parent block's state root, unlike ``eth_call``). When a block is being mined at that moment the
trie's root points at nodes not yet written, and the estimate's promise never settles: the request is never
answered, while ganache keeps answering everything else (``benchmarks/sandbox_load.py --gate off`` shows
it: with 2 clients estimating while a third pays orders, most estimates hang). In instamine "eager" mode a
block is mined exactly while an ``eth_sendRawTransaction`` (or ``evm_mine``, ``miner_start``) is being
answered, so this front never lets an estimate run during one:

- *mining* requests (a batch containing any of :data:`MINING_METHODS`) run one at a time, and only when
  no estimate runs; a waiting one keeps new estimates back;
- *estimates* (``eth_estimateGas``) run one at a time (``--max-estimates``; ganache has one thread, and
  two concurrent estimates take longer than two in a row), first come first served;
- everything else (``eth_call``, receipts, counts, logs...) passes at once, as before.

An estimate whose client has given up (closed the connection) while it waited is dropped, not run.

A transaction with a future nonce is not mined when it arrives: ganache queues it and, in eager mode, never
answers its broadcast (ganache issue 4165) - a real node answers at once with the hash and keeps the
transaction queued until the gap is filled. Such a broadcast is forwarded without holding the gate, and
answered as a real node does: with ganache's own answer if it comes within :data:`QUEUED_GRACE` seconds
(a refusal), else with the transaction's hash. No hold lasts longer than ``--hold-limit`` seconds whatever
ganache does (a warning is logged), so the front can delay requests but never stop the chain.

Run as ``python -m ocean_sandbox.rpc_front --port P --upstream http://127.0.0.1:G`` (``Sandbox.up`` does
it). ``GET /sandbox/rpc-front`` answers the gate's state and, per request kind, counts and worst answer
times (``?reset=1`` starts them afresh).
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

#: Requests during which ganache (instamine) mines a block.
MINING_METHODS = frozenset(
    {"eth_sendRawTransaction", "eth_sendTransaction", "evm_mine", "miner_start", "evm_revert"}
)
ESTIMATE_METHODS = frozenset({"eth_estimateGas"})
STATS_PATH = "/sandbox/rpc-front"
SLOW_SECONDS = 5.0
#: Seconds to wait for ganache's answer to a future-nonce broadcast before answering with its hash.
QUEUED_GRACE = 1.0


class MiningGate:
    """Keeps estimates and mining apart: mining one at a time with no estimate running; estimates (at most
    ``max_estimates`` together) first come first served, and none starts while mining runs or waits.

    :param max_estimates: estimates that may run together.
    :param hold_limit: seconds after which a hold is released whatever happens (logged).
    """

    def __init__(self, max_estimates: int = 1, hold_limit: float = 20.0) -> None:
        self.max_estimates = max(1, max_estimates)
        self.hold_limit = hold_limit
        self._cond = threading.Condition()
        self._estimates = 0
        self._mining = False
        self._waiting: dict[str, deque[object]] = {"mine": deque(), "estimate": deque()}
        self.expired = 0

    def _may_start(self, kind: str, ticket: object) -> bool:
        queue = self._waiting[kind]
        if queue[0] is not ticket or self._mining:
            return False
        if kind == "mine":
            return self._estimates == 0
        return not self._waiting["mine"] and self._estimates < self.max_estimates

    @contextmanager
    def hold(self, kind: str) -> Iterator[Callable[[], None]]:
        """Wait for the gate as ``kind`` (``mine`` or ``estimate``) and hold it for the block; yields a
        function that releases it early (idempotent)."""
        ticket = object()
        with self._cond:
            self._waiting[kind].append(ticket)
            try:
                while not self._may_start(kind, ticket):
                    self._cond.wait()
            finally:
                self._waiting[kind].remove(ticket)
            if kind == "mine":
                self._mining = True
            else:
                self._estimates += 1
            self._cond.notify_all()  # the next in line may start too (estimates below the limit)
        released = False

        def release() -> None:
            nonlocal released
            with self._cond:
                if released:
                    return
                released = True
                if kind == "mine":
                    self._mining = False
                else:
                    self._estimates -= 1
                self._cond.notify_all()

        def expire() -> None:
            if not released:
                self.expired += 1
                log.warning(
                    "released a %s hold after %.0f s without an answer from ganache", kind, self.hold_limit
                )
                release()

        timer = threading.Timer(self.hold_limit, expire)
        timer.daemon = True
        timer.start()
        try:
            yield release
        finally:
            timer.cancel()
            release()

    def snapshot(self) -> dict[str, Any]:
        with self._cond:
            return {
                "estimates_running": self._estimates,
                "mining": self._mining,
                "estimates_waiting": len(self._waiting["estimate"]),
                "mining_waiting": len(self._waiting["mine"]),
                "expired_holds": self.expired,
            }


def classify(calls: list[dict[str, Any]]) -> str:
    """``mine``, ``estimate`` or ``free`` for the calls of one HTTP request."""
    methods = {str(call.get("method")) for call in calls}
    if methods & MINING_METHODS:
        return "mine"
    if methods & ESTIMATE_METHODS:
        return "estimate"
    return "free"


def _rlp_item(data: bytes, pos: int) -> tuple[int, int, bool]:
    """Offset and length of the RLP item at ``pos``, and whether it is a list."""
    first = data[pos]
    if first < 0x80:
        return pos, 1, False
    if first < 0xB8:
        return pos + 1, first - 0x80, False
    if first < 0xC0:
        size = first - 0xB7
        return pos + 1 + size, int.from_bytes(data[pos + 1 : pos + 1 + size], "big"), False
    if first < 0xF8:
        return pos + 1, first - 0xC0, True
    size = first - 0xF7
    return pos + 1 + size, int.from_bytes(data[pos + 1 : pos + 1 + size], "big"), True


def transaction_nonce(raw: bytes) -> int:
    """The nonce of a signed transaction: legacy ``[nonce, ...]``, typed ``type || [chainId, nonce, ...]``."""
    typed = raw[0] <= 0x7F
    body = raw[1:] if typed else raw
    start, _length, is_list = _rlp_item(body, 0)
    if not is_list:
        raise ValueError("not an RLP list")
    pos = start
    if typed:  # skip chainId
        offset, length, _ = _rlp_item(body, pos)
        pos = offset + length
    offset, length, _ = _rlp_item(body, pos)
    return int.from_bytes(body[offset : offset + length], "big")


class Upstream:
    """One keep-alive connection to ganache per thread."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self.timeout = timeout
        self._local = threading.local()

    def post(self, body: bytes, content_type: str = "application/json") -> tuple[int, str, bytes]:
        """POST ``body`` and return (status, content type, body); one retry on a stale kept-alive socket."""
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.timeout
                )
            try:
                conn.request("POST", self.path, body=body, headers={"Content-Type": content_type})
                answer = conn.getresponse()
                data = answer.read()
                return answer.status, answer.getheader("Content-Type") or "application/json", data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
            except Exception:
                conn.close()
                self._local.conn = None
                raise
        raise AssertionError("unreachable")

    def call(self, method: str, params: list[Any]) -> Any:
        status, _, data = self.post(
            json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
        )
        answer = json.loads(data)
        if status != 200 or "result" not in answer:
            raise RuntimeError(f"{method}: HTTP {status} {data[:200]!r}")
        return answer["result"]


class Stats:
    """Per-kind request counts and worst answer times, and the slow requests (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count: dict[str, int] = {}
        self.worst: dict[str, float] = {}
        self.future_nonce = 0
        self.abandoned = 0
        self.slow: deque[dict[str, Any]] = deque(maxlen=50)

    def add(self, methods: list[str], kind: str, waited: float, seconds: float) -> None:
        name = ",".join(sorted(set(methods))) or "?"
        with self._lock:
            self.count[name] = self.count.get(name, 0) + 1
            self.worst[name] = max(self.worst.get(name, 0.0), seconds)
            if seconds >= SLOW_SECONDS:
                self.slow.append(
                    {"methods": name, "kind": kind, "waited": round(waited, 3), "seconds": round(seconds, 3)}
                )
        if seconds >= SLOW_SECONDS:
            log.warning(
                "slow %s request %s: %.1f s (%.1f s waiting at the gate)", kind, name, seconds, waited
            )

    def note_future_nonce(self) -> None:
        with self._lock:
            self.future_nonce += 1

    def note_abandoned(self) -> None:
        with self._lock:
            self.abandoned += 1

    def snapshot(self, reset: bool = False) -> dict[str, Any]:
        """The counters (and, with ``reset``, start them afresh)."""
        with self._lock:
            out = {
                "requests": dict(self.count),
                "worst_seconds": {k: round(v, 3) for k, v in self.worst.items()},
                "future_nonce_broadcasts": self.future_nonce,
                "abandoned_estimates": self.abandoned,
                "slow": list(self.slow),
            }
            if reset:
                self.count, self.worst, self.future_nonce, self.abandoned = {}, {}, 0, 0
                self.slow.clear()
            return out


class FrontHandler(BaseHTTPRequestHandler):
    """Forwards JSON-RPC to ganache through the gate; ``server`` is a :class:`RpcFront`."""

    protocol_version = "HTTP/1.1"
    # headers and body go out as two writes: without TCP_NODELAY the body waits for the client's delayed
    # ACK of the headers on a kept-alive connection (+40 ms per request, measured)
    disable_nagle_algorithm = True
    server_version = "ocean-sandbox-rpc-front"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def client_gone(self) -> bool:
        """Whether the client closed its connection (gave up waiting) - checked before an estimate runs."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def do_GET(self) -> None:
        front: RpcFront = self.server  # type: ignore[assignment]
        parts = urlsplit(self.path)
        if parts.path.rstrip("/") == STATS_PATH:
            reset = "reset=1" in parts.query.split("&")
            body = json.dumps({"gate": front.gate.snapshot(), **front.stats.snapshot(reset)}).encode()
            self._reply(200, body, "application/json")
            return
        self._reply(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        front: RpcFront = self.server  # type: ignore[assignment]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        calls = [c for c in (payload if isinstance(payload, list) else [payload]) if isinstance(c, dict)]
        kind = classify(calls) if front.gated else "free"
        started = time.monotonic()
        waited = 0.0
        try:
            if kind == "free":
                status, content_type, data = front.upstream.post(body)
            else:
                with front.gate.hold(kind) as release:
                    waited = time.monotonic() - started
                    if kind == "estimate" and self.client_gone():
                        # a read nobody waits for any more: not worth a second of ganache (a broadcast is
                        # always forwarded, as a node processes what it received)
                        front.stats.note_abandoned()
                        self.close_connection = True
                        return
                    if kind == "mine" and front.is_future_nonce(calls):
                        release()  # ganache only queues it: nothing is mined now
                        status, content_type, data = front.broadcast_queued(body, calls[0])
                    else:
                        status, content_type, data = front.upstream.post(body)
        except (OSError, http.client.HTTPException) as exc:
            log.warning("ganache did not answer %s: %s", [c.get("method") for c in calls], exc)
            self._reply(502, f"ganache unavailable: {type(exc).__name__}".encode(), "text/plain")
            return
        front.stats.add([str(c.get("method")) for c in calls], kind, waited, time.monotonic() - started)
        self._reply(status, data, content_type)


class RpcFront(ThreadingHTTPServer):
    """The front's HTTP server.

    :param port: port on 127.0.0.1.
    :param upstream: ganache's URL.
    :param gated: apply the gate (``False``: forward everything at once, for comparisons).
    :param max_estimates: estimates that may run together.
    :param hold_limit: seconds after which a hold is released whatever happens.
    :param upstream_timeout: seconds to wait for one answer from ganache.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(
        self,
        port: int,
        upstream: str,
        *,
        gated: bool = True,
        max_estimates: int = 1,
        hold_limit: float = 20.0,
        upstream_timeout: float = 600.0,
    ) -> None:
        super().__init__(("127.0.0.1", port), FrontHandler)
        self.upstream = Upstream(upstream, upstream_timeout)
        self.gated = gated
        self.gate = MiningGate(max_estimates, hold_limit)
        self.stats = Stats()

    def is_future_nonce(self, calls: list[dict[str, Any]]) -> bool:
        """Whether a lone ``eth_sendRawTransaction`` carries a nonce above its sender's mined count (then
        ganache queues it without mining). Called while holding the mining gate, so the count is current."""
        if len(calls) != 1 or calls[0].get("method") != "eth_sendRawTransaction":
            return False
        try:
            from eth_account import Account

            text = str((calls[0].get("params") or [""])[0])
            raw = bytes.fromhex(text[2:] if text.startswith("0x") else text)
            nonce = transaction_nonce(raw)
            sender = Account.recover_transaction(raw)
            mined = int(self.upstream.call("eth_getTransactionCount", [sender, "latest"]), 16)
        except Exception as exc:  # malformed: ganache will refuse it
            log.debug("could not read the broadcast transaction: %s", exc)
            return False
        if nonce > mined:
            self.stats.note_future_nonce()
            log.info(
                "broadcast of %s nonce %s (mined count %s) passes ungated: ganache queues it",
                sender,
                nonce,
                mined,
            )
            return True
        return False

    def broadcast_queued(self, body: bytes, call: dict[str, Any]) -> tuple[int, str, bytes]:
        """Forward a future-nonce broadcast and answer as a real node: ganache's answer if it comes within
        :data:`QUEUED_GRACE` seconds (a refusal), else the transaction's hash (ganache keeps waiting)."""
        from eth_utils import keccak

        outcome: dict[str, Any] = {}
        done = threading.Event()

        def forward() -> None:
            try:
                outcome["answer"] = self.upstream.post(body)
            except Exception as exc:
                outcome["error"] = exc
            finally:
                done.set()

        threading.Thread(target=forward, daemon=True).start()
        if done.wait(QUEUED_GRACE):
            if "error" in outcome:
                raise outcome["error"]
            answer: tuple[int, str, bytes] = outcome["answer"]
            return answer
        text = str((call.get("params") or [""])[0])
        tx_hash = "0x" + keccak(bytes.fromhex(text[2:] if text.startswith("0x") else text)).hex()
        body_out = {"jsonrpc": call.get("jsonrpc", "2.0"), "id": call.get("id"), "result": tx_hash}
        return 200, "application/json", json.dumps(body_out).encode()


def serve(port: int, upstream: str, **kwargs: Any) -> None:
    """Run the front in the foreground until SIGTERM/SIGINT."""
    server = RpcFront(port, upstream, **kwargs)

    def _stop(*_: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("sandbox RPC front on 127.0.0.1:%s before %s (gated: %s)", port, upstream, server.gated)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the sandbox chain's JSON-RPC front before ganache.")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--upstream", required=True, help="ganache's URL")
    parser.add_argument("--gate", choices=["on", "off"], default="on")
    parser.add_argument("--max-estimates", type=int, default=1)
    parser.add_argument("--hold-limit", type=float, default=20.0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("OCEAN_SANDBOX_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    serve(
        args.port,
        args.upstream,
        gated=args.gate == "on",
        max_estimates=args.max_estimates,
        hold_limit=args.hold_limit,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
