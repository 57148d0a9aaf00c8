"""The synchronous waiter and the live log (``airflow_provider_ocean.waiting``) with a scripted hook.

The operator and sensor tests (tests/operators/test_compute_sandbox.py,
tests/sensors/test_ocean_sensor_sandbox.py) run them against the sandbox; these pin the branches.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_ocean.exceptions import OceanJobError
from airflow_provider_ocean.models import JobStatus
from airflow_provider_ocean.operators.compute import OceanComputeStartOperator
from airflow_provider_ocean.sensors.ocean import OceanComputeJobStatusSensor
from airflow_provider_ocean.status import NodeStatus
from airflow_provider_ocean.waiting import (
    DEADLINE_MARGIN,
    LIVE_LOG_READ_TIMEOUT,
    LiveLog,
    OceanJobWaiter,
)

RUNNING = NodeStatus.RUNNING_ALGORITHM

JOB = "a" * 32


def job(status: int, *, finished: bool = False, stopreq: int = 0) -> JobStatus:
    return JobStatus(
        JOB, status, f"status {status}", date_finished="1" if finished else None, stopreq=stopreq
    )


class ScriptedHook:
    """Answers ``get_job_status`` from a list of statuses (the last one repeats) and records the rest."""

    def __init__(self, statuses: list[JobStatus], *, ocean_node: bool = True, lines: list[str] = ()) -> None:
        self.statuses = list(statuses)
        self.is_ocean_node = ocean_node
        self.lines = list(lines)
        self.stopped: list[str] = []
        self.streams: list[tuple[str, dict[str, Any]]] = []
        self.node = SimpleNamespace(stream_logs=self._stream_logs)

    def get_job_status(self, job_id: str) -> JobStatus:
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def stop_job(self, job_id: str) -> None:
        self.stopped.append(job_id)

    def download_result(self, job_id: str, index: int, sink: Any) -> None:  # pragma: no cover - no results
        raise AssertionError("no result files in these jobs")

    def _stream_logs(self, job_id: str, **kwargs: Any) -> Iterator[str]:
        self.streams.append((job_id, kwargs))
        return iter(self.lines)


class Waiter(OceanJobWaiter):
    def __init__(self, hook: ScriptedHook, *, stream_logs: bool = True) -> None:
        self.ocean_conn_id = "ocean_test"
        self.poll_interval = 0.01
        self.stop_on_kill = True
        self.stream_logs = stream_logs
        self.log = logging.getLogger("tests.waiting")
        self.hook = hook  # instead of the connection's hook (a cached_property)


def test_the_operator_and_the_sensor_share_it():
    assert issubclass(OceanComputeStartOperator, OceanJobWaiter)
    assert issubclass(OceanComputeJobStatusSensor, OceanJobWaiter)


class TestLiveLog:
    def test_copies_every_line_into_the_log(self, caplog):
        caplog.set_level(logging.INFO, logger="tests.waiting")
        live = LiveLog(iter(["one", "two"]), logging.getLogger("tests.waiting"), JOB).start()
        live.finish()
        assert not live.thread.is_alive()
        assert live.thread.daemon
        assert live.count == 2
        assert [r.getMessage() for r in caplog.records] == [
            f"Following the live log of job {JOB}",
            "[algorithm] one",
            "[algorithm] two",
        ]

    def test_a_broken_stream_only_warns(self, caplog):
        def lines() -> Iterator[str]:
            yield "one"
            raise ConnectionError("reset by peer")

        live = LiveLog(lines(), logging.getLogger("tests.waiting"), JOB).start()
        live.finish()
        assert live.count == 1
        assert f"Live log of job {JOB} stopped: reset by peer" in caplog.text

    def test_finish_waits_at_most_the_timeout(self):
        never = threading.Event()

        def lines() -> Iterator[str]:
            never.wait(5)
            yield from ()

        live = LiveLog(lines(), logging.getLogger("tests.waiting"), JOB).start()
        started = time.monotonic()
        live.finish(timeout=0.05)
        assert time.monotonic() - started < 2
        never.set()


class TestPollUntilTerminal:
    def test_returns_the_terminal_job_and_follows_the_live_log_once(self):
        hook = ScriptedHook(
            [
                job(10),
                job(RUNNING),
                job(RUNNING),
                job(70, finished=True),
            ],
            lines=["hello"],
        )
        done = Waiter(hook)._poll_until_terminal(JOB, None)
        assert (done.status, done.is_terminal) == (70, True)
        assert hook.streams == [(JOB, {"own_session": True, "timeout": LIVE_LOG_READ_TIMEOUT})]

    @pytest.mark.parametrize(("ocean_node", "stream_logs"), [(False, True), (True, False)])
    def test_no_live_log_without_a_node_or_when_off(self, ocean_node, stream_logs):
        hook = ScriptedHook([job(RUNNING), job(70, finished=True)], ocean_node=ocean_node)
        Waiter(hook, stream_logs=stream_logs)._poll_until_terminal(JOB, None)
        assert hook.streams == []

    def test_the_deadline_stops_the_job(self):
        hook = ScriptedHook([job(20)])
        with pytest.raises(OceanJobError, match="did not finish in time; it was stopped") as info:
            Waiter(hook)._poll_until_terminal(JOB, time.time() + 0.05)
        assert info.value.job_id == JOB
        assert hook.stopped == [JOB]


class TestDeadline:
    def test_none_without_limits(self):
        assert Waiter(ScriptedHook([job(0)]))._deadline({}, None) is None

    def test_the_earliest_of_the_wait_timeout_and_execution_timeout(self):
        waiter = Waiter(ScriptedHook([job(0)]))
        waiter.execution_timeout = timedelta(seconds=100)
        start = datetime.now(timezone.utc)
        context = {"ti": SimpleNamespace(start_date=start)}
        expected = start.timestamp() + 100 - DEADLINE_MARGIN
        assert waiter._deadline(context, None) == pytest.approx(expected)
        assert waiter._deadline(context, 3600) == pytest.approx(expected)
        assert waiter._deadline(context, 1) == pytest.approx(time.time() + 1, abs=1)


class TestComplete:
    def test_success(self):
        finished = job(70, finished=True)
        waiter = Waiter(ScriptedHook([finished]))
        assert waiter._complete({"status": "succeeded", "job_id": JOB, "job": finished.to_dict()}) == finished

    def test_timeout_stops_the_job(self):
        hook = ScriptedHook([job(20)])
        with pytest.raises(OceanJobError, match="waited too long; the job was stopped"):
            Waiter(hook)._complete({"status": "timeout", "job_id": JOB, "message": "waited too long"})
        assert hook.stopped == [JOB]

    @pytest.mark.parametrize(
        ("event", "match"),
        [
            (None, "Unexpected trigger event: None"),
            ({"status": "error"}, "Unexpected trigger event"),
            ({"status": "error", "job_id": JOB, "message": "poll failed"}, "poll failed"),
            ({"status": "succeeded", "job_id": JOB}, f"Waiting for job {JOB} failed"),
        ],
    )
    def test_malformed_or_failed_events(self, event, match):
        with pytest.raises(OceanJobError, match=match):
            Waiter(ScriptedHook([job(20)]))._complete(event)

    def test_a_failed_job_raises_with_its_status(self):
        failed = job(70, finished=True, stopreq=1)
        with pytest.raises(OceanJobError, match=f"Compute job {JOB} stopped") as info:
            Waiter(ScriptedHook([failed]))._complete(
                {"status": "failed", "job_id": JOB, "job": failed.to_dict()}
            )
        assert info.value.status == failed.to_dict()
