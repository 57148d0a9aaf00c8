"""Error answers of both backends: Provider v4 and Ocean Node bodies into :class:`OceanProviderError`.

:func:`parse_error` reads the Provider's three shapes (its hints are the tables of
:mod:`airflow_provider_ocean.exceptions`); :func:`parse_node_error` reads the node's (JSON string, object,
plain text, bare ``Internal Server Error``) with :data:`NODE_HINTS`. :func:`is_rate_limit` tells a rate
limiter's answer (429, or the node's 403 limiters) that the transport waits out.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from typing import Any

from airflow_provider_ocean.exceptions import OceanProviderError

_CODE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_TAG_RE = re.compile(r"<[^>]+>")
_RETRY_AFTER_RE = re.compile(r"try again in\s+(\d+(?:\.\d+)?)\s*second", re.IGNORECASE)
_NONCE_RE = re.compile(r"nonce:\s*\S+\s+is not a valid nonce", re.IGNORECASE)
#: 403 texts of the node's connection limiter (MAX_CONNECTIONS_PER_MINUTE) and command-level limiter.
_LIMITER_TEXTS = ("too many active connections", "rate limit exceeded")


def _text(text: str | bytes | None) -> str:
    if isinstance(text, bytes):
        return text.decode("utf-8", errors="replace")
    return text or ""


def _loads(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else None
    except ValueError:
        return None


def _opaque(text: str, limit: int) -> str:
    stripped = " ".join(_TAG_RE.sub(" ", text).split())
    return stripped[:limit] if stripped else "empty response body"


def _first_message(value: Any) -> str:
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return str(value)


def _code_or_message(value: str) -> tuple[str | None, str]:
    """Provider codes are identifiers (``order_invalid``); anything else is a sentence."""
    return (value, value) if _CODE_RE.match(value) else (None, value)


def parse_error(status: int, text: str | bytes | None, *, operation: str | None = None) -> OceanProviderError:
    """Turn a Provider v4 error answer into an :class:`OceanProviderError`; understands its three shapes.

    - validation: ``{"errors": {field: [msg] | msg}, "message": "Validation error", "success": false}``
    - handled: ``{"error": "text"}`` or ``{"error": {field: code}}``
    - uncaught: ``{"error": "text", "context": ...}`` (the context, which may hold the signed request,
      is dropped)

    Anything else (HTML, empty, not JSON despite the content type) is kept as opaque text. The hints come
    from the Provider's tables in :mod:`airflow_provider_ocean.exceptions`.

    :param status: HTTP status code.
    :param text: the response body.
    :param operation: what the client was doing, for the message.
    """
    text = _text(text)
    body = _loads(text)
    error = body.get("errors") if isinstance(body, dict) else None
    if not (isinstance(error, dict) and error) and isinstance(body, dict) and "error" in body:
        error = body["error"]
    if isinstance(error, dict) and error:
        errors = {str(k): _first_message(v) for k, v in error.items()}
        field, value = next(iter(errors.items()))
        code, message = _code_or_message(value)
        return OceanProviderError(
            message, status=status, field=field, code=code, body=text, errors=errors, operation=operation
        )
    if isinstance(body, dict) and "error" in body:
        code, message = _code_or_message(_first_message(error) or "unknown error")
        return OceanProviderError(message, status=status, code=code, body=text, operation=operation)
    if isinstance(body, str) and body:
        return OceanProviderError(body, status=status, body=text, operation=operation)
    return OceanProviderError(_opaque(text, 300), status=status, body=text, operation=operation)


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
    ("too many active connections", "the node limits connections per minute; poll less often"),
    ("not authorized to get results", "results are only served to the job owner's exact address string"),
    ("not allowed to run on the dataset", "the dataset publisher does not trust this algorithm"),
    ("access denied", "the environment's access list does not include this wallet"),
)


def retry_after_seconds(text: str | None) -> float | None:
    """The seconds of ``Rate limit exceeded. Try again in N seconds.``, if present.

    :param text: an error text.
    """
    match = _RETRY_AFTER_RE.search(text or "")
    return float(match.group(1)) if match else None


def retry_after_header(value: str | None) -> float | None:
    """``Retry-After`` as seconds (a number, or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def is_rate_limit(status: int | None, message: str | None) -> bool:
    """Whether an answer is a rate limiter's: 429, or the node's 403 connection/command limiters.

    :param status: HTTP status code.
    :param message: the parsed error text.
    """
    if status == 429:
        return True
    text = (message or "").lower()
    return status == 403 and any(needle in text for needle in _LIMITER_TEXTS)


class OceanNodeError(OceanProviderError):
    """Ocean Node answered with an error.

    :param message: the parsed error text.
    :param status: HTTP status code.
    :param body: the raw body (redacted).
    :param operation: what the client was doing.
    :param retry_after: seconds announced by a rate-limit answer.
    :param hint: what to do about it; looked up in :data:`NODE_HINTS` when omitted.
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
        """True for a rate limiter's answer (429, or 403 ``Too many active connections``/``Rate limit``)."""
        return is_rate_limit(self.status, self.detail)


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
    text = _text(text)
    body = _loads(text)
    message: str | None = None
    if isinstance(body, str):
        message = body
    elif isinstance(body, dict):
        value = body.get("error", body.get("message", body.get("errors")))
        if value is not None:
            message = value if isinstance(value, str) else json.dumps(value)
    if message is None:
        message = _opaque(text, 500)
    return OceanNodeError(
        message,
        status=status,
        body=text,
        operation=operation,
        retry_after=retry_after_seconds(message) if is_rate_limit(status, message) else None,
    )
