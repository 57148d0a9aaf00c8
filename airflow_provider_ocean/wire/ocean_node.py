"""Wire client for Ocean Node's compute-to-data HTTP API (see ocean-node-api.md).

Ocean Node keeps Provider v4's paths but not its payloads: every signed command signs
``consumerAddress + str(int(nonce)) + commandName`` (same EIP-191 keccak recipe as v4, so
:class:`~airflow_provider_ocean.signing.Signer` is reused), nonces are integers that must be strictly
greater than the stored one and are consumed even when the command then fails, job ids carry an engine
prefix that status answers drop, results come with an explicit ``index``, and errors are JSON strings,
plain text or a bare ``Internal Server Error`` depending on the route.

Sending rules:

- Idempotent reads (``GET /``, environments, nonce, status) are retried on connection errors and
  502/503/504, with exponential backoff and jitter.
- A 429 (``Rate limit exceeded. Try again in N seconds.``) is honoured on every route: the client waits
  the announced seconds (bounded by ``max_rate_limit_wait`` in total) and sends again. Rate limiting
  happens before the command runs, so a signed command is re-signed with a fresh nonce and sent again.
- Signed commands are otherwise sent once; start is re-signed once more only when the node refused the
  nonce itself (``nonce: N is not a valid nonce``), which happens before anything runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import requests

from airflow_provider_ocean import __version__
from airflow_provider_ocean.exceptions import (
    OceanConnectionError,
    OceanJobNotFoundError,
    OceanProviderError,
    OceanValidationError,
    redact,
)
from airflow_provider_ocean.models import DownloadedResult, JobStatus, ResultFile
from airflow_provider_ocean.signing import NONCES, NonceAllocator
from airflow_provider_ocean.wire.node_payloads import (
    environment_from_node,
    full_job_id,
    job_status_from_node,
    node_results,
    split_job_id,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_provider_ocean.models import ComputeEnvironment
    from airflow_provider_ocean.signing import Signer

log = logging.getLogger(__name__)

USER_AGENT = f"airflow-provider-ocean/{__version__}"
DEFAULT_TIMEOUT = 30.0
LONG_TIMEOUT = 180.0
CONNECT_TIMEOUT = 10.0
CHUNK_SIZE = 1024 * 1024
DEFAULT_RATE_LIMIT_WAIT = 5.0
_MAX_ERROR_BODY = 64 * 1024

BACKEND_OCEAN_NODE = "ocean_node"
BACKEND_PROVIDER_V4 = "provider_v4"

# Signature commands (ocean-node-api.md §2).
CMD_START = "startCompute"
CMD_FREE_START = "freeStartCompute"
CMD_STOP = "stopCompute"
CMD_RESULT = "getComputeResult"
CMD_STREAM_LOGS = "getComputeStreamableLogs"
CMD_CREATE_TOKEN = "createAuthToken"
CMD_INVALIDATE_TOKEN = "invalidateAuthToken"

DEFAULT_ENDPOINTS: dict[str, tuple[str, str]] = {
    "nonce": ("GET", "/api/services/nonce"),
    "computeEnvironments": ("GET", "/api/services/computeEnvironments"),
    "initializeCompute": ("POST", "/api/services/initializeCompute"),
    "computeStart": ("POST", "/api/services/compute"),
    "freeCompute": ("POST", "/api/services/freeCompute"),
    "computeStatus": ("GET", "/api/services/compute"),
    "computeStop": ("PUT", "/api/services/compute"),
    "computeResult": ("GET", "/api/services/computeResult"),
    "computeStreamableLogs": ("GET", "/api/services/computeStreamableLogs"),
    "generateAuthToken": ("POST", "/api/services/auth/token"),
    "invalidateAuthToken": ("POST", "/api/services/auth/token/invalidate"),
}
_RETRY_AFTER_RE = re.compile(r"try again in\s+(\d+(?:\.\d+)?)\s*second", re.IGNORECASE)
_NONCE_RE = re.compile(r"nonce:\s*\S+\s+is not a valid nonce", re.IGNORECASE)
_TAG_RE = re.compile(r"<[^>]+>")
_TRANSIENT_STATUSES = frozenset({502, 503, 504})

#: Known Ocean Node messages and what to do about them.
NODE_HINTS: tuple[tuple[str, str], ...] = (
    ("is not a valid nonce", "another client used a higher nonce for this wallet; retry with a fresh nonce"),
    (
        "signature mismatch",
        "the signed message must embed consumerAddress exactly as sent (checksummed) and the command name",
    ),
    (
        "invalid c2d environment",
        "list the node's environments (an empty list means the node has no working Docker engine)",
    ),
    ("does not support free jobs", "use an environment with a `free` block, or pay (free=False)"),
    ("does not have enough funds", "deposit more of the fee token into the Escrow contract"),
    ("no escrow auths found", "authorize the node (payee) in the Escrow contract for this token"),
    ("will go over limit", "raise maxLockedAmount of the node's Escrow authorization"),
    ("maxlockseconds too low", "raise maxLockSeconds to at least the quote's minLockSeconds"),
    ("too many active locks", "raise maxLockCounts or wait until the node claims finished jobs"),
    ("insufficient gas funds", "the node's own wallet has no gas; contact the node operator"),
    ("not enough", "request fewer resources (see the environment's resources max)"),
    ("rate limit exceeded", "the node limits requests per IP and minute; poll less often"),
    ("not authorized to get results", "results are only served to the job owner's exact address string"),
    ("not allowed to run on the dataset", "the dataset publisher does not trust this algorithm"),
    ("access denied", "the environment's access list does not include this wallet"),
)


def detect_backend(root: dict[str, Any]) -> str | None:
    """Tell Ocean Node from Provider v4 by their ``GET /`` answer (``None`` when neither matches).

    :param root: the JSON object of ``GET /``.
    """
    if not isinstance(root, dict):
        return None
    software = str(root.get("software") or "")
    if software == "Ocean-Node" or "nodeId" in root:
        return BACKEND_OCEAN_NODE
    if software == "Provider" or "providerAddresses" in root:
        return BACKEND_PROVIDER_V4
    return None


def node_message(consumer_address: str, nonce: int | str, command: str) -> str:
    """The text Ocean Node verifies: ``consumerAddress + String(parseInt(nonce)) + command``.

    :param consumer_address: the address string exactly as sent (use the checksummed form).
    :param nonce: an integer nonce (a decimal would be truncated by the node and fail).
    :param command: the command name, e.g. ``startCompute``.
    """
    return f"{consumer_address}{int(str(nonce))}{command}"


def retry_after_seconds(text: str | None) -> float | None:
    """The seconds of ``Rate limit exceeded. Try again in N seconds.``, if present.

    :param text: an error text.
    """
    match = _RETRY_AFTER_RE.search(text or "")
    return float(match.group(1)) if match else None


class OceanNodeError(OceanProviderError):
    """Ocean Node answered with an error.

    :param message: the parsed error text.
    :param status: HTTP status code.
    :param body: the raw body (redacted).
    :param operation: what the client was doing.
    :param retry_after: seconds announced by a 429 answer.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: str | None = None,
        operation: str | None = None,
        retry_after: float | None = None,
        hint: str | None = None,
    ) -> None:
        self.retry_after = retry_after
        lowered = message.lower()
        hint = hint or next((h for needle, h in NODE_HINTS if needle in lowered), None)
        super().__init__(message, status=status, body=body, operation=operation, hint=hint)

    @property
    def is_nonce_error(self) -> bool:
        """True when the node refused the nonce (nothing ran; a fresh nonce may be tried once)."""
        return self.status == 401 and bool(_NONCE_RE.search(self.detail))

    @property
    def is_rate_limited(self) -> bool:
        """True for a 429 answer."""
        return self.status == 429


def parse_node_error(
    status: int, text: str | bytes | None, *, operation: str | None = None
) -> OceanNodeError:
    """Turn an Ocean Node error answer into :class:`OceanNodeError`.

    Understands the node's shapes: a JSON-encoded string (start routes), ``{"error": ...}`` (auth routes),
    plain text (initialize/result/logs, 429), and the bare ``Internal Server Error`` page (status/stop).

    :param status: HTTP status code.
    :param text: the response body.
    :param operation: what the client was doing.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = text or ""
    message: str | None = None
    try:
        body = json.loads(text) if text.strip() else None
    except ValueError:
        body = None
    if isinstance(body, str):
        message = body
    elif isinstance(body, dict):
        value = body.get("error", body.get("message", body.get("errors")))
        if value is not None:
            message = value if isinstance(value, str) else json.dumps(value)
    if message is None:
        stripped = " ".join(_TAG_RE.sub(" ", text).split())
        message = stripped[:500] if stripped else "empty response body"
    return OceanNodeError(
        message,
        status=status,
        body=text,
        operation=operation,
        retry_after=retry_after_seconds(message) if status == 429 else None,
    )


def _safe_filename(name: str | None, fallback: str) -> str:
    base = os.path.basename((name or "").replace("\\", "/")).strip()
    return base if base and base not in (".", "..") else fallback


def _content_disposition_filename(header: str | None) -> str | None:
    if not header:
        return None
    match = re.search(r"filename\s*=\s*(\"[^\"]*\"|[^;]+)", header, flags=re.IGNORECASE)
    return match.group(1).strip().strip('"') or None if match else None


class OceanNodeClient:
    """Talks to one Ocean Node over a ``requests.Session``.

    :param base_url: the node's base URL (``https://node.example.com:8001``).
    :param timeout: read timeout in seconds for ordinary requests.
    :param long_timeout: read timeout for initializeCompute and start.
    :param verify: verify TLS certificates.
    :param retry_limit: attempts for idempotent reads (1 = no retry).
    :param retry_delay: initial backoff in seconds.
    :param retry_max_delay: upper bound of one backoff.
    :param max_rate_limit_wait: total seconds a call may spend waiting after 429 answers.
    :param auth_token: an auth token (``createAuthToken``) sent as the raw ``Authorization`` header
        instead of signing commands.
    :param session: a session to use (a new one by default).
    :param nonces: the nonce allocator (the process-wide one by default).
    :param sleep: the sleep function (tests).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        long_timeout: float | None = None,
        verify: bool = True,
        retry_limit: int = 3,
        retry_delay: float = 1.0,
        retry_max_delay: float = 30.0,
        max_rate_limit_wait: float = 180.0,
        auth_token: str | None = None,
        session: requests.Session | None = None,
        nonces: NonceAllocator | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise OceanValidationError(
                f"The Ocean Node URL must start with http:// or https://, got {base_url!r}"
            )
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.long_timeout = float(long_timeout) if long_timeout else max(LONG_TIMEOUT, self.timeout)
        self.verify = verify
        self.retry_limit = max(1, int(retry_limit))
        self.retry_delay = max(0.0, float(retry_delay))
        self.retry_max_delay = float(retry_max_delay)
        self.max_rate_limit_wait = max(0.0, float(max_rate_limit_wait))
        self.auth_token = auth_token or None
        self.nonces = nonces or NONCES
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers.setdefault("Accept", "application/json")
        self._sleep = sleep or time.sleep
        self._root: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"OceanNodeClient({self.base_url!r})"

    # -- transport -----------------------------------------------------------------------------------
    def _send_once(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        timeout: float | None = None,
        stream: bool = False,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        read_timeout = timeout or self.timeout
        try:
            response = self.session.request(
                method,
                url,
                params=params,
                json=json_body,
                headers=headers,
                timeout=(min(CONNECT_TIMEOUT, read_timeout), read_timeout),
                verify=self.verify,
                stream=stream,
            )
        except requests.Timeout as exc:
            raise OceanConnectionError(
                f"{operation}: no answer from {url} within {read_timeout:.0f} s ({type(exc).__name__})",
                url=url,
            ) from None
        except requests.RequestException as exc:
            # str(exc) may contain the query string (signatures): only the type and a redacted reason.
            raise OceanConnectionError(
                f"{operation}: cannot reach {url} ({type(exc).__name__}: {redact(exc, 300)})", url=url
            ) from None
        if response.status_code >= 400:
            try:
                raw = b""
                for chunk in response.iter_content(8192):
                    raw += chunk
                    if len(raw) >= _MAX_ERROR_BODY:
                        break
            except requests.RequestException:
                pass
            finally:
                response.close()
            raise parse_node_error(response.status_code, raw, operation=operation)
        return response

    def _rate_limited(self, attempt: Callable[[], requests.Response], operation: str) -> requests.Response:
        """Run ``attempt``; on 429 wait the announced seconds and run it again (bounded in total)."""
        waited = 0.0
        while True:
            try:
                return attempt()
            except OceanNodeError as exc:
                if not exc.is_rate_limited:
                    raise
                pause = exc.retry_after if exc.retry_after is not None else DEFAULT_RATE_LIMIT_WAIT
                pause = max(pause, 0.5) + random.uniform(0, 0.5)  # noqa: S311 - jitter, not crypto
                if waited + pause > self.max_rate_limit_wait:
                    raise
                log.warning("%s: rate limited by the node; waiting %.1f s", operation, pause)
                self._sleep(pause)
                waited += pause

    def _read(self, method: str, url: str, *, operation: str, **kwargs: Any) -> requests.Response:
        """Send an idempotent read: 429 honoured, connection errors and 502-504 retried with backoff."""
        delay = self.retry_delay
        for attempt in range(1, self.retry_limit + 1):
            try:
                return self._rate_limited(
                    lambda: self._send_once(method, url, operation=operation, **kwargs), operation
                )
            except (OceanConnectionError, OceanNodeError) as exc:
                transient = isinstance(exc, OceanConnectionError) or exc.status in _TRANSIENT_STATUSES
                if not transient or attempt >= self.retry_limit:
                    raise
                pause = min(delay, self.retry_max_delay) + random.uniform(0, self.retry_delay)  # noqa: S311
                log.warning(
                    "%s failed (attempt %s of %s), retrying in %.1f s: %s",
                    operation,
                    attempt,
                    self.retry_limit,
                    pause,
                    exc,
                )
                self._sleep(pause)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _json(response: requests.Response, operation: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise OceanNodeError(
                "the answer is not JSON", status=response.status_code, body=response.text, operation=operation
            ) from None

    # -- discovery -----------------------------------------------------------------------------------
    def root(self, *, refresh: bool = False) -> dict[str, Any]:
        """``GET /``: nodeId, providerAddress, chainIds, serviceEndpoints, software (cached).

        :param refresh: ignore the cached answer.
        """
        if self._root is None or refresh:
            operation = "Ocean Node discovery (GET /)"
            response = self._read("GET", self.base_url + "/", operation=operation)
            body = self._json(response, operation)
            if not isinstance(body, dict):
                raise OceanNodeError(
                    "GET / did not return an object", status=response.status_code, operation=operation
                )
            self._root = body
        return self._root

    @property
    def backend(self) -> str | None:
        """``ocean_node``, ``provider_v4`` or ``None``, from ``GET /``."""
        return detect_backend(self.root())

    @property
    def node_address(self) -> str | None:
        """The node's ``providerAddress`` (escrow payee, order consumer, fee signer)."""
        value = self.root().get("providerAddress")
        return str(value) if value else None

    @property
    def chain_ids(self) -> list[int]:
        """Chain ids the node serves (announced as strings)."""
        out = []
        for value in self.root().get("chainIds") or []:
            try:
                out.append(int(value))
            except (TypeError, ValueError):
                continue
        return out

    def endpoint(self, name: str) -> tuple[str, str]:
        """``(method, absolute URL)`` of a named service endpoint (announced, else the documented default).

        :param name: the ``serviceEndpoints`` key, e.g. ``freeCompute``.
        """
        endpoints = self.root().get("serviceEndpoints") or {}
        entry = endpoints.get(name) if isinstance(endpoints, dict) else None
        if isinstance(entry, list | tuple) and len(entry) == 2:
            method, path = str(entry[0]).upper(), str(entry[1])
        elif name in DEFAULT_ENDPOINTS:
            method, path = DEFAULT_ENDPOINTS[name]
        else:
            raise OceanNodeError(f"the node does not announce the endpoint {name!r}")
        if path.startswith(("http://", "https://")):
            return method, path
        return method, self.base_url + "/" + path.lstrip("/")

    # -- environments --------------------------------------------------------------------------------
    def environments_raw(self, chain_id: int | None = None) -> list[dict[str, Any]]:
        """``GET computeEnvironments``: the flat list of environments as announced.

        :param chain_id: optional ``chainId`` filter.
        """
        operation = "list compute environments"
        method, url = self.endpoint("computeEnvironments")
        params = {"chainId": str(chain_id)} if chain_id is not None else None
        response = self._read(method, url, params=params, operation=operation)
        body = self._json(response, operation)
        if not isinstance(body, list):
            raise OceanNodeError(
                "expected a list of environments",
                status=response.status_code,
                body=response.text,
                operation=operation,
            )
        return [env for env in body if isinstance(env, dict)]

    def environments(self, chain_id: int) -> list[ComputeEnvironment]:
        """The environments usable on ``chain_id`` as :class:`ComputeEnvironment` (``raw`` keeps the rest).

        :param chain_id: the chain.
        """
        return [environment_from_node(env, chain_id) for env in self.environments_raw(chain_id)]

    def get_environment(self, chain_id: int, env_id: str) -> ComputeEnvironment:
        """One environment by id; :class:`OceanValidationError` listing the known ids otherwise.

        :param chain_id: the chain.
        :param env_id: the environment id (``<engineHash>-<sha256>``).
        """
        envs = self.environments(chain_id)
        for env in envs:
            if env.id == env_id:
                return env
        known = ", ".join(e.id for e in envs) or "none"
        raise OceanValidationError(
            f"Compute environment {env_id!r} does not exist at {self.base_url} (available: {known})"
        )

    # -- nonces and signing --------------------------------------------------------------------------
    def get_nonce(self, address: str) -> int:
        """``GET nonce``: the last nonce the node stored for this exact address string (0 initially).

        :param address: the address string exactly as it will be sent.
        """
        operation = "read nonce"
        method, url = self.endpoint("nonce")
        response = self._read(method, url, params={"userAddress": address}, operation=operation)
        body = self._json(response, operation)
        if not isinstance(body, dict) or "nonce" not in body:
            raise OceanNodeError(
                "expected {'nonce': ...}",
                status=response.status_code,
                body=response.text,
                operation=operation,
            )
        try:
            return int(float(str(body["nonce"]))) if body["nonce"] not in (None, "") else 0
        except ValueError:
            raise OceanNodeError(f"non-numeric nonce {body['nonce']!r}", operation=operation) from None

    def _signed(
        self,
        signer: Signer,
        command: str,
        endpoint: tuple[str, str],
        payload: dict[str, Any],
        *,
        operation: str,
        in_query: bool = False,
        address_field: str = "consumerAddress",
        timeout: float | None = None,
        stream: bool = False,
        retry_nonce: bool = False,
        allow_token: bool = True,
    ) -> requests.Response:
        """Sign ``payload`` for ``command`` with a fresh nonce (or use the auth token) and send it.

        The wallet lock is held until the answer's headers arrived, so nonces of one process reach the node
        in order. A 429 is waited out and the command re-signed with a new nonce; a refused nonce is retried
        once with a fresh one when ``retry_nonce``.
        """
        method, url = endpoint
        address = signer.address
        nonce_retries = 1 if retry_nonce else 0

        def attempt() -> requests.Response:
            body = dict(payload)
            body[address_field] = address
            headers = None
            if allow_token and self.auth_token:
                headers = {"Authorization": self.auth_token}
                return self._send_once(
                    method,
                    url,
                    operation=operation,
                    timeout=timeout,
                    stream=stream,
                    headers=headers,
                    **({"params": body} if in_query else {"json_body": body}),
                )
            # Always read the stored nonce: the node refuses a low one on some commands with an
            # indistinct 500 (stop), so a refusal cannot be recognised and re-signed there.
            fetch = lambda: self.get_nonce(address)  # noqa: E731
            with self.nonces.reserve(self.base_url, address, fetch, refresh=True) as nonce:
                body["nonce"] = str(int(nonce))
                body["signature"] = signer.sign(node_message(address, nonce, command))
                return self._send_once(
                    method,
                    url,
                    operation=operation,
                    timeout=timeout,
                    stream=stream,
                    **({"params": body} if in_query else {"json_body": body}),
                )

        while True:
            try:
                return self._rate_limited(attempt, operation)
            except OceanNodeError as exc:
                if exc.is_nonce_error and nonce_retries > 0:
                    nonce_retries -= 1
                    log.warning("%s: the node refused the nonce; re-signing once with a fresh one", operation)
                    continue
                raise

    # -- auth tokens ---------------------------------------------------------------------------------
    def create_auth_token(self, signer: Signer, *, valid_until: int | None = None) -> str:
        """``POST auth/token`` (signed ``createAuthToken``): a token to send as the raw ``Authorization``.

        :param signer: the wallet the token is for.
        :param valid_until: optional expiry (unix ms, as the node expects).
        """
        payload: dict[str, Any] = {}
        if valid_until is not None:
            payload["validUntil"] = int(valid_until)
        response = self._signed(
            signer,
            CMD_CREATE_TOKEN,
            self.endpoint("generateAuthToken"),
            payload,
            operation="create auth token",
            address_field="address",
            allow_token=False,
        )
        body = self._json(response, "create auth token")
        if not isinstance(body, dict) or not body.get("token"):
            raise OceanNodeError(
                "expected {'token': ...}", status=response.status_code, operation="create auth token"
            )
        return str(body["token"])

    def invalidate_auth_token(self, signer: Signer, token: str) -> None:
        """``POST auth/token/invalidate`` (signed ``invalidateAuthToken``).

        :param signer: the token owner.
        :param token: the token to revoke.
        """
        self._signed(
            signer,
            CMD_INVALIDATE_TOKEN,
            self.endpoint("invalidateAuthToken"),
            {"token": token},
            operation="invalidate auth token",
            address_field="address",
            allow_token=False,
        )

    # -- compute -------------------------------------------------------------------------------------
    def initialize_compute(
        self,
        *,
        datasets: list[dict[str, Any]],
        algorithm: dict[str, Any],
        environment: str,
        consumer_address: str,
        chain_id: int,
        token: str,
        max_job_duration: int | None = None,
        resources: list[dict[str, Any]] | None = None,
        queue_max_wait_time: int | None = None,
    ) -> dict[str, Any]:
        """``POST initializeCompute`` (unsigned): the paid quote and the order state of DID inputs.

        :param datasets: dataset objects (``documentId``/``serviceId``/``transferTxId`` or ``fileObject``).
        :param algorithm: the algorithm object.
        :param environment: environment id.
        :param consumer_address: the payer (the wallet that will sign the start).
        :param chain_id: chain of the escrow payment.
        :param token: the fee token.
        :param max_job_duration: seconds.
        :param resources: ``[{"id", "amount"}]``.
        :param queue_max_wait_time: seconds the job may wait in the queue.
        :return: ``{"algorithm", "datasets", "payment": {escrowAddress, payee, chainId, minLockSeconds,
            token, amount}}``.
        """
        operation = "initializeCompute"
        method, url = self.endpoint("initializeCompute")
        payment: dict[str, Any] = {"chainId": int(chain_id), "token": token}
        if resources:
            payment["resources"] = resources
        body: dict[str, Any] = {
            "datasets": datasets,
            "algorithm": algorithm,
            "environment": environment,
            "consumerAddress": consumer_address,
            "payment": payment,
        }
        if max_job_duration is not None:
            body["maxJobDuration"] = int(max_job_duration)
        if queue_max_wait_time is not None:
            body["queueMaxWaitTime"] = int(queue_max_wait_time)
        response = self._rate_limited(
            lambda: self._send_once(
                method, url, json_body=body, operation=operation, timeout=self.long_timeout
            ),
            operation,
        )
        answer = self._json(response, operation)
        if not isinstance(answer, dict) or not isinstance(answer.get("payment"), dict):
            raise OceanNodeError(
                "expected a quote with a payment object",
                status=response.status_code,
                body=response.text,
                operation=operation,
            )
        return answer

    def _start(
        self,
        signer: Signer,
        *,
        free: bool,
        environment: str,
        algorithm: dict[str, Any],
        datasets: list[dict[str, Any]],
        max_job_duration: int | None,
        payment: dict[str, Any] | None,
        resources: list[dict[str, Any]] | None,
        metadata: dict[str, Any] | None,
        additional_viewers: list[str] | None,
        queue_max_wait_time: int | None,
        output: Any,
    ) -> dict[str, Any]:
        name = "freeCompute" if free else "computeStart"
        operation = "start free compute" if free else "start compute"
        body: dict[str, Any] = {"environment": environment, "algorithm": algorithm, "datasets": datasets}
        if max_job_duration is not None:
            body["maxJobDuration"] = int(max_job_duration)
        if not free:
            if not payment or not payment.get("chainId") or not payment.get("token"):
                raise OceanValidationError("A paid Ocean Node job needs payment={'chainId', 'token'}")
            body["payment"] = {"chainId": int(payment["chainId"]), "token": payment["token"]}
        if resources:
            body["resources"] = resources
        if metadata is not None:
            body["metadata"] = metadata
        if additional_viewers:
            body["additionalViewers"] = list(additional_viewers)
        if queue_max_wait_time is not None:
            body["queueMaxWaitTime"] = int(queue_max_wait_time)
        if output is not None:
            body["output"] = output
        response = self._signed(
            signer,
            CMD_FREE_START if free else CMD_START,
            self.endpoint(name),
            body,
            operation=operation,
            timeout=self.long_timeout,
            retry_nonce=True,
        )
        answer = self._json(response, operation)
        if isinstance(answer, dict) and answer.get("jobId"):
            answer = [answer]
        if not isinstance(answer, list) or not answer or not isinstance(answer[0], dict):
            raise OceanNodeError(
                "expected a list with the new job",
                status=response.status_code,
                body=response.text,
                operation=operation,
            )
        job = dict(answer[0])
        job["jobId"] = full_job_id(str(job.get("jobId") or ""), environment=environment)
        log.info("%s: job %s on %s (status %s)", operation, job["jobId"], environment, job.get("status"))
        return job

    def start_free_compute(
        self,
        signer: Signer,
        *,
        environment: str,
        algorithm: dict[str, Any],
        datasets: list[dict[str, Any]],
        max_job_duration: int | None = None,
        resources: list[dict[str, Any]] | None = None,
        metadata: dict[str, Any] | None = None,
        additional_viewers: list[str] | None = None,
        queue_max_wait_time: int | None = None,
        output: Any = None,
    ) -> dict[str, Any]:
        """``POST freeCompute`` (signed ``freeStartCompute``): start a free job; return the raw job.

        :param signer: the user's signer; its checksummed address is sent as ``consumerAddress``.
        :param environment: an environment with a ``free`` block.
        :param algorithm: ``{"meta": {"rawcode", "container"}}`` or a DID form.
        :param datasets: ``[{"fileObject": {...}}]`` or DID forms; ``[]`` allowed.
        :param max_job_duration: seconds (capped by the node at ``env.free.maxJobDuration``).
        :param resources: ``[{"id", "amount"}]``.
        :param metadata: free-form job metadata.
        :param additional_viewers: other addresses allowed to read the results.
        :param queue_max_wait_time: seconds to wait in the queue (0 = fail instead of queueing).
        :param output: an encrypted remote-storage spec.
        """
        return self._start(
            signer,
            free=True,
            environment=environment,
            algorithm=algorithm,
            datasets=datasets,
            max_job_duration=max_job_duration,
            payment=None,
            resources=resources,
            metadata=metadata,
            additional_viewers=additional_viewers,
            queue_max_wait_time=queue_max_wait_time,
            output=output,
        )

    def start_compute(
        self,
        signer: Signer,
        *,
        environment: str,
        algorithm: dict[str, Any],
        datasets: list[dict[str, Any]],
        max_job_duration: int,
        payment: dict[str, Any],
        resources: list[dict[str, Any]] | None = None,
        metadata: dict[str, Any] | None = None,
        additional_viewers: list[str] | None = None,
        queue_max_wait_time: int | None = None,
        output: Any = None,
    ) -> dict[str, Any]:
        """``POST compute`` (signed ``startCompute``): start a paid job (escrow funded and authorized first).

        :param signer: the payer's signer.
        :param environment: the environment id.
        :param algorithm: the algorithm object.
        :param datasets: dataset objects (DID inputs with ``transferTxId`` of an order to the node).
        :param max_job_duration: seconds (> 0).
        :param payment: ``{"chainId", "token"}``.
        :param resources: ``[{"id", "amount"}]``.
        :param metadata: free-form job metadata.
        :param additional_viewers: other addresses allowed to read the results.
        :param queue_max_wait_time: seconds to wait in the queue.
        :param output: an encrypted remote-storage spec.
        """
        if int(max_job_duration) <= 0:
            raise OceanValidationError("maxJobDuration must be a positive number of seconds")
        return self._start(
            signer,
            free=False,
            environment=environment,
            algorithm=algorithm,
            datasets=datasets,
            max_job_duration=max_job_duration,
            payment=payment,
            resources=resources,
            metadata=metadata,
            additional_viewers=additional_viewers,
            queue_max_wait_time=queue_max_wait_time,
            output=output,
        )

    def get_status(
        self,
        *,
        consumer_address: str | None = None,
        job_id: str | None = None,
        agreement_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """``GET compute`` (unsigned): raw status entries; each ``jobId`` is restored to its full form.

        :param consumer_address: the owner string exactly as sent at start.
        :param job_id: the FULL job id (a bare hash would query every engine without a job filter).
        :param agreement_id: filter by agreement id.
        """
        if not (consumer_address or job_id or agreement_id):
            raise OceanValidationError("Give at least one of consumer_address, job_id or agreement_id")
        if job_id and "-" not in job_id:
            raise OceanValidationError(
                f"{job_id!r} is not a full Ocean Node job id (<engineHash>-<hash>): "
                "keep the id the start returned"
            )
        operation = f"job status {job_id}" if job_id else "list jobs"
        method, url = self.endpoint("computeStatus")
        params = {
            k: v
            for k, v in (
                ("consumerAddress", consumer_address),
                ("jobId", job_id),
                ("agreementId", agreement_id),
            )
            if v
        }
        response = self._read(method, url, params=params, operation=operation)
        body = self._json(response, operation)
        if isinstance(body, dict) and body.get("jobId"):
            body = [body]
        if not isinstance(body, list):
            raise OceanNodeError(
                "expected a list of status objects",
                status=response.status_code,
                body=response.text,
                operation=operation,
            )
        out = []
        for item in body:
            if not isinstance(item, dict) or not item.get("jobId"):
                continue
            entry = dict(item)
            entry["jobId"] = full_job_id(
                str(item["jobId"]), environment=item.get("environment"), known=job_id
            )
            out.append(entry)
        return out

    def job_status(
        self, consumer_address: str, job_id: str, *, previous: JobStatus | None = None
    ) -> JobStatus:
        """The mapped status of one job (see :func:`.node_payloads.job_status_from_node`).

        :param consumer_address: the owner string exactly as sent at start.
        :param job_id: the full job id.
        :param previous: the status seen at the previous poll.
        :raises OceanJobNotFoundError: the node knows no such job for this owner.
        """
        bare = split_job_id(job_id)[1]
        for entry in self.get_status(consumer_address=consumer_address, job_id=job_id):
            if split_job_id(entry["jobId"])[1] == bare:
                return job_status_from_node(entry, job_id=job_id, previous=previous)
        raise OceanJobNotFoundError(
            f"No job {job_id} for owner {consumer_address} at {self.base_url}", job_id=job_id
        )

    def list_jobs(self, consumer_address: str) -> list[JobStatus]:
        """Every job of the owner, mapped (full ids restored from each job's environment).

        :param consumer_address: the owner string exactly as sent at start.
        """
        return [job_status_from_node(entry) for entry in self.get_status(consumer_address=consumer_address)]

    def stop_job(
        self, signer: Signer, job_id: str, *, agreement_id: str | None = None
    ) -> list[dict[str, Any]]:
        """``PUT compute`` with the parameters in the **query string** (signed ``stopCompute``).

        Any validation or auth failure comes back as 500 ``Internal Server Error``.

        :param signer: the job owner's signer.
        :param job_id: the full job id.
        :param agreement_id: optional agreement id.
        """
        payload: dict[str, Any] = {"jobId": job_id}
        if agreement_id:
            payload["agreementId"] = agreement_id
        response = self._signed(
            signer,
            CMD_STOP,
            self.endpoint("computeStop"),
            payload,
            operation=f"stop job {job_id}",
            in_query=True,
        )
        try:
            body = response.json()
        except ValueError:
            return []
        if isinstance(body, dict) and body.get("jobId"):
            body = [body]
        if not isinstance(body, list):
            return []
        return [
            {
                **item,
                "jobId": full_job_id(str(item["jobId"]), environment=item.get("environment"), known=job_id),
            }
            for item in body
            if isinstance(item, dict) and item.get("jobId")
        ]

    def list_results(self, consumer_address: str, job_id: str) -> list[ResultFile]:
        """The job's result files with the node's explicit indexes.

        :param consumer_address: the owner string exactly as sent at start.
        :param job_id: the full job id.
        """
        bare = split_job_id(job_id)[1]
        for entry in self.get_status(consumer_address=consumer_address, job_id=job_id):
            if split_job_id(entry["jobId"])[1] == bare:
                return node_results(entry.get("results"))
        raise OceanJobNotFoundError(
            f"No job {job_id} for owner {consumer_address} at {self.base_url}", job_id=job_id
        )

    def download_result(
        self,
        signer: Signer,
        job_id: str,
        index: int,
        destination: str | os.PathLike[str] | IO[bytes],
        *,
        chunk_size: int = CHUNK_SIZE,
        filename: str | None = None,
    ) -> DownloadedResult:
        """``GET computeResult`` (signed ``getComputeResult``): stream one result in constant memory.

        An unknown index answers 200 with an empty body (the node's behaviour), so 0 bytes may be written.

        :param signer: the job owner's signer (its address string must equal the one used at start).
        :param job_id: the full job id.
        :param index: the result's ``index`` (look it up by ``type``, not by position).
        :param destination: a writable binary file object, a file path, or an existing directory.
        :param chunk_size: bytes per read.
        :param filename: the file name to use in a directory (the node sends no ``Content-Disposition``).
        """
        if int(index) < 0:
            raise OceanValidationError(f"A result index cannot be negative (got {index})")
        operation = f"download result {index} of job {job_id}"
        started = time.monotonic()
        response = self._signed(
            signer,
            CMD_RESULT,
            self.endpoint("computeResult"),
            {"jobId": job_id, "index": str(int(index))},
            operation=operation,
            in_query=True,
            stream=True,
        )
        name = _content_disposition_filename(response.headers.get("Content-Disposition")) or filename
        content_type = response.headers.get("Content-Type")
        digest = hashlib.sha256()
        written = 0
        target: Path | None = None
        tmp_name: str | None = None
        try:
            if hasattr(destination, "write"):
                written = self._copy(response, destination, digest, chunk_size, operation)  # type: ignore[arg-type]
            else:
                target = Path(destination)  # type: ignore[arg-type]
                if target.is_dir():
                    target = target / _safe_filename(name, f"{split_job_id(job_id)[1]}-{index}")
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp_name = tempfile.mkstemp(prefix=".ocean-", suffix=".part", dir=target.parent)
                with os.fdopen(fd, "wb") as handle:
                    written = self._copy(response, handle, digest, chunk_size, operation)
                os.replace(tmp_name, target)
                tmp_name = None
        finally:
            response.close()
            if tmp_name is not None:
                try:
                    os.unlink(tmp_name)
                except OSError:
                    pass
        log.info(
            "Downloaded result %s of job %s (%s, %s bytes) in %.1f s",
            index,
            job_id,
            name,
            written,
            time.monotonic() - started,
        )
        return DownloadedResult(
            job_id=job_id,
            index=int(index),
            bytes_written=written,
            sha256=digest.hexdigest(),
            filename=name,
            content_type=content_type,
            path=str(target) if target is not None else None,
        )

    @staticmethod
    def _copy(
        response: requests.Response, handle: IO[bytes], digest: Any, chunk_size: int, operation: str
    ) -> int:
        written = 0
        try:
            for chunk in response.iter_content(chunk_size=chunk_size):
                if not chunk:
                    continue
                handle.write(chunk)
                digest.update(chunk)
                written += len(chunk)
        except requests.RequestException as exc:
            raise OceanConnectionError(
                f"{operation}: the stream broke after {written} bytes ({type(exc).__name__})"
            ) from None
        return written

    def stream_logs(self, signer: Signer, job_id: str, *, timeout: float | None = None) -> Iterator[str]:
        """``GET computeStreamableLogs`` (signed): yield the running container's log lines as they come.

        Ends quietly when the job is not running (404 ``Job not found or not running``) or the stream closes.

        :param signer: the job owner's signer.
        :param job_id: the full job id.
        :param timeout: read timeout between two chunks (default: the client's timeout).
        """
        operation = f"stream logs of job {job_id}"
        try:
            response = self._signed(
                signer,
                CMD_STREAM_LOGS,
                self.endpoint("computeStreamableLogs"),
                {"jobId": job_id},
                operation=operation,
                in_query=True,
                stream=True,
                timeout=timeout,
            )
        except OceanNodeError as exc:
            if exc.status == 404:
                return
            raise
        try:
            pending = b""
            for chunk in response.iter_content(chunk_size=None):  # as the bytes arrive
                if not chunk:
                    continue
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", errors="replace").rstrip("\r")
            if pending:
                yield pending.decode("utf-8", errors="replace")
        except requests.RequestException as exc:
            log.info("%s: the stream ended (%s)", operation, type(exc).__name__)
        finally:
            response.close()
