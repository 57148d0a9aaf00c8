"""Operators that pay for and start an Ocean compute-to-data job, and stop one."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.configuration import conf

from airflow_provider_ocean.lineage import StartOperatorLineageMixin
from airflow_provider_ocean.links import OceanDatasetLink, OceanJobStatusLink, ddo_url, job_status_url
from airflow_provider_ocean.operators.resumable import ResumableJobMixin, VariableStateStore
from airflow_provider_ocean.records import as_list
from airflow_provider_ocean.waiting import OceanJobWaiter

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

    from airflow_provider_ocean.models import JobStatus

#: XCom key of the payment (order tx ids) of the last attempt/run, reused by later runs.
PAYMENT_XCOM_KEY = "ocean_payment"
#: XCom key of the started job id (also the task's return value).
JOB_ID_XCOM_KEY = "ocean_job_id"
#: Task-state key (``task_state_store`` on Airflow 3.3+, Variables before) of the started job's reference.
#: Renaming it breaks reattaching for tasks in flight.
JOB_STATE_KEY = "ocean_job"
#: Task-state key of this task instance's payment; unlike XCom it survives the next try.
PAYMENT_STATE_KEY = "ocean_payment"
#: Task-state key of a start request whose answer has not been recorded yet.
PENDING_START_STATE_KEY = "ocean_pending_start"
#: Task-state key of the order transactions signed by a payment not recorded yet (payment/journal.py).
PENDING_ORDERS_STATE_KEY = "ocean_pending_orders"


def _seconds(value: timedelta | float | int | str | None, name: str = "value") -> float | None:
    """A duration in seconds from a timedelta or a number (also as rendered text)."""
    from airflow_provider_ocean.exceptions import OceanValidationError

    if value is None or value == "":
        return None
    try:
        seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    except (TypeError, ValueError):
        raise OceanValidationError(
            f"`{name}` must be a number of seconds or a timedelta, got {value!r}"
        ) from None
    if seconds <= 0:
        raise OceanValidationError(f"`{name}` must be positive, got {value!r}")
    return seconds


def _max_fee(value: Any) -> int | None:
    """The fee cap as a non-negative integer of base units (``None``: no cap)."""
    if value is None or value == "":
        return None
    from airflow_provider_ocean.exceptions import OceanValidationError

    try:
        cap = int(str(value)) if not isinstance(value, int) else value
    except ValueError:
        raise OceanValidationError(
            f"`max_fee` must be an integer number of base units, got {value!r}"
        ) from None
    if cap < 0:
        raise OceanValidationError(f"`max_fee` cannot be negative, got {value!r}")
    return cap


def _did_of(item: Any) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        return item.get("did") or item.get("documentId")
    return getattr(item, "did", None)


class OceanComputeStartOperator(StartOperatorLineageMixin, OceanJobWaiter, ResumableJobMixin, BaseOperator):
    """Pay for (or reuse the orders of) and start an Ocean compute-to-data job; optionally wait for it.

    Exactly once under retries and crashes (``durable=True``, the default):

    - the job reference ``{"job_id", "provider_url", "owner", "chain_id", "environment",
      "agreement_id", "transfer_tx_ids"}`` is stored in the task's state (``task_state_store`` through
      Airflow 3.3's ``ResumableJobMixin``; Airflow Variables on 3.0-3.2, where XComs of a failed try are
      deleted when the next one starts). A retry reattaches to the job if it is still active, returns it
      if it succeeded, and starts a new one only if it failed or is gone. This holds for the deferrable
      path too (a retry after a deferral defers again on the same job);
    - before the start request is sent, its orders are recorded (Ocean Node: the unique tag the start
      puts in the job's ``metadata``, since a free node job has no order); if the answer is lost
      (timeout, reset, 5xx, the Provider's duplicate-nonce 503, or a crash before the reference was
      stored), the next try first looks for a job created with those orders (that tag) and reattaches
      to it;
    - orders paid by an earlier try of this task instance (task state) or by an earlier run (XCom) are
      offered again to ``initializeCompute``; the chain decides (``validOrder``) whether they still
      cover the job, so retries and scheduled runs do not pay twice;
    - if a running job of the same wallet already uses the order that would become the agreementId
      (an overlapping run), a new order is paid for that input and the start is made once more.

    A job that succeeded is forgotten when the task succeeds, so clearing the task runs a new job.

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
    :param resources: Ocean Node only: ``{"cpu": 2, "ram": 4}`` or ``[{"id", "amount"}]``; missing ids
        get the environment's minimum.
    :param max_job_duration: Ocean Node only: seconds the job may run (default: the environment's max).
    :param queue_max_wait_time: Ocean Node only: seconds the job may wait for resources (0: fail instead).
    :param free: Ocean Node only: ``True`` free job (``freeCompute``), ``False`` paid through the Escrow,
        ``None`` free when the environment accepts free jobs and no ``max_fee`` is given.
    :param stream_logs: Ocean Node only: while waiting synchronously (not deferrable), copy the running
        algorithm's output into the task log as it is written (``computeStreamableLogs``, lines prefixed
        with ``[algorithm]``). Best effort; the full log stays in the job's results.
    :param durable: keep the job reference in the task state to reattach on retries (default ``True``;
        ``False``: every try pays/starts as if it were the first).
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
    external_id_key = JOB_STATE_KEY

    def __init__(
        self,
        *,
        datasets: str | dict[str, Any] | Sequence[str | dict[str, Any]],
        algorithm: str | dict[str, Any],
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
        resources: dict[str, Any] | list[dict[str, Any]] | None = None,
        max_job_duration: int | None = None,
        queue_max_wait_time: int | None = None,
        free: bool | None = None,
        stream_logs: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.stream_logs = stream_logs
        # Ocean Node only (refused on a Provider v4 connection when set)
        self.node_options: dict[str, Any] = {
            "resources": resources,
            "max_job_duration": max_job_duration,
            "queue_max_wait_time": queue_max_wait_time,
            "free": free,
        }
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
        self._forgotten: str | None = None

    # -- task state ----------------------------------------------------------------------------------
    def _state(self, context: Context) -> Any:
        """The store that survives retries: ``task_state_store`` (3.3+), Variables (3.0-3.2), or None."""
        if not getattr(self, "durable", True):
            return None
        if getattr(self, "uses_variable_state", False):
            return VariableStateStore.from_context(context)
        return context.get("task_state_store")

    def _state_get(self, context: Context, key: str) -> Any:
        store = self._state(context)
        return store.get(key) if store is not None else None

    def _state_set(self, context: Context, key: str, value: Any) -> None:
        store = self._state(context)
        if store is not None:
            store.set(key, value)

    def _state_delete(self, context: Context, *keys: str) -> None:
        store = self._state(context)
        if store is None:
            return
        for key in keys:
            try:
                store.delete(key)
            except Exception as exc:  # cleanup must never fail a task
                self.log.warning("Could not delete task state %s: %s", key, exc)

    def _job_ref(self, job: JobStatus, transfer_tx_ids: list[str], environment: str | None) -> dict[str, Any]:
        """Everything needed to find the job again (JSON; no secrets)."""
        settings = self.hook.settings
        return {
            "job_id": job.job_id,
            "provider_url": settings.provider_url,
            "owner": self.hook.consumer_address,
            "chain_id": self.hook.chain_id,
            "environment": environment,
            "agreement_id": job.agreement_id,
            "transfer_tx_ids": transfer_tx_ids,
            "date_created": job.date_created,
        }

    def _is_ours(self, record: dict[str, Any]) -> bool:
        """Whether a stored record belongs to this connection's Provider and wallet."""
        return (
            record.get("provider_url") == self.hook.settings.provider_url
            and record.get("owner") == self.hook.consumer_address
        )

    # -- ResumableJobMixin ---------------------------------------------------------------------------
    def execute(self, context: Context) -> str:
        return self.execute_resumable(context)

    def submit_job(self, context: Context) -> dict[str, Any]:
        """Pay (reusing valid orders) and start one job; return its reference for the task state.

        A start of an earlier try whose answer was never recorded is looked up first.
        """
        datasets = as_list(self.datasets)
        if not datasets:
            from airflow_provider_ocean.exceptions import OceanValidationError

            raise OceanValidationError("`datasets` is empty: give at least one dataset DID")
        found = self._find_unrecorded_start(context)
        if found is not None:
            return self._remember(context, *found)
        payment = self._pay(context, datasets, self._previous_payment(context, datasets))
        return self._remember(context, *self._start(context, datasets, payment))

    def get_job_status(self, external_id: Any, context: Context) -> str:
        """``<outcome>:<status code>`` of a stored job (outcome: running, succeeded, failed, stopped,
        timed_out); ``NOT_FOUND:`` for a job the Provider does not know, ``OTHER_CONNECTION:`` when the
        connection now points at another Provider or wallet. Errors reading the status propagate: an
        unknown state never leads to a second job."""
        from airflow_provider_ocean.exceptions import OceanJobNotFoundError

        ref = _as_ref(external_id)
        if ref is None:
            return "INVALID:"
        if "provider_url" in ref and not self._is_ours(ref):
            self.log.warning(
                "The stored job %s belongs to %s / %s, the connection now to %s / %s",
                ref["job_id"],
                ref.get("provider_url"),
                ref.get("owner"),
                self.hook.settings.provider_url,
                self.hook.consumer_address,
            )
            return "OTHER_CONNECTION:"
        try:
            job = self.hook.get_job_status(ref["job_id"])
        except OceanJobNotFoundError:
            return "NOT_FOUND:"
        return f"{job.outcome}:{job.status}"

    def is_job_active(self, status: str) -> bool:
        return status.split(":", 1)[0] == "running"

    def is_job_succeeded(self, status: str) -> bool:
        return status.split(":", 1)[0] == "succeeded"

    def poll_until_complete(self, external_id: Any, context: Context) -> str:  # type: ignore[override]
        """Wait for the job (synchronously, or by deferring); returns the job id (the mixin returns
        this method's value when it reattaches)."""
        ref = _as_ref(external_id)
        if ref is None:  # pragma: no cover - submit_job always returns a reference
            raise ValueError(f"Not a job reference: {external_id!r}")
        job_id = ref["job_id"]
        self._publish(context, job_id)
        if not self.wait_for_completion:
            return self.get_job_result(ref, context)
        deadline = self._deadline(context, _seconds(self.wait_timeout, "wait_timeout"))
        if self.deferrable:
            current = self.hook.get_job_status(job_id)
            if current.is_terminal:
                return self._finish(current, context)
            self._defer_until_done(job_id, deadline, stop_on_kill=self.stop_on_kill)
        return self._finish(self._poll_until_terminal(job_id, deadline), context)

    def get_job_result(self, external_id: Any, context: Context) -> str:
        """The job id; the job reference is forgotten (a cleared task then starts a new job)."""
        ref = _as_ref(external_id)
        job_id = ref["job_id"] if ref else str(external_id)
        if self.job_id != job_id:
            self._publish(context, job_id)
        self._forget(context)
        return job_id

    # -- steps ---------------------------------------------------------------------------------------
    def _find_unrecorded_start(self, context: Context) -> tuple[JobStatus, list[str], str | None] | None:
        """A job started by an earlier try whose answer was lost (or whose reference was not stored):
        ``(job, orders of that start, environment)``. A Provider v4 start is recognised by its orders, an
        Ocean Node start by the unique tag it carried (``start_id``; free node jobs have no orders)."""
        pending = self._state_get(context, PENDING_START_STATE_KEY)
        if not isinstance(pending, dict) or not (pending.get("transfer_tx_ids") or pending.get("start_id")):
            return None
        if not self._is_ours(pending):
            self._state_delete(context, PENDING_START_STATE_KEY)
            return None
        self.log.info(
            "An earlier try sent a start (orders %s, tag %s) at %s without recording its answer; "
            "looking for that job before starting",
            pending.get("transfer_tx_ids") or [],
            pending.get("start_id"),
            pending.get("started_at"),
        )
        # Errors propagate: if the Provider cannot tell, this try fails rather than start a second job.
        job = self.hook.find_started_job(
            pending.get("transfer_tx_ids") or [],
            known_job_ids=pending.get("known_job_ids") or [],
            started_at=pending.get("started_at"),
            start_id=pending.get("start_id"),
        )
        if job is None:
            self.log.info("That start created no job; starting now")
            self._state_delete(context, PENDING_START_STATE_KEY)
            return None
        self.log.warning(
            "Reattaching to job %s (agreement %s), started by an earlier try", job.job_id, job.agreement_id
        )
        return job, list(pending.get("transfer_tx_ids") or []), pending.get("environment")

    def _previous_payment(self, context: Context, datasets: list[Any]) -> dict[str, Any] | None:
        """Orders paid earlier for the same inputs: by an earlier try of this task instance (task state,
        which survives retries unlike XCom), else by the last run of this task (XCom), else - on a retry,
        when an earlier try may have paid and died before recording it - this wallet's recent orders for
        these inputs found on chain. ``initializeCompute`` then decides which of them are still valid.
        Order transactions an earlier try signed without recording the payment are settled first, whatever
        ``reuse_orders`` says: they are this task instance's own payment."""
        recorded = self._state_get(context, PAYMENT_STATE_KEY)
        settled = None if recorded else self._settled_orders(context, datasets)
        if settled is not None or not self.reuse_orders:
            return settled
        candidates = [
            recorded,
            context["ti"].xcom_pull(task_ids=self.task_id, key=PAYMENT_XCOM_KEY, include_prior_dates=True),
        ]
        wanted = [_did_of(d) for d in datasets]
        for previous in candidates:
            if not isinstance(previous, dict):
                continue
            if [p.get("did") for p in previous.get("datasets") or []] == wanted:
                return previous
        if (getattr(context["ti"], "try_number", 1) or 1) > 1 and self._state(context) is not None:
            return self._orders_on_chain(datasets)
        return None

    def _settled_orders(self, context: Context, datasets: list[Any]) -> dict[str, Any] | None:
        """The orders an earlier try signed and died before recording as paid: settled on chain (mined
        ones are reused, unsent ones broadcast again, never paid twice), as ``transfer_tx_ids``."""
        records = self._state_get(context, PENDING_ORDERS_STATE_KEY)
        if not records:
            return None
        self.log.info("An earlier try sent order transactions it did not record as paid; settling them")
        mined = {(r["role"], r["did"]): r["tx_hash"] for r in self.hook.settle_sent_orders(list(records))}
        self._state_delete(context, PENDING_ORDERS_STATE_KEY)
        found = {
            "datasets": [
                {"did": _did_of(d), "transfer_tx_id": mined.get(("dataset", _did_of(d)))} for d in datasets
            ],
            "algorithm": mined.get(("algorithm", _did_of(self.algorithm))),
        }
        self.log.info("Orders of the earlier try that were mined: %s", sorted(mined.values()))
        return found if mined else None

    def _orders_on_chain(self, datasets: list[Any]) -> dict[str, Any] | None:
        """Best effort: this wallet's recent orders for these inputs (a failed lookup costs a payment)."""
        try:
            found = self.hook.recent_orders(datasets, self.algorithm, self.environment)
        except Exception as exc:  # Ocean, chain or transport errors alike
            self.log.warning("Could not look for orders paid by an earlier try on chain: %s", exc)
            return None
        if found:
            self.log.info(
                "No record of an earlier try's payment; offering this wallet's recent orders %s",
                [tx for tx in [*found["datasets"], found["algorithm"]] if tx],
            )
        return found

    def _pay(self, context: Context, datasets: list[Any], previous: Any) -> dict[str, Any]:
        validity = _seconds(self.order_validity, "order_validity")
        journal: list[dict[str, Any]] = []

        def record(order: dict[str, Any]) -> None:  # before each broadcast: a killed try leaves a trace
            journal.append(order)
            self._state_set(context, PENDING_ORDERS_STATE_KEY, journal)

        payment = self.hook.pay_for_compute(
            datasets,
            self.algorithm,
            self.environment,
            timedelta(seconds=validity) if validity else None,
            _max_fee(self.max_fee),
            previous,
            acquire_datatokens=self.acquire_datatokens,
            max_datatoken_price=self.max_datatoken_price,
            on_order_sent=record,
            **self.node_options,
        )
        # Persist the orders before starting: a retry (task state) or a later run (XCom) reuses them.
        self._state_set(context, PAYMENT_STATE_KEY, payment)
        if journal:
            self._state_delete(context, PENDING_ORDERS_STATE_KEY)
        context["ti"].xcom_push(key=PAYMENT_XCOM_KEY, value=payment)
        self.payment = payment  # for the OpenLineage run facet (lineage.py), read without XCom
        for order in _orders(payment):
            self.log.info(
                "Paid: %s %s -> %s (%s)",
                order["role"],
                order["did"],
                order["transfer_tx_id"],
                order["action"],
            )
        return payment

    def _start(
        self, context: Context, datasets: list[Any], payment: dict[str, Any]
    ) -> tuple[JobStatus, list[str], str | None]:
        """Start the job: ``(job, orders the start carried, environment)``."""
        from airflow_provider_ocean.exceptions import OceanOrderInUseError

        sent: list[str] = []

        def record(attempt: dict[str, Any]) -> None:
            sent[:] = attempt["transfer_tx_ids"]
            self._state_set(context, PENDING_START_STATE_KEY, {**attempt, "environment": environment})

        environment = payment.get("environment")
        try:
            job = self.hook.start_compute(datasets, self.algorithm, payment=payment, on_attempt=record)
            return job, sent, environment
        except OceanOrderInUseError as exc:
            in_use = set(exc.transfer_tx_ids)
            self.log.warning(
                "Order(s) %s are used by running job(s) %s of this wallet (an overlapping run or another "
                "task?); paying new order(s) for them and starting once more",
                ", ".join(sorted(in_use)),
                ", ".join(exc.in_use_by) or "?",
            )
            self._state_delete(context, PENDING_START_STATE_KEY)
            payment = self._pay(context, datasets, _without_orders(payment, in_use))
            environment = payment.get("environment")
            job = self.hook.start_compute(datasets, self.algorithm, payment=payment, on_attempt=record)
            return job, sent, environment

    def _remember(
        self, context: Context, job: JobStatus, transfer_tx_ids: list[str], environment: str | None
    ) -> dict[str, Any]:
        """Store the job reference (then drop the pending-start record) and return it."""
        candidates: list[str | None] = [*(transfer_tx_ids or [])] or [job.agreement_id]
        txs = [t for t in candidates if t]
        ref = self._job_ref(job, txs, environment)
        self._state_set(context, self.external_id_key, ref)
        self._state_delete(context, PENDING_START_STATE_KEY)
        self.log.info("Started: job %s (agreement %s)", job.job_id, job.agreement_id)
        return ref

    def _publish(self, context: Context, job_id: str) -> None:
        """Push the job id and the links (again on a reattaching try: its XComs were cleared)."""
        self.job_id = job_id
        context["ti"].xcom_push(key=JOB_ID_XCOM_KEY, value=job_id)
        settings = self.hook.settings
        OceanJobStatusLink.persist(
            context, job_status_url(settings.provider_url, self.hook.consumer_address, job_id)
        )
        datasets = as_list(self.datasets)
        if datasets:
            OceanDatasetLink.persist(context, ddo_url(settings.aquarius_url, _did_of(datasets[0]) or ""))

    def _forget(self, context: Context | None) -> None:
        """Drop the job reference once the task is done with it (Variables: everything)."""
        if context is None or self._forgotten == self.job_id:
            return
        self._forgotten = self.job_id
        keys = [self.external_id_key, PENDING_START_STATE_KEY, PENDING_ORDERS_STATE_KEY]
        if getattr(self, "uses_variable_state", False):
            keys.append(PAYMENT_STATE_KEY)
        self._state_delete(context, *keys)

    def _finish(self, job: JobStatus, context: Context | None = None) -> str:
        if not job.is_succeeded:
            self._raise_for(job)
        self.log.info("Finished: job %s (%s results)", job.job_id, len(job.results))
        self._forget(context)
        return job.job_id

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        """Resume after the trigger fired: succeed with the job id, or stop/fail."""
        job = self._complete(event)
        self.job_id = job.job_id
        self.keep_payment_for_lineage(context, PAYMENT_XCOM_KEY)
        return self._finish(job, context)

    def on_kill(self) -> None:
        if self.job_id and self.stop_on_kill:
            self._stop_quietly(self.job_id)


def _as_ref(external_id: Any) -> dict[str, Any] | None:
    """A stored job reference as a dict (a bare job id string is accepted too)."""
    if isinstance(external_id, dict) and external_id.get("job_id"):
        return external_id
    if isinstance(external_id, str) and external_id:
        return {"job_id": external_id}
    return None


def _orders(payment: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in [*(payment.get("datasets") or []), payment.get("algorithm")] if p]


def _without_orders(payment: dict[str, Any], txs: set[str]) -> dict[str, Any]:
    """``payment`` with the orders in ``txs`` removed, so that new ones are paid for those inputs."""
    lowered = {t.lower() for t in txs}

    def keep(order: Any) -> Any:
        if not isinstance(order, dict):
            return order
        tx = str(order.get("transfer_tx_id") or "").lower()
        return None if not lowered or tx in lowered else order

    return {
        **payment,
        "datasets": [keep(o) for o in payment.get("datasets") or []],
        "algorithm": keep(payment.get("algorithm")),
    }


class OceanComputeStopOperator(BaseOperator):
    """Request a stop of an Ocean compute job (it then ends with ``stopreq == 1``); an ended job is left as
    it is (no stop sent: a succeeded job stays succeeded; see ``hook.stop_job``).

    :param job_id: the job id (templated), e.g. ``"{{ ti.xcom_pull('start') }}"``.
    :param ocean_conn_id: the Ocean connection (templated).
    :return: the job's status dict (as the stop's answer, or as ended), if any.
    """

    template_fields: Sequence[str] = ("job_id", "ocean_conn_id")

    def __init__(self, *, job_id: str, ocean_conn_id: str = "ocean_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.ocean_conn_id = ocean_conn_id

    def execute(self, context: Context) -> dict[str, Any] | None:
        from airflow_provider_ocean.hooks.ocean import OceanComputeHook

        job = OceanComputeHook(ocean_conn_id=self.ocean_conn_id).stop_job(self.job_id)
        self.log.info("Job %s: %s", self.job_id, job.outcome if job and job.is_terminal else "stop requested")
        return job.to_dict() if job else None
