"""Wire client for the Ocean Provider v4 compute-to-data HTTP API (see provider-v4-api.md).

Only idempotent reads (``GET /``, environments, DDO, nonce, status) are retried, with exponential
backoff and jitter, on connection errors, timeouts, 429 and 5xx. Start, stop, delete and result
downloads consume a nonce and may have side effects: they are sent once (start is re-signed and sent a
second time only when the Provider refused the nonce itself, which happens before anything runs).
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import logging
import os
import re
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import requests

from airflow_provider_ocean import __version__
from airflow_provider_ocean.exceptions import (
    OceanConnectionError,
    OceanJobNotFoundError,
    OceanProviderError,
    OceanValidationError,
    redact,
)
from airflow_provider_ocean.models import (
    ComputeEnvironment,
    DownloadedResult,
    JobStatus,
    ResultFile,
)
from airflow_provider_ocean.retry import read_retrying
from airflow_provider_ocean.signing import NONCES, NonceAllocator, job_message, result_message, start_message
from airflow_provider_ocean.wire.direct_io import DIRECT_IO_MIN_BYTES, copy_body_direct, open_direct

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_ocean.signing import Signer

log = logging.getLogger(__name__)


class _RedactSignatures(logging.Filter):
    """Remove signatures from urllib3's DEBUG lines: ``GET computeResult`` carries one in its query string,
    and urllib3 logs each request line in full."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is urllib3's problem, not ours
            return True
        cleaned = redact(message, limit=len(message) + 1)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_RedactSignatures())

USER_AGENT = f"airflow-provider-ocean/{__version__}"
DEFAULT_TIMEOUT = 30.0
#: initializeCompute and start wait up to 120 s on an unknown order tx before answering.
MIN_LONG_TIMEOUT = 180.0
CONNECT_TIMEOUT = 10.0
CHUNK_SIZE = 4 * 1024 * 1024
_MAX_ERROR_BODY = 64 * 1024

DEFAULT_ENDPOINTS: dict[str, tuple[str, str]] = {
    "nonce": ("GET", "/api/services/nonce"),
    "computeEnvironments": ("GET", "/api/services/computeEnvironments"),
    "initializeCompute": ("POST", "/api/services/initializeCompute"),
    "computeStart": ("POST", "/api/services/compute"),
    "computeStatus": ("GET", "/api/services/compute"),
    "computeStop": ("PUT", "/api/services/compute"),
    "computeDelete": ("DELETE", "/api/services/compute"),
    "computeResult": ("GET", "/api/services/computeResult"),
}
_CODE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_TAG_RE = re.compile(r"<[^>]+>")


def _first_message(value: Any) -> str:
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return str(value)


def _code_or_message(value: str) -> tuple[str | None, str]:
    """Provider codes are identifiers (``order_invalid``); anything else is a sentence."""
    return (value, value) if _CODE_RE.match(value) else (None, value)


def parse_error(status: int, text: str | bytes | None, *, operation: str | None = None) -> OceanProviderError:
    """Turn an error answer into an :class:`OceanProviderError`; understands the three Provider shapes.

    - validation: ``{"errors": {field: [msg] | msg}, "message": "Validation error", "success": false}``
    - handled: ``{"error": "text"}`` or ``{"error": {field: code}}``
    - uncaught: ``{"error": "text", "context": ...}`` (the context, which may hold the signed request,
      is dropped)

    Anything else (HTML, empty, not JSON despite the content type) is kept as opaque text.

    :param status: HTTP status code.
    :param text: the response body.
    :param operation: what the client was doing, for the message.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = text or ""
    try:
        body = json.loads(text) if text.strip() else None
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("errors"), dict) and body["errors"]:
        errors = {str(k): _first_message(v) for k, v in body["errors"].items()}
        field, value = next(iter(errors.items()))
        code, message = _code_or_message(value)
        return OceanProviderError(
            message, status=status, field=field, code=code, body=text, errors=errors, operation=operation
        )
    if isinstance(body, dict) and "error" in body:
        error = body["error"]
        if isinstance(error, dict) and error:
            errors = {str(k): _first_message(v) for k, v in error.items()}
            field, value = next(iter(errors.items()))
            code, message = _code_or_message(value)
            return OceanProviderError(
                message, status=status, field=field, code=code, body=text, errors=errors, operation=operation
            )
        message = _first_message(error) or "unknown error"
        code, message = _code_or_message(message)
        return OceanProviderError(message, status=status, code=code, body=text, operation=operation)
    if isinstance(body, str) and body:
        return OceanProviderError(body, status=status, body=text, operation=operation)
    stripped = " ".join(_TAG_RE.sub(" ", text).split())
    message = stripped[:300] if stripped else "empty response body"
    return OceanProviderError(message, status=status, body=text, operation=operation)


def _request_sent(exc: requests.RequestException) -> bool | None:
    """``False`` when a transport error surely happened before the request reached the server (connect
    timeout, connection refused, DNS); ``None`` when it may have been received (read timeout, reset)."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.ReadTimeout):
        text = repr(exc)
        if any(
            m in text
            for m in ("NewConnectionError", "Failed to establish a new connection", "NameResolution")
        ):
            return False
    return None


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, OceanConnectionError):
        return True
    return isinstance(exc, OceanProviderError) and exc.retryable


def content_disposition_filename(header: str | None) -> str | None:
    """Extract the file name from a ``Content-Disposition`` header (``attachment;filename=out.txt``).

    :param header: the header value.
    """
    if not header:
        return None
    match = re.search(r"filename\*\s*=\s*[^']*'[^']*'([^;]+)", header, flags=re.IGNORECASE)
    if match:
        return unquote(match.group(1).strip().strip('"'))
    match = re.search(r"filename\s*=\s*(\"[^\"]*\"|[^;]+)", header, flags=re.IGNORECASE)
    if match:
        return match.group(1).strip().strip('"') or None
    return None


def _safe_filename(name: str | None, fallback: str) -> str:
    base = os.path.basename((name or "").replace("\\", "/")).strip()
    return base if base and base not in (".", "..") else fallback


class ProviderV4Client:
    """Talks to one Ocean Provider v4 over a ``requests.Session``.

    :param base_url: the Provider's base URL (``https://provider.example.com``).
    :param aquarius_url: base URL of the Aquarius serving DDOs; defaults to ``base_url``.
    :param timeout: read timeout in seconds for ordinary requests.
    :param long_timeout: read timeout for initializeCompute and start (at least 180 s by default).
    :param verify: verify TLS certificates.
    :param retry_limit: attempts for idempotent reads (1 = no retry).
    :param retry_delay: initial backoff in seconds (also the jitter range).
    :param retry_max_delay: upper bound of one backoff.
    :param session: a session to use (a new one by default).
    :param nonces: the nonce allocator (the process-wide one by default).
    """

    def __init__(
        self,
        base_url: str,
        *,
        aquarius_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        long_timeout: float | None = None,
        verify: bool = True,
        retry_limit: int = 3,
        retry_delay: float = 1.0,
        retry_max_delay: float = 30.0,
        session: requests.Session | None = None,
        nonces: NonceAllocator | None = None,
    ) -> None:
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise OceanValidationError(
                f"The Provider URL must start with http:// or https://, got {base_url!r}"
            )
        self.base_url = base_url.rstrip("/")
        self.aquarius_url = (aquarius_url or base_url).rstrip("/")
        self.timeout = float(timeout)
        self.long_timeout = float(long_timeout) if long_timeout else max(MIN_LONG_TIMEOUT, self.timeout)
        self.verify = verify
        self.retry_limit = max(1, int(retry_limit))
        self.retry_delay = max(0.0, float(retry_delay))
        self.retry_max_delay = retry_max_delay
        self.nonces = nonces or NONCES
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers.setdefault("Accept", "application/json")
        self._root: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"ProviderV4Client({self.base_url!r})"

    # -- transport -----------------------------------------------------------------------------------
    def _send(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        timeout: float | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """Send one request; raise the right exception for transport failures and error answers."""
        read_timeout = timeout or self.timeout
        try:
            response = self.session.request(
                method,
                url,
                params=params,
                json=json_body,
                timeout=(min(CONNECT_TIMEOUT, read_timeout), read_timeout),
                verify=self.verify,
                stream=stream,
            )
        except requests.Timeout as exc:
            raise OceanConnectionError(
                f"{operation}: no answer from {url} within {read_timeout:.0f} s ({type(exc).__name__})",
                url=url,
                request_sent=_request_sent(exc),
            ) from None
        except requests.RequestException as exc:
            # str(exc) may contain the query string (signatures): only the type and a redacted reason.
            raise OceanConnectionError(
                f"{operation}: cannot reach {url} ({type(exc).__name__}: {redact(exc, 300)})",
                url=url,
                request_sent=_request_sent(exc),
            ) from None
        if response.status_code >= 400:
            try:
                if stream:
                    raw = b""
                    for chunk in response.iter_content(8192):
                        raw += chunk
                        if len(raw) >= _MAX_ERROR_BODY:
                            break
                else:
                    raw = response.content
            except requests.RequestException:
                raw = b""
            finally:
                response.close()
            raise parse_error(response.status_code, raw, operation=operation)
        return response

    def _read(self, method: str, url: str, *, operation: str, **kwargs: Any) -> requests.Response:
        """Send an idempotent read, retrying transient failures."""
        retrying = read_retrying(
            attempts=self.retry_limit,
            delay=self.retry_delay,
            max_delay=self.retry_max_delay,
            transient=_is_transient,
            what=operation,
            log=log,
        )
        return retrying(self._send, method, url, operation=operation, **kwargs)

    @staticmethod
    def _json(response: requests.Response, operation: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise OceanProviderError(
                "the answer is not JSON", status=response.status_code, body=response.text, operation=operation
            ) from None

    # -- discovery -----------------------------------------------------------------------------------
    def root(self, *, refresh: bool = False) -> dict[str, Any]:
        """``GET /``: software, version, chain ids, provider addresses, service endpoints (cached).

        :param refresh: ignore the cached answer.
        """
        if self._root is None or refresh:
            response = self._read("GET", self.base_url + "/", operation="Provider discovery (GET /)")
            body = self._json(response, "Provider discovery (GET /)")
            if not isinstance(body, dict) or not isinstance(body.get("serviceEndpoints"), dict):
                raise OceanProviderError(
                    "GET / did not return a Provider description with serviceEndpoints",
                    status=response.status_code,
                    body=response.text,
                    operation="Provider discovery (GET /)",
                )
            self._root = body
        return self._root

    @property
    def software(self) -> str | None:
        """The ``software`` member of ``GET /`` (``"Provider"`` for the Python Provider)."""
        return self.root().get("software")

    @property
    def version(self) -> str | None:
        """The Provider's version."""
        return self.root().get("version")

    @property
    def chain_ids(self) -> list[int]:
        """Chain ids the Provider serves."""
        out = []
        for value in self.root().get("chainIds") or []:
            try:
                out.append(int(value))
            except (TypeError, ValueError):
                continue
        return out

    def provider_address(self, chain_id: int) -> str | None:
        """The Provider's signing address on ``chain_id``, if it serves that chain.

        :param chain_id: the chain id.
        """
        addresses = self.root().get("providerAddresses") or {}
        if not isinstance(addresses, dict):
            return None
        return addresses.get(str(chain_id)) or addresses.get(chain_id)  # type: ignore[call-overload]

    def endpoint(self, name: str) -> tuple[str, str]:
        """Return ``(method, absolute URL)`` of a named service endpoint from ``GET /``.

        :param name: the ``serviceEndpoints`` key, e.g. ``computeStart``.
        """
        endpoints = self.root().get("serviceEndpoints") or {}
        entry = endpoints.get(name)
        if isinstance(entry, list | tuple) and len(entry) == 2:
            method, path = str(entry[0]).upper(), str(entry[1])
        elif name in DEFAULT_ENDPOINTS:
            method, path = DEFAULT_ENDPOINTS[name]
        else:
            raise OceanProviderError(f"the Provider does not announce the endpoint {name!r}")
        if path.startswith(("http://", "https://")):
            return method, path
        return method, self.base_url + "/" + path.lstrip("/")

    # -- environments and DDOs -----------------------------------------------------------------------
    def compute_environments(self) -> dict[int, list[ComputeEnvironment]]:
        """``GET computeEnvironments``: the environments per chain id (validated)."""
        operation = "list compute environments"
        method, url = self.endpoint("computeEnvironments")
        response = self._read(method, url, operation=operation)
        body = self._json(response, operation)
        if isinstance(body, dict) and "error" in body and not isinstance(body.get("error"), list):
            raise parse_error(response.status_code, response.text, operation=operation)
        if not isinstance(body, dict):
            raise OceanProviderError(
                "expected an object keyed by chain id",
                status=response.status_code,
                body=response.text,
                operation=operation,
            )
        out: dict[int, list[ComputeEnvironment]] = {}
        for key, envs in body.items():
            try:
                chain_id = int(key)
            except (TypeError, ValueError):
                raise OceanProviderError(
                    f"unexpected key {key!r} (expected chain ids)",
                    status=response.status_code,
                    body=response.text,
                    operation=operation,
                ) from None
            if not isinstance(envs, list):
                raise OceanProviderError(
                    f"environments of chain {chain_id} are not a list",
                    status=response.status_code,
                    body=response.text,
                    operation=operation,
                )
            out[chain_id] = [ComputeEnvironment.from_api(chain_id, env) for env in envs]
        return out

    def environments(self, chain_id: int) -> list[ComputeEnvironment]:
        """The environments of one chain (empty list if none).

        :param chain_id: the chain id.
        """
        return self.compute_environments().get(int(chain_id), [])

    def get_environment(self, chain_id: int, env_id: str) -> ComputeEnvironment:
        """Return one environment by id; :class:`OceanValidationError` listing the known ids otherwise.

        :param chain_id: the chain id.
        :param env_id: the environment id.
        """
        envs = self.environments(chain_id)
        for env in envs:
            if env.id == env_id:
                return env
        known = ", ".join(e.id for e in envs) or "none"
        raise OceanValidationError(
            f"Compute environment {env_id!r} does not exist on chain {chain_id} at {self.base_url} "
            f"(available: {known})"
        )

    def choose_free_environment(self, chain_id: int) -> ComputeEnvironment:
        """Return the first free environment (``priceMin == 0``) of the chain.

        :param chain_id: the chain id.
        """
        envs = self.environments(chain_id)
        for env in envs:
            if env.is_free:
                return env
        if not envs:
            raise OceanValidationError(
                f"The Provider at {self.base_url} has no compute environment on chain {chain_id}"
            )
        listed = ", ".join(f"{e.id} (priceMin {e.price_min:g})" for e in envs)
        raise OceanValidationError(
            f"No free compute environment on chain {chain_id}: {listed}. Pass an environment id explicitly "
            "(and a max_fee) to use a paid one."
        )

    def get_ddo(self, did: str) -> dict[str, Any]:
        """Fetch a DDO from Aquarius: ``GET {aquarius}/api/aquarius/assets/ddo/{did}``.

        :param did: the asset DID.
        """
        operation = f"resolve DDO {did}"
        url = f"{self.aquarius_url}/api/aquarius/assets/ddo/{quote(did, safe=':')}"
        try:
            response = self._read("GET", url, operation=operation)
        except OceanProviderError as exc:
            if exc.status in (400, 404):
                raise OceanValidationError(
                    f"DID {did} was not found in Aquarius at {self.aquarius_url} (HTTP {exc.status})",
                    hint="check the DID, the chain and the connection's aquarius_url",
                ) from None
            raise
        body = self._json(response, operation)
        if not isinstance(body, dict) or not isinstance(body.get("services"), list):
            raise OceanValidationError(f"The DDO of {did} is malformed (no services list)")
        return body

    # -- nonces --------------------------------------------------------------------------------------
    def get_nonce(self, address: str) -> Any:
        """The Provider's stored nonce for the exact address string (a Decimal as text).

        :param address: the address string, exactly as it will be sent as ``consumerAddress``.
        """
        operation = "read nonce"
        method, url = self.endpoint("nonce")
        response = self._read(method, url, params={"userAddress": address}, operation=operation)
        body = self._json(response, operation)
        if not isinstance(body, dict) or "nonce" not in body:
            raise OceanProviderError(
                "expected {'nonce': ...}",
                status=response.status_code,
                body=response.text,
                operation=operation,
            )
        return body["nonce"]

    def _signed(
        self,
        signer: Signer,
        endpoint: tuple[str, str],
        build: Callable[[str], tuple[str, dict[str, Any]]],
        *,
        operation: str,
        in_query: bool = False,
        timeout: float | None = None,
        stream: bool = False,
        retry_nonce: bool = False,
    ) -> requests.Response:
        """Reserve a nonce under the wallet lock, sign, send once; optionally re-sign once on a refused nonce.

        The wallet lock is held until the answer's headers arrived, so that nonces of one process reach
        the Provider in order.

        :param signer: the signer.
        :param endpoint: ``(method, url)``.
        :param build: ``build(nonce)`` returns ``(message to sign, payload without signature)``.
        :param operation: what is being done, for messages.
        :param in_query: send the payload as query parameters instead of a JSON body.
        :param timeout: read timeout.
        :param stream: stream the answer.
        :param retry_nonce: re-sign with a fresh nonce once if the Provider refuses the nonce as too low.
        """
        method, url = endpoint
        address = signer.address
        attempts = 2 if retry_nonce else 1
        for attempt in range(1, attempts + 1):
            fetch = lambda: self.get_nonce(address)  # noqa: E731
            with self.nonces.reserve(self.base_url, address, fetch, refresh=attempt > 1) as nonce:
                message, payload = build(nonce)
                payload["signature"] = signer.sign(message)
                body = {"params": payload} if in_query else {"json_body": payload}
                try:
                    return self._send(
                        method, url, operation=operation, timeout=timeout, stream=stream, **body
                    )
                except OceanProviderError as exc:
                    if exc.is_nonce_error and attempt < attempts:
                        log.warning(
                            "%s: the Provider refused nonce %s as too low; re-signing once", operation, nonce
                        )
                        continue
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- compute -------------------------------------------------------------------------------------
    def initialize_compute(
        self,
        *,
        datasets: list[dict[str, Any]],
        algorithm: dict[str, Any],
        environment: str,
        valid_until: int,
        consumer_address: str,
    ) -> dict[str, Any]:
        """``POST initializeCompute``: quote the provider fees and the order state of every input.

        Not retried (the Provider may wait ~120 s per unknown tx); uses :attr:`long_timeout`.

        :param datasets: dataset request objects (``documentId``, ``serviceId``, ``transferTxId``...).
        :param algorithm: the algorithm object (``documentId``/``serviceId``/``transferTxId`` or ``meta``).
        :param environment: the environment id.
        :param valid_until: unix seconds the provider fee must cover.
        :param consumer_address: the environment's ``consumerAddress`` (the orders' consumer).
        """
        operation = "initializeCompute"
        method, url = self.endpoint("initializeCompute")
        body = {
            "datasets": datasets,
            "algorithm": algorithm,
            "compute": {"env": environment, "validUntil": int(valid_until)},
            "consumerAddress": consumer_address,
        }
        response = self._send(method, url, json_body=body, operation=operation, timeout=self.long_timeout)
        answer = self._json(response, operation)
        if not isinstance(answer, dict) or not isinstance(answer.get("datasets"), list):
            raise OceanProviderError(
                "expected {'datasets': [...]}",
                status=response.status_code,
                body=response.text,
                operation=operation,
            )
        if len(answer["datasets"]) != len(datasets):
            raise OceanProviderError(
                f"answered for {len(answer['datasets'])} datasets, asked for {len(datasets)}",
                status=response.status_code,
                body=response.text,
                operation=operation,
            )
        if algorithm.get("documentId") and not isinstance(answer.get("algorithm"), dict):
            raise OceanProviderError(
                "no algorithm entry for a DID algorithm",
                status=response.status_code,
                body=response.text,
                operation=operation,
            )
        return answer

    def start_compute(
        self,
        signer: Signer,
        *,
        datasets: list[dict[str, Any]],
        algorithm: dict[str, Any],
        environment: str,
    ) -> JobStatus:
        """``POST compute`` (signed): start a job. Sent once, with a JSON body and a long timeout.

        :param signer: the user's signer; its address is sent as ``consumerAddress``.
        :param datasets: dataset request objects; the first is ``dataset``, the rest ``additionalDatasets``.
        :param algorithm: the algorithm object (with ``algocustomdata``/``algouserdata`` if any).
        :param environment: the environment id.
        """
        if not datasets:
            raise OceanValidationError("A compute job needs at least one dataset")
        operation = "start compute"
        endpoint = self.endpoint("computeStart")
        consumer = signer.address
        did = datasets[0]["documentId"]

        def build(nonce: str) -> tuple[str, dict[str, Any]]:
            payload: dict[str, Any] = {
                "dataset": datasets[0],
                "algorithm": algorithm,
                "environment": environment,
                "consumerAddress": consumer,
                "nonce": nonce,
            }
            if len(datasets) > 1:
                payload["additionalDatasets"] = datasets[1:]
            return start_message(consumer, did, nonce), payload

        response = self._signed(
            signer, endpoint, build, operation=operation, timeout=self.long_timeout, retry_nonce=True
        )
        body = self._json(response, operation)
        if isinstance(body, dict) and body.get("jobId"):
            body = [body]
        if not isinstance(body, list) or not body:
            raise OceanProviderError(
                "expected a list with the new job's status",
                status=response.status_code,
                body=response.text,
                operation=operation,
            )
        return JobStatus.from_api(body[0])

    def get_status(self, consumer_address: str, job_id: str | None = None) -> list[JobStatus]:
        """``GET compute`` (unsigned): status objects of the owner's jobs, or of one job.

        An empty list is a valid answer (no such job for this exact owner string).

        :param consumer_address: the owner, exactly as sent at start.
        :param job_id: restrict to one job.
        """
        operation = f"job status {job_id}" if job_id else "list jobs"
        method, url = self.endpoint("computeStatus")
        params = {"consumerAddress": consumer_address}
        if job_id:
            params["jobId"] = job_id
        response = self._read(method, url, params=params, operation=operation)
        body = self._json(response, operation)
        if isinstance(body, dict) and body.get("jobId"):
            body = [body]
        if not isinstance(body, list):
            raise OceanProviderError(
                "expected a list of status objects",
                status=response.status_code,
                body=response.text,
                operation=operation,
            )
        return [JobStatus.from_api(item) for item in body]

    def stop_job(self, signer: Signer, job_id: str, *, document_id: str | None = None) -> list[JobStatus]:
        """``PUT compute`` (signed): request a stop. Returns the status list as it was before the stop.

        :param signer: the job owner's signer.
        :param job_id: the job id.
        :param document_id: optional DID (part of the signed message when given).
        """
        return self._job_command(signer, "computeStop", "stop job", job_id, document_id)

    def delete_job(self, signer: Signer, job_id: str, *, document_id: str | None = None) -> list[JobStatus]:
        """``DELETE compute`` (signed). The current operator-service treats it as a no-op.

        :param signer: the job owner's signer.
        :param job_id: the job id.
        :param document_id: optional DID (part of the signed message when given).
        """
        return self._job_command(signer, "computeDelete", "delete job", job_id, document_id)

    def _job_command(
        self, signer: Signer, name: str, operation: str, job_id: str, document_id: str | None
    ) -> list[JobStatus]:
        endpoint = self.endpoint(name)
        consumer = signer.address

        def build(nonce: str) -> tuple[str, dict[str, Any]]:
            payload: dict[str, Any] = {
                "consumerAddress": consumer,
                "jobId": job_id,
                "nonce": nonce,
            }
            if document_id:
                payload["documentId"] = document_id
            return job_message(consumer, job_id, document_id, nonce), payload

        # A refused nonce is refused before anything runs: re-signing once is safe.
        response = self._signed(signer, endpoint, build, operation=f"{operation} {job_id}", retry_nonce=True)
        try:
            body = response.json()
        except ValueError:
            return []
        if isinstance(body, dict) and body.get("jobId"):
            body = [body]
        if not isinstance(body, list):
            return []
        return [JobStatus.from_api(item) for item in body if isinstance(item, dict) and item.get("jobId")]

    def list_results(self, consumer_address: str, job_id: str) -> list[ResultFile]:
        """The job's result files (index = position), from its status object.

        :param consumer_address: the owner, exactly as sent at start.
        :param job_id: the job id.
        """
        jobs = [j for j in self.get_status(consumer_address, job_id) if j.job_id == job_id]
        if not jobs:
            raise OceanJobNotFoundError(
                f"No job {job_id} for owner {consumer_address} at {self.base_url}", job_id=job_id
            )
        return jobs[0].results

    def download_result(
        self,
        signer: Signer,
        job_id: str,
        index: int,
        destination: str | os.PathLike[str] | IO[bytes],
        *,
        chunk_size: int = CHUNK_SIZE,
    ) -> DownloadedResult:
        """``GET computeResult`` (signed): stream one result file in constant memory.

        :param signer: the job owner's signer.
        :param job_id: the job id.
        :param index: position of the file in the job's ``results`` list.
        :param destination: a writable binary file object, a file path, or an existing directory (the
            file name then comes from ``Content-Disposition``). Paths are written atomically.
        :param chunk_size: bytes per read.
        """
        if int(index) < 0:
            raise OceanValidationError(f"A result index cannot be negative (got {index})")
        operation = f"download result {index} of job {job_id}"
        endpoint = self.endpoint("computeResult")
        consumer = signer.address

        def build(nonce: str) -> tuple[str, dict[str, Any]]:
            payload: dict[str, Any] = {
                "jobId": job_id,
                "index": str(int(index)),
                "consumerAddress": consumer,
                "nonce": nonce,
            }
            return result_message(consumer, job_id, int(index), nonce), payload

        started = time.monotonic()
        response = self._signed(
            signer, endpoint, build, operation=operation, in_query=True, stream=True, retry_nonce=True
        )
        filename = content_disposition_filename(response.headers.get("Content-Disposition"))
        content_type = response.headers.get("Content-Type")
        digest = hashlib.sha256()
        written = 0
        target: Path | None = None
        tmp_name: str | None = None
        try:
            if hasattr(destination, "write"):
                handle: IO[bytes] = destination  # type: ignore[assignment]
                written = self._copy(response, handle, digest, chunk_size, operation)
            else:
                target = Path(destination)  # type: ignore[arg-type]
                if target.is_dir():
                    target = target / _safe_filename(filename, f"{job_id}-{index}")
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp_name = tempfile.mkstemp(prefix=".ocean-", suffix=".part", dir=target.parent)
                direct = self._direct_target(response, tmp_name)
                if direct is not None:  # a large result: straight to disk, past the page cache
                    os.close(fd)
                    body, fd = direct
                    try:
                        written = copy_body_direct(body, _declared_length(response), fd, digest, operation)
                    finally:
                        os.close(fd)
                else:
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
            filename,
            written,
            time.monotonic() - started,
        )
        return DownloadedResult(
            job_id=job_id,
            index=int(index),
            bytes_written=written,
            sha256=digest.hexdigest(),
            filename=filename,
            content_type=content_type,
            path=str(target) if target is not None else None,
        )

    @staticmethod
    def _direct_target(response: requests.Response, path: str) -> tuple[http.client.HTTPResponse, int] | None:
        """``(body, O_DIRECT file descriptor)`` when a result is large enough and the disk allows it."""
        expected = _declared_length(response)
        if expected is None or expected < DIRECT_IO_MIN_BYTES:
            return None
        body = _plain_body(response)
        if body is None:
            return None
        fd = open_direct(path)
        return None if fd is None else (body, fd)

    @staticmethod
    def _copy(
        response: requests.Response, handle: IO[bytes], digest: Any, chunk_size: int, operation: str
    ) -> int:
        body = _plain_body(response)
        if body is not None:
            return _copy_body(body, _declared_length(response), handle, digest, chunk_size, operation)
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


# -- streaming result bodies -------------------------------------------------------------------------
def _plain_body(response: requests.Response) -> http.client.HTTPResponse | None:
    """The ``http.client`` response under ``requests``/``urllib3``, when the body can be read from it
    directly: no content coding to undo and nothing consumed yet. ``None`` otherwise (then the body is
    read through ``iter_content``)."""
    coding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
    if coding not in ("", "identity"):
        return None
    raw = getattr(response, "raw", None)
    body = getattr(raw, "_fp", None)
    if not isinstance(body, http.client.HTTPResponse):
        return None
    try:
        if raw.tell() != 0:  # type: ignore[union-attr]
            return None
    except (AttributeError, OSError, ValueError):
        return None
    return body


def _declared_length(response: requests.Response) -> int | None:
    if "chunked" in (response.headers.get("Transfer-Encoding") or "").lower():
        return None
    try:
        length = int(response.headers.get("Content-Length") or "")
    except ValueError:
        return None
    return length if length >= 0 else None


def _copy_body(
    body: http.client.HTTPResponse,
    expected: int | None,
    handle: IO[bytes],
    digest: Any,
    chunk_size: int,
    operation: str,
) -> int:
    """Stream ``body`` to ``handle`` at socket speed in constant memory.

    Two buffers are filled in turn with ``readinto`` (no bytes object per chunk); each is written, and
    hashed in a helper thread while the next one is received and written (SHA-256 runs at about the
    speed of a local socket, so hashing inline would halve the throughput; ``hashlib``, ``readinto`` and
    ``write`` all release the GIL). File objects other than plain files and ``BytesIO`` get a copy of
    each chunk, since they might keep a reference to what they are given.
    """
    size = max(int(chunk_size), 64 * 1024)
    buffers = (bytearray(size), bytearray(size))
    reuse_ok = isinstance(handle, io.BufferedWriter | io.BufferedRandom | io.FileIO | io.BytesIO)
    written = 0
    turn = 0
    hasher: ThreadPoolExecutor | None = None
    pending: Future[None] | None = None
    try:
        while True:
            view = memoryview(buffers[turn])
            turn ^= 1
            try:
                count = body.readinto(view)
            except (OSError, http.client.HTTPException) as exc:
                raise OceanConnectionError(
                    f"{operation}: the stream broke after {written} bytes ({type(exc).__name__})"
                ) from None
            if not count:
                break
            chunk = view[:count]
            if pending is not None:
                pending.result()  # the other buffer is hashed: it can be refilled after this one
            if written == 0:
                digest.update(chunk)  # small files need no thread
            else:
                if hasher is None:
                    hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ocean-sha256")
                pending = hasher.submit(digest.update, chunk)
            handle.write(chunk if reuse_ok else bytes(chunk))
            written += count
        if pending is not None:
            pending.result()
    finally:
        if hasher is not None:
            hasher.shutdown(wait=True)
    if expected is not None and written != expected:
        raise OceanConnectionError(
            f"{operation}: the stream broke after {written} of {expected} bytes (connection closed)"
        )
    return written
