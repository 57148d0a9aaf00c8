"""Operators that pay for and start an Ocean compute-to-data job, and stop one."""

from __future__ import annotations

import time
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.configuration import conf

from airflow_provider_ocean.links import OceanDatasetLink, OceanJobStatusLink, ddo_url, job_status_url

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

    from airflow_provider_ocean.hooks.ocean import OceanComputeHook
    from airflow_provider_ocean.models import JobStatus

#: XCom key of the payment (order tx ids) of the last attempt/run, reused by retries and later runs.
PAYMENT_XCOM_KEY = "ocean_payment"
#: XCom key of the started job id (also the task's return value).
JOB_ID_XCOM_KEY = "ocean_job_id"
#: Seconds kept free before ``execution_timeout`` so the job can be stopped before Airflow kills the task.
DEADLINE_MARGIN = 10.0


def _seconds(value: timedelta | float | int | str | None) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | dict):
        return [value]
    return list(value)


def _did_of(item: Any) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        return item.get("did") or item.get("documentId")
    return getattr(item, "did", None)


class _OceanJobWaiter:
    """Waiting, finishing and stopping shared by the start operator and the sensor."""

    ocean_conn_id: str
    poll_interval: float
    stop_on_kill: bool
    log: Any

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
        while True:
            job = self.hook.get_job_status(job_id)
            if job.status != last:
                log_progress(self.log, job, started, time.monotonic())
                last = job.status
            if job.is_terminal:
                return job
            if deadline is not None and time.time() >= deadline:
                self._stop_quietly(job_id)
                raise OceanJobError(f"Job {job_id} did not finish in time; it was stopped", job_id=job_id)
            pause = (
                self.poll_interval if deadline is None else min(self.poll_interval, deadline - time.time())
            )
            time.sleep(max(pause, 0.0))

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


class OceanComputeStartOperator(_OceanJobWaiter, BaseOperator):
    """Pay for (or reuse the orders of) and start an Ocean compute-to-data job; optionally wait for it.

    Orders paid by an earlier attempt or an earlier DAG run of this task are reused while the chain
    says they are still valid, so retries and scheduled runs do not pay twice.

    .. seealso:: the README's "Operators" section.

    :param datasets: the datasets (templated): a DID, or a list of DIDs or dicts
        ``{"did", "service_id", "userdata"}``; the first is computed on through its compute service.
    :param algorithm: the algorithm (templated): a published algorithm DID, a dict
        ``{"did", "service_id", "algocustomdata", "userdata"}``, or a raw algorithm
        ``{"rawcode" | "url", "container": {"entrypoint", "image", "tag", "checksum"}}``.
    :param environment: compute environment id (templated); default: the Provider's free environment.
    :param ocean_conn_id: the Ocean connection (templated).
    :param order_validity: how long the orders (provider fees) must stay valid, in seconds or a
        timedelta (templated); default: the environment's maximum job duration.
    :param max_fee: refuse to pay more than this many base units of the fee token (templated).
    :param wait_for_completion: wait until the job ends; otherwise return right after the start.
    :param deferrable: wait in the triggerer instead of holding a worker slot
        (default ``[operators] default_deferrable``).
    :param poll_interval: seconds between status checks while waiting.
    :param wait_timeout: how long to wait for the job (seconds or timedelta); at the deadline the job
        is stopped and the task fails. Independent of ``execution_timeout``, which is honoured too.
    :param reuse_orders: reuse still-valid orders from the previous attempt or run of this task.
    :param acquire_datatokens: obtain missing datatokens: ``None`` (off), ``"dispenser"``,
        ``"fixed_rate"`` or ``"any"``.
    :param max_datatoken_price: highest price (base-token base units) per datatoken bought.
    :param stop_on_kill: stop the job when the task is killed.
    :return: the job id (XCom ``return_value``); the payment and links are pushed under their own keys.
    """

    template_fields: Sequence[str] = (
        "datasets",
        "algorithm",
        "environment",
        "ocean_conn_id",
        "order_validity",
        "max_fee",
    )
    template_fields_renderers = {"datasets": "json", "algorithm": "json"}
    operator_extra_links = (OceanJobStatusLink(), OceanDatasetLink())
    ui_color = "#bfe3ff"

    def __init__(
        self,
        *,
        datasets: Any,
        algorithm: Any,
        environment: str | None = None,
        ocean_conn_id: str = "ocean_default",
        order_validity: timedelta | float | None = None,
        max_fee: int | str | None = None,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30.0,
        wait_timeout: timedelta | float | None = None,
        reuse_orders: bool = True,
        acquire_datatokens: str | None = None,
        max_datatoken_price: int | None = None,
        stop_on_kill: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.datasets = datasets
        self.algorithm = algorithm
        self.environment = environment
        self.ocean_conn_id = ocean_conn_id
        self.order_validity = order_validity
        self.max_fee = max_fee
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = float(poll_interval)
        self.wait_timeout = wait_timeout
        self.reuse_orders = reuse_orders
        self.acquire_datatokens = acquire_datatokens
        self.max_datatoken_price = max_datatoken_price
        self.stop_on_kill = stop_on_kill
        self.job_id: str | None = None

    def _previous_payment(self, context: Context, datasets: list[Any]) -> dict[str, Any] | None:
        """The payment of the last attempt or run of this task, if it paid for the same inputs."""
        if not self.reuse_orders:
            return None
        previous = context["ti"].xcom_pull(
            task_ids=self.task_id, key=PAYMENT_XCOM_KEY, include_prior_dates=True
        )
        if not isinstance(previous, dict):
            return None
        paid = [p.get("did") for p in previous.get("datasets") or []]
        if paid != [_did_of(d) for d in datasets]:
            return None
        return previous

    def execute(self, context: Context) -> str:
        datasets = _as_list(self.datasets)
        if not datasets:
            from airflow_provider_ocean.exceptions import OceanValidationError

            raise OceanValidationError("`datasets` is empty: give at least one dataset DID")
        validity = _seconds(self.order_validity)
        payment = self.hook.pay_for_compute(
            datasets,
            self.algorithm,
            self.environment,
            timedelta(seconds=validity) if validity else None,
            int(self.max_fee) if self.max_fee not in (None, "") else None,
            self._previous_payment(context, datasets),
            acquire_datatokens=self.acquire_datatokens,
            max_datatoken_price=self.max_datatoken_price,
        )
        # Persist the orders before starting: a retry reuses them instead of paying again.
        context["ti"].xcom_push(key=PAYMENT_XCOM_KEY, value=payment)
        orders = [p for p in [*payment["datasets"], payment.get("algorithm")] if p]
        for order in orders:
            self.log.info(
                "Paid: %s %s -> %s (%s)",
                order["role"],
                order["did"],
                order["transfer_tx_id"],
                order["action"],
            )
        job = self.hook.start_compute(datasets, self.algorithm, payment=payment)
        self.job_id = job.job_id
        context["ti"].xcom_push(key=JOB_ID_XCOM_KEY, value=job.job_id)
        settings = self.hook.settings
        OceanJobStatusLink.persist(
            context, job_status_url(settings.provider_url, self.hook.consumer_address, job.job_id)
        )
        OceanDatasetLink.persist(context, ddo_url(settings.aquarius_url, _did_of(datasets[0]) or ""))
        self.log.info("Started: job %s on environment %s", job.job_id, payment["environment"])
        if not self.wait_for_completion:
            return job.job_id
        deadline = self._deadline(context, _seconds(self.wait_timeout))
        if self.deferrable:
            current = self.hook.get_job_status(job.job_id)
            if current.is_terminal:
                return self._finish(current)
            from airflow_provider_ocean.triggers.ocean import OceanComputeJobTrigger

            self.defer(
                trigger=OceanComputeJobTrigger(
                    job_id=job.job_id,
                    ocean_conn_id=self.ocean_conn_id,
                    poll_interval=self.poll_interval,
                    end_time=deadline,
                    stop_on_kill=self.stop_on_kill,
                ),
                method_name="execute_complete",
                timeout=None,
            )
        return self._finish(self._poll_until_terminal(job.job_id, deadline))

    def _finish(self, job: JobStatus) -> str:
        if not job.is_succeeded:
            self._raise_for(job)
        self.log.info("Finished: job %s (%s results)", job.job_id, len(job.results))
        return job.job_id

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        """Resume after the trigger fired: succeed with the job id, or stop/fail."""
        job = self._complete(event)
        self.job_id = job.job_id
        return self._finish(job)

    def on_kill(self) -> None:
        if self.job_id and self.stop_on_kill:
            self._stop_quietly(self.job_id)


class OceanComputeStopOperator(BaseOperator):
    """Request a stop of an Ocean compute job (the job then ends with ``stopreq == 1``).

    :param job_id: the job id (templated), e.g. ``"{{ ti.xcom_pull('start') }}"``.
    :param ocean_conn_id: the Ocean connection (templated).
    :return: the job's status dict as the Provider returned it (before the stop took effect), if any.
    """

    template_fields: Sequence[str] = ("job_id", "ocean_conn_id")

    def __init__(self, *, job_id: str, ocean_conn_id: str = "ocean_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.ocean_conn_id = ocean_conn_id

    def execute(self, context: Context) -> dict[str, Any] | None:
        from airflow_provider_ocean.hooks.ocean import OceanComputeHook

        before = OceanComputeHook(ocean_conn_id=self.ocean_conn_id).stop_job(self.job_id)
        self.log.info("Requested stop of job %s", self.job_id)
        return before.to_dict() if before else None
