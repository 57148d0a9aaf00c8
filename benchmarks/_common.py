"""Shared pieces of the benchmark scripts: a throw-away sandbox, counting proxies, memory readings, tables.

Importing this module gives the process its own temporary ``AIRFLOW_HOME`` (before Airflow is imported),
so that no benchmark reads or writes the user's Airflow configuration.
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

if "BENCH_AIRFLOW_HOME" not in os.environ:
    _home = tempfile.mkdtemp(prefix="ocean-bench-airflow-")
    atexit.register(shutil.rmtree, _home, ignore_errors=True)
    os.environ["BENCH_AIRFLOW_HOME"] = _home  # children reuse it
os.environ["AIRFLOW_HOME"] = os.environ["BENCH_AIRFLOW_HOME"]
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")

CONTAINER = {
    "entrypoint": "python $ALGO",
    "image": "python",
    "tag": "3.11-slim",
    "checksum": "sha256:" + "0" * 64,
}


# -- sandbox -----------------------------------------------------------------------------------------
@contextmanager
def sandbox(**kwargs: Any) -> Iterator[dict[str, Any]]:
    """A fresh sandbox on free 127.0.0.1 ports in a temporary directory; stopped and deleted afterwards.

    Sets ``AIRFLOW_CONN_OCEAN_DEFAULT`` to the consumer's connection while it runs.

    :param kwargs: passed to :class:`~ocean_sandbox.runtime.Sandbox`.
    """
    from ocean_sandbox.runtime import Sandbox

    kwargs.setdefault("receipt_timeout", 5.0)
    # A terminated benchmark still stops its sandbox: SIGTERM unwinds like Ctrl-C (finally blocks run).
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    state_dir = Path(tempfile.mkdtemp(prefix="ocean-bench-sandbox-"))
    box = Sandbox(state_dir / "state", rpc_port=0, provider_port=0, **kwargs)
    try:
        info = box.up()
        os.environ["AIRFLOW_CONN_OCEAN_DEFAULT"] = info["conn_json"]
        yield {**info, "sandbox": box}
    finally:
        try:
            box.down()
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)


def conn_json(info: dict[str, Any], *, provider_url: str | None = None, rpc_url: str | None = None) -> str:
    """The sandbox connection, optionally pointed at proxies."""
    conn = json.loads(info["conn_json"])
    if provider_url:
        conn["host"] = provider_url
        conn["extra"]["aquarius_url"] = provider_url
    if rpc_url:
        conn["extra"]["rpc_url"] = rpc_url
    return json.dumps(conn)


# -- memory ------------------------------------------------------------------------------------------
def proc_status_kb(field: str, pid: int | str = "self") -> int:
    """A ``VmRSS``/``VmHWM``... line of ``/proc/<pid>/status`` in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs`` 5); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples this process's ``VmRSS`` in a thread; ``peak_kb`` is the highest value seen."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak_kb = proc_status_kb("VmRSS")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, proc_status_kb("VmRSS"))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, proc_status_kb("VmRSS"))


# -- counting reverse proxy --------------------------------------------------------------------------
class LocalHttpServer:
    """A threaded HTTP server on a free 127.0.0.1 port, serving from a daemon thread while entered.

    :param handler: the request handler class.
    :param request_queue_size: the listen backlog.
    """

    def __init__(self, handler: type[BaseHTTPRequestHandler], *, request_queue_size: int = 5) -> None:
        server_class = type(
            "Server",
            (ThreadingHTTPServer,),
            {"daemon_threads": True, "request_queue_size": request_queue_size},
        )
        self._server = server_class(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class CountingProxy(LocalHttpServer):
    """A reverse proxy on 127.0.0.1 that counts what passes: HTTP requests and JSON-RPC methods.

    Bodies are relayed whole (fine for API calls; not meant for large downloads). Every request is
    logged as ``(monotonic time, method, path, [rpc methods])``.

    :param upstream: the base URL to forward to.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.log: list[tuple[float, str, str, list[str]]] = []
        self.tx_hashes: list[str] = []  # results of eth_sendRawTransaction, in order
        self.ends: dict[int, float] = {}  # position in the log → monotonic time the answer was relayed
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out as two writes: with Nagle on, the body waits for the client's
            # delayed ACK of the headers (+40 ms per request on a kept-alive connection, measured)
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rpc: list[str] = []
                if body[:1] in (b"{", b"["):
                    try:
                        payload = json.loads(body)
                        calls = payload if isinstance(payload, list) else [payload]
                        rpc = [str(c.get("method")) for c in calls if isinstance(c, dict) and "method" in c]
                    except ValueError:
                        pass
                with proxy._lock:
                    position = len(proxy.log)
                    proxy.log.append((time.monotonic(), self.command, self.path, rpc))
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "connection", "keep-alive", "proxy-connection")
                }
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=300)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                    if "eth_sendRawTransaction" in rpc:
                        proxy._record_tx(data)
                    self.send_response(answer.status)
                    for key, value in answer.getheaders():
                        if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    conn.close()
                    with proxy._lock:
                        proxy.ends[position] = time.monotonic()

            do_GET = do_POST = do_PUT = do_DELETE = _relay

        super().__init__(Handler, request_queue_size=1024)

    def _record_tx(self, data: bytes) -> None:
        try:
            payload = json.loads(data)
        except ValueError:
            return
        for item in payload if isinstance(payload, list) else [payload]:
            if isinstance(item, dict) and isinstance(item.get("result"), str):
                with self._lock:
                    self.tx_hashes.append(item["result"])

    def mark(self) -> int:
        """Position in the log (for counting what happens after)."""
        with self._lock:
            return len(self.log)

    def since(self, mark: int = 0) -> list[tuple[float, str, str, list[str]]]:
        with self._lock:
            return list(self.log[mark:])

    def spans(self, mark: int = 0) -> list[tuple[float, float, str, str, list[str]]]:
        """``(start, end, method, path, rpc methods)`` of the requests since ``mark`` (end NaN: open)."""
        with self._lock:
            return [
                (t, self.ends.get(mark + i, float("nan")), m, p, r)
                for i, (t, m, p, r) in enumerate(self.log[mark:])
            ]

    @staticmethod
    def http_counts(entries: list[tuple[float, str, str, list[str]]]) -> Counter[str]:
        """``"METHOD /path"`` (query string dropped, DIDs replaced by ``{did}``) → count."""
        return Counter(
            f"{m} {re.sub(r'/did:op:[0-9a-fA-F]+', '/{did}', urlsplit(p).path)}" for _t, m, p, _r in entries
        )

    @staticmethod
    def rpc_counts(entries: list[tuple[float, str, str, list[str]]]) -> Counter[str]:
        """JSON-RPC method → count."""
        return Counter(name for *_x, rpc in entries for name in rpc)


# -- reporting ---------------------------------------------------------------------------------------
def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_table(title: str, headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  " + "  ".join("-" * w for w in widths))
    for row in cells:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


class Goals:
    """Collects ``(goal, measured, ok)`` and prints the verdict table; ``exit_code`` is 1 if any failed.

    A goal checked with ``enforced=False`` (timing goals in ``--small`` smoke runs on a shared machine)
    is printed with its verdict but does not fail the run.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: list[tuple[str, str, bool, bool]] = []

    def check(self, goal: str, measured: str, ok: bool, *, enforced: bool = True) -> None:
        self.rows.append((goal, measured, ok, enforced))

    def report(self, figures: dict[str, Any]) -> int:
        def verdict(ok: bool, enforced: bool) -> str:
            return "PASS" if ok else ("FAIL" if enforced else "FAIL (not enforced)")

        print_table(
            f"{self.name}: goals",
            ["goal", "measured", "verdict"],
            [[g, m, verdict(ok, enforced)] for g, m, ok, enforced in self.rows],
        )
        print(f"\nFIGURES {self.name} " + json.dumps(figures, sort_keys=True))
        failed = [g for g, _m, ok, enforced in self.rows if not ok and enforced]
        print(f"\nRESULT {self.name}: " + ("PASS" if not failed else "FAIL (" + "; ".join(failed) + ")"))
        return 1 if failed else 0


def load_average() -> str:
    """The 1, 5 and 15-minute load averages (``os.getloadavg``)."""
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def machine() -> str:
    """A one-line description of the machine (cores, Python)."""
    return (
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M %Z')}, "
        f"load average {load_average()}"
    )
