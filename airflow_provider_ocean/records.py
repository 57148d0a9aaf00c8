"""Typed records of paying for and starting a job; JSON (``to_dict``/``from_dict``) only at the boundary
(XCom, task state, the ``on_attempt`` record).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow_provider_ocean.exceptions import OceanValidationError

if TYPE_CHECKING:
    from collections.abc import Iterable


class Orderable(NamedTuple):
    """One input that is paid for with a datatoken order.

    :param role: ``dataset`` or ``algorithm``.
    :param did: the asset DID.
    :param service_id: the ordered service id.
    :param service_index: the service's position in the DDO (``serviceIndex`` of the order).
    :param datatoken: the service's datatoken.
    :param transfer_tx_id: an order paid earlier to offer for reuse, if any.
    """

    role: str
    did: str
    service_id: str
    service_index: int
    datatoken: str
    transfer_tx_id: str | None = None


@dataclass
class StartAttempt:
    """What a start request carried, recorded before it is sent (exactly-once recovery).

    Provider v4 jobs are matched by their orders (``transfer_tx_ids``, the job's agreementId) among the
    jobs that did not exist before (``known_job_ids``); Ocean Node jobs by ``start_id``, the tag the start
    put into the job's metadata.

    :param provider_url: the Provider or node the start went to.
    :param owner: the consumer address.
    :param transfer_tx_ids: every order tx the start carried.
    :param started_at: when the attempt began (epoch seconds).
    :param known_job_ids: jobs with those orders that existed before the attempt (Provider v4).
    :param start_id: the start tag (Ocean Node), ``None`` on Provider v4.
    """

    provider_url: str
    owner: str
    transfer_tx_ids: list[str]
    started_at: float
    known_job_ids: list[str] = field(default_factory=list)
    start_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-safe record handed to ``on_attempt`` (``start_id`` only when set)."""
        data = asdict(self)
        if self.start_id is None:
            del data["start_id"]
        return data


@dataclass
class PaidOrder:
    """How one input of a job is paid for.

    :param role: ``dataset`` or ``algorithm``.
    :param did: the asset DID.
    :param service_id: the ordered service id.
    :param transfer_tx_id: the tx to send as ``transferTxId`` (0x-prefixed).
    :param action: ``start`` (new order), ``reuse`` (reuseOrder for a new fee) or ``valid`` (no tx).
    :param datatoken: the service's datatoken.
    :param provider_fee_amount: provider fee paid, in base units of ``provider_fee_token``.
    :param provider_fee_token: the provider fee token.
    """

    role: str
    did: str
    service_id: str
    transfer_tx_id: str
    action: str
    datatoken: str | None = None
    provider_fee_amount: int = 0
    provider_fee_token: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (the fee amount as a decimal string to survive JSON)."""
        data = asdict(self)
        data["provider_fee_amount"] = str(self.provider_fee_amount)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PaidOrder:
        """Inverse of :meth:`to_dict`.

        :param data: the dict.
        """
        values = dict(data)
        values["provider_fee_amount"] = int(values.get("provider_fee_amount") or 0)
        return cls(**values)


@dataclass
class NodeTerms:
    """What an Ocean Node job was agreed on (the ``ocean_node`` part of a :class:`Payment`).

    :param free: a ``freeCompute`` job (no payment at all).
    :param options: the node-only options given (``resources``, ``max_job_duration``, ...).
    :param token: the fee token.
    :param amount: the quoted escrow amount, base units as a decimal string (paid jobs).
    :param min_lock_seconds: the lock time the node asks for (paid jobs).
    :param escrow: the escrow plan that was carried out (paid jobs).
    """

    free: bool
    options: dict[str, Any] = field(default_factory=dict)
    token: str | None = None
    amount: str | None = None
    min_lock_seconds: int | None = None
    escrow: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (the paid-job keys only when set)."""
        data = asdict(self)
        for key in ("amount", "min_lock_seconds", "escrow"):
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeTerms:
        """Inverse of :meth:`to_dict`.

        :param data: the dict.
        """
        return cls(
            free=bool(data.get("free")),
            options=dict(data.get("options") or {}),
            token=data.get("token"),
            amount=None if data.get("amount") is None else str(data["amount"]),
            min_lock_seconds=data.get("min_lock_seconds"),
            escrow=data.get("escrow"),
        )


@dataclass
class Payment:
    """How every input of a job is paid (what ``pay_for_compute`` returns, as a dict).

    :param environment: the environment the orders are valid for.
    :param consumer_address: the environment's consumer address (the orders' consumer).
    :param chain_id: the chain the orders were paid on.
    :param valid_until: until when the provider fees cover the job (Provider v4), else ``None``.
    :param datasets: one entry per dataset, in order.
    :param algorithm: the algorithm's entry (a DID algorithm), else ``None``.
    :param node: Ocean Node terms (``None`` on Provider v4).
    """

    environment: str
    consumer_address: str
    chain_id: int
    valid_until: int | None
    datasets: list[PaidOrder]
    algorithm: PaidOrder | None = None
    node: NodeTerms | None = None

    @property
    def orders(self) -> list[PaidOrder]:
        """Every entry: the datasets, then the algorithm's."""
        return [*self.datasets, *([self.algorithm] if self.algorithm else [])]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-safe dict (Ocean Node adds ``backend`` and ``ocean_node``)."""
        data: dict[str, Any] = {
            "environment": self.environment,
            "consumer_address": self.consumer_address,
            "chain_id": self.chain_id,
            "valid_until": self.valid_until,
            "datasets": [order.to_dict() for order in self.datasets],
            "algorithm": self.algorithm.to_dict() if self.algorithm else None,
        }
        if self.node is not None:
            data["backend"] = "ocean_node"
            data["ocean_node"] = self.node.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Payment:
        """Inverse of :meth:`to_dict`.

        :param data: the dict.
        :raises OceanValidationError: not a payment.
        """
        if not isinstance(data, dict):
            raise OceanValidationError(f"A payment must be a dict, not {type(data).__name__}")
        node = data.get("ocean_node") if data.get("backend") == "ocean_node" else None
        algorithm = data.get("algorithm")
        return cls(
            environment=str(data.get("environment") or ""),
            consumer_address=str(data.get("consumer_address") or ""),
            chain_id=int(data.get("chain_id") or 0),
            valid_until=data.get("valid_until"),
            datasets=[PaidOrder.from_dict(order) for order in data.get("datasets") or []],
            algorithm=PaidOrder.from_dict(algorithm) if algorithm else None,
            node=NodeTerms.from_dict(node or {}) if data.get("backend") == "ocean_node" else None,
        )


def as_list(value: Any) -> list[Any]:
    """A DAG's one-or-many argument as a list (a single string or dict is one item; ``None`` none).

    :param value: ``None``, one item, or an iterable of items.
    """
    if value is None:
        return []
    if isinstance(value, str | dict):
        return [value]
    return list(value)


def unique(values: Iterable[str | None]) -> list[str]:
    out: list[str] = []
    for value in values:
        if value and value not in out:
            out.append(value)
    return out


def split_transfer_tx_ids(transfer_tx_ids: Any, count: int) -> tuple[list[str | None], str | None]:
    """Normalise the accepted forms of previously paid orders into (dataset txs, algorithm tx).

    Accepted: the dict returned by :meth:`OceanComputeHook.pay_for_compute`; ``{"datasets": [tx|None],
    "algorithm": tx|None}``; a list of dataset txs; ``None``.
    """
    if transfer_tx_ids is None:
        return [None] * count, None
    if isinstance(transfer_tx_ids, list | tuple):
        datasets_part: Any = list(transfer_tx_ids)
        algorithm_part: Any = None
    elif isinstance(transfer_tx_ids, dict):
        datasets_part = transfer_tx_ids.get("datasets") or []
        algorithm_part = transfer_tx_ids.get("algorithm")
    else:
        raise OceanValidationError("transfer_tx_ids must be a dict, a list or None")

    def one(value: Any) -> str | None:
        if value is None or value == "":
            return None
        if isinstance(value, dict):
            value = value.get("transfer_tx_id") or value.get("transferTxId")
            return str(value) if value else None
        return str(value)

    txs = [one(v) for v in datasets_part]
    if len(txs) > count:
        raise OceanValidationError(f"{len(txs)} dataset transfer tx ids given for {count} datasets")
    txs += [None] * (count - len(txs))
    return txs, one(algorithm_part)
