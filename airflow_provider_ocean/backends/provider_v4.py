"""The Provider v4 backend: validate, quote, pay the datatoken orders, start, and find lost starts.

Paying (docs/reference/provider-v4-api.md, docs/reference/contracts-and-payment.md):
``initializeCompute`` quotes a signed provider fee per input, then each input's datatoken gets a
``startOrder`` (or ``reuseOrder``, or nothing while its fee is still valid); the order txs are the
``transferTxId`` of the start. A start whose answer was lost is matched by its orders: the Provider sends
one of them as the job's ``agreementId``."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_ocean.backends.recovery import epoch, outcome_unknown, resolve_unknown_start
from airflow_provider_ocean.ddo import resolve_inputs
from airflow_provider_ocean.exceptions import (
    OceanConnectionError,
    OceanError,
    OceanJobNotFoundError,
    OceanOrderInUseError,
    OceanProviderError,
    OceanStartOutcomeUnknownError,
    OceanValidationError,
)
from airflow_provider_ocean.models import ComputeAlgorithm, ComputeEnvironment, ComputeInput, JobStatus
from airflow_provider_ocean.records import Payment, StartAttempt, split_transfer_tx_ids, unique

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from airflow_provider_ocean.backends.base import BackendContext
    from airflow_provider_ocean.models import DownloadedResult
    from airflow_provider_ocean.records import PaidOrder
    from airflow_provider_ocean.wire.download import Destination
    from airflow_provider_ocean.wire.provider_v4 import ProviderV4Client

#: Tolerated difference between the Provider's clock (``dateCreated``) and ours.
START_CLOCK_SKEW = 300.0
#: How many blocks back :meth:`ProviderV4Backend.recent_orders` looks for orders paid by this wallet.
ORDER_LOOKBACK_BLOCKS = 5000
_IN_USE = "already in use for other job"


class ProviderV4Backend:
    """Ocean Provider v4 (+ Aquarius) implementation of the hook's job methods.

    :param ctx: the connection as the backend sees it.
    """

    name = "provider_v4"

    def __init__(self, ctx: BackendContext) -> None:
        self.ctx = ctx
        # Order txs this backend sent (startOrder/reuseOrder) and has not used in a start yet: no job can
        # carry them as agreementId, so a start on them needs no look at the existing jobs first.
        self._unstarted_orders: set[str] = set()

    def __repr__(self) -> str:
        return f"ProviderV4Backend({self.ctx.settings.provider_url!r})"

    @cached_property
    def client(self) -> ProviderV4Client:
        """The Provider v4 wire client."""
        from airflow_provider_ocean.wire.provider_v4 import ProviderV4Client

        return self.ctx.wire_client(ProviderV4Client, aquarius_url=self.ctx.settings.aquarius_url)

    @cached_property
    def chain_id(self) -> int:
        """The chain id: the connection's ``chain_id``, else the Provider's only chain."""
        return self.ctx.chain_id(lambda: self.client.chain_ids, "Provider")

    def test_connection(self) -> tuple[bool, str]:
        """Check the Provider, the chain and the key without spending anything.

        :return: ``(ok, message)``.
        """
        root = self.client.root(refresh=True)
        software = root.get("software")
        if software != "Provider":
            return (
                False,
                f"{self.ctx.settings.provider_url} is not an Ocean Provider v4 (software={software!r})",
            )
        chain_id = self.chain_id
        if chain_id not in self.client.chain_ids:
            return False, (
                f"The Provider does not serve chain {chain_id} (it serves {self.client.chain_ids})"
            )
        provider_address = self.client.provider_address(chain_id)
        if not provider_address:
            return False, f"The Provider announces no providerAddresses entry for chain {chain_id}"
        if self.ctx.settings.rpc_url:
            rpc_chain = self.ctx.rpc.chain_id()
            if rpc_chain != chain_id:
                return False, f"The RPC node serves chain {rpc_chain}, the connection says {chain_id}"
        address = self.ctx.consumer_address
        return True, (
            f"Connected to Ocean Provider {root.get('version')} at {self.ctx.settings.provider_url} on chain "
            f"{chain_id}; consumer {address}"
        )

    def get_environments(self) -> list[ComputeEnvironment]:
        """The compute environments the Provider offers on the connection's chain."""
        return self.client.environments(self.chain_id)

    def resolve_environment(self, environment: str | ComputeEnvironment | None = None) -> ComputeEnvironment:
        """Return the named environment, or the first free one when ``environment`` is ``None``.

        :param environment: an environment id, an environment, or ``None``.
        """
        if isinstance(environment, ComputeEnvironment):
            return environment
        if environment is None:
            return self.client.choose_free_environment(self.chain_id)
        return self.client.get_environment(self.chain_id, environment)

    @staticmethod
    def _valid_until(valid_until: int | float | datetime | timedelta | None, env: ComputeEnvironment) -> int:
        now = time.time()
        if valid_until is None:
            value = now + (env.max_job_duration or 3600)
        elif isinstance(valid_until, timedelta):
            value = now + valid_until.total_seconds()
        elif isinstance(valid_until, datetime):
            value = valid_until.timestamp()
        else:
            value = float(valid_until)
        if value <= now:
            raise OceanValidationError(
                f"valid_until must be in the future (got {int(value)}, now {int(now)})"
            )
        return int(value)

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
        **node_options: Any,
    ) -> dict[str, Any]:
        """Quote every input with ``initializeCompute``, then pay its datatoken order (``startOrder``,
        ``reuseOrder``, or nothing while its provider fee is still valid); all checks come first.

        :meth:`~airflow_provider_ocean.hooks.ocean.OceanComputeHook.pay_for_compute` documents the parameters
        and the returned dict; here ``node_options`` are refused (Ocean Node only), ``environment=None`` is
        the first free environment, and an earlier payment's ``valid_until`` is kept while it still covers a
        whole job.
        """
        from airflow_provider_ocean.payment.fees import make_requests
        from airflow_provider_ocean.payment.orders import OrderPayer

        if any(value is not None for value in node_options.values()):
            raise OceanValidationError(
                f"{', '.join(sorted(node_options))} only apply to Ocean Node connections"
            )

        inputs = [ComputeInput.coerce(d) for d in datasets]
        algo = ComputeAlgorithm.coerce(algorithm)
        if environment is None and isinstance(transfer_tx_ids, dict) and transfer_tx_ids.get("environment"):
            environment = str(transfer_tx_ids["environment"])  # orders are valid for their environment only
        env = self.resolve_environment(environment)
        passed_datasets, passed_algorithm = split_transfer_tx_ids(transfer_tx_ids, len(inputs))
        passed_datasets = [
            tx or item.transfer_tx_id for tx, item in zip(passed_datasets, inputs, strict=True)
        ]
        passed_algorithm = passed_algorithm or algo.transfer_tx_id
        prepared = resolve_inputs(self.ctx.get_ddo, inputs, algo, chain_id=self.chain_id)
        if isinstance(transfer_tx_ids, dict):
            # Reusing an earlier payment: ask for no more than it covers while that still fits a whole job,
            # so a still-valid fee needs no transaction (asking for more would make the Provider want a
            # reuseOrder with a new fee).
            previous = transfer_tx_ids.get("valid_until")
            if isinstance(previous, int | float) and not isinstance(previous, bool):
                now = time.time()
                if (valid_until is None and previous > now + 10) or (
                    valid_until is not None and previous >= now + max(env.max_job_duration, 60)
                ):
                    valid_until = int(previous)
        until = self._valid_until(valid_until, env)
        self.ctx.check_rpc_chain(self.chain_id)

        dataset_requests = []
        for item, tx in zip(prepared.datasets, passed_datasets, strict=True):
            body = item.to_request(transfer_tx_id=tx)
            # Lets the Provider find an already-paid fee on any input, not only dataset 0.
            body["consumerAddress"] = env.consumer_address
            dataset_requests.append(body)
        algorithm_request = prepared.algorithm.to_initialize_request(transfer_tx_id=passed_algorithm)
        self.ctx.log.info(
            "Quoting %s dataset(s) + %s algorithm on environment %s until %s",
            len(dataset_requests),
            "raw" if prepared.algorithm.is_raw else prepared.algorithm.did,
            env.id,
            until,
        )
        quote = self.client.initialize_compute(
            datasets=dataset_requests,
            algorithm=algorithm_request,
            environment=env.id,
            valid_until=until,
            consumer_address=env.consumer_address,
        )
        quotes = list(quote["datasets"])
        passed = list(passed_datasets)
        if not prepared.algorithm.is_raw:
            quotes.append(quote["algorithm"])
            passed.append(passed_algorithm)
        requests = make_requests(
            [
                entry._replace(transfer_tx_id=tx)
                for entry, tx in zip(prepared.orderables, passed, strict=True)
            ],
            quotes,
        )
        payer = OrderPayer(
            self.ctx.rpc,
            self.ctx.sender,
            acquire=acquire_datatokens,
            max_datatoken_price=max_datatoken_price,
            journal=self.ctx.order_journal,
        )
        paid = payer.pay(requests, consumer=env.consumer_address, environment=env.id, max_fee=max_fee)
        dataset_orders = [p for p in paid if p.role == "dataset"]
        algorithm_orders = [p for p in paid if p.role == "algorithm"]
        for order in paid:
            self.ctx.log.info("%s %s: %s via %s", order.role, order.did, order.action, order.transfer_tx_id)
            if order.action in ("start", "reuse"):
                self._unstarted_orders.add(order.transfer_tx_id.lower())
        return Payment(
            environment=env.id,
            consumer_address=env.consumer_address,
            chain_id=self.chain_id,
            valid_until=until,
            datasets=dataset_orders,
            algorithm=algorithm_orders[0] if algorithm_orders else None,
        ).to_dict()

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

        :meth:`~airflow_provider_ocean.hooks.ocean.OceanComputeHook.start_compute` documents the parameters;
        here the job of a start whose outcome is unknown is the one whose agreementId is one of the request's
        orders and that did not exist before (the ``on_attempt`` record has no ``start_id``).
        """
        inputs = [ComputeInput.coerce(d) for d in datasets]
        algo = ComputeAlgorithm.coerce(algorithm)
        paid = Payment.from_dict(payment) if payment else None
        if paid is not None and paid.node is not None:
            raise OceanValidationError("This payment was made for an Ocean Node, not for a Provider v4")
        if environment and paid is not None and paid.environment and environment != paid.environment:
            raise OceanValidationError(
                f"The payment is for environment {paid.environment}, not {environment}: "
                "orders only validate for the environment they were paid for"
            )
        env_id = (paid.environment if paid is not None else None) or environment
        if not env_id:
            env_id = self.resolve_environment(None).id
        paid_datasets = paid.datasets if paid is not None else []
        if paid_datasets and len(paid_datasets) != len(inputs):
            raise OceanValidationError(
                f"The payment covers {len(paid_datasets)} datasets, {len(inputs)} given"
            )
        dataset_bodies = []
        for position, item in enumerate(inputs):
            order = paid_datasets[position] if paid_datasets else None
            if order is not None and order.did != item.did:
                raise OceanValidationError(
                    f"Dataset {position} is {item.did} but the payment is for {order.did}"
                )
            tx, service_id = _paid(f"Dataset {item.did}", order, item.transfer_tx_id, item.service_id)
            dataset_bodies.append(
                dataclasses.replace(item, service_id=service_id).to_request(transfer_tx_id=tx)
            )
        if not algo.is_raw:
            order = paid.algorithm if paid is not None else None
            tx, service_id = _paid(f"Algorithm {algo.did}", order, algo.transfer_tx_id, algo.service_id)
            algo = dataclasses.replace(algo, service_id=service_id, transfer_tx_id=tx)
        algorithm_body = algo.to_start_request()
        transfer_tx_ids = unique(
            [b.get("transferTxId") for b in dataset_bodies] + [algorithm_body.get("transferTxId")]
        )
        # Jobs already using these orders (one order may start many jobs one after the other): a job
        # created by this attempt is one that is not among them. Orders this backend has just sent and never
        # started with cannot be in use: no need to ask.
        fresh = bool(transfer_tx_ids) and all(t.lower() in self._unstarted_orders for t in transfer_tx_ids)
        before = [] if fresh else self.jobs_with_agreements(transfer_tx_ids)
        self._unstarted_orders.difference_update(t.lower() for t in transfer_tx_ids)
        attempt = StartAttempt(
            provider_url=self.ctx.settings.provider_url,
            owner=self.ctx.consumer_address,
            transfer_tx_ids=transfer_tx_ids,
            started_at=time.time(),
            known_job_ids=[j.job_id for j in before],
        )
        if on_attempt is not None:
            on_attempt(attempt.to_dict())
        try:
            job = self.client.start_compute(
                self.ctx.signer,
                datasets=dataset_bodies,
                algorithm=algorithm_body,
                environment=env_id,
            )
        except (OceanProviderError, OceanConnectionError) as exc:
            if isinstance(exc, OceanProviderError) and _IN_USE in exc.detail.lower():
                raise self._order_in_use(exc, transfer_tx_ids) from None
            if not outcome_unknown(exc):
                raise
            job = resolve_unknown_start(exc, attempt, self, self.ctx.log)
        self.ctx.log.info(
            "Started compute job %s on %s (status %s %s)", job.job_id, env_id, job.status, job.status_text
        )
        return job

    def _order_in_use(self, exc: OceanProviderError, transfer_tx_ids: list[str]) -> OceanOrderInUseError:
        """The operator refused a second running job on one agreementId: name the orders and jobs."""
        try:
            running = [j for j in self.jobs_with_agreements(transfer_tx_ids) if not j.is_terminal]
        except OceanError:
            running = []
        in_use = unique(j.agreement_id for j in running)
        return OceanOrderInUseError(
            f"{exc.detail} Orders {', '.join(in_use or transfer_tx_ids)} are used by running job(s) "
            f"{', '.join(j.job_id for j in running) or '(unknown)'} of {self.ctx.consumer_address}",
            in_use_by=[j.job_id for j in running],
            transfer_tx_ids=in_use or transfer_tx_ids,
            status=exc.status,
            body=exc.body,
            operation=exc.operation,
            hint="another run or task of this wallet is using the same paid orders; pay a new order for "
            "the input in use (OceanComputeStartOperator does this once by itself) or wait for that job",
        )

    # -- exactly once: the recovery's matcher (backends/recovery.py) ----------------------------------
    def find(self, attempt: StartAttempt) -> JobStatus | None:
        """The job ``attempt`` created, matched by its orders (see :meth:`find_started_job`)."""
        return self.find_started_job(
            attempt.transfer_tx_ids, known_job_ids=attempt.known_job_ids, started_at=attempt.started_at
        )

    def describe(self, attempt: StartAttempt) -> str:
        """A job with one of the attempt's orders as agreementId."""
        return f"a job with agreement {attempt.transfer_tx_ids}"

    def unknown_error(
        self, attempt: StartAttempt, exc: OceanError, lookup_error: OceanError
    ) -> OceanStartOutcomeUnknownError:
        """The error naming the attempt's orders, to look for before starting again."""
        txs = attempt.transfer_tx_ids
        return OceanStartOutcomeUnknownError(
            f"The start of a compute job may have succeeded ({exc}), and listing the jobs of "
            f"{attempt.owner} failed ({lookup_error}). Orders: {', '.join(txs)}.",
            transfer_tx_ids=txs,
            started_at=attempt.started_at,
            known_job_ids=attempt.known_job_ids,
            hint="look for a job with one of these agreementIds before starting again "
            "(OceanComputeHook.find_started_job); the start operator does it on its next try",
        )

    def jobs_with_agreements(self, transfer_tx_ids: Iterable[str]) -> list[JobStatus]:
        """The wallet's jobs whose ``agreementId`` is one of ``transfer_tx_ids`` (oldest first).

        :param transfer_tx_ids: order transaction ids.
        """
        wanted = {t.lower() for t in transfer_tx_ids if t}
        return [j for j in self.list_jobs() if (j.agreement_id or "").lower() in wanted]

    def find_started_job(
        self,
        transfer_tx_ids: Iterable[str],
        *,
        known_job_ids: Iterable[str] = (),
        started_at: float | None = None,
        clock_skew: float = START_CLOCK_SKEW,
        start_id: str | None = None,
    ) -> JobStatus | None:
        """Find the job a start attempt created, by its orders (docs/reference/provider-v4-api.md §7 rule 12).

        The Provider sends the operator the ``transferTxId`` of one input as ``agreementId`` (which one
        depends on the fees), so a job matches when its agreementId is any of the attempt's orders, it
        is not one of the jobs that already used them before the attempt, and it was not created
        (Provider clock) more than ``clock_skew`` seconds before the attempt began.

        :meth:`~airflow_provider_ocean.hooks.ocean.OceanComputeHook.find_started_job` documents the parameters
        (``start_id`` is not used here).
        """
        known = set(known_job_ids)
        matches = []
        for job in self.jobs_with_agreements(transfer_tx_ids):
            if job.job_id in known:
                continue
            created = epoch(job.date_created)
            if started_at is not None and created is not None and created < started_at - clock_skew:
                continue
            matches.append(job)
        if len(matches) > 1:
            self.ctx.log.warning(
                "Several jobs match one start attempt: %s; using the oldest",
                ", ".join(j.job_id for j in matches),
            )
        matches.sort(key=lambda j: epoch(j.date_created) or 0.0)
        return matches[0] if matches else None

    def recent_orders(
        self,
        datasets: list[ComputeInput | dict[str, Any] | str],
        algorithm: ComputeAlgorithm | dict[str, Any] | str,
        environment: str | ComputeEnvironment | None = None,
        *,
        lookback_blocks: int = ORDER_LOOKBACK_BLOCKS,
    ) -> dict[str, Any] | None:
        """Orders this wallet paid recently for these inputs, read from the chain.

        For each input (datasets, then a DID algorithm): the newest ``OrderStarted`` event of its
        datatoken in the last ``lookback_blocks`` blocks whose consumer is the environment's address, whose
        payer is this wallet and whose service index is the input's. Meant for a retry whose record of
        what it paid was lost (a crash between paying and recording): pass the result as
        ``transfer_tx_ids`` to :meth:`pay_for_compute`, where ``initializeCompute`` decides whether each
        order is still valid; nothing is trusted from here.

        :meth:`~airflow_provider_ocean.hooks.ocean.OceanComputeHook.recent_orders` documents the parameters
        and the returned dict.
        """
        from airflow_provider_ocean.payment.history import recent_orders

        inputs = [ComputeInput.coerce(d) for d in datasets]
        algo = ComputeAlgorithm.coerce(algorithm)
        env = self.resolve_environment(environment)
        prepared = resolve_inputs(self.ctx.get_ddo, inputs, algo, chain_id=self.chain_id)
        found, covered = recent_orders(
            self.ctx.rpc,
            prepared.orderables,
            consumer=env.consumer_address,
            payer=self.ctx.consumer_address,
            lookback_blocks=lookback_blocks,
        )
        if not any(found):
            return None
        count = len(prepared.datasets)
        return {
            "datasets": found[:count],
            "algorithm": found[count] if len(found) > count else None,
            "environment": env.id,
            "valid_until": covered,
        }

    # -- jobs ----------------------------------------------------------------------------------------
    def list_jobs(self) -> list[JobStatus]:
        """Every job of the consumer wallet on this Provider."""
        return self.client.get_status(self.ctx.consumer_address)

    def get_job_status(self, job_id: str) -> JobStatus:
        """The status of one job of the consumer wallet.

        :param job_id: the job id.
        :raises OceanJobNotFoundError: the Provider knows no such job for this owner.
        """
        for job in self.client.get_status(self.ctx.consumer_address, job_id):
            if job.job_id == job_id:
                return job
        raise OceanJobNotFoundError(
            f"No job {job_id} for owner {self.ctx.consumer_address} at {self.ctx.settings.provider_url}",
            job_id=job_id,
        )

    def stop_job(self, job_id: str) -> JobStatus | None:
        """Request a stop (signed). The job then ends with ``stopreq == 1``.

        :param job_id: the job id.
        :return: the job's status as operator-service read it back after marking it (``stopreq`` 1, status
            unchanged), if the Provider returned it.
        """
        jobs = self.client.stop_job(self.ctx.signer, job_id)
        self.ctx.log.info("Requested stop of compute job %s", job_id)
        return next((j for j in jobs if j.job_id == job_id), None)

    def delete_job(self, job_id: str) -> None:
        """Delete a job (signed; the current operator-service treats it as a no-op).

        :param job_id: the job id.
        """
        self.client.delete_job(self.ctx.signer, job_id)
        self.ctx.log.info("Requested deletion of compute job %s", job_id)

    def download_result(
        self, job_id: str, index: int, destination: Destination, *, raw_logs: bool = False
    ) -> DownloadedResult:
        """Stream one result file to a file object, a path or a directory (signed; constant memory).

        :param job_id: the job id.
        :param index: position of the file in the job's results.
        :param destination: binary file object, file path, or existing directory.
        :param raw_logs: keep a log's bytes as served (default: Docker log frames are taken off).
        """
        return self.client.download_result(self.ctx.signer, job_id, index, destination, raw_logs=raw_logs)


def _paid(
    what: str, order: PaidOrder | None, transfer_tx_id: str | None, service_id: str | None
) -> tuple[str, str]:
    """The order tx and service of one input of a start: from the payment, else as the input gives them.

    :param what: the input, for the error (``Dataset did:op:...``).
    :param order: the payment's order of this input, if any.
    :param transfer_tx_id: the input's own ``transfer_tx_id``.
    :param service_id: the input's own ``service_id`` (wins over the order's).
    :raises OceanValidationError: the input has no paid order.
    """
    tx = order.transfer_tx_id if order else transfer_tx_id
    service = service_id or (order.service_id if order else None)
    if not tx or not service:
        raise OceanValidationError(
            f"{what} has no paid order: call pay_for_compute first or give transfer_tx_id and service_id"
        )
    return tx, service
