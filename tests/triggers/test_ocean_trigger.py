"""OceanComputeJobTrigger and OwnerStatusPoller under asyncio.

The first part drives the trigger against the real sandbox, both personalities (``[provider_v4]``,
``[ocean_node]``), directly or through a real local HTTP proxy that counts status requests and injects
errors; the second part feeds the poller/trigger a fake owner list to check the failure handling quickly
and deterministically.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from airflow.sdk.serde import deserialize, serialize
from airflow.triggers.base import TriggerEvent

from airflow_provider_ocean.exceptions import (
    OceanConfigError,
    OceanConnectionError,
    OceanProviderError,
    RateLimitedError,
)
from airflow_provider_ocean.hooks.ocean import OceanComputeHook
from airflow_provider_ocean.models import JobStatus
from airflow_provider_ocean.triggers import ocean as trigger_module
from airflow_provider_ocean.triggers.ocean import OceanComputeJobTrigger
from airflow_provider_ocean.triggers.polling import OwnerStatusPoller
from tests.operators.support import (
    make_hook,
    proxy_server,
    raw_algorithm,
    sleeping_algorithm,
    stop_if_running,
    wait_terminal,
)
from tests.personalities import Personality

CLASSPATH = "airflow_provider_ocean.triggers.ocean.OceanComputeJobTrigger"
#: A throw-away key for the connection of the fake-fetch tests (never used on a chain).
FAKE_KEY = "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
FAKE_CONN = json.dumps({"conn_type": "ocean", "host": "http://127.0.0.1:9", "password": FAKE_KEY})


async def collect(trigger: OceanComputeJobTrigger, timeout: float = 60.0) -> list[TriggerEvent]:
    """Every event the trigger yields until its generator ends."""

    async def run() -> list[TriggerEvent]:
        return [event async for event in trigger.run()]

    return await asyncio.wait_for(run(), timeout)


def finished(job_id: str, status: int = 70, stopreq: int = 0) -> JobStatus:
    return JobStatus(
        job_id=job_id, status=status, status_text="Job finished", date_finished="1", stopreq=stopreq
    )


def running(job_id: str) -> JobStatus:
    return JobStatus(job_id=job_id, status=40, status_text="Running algorithm ")


# -- serialization ------------------------------------------------------------------------------------


class TestSerialize:
    @pytest.mark.parametrize("end_time", [None, 1_800_000_000.5])
    @pytest.mark.parametrize("stop_on_kill", [True, False])
    def test_serialize_round_trips(self, end_time: float | None, stop_on_kill: bool) -> None:
        trigger = OceanComputeJobTrigger(
            job_id="a" * 32,
            ocean_conn_id="my_ocean",
            poll_interval=2,
            end_time=end_time,
            stop_on_kill=stop_on_kill,
        )
        classpath, kwargs = trigger.serialize()
        assert classpath == CLASSPATH
        assert kwargs == {
            "job_id": "a" * 32,
            "ocean_conn_id": "my_ocean",
            "poll_interval": 2.0,
            "end_time": end_time,
            "stop_on_kill": stop_on_kill,
        }
        assert all(isinstance(v, str | int | float | bool | type(None)) for v in kwargs.values())
        # the classpath is importable and the kwargs rebuild an identical trigger
        from airflow.sdk._shared.module_loading import import_string

        assert import_string(classpath) is OceanComputeJobTrigger
        assert OceanComputeJobTrigger(**kwargs).serialize() == (classpath, kwargs)
        # what Airflow does with the kwargs when a task defers
        assert deserialize(serialize(kwargs)) == kwargs

    def test_kwargs_carry_no_secret_and_no_address(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_OCEAN_FAKE", FAKE_CONN)
        trigger = OceanComputeJobTrigger(job_id="b" * 32, ocean_conn_id="ocean_fake")
        text = json.dumps(serialize(trigger.serialize()[1]))
        bare = FAKE_KEY[2:]
        address = OceanComputeHook("ocean_fake").consumer_address
        assert bare not in text.lower()
        assert address.lower() not in text.lower()
        assert not re.search(r"[0-9a-fA-F]{64}", text)


# -- against the sandbox ------------------------------------------------------------------------------


@pytest.mark.chain
class TestTriggerOnSandbox:
    @pytest.mark.asyncio
    async def test_finished_job_gives_exactly_one_success_event(
        self, any_sandbox: Personality, any_conn: str
    ) -> None:
        hook = make_hook(any_conn)
        job_id = any_sandbox.start_registered(hook)
        wait_terminal(hook, job_id)

        events = await collect(
            OceanComputeJobTrigger(job_id=job_id, ocean_conn_id=any_conn, poll_interval=0.5)
        )

        assert len(events) == 1
        payload = events[0].payload
        assert payload["status"] == "succeeded"
        assert payload["job_id"] == job_id
        assert payload["job"]["status"] == 70
        assert payload["job"]["stopreq"] == 0
        assert payload["job"]["status_text"].strip() in payload["message"]
        # a node says "Job settling" until its payment cron claimed the job, then "Job finished"
        expected = {"Job settling", "Job finished"} if any_sandbox.is_node else {"Job finished"}
        assert payload["job"]["status_text"].strip() in expected
        assert JobStatus.from_dict(payload["job"]).is_succeeded
        assert deserialize(serialize(payload)) == payload  # what dag.test/the triggerer do with it

    @pytest.mark.asyncio
    async def test_running_job_then_failed_event(self, any_sandbox: Personality, any_conn: str) -> None:
        hook = make_hook(any_conn)
        job_id = any_sandbox.start_raw(hook, raw_algorithm("x"))  # v4: status 32; node: exit code 1

        events = await collect(
            OceanComputeJobTrigger(job_id=job_id, ocean_conn_id=any_conn, poll_interval=0.5)
        )

        assert [e.payload["status"] for e in events] == ["failed"]
        job = JobStatus.from_dict(events[0].payload["job"])
        assert job.is_terminal
        assert not job.is_succeeded
        if any_sandbox.is_node:
            assert "exit code 1" in job.status_text
        else:
            assert job.status == 32

    @pytest.mark.asyncio
    async def test_timeout_event_at_end_time(self, any_sandbox: Personality, any_conn: str) -> None:
        hook = make_hook(any_conn)
        job_id = any_sandbox.start_raw(hook, sleeping_algorithm(40))
        try:
            started = time.monotonic()
            events = await collect(
                OceanComputeJobTrigger(
                    job_id=job_id, ocean_conn_id=any_conn, poll_interval=1.0, end_time=time.time() + 1.5
                )
            )
            elapsed = time.monotonic() - started

            assert [e.payload["status"] for e in events] == ["timeout"]
            assert events[0].payload["job_id"] == job_id
            assert "deadline" in events[0].payload["message"]
            assert 1.3 <= elapsed < 10
            # the trigger only reports; stopping is the task's job
            assert hook.get_job_status(job_id).stopreq == 0
        finally:
            stop_if_running(hook, job_id)

    @pytest.mark.asyncio
    async def test_many_triggers_share_one_status_request_per_interval(
        self, any_sandbox: Personality, any_conn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        hook = make_hook(any_conn)
        jobs = [any_sandbox.start_raw(hook, sleeping_algorithm(3)) for _ in range(2)]
        interval = 0.5
        with proxy_server(any_sandbox["provider_url"]) as proxy:
            monkeypatch.setenv("AIRFLOW_CONN_OCEAN_PROXY", proxy.conn_json(any_sandbox.info))
            triggers = [
                OceanComputeJobTrigger(
                    job_id=jobs[i % 2], ocean_conn_id="ocean_proxy", poll_interval=interval
                )
                for i in range(10)
            ]
            started = time.monotonic()
            results = await asyncio.gather(*(collect(t) for t in triggers))
            elapsed = time.monotonic() - started
            times = list(proxy.status_times)

        assert all(len(events) == 1 for events in results)
        assert all(events[0].payload["status"] == "succeeded" for events in results)
        assert elapsed > 2  # they really waited for the 3 s jobs
        # 10 triggers polling on their own would send ~10 requests per interval
        intervals = elapsed / interval
        assert len(times) <= intervals + 3, (len(times), intervals)
        busiest = max(sum(1 for u in times if t <= u < t + interval) for t in times)
        assert busiest <= 2, f"{busiest} status requests within one {interval} s interval"

    @pytest.mark.asyncio
    async def test_transient_server_errors_are_tolerated(
        self, any_sandbox: Personality, any_conn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        hook = make_hook(any_conn)
        job_id = any_sandbox.start_registered(hook)
        with proxy_server(any_sandbox["provider_url"]) as proxy:
            monkeypatch.setenv("AIRFLOW_CONN_OCEAN_PROXY", proxy.conn_json(any_sandbox.info))
            # only status requests fail: 3 times HTTP 500 (v4: all of the hook's own retries of one poll,
            # so the trigger sees a failed poll; node: three failed polls), then the proxy forwards again
            proxy.fail_next(500, 500, 500)
            events = await collect(
                OceanComputeJobTrigger(job_id=job_id, ocean_conn_id="ocean_proxy", poll_interval=0.5)
            )
            requests_seen = proxy.status_requests

        assert [e.payload["status"] for e in events] == ["succeeded"]
        assert requests_seen >= 4  # the three failures were really served, then a good answer

    @pytest.mark.asyncio
    @pytest.mark.parametrize("stop_on_kill", [True, False])
    async def test_on_kill_stops_the_job(
        self, any_sandbox: Personality, any_conn: str, stop_on_kill: bool
    ) -> None:
        hook = make_hook(any_conn)
        job_id = any_sandbox.start_raw(hook, sleeping_algorithm(40))
        try:
            trigger = OceanComputeJobTrigger(
                job_id=job_id, ocean_conn_id=any_conn, poll_interval=0.5, stop_on_kill=stop_on_kill
            )
            task = asyncio.create_task(collect(trigger))
            await asyncio.sleep(1.0)
            assert not task.done()  # still waiting on the running job
            task.cancel()  # what the triggerer does to a killed task's trigger ...
            with pytest.raises(asyncio.CancelledError):
                await task
            await trigger.on_kill()  # ... before calling on_kill (Airflow 3.3+)

            if stop_on_kill:
                job = await asyncio.to_thread(wait_terminal, hook, job_id, 30)
                assert job.stopreq == 1
            else:
                await asyncio.sleep(1.0)
                job = await asyncio.to_thread(hook.get_job_status, job_id)
                assert job.stopreq == 0
                assert not job.is_terminal
        finally:
            stop_if_running(hook, job_id)


# -- fake owner lists: failure handling ---------------------------------------------------------------


class FakeFetch:
    """An owner's job list that follows a script: each call pops the next item (a list or an exception)."""

    def __init__(self, script: list[Any], default: Any = None) -> None:
        self.script = list(script)
        self.default = default
        self.calls: list[float] = []

    async def __call__(self) -> list[JobStatus]:
        self.calls.append(time.monotonic())
        await asyncio.sleep(0.01)
        item = self.script.pop(0) if self.script else self.default
        if isinstance(item, BaseException):
            raise item
        return list(item or [])


@pytest.fixture
def fake_conn(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_OCEAN_FAKE", FAKE_CONN)
    return "ocean_fake"


def install(fetch: Callable[[], Awaitable[list[JobStatus]]], conn_id: str) -> OwnerStatusPoller:
    """Register the poller the trigger will find for this connection's owner in the running loop."""
    hook = OceanComputeHook(conn_id)
    return OwnerStatusPoller.shared((hook.settings.provider_url, hook.consumer_address), fetch)


JOB = "c" * 32


class TestTriggerFailureHandling:
    @pytest.mark.asyncio
    async def test_transient_errors_then_success(self, fake_conn: str) -> None:
        fetch = FakeFetch(
            [OceanConnectionError("down"), OceanProviderError("busy", status=503), [running(JOB)]],
            default=[finished(JOB)],
        )
        poller = install(fetch, fake_conn)
        events = await collect(
            OceanComputeJobTrigger(job_id=JOB, ocean_conn_id=fake_conn, poll_interval=0.02)
        )
        assert [e.payload["status"] for e in events] == ["succeeded"]
        assert len(fetch.calls) == 4
        assert poller.requests == 4

    @pytest.mark.asyncio
    async def test_too_many_transient_errors_give_one_error_event(self, fake_conn: str) -> None:
        fetch = FakeFetch([], default=OceanConnectionError("still down"))
        poller = install(fetch, fake_conn)  # keep a reference: the registry holds pollers weakly
        events = await collect(
            OceanComputeJobTrigger(job_id=JOB, ocean_conn_id=fake_conn, poll_interval=0.01)
        )
        assert len(events) == 1
        payload = events[0].payload
        assert payload["status"] == "error"
        assert "failed 6 times" in payload["message"]
        assert len(fetch.calls) == poller.requests == trigger_module.MAX_POLL_FAILURES + 1

    @pytest.mark.asyncio
    @pytest.mark.parametrize(
        "error", [OceanProviderError("forbidden", status=403), OceanConfigError("bad"), ValueError("x")]
    )
    async def test_permanent_error_gives_an_error_event_at_once(
        self, fake_conn: str, error: Exception
    ) -> None:
        fetch = FakeFetch([error], default=[finished(JOB)])
        poller = install(fetch, fake_conn)  # keep a reference: the registry holds pollers weakly
        events = await collect(
            OceanComputeJobTrigger(job_id=JOB, ocean_conn_id=fake_conn, poll_interval=0.01)
        )
        assert [e.payload["status"] for e in events] == ["error"]
        assert len(fetch.calls) == poller.requests == 1

    @pytest.mark.asyncio
    async def test_unknown_job_gives_an_error_event(self, fake_conn: str) -> None:
        fetch = FakeFetch([], default=[finished("d" * 32)])
        poller = install(fetch, fake_conn)  # keep a reference: the registry holds pollers weakly
        events = await collect(
            OceanComputeJobTrigger(job_id=JOB, ocean_conn_id=fake_conn, poll_interval=0.01)
        )
        assert [e.payload["status"] for e in events] == ["error"]
        assert "not known" in events[0].payload["message"]
        assert len(fetch.calls) == poller.requests == trigger_module.MAX_NOT_FOUND

    @pytest.mark.asyncio
    @pytest.mark.parametrize(
        ("job", "outcome"),
        [
            (finished(JOB, stopreq=1), "stopped"),
            (finished(JOB, stopreq=2), "timed_out"),
            (finished(JOB, status=31), "failed"),
        ],
    )
    async def test_terminal_outcomes(self, fake_conn: str, job: JobStatus, outcome: str) -> None:
        poller = install(FakeFetch([], default=[job]), fake_conn)
        events = await collect(
            OceanComputeJobTrigger(job_id=JOB, ocean_conn_id=fake_conn, poll_interval=0.01)
        )
        assert [e.payload["status"] for e in events] == [outcome]
        assert JobStatus.from_dict(events[0].payload["job"]) == job
        assert poller.requests == 1

    @pytest.mark.asyncio
    async def test_deadline_already_passed(self, fake_conn: str) -> None:
        fetch = FakeFetch([], default=[running(JOB)])
        poller = install(fetch, fake_conn)  # keep a reference: the registry holds pollers weakly
        events = await collect(
            OceanComputeJobTrigger(job_id=JOB, ocean_conn_id=fake_conn, end_time=time.time() - 1)
        )
        assert [e.payload["status"] for e in events] == ["timeout"]
        assert fetch.calls == []
        assert poller.requests == 0

    @pytest.mark.asyncio
    async def test_missing_connection_gives_an_error_event(self) -> None:
        events = await collect(OceanComputeJobTrigger(job_id=JOB, ocean_conn_id="ocean_no_such_conn"))
        assert [e.payload["status"] for e in events] == ["error"]

    @pytest.mark.asyncio
    async def test_rate_limit_pauses_polling(self, fake_conn: str) -> None:
        fetch = FakeFetch([OceanProviderError("slow down", status=429)], default=[finished(JOB)])
        poller = install(fetch, fake_conn)  # keep a reference: the registry holds pollers weakly
        started = time.monotonic()
        events = await collect(
            OceanComputeJobTrigger(job_id=JOB, ocean_conn_id=fake_conn, poll_interval=0.05)
        )
        elapsed = time.monotonic() - started
        assert [e.payload["status"] for e in events] == ["succeeded"]
        # without the pause ~100 polls would fit in 5 s; with it: the 429 and one more
        assert len(fetch.calls) == poller.requests == 2
        assert fetch.calls[1] - fetch.calls[0] >= 4.9
        assert elapsed >= 4.9


class TestOwnerStatusPoller:
    @pytest.mark.asyncio
    async def test_concurrent_waiters_share_one_request(self) -> None:
        fetch = FakeFetch([], default=[running(JOB), finished("e" * 32)])
        poller = OwnerStatusPoller(fetch)
        answers = await asyncio.gather(*(poller.get(JOB, max_age=1.0) for _ in range(20)))
        assert poller.requests == 1
        assert len(fetch.calls) == 1
        assert all(a == running(JOB) for a in answers)
        assert await poller.get("e" * 32, max_age=1.0) == finished("e" * 32)
        assert await poller.get("f" * 32, max_age=1.0) is None  # not in the owner's list
        assert poller.requests == 1

    @pytest.mark.asyncio
    async def test_max_age_and_fresher_than(self) -> None:
        fetch = FakeFetch([], default=[running(JOB)])
        poller = OwnerStatusPoller(fetch)
        await poller.get(JOB, max_age=0.2)
        await poller.get(JOB, max_age=0.2)
        assert poller.requests == 1
        await asyncio.sleep(0.25)
        await poller.get(JOB, max_age=0.2)
        assert poller.requests == 2
        await poller.get(JOB, max_age=60, fresher_than=time.monotonic())  # a newcomer wants a fresh list
        assert poller.requests == 3

    @pytest.mark.asyncio
    async def test_rate_limit_backs_off_exponentially(self) -> None:
        fetch = FakeFetch(
            [OceanProviderError("429", status=429), OceanProviderError("429", status=429), [running(JOB)]]
        )
        poller = OwnerStatusPoller(fetch)
        with pytest.raises(RateLimitedError) as first:
            await poller.get(JOB, max_age=0)
        assert first.value.retry_at - time.monotonic() == pytest.approx(5.0, abs=0.5)
        with pytest.raises(RateLimitedError):
            await poller.get(JOB, max_age=0)  # paused: no request at all
        assert poller.requests == 1

        poller._retry_at = 0.0  # pretend the pause is over
        with pytest.raises(RateLimitedError) as second:
            await poller.get(JOB, max_age=0)
        assert second.value.retry_at - time.monotonic() == pytest.approx(10.0, abs=0.5)  # doubled

        poller._retry_at = 0.0
        assert await poller.get(JOB, max_age=0) == running(JOB)
        assert poller._backoff == 0.0  # a success resets the back-off
        assert poller.requests == 3

    @pytest.mark.asyncio
    async def test_errors_reach_every_waiter_and_the_next_call_retries(self) -> None:
        fetch = FakeFetch([OceanConnectionError("down")], default=[running(JOB)])
        poller = OwnerStatusPoller(fetch)
        results = await asyncio.gather(
            *(poller.get(JOB, max_age=1) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, OceanConnectionError) for r in results)
        assert poller.requests == 1
        assert await poller.get(JOB, max_age=1) == running(JOB)
        assert poller.requests == 2

    @pytest.mark.asyncio
    async def test_shared_per_owner_within_a_loop(self) -> None:
        fetch = FakeFetch([])
        a = OwnerStatusPoller.shared(("http://p", "0xA"), fetch)
        assert OwnerStatusPoller.shared(("http://p", "0xA"), FakeFetch([])) is a
        assert OwnerStatusPoller.shared(("http://p", "0xB"), fetch) is not a
        assert OwnerStatusPoller.shared(("http://q", "0xA"), fetch) is not a
