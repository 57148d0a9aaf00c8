"""A sensor that waits for an Ocean compute job to finish."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

from airflow_provider_ocean.links import OceanJobStatusLink, job_status_url
from airflow_provider_ocean.waiting import OceanJobWaiter

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

    from airflow_provider_ocean.models import JobStatus
    from airflow_provider_ocean.waiting import LiveLog


class OceanComputeJobStatusSensor(OceanJobWaiter, BaseSensorOperator):
    """Wait until an Ocean compute job ends; fail fast when it fails.

    Succeeds on a finished job (status 70 without a stop request). Fails with the job's status text and
    the tail of its algorithm log on a provisioning failure (31/32), a stopped job or a job killed at its
    maximum duration; with ``soft_fail`` those outcomes (and the sensor timeout) skip instead.

    :param job_id: the job id (templated), e.g. ``"{{ ti.xcom_pull(task_ids='start') }}"``.
    :param ocean_conn_id: the Ocean connection (templated).
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``); in that mode
        the sensor ``timeout`` becomes the trigger's deadline, at which the job is stopped.
    :param stop_on_timeout: stop the job when the sensor times out.
    :param stream_logs: Ocean Node only, ``mode="poke"`` without deferral: copy the running algorithm's
        output into the task log as it is written (``[algorithm]`` lines; one stream per task try, so not
        in reschedule mode, where every poke is a new process).
    :param kwargs: the usual sensor arguments (``poke_interval``, ``timeout``, ``mode``, ``soft_fail``...).
    :return: the finished job's status dict (XCom).
    """

    template_fields: Sequence[str] = ("job_id", "ocean_conn_id")
    operator_extra_links = (OceanJobStatusLink(),)
    ui_color = "#d6ecff"

    def __init__(
        self,
        *,
        job_id: str,
        ocean_conn_id: str = "ocean_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        stop_on_timeout: bool = True,
        stream_logs: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.ocean_conn_id = ocean_conn_id
        self.deferrable = deferrable
        self.stop_on_timeout = stop_on_timeout
        self.stream_logs = stream_logs
        self.stop_on_kill = False
        self._last_status: int | None = None
        self._live: LiveLog | None = None

    @property
    def poll_interval(self) -> float:  # type: ignore[override]
        return float(self.poke_interval)

    def _outcome(self, job: JobStatus) -> bool:
        if job.is_succeeded:
            self.log.info("Job %s finished: %s", job.job_id, job.status_text.strip())
            return True
        if self.soft_fail:
            from airflow_provider_ocean.job_report import describe

            raise AirflowSkipException(f"Compute {describe(job)} (soft_fail)")
        self._raise_for(job)
        return False  # pragma: no cover - _raise_for always raises

    def poke(self, context: Context) -> bool | PokeReturnValue:
        job = self.hook.get_job_status(self.job_id)
        if job.status != self._last_status:
            self.log.info("Job %s: status %s %s", job.job_id, job.status, job.status_text.strip())
            self._last_status = job.status
        if not job.is_terminal:
            if (
                self._live is None
                and self.mode == "poke"
                and not self.deferrable
                and self._follows_live_log(job)
            ):
                self._live = self._live_log(job.job_id)
            return False
        if self._live is not None:
            self._live.finish()
        return PokeReturnValue(is_done=self._outcome(job), xcom_value=job.to_dict())

    def execute(self, context: Context) -> Any:
        OceanJobStatusLink.persist(
            context, job_status_url(self.hook.settings.provider_url, self.hook.consumer_address, self.job_id)
        )
        if not self.deferrable:
            try:
                return super().execute(context)
            except AirflowSensorTimeout:
                if self.stop_on_timeout:
                    self._stop_quietly(self.job_id)
                raise
            except AirflowSkipException as exc:
                if self.stop_on_timeout and str(exc).startswith("Sensor has timed out"):
                    self._stop_quietly(self.job_id)
                raise
        done = self.poke(context)
        if isinstance(done, PokeReturnValue) and done.is_done:
            return done.xcom_value
        timeout = self.timeout.total_seconds() if isinstance(self.timeout, timedelta) else float(self.timeout)
        end_time = min(time.time() + timeout, self._deadline(context, None) or float("inf"))
        self._defer_until_done(self.job_id, end_time, stop_on_kill=True)
        return None  # pragma: no cover - defer raises

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired."""
        if event and event.get("status") == "timeout":
            if self.stop_on_timeout:
                self._stop_quietly(self.job_id)
            message = f"Sensor timed out waiting for job {self.job_id}"
            if self.soft_fail:
                raise AirflowSkipException(message)
            raise AirflowSensorTimeout(message)
        if event and event.get("job") and event.get("status") != "succeeded" and self.soft_fail:
            from airflow_provider_ocean.job_report import describe
            from airflow_provider_ocean.models import JobStatus

            raise AirflowSkipException(f"Compute {describe(JobStatus.from_dict(event['job']))} (soft_fail)")
        return self._complete(event).to_dict()
