"""The Ocean Node side of :class:`~airflow_provider_ocean.hooks.ocean.OceanComputeHook`.

The hook keeps its public methods; when the connection's backend is Ocean Node (``backend`` extra
``ocean_node``, or ``auto`` and ``GET /`` says ``software: "Ocean-Node"``) they delegate here. What differs
from Provider v4 (ocean-node-api.md):

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

import dataclasses
import logging
import time
import uuid
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any

from airflow_provider_ocean.exceptions import (
    OceanConfigError,
    OceanConnectionError,
    OceanError,
    OceanJobNotFoundError,
    OceanProviderError,
    OceanStartOutcomeUnknownError,
    OceanValidationError,
)
from airflow_provider_ocean.models import ComputeEnvironment, ComputeInput, JobStatus, PaidOrder

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterator

    from airflow_provider_ocean.hooks.ocean import OceanComputeHook
    from airflow_provider_ocean.models import DownloadedResult, ResultFile
    from airflow_provider_ocean.ocean_node import OceanNodeClient

log = logging.getLogger(__name__)

NODE_OPTION_NAMES = ("resources", "max_job_duration", "queue_max_wait_time", "free")
#: Key of the job ``metadata`` entry holding the start's unique id (see the module docstring).
START_TAG_KEY = "airflow_ocean_start"
#: How often an unknown start outcome is looked up (connection errors / other errors), and the pause.
START_LOOKUP_ATTEMPTS = (4, 2)
START_LOOKUP_DELAY = 2.0
_DEFAULT_CONTAINER = {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11-slim", "checksum": ""}


def node_options(options: dict[str, Any]) -> dict[str, Any]:
    """Validate the node-only options (``None`` values are dropped).

    :param options: ``resources``, ``max_job_duration``, ``queue_max_wait_time``, ``free``.
    """
    unknown = sorted(set(options) - set(NODE_OPTION_NAMES))
    if unknown:
        raise OceanValidationError(f"Unknown Ocean Node option(s): {', '.join(unknown)}")
    out = {k: v for k, v in options.items() if v is not None}
    resources = out.get("resources")
    if resources is not None:
        if isinstance(resources, dict):
            resources = [{"id": str(k), "amount": v} for k, v in resources.items()]
        if not isinstance(resources, list) or not all(isinstance(r, dict) and r.get("id") for r in resources):
            raise OceanValidationError("resources must be {id: amount} or [{'id', 'amount'}]")
        out["resources"] = [{"id": str(r["id"]), "amount": r.get("amount")} for r in resources]
    for name in ("max_job_duration", "queue_max_wait_time"):
        if name in out:
            try:
                out[name] = int(float(out[name]))
            except (TypeError, ValueError):
                raise OceanValidationError(f"{name} must be a number of seconds") from None
            if out[name] < 0 or (name == "max_job_duration" and out[name] == 0):
                raise OceanValidationError(f"{name} must be positive")
    return out


def node_dataset(item: Any) -> tuple[dict[str, Any], ComputeInput | None]:
    """``(request object, ComputeInput for DID inputs)`` of one dataset given in any accepted form.

    :param item: a DID, a URL, ``{"url", "method"?, "headers"?}``, ``{"fileObject": {...}}`` or a DID dict.
    """
    if isinstance(item, ComputeInput):
        return item.to_request(), item
    if isinstance(item, str):
        if item.startswith(("http://", "https://")):
            return {"fileObject": {"type": "url", "url": item, "method": "get"}}, None
        return node_dataset(ComputeInput.coerce(item))
    if isinstance(item, dict):
        if isinstance(item.get("fileObject"), dict):
            body = {"fileObject": dict(item["fileObject"])}
            if item.get("userdata"):
                body["userdata"] = item["userdata"]
            return body, None
        if item.get("url") and not (item.get("did") or item.get("documentId")):
            file_object = {"type": "url", "url": str(item["url"]), "method": str(item.get("method") or "get")}
            if item.get("headers"):
                file_object["headers"] = item["headers"]
            return {"fileObject": file_object}, None
        return node_dataset(ComputeInput.coerce(item))
    raise OceanValidationError(f"A dataset must be a DID, a URL or a dict, not {type(item).__name__}")


def node_algorithm(value: Any) -> tuple[dict[str, Any], str | None, str | None, str | None]:
    """``(request object, did, service_id, transfer_tx_id)`` of an algorithm given in any accepted form.

    :param value: a DID, ``{"did"|"documentId", "service_id", "algocustomdata", "envs"}``, or a raw
        algorithm ``{"rawcode"|"url", "container": {"entrypoint", "image", "tag", "checksum"?},
        "algocustomdata", "envs"}`` (``meta`` form accepted too).
    """
    if isinstance(value, str):
        value = {"did": value}
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if not isinstance(value, dict):
        raise OceanValidationError(f"An algorithm must be a DID or a dict, not {type(value).__name__}")
    extra = {k: value[k] for k in ("algocustomdata", "envs", "userdata") if value.get(k) is not None}
    if "algouserdata" in value and value["algouserdata"] is not None:
        extra.setdefault("userdata", value["algouserdata"])
    did = value.get("did") or value.get("documentId")
    if did:
        service_id = value.get("service_id", value.get("serviceId"))
        tx = value.get("transfer_tx_id", value.get("transferTxId"))
        return {"documentId": did, **extra}, str(did), None if service_id is None else str(service_id), tx
    meta = dict(value.get("meta") or {})
    for key in ("rawcode", "url"):
        if value.get(key):
            meta[key] = value[key]
    container = dict(_DEFAULT_CONTAINER)
    container.update({k: v for k, v in (value.get("container") or meta.get("container") or {}).items() if v})
    for key in ("entrypoint", "image", "tag", "checksum"):
        if value.get(key):
            container[key] = value[key]
    meta["container"] = container
    if not meta.get("rawcode") and not meta.get("url"):
        raise OceanValidationError("A raw algorithm needs rawcode (or a url)")
    body: dict[str, Any] = {"meta": {k: v for k, v in meta.items() if k != "url"}, **extra}
    if meta.get("url"):
        body["fileObject"] = {"type": "url", "url": meta["url"], "method": "get"}
    return body, None, None, None


class OceanNodeBackend:
    """Ocean Node implementation of the hook's job methods (see the module docstring).

    :param hook: the hook (connection, signer, chain client, DDO access).
    """

    def __init__(self, hook: OceanComputeHook) -> None:
        self.hook = hook
        self._previous: dict[str, JobStatus] = {}

    def __repr__(self) -> str:
        return f"OceanNodeBackend({self.hook.settings.provider_url!r})"

    @cached_property
    def client(self) -> OceanNodeClient:
        """The Ocean Node wire client (``auth_token`` extra, if set, replaces signatures)."""
        return self._new_client()

    def _new_client(self) -> OceanNodeClient:
        from airflow_provider_ocean.ocean_node import OceanNodeClient

        settings = self.hook.settings
        extras = self.hook._connection.extra_dejson or {}
        token = extras.get("auth_token") or extras.get("extra__ocean__auth_token") or None
        return OceanNodeClient(
            settings.provider_url,
            timeout=settings.timeout,
            verify=settings.verify_ssl,
            retry_limit=self.hook.retry_limit,
            retry_delay=self.hook.retry_delay,
            auth_token=token,
        )

    @property
    def chain_id(self) -> int:
        if self.hook.settings.chain_id is not None:
            return self.hook.settings.chain_id
        chains = self.client.chain_ids
        if len(chains) == 1:
            return chains[0]
        raise OceanConfigError(
            f"Set the connection extra chain_id: the node serves chains {chains or 'none'}"
        )

    # -- discovery -----------------------------------------------------------------------------------
    def test_connection(self) -> tuple[bool, str]:
        root = self.client.root(refresh=True)
        chain_id = self.chain_id
        if chain_id not in self.client.chain_ids:
            return False, f"The node does not serve chain {chain_id} (it serves {self.client.chain_ids})"
        if self.hook.settings.rpc_url:
            rpc_chain = self.hook.rpc.chain_id()
            if rpc_chain != chain_id:
                return False, f"The RPC node serves chain {rpc_chain}, the connection says {chain_id}"
        envs = self.client.environments_raw(chain_id)
        return True, (
            f"Connected to Ocean Node {root.get('nodeId')} ({root.get('providerAddress')}) at "
            f"{self.hook.settings.provider_url} on chain {chain_id}: {len(envs)} environment(s); "
            f"consumer {self.hook.consumer_address}"
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
                f"The node at {self.hook.settings.provider_url} announces no compute environment "
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
        max_fee: int | None = None,
        transfer_tx_ids: Any = None,
        *,
        acquire_datatokens: str | None = None,
        max_datatoken_price: int | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Prepare a node job: nothing for a free job; orders + escrow for a paid one (checked first).

        :param datasets: DIDs, URLs or dicts (see :func:`node_dataset`).
        :param algorithm: DID or raw algorithm (see :func:`node_algorithm`).
        :param environment: environment id; ``None`` picks one (see :meth:`resolve_environment`).
        :param max_fee: refuse above this many base units of the fee token (escrow amount + order fees).
        :param transfer_tx_ids: earlier payment (dict) whose still-valid orders are reused.
        :param acquire_datatokens: obtain missing datatokens (``dispenser``/``fixed_rate``/``any``).
        :param max_datatoken_price: price cap per datatoken bought.
        :param options: node-only options (``resources``, ``max_job_duration``, ``queue_max_wait_time``,
            ``free``).
        """
        from airflow_provider_ocean.ddo import find_service

        opts = node_options(options)
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
        previous = _previous_orders(transfer_tx_ids)
        # DID inputs: resolve services (the node needs orders to itself for paid jobs)
        orderables: list[tuple[str, str, str, int, str, str | None]] = []
        entries: list[dict[str, Any]] = []
        for position, (body, item) in enumerate(zip(requests_, inputs, strict=True)):
            if item is None:
                entries.append(_raw_entry(body))
                continue
            ddo = self.hook.get_ddo(item.did)
            service, index = find_service(
                ddo, item.service_id, role="dataset" if position == 0 else "additional dataset"
            )
            tx = item.transfer_tx_id or previous.get(("dataset", position, item.did))
            orderables.append(
                ("dataset", item.did, str(service["id"]), index, str(service["datatokenAddress"]), tx)
            )
            entries.append({"did": item.did, "service_id": str(service["id"])})
        algo_entry: dict[str, Any] | None = None
        if algo_did:
            ddo = self.hook.get_ddo(algo_did)
            service, index = find_service(ddo, algo_service_id, role="algorithm")
            tx = algo_tx or previous.get(("algorithm", 0, algo_did))
            orderables.append(
                ("algorithm", algo_did, str(service["id"]), index, str(service["datatokenAddress"]), tx)
            )
            algo_entry = {"did": algo_did, "service_id": str(service["id"])}
        node_part: dict[str, Any] = {"free": bool(free), "options": opts, "token": env.fee_token}
        payment: dict[str, Any] = {
            "backend": "ocean_node",
            "environment": env.id,
            "consumer_address": env.consumer_address,
            "chain_id": chain_id,
            "valid_until": None,
            "ocean_node": node_part,
        }
        if free:
            payment["datasets"] = [
                e if "action" in e else {**_did_entry(e), "action": "free"} for e in entries
            ]
            payment["algorithm"] = (
                {**_did_entry(algo_entry), "role": "algorithm", "action": "free"} if algo_entry else None
            )
            self.hook.log.info("Free Ocean Node job on environment %s: nothing to pay", env.id)
            return payment

        if self.hook.sender.chain_id != chain_id:
            raise OceanConfigError(
                f"The RPC node at {self.hook.settings.rpc_url} serves chain {self.hook.sender.chain_id}, "
                f"the connection says {chain_id}"
            )
        # the node's initializeCompute route refuses any dataset without a documentId (400 "Missing
        # dataset did"): raw URL datasets cost nothing to quote, so only the DID inputs are sent
        quote_datasets = []
        for item in inputs:
            if item is None:
                continue
            ref = next(o for o in orderables if o[0] == "dataset" and o[1] == item.did)
            quote_datasets.append(
                {"documentId": item.did, "serviceId": ref[2], **({"transferTxId": ref[5]} if ref[5] else {})}
            )
        quote_algorithm = dict(algo_body)
        if algo_did:
            ref = orderables[-1]
            quote_algorithm.update({"serviceId": ref[2], **({"transferTxId": ref[5]} if ref[5] else {})})
        quote = self.client.initialize_compute(
            datasets=quote_datasets,
            algorithm=quote_algorithm,
            environment=env.id,
            consumer_address=self.hook.consumer_address,
            chain_id=chain_id,
            token=env.fee_token,
            max_job_duration=opts.get("max_job_duration") or env.max_job_duration or None,
            resources=opts.get("resources"),
            queue_max_wait_time=opts.get("queue_max_wait_time"),
        )
        quoted = quote["payment"]
        amount = int(str(quoted.get("amount") or 0))
        token = str(quoted.get("token") or env.fee_token)
        self.hook.log.info(
            "Ocean Node quote on %s: %s base units of %s, lock for %s s, payee %s",
            env.id,
            amount,
            token,
            quoted.get("minLockSeconds"),
            quoted.get("payee"),
        )
        # Every check before the first transaction: escrow plan (fee cap, balances, gas), then orders.
        from airflow_provider_ocean.payment.escrow import EscrowPayer

        escrow = EscrowPayer(self.hook.rpc, str(quoted.get("escrowAddress") or ""), self.hook.sender)
        plan = escrow.plan(
            payer=self.hook.consumer_address,
            token=token,
            payee=str(quoted.get("payee") or env.consumer_address),
            amount=amount,
            min_lock_seconds=int(quoted.get("minLockSeconds") or 0),
            max_fee=max_fee,
        )
        if plan.needs_transactions:
            escrow.check_affordable(plan, self.hook.consumer_address)
        paid: list[PaidOrder] = []
        if orderables:
            from airflow_provider_ocean.payment.fees import make_requests
            from airflow_provider_ocean.payment.orders import OrderPayer

            quotes = list(quote.get("datasets") or [])[: sum(item is not None for item in inputs)]
            if algo_did:
                quotes.append(quote.get("algorithm") or {})
            payer = OrderPayer(
                self.hook.rpc,
                self.hook.sender,
                acquire=acquire_datatokens,
                max_datatoken_price=max_datatoken_price,
            )
            order_cap = None if max_fee is None else max(int(max_fee) - amount, 0)
            paid = payer.pay(
                make_requests(orderables, quotes), consumer=env.consumer_address, max_fee=order_cap
            )
        if plan.needs_transactions:
            escrow.execute(plan)
        node_part.update(
            {
                "token": token,
                "amount": str(amount),
                "min_lock_seconds": int(quoted.get("minLockSeconds") or 0),
                "escrow": plan.to_dict(),
            }
        )
        orders = iter(paid)
        payment["datasets"] = [e if "action" in e else next(orders).to_dict() for e in entries]
        payment["algorithm"] = next(orders).to_dict() if algo_did else None
        return payment

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

        :param datasets: as given to :meth:`pay_for_compute`.
        :param algorithm: as given to :meth:`pay_for_compute`.
        :param payment: the dict :meth:`pay_for_compute` returned.
        :param environment: environment id (taken from ``payment`` when given there).
        :param on_attempt: called with ``{"provider_url", "owner", "transfer_tx_ids", "started_at",
            "known_job_ids", "start_id"}`` just before the request is sent; ``start_id`` is the tag that
            :meth:`find_started_job` looks for.
        :param options: node-only options, when no ``payment`` is given.
        :raises OceanStartOutcomeUnknownError: the start may have created a job and the node could not be
            asked whether it did.
        """
        if payment is None or payment.get("backend") != "ocean_node":
            if payment is not None:
                raise OceanValidationError("This payment was made for a Provider v4, not for an Ocean Node")
            payment = self.pay_for_compute(datasets, algorithm, environment, **{**options, "free": True})
        node_part = payment.get("ocean_node") or {}
        opts = dict(node_part.get("options") or {})
        env_id = payment.get("environment") or environment
        bodies = []
        orders = list(payment.get("datasets") or [])
        for position, item in enumerate(datasets):
            body, parsed = node_dataset(item)
            if parsed is not None:
                order = orders[position] if position < len(orders) else {}
                tx = order.get("transfer_tx_id") or parsed.transfer_tx_id
                service_id = parsed.service_id or order.get("service_id")
                body = dataclasses.replace(parsed, service_id=service_id).to_request(
                    transfer_tx_id=tx or None
                )
            bodies.append(body)
        algo_body, algo_did, algo_service_id, algo_tx = node_algorithm(algorithm)
        if algo_did:
            order = payment.get("algorithm") or {}
            algo_body["serviceId"] = algo_service_id or order.get("service_id")
            tx = algo_tx or order.get("transfer_tx_id")
            if tx:
                algo_body["transferTxId"] = tx
        txs = [
            o.get("transfer_tx_id")
            for o in [*orders, payment.get("algorithm") or {}]
            if o.get("transfer_tx_id")
        ]
        max_job_duration = opts.get("max_job_duration")
        if not node_part.get("free") and not max_job_duration:
            max_job_duration = self.resolve_environment(env_id).max_job_duration or 3600
        attempt = {
            "provider_url": self.hook.settings.provider_url,
            "owner": self.hook.consumer_address,
            "transfer_tx_ids": txs,
            "started_at": time.time(),
            "known_job_ids": [],
            "start_id": uuid.uuid4().hex,
        }
        if on_attempt is not None:
            on_attempt(dict(attempt))
        common = {
            "environment": env_id,
            "algorithm": algo_body,
            "datasets": bodies,
            "resources": opts.get("resources"),
            "queue_max_wait_time": opts.get("queue_max_wait_time"),
            "max_job_duration": max_job_duration,
            "metadata": {START_TAG_KEY: attempt["start_id"]},
        }
        try:
            if node_part.get("free"):
                raw = self.client.start_free_compute(self.hook.signer, **common)
            else:
                raw = self.client.start_compute(
                    self.hook.signer,
                    payment={
                        "chainId": payment.get("chain_id") or self.chain_id,
                        "token": node_part.get("token"),
                    },
                    **common,
                )
        except (OceanProviderError, OceanConnectionError) as exc:
            from airflow_provider_ocean.hooks.ocean import _outcome_unknown

            if not _outcome_unknown(exc):
                raise
            return self._resolve_unknown_start(exc, attempt)
        from airflow_provider_ocean.node_models import job_status_from_node

        job = job_status_from_node(raw, job_id=raw["jobId"])
        self.hook.log.info(
            "Started Ocean Node job %s on %s (%s, status %s %s)",
            job.job_id,
            env_id,
            "free" if node_part.get("free") else f"lock {(raw.get('payment') or {}).get('lockTx')}",
            job.status,
            job.status_text,
        )
        return job

    def _resolve_unknown_start(self, exc: OceanError, attempt: dict[str, Any]) -> JobStatus:
        """Decide whether a start whose answer was lost created a job: look for its tag, never start again.

        :param exc: the error of the start request.
        :param attempt: the attempt record (``start_id``, ``started_at``).
        :return: the job the attempt created.
        :raises OceanStartOutcomeUnknownError: the node could not be asked.
        :raises OceanError: ``exc`` again, when the node answered and holds no job with the tag.
        """
        start_id = attempt["start_id"]
        self.hook.log.warning(
            "The outcome of the start is unknown (%s); looking for a job tagged %s", exc, start_id
        )
        tries = START_LOOKUP_ATTEMPTS[0 if isinstance(exc, OceanConnectionError) else 1]
        lookup_error: OceanError | None = None
        for number in range(1, tries + 1):
            try:
                job = self.find_started_job(start_id)
                lookup_error = None
            except OceanError as error:
                job, lookup_error = None, error
            if job is not None:
                self.hook.log.warning("The start did create job %s despite the error; using it", job.job_id)
                return job
            if number < tries:
                time.sleep(START_LOOKUP_DELAY)
        if lookup_error is not None:
            raise OceanStartOutcomeUnknownError(
                f"The start of an Ocean Node job may have succeeded ({exc}), and listing the jobs of "
                f"{self.hook.consumer_address} failed ({lookup_error}). Start tag: {start_id}.",
                transfer_tx_ids=list(attempt.get("transfer_tx_ids") or []),
                started_at=attempt["started_at"],
                hint=f"look for a job whose metadata {START_TAG_KEY} is {start_id} before starting again "
                "(OceanComputeHook.find_started_job); the start operator does it on its next try",
            ) from None
        self.hook.log.warning("No job was created by this start attempt: it failed (%s)", exc)
        raise exc

    def find_started_job(self, start_id: str | None) -> JobStatus | None:
        """The owner's job whose ``metadata`` carries the start tag ``start_id`` (the oldest, if several).

        :param start_id: the ``start_id`` of the attempt record (``None``: nothing to look for).
        :raises OceanError: the node could not be asked (never guessed as "no job").
        """
        if not start_id:
            return None
        from airflow_provider_ocean.node_models import job_status_from_node

        matches = [
            entry
            for entry in self.client.get_status(consumer_address=self.hook.consumer_address)
            if isinstance(entry.get("metadata"), dict) and entry["metadata"].get(START_TAG_KEY) == start_id
        ]
        if len(matches) > 1:
            self.hook.log.warning(
                "Several jobs carry the start tag %s: %s; using the oldest",
                start_id,
                ", ".join(str(m["jobId"]) for m in matches),
            )
        matches.sort(key=lambda m: _epoch(m.get("dateCreated")))
        return job_status_from_node(matches[0], job_id=matches[0]["jobId"]) if matches else None

    # -- jobs --------------------------------------------------------------------------------------------
    def list_jobs(self) -> list[JobStatus]:
        return self.client.list_jobs(self.hook.consumer_address)

    def get_job_status(self, job_id: str) -> JobStatus:
        job = self.client.job_status(self.hook.consumer_address, job_id, previous=self._previous.get(job_id))
        self._previous[job_id] = job
        return job

    def stop_job(self, job_id: str) -> JobStatus | None:
        from airflow_provider_ocean.node_models import job_status_from_node, split_job_id

        entries = self.client.stop_job(self.hook.signer, job_id)
        self.hook.log.info("Requested stop of Ocean Node job %s", job_id)
        bare = split_job_id(job_id)[1]
        for entry in entries:
            if split_job_id(entry["jobId"])[1] == bare:
                return job_status_from_node(entry, job_id=job_id)
        return None

    def delete_job(self, job_id: str) -> None:
        self.hook.log.warning(
            "Ocean Node does not implement job deletion (DELETE answers 404); %s kept", job_id
        )

    def download_result(
        self, job_id: str, index: int, destination: str | os.PathLike[str] | IO[bytes]
    ) -> DownloadedResult:
        results = self._results(job_id)
        name = next((r.filename for r in results if r.index == int(index)), None)
        return self.client.download_result(self.hook.signer, job_id, index, destination, filename=name)

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
        return client.stream_logs(self.hook.signer, job_id, timeout=timeout)


def _epoch(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _did_entry(entry: dict[str, Any] | None) -> dict[str, Any]:
    entry = entry or {}
    return {
        "role": "dataset",
        "did": entry.get("did"),
        "service_id": entry.get("service_id"),
        "transfer_tx_id": "",
        "datatoken": None,
        "provider_fee_amount": "0",
        "provider_fee_token": None,
    }


def _raw_entry(body: dict[str, Any]) -> dict[str, Any]:
    """The payment entry of a raw (URL) dataset: nothing to order; ``did`` holds the URL for display."""
    return {
        "role": "dataset",
        "did": str((body.get("fileObject") or {}).get("url") or ""),
        "service_id": "",
        "transfer_tx_id": "",
        "action": "raw",
        "datatoken": None,
        "provider_fee_amount": "0",
        "provider_fee_token": None,
    }


def _previous_orders(previous: Any) -> dict[tuple[str, int, str], str]:
    """``(role, position, did) → tx`` of an earlier payment's orders."""
    out: dict[tuple[str, int, str], str] = {}
    if not isinstance(previous, dict):
        return out
    for position, order in enumerate(previous.get("datasets") or []):
        if isinstance(order, dict) and order.get("transfer_tx_id") and order.get("did"):
            out[("dataset", position, str(order["did"]))] = str(order["transfer_tx_id"])
    algorithm = previous.get("algorithm")
    if isinstance(algorithm, dict) and algorithm.get("transfer_tx_id") and algorithm.get("did"):
        out[("algorithm", 0, str(algorithm["did"]))] = str(algorithm["transfer_tx_id"])
    return out
