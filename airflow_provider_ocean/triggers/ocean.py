"""Deferrable waiting on an Ocean compute job."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_ocean.exceptions import RateLimitedError
from airflow_provider_ocean.triggers.blocking import run_blocking
from airflow_provider_ocean.triggers.polling import OwnerStatusPoller

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

#: Consecutive failed polls tolerated before the trigger reports an error.
MAX_POLL_FAILURES = 5
#: Polls in a row that must miss the job (in fresh lists) before it is reported as gone.
MAX_NOT_FOUND = 3


def _transient(exc: BaseException) -> bool:
    from airflow_provider_ocean.exceptions import OceanConnectionError, OceanProviderError

    if isinstance(exc, RateLimitedError | OceanConnectionError | TimeoutError | ConnectionError):
        return True
    if isinstance(exc, OceanProviderError):
        return exc.status is None or exc.retryable
    try:
        import requests

        return isinstance(exc, requests.RequestException)
    except ImportError:  # pragma: no cover - requests is a dependency
        return False


class OceanComputeJobTrigger(BaseTrigger):
    """Wait for an Ocean compute job to end, then fire one event.

    All triggers of one triggerer that wait on jobs of the same Provider and consumer share one status
    request per poll interval.

    :param job_id: the compute job id.
    :param ocean_conn_id: the Ocean connection (only its id travels; the key is read in the triggerer).
    :param poll_interval: seconds between status checks.
    :param end_time: absolute deadline (epoch seconds); at it the trigger fires a ``timeout`` event so
        that the task can stop the job before failing. ``None`` waits forever.
    :param stop_on_kill: stop the job when a user kills the deferred task (Airflow 3.3+).
    """

    def __init__(
        self,
        *,
        job_id: str,
        ocean_conn_id: str = "ocean_default",
        poll_interval: float = 30.0,
        end_time: float | None = None,
        stop_on_kill: bool = True,
    ) -> None:
        super().__init__()
        self.job_id = job_id
        self.ocean_conn_id = ocean_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = end_time
        self.stop_on_kill = stop_on_kill

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{self.__class__.__module__}.{self.__class__.__qualname__}",
            {
                "job_id": self.job_id,
                "ocean_conn_id": self.ocean_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "stop_on_kill": self.stop_on_kill,
            },
        )

    def _hook(self):
        from airflow_provider_ocean.hooks.ocean import OceanComputeHook

        return OceanComputeHook(ocean_conn_id=self.ocean_conn_id)

    def _event(self, status: str, message: str, job: Any = None) -> TriggerEvent:
        payload: dict[str, Any] = {"status": status, "job_id": self.job_id, "message": message}
        if job is not None:
            payload["job"] = job.to_dict()
        return TriggerEvent(payload)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            # built off the event loop: importing the hook and reading the connection block for a second.
            # Every blocking call runs in a daemon thread, so a triggerer stopping never waits for one.
            hook = await run_blocking(self._hook)
            key = await run_blocking(lambda: (hook.settings.provider_url, hook.consumer_address))
            poller = OwnerStatusPoller.shared(key, lambda: run_blocking(hook.list_jobs))
        except Exception as exc:
            yield self._event("error", f"Cannot poll job {self.job_id}: {exc}")
            return
        started = time.monotonic()
        failures = 0
        not_found = 0
        last_status: int | None = None
        while True:
            if self.end_time is not None and time.time() >= self.end_time:
                yield self._event("timeout", f"Job {self.job_id} did not finish before the deadline")
                return
            delay = self.poll_interval
            try:
                # Any list younger than one interval will do, even one fetched before this trigger
                # started: demanding a newer one made every trigger that arrived after the last fetch
                # send its own request, one per arrival while a batch of tasks deferred one by one.
                job = await poller.get(self.job_id, max_age=self.poll_interval)
                listed_after_start = poller.fetched_at >= started
                failures = 0
            except Exception as exc:
                if not _transient(exc):
                    yield self._event("error", f"Polling job {self.job_id} failed: {exc}")
                    return
                failures += 1
                if failures > MAX_POLL_FAILURES:
                    yield self._event("error", f"Polling job {self.job_id} failed {failures} times: {exc}")
                    return
                self.log.warning("Poll %s of job %s failed (%s); retrying", failures, self.job_id, exc)
                if isinstance(exc, RateLimitedError):
                    delay = max(delay, exc.retry_at - time.monotonic())
                else:
                    delay = min(self.poll_interval * 2**failures, 300.0)
                job = None
            else:
                if job is None:
                    # a list fetched before this trigger started may predate the job: not counted
                    not_found += 1 if listed_after_start else 0
                    if not_found >= MAX_NOT_FOUND:
                        yield self._event("error", f"Job {self.job_id} is not known to the Provider")
                        return
                else:
                    not_found = 0
                    if job.status != last_status:
                        self.log.info(
                            "Job %s: status %s %s", self.job_id, job.status, job.status_text.strip()
                        )
                        last_status = job.status
                    if job.is_terminal:
                        yield self._event(
                            job.outcome, f"Job {self.job_id} ended: {job.status_text.strip()}", job
                        )
                        return
            if self.end_time is not None:
                delay = min(delay, max(self.end_time - time.time(), 0.0))
            await asyncio.sleep(delay)

    async def on_kill(self) -> None:
        """Stop the job when a user kills the deferred task (Airflow 3.3+); best effort."""
        if not self.stop_on_kill:
            return
        try:
            hook = await run_blocking(self._hook)
            await run_blocking(hook.stop_job, self.job_id)
            self.log.info("Stopped job %s because its task was killed", self.job_id)
        except Exception as exc:
            self.log.warning("Could not stop job %s: %s", self.job_id, exc)
