"""HTTP framing of the sandbox: Provider v4 routes, the Aquarius DDO route, sample files, admin.

Run as ``python -m ocean_sandbox.server --state-dir DIR`` (``ocean-sandbox up`` does it).
Binds to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ocean_sandbox.provider import Response, strip_urls
from ocean_sandbox.routes import DDO_ROUTE, FILE_ROUTE, QUERY_PATH, VALIDATE_PATH

if TYPE_CHECKING:
    from ocean_sandbox.provider import ProviderApp

log = logging.getLogger(__name__)

NOT_FOUND = (
    "404 Not Found: The requested URL was not found on the server. If you entered the URL manually please "
    "check your spelling and try again."
)
NOT_ALLOWED = "405 Method Not Allowed: The method is not allowed for the requested URL."
BAD_JSON = "400 Bad Request: The browser (or proxy) sent a request that this server could not understand."
CHUNK = 1024 * 1024


class _BadJson(Exception):
    pass


class SandboxHandler(BaseHTTPRequestHandler):
    """One request; ``server.app`` is the :class:`ProviderApp`."""

    server_version = "ocean-sandbox"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.info("%s %s", self.address_string(), format % args)

    # the stdlib dispatches do_<METHOD>
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_OPTIONS(self) -> None:
        self._send(Response(200, raw=b""))

    def _body_bytes(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self, raw: bytes) -> dict[str, Any]:
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise _BadJson() from exc
        return body if isinstance(body, dict) else {}

    def _dispatch(self, method: str) -> None:
        app: ProviderApp = self.server.app  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        data: Any = None
        try:
            raw = self._body_bytes()
            body: dict[str, Any] = {}
            if (method != "GET" or raw) and path not in ("/api/services/encrypt", VALIDATE_PATH, QUERY_PATH):
                body = self._json_body(raw)
            # get_request_data: the query args when the query string is non-empty, else the JSON body
            data = query if parts.query else body
            app.request_context.auth_token = self.headers.get("AuthToken")
            response = self._route(app, method, path, data, body, raw)
        except _BadJson:
            response = Response(400, {"error": BAD_JSON, "context": None})
        except Exception as exc:
            log.exception("uncaught error on %s %s", method, path)
            response = Response(503, {"error": strip_urls(str(exc)), "context": data})
        self._send(response)

    def _route(
        self, app: ProviderApp, method: str, path: str, data: dict[str, Any], body: dict[str, Any], raw: bytes
    ) -> Response:
        if path == "/":
            return app.root() if method == "GET" else _not_allowed()
        if path in (VALIDATE_PATH, QUERY_PATH):
            return self._aquarius(app, method, path, raw) if method == "POST" else _not_allowed()
        match = DDO_ROUTE.match(path)
        if match:
            return app.aquarius_ddo(unquote(match["did"])) if method == "GET" else _not_allowed()
        match = FILE_ROUTE.match(path)
        if match:
            file = app.config.files_dir / match["name"]
            if method != "GET":
                return _not_allowed()
            if not file.is_file():
                return Response(404, {"context": None, "error": NOT_FOUND})
            return Response(200, file=file, headers={"Content-Type": "application/octet-stream"})
        if path == "/sandbox/admin/clock":
            if method == "POST":
                app.clock_offset = float(body.get("offset", 0))
            return Response(200, {"offset": app.clock_offset, "now": app.now()})
        access = self.server.access  # type: ignore[attr-defined]
        content_type = self.headers.get("Content-Type")
        routes = {
            ("GET", "/api/services/nonce"): lambda: app.nonce(data),
            ("GET", "/api/services/computeEnvironments"): app.compute_environments,
            ("POST", "/api/services/initializeCompute"): lambda: app.initialize_compute(data, body),
            ("POST", "/api/services/compute"): lambda: app.compute_start(data, body),
            ("GET", "/api/services/compute"): lambda: app.compute_status(data),
            ("PUT", "/api/services/compute"): lambda: app.compute_stop(data),
            ("DELETE", "/api/services/compute"): lambda: app.compute_stop(data, delete=True),
            ("GET", "/api/services/computeResult"): lambda: app.compute_result(data),
            ("POST", "/api/services/encrypt"): lambda: _encrypt(app, raw, data, content_type),
            ("POST", "/api/services/validateContainer"): lambda: _validate_container(body),
            ("GET", "/api/services/createAuthToken"): lambda: access.create_auth_token(data),
            ("DELETE", "/api/services/deleteAuthToken"): lambda: access.delete_auth_token(data),
            ("POST", "/api/services/fileinfo"): lambda: access.fileinfo(body),
            ("GET", "/api/services/initialize"): lambda: access.initialize(data),
            ("GET", "/api/services/download"): lambda: access.download(data),
            ("POST", "/api/services/decrypt"): lambda: access.decrypt(data),
        }
        handler = routes.get((method, path))
        if handler is not None:
            return handler()
        if any(p == path for (_, p) in routes):
            return _not_allowed()
        return Response(404, {"context": None, "error": NOT_FOUND})

    def _aquarius(self, app: ProviderApp, method: str, path: str, raw: bytes) -> Response:
        """Aquarius's validate and query routes (:mod:`ocean_sandbox.aquarius_api`)."""
        from ocean_sandbox import aquarius_api
        from ocean_sandbox.aquarius import DdoStore

        if path == VALIDATE_PATH:
            content_type = self.headers.get("Content-Type")
            status, body = aquarius_api.validate_route(raw, content_type, app.config.provider_key)
        else:
            status, body = aquarius_api.query_route(raw, DdoStore(app.config.ddo_dir).all())
        return Response(status, body)

    def _send(self, response: Response) -> None:
        headers = {"Connection": "close", "Access-Control-Allow-Origin": "*", **response.headers}
        try:
            if response.file is not None:
                size = response.file.stat().st_size
                self.send_response(response.status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                with open(response.file, "rb") as handle:
                    try:
                        self.connection.sendfile(handle)
                    except (AttributeError, OSError):
                        while chunk := handle.read(CHUNK):
                            self.wfile.write(chunk)
                return
            if response.raw is not None:
                payload = response.raw
                headers.setdefault("Content-Type", "text/plain")
            else:
                payload = json.dumps(response.body).encode()
                headers.setdefault("Content-Type", "application/json")
            self.send_response(response.status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            log.info("client went away during %s", self.path)


def _not_allowed() -> Response:
    return Response(405, {"context": None, "error": NOT_ALLOWED})


def _encrypt(app: ProviderApp, raw: bytes, query: dict[str, Any], content_type: str | None) -> Response:
    """``POST /api/services/encrypt`` as the Provider's ``routes/encrypt.py`` ``encrypt``/``_encrypt``.

    The content type must be exactly ``application/octet-stream`` (Flask's ``request.content_type``, the whole
    header), then ``chainId`` must be a non-empty query argument; both refusals are ``error_response`` 400s.
    The answer is ``Web3.toHex`` of the ECIES ciphertext (``utils/encryption.py`` ``do_encrypt``): ``0x`` hex.

    :param app: the Provider app (its key encrypts).
    :param raw: the request body.
    :param query: the query arguments (the handler's ``data``: the query when there is one).
    :param content_type: the request's ``Content-Type`` header.
    """
    from ecies import encrypt
    from eth_keys import keys

    if content_type != "application/octet-stream":
        return Response(400, {"error": "Invalid request content type: should be application/octet-stream"})
    if not query.get("chainId"):
        return Response(400, {"error": "Missing chainId query parameter."})
    public = keys.PrivateKey(bytes.fromhex(app.config.provider_key[2:])).public_key.to_hex()
    ciphertext = "0x" + encrypt(public, raw).hex()
    return Response(201, raw=ciphertext.encode(), headers={"Content-Type": "text/plain"})


def _validate_container(body: dict[str, Any]) -> Response:
    if not (body.get("entrypoint") and body.get("image") and body.get("checksum")):
        return Response(400, {"error": "missing_entrypoint_image_checksum"})
    if not str(body["checksum"]).startswith("sha256:"):
        return Response(400, {"error": "checksum_prefix"})
    return Response(200, body)


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, port: int, app: ProviderApp) -> None:
        from ocean_sandbox.access import AccessRoutes, AuthTokens

        super().__init__(("127.0.0.1", port), SandboxHandler)
        self.app = app
        state_dir = app.config.ddo_dir.parent
        app.tokens = AuthTokens(state_dir / "provider.db", state_dir / "auth-token.secret")
        self.access = AccessRoutes(app, app.tokens)


def build_app(state_dir: Path):
    """Build the Provider app and its engine from the sandbox state written by ``ocean-sandbox up``."""
    from airflow_provider_ocean.chain.rpc import JsonRpcClient
    from ocean_sandbox.engine import JobEngine
    from ocean_sandbox.nonces import NonceStore
    from ocean_sandbox.orders import OrderValidator
    from ocean_sandbox.provider import ProviderApp, ProviderConfig
    from ocean_sandbox.state import load_state

    state = load_state(state_dir)
    config = ProviderConfig(
        base_url=state["provider_url"],
        chain_id=state["chain_id"],
        provider_key=state["provider"]["key"],
        provider_address=state["provider"]["address"],
        fee_token=state["addresses"]["Ocean"],
        environments=state["environments_served"],
        ddo_dir=state_dir / "ddos",
        files_dir=state_dir / "files",
    )
    rpc = JsonRpcClient(state["rpc_url"])
    orders = OrderValidator(rpc, config.provider_address, receipt_timeout=state.get("receipt_timeout", 120.0))
    holder: dict[str, ProviderApp] = {}

    def fetch_input(entry: dict[str, Any]) -> list[Path]:
        return holder["app"].download_input(entry, state_dir / "tmp")

    def fetch_algorithm(algorithm: dict[str, Any]) -> bytes:
        return holder["app"].download_algorithm(algorithm)

    engine = JobEngine(
        state_dir / "engine",
        tick=state.get("engine_tick", 0.2),
        fetch_input=fetch_input,
        fetch_algorithm=fetch_algorithm,
    )
    app = ProviderApp(config, rpc, NonceStore(state_dir / "provider.db"), orders, engine)
    holder["app"] = app
    return app, engine, state


def serve(state_dir: Path) -> None:
    """Run the sandbox server in the foreground until SIGTERM/SIGINT."""
    from ocean_sandbox.state import load_state

    node_state = load_state(state_dir)
    if node_state.get("api") == "node":  # the Ocean Node personality (ocean-sandbox up --api node)
        from ocean_sandbox.node_api import serve_node

        serve_node(state_dir, node_state)
        return
    from ocean_sandbox.aquarius import indexer_for

    app, engine, state = build_app(state_dir)
    server = SandboxHTTPServer(int(state["provider_port"]), app)
    engine.start()
    indexer = indexer_for(state_dir, state)
    indexer.start()
    stop = threading.Event()

    def _stop(*_: Any) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("sandbox Provider listening on %s", state["provider_url"])
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        indexer.stop()
        engine.close()
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run the ocean sandbox server (Provider v4 + Aquarius routes)."
    )
    parser.add_argument("--state-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("OCEAN_SANDBOX_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    serve(args.state_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
