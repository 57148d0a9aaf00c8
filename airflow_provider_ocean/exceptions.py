"""Exceptions raised by the Ocean provider: every one is an :class:`OceanError`.

The chain client's errors (``airflow_provider_ocean/chain/errors.py``) are the exception: that package
stays importable without Airflow (the sandbox uses it), and the payment code turns them into the errors
below (``airflow_provider_ocean/payment/errors.py``).

Every message is built so that it never contains the wallet private key or a request signature:
texts that come from the remote side (Provider bodies, revert reasons) go through :func:`redact`,
which removes anything shaped like a 65-byte signature or a 32-byte private key that was registered
with :func:`register_secret`.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from airflow.sdk.exceptions import AirflowException

# 65-byte signatures (r || s || v) as hex, with or without 0x.
_SIGNATURE_RE = re.compile(r"(?<![0-9a-fA-F])(?:0x)?[0-9a-fA-F]{130}(?![0-9a-fA-F])")
_MAX_BODY = 2000
_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Remember a secret so that :func:`redact` removes it from every message built afterwards.

    :param value: the secret text (e.g. a hex private key, with or without ``0x``).
    """
    if not value or len(value) < 8:
        return
    bare = value[2:] if value.lower().startswith("0x") else value
    with _secrets_lock:
        _secrets.add(bare.lower())


def redact(text: Any, limit: int = _MAX_BODY) -> str:
    """Return ``text`` as a string without signatures or registered secrets, cut to ``limit`` chars.

    :param text: any value; non-strings are converted with ``str()``.
    :param limit: maximum length of the result (a marker is appended when cut).
    """
    out = text if isinstance(text, str) else str(text)
    out = _SIGNATURE_RE.sub("<signature>", out)
    with _secrets_lock:
        secrets = list(_secrets)
    for secret in secrets:
        out = re.sub(re.escape(secret), "<secret>", out, flags=re.IGNORECASE)
    if len(out) > limit:
        out = out[:limit] + "…(truncated)"
    return out


class OceanError(AirflowException):
    """Base class of every error raised by the Ocean provider.

    :param message: a human readable message (redacted before use).
    :param hint: what to do about it, when known.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = redact(message, limit=4000)
        self.hint = hint
        super().__init__(self.message + (f" Hint: {hint}" if hint else ""))


class OceanConfigError(OceanError):
    """The Airflow connection or hook arguments are missing or malformed."""


class OceanWalletLockError(OceanConfigError):
    """The connection's cluster wallet lock (``wallet_lock_url``) cannot be taken: unreachable, not free
    in time, or redis-py missing. Raised before anything is signed or paid."""


class OceanValidationError(OceanError):
    """The request is invalid; found before anything was spent."""


class OceanConnectionError(OceanError):
    """A remote service (Provider, Aquarius, RPC node) could not be reached or timed out.

    :param message: what failed.
    :param url: the URL that was called (no query string).
    :param request_sent: ``False`` when the request surely never reached the server (connection refused,
        connect timeout); ``None`` when it may have (read timeout, connection reset after sending).
    """

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        hint: str | None = None,
        request_sent: bool | None = None,
    ) -> None:
        self.url = url
        self.request_sent = request_sent
        super().__init__(message, hint=hint)


class OceanResultSizeError(OceanConnectionError):
    """A result body's length differs from the size the job lists for that result (an empty body for a
    listed file included: Ocean Node answers 200 with nothing to an index or owner it does not serve).

    :param message: what was received and what was listed.
    :param expected: the listed size in bytes.
    :param received: the bytes received.
    """

    def __init__(
        self, message: str, *, expected: int, received: int, url: str | None = None, hint: str | None = None
    ) -> None:
        self.expected = expected
        self.received = received
        super().__init__(message, url=url, hint=hint, request_sent=True)


# Known error codes / messages of Provider v4 and what to do about them.
ERROR_HINTS: dict[str, str] = {
    "order_invalid": (
        "the order tx is unknown/unmined, for another environment, expired or the fee expired; "
        "re-initialize and pay again"
    ),
    "in_use_or_not_on_chain": (
        "the algorithm's order tx is unknown/unmined or expired; "
        "re-initialize and pay for the algorithm again"
    ),
    "fees_not_paid": (
        "no input paid the provider fee this environment needs for the requested validUntil; "
        "re-initialize and pay again"
    ),
    "no_raw_algo_allowed": (
        "the dataset's compute service does not allow raw algorithms (compute.allowRawAlgorithm is false); "
        "use a published algorithm DID"
    ),
    "not_trusted_algo": "the dataset publisher does not list this algorithm in publisherTrustedAlgorithms",
    "not_trusted_algo_publisher": (
        "the algorithm's publisher is not in the dataset's publisherTrustedAlgorithmPublishers"
    ),
    "algorithm_file_checksum_mismatch": (
        "the algorithm's files changed since the dataset publisher trusted it (filesChecksum differs)"
    ),
    "algorithm_container_checksum_mismatch": (
        "the algorithm's container changed since the dataset publisher trusted it (containerSectionChecksum)"
    ),
    "no_publisherTrustedAlgorithms": "the dataset's publisherTrustedAlgorithms list is malformed",
    "did_not_found": "the DID is unknown to the Provider's Aquarius; check the DID and the chain",
    "not_found": "the service id does not exist in the DDO",
    "missing": "a required service id is missing",
    "service_not_access_compute": "the service must be of type access or compute",
    "main_service_compute": "the first dataset must be ordered through a compute service",
    "compute_services_not_in_same_provider": "the compute service belongs to another Provider",
    "missing_entrypoint_image_checksum": "raw algorithms need container entrypoint, image and checksum",
    "checksum_prefix": "the container checksum must start with 'sha256:'",
    "not_algo": "the algorithm DID is not an algorithm asset",
    "meta_oneof_url_rawcode_remote": "a raw algorithm needs exactly one of rawcode or url",
}
MESSAGE_HINTS: tuple[tuple[str, str], ...] = (
    (
        "expected nonce",
        "another client used a higher nonce for this wallet; retry with a fresh nonce (never reuse one)",
    ),
    (
        "cannot create duplicates",
        "a nonce was reused; the Provider may already have started the job - list the jobs before retrying",
    ),
    (
        "compute environment does not exist",
        (
            "list the environments and pass an existing environment id (none, or a 404 from "
            "computeEnvironments: the Provider has no OPERATOR_SERVICE_URL, or its operator-service "
            "announces no environment)"
        ),
    ),
    ("environment invalid or does not exist", "list the environments and pass an existing environment id"),
    (
        "already in use for other job",
        "a running job already uses this order; wait for it to finish or pay a new order",
    ),
    ("ordered c2d time was exceeded", "the provider fee expired; re-initialize and pay again"),
    ("validuntil value is not correct", "validUntil must be a future unix time in seconds"),
    (
        "compute envs could not be retrieved",
        (
            "the Provider cannot reach its operator-service (its OPERATOR_SERVICE_URL); retry later, or "
            "tell the Provider's operator"
        ),
    ),
    # A misconfigured Provider: nothing a DAG can change; what its operator must set (Provider v2 sources).
    (
        "'checksum'",
        (
            "the Provider could not checksum the algorithm's files (KeyError 'checksum'). Its operator must"
            " set MAX_CHECKSUM_LENGTH to at least each algorithm file's size in bytes (unset it is 0: no "
            "file is checksummed; the Provider's Docker image sets 5242880), and the files' URLs must "
            "answer 200 to the Provider (URLs on private or loopback addresses also need "
            "ALLOW_NON_PUBLIC_IP=1)"
        ),
    ),
    (
        "unconfigured chain_id",
        (
            "the Provider's per-chain settings (NETWORK_URL, PROVIDER_PRIVATE_KEY, PROVIDER_FEE_TOKEN as "
            "JSON by chain id) have no entry for this chain: use the Provider of the asset's chain, or its "
            "operator must add the chain"
        ),
    ),
    ("no chains configured", "the Provider has no NETWORK_URL; its operator must set it"),
    (
        "has no attribute 'expanduser'",
        (
            "the Provider has neither PROVIDER_FEE_TOKEN nor ADDRESS_FILE (the address.json it reads the "
            "chain's Ocean token from for its fees); its operator must set one"
        ),
    ),
    (
        "is contract deployed correctly and chain synced",
        (
            "the Provider called a contract its chain does not have: its PROVIDER_FEE_TOKEN or ADDRESS_FILE"
            " names an address that is no contract on this chain, or its NETWORK_URL is another chain or "
            "not synced"
        ),
    ),
    (
        "max retries exceeded",
        (
            "the Provider cannot reach a service it depends on (its Aquarius at AQUARIUS_URL, the chain at "
            "NETWORK_URL, its operator-service); retry later, or tell the Provider's operator"
        ),
    ),
    (
        "the requested url was not found on the server",
        (
            "this server has no such route: check that the connection's host is a Provider v4; a Provider "
            "without OPERATOR_SERVICE_URL (download only) answers 404 to computeEnvironments, compute and "
            "computeResult; its operator must set it"
        ),
    ),
)


def hint_for(code: str | None, message: str | None) -> str | None:
    """Return the known remedy for a Provider error code or message, if any.

    :param code: an error code like ``order_invalid``.
    :param message: the error text.
    """
    if code and code in ERROR_HINTS:
        return ERROR_HINTS[code]
    text = (message or "").lower()
    for needle, hint in MESSAGE_HINTS:
        if needle in text:
            return hint
    return None


class OceanProviderError(OceanError):
    """The Provider (or a service it forwards to) answered with an error.

    :param message: the parsed error message.
    :param status: HTTP status code.
    :param field: the request field the error is about (``dataset.serviceId``, ``nonce``...), if any.
    :param code: a machine-readable code (``order_invalid``, ``no_raw_algo_allowed``...), if any.
    :param body: the raw response body (redacted and truncated).
    :param errors: every field → message pair the Provider reported.
    :param operation: what the client was doing (``start compute``...).
    :param hint: what to do about it; derived from ``code``/``message`` when omitted.
    """

    #: Seconds a rate-limit answer asked to wait (its text or ``Retry-After``), when it said so.
    retry_after: float | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        field: str | None = None,
        code: str | None = None,
        body: str | None = None,
        errors: dict[str, str] | None = None,
        operation: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.status = status
        self.field = field
        self.code = code
        self.body = redact(body) if body is not None else None
        self.errors = {k: redact(v, 500) for k, v in (errors or {}).items()}
        self.operation = operation
        self.detail = redact(message, 1000)
        parts = [f"{operation} failed" if operation else "Provider request failed"]
        if status is not None:
            parts.append(f"HTTP {status}")
        if field:
            parts.append(f"{field}: {code or self.detail}" if code else f"{field}: {self.detail}")
        elif code:
            parts.append(code)
        else:
            parts.append(self.detail)
        super().__init__(": ".join(parts), hint=hint or hint_for(code, message))

    @property
    def is_nonce_error(self) -> bool:
        """True when the Provider refused the nonce as too low (safe to retry once with a fresh one)."""
        return self.field == "signature" and "expected nonce" in self.detail.lower()

    @property
    def retryable(self) -> bool:
        """True for 429 and 5xx answers (transient for idempotent reads)."""
        return self.status is not None and (self.status == 429 or self.status >= 500)


class OceanPaymentError(OceanError):
    """Paying for an order failed or was refused: revert, missing funds, fee above the cap.

    :param message: what failed.
    :param tx_hash: the transaction concerned, if one was sent.
    :param spent: whether something may already have been spent (a transaction was mined).
    """

    def __init__(
        self, message: str, *, tx_hash: str | None = None, spent: bool = False, hint: str | None = None
    ) -> None:
        self.tx_hash = tx_hash
        self.spent = spent
        super().__init__(message, hint=hint)


class OceanInsufficientFundsError(OceanPaymentError, OceanValidationError):
    """The consumer lacks datatokens, fee tokens or native gas; found before anything was sent."""


class OceanFeeCapError(OceanPaymentError, OceanValidationError):
    """The fees exceed the user's ``max_fee``; found before anything was sent."""


class OceanJobError(OceanError):
    """A compute job failed, was stopped, timed out, or cannot be found.

    :param message: what happened.
    :param job_id: the job id.
    :param status: the job's status object as a dict, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        job_id: str | None = None,
        status: dict[str, Any] | None = None,
        hint: str | None = None,
    ) -> None:
        self.job_id = job_id
        self.status = status
        super().__init__(message, hint=hint)


class OceanJobNotFoundError(OceanJobError):
    """The Provider returned no job with this id for this owner."""


class OceanStartOutcomeUnknownError(OceanJobError):
    """A start request may have created a job, and the Provider could not be asked whether it did.

    Never start again blindly: look for a job of the owner whose ``agreementId`` is one of
    ``transfer_tx_ids`` created after ``started_at`` (:meth:`OceanComputeHook.find_started_job`);
    the start operator does this itself on its next try.

    :param message: what happened.
    :param transfer_tx_ids: the order txs the start request carried (one becomes the agreementId).
    :param started_at: when the start attempt began (epoch seconds, local clock).
    :param known_job_ids: jobs with those agreement ids that existed before the attempt.
    """

    def __init__(
        self,
        message: str,
        *,
        transfer_tx_ids: list[str],
        started_at: float,
        known_job_ids: list[str] | None = None,
        hint: str | None = None,
    ) -> None:
        self.transfer_tx_ids = list(transfer_tx_ids)
        self.started_at = started_at
        self.known_job_ids = list(known_job_ids or [])
        super().__init__(message, hint=hint)


class OceanOrderInUseError(OceanProviderError):
    """The operator refused the start: a running job already uses the order that would be its agreementId.

    The Provider keeps no record of used orders, but the operator-service allows one running job per
    agreementId. Typical causes: an overlapping DAG run or another task reusing the same paid orders.
    Remedy: pay a new order for the input in use (the start operator does this once by itself).

    :param message: the Provider's message.
    :param in_use_by: ids of the owner's running jobs whose agreementId is one of the request's orders.
    :param transfer_tx_ids: the orders in use.
    :param kwargs: passed to :class:`OceanProviderError`.
    """

    def __init__(
        self,
        message: str,
        *,
        in_use_by: list[str] | None = None,
        transfer_tx_ids: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.in_use_by = list(in_use_by or [])
        self.transfer_tx_ids = list(transfer_tx_ids or [])
        super().__init__(message, **kwargs)


class OceanResultTooLargeError(OceanError):
    """A result file exceeded the results operator's ``max_file_size`` while it was written."""


class UnsafeArchiveError(OceanError):
    """An ``outputs.tar`` is not a tar archive or its files exceed the size cap."""


class RateLimitedError(OceanError):
    """The server answered 429: status polling for this owner pauses until ``retry_at``.

    :param retry_at: the monotonic time (``time.monotonic()``) polling resumes.
    """

    def __init__(self, retry_at: float) -> None:
        self.retry_at = retry_at
        super().__init__(f"rate limited until {retry_at:.0f}")
