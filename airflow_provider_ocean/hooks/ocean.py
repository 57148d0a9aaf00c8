"""Hook for Ocean Protocol compute-to-data: the Airflow face of the provider.

The hook reads the ``ocean`` connection (:mod:`airflow_provider_ocean.settings` documents its fields),
chooses the backend once (the ``backend`` extra, or ``auto``: ``GET /`` of the server) and delegates every
job method to it: :mod:`airflow_provider_ocean.backends.provider_v4` for an Ocean Provider v4,
:mod:`airflow_provider_ocean.backends.ocean_node` for an Ocean Node (docs/architecture.md).

Importing this module is cheap: eth-account, eth-abi, the chain client, the backends and the wire clients
are imported when first used.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_provider_ocean.exceptions import OceanConfigError, OceanError, redact
from airflow_provider_ocean.settings import OceanConnectionSettings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from datetime import datetime, timedelta

    from airflow.sdk import Connection

    from airflow_provider_ocean.backends.base import BackendContext, ComputeBackend
    from airflow_provider_ocean.backends.ocean_node import OceanNodeBackend
    from airflow_provider_ocean.backends.provider_v4 import ProviderV4Backend
    from airflow_provider_ocean.chain.rpc import JsonRpcClient
    from airflow_provider_ocean.chain.tx import TransactionSender
    from airflow_provider_ocean.models import (
        ComputeAlgorithm,
        ComputeEnvironment,
        ComputeInput,
        DownloadedResult,
        JobStatus,
        ResultFile,
    )
    from airflow_provider_ocean.signing import Signer
    from airflow_provider_ocean.wire.download import Destination
    from airflow_provider_ocean.wire.provider_v4 import ProviderV4Client

__all__ = ["OceanComputeHook", "OceanConnectionSettings"]


class OceanComputeHook(BaseHook):
    """Pay for, start, watch, stop and collect Ocean compute-to-data jobs (Provider v4 or Ocean Node).

    No I/O happens in the constructor; the connection is read on first use.

    :param ocean_conn_id: the ``ocean`` connection to use.
    :param timeout: read timeout in seconds for ordinary requests (overrides the connection's
        ``timeout`` extra; start and initializeCompute always allow at least 180 s).
    :param retry_limit: attempts for idempotent reads (status, environments, DDO, nonce).
    :param retry_delay: initial backoff between those attempts, in seconds.
    :param download_write_path: how results are written to a path: ``cache`` (through the page cache) or
        ``direct`` (results of 64 MiB or more with ``O_DIRECT``). Default: the Airflow setting
        ``[ocean] download_write_path``, else ``cache``. ``benchmarks/stream_results.py`` tells which one
        is faster on a machine.
    """

    conn_name_attr = "ocean_conn_id"
    default_conn_name = "ocean_default"
    conn_type = "ocean"
    hook_name = "Ocean Protocol"

    def __init__(
        self,
        ocean_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        retry_limit: int = 3,
        retry_delay: float = 1.0,
        download_write_path: str | None = None,
    ) -> None:
        super().__init__()
        if retry_limit < 1:
            raise OceanConfigError("retry_limit must be at least 1")
        if download_write_path is None:
            from airflow.sdk.configuration import conf

            download_write_path = conf.get("ocean", "download_write_path", fallback="cache") or "cache"
        from airflow_provider_ocean.wire.download import WRITE_PATHS

        download_write_path = download_write_path.strip().lower()
        if download_write_path not in WRITE_PATHS:
            raise OceanConfigError(
                f"download_write_path ([ocean] download_write_path) must be 'cache' or 'direct', "
                f"got {download_write_path!r}"
            )
        self.download_write_path = download_write_path
        self.ocean_conn_id = ocean_conn_id
        self.timeout = timeout
        self.retry_limit = retry_limit
        self.retry_delay = retry_delay

    def __repr__(self) -> str:
        return f"OceanComputeHook(ocean_conn_id={self.ocean_conn_id!r})"

    # -- UI ------------------------------------------------------------------------------------------
    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Hidden/relabelled fields and placeholders of the connection form (same as the provider info)."""
        from airflow_provider_ocean.get_provider_info import get_provider_info

        for conn_type in get_provider_info()["connection-types"]:
            if conn_type["connection-type"] == cls.conn_type:
                return dict(conn_type["ui-field-behaviour"])
        return {}  # pragma: no cover

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra connection form fields for Airflow versions without declarative ``conn-fields``."""
        try:
            from flask_appbuilder.fieldwidgets import BS3TextFieldWidget, Select2Widget
            from flask_babel import lazy_gettext
            from wtforms import BooleanField, DecimalField, IntegerField, SelectField, StringField
            from wtforms.validators import NumberRange, Optional
        except ImportError:
            return {}
        from airflow_provider_ocean.get_provider_info import CONN_FIELDS as FIELDS

        widgets: dict[str, Any] = {}
        for name, spec in FIELDS.items():
            label, schema, description = lazy_gettext(spec["label"]), spec["schema"], spec["description"]
            types = schema.get("type", [])
            bounds = [Optional(), NumberRange(min=schema.get("minimum"), max=schema.get("maximum"))]
            if "enum" in schema:  # a choice with a default, never an empty select
                widgets[name] = SelectField(
                    label,
                    choices=[(v, v) for v in schema["enum"]],
                    default=schema["default"],
                    widget=Select2Widget(),
                    description=description,
                )
            elif "boolean" in types:
                widgets[name] = BooleanField(label, default=schema.get("default", True))
            elif "integer" in types or "number" in types:
                number = IntegerField if "integer" in types else DecimalField
                widgets[name] = number(
                    label, validators=bounds, default=schema.get("default"), description=description
                )
            else:
                widgets[name] = StringField(label, widget=BS3TextFieldWidget(), description=description)
        return widgets

    # -- the connection and the backend -----------------------------------------------------------------
    @cached_property
    def _connection(self) -> Connection:
        return self.get_connection(self.ocean_conn_id)

    @cached_property
    def settings(self) -> OceanConnectionSettings:
        """The parsed (non-secret) connection settings."""
        return OceanConnectionSettings.from_connection(self._connection, timeout=self.timeout)

    @cached_property
    def context(self) -> BackendContext:
        """What the backends are given: settings, signer, chain client, DDO reader (built lazily)."""
        from airflow_provider_ocean.backends.base import BackendContext
        from airflow_provider_ocean.settings import extra_value

        return BackendContext(
            settings=self.settings,
            conn_id=self.ocean_conn_id,
            read_password=lambda: self._connection.password,
            read_auth_token=lambda: extra_value(self._connection.extra_dejson or {}, "auth_token"),
            get_ddo=self.get_ddo,
            log=self.log,
            retry_limit=self.retry_limit,
            retry_delay=self.retry_delay,
            write_path=self.download_write_path,
        )

    @property
    def signer(self) -> Signer:
        """The consumer wallet's signer, built from the connection password (masked right away)."""
        return self.context.signer

    @property
    def consumer_address(self) -> str:
        """The consumer wallet's checksummed address (the job owner string used everywhere)."""
        return self.context.consumer_address

    @property
    def rpc(self) -> JsonRpcClient:
        """JSON-RPC client of the chain (needs the ``rpc_url`` extra)."""
        return self.context.rpc

    @property
    def sender(self) -> TransactionSender:
        """Transaction sender of the consumer wallet."""
        return self.context.sender

    @cached_property
    def _provider_v4(self) -> ProviderV4Backend:
        from airflow_provider_ocean.backends.provider_v4 import ProviderV4Backend

        return ProviderV4Backend(self.context)

    @property
    def provider(self) -> ProviderV4Client:
        """The Provider v4 wire client (also asked ``GET /`` to detect the backend, and for DDOs)."""
        return self._provider_v4.client

    @cached_property
    def backend(self) -> str:
        """``provider_v4`` or ``ocean_node``: the connection's ``backend`` extra, or (``auto``) ``GET /``."""
        if self.settings.backend in ("provider_v4", "ocean_node"):
            return self.settings.backend
        from airflow_provider_ocean.wire.ocean_node import detect_backend

        return detect_backend(self.provider.root()) or "provider_v4"

    @property
    def is_ocean_node(self) -> bool:
        """Whether the connection points at an Ocean Node."""
        return self.backend == "ocean_node"

    @cached_property
    def node(self) -> OceanNodeBackend:
        """The Ocean Node backend (also used for its live logs: :meth:`OceanNodeBackend.stream_logs`)."""
        from airflow_provider_ocean.backends.ocean_node import OceanNodeBackend

        return OceanNodeBackend(self.context)

    @property
    def compute(self) -> ComputeBackend:
        """The backend every job method delegates to."""
        return self.node if self.is_ocean_node else self._provider_v4

    @property
    def chain_id(self) -> int:
        """The chain id: the connection's ``chain_id``, else the server's only chain."""
        return self.compute.chain_id

    # -- discovery -----------------------------------------------------------------------------------
    def test_connection(self) -> tuple[bool, str]:
        """Check the wallet lock (when one is configured), the server, the chain and the key without
        spending anything.

        :return: ``(ok, message)``.
        """
        try:
            self.context.check_wallet_lock()
            return self.compute.test_connection()
        except OceanError as exc:
            return False, str(exc)
        except Exception as exc:
            return False, redact(f"{type(exc).__name__}: {exc}", 500)

    def get_environments(self) -> list[ComputeEnvironment]:
        """The compute environments the server offers on the connection's chain."""
        return self.compute.get_environments()

    def resolve_environment(self, environment: str | ComputeEnvironment | None = None) -> ComputeEnvironment:
        """Return the named environment, or the default one when ``environment`` is ``None`` (Provider v4:
        the first free one; Ocean Node: the first accepting free jobs, else the first).

        :param environment: an environment id, an environment, or ``None``.
        """
        return self.compute.resolve_environment(environment)

    def get_ddo(self, did: str) -> dict[str, Any]:
        """Fetch an asset's DDO (Aquarius, or the node's Aquarius-compatible route).

        :param did: the asset DID.
        """
        return self.provider.get_ddo(did)

    # -- paying and starting -------------------------------------------------------------------------
    def pay_for_compute(
        self,
        datasets: list[ComputeInput | dict[str, Any] | str],
        algorithm: ComputeAlgorithm | dict[str, Any] | str,
        environment: str | ComputeEnvironment | None = None,
        valid_until: int | float | datetime | timedelta | None = None,
        max_fee: int | None = None,
        transfer_tx_ids: Any = None,
        *,
        acquire_datatokens: str | None = None,
        max_datatoken_price: int | None = None,
        on_order_sent: Callable[[dict[str, Any]], None] | None = None,
        **node_options: Any,
    ) -> dict[str, Any]:
        """Validate, quote (``initializeCompute``) and pay for every input of a job.

        Everything that can fail without spending is checked first (DDOs, services, environment,
        algorithm trust, fee cap, balances, gas); then only the needed transactions are sent.

        :param datasets: the datasets (DIDs, dicts or :class:`ComputeInput`; on an Ocean Node also URLs);
            the first must be ordered through a compute service.
        :param algorithm: a published algorithm (DID) or a raw algorithm (dict / :class:`ComputeAlgorithm`).
        :param environment: environment id; ``None`` picks the default one (see :meth:`resolve_environment`).
        :param valid_until: Provider v4: until when the provider fee must cover the job: epoch seconds, a
            datetime, or a timedelta from now; default now + the environment's maxJobDuration. An Ocean Node
            refuses it (it prices the job by ``max_job_duration``).
        :param max_fee: refuse (before sending anything) when the fees exceed this many base units of
            the fee token.
        :param transfer_tx_ids: orders paid earlier, to reuse: the dict this method returned, or
            ``{"datasets": [tx, ...], "algorithm": tx}``.
        :param acquire_datatokens: obtain missing datatokens: ``None`` (default, off), ``"dispenser"``,
            ``"fixed_rate"`` or ``"any"``.
        :param max_datatoken_price: highest base-token amount (base units) per datatoken bought.
        :param on_order_sent: called with a JSON record of every order transaction right before its
            broadcast (no secrets); keep them where a retry finds them and give them to
            :meth:`settle_sent_orders` if this process dies before this method returns.
        :param node_options: Ocean Node only: ``resources``, ``max_job_duration``,
            ``queue_max_wait_time``, ``free`` (see :mod:`airflow_provider_ocean.backends.ocean_node`).
        :return: JSON-safe ``{"environment", "consumer_address", "chain_id", "valid_until",
            "datasets": [PaidOrder dict, ...], "algorithm": PaidOrder dict | None}`` (an Ocean Node adds
            ``backend`` and ``ocean_node``).
        """
        self.context.order_journal = on_order_sent
        try:
            return self.compute.pay_for_compute(
                datasets,
                algorithm,
                environment,
                valid_until,
                max_fee,
                transfer_tx_ids,
                acquire_datatokens=acquire_datatokens,
                max_datatoken_price=max_datatoken_price,
                **node_options,
            )
        finally:
            self.context.order_journal = None

    def settle_sent_orders(
        self, records: list[dict[str, Any]], timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        """Settle the order transactions an earlier, killed attempt recorded (``on_order_sent``): return
        the records of those mined (reuse their ``tx_hash``); those that never arrived are broadcast
        again, those whose nonce another transaction took are dropped.

        :param records: the recorded dicts.
        :param timeout: seconds to wait for each one still pending.
        :raises OceanPaymentError: one is still pending after ``timeout`` (do not pay again yet).
        """
        from airflow_provider_ocean.payment.journal import settle_records

        return settle_records(self.context.sender, records, timeout)

    def start_compute(
        self,
        datasets: list[ComputeInput | dict[str, Any] | str],
        algorithm: ComputeAlgorithm | dict[str, Any] | str,
        payment: dict[str, Any] | None = None,
        environment: str | None = None,
        *,
        on_attempt: Callable[[dict[str, Any]], None] | None = None,
    ) -> JobStatus:
        """Start a job whose inputs are paid (signed request; never retried blindly).

        When the outcome is unknown (timeout or connection reset after sending, 5xx - including the
        Provider's duplicate-nonce 503, which comes after the job was created - or an unreadable 2xx),
        the owner's jobs are searched for the one this attempt created (backends/recovery.py); that job
        is returned. If the server answers and there is none, the original error is raised (nothing
        started); if it cannot be asked,
        :class:`~airflow_provider_ocean.exceptions.OceanStartOutcomeUnknownError`.

        :param datasets: the datasets, as given to :meth:`pay_for_compute`.
        :param algorithm: the algorithm, with ``algocustomdata``/``algouserdata`` if any.
        :param payment: the dict :meth:`pay_for_compute` returned; without it every dataset (and a DID
            algorithm) must carry its ``transfer_tx_id`` (an Ocean Node then starts a free job).
        :param environment: environment id (taken from ``payment`` when given there).
        :param on_attempt: called just before the request is sent with a JSON-safe record
            ``{"provider_url", "owner", "transfer_tx_ids", "started_at", "known_job_ids"}`` (an Ocean Node
            adds ``start_id``) - persist it to find the job with :meth:`find_started_job` if the process
            dies before the answer.
        :return: the new job's status.
        :raises OceanOrderInUseError: a running job already uses the order that would be the agreementId.
        """
        return self.compute.start_compute(datasets, algorithm, payment, environment, on_attempt=on_attempt)

    def find_started_job(
        self,
        transfer_tx_ids: Iterable[str],
        *,
        known_job_ids: Iterable[str] = (),
        started_at: float | None = None,
        clock_skew: float | None = None,
        start_id: str | None = None,
    ) -> JobStatus | None:
        """Find the job a start attempt created (the fields of the ``on_attempt`` record).

        Provider v4: a job whose agreementId is one of the attempt's orders, that is not one of the jobs
        that used them before the attempt, created (Provider clock) at most ``clock_skew`` seconds before
        the attempt began. Ocean Node: the job whose ``metadata`` carries ``start_id``.

        :param transfer_tx_ids: every order tx the start request carried.
        :param known_job_ids: jobs with those agreement ids that existed before the attempt.
        :param started_at: when the attempt began (epoch seconds).
        :param clock_skew: tolerated clock difference with the server, in seconds (default 300).
        :param start_id: Ocean Node: the ``start_id`` of the attempt record.
        :return: the job (the oldest if, unexpectedly, several match), or ``None``.
        """
        extra = {} if clock_skew is None else {"clock_skew": clock_skew}
        return self.compute.find_started_job(
            transfer_tx_ids, known_job_ids=known_job_ids, started_at=started_at, start_id=start_id, **extra
        )

    def recent_orders(
        self,
        datasets: list[ComputeInput | dict[str, Any] | str],
        algorithm: ComputeAlgorithm | dict[str, Any] | str,
        environment: str | ComputeEnvironment | None = None,
        *,
        lookback_blocks: int | None = None,
    ) -> dict[str, Any] | None:
        """Orders this wallet paid recently for these inputs, read from the chain (Provider v4; an Ocean
        Node answers ``None``: the orders of a paid start that was never recorded are paid again).

        Pass the result as ``transfer_tx_ids`` to :meth:`pay_for_compute`; nothing is trusted from here.

        :param datasets: the datasets.
        :param algorithm: the algorithm.
        :param environment: the environment id (default: the first free one).
        :param lookback_blocks: how many blocks back to look (default 5000; RPC nodes often cap
            ``eth_getLogs`` ranges).
        :return: ``{"datasets": [tx | None, ...], "algorithm": tx | None, "environment": id,
            "valid_until": what their provider fees cover}``, or ``None`` when no input has such an order.
        """
        extra = {} if lookback_blocks is None else {"lookback_blocks": lookback_blocks}
        return self.compute.recent_orders(datasets, algorithm, environment, **extra)

    def run_compute(
        self,
        datasets: list[ComputeInput | dict[str, Any] | str],
        algorithm: ComputeAlgorithm | dict[str, Any] | str,
        environment: str | ComputeEnvironment | None = None,
        valid_until: int | float | datetime | timedelta | None = None,
        max_fee: int | None = None,
        transfer_tx_ids: Any = None,
        *,
        acquire_datatokens: str | None = None,
        max_datatoken_price: int | None = None,
    ) -> dict[str, Any]:
        """Pay for and start a job in one call: :meth:`pay_for_compute` (which documents the parameters;
        the Ocean Node options are not taken here), then :meth:`start_compute` with that payment.

        :return: JSON-safe ``{"job_id", "job": status dict, "payment": payment dict}``.
        """
        payment = self.pay_for_compute(
            datasets,
            algorithm,
            environment,
            valid_until,
            max_fee,
            transfer_tx_ids,
            acquire_datatokens=acquire_datatokens,
            max_datatoken_price=max_datatoken_price,
        )
        job = self.start_compute(datasets, algorithm, payment=payment)
        return {"job_id": job.job_id, "job": job.to_dict(), "payment": payment}

    # -- jobs ----------------------------------------------------------------------------------------
    def list_jobs(self) -> list[JobStatus]:
        """Every job of the consumer wallet on this server."""
        return self.compute.list_jobs()

    def get_job_status(self, job_id: str) -> JobStatus:
        """The status of one job of the consumer wallet.

        :param job_id: the job id.
        :raises OceanJobNotFoundError: the server knows no such job for this owner.
        """
        return self.compute.get_job_status(job_id)

    def stop_job(self, job_id: str) -> JobStatus | None:
        """Request a stop (signed) of a job that has not ended yet. The job then ends as stopped.

        A job that has already ended is not sent a stop, and its status is returned as it is. Why: on
        Provider v4, operator-service marks every matching job ``stopreq`` 1, finished ones included and for
        good (``data_store.py`` ``stop_sql_job`` has no condition on the job's state), and a status cannot
        tell such a late mark from a job stopped while it ran; a late stop would turn a succeeded job into a
        "stopped" one for every later reader (sensors, retries, other DAGs) without changing anything it
        computed. A job that ends between the status read and the stop still gets the mark (one status
        request apart).

        :param job_id: the job id.
        :return: the already ended job's status; else the status the server answered the stop with
            (Provider v4: read back after the mark, ``stopreq`` 1), if it returned one.
        """
        from airflow_provider_ocean.exceptions import OceanJobNotFoundError

        try:
            current = self.compute.get_job_status(job_id)
        except OceanJobNotFoundError:
            current = None  # let the server answer the stop (an empty list: nothing stopped)
        if current is not None and current.is_terminal:
            self.log.info("Job %s already ended (%s); no stop sent", job_id, current.outcome)
            return current
        return self.compute.stop_job(job_id)

    def delete_job(self, job_id: str) -> None:
        """Delete a job (signed; the current operator-service treats it as a no-op, a node has none).

        :param job_id: the job id.
        """
        self.compute.delete_job(job_id)

    def get_results(self, job_id: str) -> list[ResultFile]:
        """The job's result files; ``index`` is what :meth:`download_result` takes.

        :param job_id: the job id.
        """
        return self.get_job_status(job_id).results

    def download_result(
        self, job_id: str, index: int, destination: Destination, *, raw_logs: bool = False
    ) -> DownloadedResult:
        """Stream one result file to a file object, a path or a directory (signed; constant memory).

        Logs (``algorithmLog``, ``configurationLog``...) are written as text: an Ocean Node that serves
        Docker's multiplexed log frames has them taken off (plain logs are unchanged).

        :param job_id: the job id.
        :param index: position of the file in the job's results.
        :param destination: binary file object, file path, or existing directory.
        :param raw_logs: keep a log's bytes exactly as served (with Docker's frames, if any).
        """
        return self.compute.download_result(job_id, index, destination, raw_logs=raw_logs)
