"""The Ocean Node backend of :class:`~airflow_provider_ocean.hooks.ocean.OceanComputeHook`.

The hook keeps its public methods; when the connection's backend is Ocean Node (``backend`` extra
``ocean_node``, or ``auto`` and ``GET /`` says ``software: "Ocean-Node"``) they delegate here. What differs
from Provider v4 (docs/reference/ocean-node-api.md):

- datasets may be DIDs (ordered to the node, as for v4) **or raw URLs** (``"https://…"``,
  ``{"url": …}`` or ``{"fileObject": {…}}``), which need no order;
- algorithms may be DIDs or inline ``rawcode`` (container ``checksum`` optional), with ``algocustomdata``
  and ``envs``;
- free jobs go to ``freeCompute`` (no payment at all); paid jobs are charged through the Escrow contract:
  the hook quotes (``initializeCompute``), checks ``max_fee`` and balances before anything is sent, pays the
  datatoken orders of DID inputs (consumer = the node), deposits only the shortfall and authorizes the node
  with limits that fit the job, then starts with ``payment{chainId, token}``;
- node-only options: ``resources``, ``max_job_duration``, ``queue_max_wait_time``, ``free``
  (``None`` = free when the environment accepts free jobs and no ``max_fee`` was given).

The payment dict keeps the v4 keys the operators read (``environment``, ``datasets``, ``algorithm`` with
one entry per input) and adds ``backend: "ocean_node"`` and ``ocean_node: {...}`` (free, token, quote,
escrow plan, options).

Exactly once: a node job has no identity the client knows before the answer (free jobs carry no order at
all; a paid job's agreementId is the node's own lock transaction), so every start is tagged with a fresh
random id in the job's ``metadata`` (``{START_TAG_KEY: id}``; the node stores it and returns it in every
status entry). A start whose outcome is unknown (connection lost after sending, 5xx, unreadable answer)
is resolved by looking for the job carrying that tag, never by starting again; the id is also handed to
``on_attempt`` so that a later try can look for it (:meth:`OceanNodeBackend.find_started_job`). A node
that dropped ``metadata`` could not be matched: lookups would then find nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import uuid
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_ocean.backends.recovery import epoch, outcome_unknown, resolve_unknown_start
from airflow_provider_ocean.exceptions import (
    OceanConnectionError,
    OceanError,
    OceanJobNotFoundError,
    OceanProviderError,
    OceanStartOutcomeUnknownError,
    OceanValidationError,
)
from airflow_provider_ocean.models import ComputeEnvironment, JobStatus
from airflow_provider_ocean.payment.escrow import EscrowPayer
from airflow_provider_ocean.records import NodeTerms, Orderable, PaidOrder, Payment, StartAttempt
from airflow_provider_ocean.wire.node_inputs import (
    free_entry,
    node_algorithm,
    node_dataset,
    node_options,
    previous_orders,
    raw_entry,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from airflow_provider_ocean.backends.base import BackendContext
    from airflow_provider_ocean.models import DownloadedResult, ResultFile
    from airflow_provider_ocean.wire.download import Destination
    from airflow_provider_ocean.wire.ocean_node import OceanNodeClient

log = logging.getLogger(__name__)

#: Key of the job ``metadata`` entry holding the start's unique id (see the module docstring).
START_TAG_KEY = "airflow_ocean_start"


class OceanNodeBackend:
    """Ocean Node implementation of the hook's job methods (see the module docstring).

    :param ctx: the connection as the backend sees it (settings, signer, chain client, DDO reader).
    """

    name = "ocean_node"

    def __init__(self, ctx: BackendContext) -> None:
        self.ctx = ctx
        self._previous: dict[str, JobStatus] = {}

    def __repr__(self) -> str:
        return f"OceanNodeBackend({self.ctx.settings.provider_url!r})"

    @cached_property
    def client(self) -> OceanNodeClient:
        """The Ocean Node wire client (``auth_token`` extra, if set, replaces signatures)."""
        return self._new_client()

    def _new_client(self) -> OceanNodeClient:
        from airflow_provider_ocean.wire.ocean_node import OceanNodeClient

        return self.ctx.wire_client(OceanNodeClient, auth_token=self.ctx.auth_token)

    @property
    def chain_id(self) -> int:
        """The chain id: the connection's ``chain_id``, else the node's only chain."""
        return self.ctx.chain_id(lambda: self.client.chain_ids, "node")

    # -- discovery -----------------------------------------------------------------------------------
    def test_connection(self) -> tuple[bool, str]:
        root = self.client.root(refresh=True)
        chain_id = self.chain_id
        if chain_id not in self.client.chain_ids:
            return False, f"The node does not serve chain {chain_id} (it serves {self.client.chain_ids})"
        if self.ctx.settings.rpc_url:
            rpc_chain = self.ctx.rpc.chain_id()
            if rpc_chain != chain_id:
                return False, f"The RPC node serves chain {rpc_chain}, the connection says {chain_id}"
        envs = self.client.environments_raw(chain_id)
        return True, (
            f"Connected to Ocean Node {root.get('nodeId')} ({root.get('providerAddress')}) at "
            f"{self.ctx.settings.provider_url} on chain {chain_id}: {len(envs)} environment(s); "
            f"consumer {self.ctx.consumer_address}"
        )

    def get_environments(self) -> list[ComputeEnvironment]:
        return self.client.environments(self.chain_id)

    def resolve_environment(
        self, environment: str | ComputeEnvironment | None = None, *, free: bool | None = None
    ) -> ComputeEnvironment:
        """The named environment, else the first accepting free jobs (``free`` not False), else the first.

        :param environment: an environment id, an environment, or ``None``.
        :param free: whether the job will be free.
        """
        if isinstance(environment, ComputeEnvironment):
            return environment
        if environment is not None:
            return self.client.get_environment(self.chain_id, environment)
        envs = self.get_environments()
        if not envs:
            raise OceanValidationError(
                f"The node at {self.ctx.settings.provider_url} announces no compute environment "
                "(it needs a working Docker engine)"
            )
        if free is not False:
            for env in envs:
                if env.raw.get("free"):
                    return env
            if free:
                raise OceanValidationError("No environment of the node accepts free jobs")
        return envs[0]

    # -- paying ----------------------------------------------------------------------------------------
    def pay_for_compute(
        self,
        datasets: list[Any],
        algorithm: Any,
        environment: str | ComputeEnvironment | None = None,
        valid_until: Any = None,
        max_fee: int | None = None,
        transfer_tx_ids: Any = None,
        *,
        acquire_datatokens: str | None = None,
        max_datatoken_price: int | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Prepare a node job: nothing for a free job; orders + escrow for a paid one (checked first).

        :meth:`~airflow_provider_ocean.hooks.ocean.OceanComputeHook.pay_for_compute` documents the parameters
        (``options`` are its ``node_options``); here datasets may be URLs (:func:`node_dataset`),
        ``environment=None`` picks one (:meth:`resolve_environment`), ``valid_until`` must be ``None`` (a node
        sets its fees' validity from ``max_job_duration``) and ``max_fee`` caps escrow amount + order fees.
        """
        from airflow_provider_ocean.ddo import find_service

        opts = node_options(options)
        if valid_until is not None:
            raise OceanValidationError(
                "valid_until (order_validity) only applies to Provider v4 connections: an Ocean Node sets "
                "the validity of its fees from the job's duration; set max_job_duration instead"
            )
        if not datasets:
            raise OceanValidationError("A compute job needs at least one dataset")
        if environment is None and isinstance(transfer_tx_ids, dict) and transfer_tx_ids.get("environment"):
            environment = str(transfer_tx_ids["environment"])
        free = opts.get("free")
        if free is None:
            free = max_fee is None
        env = self.resolve_environment(environment, free=free if opts.get("free") is not None else None)
        if free and not env.raw.get("free"):
            if opts.get("free") is None:
                free = False
            else:
                raise OceanValidationError(
                    f"Environment {env.id} does not accept free jobs (no `free` block)"
                )
        chain_id = self.chain_id
        requests_, inputs = zip(*(node_dataset(d) for d in datasets), strict=True)
        algo_body, algo_did, algo_service_id, algo_tx = node_algorithm(algorithm)
        previous = previous_orders(transfer_tx_ids)
        # DID inputs: resolve services (the node needs orders to itself for paid jobs)
        orderables: list[Orderable] = []
        # raw inputs' entries; None: a DID input (its order, or its free entry, comes later)
        entries: list[PaidOrder | None] = []
        for position, (body, item) in enumerate(zip(requests_, inputs, strict=True)):
            if item is None:
                entries.append(raw_entry(body))
                continue
            ddo = self.ctx.get_ddo(item.did)
            service, index = find_service(
                ddo, item.service_id, role="dataset" if position == 0 else "additional dataset"
            )
            tx = item.transfer_tx_id or previous.get(("dataset", position, item.did))
            orderables.append(
                Orderable(
                    "dataset", item.did, str(service["id"]), index, str(service["datatokenAddress"]), tx
                )
            )
            entries.append(None)
        if algo_did:
            ddo = self.ctx.get_ddo(algo_did)
            service, index = find_service(ddo, algo_service_id, role="algorithm")
            tx = algo_tx or previous.get(("algorithm", 0, algo_did))
            orderables.append(
                Orderable(
                    "algorithm", algo_did, str(service["id"]), index, str(service["datatokenAddress"]), tx
                )
            )
        terms = NodeTerms(free=bool(free), options=opts, token=env.fee_token)
        payment = Payment(
            environment=env.id,
            consumer_address=env.consumer_address,
            chain_id=chain_id,
            valid_until=None,
            datasets=[],
            node=terms,
        )
        if free:
            free_orders = iter([free_entry(o) for o in orderables])
            payment.datasets = [e or next(free_orders) for e in entries]
            payment.algorithm = next(free_orders) if algo_did else None
            self.ctx.log.info("Free Ocean Node job on environment %s: nothing to pay", env.id)
            return payment.to_dict()

        self.ctx.check_rpc_chain(chain_id)
        # the node's initializeCompute route refuses any dataset without a documentId (400 "Missing
        # dataset did"): raw URL datasets cost nothing to quote, so only the DID inputs are sent
        quote_datasets = []
        for item in inputs:
            if item is None:
                continue
            ref = next(o for o in orderables if o.role == "dataset" and o.did == item.did)
            quote_datasets.append(
                {
                    "documentId": item.did,
                    "serviceId": ref.service_id,
                    **({"transferTxId": ref.transfer_tx_id} if ref.transfer_tx_id else {}),
                }
            )
        quote_algorithm = dict(algo_body)
        if algo_did:
            ref = orderables[-1]
            quote_algorithm.update(
                {
                    "serviceId": ref.service_id,
                    **({"transferTxId": ref.transfer_tx_id} if ref.transfer_tx_id else {}),
                }
            )
        quote = self.client.initialize_compute(
            datasets=quote_datasets,
            algorithm=quote_algorithm,
            environment=env.id,
            consumer_address=self.ctx.consumer_address,
            chain_id=chain_id,
            token=env.fee_token,
            max_job_duration=opts.get("max_job_duration") or env.max_job_duration or None,
            resources=opts.get("resources"),
            queue_max_wait_time=opts.get("queue_max_wait_time"),
        )
        quoted = quote["payment"]
        amount = int(str(quoted.get("amount") or 0))
        token = str(quoted.get("token") or env.fee_token)
        self.ctx.log.info(
            "Ocean Node quote on %s: %s base units of %s, lock for %s s, payee %s",
            env.id,
            amount,
            token,
            quoted.get("minLockSeconds"),
            quoted.get("payee"),
        )
        # Every check before the first transaction: escrow plan (fee cap, balances, gas), then orders.
        escrow = EscrowPayer(self.ctx.rpc, str(quoted.get("escrowAddress") or ""), self.ctx.sender)
        plan = escrow.plan(
            payer=self.ctx.consumer_address,
            token=token,
            payee=str(quoted.get("payee") or env.consumer_address),
            amount=amount,
            min_lock_seconds=int(quoted.get("minLockSeconds") or 0),
            max_fee=max_fee,
        )
        if plan.needs_transactions:
            escrow.check_affordable(plan, self.ctx.consumer_address)
        paid: list[PaidOrder] = []
        if orderables:
            from airflow_provider_ocean.payment.fees import make_requests
            from airflow_provider_ocean.payment.orders import OrderPayer

            quotes = list(quote.get("datasets") or [])[: sum(item is not None for item in inputs)]
            if algo_did:
                quotes.append(quote.get("algorithm") or {})
            payer = OrderPayer(
                self.ctx.rpc,
                self.ctx.sender,
                acquire=acquire_datatokens,
                max_datatoken_price=max_datatoken_price,
                journal=self.ctx.order_journal,
            )
            order_cap = None if max_fee is None else max(int(max_fee) - amount, 0)
            paid = payer.pay(
                make_requests(orderables, quotes), consumer=env.consumer_address, max_fee=order_cap
            )
        if plan.needs_transactions:  # planned again in the wallet's turn: other tasks may have locked funds
            payee = str(quoted.get("payee") or env.consumer_address)
            with escrow.turn(self.ctx.wallet_locks, chain_id, self.ctx.consumer_address, token):
                plan = escrow.secure(
                    payer=self.ctx.consumer_address,
                    token=token,
                    payee=payee,
                    amount=amount,
                    min_lock_seconds=int(quoted.get("minLockSeconds") or 0),
                )
        terms.token = token
        terms.amount = str(amount)
        terms.min_lock_seconds = int(quoted.get("minLockSeconds") or 0)
        terms.escrow = plan.to_dict()
        orders = iter(paid)
        payment.datasets = [e or next(orders) for e in entries]
        payment.algorithm = next(orders) if algo_did else None
        return payment.to_dict()

    # -- starting ----------------------------------------------------------------------------------------
    def start_compute(
        self,
        datasets: list[Any],
        algorithm: Any,
        payment: dict[str, Any] | None = None,
        environment: str | None = None,
        *,
        on_attempt: Callable[[dict[str, Any]], None] | None = None,
        **options: Any,
    ) -> JobStatus:
        """Start the job ``payment`` prepared (a free job needs no payment: one is made on the fly).

        :meth:`~airflow_provider_ocean.hooks.ocean.OceanComputeHook.start_compute` documents the parameters;
        here ``options`` are node-only options used when no ``payment`` is given, and the ``on_attempt``
        record's ``start_id`` is the tag :meth:`find_started_job` looks for.
        """
        if payment is None:
            payment = self.pay_for_compute(datasets, algorithm, environment, **{**options, "free": True})
        paid = Payment.from_dict(payment)
        if paid.node is None:
            raise OceanValidationError("This payment was made for a Provider v4, not for an Ocean Node")
        terms = paid.node
        opts = dict(terms.options)
        env_id = paid.environment or environment
        bodies = []
        for position, item in enumerate(datasets):
            body, parsed = node_dataset(item)
            if parsed is not None:
                order = paid.datasets[position] if position < len(paid.datasets) else None
                tx = (order.transfer_tx_id if order else None) or parsed.transfer_tx_id
                service_id = parsed.service_id or (order.service_id if order else None)
                body = dataclasses.replace(parsed, service_id=service_id).to_request(
                    transfer_tx_id=tx or None
                )
            bodies.append(body)
        algo_body, algo_did, algo_service_id, algo_tx = node_algorithm(algorithm)
        if algo_did:
            algo_order = paid.algorithm
            algo_body["serviceId"] = algo_service_id or (algo_order.service_id if algo_order else None)
            tx = algo_tx or (algo_order.transfer_tx_id if algo_order else None)
            if tx:
                algo_body["transferTxId"] = tx
        txs = [o.transfer_tx_id for o in paid.orders if o.transfer_tx_id]
        max_job_duration = opts.get("max_job_duration")
        if not terms.free and not max_job_duration:
            max_job_duration = self.resolve_environment(env_id).max_job_duration or 3600
        attempt = StartAttempt(
            provider_url=self.ctx.settings.provider_url,
            owner=self.ctx.consumer_address,
            transfer_tx_ids=txs,
            started_at=time.time(),
            start_id=uuid.uuid4().hex,
        )
        if on_attempt is not None:
            on_attempt(attempt.to_dict())
        common: dict[str, Any] = {
            "environment": env_id,
            "algorithm": algo_body,
            "datasets": bodies,
            "resources": opts.get("resources"),
            "queue_max_wait_time": opts.get("queue_max_wait_time"),
            "max_job_duration": max_job_duration,
            "metadata": {START_TAG_KEY: attempt.start_id},
        }
        chain_id = paid.chain_id or (None if terms.free else self.chain_id)
        with contextlib.ExitStack() as turn:
            if not terms.free and (terms.escrow or {}).get("escrow") and chain_id is not None:
                # the wallet's turn: escrow topped up if other tasks locked funds, start, lock mined
                escrow = EscrowPayer(self.ctx.rpc, str((terms.escrow or {})["escrow"]), self.ctx.sender)
                turn.enter_context(
                    escrow.turn(self.ctx.wallet_locks, chain_id, self.ctx.consumer_address, str(terms.token))
                )
                escrow.secure(
                    payer=self.ctx.consumer_address,
                    token=str(terms.token),
                    payee=str((terms.escrow or {}).get("payee") or ""),
                    amount=int(terms.amount or 0),
                    min_lock_seconds=int(terms.min_lock_seconds or 0),
                )
            try:
                if terms.free:
                    raw = self.client.start_free_compute(self.ctx.signer, **common)
                else:
                    raw = self.client.start_compute(
                        self.ctx.signer, payment={"chainId": chain_id, "token": terms.token}, **common
                    )
                    self._await_lock((raw.get("payment") or {}).get("lockTx"))
            except (OceanProviderError, OceanConnectionError) as exc:
                if not outcome_unknown(exc):
                    raise
                return resolve_unknown_start(exc, attempt, self, self.ctx.log)
        from airflow_provider_ocean.wire.node_payloads import job_status_from_node

        job = job_status_from_node(raw, job_id=raw["jobId"])
        self.ctx.log.info(
            "Started Ocean Node job %s on %s (%s, status %s %s)",
            job.job_id,
            env_id,
            "free" if terms.free else f"lock {(raw.get('payment') or {}).get('lockTx')}",
            job.status,
            job.status_text,
        )
        return job

    def _await_lock(self, lock_tx: str | None) -> None:
        """Wait for the node's ``createLock`` to be mined, so the wallet's next turn plans with it."""
        if lock_tx and str(lock_tx).startswith("0x"):
            try:
                self.ctx.rpc.wait_for_receipt(str(lock_tx), timeout=self.ctx.sender.receipt_timeout)
            except Exception as exc:  # the job is started: a slow lock only makes the next plan stale
                self.ctx.log.warning("The node's lock %s is not mined yet (%s)", lock_tx, exc)

    # -- exactly once: the recovery's matcher (backends/recovery.py) ----------------------------------
    def find(self, attempt: StartAttempt) -> JobStatus | None:
        """The job ``attempt`` created, matched by its start tag."""
        return self.find_started_job(start_id=attempt.start_id)

    def describe(self, attempt: StartAttempt) -> str:
        """A job carrying the attempt's start tag."""
        return f"a job tagged {attempt.start_id}"

    def unknown_error(
        self, attempt: StartAttempt, exc: OceanError, lookup_error: OceanError
    ) -> OceanStartOutcomeUnknownError:
        """The error naming the attempt's start tag, to look for before starting again."""
        return OceanStartOutcomeUnknownError(
            f"The start of an Ocean Node job may have succeeded ({exc}), and listing the jobs of "
            f"{attempt.owner} failed ({lookup_error}). Start tag: {attempt.start_id}.",
            transfer_tx_ids=list(attempt.transfer_tx_ids),
            started_at=attempt.started_at,
            hint=f"look for a job whose metadata {START_TAG_KEY} is {attempt.start_id} before starting again "
            "(OceanComputeHook.find_started_job); the start operator does it on its next try",
        )

    def find_started_job(
        self,
        transfer_tx_ids: Iterable[str] = (),
        *,
        known_job_ids: Iterable[str] = (),
        started_at: float | None = None,
        clock_skew: float = 0.0,
        start_id: str | None = None,
    ) -> JobStatus | None:
        """The owner's job whose ``metadata`` carries the start tag ``start_id`` (the oldest, if several).

        A node job has no identity known before the answer but its tag: the orders, the known jobs and the
        start time (Provider v4's match) are not needed.

        :meth:`~airflow_provider_ocean.hooks.ocean.OceanComputeHook.find_started_job` documents the
        parameters; only ``start_id`` is used (``None``: nothing to look for). Raises :class:`OceanError` when
        the node cannot be asked (never guessed as "no job").
        """
        if not start_id:
            return None
        from airflow_provider_ocean.wire.node_payloads import job_status_from_node

        matches = [
            entry
            for entry in self.client.get_status(consumer_address=self.ctx.consumer_address)
            if isinstance(entry.get("metadata"), dict) and entry["metadata"].get(START_TAG_KEY) == start_id
        ]
        if len(matches) > 1:
            self.ctx.log.warning(
                "Several jobs carry the start tag %s: %s; using the oldest",
                start_id,
                ", ".join(str(m["jobId"]) for m in matches),
            )
        matches.sort(key=lambda m: epoch(m.get("dateCreated")) or 0.0)
        return job_status_from_node(matches[0], job_id=matches[0]["jobId"]) if matches else None

    def recent_orders(
        self,
        datasets: list[Any],
        algorithm: Any,
        environment: str | ComputeEnvironment | None = None,
        *,
        lookback_blocks: int = 0,
    ) -> dict[str, Any] | None:
        """Not looked up on an Ocean Node: free jobs and raw inputs have no orders, and the orders of a paid
        start that was never recorded are paid again; the parameters
        (:meth:`~airflow_provider_ocean.hooks.ocean.OceanComputeHook.recent_orders`) are unused.
        """
        return None

    # -- jobs --------------------------------------------------------------------------------------------
    def list_jobs(self) -> list[JobStatus]:
        return self.client.list_jobs(self.ctx.consumer_address)

    def get_job_status(self, job_id: str) -> JobStatus:
        job = self.client.job_status(self.ctx.consumer_address, job_id, previous=self._previous.get(job_id))
        self._previous[job_id] = job
        return job

    def stop_job(self, job_id: str) -> JobStatus | None:
        from airflow_provider_ocean.wire.node_payloads import job_status_from_node, split_job_id

        entries = self.client.stop_job(self.ctx.signer, job_id)
        self.ctx.log.info("Requested stop of Ocean Node job %s", job_id)
        bare = split_job_id(job_id)[1]
        for entry in entries:
            if split_job_id(entry["jobId"])[1] == bare:
                return job_status_from_node(entry, job_id=job_id)
        return None

    def delete_job(self, job_id: str) -> None:
        self.ctx.log.warning(
            "Ocean Node does not implement job deletion (DELETE answers 404); %s kept", job_id
        )

    def download_result(
        self, job_id: str, index: int, destination: Destination, *, raw_logs: bool = False
    ) -> DownloadedResult:
        """Stream one result (by its ``index``); logs lose Docker's frames unless ``raw_logs``.

        :param job_id: the full job id.
        :param index: the result's ``index``.
        :param destination: binary file object, file path, or existing directory.
        :param raw_logs: keep a log's bytes as the node serves them (with Docker's log frames).
        """
        listed = next((r for r in self._results(job_id) if r.index == int(index)), None)
        return self.client.download_result(
            self.ctx.signer,
            job_id,
            index,
            destination,
            filename=listed.filename if listed else None,
            result_type=listed.type if listed else None,
            raw_logs=raw_logs,
        )

    def _results(self, job_id: str) -> list[ResultFile]:
        previous = self._previous.get(job_id)
        if previous is not None and previous.results:
            return previous.results
        try:
            return self.get_job_status(job_id).results
        except OceanJobNotFoundError:
            return []

    def stream_logs(
        self, job_id: str, *, own_session: bool = False, timeout: float | None = None
    ) -> Iterator[str]:
        """The running job's log lines as they are written (ends when the job stops running).

        Nothing is sent until the first line is asked for.

        :param job_id: the full job id.
        :param own_session: use a client (HTTP session) of its own, to read the stream from another thread
            while this backend keeps polling.
        :param timeout: read timeout between two chunks (default: the connection's timeout).
        """
        client = self._new_client() if own_session else self.client
        return client.stream_logs(self.ctx.signer, job_id, timeout=timeout)
