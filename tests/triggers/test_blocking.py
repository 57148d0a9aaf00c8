"""run_blocking: blocking calls of a trigger that a stopping triggerer does not wait for.

The shutdown tests run a real ``asyncio.run`` (what the triggerer's runner process does) while the
trigger's blocking call is held on a ``threading.Event``; they check what is still running when
``asyncio.run`` returned, never how fast. ``HOLD`` only keeps a broken build from hanging forever.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from typing import Any

import pytest

from airflow_provider_ocean.triggers import blocking
from airflow_provider_ocean.triggers.blocking import run_blocking
from airflow_provider_ocean.triggers.ocean import OceanComputeJobTrigger

#: Longest a held call waits for its release (a safety net against hanging, not a speed target).
HOLD = 30.0

JOB = "d" * 32


class HeldCall:
    """A blocking call that runs until released (or ``HOLD`` passes), recording what happened."""

    def __init__(self, result: Any = None) -> None:
        self.result = result
        self.entered = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()
        self.released_in_time: bool | None = None

    def __call__(self, *args: Any) -> Any:
        self.entered.set()
        try:
            self.released_in_time = self.release.wait(HOLD)
            return self.result
        finally:
            self.finished.set()


class FakeSettings:
    provider_url = "http://127.0.0.1:9"


class FakeHook:
    """The part of the hook the trigger uses; ``list_jobs`` and ``stop_job`` are held calls."""

    def __init__(self) -> None:
        self.settings = FakeSettings()
        self.consumer_address = "0x" + "ab" * 20
        self.list_jobs = HeldCall(result=[])
        self.stop_job = HeldCall()


@pytest.fixture
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> list[threading.ExceptHookArgs]:
    """Exceptions that escaped any thread during the test."""
    errors: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", errors.append)
    return errors


async def entered(call: HeldCall) -> None:
    """Wait (off the loop, in the default executor) until the held call has started."""
    assert await asyncio.to_thread(call.entered.wait, HOLD)


def join_blocking_threads() -> None:
    """Wait until every thread of run_blocking has ended (it hands its outcome over last)."""
    for thread in threading.enumerate():
        if thread.name.startswith("ocean-blocking-"):
            thread.join(HOLD)
            assert not thread.is_alive(), thread


def release_after_run(call: HeldCall) -> bool:
    """After ``asyncio.run`` returned: whether ``call`` was still held then; release it and let it end."""
    still_held = not call.finished.is_set()
    call.release.set()
    assert call.finished.wait(HOLD)
    join_blocking_threads()
    return still_held


def bad_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


class TestShutdown:
    def test_asyncio_run_returns_while_list_jobs_is_still_held(
        self,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
        thread_errors: list[threading.ExceptHookArgs],
    ) -> None:
        hook = FakeHook()
        trigger = OceanComputeJobTrigger(job_id=JOB, ocean_conn_id="ocean_unused", poll_interval=5)
        monkeypatch.setattr(trigger, "_hook", lambda: hook)

        async def main() -> None:
            async def consume() -> list[Any]:
                return [event async for event in trigger.run()]

            task = asyncio.create_task(consume())
            await entered(hook.list_jobs)
            assert not task.done(), task
            # the triggerer stopping: its remaining trigger tasks are cancelled, then asyncio.run ends
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        with caplog.at_level(logging.DEBUG):
            asyncio.run(main())
            still_held = release_after_run(hook.list_jobs)

        assert still_held, "asyncio.run waited for the blocking list_jobs call"
        assert hook.list_jobs.released_in_time
        assert bad_records(caplog) == []
        assert thread_errors == []

    def test_asyncio_run_returns_while_the_hook_is_still_being_built(
        self, monkeypatch: pytest.MonkeyPatch, thread_errors: list[threading.ExceptHookArgs]
    ) -> None:
        build = HeldCall(result=FakeHook())
        trigger = OceanComputeJobTrigger(job_id=JOB, ocean_conn_id="ocean_unused")
        monkeypatch.setattr(trigger, "_hook", build)

        pending: list[asyncio.Task[Any]] = []

        async def main() -> None:
            async def consume() -> list[Any]:
                return [event async for event in trigger.run()]

            pending.append(asyncio.create_task(consume()))
            await entered(build)
            # returning with the task pending: asyncio.run cancels it, as after the triggerer's loop

        asyncio.run(main())
        still_held = release_after_run(build)

        assert still_held, "asyncio.run waited for the blocking hook build"
        assert pending[0].cancelled()
        assert thread_errors == []

    def test_on_kill_gives_up_waiting_for_a_held_stop_request(
        self, monkeypatch: pytest.MonkeyPatch, thread_errors: list[threading.ExceptHookArgs]
    ) -> None:
        hook = FakeHook()
        trigger = OceanComputeJobTrigger(job_id=JOB, ocean_conn_id="ocean_unused")
        monkeypatch.setattr(trigger, "_hook", lambda: hook)

        async def main() -> None:
            task = asyncio.create_task(trigger.on_kill())
            await entered(hook.stop_job)
            task.cancel()  # the triggerer's on_kill timeout, or its shutdown
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        still_held = release_after_run(hook.stop_job)

        assert still_held, "asyncio.run waited for the blocking stop_job call"
        assert thread_errors == []


class TestRunBlocking:
    @pytest.mark.asyncio
    async def test_result_comes_back_from_a_daemon_thread(self) -> None:
        def call(a: int, *, b: int) -> tuple[int, str, bool]:
            return a + b, threading.current_thread().name, threading.current_thread().daemon

        total, name, daemon = await run_blocking(call, 2, b=3)

        assert total == 5
        assert name != threading.current_thread().name
        assert daemon

    @pytest.mark.asyncio
    async def test_exception_reaches_the_awaiting_coroutine(self) -> None:
        error = ValueError("bad answer")

        def call() -> None:
            raise error

        with pytest.raises(ValueError) as caught:
            await run_blocking(call)
        assert caught.value is error

    @pytest.mark.asyncio
    async def test_stop_iteration_becomes_a_runtime_error(self) -> None:
        with pytest.raises(RuntimeError, match="StopIteration"):
            await run_blocking(next, iter(()))

    @pytest.mark.asyncio
    async def test_context_variables_are_visible(self) -> None:
        var: contextvars.ContextVar[str] = contextvars.ContextVar("var")
        var.set("from the loop")
        assert await run_blocking(var.get) == "from the loop"

    @pytest.mark.asyncio
    @pytest.mark.parametrize("outcome", ["result", "error"])
    async def test_late_outcome_after_cancellation_is_dropped_quietly(
        self,
        outcome: str,
        caplog: pytest.LogCaptureFixture,
        thread_errors: list[threading.ExceptHookArgs],
    ) -> None:
        held = HeldCall(result="late")

        def call() -> str:
            value = held()
            if outcome == "error":
                raise OSError("late failure")
            return value

        loop = asyncio.get_running_loop()
        loop_errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
        caplog.set_level(logging.DEBUG, logger=blocking.__name__)

        task = asyncio.create_task(run_blocking(call))
        await entered(held)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not held.finished.is_set()
        held.release.set()
        assert await run_blocking(held.finished.wait, HOLD)
        # the thread's hand-over runs in the loop: let it, then check it freed the slot and said nothing bad
        for _ in range(100):
            if blocking._slots_of(loop)._value == blocking.MAX_THREADS:
                break
            await asyncio.sleep(0.01)

        assert blocking._slots_of(loop)._value == blocking.MAX_THREADS
        assert loop_errors == []
        assert thread_errors == []
        assert bad_records(caplog) == []
        assert [r.getMessage() for r in caplog.records if r.name == blocking.__name__] == [
            f"Dropped the late {outcome} of a cancelled blocking call"
        ]

    @pytest.mark.asyncio
    async def test_at_most_max_threads_calls_run_at_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(blocking, "MAX_THREADS", 2)
        monkeypatch.setattr(blocking, "_slots", type(blocking._slots)())
        calls = [HeldCall(result=i) for i in range(3)]
        tasks = [asyncio.create_task(run_blocking(call)) for call in calls]
        await entered(calls[0])
        await entered(calls[1])
        assert blocking._slots_of(asyncio.get_running_loop()).locked()
        assert not tasks[2].done()
        assert not calls[2].entered.is_set()  # its thread is not started before a slot is free

        calls[0].release.set()
        assert await tasks[0] == 0
        calls[1].release.set()
        calls[2].release.set()
        assert await asyncio.gather(*tasks[1:]) == [1, 2]
        assert calls[2].entered.is_set()

    def test_closed_loops_are_forgotten(self) -> None:
        loops: list[asyncio.AbstractEventLoop] = []

        async def one() -> int:
            loops.append(asyncio.get_running_loop())
            return await run_blocking(int, "7")

        assert asyncio.run(one()) == 7
        assert loops[0] in blocking._slots
        assert asyncio.run(one()) == 7

        assert loops[0] not in blocking._slots
        assert loops[1] in blocking._slots
