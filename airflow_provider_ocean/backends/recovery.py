"""Exactly-once starts: decide whether a start whose answer was lost created a job, never start again.

A start request is recorded (:class:`~airflow_provider_ocean.models.StartAttempt`) before it is sent.
When its outcome is unknown (a transport error after sending, a 5xx, an unreadable 2xx), the backend's
matcher looks for the job the attempt created a few times; that job is returned. If the server answers
and holds no such job, the start failed and its error is raised again; if the server cannot be asked,
:class:`~airflow_provider_ocean.exceptions.OceanStartOutcomeUnknownError` is raised and the caller (the
start operator's next try) looks again with the same record. How a job is matched is the backend's:
agreement ids on Provider v4, the start tag on Ocean Node.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_ocean.exceptions import (
    OceanConnectionError,
    OceanError,
    OceanProviderError,
    OceanStartOutcomeUnknownError,
)

if TYPE_CHECKING:
    from airflow_provider_ocean.backends.base import Log
    from airflow_provider_ocean.models import JobStatus
    from airflow_provider_ocean.records import StartAttempt

#: Looks for the job after a transport error (the request may still be processed) / after an answer.
START_LOOKUP_ATTEMPTS = 4
START_LOOKUP_ATTEMPTS_ANSWERED = 2
#: Seconds between those looks.
START_LOOKUP_DELAY = 2.0


class StartMatcher(Protocol):
    """How a backend recognises the job of a start attempt."""

    def find(self, attempt: StartAttempt) -> JobStatus | None:
        """The job the attempt created, or ``None``; raises :class:`OceanError` when it cannot be asked.

        :param attempt: the attempt record.
        """

    def describe(self, attempt: StartAttempt) -> str:
        """What the lookup looks for, for the log (``"a job with agreement [...]"``).

        :param attempt: the attempt record.
        """

    def unknown_error(
        self, attempt: StartAttempt, exc: OceanError, lookup_error: OceanError
    ) -> OceanStartOutcomeUnknownError:
        """The error raised when the start may have succeeded and the server could not be asked.

        :param attempt: the attempt record.
        :param exc: the start's error.
        :param lookup_error: why the jobs could not be listed.
        """


def outcome_unknown(exc: OceanError) -> bool:
    """Whether a failed start may nevertheless have created a job.

    Transport errors after the request may have been sent (``request_sent`` not ``False``), 5xx (the
    Provider's duplicate-nonce 503 comes *after* the job was created; gateways answer 502/504 while the
    server keeps working) and a 2xx whose body could not be read. A 4xx is a refusal: nothing started.

    :param exc: the start's error.
    """
    if isinstance(exc, OceanConnectionError):
        return exc.request_sent is not False
    if isinstance(exc, OceanProviderError):
        return exc.status is None or exc.status >= 500 or exc.status < 400
    return False


def epoch(value: Any) -> float | None:
    """A server timestamp (epoch seconds, number or text) as a float; ``None`` when missing or unreadable.

    :param value: the timestamp.
    """
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def resolve_unknown_start(
    exc: OceanError, attempt: StartAttempt, matcher: StartMatcher, log: Log
) -> JobStatus:
    """Look for the job of a start whose outcome is unknown.

    :param exc: the error of the start request (:func:`outcome_unknown` said it may have started a job).
    :param attempt: the record of the attempt.
    :param matcher: the backend's way of finding the attempt's job.
    :param log: where to say what happens.
    :return: the job the attempt created.
    :raises OceanStartOutcomeUnknownError: the server could not be asked.
    :raises OceanError: ``exc`` again, when the server answered and holds no job of the attempt.
    """
    log.warning("The outcome of the start is unknown (%s); looking for %s", exc, matcher.describe(attempt))
    tries = START_LOOKUP_ATTEMPTS if isinstance(exc, OceanConnectionError) else START_LOOKUP_ATTEMPTS_ANSWERED
    lookup_error: OceanError | None = None
    for number in range(1, tries + 1):
        try:
            job = matcher.find(attempt)
            lookup_error = None
        except OceanError as error:
            job, lookup_error = None, error
        if job is not None:
            log.warning(
                "The start did create job %s (agreement %s) despite the error; using it",
                job.job_id,
                job.agreement_id,
            )
            return job
        if number < tries:
            time.sleep(START_LOOKUP_DELAY)
    if lookup_error is not None:
        raise matcher.unknown_error(attempt, exc, lookup_error) from None
    log.warning("No job was created by this start attempt: it failed (%s)", exc)
    raise exc
