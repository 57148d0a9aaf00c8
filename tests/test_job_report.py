"""job_report: the bounded log tail, one-line job descriptions and failure details."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from airflow_provider_ocean.job_report import (
    LOG_TAIL_BYTES,
    TailBuffer,
    describe,
    failure_details,
    log_progress,
    log_tail,
)
from airflow_provider_ocean.models import JobStatus, ResultFile

JOB = "0123456789abcdef0123456789abcdef"


def job(status: int = 70, stopreq: int = 0, results: list[ResultFile] | None = None) -> JobStatus:
    texts = {32: "Algorithm provisioning failed", 31: "Data provisioning failed", 70: "Job finished"}
    return JobStatus(
        job_id=JOB,
        status=status,
        status_text=texts.get(status, "Running algorithm "),
        date_finished="1700000000.5",
        stopreq=stopreq,
        results=results or [],
    )


RESULTS = [
    ResultFile(0, "out.csv", 10, "output"),
    ResultFile(1, "algorithm.log", 20, "algorithmLog"),
    ResultFile(2, "configure.log", 30, "configrationLog"),
    ResultFile(3, "publish.log", 40, "publishLog"),
]


class FakeHook:
    """Serves result files by index, writing them to the sink in small chunks like a stream."""

    def __init__(self, files: dict[int, bytes], fail: bool = False) -> None:
        self.files = files
        self.fail = fail
        self.asked: list[int] = []

    def download_result(self, job_id: str, index: int, destination: Any) -> None:
        assert job_id == JOB
        self.asked.append(index)
        if self.fail:
            raise OSError("connection reset")
        data = self.files[index]
        for start in range(0, len(data), 7):
            destination.write(memoryview(data[start : start + 7]))


class TestTailBuffer:
    @pytest.mark.parametrize("limit", [1, 10, 100])
    @pytest.mark.parametrize("chunk", [1, 3, 64, 1000])
    def test_keeps_only_the_last_bytes(self, limit: int, chunk: int) -> None:
        payload = bytes(range(256)) * 4
        sink = TailBuffer(limit)
        for start in range(0, len(payload), chunk):
            piece = payload[start : start + chunk]
            assert sink.write(piece) == len(piece)
            assert len(sink.data) <= limit  # constant memory, whatever the log size
        assert sink.total == len(payload)
        assert bytes(sink.data) == payload[-limit:]

    def test_text_marks_a_cut(self) -> None:
        sink = TailBuffer(5)
        sink.write(b"hello")
        assert sink.text() == "hello"
        sink.write(bytearray(b" world"))
        assert sink.text() == "…world"

    def test_cut_inside_a_multibyte_character_does_not_raise(self) -> None:
        sink = TailBuffer(3)
        sink.write("ééé".encode())  # 6 bytes: the 3-byte tail starts in the middle of a character
        assert sink.text() == "…\ufffdé"

    def test_is_a_writable_raw_stream(self) -> None:
        sink = TailBuffer()
        assert sink.writable()
        assert sink.limit == LOG_TAIL_BYTES


class TestLogTail:
    def test_returns_none_without_such_a_log(self) -> None:
        hook = FakeHook({})
        assert log_tail(hook, job(results=[RESULTS[0]])) is None  # type: ignore[arg-type]
        assert hook.asked == []

    def test_tail_of_the_requested_kind(self) -> None:
        hook = FakeHook({1: b"line1\nline2\n" * 100, 2: b"configured\n"})
        tail = log_tail(hook, job(results=RESULTS), "algorithmLog", limit=12)  # type: ignore[arg-type]
        assert tail == "…line1\nline2\n"
        assert log_tail(hook, job(results=RESULTS), "configrationLog") == "configured\n"  # type: ignore[arg-type]
        assert hook.asked == [1, 2]

    def test_download_failure_is_reported_not_raised(self) -> None:
        tail = log_tail(FakeHook({}, fail=True), job(results=RESULTS))  # type: ignore[arg-type]
        assert tail == "(could not read algorithm.log: connection reset)"


@pytest.mark.parametrize(
    ("status", "stopreq", "expected"),
    [
        (70, 0, f"job {JOB} succeeded (status 70 'Job finished', stopreq 0)"),
        (70, 1, f"job {JOB} stopped (status 70 'Job finished', stopreq 1)"),
        (70, 2, f"job {JOB} timed_out (status 70 'Job finished', stopreq 2)"),
        (32, 0, f"job {JOB} failed (status 32 'Algorithm provisioning failed', stopreq 0)"),
        (31, 0, f"job {JOB} failed (status 31 'Data provisioning failed', stopreq 0)"),
    ],
)
def test_describe(status: int, stopreq: int, expected: str) -> None:
    assert describe(job(status, stopreq)) == expected


class TestFailureDetails:
    def test_provisioning_failure_shows_the_configure_log(self) -> None:
        hook = FakeHook({1: b"", 2: b"downloading input 0\nalgorithm provisioning failed: no code\n"})
        details = failure_details(hook, job(32, results=RESULTS))  # type: ignore[arg-type]
        assert details.splitlines()[0] == describe(job(32))
        assert (
            "--- configrationLog (tail) ---\ndownloading input 0\nalgorithm provisioning failed: no code"
            in details
        )
        assert "algorithmLog" not in details  # empty log: left out

    def test_stopped_job_shows_only_the_algorithm_log(self) -> None:
        hook = FakeHook({1: b"started\nTraceback: boom\n", 2: b"configured\n"})
        details = failure_details(hook, job(70, stopreq=1, results=RESULTS))  # type: ignore[arg-type]
        assert details == describe(job(70, 1)) + "\n--- algorithmLog (tail) ---\nstarted\nTraceback: boom"
        assert hook.asked == [1]

    def test_job_without_results(self) -> None:
        assert failure_details(FakeHook({}), job(32)) == describe(job(32))  # type: ignore[arg-type]


def test_log_progress(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test_job_report.progress")
    with caplog.at_level(logging.INFO, logger=logger.name):
        log_progress(logger, job(40), started=100.0, now=112.4)
    assert caplog.messages == [f"Job {JOB}: status 40 Running algorithm (12 s elapsed)"]
