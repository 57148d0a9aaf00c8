"""One retry policy for idempotent reads: bounded attempts, exponential backoff with jitter.

Shared by the wire clients (:mod:`airflow_provider_ocean.wire.http`, both backends) and the JSON-RPC
client; importable without Airflow (the sandbox uses the chain client).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable


def read_retrying(
    *,
    attempts: int,
    delay: float,
    max_delay: float,
    transient: Callable[[BaseException], bool],
    what: str,
    log: logging.Logger,
    sleep: Callable[[float], None] | None = None,
) -> Retrying:
    """A tenacity ``Retrying`` for an idempotent read; the last error is re-raised as it was.

    :param attempts: attempts in all (1 = no retry).
    :param delay: base of the exponential backoff, in seconds; also the bound of the added jitter.
    :param max_delay: upper bound of one backoff.
    :param transient: whether an error is worth another attempt.
    :param what: the read, for the warning logged before each new attempt.
    :param log: where that warning goes.
    :param sleep: how to wait between attempts (``time.sleep`` by default; tests pass their own).
    """
    return Retrying(
        stop=stop_after_attempt(max(1, attempts)),
        wait=wait_exponential(multiplier=delay, max=max_delay) + wait_random(0, delay),
        retry=retry_if_exception(transient),
        reraise=True,
        sleep=sleep or time.sleep,
        before_sleep=lambda state: log.warning(
            "%s failed (attempt %s of %s), retrying: %s",
            what,
            state.attempt_number,
            attempts,
            state.outcome.exception() if state.outcome else "",
        ),
    )
