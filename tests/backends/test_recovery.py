"""The one exactly-once recovery (backends/recovery.py): what counts as an unknown outcome, and the lookup.

The recovery runs against the real sandbox in tests/backends/test_exactly_once.py, tests/faults/ and
tests/operators/test_reattach.py; here its decisions are pinned one by one with a matcher that answers
from a script (the matcher is the backend's part; the server is not involved).
"""

from __future__ import annotations

import logging
import time

import pytest

from airflow_provider_ocean.backends import recovery
from airflow_provider_ocean.exceptions import (
    OceanConnectionError,
    OceanError,
    OceanProviderError,
    OceanStartOutcomeUnknownError,
    OceanValidationError,
)
from airflow_provider_ocean.models import JobStatus
from airflow_provider_ocean.records import StartAttempt

LOG = logging.getLogger("tests.recovery")


def attempt(**kwargs) -> StartAttempt:
    values = {
        "provider_url": "http://127.0.0.1:1",
        "owner": "0xowner",
        "transfer_tx_ids": ["0xa"],
        "started_at": time.time(),
    }
    values.update(kwargs)
    return StartAttempt(**values)


class ScriptedMatcher:
    """Answers each lookup with the next scripted outcome (a job, ``None`` or an error to raise)."""

    def __init__(self, *outcomes: JobStatus | OceanError | None) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def find(self, attempt: StartAttempt) -> JobStatus | None:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, OceanError):
            raise outcome
        return outcome

    def describe(self, attempt: StartAttempt) -> str:
        return f"a job of {attempt.transfer_tx_ids}"

    def unknown_error(self, attempt, exc, lookup_error) -> OceanStartOutcomeUnknownError:
        return OceanStartOutcomeUnknownError(
            f"unknown: {exc} / {lookup_error}",
            transfer_tx_ids=attempt.transfer_tx_ids,
            started_at=attempt.started_at,
        )


@pytest.fixture(autouse=True)
def _no_pause(monkeypatch):
    monkeypatch.setattr(recovery, "START_LOOKUP_DELAY", 0.0)


class TestOutcomeUnknown:
    @pytest.mark.parametrize(
        ("exc", "unknown"),
        [
            (OceanConnectionError("refused", request_sent=False), False),
            (OceanConnectionError("reset", request_sent=True), True),
            (OceanConnectionError("timeout", request_sent=None), True),
            (OceanProviderError("bad", status=400), False),
            (OceanProviderError("nonce", status=401), False),
            (OceanProviderError("dup nonce", status=503), True),
            (OceanProviderError("gateway", status=502), True),
            (OceanProviderError("unreadable 2xx", status=200), True),
            (OceanProviderError("no status", status=None), True),
            (OceanValidationError("bad input"), False),
        ],
    )
    def test_decision(self, exc, unknown):
        assert recovery.outcome_unknown(exc) is unknown


class TestEpoch:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [("1700000000.5", 1700000000.5), (1700000000, 1700000000.0), (None, None), ("", None), ("x", None)],
    )
    def test_epoch(self, value, expected):
        assert recovery.epoch(value) == expected


class TestResolve:
    def test_found_on_a_later_look(self):
        job = JobStatus(job_id="j1", status=1, agreement_id="0xa")
        matcher = ScriptedMatcher(None, job)
        exc = OceanConnectionError("reset", request_sent=True)
        assert recovery.resolve_unknown_start(exc, attempt(), matcher, LOG) is job
        assert matcher.calls == 2

    def test_no_job_after_a_connection_error_raises_the_start_error_after_every_look(self):
        matcher = ScriptedMatcher(*[None] * recovery.START_LOOKUP_ATTEMPTS)
        exc = OceanConnectionError("reset", request_sent=True)
        with pytest.raises(OceanConnectionError) as info:
            recovery.resolve_unknown_start(exc, attempt(), matcher, LOG)
        assert info.value is exc
        assert matcher.calls == recovery.START_LOOKUP_ATTEMPTS

    def test_an_answered_error_looks_fewer_times(self):
        matcher = ScriptedMatcher(*[None] * recovery.START_LOOKUP_ATTEMPTS_ANSWERED)
        exc = OceanProviderError("gateway", status=502)
        with pytest.raises(OceanProviderError):
            recovery.resolve_unknown_start(exc, attempt(), matcher, LOG)
        assert matcher.calls == recovery.START_LOOKUP_ATTEMPTS_ANSWERED

    def test_server_that_cannot_be_asked_gives_outcome_unknown(self):
        down = OceanConnectionError("down", request_sent=False)
        matcher = ScriptedMatcher(*[down] * recovery.START_LOOKUP_ATTEMPTS)
        with pytest.raises(OceanStartOutcomeUnknownError) as info:
            recovery.resolve_unknown_start(
                OceanConnectionError("reset", request_sent=True), attempt(), matcher, LOG
            )
        assert info.value.transfer_tx_ids == ["0xa"]
        assert "down" in str(info.value)

    def test_a_last_look_that_answers_decides(self):
        """An error on an early look does not count once a later look got an answer."""
        down = OceanConnectionError("down", request_sent=False)
        matcher = ScriptedMatcher(down, down, down, None)
        exc = OceanConnectionError("reset", request_sent=True)
        with pytest.raises(OceanConnectionError) as info:
            recovery.resolve_unknown_start(exc, attempt(), matcher, LOG)
        assert info.value is exc


class TestStartAttempt:
    def test_record_without_start_id_keeps_the_provider_v4_shape(self):
        record = attempt(known_job_ids=["j0"]).to_dict()
        assert set(record) == {"provider_url", "owner", "transfer_tx_ids", "started_at", "known_job_ids"}

    def test_record_with_start_id(self):
        record = attempt(transfer_tx_ids=[], start_id="tag").to_dict()
        assert record["start_id"] == "tag"
        assert record["known_job_ids"] == []
