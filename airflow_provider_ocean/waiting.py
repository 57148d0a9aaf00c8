"""The synchronous wait shared by the start operator and the sensor, and the live log it follows.

:class:`OceanJobWaiter` is the mixin both ``OceanComputeStartOperator`` (operators/compute.py) and
``OceanComputeJobStatusSensor`` (sensors/ocean.py) wait, finish and stop jobs with; :class:`LiveLog`
copies a running Ocean Node job's output into the task log while they wait in the worker.
"""

from __future__ import annotations

import threading
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_ocean.status import NodeStatus

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_ocean.hooks.ocean import OceanComputeHook
    from airflow_provider_ocean.models import JobStatus

#: Seconds kept free before ``execution_timeout`` so the job can be stopped before Airflow kills the task.
DEADLINE_MARGIN = 10.0
#: Read timeout of the live log stream (an algorithm may print nothing for a long time).
LIVE_LOG_READ_TIMEOUT = 600.0
#: How long the end of a live log may still take to arrive once the job ended.
LIVE_LOG_DRAIN_SECONDS = 5.0


class LiveLog:
    """Copies a running Ocean Node job's log lines into the task log as they are written (daemon thread).

    One stream per wait (the node replays the whole log on every request); it ends when the container
    stops, the stream breaks or the read timeout passes, and never fails the task.

    :param lines: the lines (nothing is sent before the thread asks for the first one).
    :param log: the task logger.
    :param job_id: the job id (for the messages).
    """

    def __init__(self, lines: Any, log: Any, job_id: str) -> None:
        self.lines = lines
        self.log = log
        self.job_id = job_id
        self.count = 0
        self.thread = threading.Thread(target=self._run, name=f"ocean-live-log-{job_id[-8:]}", daemon=True)

    def _run(self) -> None:
        try:
            for line in self.lines:
                self.count += 1
                self.log.info("[algorithm] %s", line)
        except Exception as exc:  # best effort: the full log is in the job's results
            self.log.warning("Live log of job %s stopped: %s", self.job_id, exc)

    def start(self) -> LiveLog:
        self.log.info("Following the live log of job %s", self.job_id)
        self.thread.start()
        return self

    def finish(self, timeout: float = LIVE_LOG_DRAIN_SECONDS) -> None:
        """Give the last lines a moment to arrive (the stream ends with the container)."""
        self.thread.join(timeout)


class OceanJobWaiter:
    """Waiting, finishing and stopping shared by the start operator and the sensor."""

    ocean_conn_id: str
    poll_interval: float
    stop_on_kill: bool
    log: Any
    defer: Any
    #: Ocean Node: copy the running algorithm's log into the task log while waiting synchronously.
    stream_logs: bool = False

    @cached_property
    def hook(self) -> OceanComputeHook:
        from airflow_provider_ocean.hooks.ocean import OceanComputeHook

        return OceanComputeHook(ocean_conn_id=self.ocean_conn_id)

    def _deadline(self, context: Context, wait_timeout: float | None) -> float | None:
        """The earliest of the wait timeout and ``execution_timeout`` (minus a margin), as epoch seconds."""
        deadlines = []
        if wait_timeout is not None:
            deadlines.append(time.time() + wait_timeout)
        execution_timeout = getattr(self, "execution_timeout", None)
        start_date = getattr(context.get("ti"), "start_date", None)
        if execution_timeout is not None and start_date is not None:
            deadlines.append(start_date.timestamp() + execution_timeout.total_seconds() - DEADLINE_MARGIN)
        return min(deadlines) if deadlines else None

    def _stop_quietly(self, job_id: str) -> None:
        try:
            self.hook.stop_job(job_id)
            self.log.info("Stopped job %s", job_id)
        except Exception as exc:
            self.log.warning("Could not stop job %s: %s", job_id, exc)

    def _raise_for(self, job: JobStatus) -> None:
        from airflow_provider_ocean.exceptions import OceanJobError
        from airflow_provider_ocean.job_report import failure_details

        details = failure_details(self.hook, job)
        self.log.error("Compute %s", details)
        raise OceanJobError(f"Compute {details}", job_id=job.job_id, status=job.to_dict())

    def _poll_until_terminal(self, job_id: str, deadline: float | None) -> JobStatus:
        """Synchronous wait; at the deadline the job is stopped and the task fails."""
        from airflow_provider_ocean.exceptions import OceanJobError
        from airflow_provider_ocean.job_report import log_progress

        started = time.monotonic()
        last: int | None = None
        live: LiveLog | None = None
        try:
            while True:
                job = self.hook.get_job_status(job_id)
                if job.status != last:
                    log_progress(self.log, job, started, time.monotonic())
                    last = job.status
                if job.is_terminal:
                    return job
                if live is None and self._follows_live_log(job):
                    live = self._live_log(job_id)
                if deadline is not None and time.time() >= deadline:
                    self._stop_quietly(job_id)
                    raise OceanJobError(f"Job {job_id} did not finish in time; it was stopped", job_id=job_id)
                pause = (
                    self.poll_interval
                    if deadline is None
                    else min(self.poll_interval, deadline - time.time())
                )
                time.sleep(max(pause, 0.0))
        finally:
            if live is not None:
                live.finish()

    def _follows_live_log(self, job: JobStatus) -> bool:
        """Whether to start following the job's live log now (Ocean Node, algorithm running)."""
        running = job.status == NodeStatus.RUNNING_ALGORITHM  # from then on the live log can be followed
        return bool(self.stream_logs) and running and self.hook.is_ocean_node

    def _live_log(self, job_id: str) -> LiveLog:
        """Start copying the running job's log into the task log (its own HTTP session, a thread).

        :param job_id: the job id.
        """
        lines = self.hook.node.stream_logs(job_id, own_session=True, timeout=LIVE_LOG_READ_TIMEOUT)
        return LiveLog(lines, self.log, job_id).start()

    def _defer_until_done(self, job_id: str, end_time: float | None, *, stop_on_kill: bool) -> None:
        """Hand the wait to :class:`~airflow_provider_ocean.triggers.ocean.OceanComputeJobTrigger`; the
        task resumes in ``execute_complete`` (this raises, as ``defer`` does).

        :param job_id: the job id.
        :param end_time: the trigger's deadline (epoch seconds; ``None``: none).
        :param stop_on_kill: stop the job when the deferred task is killed.
        """
        from airflow_provider_ocean.triggers.ocean import OceanComputeJobTrigger

        self.defer(
            trigger=OceanComputeJobTrigger(
                job_id=job_id,
                ocean_conn_id=self.ocean_conn_id,
                poll_interval=self.poll_interval,
                end_time=end_time,
                stop_on_kill=stop_on_kill,
            ),
            method_name="execute_complete",
            timeout=None,
        )

    def _complete(self, event: dict[str, Any] | None) -> JobStatus:
        """Validate a trigger event: return the finished job, stop it on timeout, raise on failure."""
        from airflow_provider_ocean.exceptions import OceanJobError
        from airflow_provider_ocean.models import JobStatus

        if not event or "status" not in event or "job_id" not in event:
            raise OceanJobError(f"Unexpected trigger event: {event!r}")
        job_id = event["job_id"]
        status = event["status"]
        if status == "timeout":
            self._stop_quietly(job_id)
            raise OceanJobError(f"{event.get('message')}; the job was stopped", job_id=job_id)
        if status == "error" or "job" not in event:
            raise OceanJobError(
                str(event.get("message") or f"Waiting for job {job_id} failed"), job_id=job_id
            )
        job = JobStatus.from_dict(event["job"])
        if not job.is_succeeded:
            self._raise_for(job)
        return job


__all__ = [
    "DEADLINE_MARGIN",
    "LIVE_LOG_DRAIN_SECONDS",
    "LIVE_LOG_READ_TIMEOUT",
    "LiveLog",
    "OceanJobWaiter",
]
