"""The one HTTP path to a Provider v4 or an Ocean Node.

:class:`WireClient` owns the ``requests`` session and everything both backends' routes share:

- :meth:`~WireClient._send` sends one request. A transport failure becomes :class:`OceanConnectionError`
  whose ``request_sent`` is ``False`` when the request surely never reached the server (connection refused,
  connect timeout, DNS) and ``None`` when it may have (read timeout, reset); an error answer becomes the
  backend's :class:`OceanProviderError` (:mod:`airflow_provider_ocean.wire.errors`: ``parse_error`` for
  the Provider, ``parse_node_error`` for the node, each with its hint table).
- Rate limits: a 429, or the node's 403 ``Too many active connections`` / ``Rate limit exceeded``, is
  waited out on every route (announced seconds, else :data:`DEFAULT_RATE_LIMIT_WAIT`; at most
  ``max_rate_limit_wait`` in all) and sent again (signed commands with a fresh nonce).
- :meth:`~WireClient._read`: idempotent reads (``GET /``, environments, nonce, status, DDO) go through the
  one retry policy (:func:`airflow_provider_ocean.retry.read_retrying`); everything else is sent once.
- :meth:`~WireClient._signed`: nonce reservation under the wallet lock, signature, send; re-signed (up to
  :data:`NONCE_RESIGNS` times) when the server refused the nonce itself, before running anything. A
  failure before the signed request left (discovery, nonce read, wallet lock) has ``request_sent=False``.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import requests

from airflow_provider_ocean import __version__
from airflow_provider_ocean.exceptions import (
    OceanConnectionError,
    OceanProviderError,
    OceanValidationError,
    redact,
)
from airflow_provider_ocean.retry import read_retrying
from airflow_provider_ocean.signing import NONCES, NonceAllocator
from airflow_provider_ocean.wire.download import CHUNK_SIZE, ListedSizes, checked_write_path, save_result
from airflow_provider_ocean.wire.errors import (
    is_rate_limit,
    parse_error,
    retry_after_header,
    retry_after_seconds,
)
from airflow_provider_ocean.wire.log_frames import is_log_result

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_provider_ocean.models import ComputeEnvironment, DownloadedResult
    from airflow_provider_ocean.signing import Signer
    from airflow_provider_ocean.wire.download import Destination

log = logging.getLogger(__name__)

USER_AGENT = f"airflow-provider-ocean/{__version__}"
DEFAULT_TIMEOUT = 30.0
#: initializeCompute and start may wait ~120 s on an unknown order tx before answering.
LONG_TIMEOUT = 180.0
CONNECT_TIMEOUT = 10.0
#: Seconds waited after a rate-limit answer that announces nothing.
DEFAULT_RATE_LIMIT_WAIT = 5.0
#: Re-signatures after the server refused the nonce itself (other hosts may move the stored nonce).
NONCE_RESIGNS = 3
_MAX_ERROR_BODY = 64 * 1024
#: The compute routes both backends have, by their ``serviceEndpoints`` names.
COMPUTE_ENDPOINTS: dict[str, tuple[str, str]] = {
    "nonce": ("GET", "/api/services/nonce"),
    "computeEnvironments": ("GET", "/api/services/computeEnvironments"),
    "initializeCompute": ("POST", "/api/services/initializeCompute"),
    "computeStart": ("POST", "/api/services/compute"),
    "computeStatus": ("GET", "/api/services/compute"),
    "computeStop": ("PUT", "/api/services/compute"),
    "computeResult": ("GET", "/api/services/computeResult"),
}
#: Transport errors raised before a connection existed: the request cannot have been received.
_NEVER_CONNECTED = ("NewConnectionError", "Failed to establish a new connection", "NameResolution")


class _RedactSignatures(logging.Filter):
    """Remove signatures from urllib3's DEBUG lines: signed ``GET``/``PUT`` routes carry one in their query
    string, and urllib3 logs each request line in full."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is urllib3's problem, not ours
            return True
        if (cleaned := redact(message, limit=len(message) + 1)) != message:
            record.msg, record.args = cleaned, ()
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_RedactSignatures())


# -- transport -----------------------------------------------------------------------------------------
def request_sent(exc: requests.RequestException) -> bool | None:
    """``False`` when a transport error surely happened before the request reached the server (connect
    timeout, connection refused, DNS); ``None`` when it may have been received (read timeout, reset).

    :param exc: the ``requests`` error.
    """
    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.ReadTimeout):
        text = repr(exc)
        if any(marker in text for marker in _NEVER_CONNECTED):
            return False
    return None


@contextmanager
def _not_sent() -> Iterator[None]:
    """A connection error in the block happened before the request it prepares was sent."""
    try:
        yield
    except OceanConnectionError as exc:
        exc.request_sent = False
        raise


def _placed(payload: dict[str, Any], in_query: bool) -> dict[str, Any]:
    return {"params": payload} if in_query else {"json_body": payload}


class WireClient:
    """One server (Provider v4 or Ocean Node) over a ``requests.Session``: the transport both backends use.

    :param base_url: the server's base URL (``https://provider.example.com``).
    :param timeout: read timeout in seconds for ordinary requests.
    :param long_timeout: read timeout for initializeCompute and start (at least 180 s by default).
    :param verify: verify TLS certificates.
    :param retry_limit: attempts for idempotent reads (1 = no retry).
    :param retry_delay: initial backoff in seconds (also the jitter range).
    :param retry_max_delay: upper bound of one backoff.
    :param max_rate_limit_wait: total seconds one call may spend waiting after rate-limit answers.
    :param session: a session to use (a new one by default).
    :param nonces: the nonce allocator (the process-wide one by default).
    :param sleep: the sleep function (tests).
    :param write_path: how results are written to a path, ``cache`` or ``direct`` (``wire/download.py``).
    """

    #: The server's name in messages.
    service: ClassVar[str] = "server"
    #: Named endpoints used when ``GET /`` does not announce them.
    default_endpoints: ClassVar[dict[str, tuple[str, str]]] = {}
    #: Statuses after which an idempotent read is tried again.
    transient_statuses: ClassVar[frozenset[int]] = frozenset({502, 503, 504})
    #: The error type of this backend (answers that are not what the route promises).
    error_type: ClassVar[type[OceanProviderError]] = OceanProviderError
    #: Read the stored nonce before every signed command, not only after a refusal.
    refresh_nonce: ClassVar[bool] = False
    #: Send nonces with this process's salt as a decimal fraction (signing.py; Provider v4 only).
    salted_nonces: ClassVar[bool] = False

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
        session: requests.Session | None = None,
        nonces: NonceAllocator | None = None,
        sleep: Callable[[float], None] | None = None,
        write_path: str = "cache",
    ) -> None:
        self.write_path = checked_write_path(write_path)
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise OceanValidationError(
                f"The {self.service} URL must start with http:// or https://, got {base_url!r}"
            )
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.long_timeout = float(long_timeout) if long_timeout else max(LONG_TIMEOUT, self.timeout)
        self.verify = verify
        self.retry_limit = max(1, int(retry_limit))
        self.retry_delay = max(0.0, float(retry_delay))
        self.retry_max_delay = float(retry_max_delay)
        self.max_rate_limit_wait = max(0.0, float(max_rate_limit_wait))
        self.nonces = nonces or self._process_nonces()
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers.setdefault("Accept", "application/json")
        self._sleep = sleep or time.sleep
        self._root: dict[str, Any] | None = None
        #: Result sizes the status answers listed, to check downloads against.
        self._listed = ListedSizes()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    @staticmethod
    def _process_nonces() -> NonceAllocator:
        """The process-wide allocator (each backend module names its own, so that tests can swap it)."""
        return NONCES

    # -- sending ---------------------------------------------------------------------------------------
    def _parse_error(self, status: int, body: bytes, operation: str) -> OceanProviderError:
        return parse_error(status, body, operation=operation)

    def _send(
        self,
        method: str,
        url: str,
        /,
        *,
        operation: str,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        timeout: float | None = None,
        stream: bool = False,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """Send one request; raise the right exception for transport failures and error answers."""
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
        except requests.RequestException as exc:
            if isinstance(exc, requests.Timeout):
                failure = f"no answer from {url} within {read_timeout:.0f} s ({type(exc).__name__})"
            else:  # str(exc) may contain the query string (signatures): the type and a redacted reason
                failure = f"cannot reach {url} ({type(exc).__name__}: {redact(exc, 300)})"
            raise OceanConnectionError(
                f"{operation}: {failure}", url=url, request_sent=request_sent(exc)
            ) from None
        if response.status_code >= 400:
            raise self._error_answer(response, operation)
        return response

    def _error_answer(self, response: requests.Response, operation: str) -> OceanProviderError:
        raw = b""
        try:
            for chunk in response.iter_content(8192):
                raw += chunk
                if len(raw) >= _MAX_ERROR_BODY:
                    break
        except requests.RequestException:
            pass
        finally:
            response.close()
        error = self._parse_error(response.status_code, raw, operation)
        if error.retry_after is None and is_rate_limit(error.status, error.detail):
            announced = retry_after_header(response.headers.get("Retry-After"))
            error.retry_after = retry_after_seconds(error.detail) if announced is None else announced
        return error

    def _rate_limited(self, attempt: Callable[[], requests.Response], operation: str) -> requests.Response:
        """Run ``attempt``; after a rate limiter's answer wait the announced seconds and run it again."""
        waited = 0.0
        while True:
            try:
                return attempt()
            except OceanProviderError as exc:
                if not is_rate_limit(exc.status, exc.detail):
                    raise
                pause = exc.retry_after if exc.retry_after is not None else DEFAULT_RATE_LIMIT_WAIT
                pause = max(pause, 0.5) + random.uniform(0, 0.5)  # noqa: S311 - jitter, not crypto
                if waited + pause > self.max_rate_limit_wait:
                    raise
                log.warning("%s: rate limited by the %s; waiting %.1f s", operation, self.service, pause)
                self._sleep(pause)
                waited += pause

    def _command(self, method: str, url: str, *, operation: str, **kwargs: Any) -> requests.Response:
        """Send a request that is not an idempotent read: once (rate limits waited out)."""
        return self._rate_limited(lambda: self._send(method, url, operation=operation, **kwargs), operation)

    def _unsigned(
        self,
        name: str,
        payload: dict[str, Any],
        *,
        operation: str,
        in_query: bool = False,
        timeout: float | None = None,
        stream: bool = False,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """Send a command to a named endpoint without a signature (an auth token in ``headers`` stands
        for it): once, rate limits waited out."""
        with _not_sent():
            method, url = self.endpoint(name)
        send = {"timeout": timeout, "stream": stream, "headers": headers, **_placed(payload, in_query)}
        return self._command(method, url, operation=operation, **send)

    def _is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, OceanConnectionError):
            return True
        return isinstance(exc, OceanProviderError) and exc.status in self.transient_statuses

    def _read(self, method: str, url: str, *, operation: str, **kwargs: Any) -> requests.Response:
        """Send an idempotent read under the one retry policy (rate limits waited out in each attempt)."""
        retrying = read_retrying(
            attempts=self.retry_limit,
            delay=self.retry_delay,
            max_delay=self.retry_max_delay,
            transient=self._is_transient,
            what=operation,
            log=log,
            sleep=self._sleep,
        )
        return retrying(self._command, method, url, operation=operation, **kwargs)

    def _json(self, response: requests.Response, operation: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise self.error_type(
                "the answer is not JSON", status=response.status_code, body=response.text, operation=operation
            ) from None

    def _unexpected(self, response: requests.Response, what: str, operation: str) -> OceanProviderError:
        """The error for a 2xx answer whose body is not what the route promises."""
        return self.error_type(what, status=response.status_code, body=response.text, operation=operation)

    # -- discovery -------------------------------------------------------------------------------------
    def _root_problem(self, body: Any) -> str | None:
        return None if isinstance(body, dict) else "GET / did not return an object"

    def root(self, *, refresh: bool = False) -> dict[str, Any]:
        """``GET /``: software, version, chain ids, addresses, service endpoints (cached).

        :param refresh: ignore the cached answer.
        """
        if self._root is not None and not refresh:
            return self._root
        operation = f"{self.service} discovery (GET /)"
        response = self._read("GET", self.base_url + "/", operation=operation)
        body = self._json(response, operation)
        problem = self._root_problem(body)
        if problem:
            raise self._unexpected(response, problem, operation)
        self._root = body
        return body

    @property
    def chain_ids(self) -> list[int]:
        """Chain ids the server serves (the node announces them as strings)."""
        out = []
        for value in self.root().get("chainIds") or []:
            try:
                out.append(int(value))
            except (TypeError, ValueError):
                continue
        return out

    def endpoint(self, name: str) -> tuple[str, str]:
        """``(method, absolute URL)`` of a named service endpoint (announced, else the documented default).

        :param name: the ``serviceEndpoints`` key, e.g. ``computeStart``.
        """
        endpoints = self.root().get("serviceEndpoints") or {}
        entry = endpoints.get(name) if isinstance(endpoints, dict) else None
        if isinstance(entry, list | tuple) and len(entry) == 2:
            method, path = str(entry[0]).upper(), str(entry[1])
        elif name in self.default_endpoints:
            method, path = self.default_endpoints[name]
        else:
            raise self.error_type(f"the {self.service} does not announce the endpoint {name!r}")
        if path.startswith(("http://", "https://")):
            return method, path
        return method, self.base_url + "/" + path.lstrip("/")

    def environments(self, chain_id: int) -> list[ComputeEnvironment]:
        """The environments usable on ``chain_id`` (empty list if none).

        :param chain_id: the chain id.
        """
        raise NotImplementedError

    def get_environment(self, chain_id: int, env_id: str) -> ComputeEnvironment:
        """One environment by id; :class:`OceanValidationError` listing the known ids otherwise.

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

    # -- jobs ------------------------------------------------------------------------------------------
    def _job_list(self, response: requests.Response, operation: str) -> list[Any]:
        """A status answer's list of job objects (one object alone is accepted as a list of one)."""
        body = self._json(response, operation)
        if isinstance(body, dict) and body.get("jobId"):
            body = [body]
        if not isinstance(body, list):
            raise self._unexpected(response, "expected a list of status objects", operation)
        return body

    def _new_job(self, response: requests.Response, operation: str) -> dict[str, Any]:
        """The job object a start answered with."""
        body = self._json(response, operation)
        if isinstance(body, dict) and body.get("jobId"):
            body = [body]
        if not isinstance(body, list) or not body or not isinstance(body[0], dict):
            raise self._unexpected(response, "expected a list with the new job's status", operation)
        return body[0]

    @staticmethod
    def _jobs_if_any(response: requests.Response) -> list[dict[str, Any]]:
        """The job objects of a stop/delete answer; nothing when the answer holds none (it may be empty)."""
        try:
            body = response.json()
        except ValueError:
            return []
        if isinstance(body, dict) and body.get("jobId"):
            body = [body]
        if not isinstance(body, list):
            return []
        return [item for item in body if isinstance(item, dict) and item.get("jobId")]

    # -- results -------------------------------------------------------------------------------------
    def download_result(
        self,
        signer: Signer,
        job_id: str,
        index: int,
        destination: Destination,
        *,
        chunk_size: int = CHUNK_SIZE,
        filename: str | None = None,
        expected_size: int | None = None,
        result_type: str | None = None,
        raw_logs: bool = False,
    ) -> DownloadedResult:
        """``GET computeResult`` (signed): stream one result file in constant memory
        (:func:`~airflow_provider_ocean.wire.download.save_result`).

        :param signer: the job owner's signer (its address string must equal the one used at start).
        :param job_id: the job id (Ocean Node: the full id).
        :param index: the result's index (Provider v4: its position in ``results``; Ocean Node: its
            ``index``, to look up by ``type``).
        :param destination: a writable binary file object, a file path (written atomically), or an
            existing directory (the name from ``Content-Disposition``, else ``filename``).
        :param chunk_size: bytes per read.
        :param filename: the listed file name (the node sends no ``Content-Disposition``).
        :param expected_size: the listed size (default: as this client's last status answer listed it);
            another body length raises :class:`~airflow_provider_ocean.exceptions.OceanResultSizeError`.
        :param result_type: the listed ``type`` (default: as last listed; else a ``.log`` name is a log).
        :param raw_logs: write a log result as served, with Docker's log frames if the node sent them
            (default: frames are taken off; :mod:`airflow_provider_ocean.wire.log_frames`).
        """
        if int(index) < 0:
            raise OceanValidationError(f"A result index cannot be negative (got {index})")
        operation = f"download result {index} of job {job_id}"
        started = time.monotonic()
        response = self._result_response(signer, job_id, int(index), operation)
        return save_result(
            response,
            destination,
            job_id=job_id,
            index=int(index),
            operation=operation,
            fallback_name=self._result_fallback_name(job_id, int(index)),
            filename=filename,
            expected_size=self._listed.get(job_id, index) if expected_size is None else expected_size,
            chunk_size=chunk_size,
            started=started,
            decode_log_frames=not raw_logs
            and is_log_result(result_type or self._listed.kind(job_id, index), filename),
            write_path=self.write_path,
        )

    def _result_response(self, signer: Signer, job_id: str, index: int, operation: str) -> requests.Response:
        """The streamed, signed answer of the result route."""
        raise NotImplementedError

    def _result_fallback_name(self, job_id: str, index: int) -> str:
        return f"{job_id}-{index}"

    # -- signing ---------------------------------------------------------------------------------------
    def _read_nonce(self, address: str) -> Any:
        """``GET nonce``: the stored nonce for the exact address string, as the server wrote it."""
        operation = "read nonce"
        method, url = self.endpoint("nonce")
        response = self._read(method, url, params={"userAddress": address}, operation=operation)
        body = self._json(response, operation)
        if not isinstance(body, dict) or "nonce" not in body:
            raise self._unexpected(response, "expected {'nonce': ...}", operation)
        return body["nonce"]

    def get_nonce(self, address: str) -> Any:
        """The stored nonce of the exact address string.

        :param address: the address string, exactly as it will be sent.
        """
        return self._read_nonce(address)

    def _signed(
        self,
        signer: Signer,
        name: str,
        build: Callable[[str], tuple[str, dict[str, Any]]],
        *,
        operation: str,
        in_query: bool = False,
        timeout: float | None = None,
        stream: bool = False,
        retry_nonce: bool = False,
        hold_until_answer: bool = True,
    ) -> requests.Response:
        """Reserve a nonce under the wallet lock, sign, send; optionally re-sign on a refused nonce.

        The wallet lock is held until the answer's headers arrived, so that nonces of one process reach
        the server in order; ``hold_until_answer=False`` frees it once signed, for answers whose headers
        may wait long (a live log whose algorithm prints nothing): a nonce overtaken then is re-signed.

        :param signer: the signer.
        :param name: the endpoint's name.
        :param build: ``build(nonce)`` returns ``(message to sign, payload without signature)``.
        :param operation: what is being done, for messages.
        :param in_query: send the payload as query parameters instead of a JSON body.
        :param timeout: read timeout.
        :param stream: stream the answer.
        :param retry_nonce: re-sign with a fresh nonce (up to :data:`NONCE_RESIGNS` times) if the server
            refuses the nonce itself.
        """
        with _not_sent():
            endpoint = self.endpoint(name)
        attempts = 1 + NONCE_RESIGNS if retry_nonce else 1
        for attempt in range(1, attempts + 1):
            used: list[str] = []
            once = functools.partial(
                self._sign_and_send,
                signer,
                endpoint,
                build,
                used=used,
                refresh=self.refresh_nonce or attempt > 1,
                in_query=in_query,
                hold=hold_until_answer,
                operation=operation,
                timeout=timeout,
                stream=stream,
            )
            try:
                return self._rate_limited(once, operation)
            except OceanProviderError as exc:
                if exc.is_nonce_error and attempt < attempts:
                    log.warning(
                        "%s: the %s refused nonce %s; re-signing with a fresh one",
                        operation,
                        self.service,
                        used[-1] if used else "?",
                    )
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _sign_and_send(
        self,
        signer: Signer,
        endpoint: tuple[str, str],
        build: Callable[[str], tuple[str, dict[str, Any]]],
        *,
        used: list[str],
        refresh: bool,
        in_query: bool,
        hold: bool,
        **send: Any,
    ) -> requests.Response:
        """Reserve a nonce, sign, send once (the wallet lock held until the answer, or only to sign).

        :param used: the nonce is appended here (for the caller's messages).
        """
        address = signer.address

        def stored() -> Any:
            with _not_sent():
                return self.get_nonce(address)

        with self.nonces.reserve(
            self.base_url, address, stored, refresh=refresh, salt=self.salted_nonces
        ) as nonce:
            used.append(str(nonce))
            message, payload = build(nonce)
            payload["signature"] = signer.sign(message)
            if hold:
                return self._send(*endpoint, **send, **_placed(payload, in_query))
        return self._send(*endpoint, **send, **_placed(payload, in_query))
