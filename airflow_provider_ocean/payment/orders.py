"""Paying for compute inputs on chain with datatoken orders (docs/paying.md).

For each input of a job, the ``initializeCompute`` answer says what to do:

- ``{"validOrder": tx}`` → nothing to send; keep sending the tx that was passed (pitfall P4);
- ``{"validOrder": tx, "providerFee": {...}}`` → ``reuseOrder(validOrder, providerFee)``;
- ``{"datatoken": dt, "providerFee": {...}}`` → ``startOrder(env.consumerAddress, serviceIndex,
  providerFee, zero consume-market fee)``.

Everything that can be checked is checked before the first transaction: the fee cap, datatoken, fee
token and gas balances, allowances, and a dry run (``eth_call`` with the gas limit it will be sent with,
payment/gas.py) of every order that does not depend on an earlier transaction. Then datatokens are
obtained (optional), fee tokens approved, all orders sent without waiting in between, and every receipt
checked for its status and events.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eth_utils import to_checksum_address

from airflow_provider_ocean.chain import abi
from airflow_provider_ocean.exceptions import (
    OceanFeeCapError,
    OceanInsufficientFundsError,
    OceanPaymentError,
    OceanValidationError,
)
from airflow_provider_ocean.payment.acquire import ONE_DATATOKEN, Acquisition, DatatokenAcquirer, check_mode
from airflow_provider_ocean.payment.errors import chain_errors
from airflow_provider_ocean.payment.fees import ZERO_ADDRESS, OrderRequest, ProviderFee, _bytes32
from airflow_provider_ocean.payment.gas import budget_gas
from airflow_provider_ocean.payment.journal import sent_order_record
from airflow_provider_ocean.records import PaidOrder

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from airflow_provider_ocean.chain.rpc import JsonRpcClient
    from airflow_provider_ocean.chain.tx import SentTransaction, TransactionSender

log = logging.getLogger(__name__)


# -- orders ------------------------------------------------------------------------------------------
@dataclass
class _Planned:
    request: OrderRequest
    action: str  # "start" | "reuse" | "valid"
    fee: ProviderFee | None = None
    valid_order: str | None = None
    publish_fee: tuple[str, str, int] | None = None
    gas: int = 0
    data: bytes = b""


@dataclass
class PaymentPlan:
    """What :meth:`OrderPayer.pay` is going to do; built and checked before anything is sent.

    :param orders: the planned orders.
    :param fee_totals: token → base units the fees pull (provider + publish-market fees).
    :param approvals: ``(token, spender, amount)`` approvals to send.
    :param acquisitions: datatoken purchases / dispenses to do first.
    :param gas: total gas budgeted.
    :param gas_price: price per gas used for the budget.
    :param fees: the fee fields (``gasPrice`` or EIP-1559 fields) read for the budget; every transaction
        of the payment is sent with them, so the budget checked is the price paid.
    """

    orders: list[_Planned]
    fee_totals: dict[str, int] = field(default_factory=dict)
    approvals: list[tuple[str, str, int]] = field(default_factory=list)
    acquisitions: list[Acquisition] = field(default_factory=list)
    gas: int = 0
    gas_price: int = 0
    fees: dict[str, int] = field(default_factory=dict)


class OrderPayer:
    """Pays for compute inputs from one wallet.

    :param rpc: the chain's JSON-RPC client.
    :param sender: the wallet's transaction sender (nonces, fees, signing).
    :param acquire: obtain missing datatokens: ``None`` (off, default), ``"dispenser"``, ``"fixed_rate"``
        or ``"any"`` (dispenser first).
    :param max_datatoken_price: highest base-token amount (base units) to pay per datatoken bought from
        a fixed-rate exchange; required to buy.
    :param journal: called with a record (``sent_order_record``, payment/journal.py) of every order
        transaction right before it is broadcast (the operator keeps them in task state, so that a
        retry after a killed worker settles them instead of paying again).
    """

    def __init__(
        self,
        rpc: JsonRpcClient,
        sender: TransactionSender,
        *,
        acquire: str | None = None,
        max_datatoken_price: int | None = None,
        journal: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        check_mode(acquire)
        self.rpc = rpc
        self.sender = sender
        self.journal = journal
        self.payer = sender.address
        self.acquirer = DatatokenAcquirer(
            self.payer, acquire, max_datatoken_price, read=self._call, transact=self._transact
        )
        # eth_call answers read while planning (a snapshot: one read per (contract, call) per plan)
        self._reads: dict[tuple[str, bytes], Any] | None = None

    def __repr__(self) -> str:
        return f"OrderPayer(payer={self.payer!r})"

    # -- reads ---------------------------------------------------------------------------------------
    def _call(self, to: str, signature: str, args: tuple[Any, ...], out: list[str]) -> tuple[Any, ...]:
        to = to_checksum_address(to)
        data = abi.encode_call(signature, *args)
        with chain_errors(f"{signature.split('(')[0]} on {to}"):
            if self._reads is not None and (to, data) in self._reads:
                raw = self._reads[(to, data)]
                if isinstance(raw, Exception):
                    raise raw
            else:
                raw = self.rpc.call(to, data)
                if self._reads is not None:
                    self._reads[(to, data)] = raw
            return abi.decode_output(out, raw)

    def _prefetch(self, reads: Iterable[tuple[str, str, tuple[Any, ...]]]) -> None:
        """Read several ``eth_call`` s in one JSON-RPC batch into the plan's snapshot.

        :param reads: ``(contract, function signature, arguments)`` triples.
        """
        if self._reads is None:
            return
        wanted: list[tuple[str, bytes]] = []
        for to, signature, args in reads:
            key: tuple[str, bytes] = (to_checksum_address(to), abi.encode_call(signature, *args))
            if key not in self._reads and key not in wanted:
                wanted.append(key)
        if len(wanted) < 2:  # one read costs one round trip either way
            return
        with chain_errors(f"read {len(wanted)} balances, allowances and fees"):
            results = self.rpc.request_batch(
                [("eth_call", [{"to": to, "data": "0x" + data.hex()}, "latest"]) for to, data in wanted]
            )
        for key, result in zip(wanted, results, strict=True):
            self._reads[key] = result if isinstance(result, Exception) else _raw(result)

    def _prefetch_quoted(self, orders: list[OrderRequest]) -> None:
        """Batch what the quotes say will be read: datatoken balances and publishing fees of new orders,
        fee-token balances and allowances of payable provider fees."""
        reads: list[tuple[str, str, tuple[Any, ...]]] = []
        for order in orders:
            quote = order.quote if isinstance(order.quote, dict) else {}
            fee = quote.get("providerFee")
            try:
                datatoken = to_checksum_address(order.datatoken)
                if fee is not None and not quote.get("validOrder"):
                    reads.append((datatoken, abi.DT_GET_PUBLISHING_MARKET_FEE, ()))
                    reads.append((datatoken, abi.ERC20_BALANCE_OF, (self.payer,)))
                if isinstance(fee, dict) and int(str(fee.get("providerFeeAmount") or 0)) > 0:
                    token = to_checksum_address(fee["providerFeeToken"])
                    if token.lower() != ZERO_ADDRESS:
                        reads.append((token, abi.ERC20_BALANCE_OF, (self.payer,)))
                        reads.append((token, abi.ERC20_ALLOWANCE, (self.payer, datatoken)))
            except (KeyError, TypeError, ValueError):
                continue  # a malformed quote: _plan_order reports it
        self._prefetch(reads)

    def balance_of(self, token: str, owner: str) -> int:
        """ERC-20 ``balanceOf``.

        :param token: the token.
        :param owner: the holder.
        """
        return int(self._call(token, abi.ERC20_BALANCE_OF, (to_checksum_address(owner),), ["uint256"])[0])

    def allowance(self, token: str, owner: str, spender: str) -> int:
        """ERC-20 ``allowance``.

        :param token: the token.
        :param owner: the holder.
        :param spender: the spender.
        """
        args = (to_checksum_address(owner), to_checksum_address(spender))
        return int(self._call(token, abi.ERC20_ALLOWANCE, args, ["uint256"])[0])

    def publishing_market_fee(self, datatoken: str) -> tuple[str, str, int]:
        """``getPublishingMarketFee()`` of a datatoken → ``(address, token, amount)``.

        :param datatoken: the datatoken.
        """
        address, token, amount = self._call(
            datatoken, abi.DT_GET_PUBLISHING_MARKET_FEE, (), ["address", "address", "uint256"]
        )
        return to_checksum_address(address), to_checksum_address(token), int(amount)

    # -- planning ------------------------------------------------------------------------------------
    def _plan_order(self, request: OrderRequest, consumer: str, environment: str | None) -> _Planned:
        quote = request.quote if isinstance(request.quote, dict) else {}
        valid = quote.get("validOrder")
        has_fee = quote.get("providerFee") is not None
        if quote.get("datatoken") and str(quote["datatoken"]).lower() != request.datatoken.lower():
            raise OceanValidationError(
                f"initializeCompute quoted datatoken {quote['datatoken']} for {request.did}, the DDO says "
                f"{request.datatoken}"
            )
        if valid and not has_fee:
            # P4: after a reuseOrder the Provider reports the original order; keep sending our own tx.
            return _Planned(request, "valid", valid_order=request.transfer_tx_id or _hex_tx(valid))
        if not has_fee:
            raise OceanValidationError(
                f"initializeCompute returned neither validOrder nor providerFee for {request.did}: {quote!r}"[
                    :500
                ]
            )
        fee = ProviderFee.from_json(quote["providerFee"])
        data = fee.data()
        if data is not None:
            if data.get("dt") and str(data["dt"]).lower() != request.datatoken.lower():
                raise OceanValidationError(
                    f"The provider fee for {request.did} is for another datatoken ({data['dt']})"
                )
            if data.get("id") is not None and str(data["id"]) != str(request.service_id):
                raise OceanValidationError(
                    f"The provider fee for {request.did} is for service {data['id']}, "
                    f"not {request.service_id}"
                )
            if (
                environment
                and request.role == "dataset"
                and data.get("environment") not in (None, environment)
            ):
                raise OceanValidationError(
                    f"The provider fee for {request.did} is for environment "
                    f"{data['environment']}, not {environment}"
                )
        datatoken = to_checksum_address(request.datatoken)
        if valid:
            call = abi.encode_call(abi.DT_REUSE_ORDER, _bytes32(valid), fee.as_tuple())
            return _Planned(request, "reuse", fee=fee, valid_order=_hex_tx(valid), data=call)
        call = abi.encode_call(
            abi.DT_START_ORDER,
            to_checksum_address(consumer),
            int(request.service_index),
            fee.as_tuple(),
            (ZERO_ADDRESS, ZERO_ADDRESS, 0),
        )
        publish = self.publishing_market_fee(datatoken)
        return _Planned(request, "start", fee=fee, publish_fee=publish, data=call)

    def plan(
        self,
        orders: Iterable[OrderRequest],
        *,
        consumer: str,
        environment: str | None = None,
        max_fee: int | None = None,
    ) -> PaymentPlan:
        """Decide every transaction and check funds, fee cap and gas; sends nothing.

        :param orders: the inputs to pay for.
        :param consumer: the environment's ``consumerAddress`` (the orders' ``consumer``).
        :param environment: the environment id (checked against the fees' ``providerData``).
        :param max_fee: highest total fee, in base units of the fee token, this payment may pull.
        """
        orders = list(orders)
        self._reads = {}
        try:
            return self._plan(orders, consumer=consumer, environment=environment, max_fee=max_fee)
        finally:
            self._reads = None

    def _plan(
        self, orders: list[OrderRequest], *, consumer: str, environment: str | None, max_fee: int | None
    ) -> PaymentPlan:
        self._prefetch_quoted(orders)
        planned = [self._plan_order(o, consumer, environment) for o in orders]
        plan = PaymentPlan(orders=planned)
        allowance_needs: dict[tuple[str, str], int] = {}
        for item in planned:
            datatoken = to_checksum_address(item.request.datatoken)
            if item.fee is not None and item.fee.is_payable:
                key = (item.fee.token, datatoken)
                allowance_needs[key] = allowance_needs.get(key, 0) + item.fee.amount
                plan.fee_totals[item.fee.token] = plan.fee_totals.get(item.fee.token, 0) + item.fee.amount
            if item.publish_fee is not None:
                address, token, amount = item.publish_fee
                if amount > 0 and token.lower() != ZERO_ADDRESS and address.lower() != ZERO_ADDRESS:
                    key = (token, datatoken)
                    allowance_needs[key] = allowance_needs.get(key, 0) + amount
                    plan.fee_totals[token] = plan.fee_totals.get(token, 0) + amount
        if max_fee is not None:
            for token, total in plan.fee_totals.items():
                if total > int(max_fee):
                    raise OceanFeeCapError(
                        f"The fees for this job total {total} base units of token {token}, above max_fee "
                        f"{int(max_fee)}; nothing was sent",
                        hint="raise max_fee, shorten valid_until or use a cheaper (free) environment",
                    )

        # Publishing-market fees in tokens the quotes did not name: their balances and allowances.
        self._prefetch(
            [(token, abi.ERC20_BALANCE_OF, (self.payer,)) for token in plan.fee_totals]
            + [(token, abi.ERC20_ALLOWANCE, (self.payer, spender)) for token, spender in allowance_needs]
        )
        # Datatokens: one per new order.
        token_needs = dict(plan.fee_totals)
        dt_needs: dict[str, int] = {}
        for item in planned:
            if item.action == "start":
                needed: str = to_checksum_address(item.request.datatoken)
                dt_needs[needed] = dt_needs.get(needed, 0) + ONE_DATATOKEN
        for held_token, need in dt_needs.items():
            held = self.balance_of(held_token, self.payer)
            if held >= need:
                continue
            acquisition = self.acquirer.plan(held_token, need - held, held)
            plan.acquisitions.append(acquisition)
            if acquisition.base_token is not None:
                base = acquisition.base_token
                token_needs[base] = token_needs.get(base, 0) + acquisition.base_cost

        for token, need in token_needs.items():
            held = self.balance_of(token, self.payer)
            if held < need:
                raise OceanInsufficientFundsError(
                    f"{self.payer} holds {held} base units of token {token} but this payment needs {need}; "
                    "nothing was sent"
                )
        for (token, spender), amount in allowance_needs.items():
            if self.allowance(token, self.payer, spender) < amount:
                plan.approvals.append((token, spender, amount))
        for acquisition in plan.acquisitions:
            if acquisition.kind == "buy" and acquisition.base_token is not None:
                current = self.allowance(acquisition.base_token, self.payer, acquisition.contract)
                acquisition.needs_approval = current < acquisition.base_cost

        budget_gas(self.rpc, self.payer, plan)
        return plan

    # -- execution -----------------------------------------------------------------------------------
    def pay(
        self,
        orders: Iterable[OrderRequest],
        *,
        consumer: str,
        environment: str | None = None,
        max_fee: int | None = None,
    ) -> list[PaidOrder]:
        """Plan, check, then send: acquisitions, approvals, all orders (no waiting in between), receipts.

        :param orders: the inputs to pay for, in job order.
        :param consumer: the environment's ``consumerAddress``.
        :param environment: the environment id.
        :param max_fee: highest total fee in base units of the fee token.
        :return: one :class:`PaidOrder` per input, in the same order.
        """
        plan = self.plan(orders, consumer=consumer, environment=environment, max_fee=max_fee)
        return self.execute(plan)

    def execute(self, plan: PaymentPlan) -> list[PaidOrder]:
        """Send the transactions of a checked plan and verify their receipts.

        :param plan: the plan from :meth:`plan`.
        """
        fees = plan.fees or None
        for acquisition in plan.acquisitions:
            self.acquirer.execute(acquisition, fees)
        if plan.approvals:
            # (entering a batch may read the chain id: its chain errors are translated too)
            with chain_errors("approve the fee tokens"), self.sender.batch():
                approvals = [
                    self._send(
                        token,
                        abi.encode_call(abi.ERC20_APPROVE, to_checksum_address(spender), amount),
                        f"approve {amount} of {token} to {spender}",
                        fees=fees,
                    )
                    for token, spender, amount in plan.approvals
                ]
            for approval in approvals:
                self._wait(approval)

        sent_orders: list[tuple[_Planned, SentTransaction]] = []
        # One hold of the nonce lock for all orders: one pending-count read, consecutive nonces, and
        # the orders reach the node back to back (mined together).
        with chain_errors("send the orders"), self.sender.batch():
            for item in plan.orders:
                if item.action == "valid":
                    continue
                datatoken = to_checksum_address(item.request.datatoken)
                what = f"{item.action}Order on {datatoken} for {item.request.did}"
                sent = self._send(
                    datatoken,
                    item.data,
                    what,
                    gas=item.gas or None,
                    paid=sent_orders,
                    fees=fees,
                    on_signed=self._journal_entry(item),
                )
                sent_orders.append((item, sent))
        tx_ids: dict[int, str] = {}
        for item, sent in sent_orders:
            receipt = self._wait(sent, paid=sent_orders)
            self._check_events(item, receipt, sent.tx_hash)
            tx_ids[id(item)] = _hex_tx(receipt.get("transactionHash") or sent.tx_hash)
            log.info(
                "Paid %s %s (%s) with %s", item.request.role, item.request.did, item.action, tx_ids[id(item)]
            )

        out = []
        for item in plan.orders:
            tx = tx_ids.get(id(item)) or item.valid_order
            if not tx:  # pragma: no cover - every branch sets one
                raise OceanPaymentError(f"No transfer tx for {item.request.did}")
            if item.action == "valid":
                log.info("Order %s of %s is still valid; no transaction", tx, item.request.did)
            out.append(
                PaidOrder(
                    role=item.request.role,
                    did=item.request.did,
                    service_id=item.request.service_id,
                    transfer_tx_id=tx,
                    action=item.action,
                    datatoken=to_checksum_address(item.request.datatoken),
                    provider_fee_amount=item.fee.amount if item.fee else 0,
                    provider_fee_token=item.fee.token if item.fee else None,
                )
            )
        return out

    def _send(
        self,
        to: str,
        data: bytes,
        what: str,
        *,
        gas: int | None = None,
        paid: list[tuple[_Planned, SentTransaction]] | None = None,
        fees: dict[str, int] | None = None,
        on_signed: Callable[[SentTransaction], None] | None = None,
    ) -> SentTransaction:
        with chain_errors(what, paid=_sent(paid)):
            return self.sender.send(
                to_checksum_address(to), data, gas=gas, what=what, fees=fees, on_signed=on_signed
            )

    def _journal_entry(self, item: _Planned) -> Callable[[SentTransaction], None] | None:
        """The :attr:`journal` call for one order's signed transactions (``None`` without a journal)."""
        journal = self.journal
        if journal is None:
            return None
        request = item.request
        return lambda sent: journal(sent_order_record(sent, request.role, request.did, request.service_id))

    def _transact(self, to: str, data: bytes, what: str, fees: dict[str, int] | None) -> dict[str, Any]:
        """Send one transaction and wait for its receipt (the acquirer's transactions)."""
        return self._wait(self._send(to, data, what, fees=fees))

    def _wait(
        self, sent: SentTransaction, *, paid: list[tuple[_Planned, SentTransaction]] | None = None
    ) -> dict[str, Any]:
        with chain_errors(sent.what, paid=_sent(paid)):
            return self.sender.wait(sent)

    def _check_events(self, item: _Planned, receipt: dict[str, Any], tx_hash: str) -> None:
        datatoken = to_checksum_address(item.request.datatoken)
        fees = abi.decode_events(abi.PROVIDER_FEE, receipt, emitter=datatoken)
        if item.action == "start":
            started = abi.decode_events(abi.ORDER_STARTED, receipt, emitter=datatoken)
            if not started:
                raise OceanPaymentError(
                    f"startOrder {tx_hash} emitted no OrderStarted", tx_hash=tx_hash, spent=True
                )
            if int(started[-1]["serviceIndex"]) != int(item.request.service_index):
                raise OceanPaymentError(
                    f"startOrder {tx_hash} ordered service index {started[-1]['serviceIndex']}, "
                    f"expected {item.request.service_index}",
                    tx_hash=tx_hash,
                    spent=True,
                )
        else:
            reused = abi.decode_events(abi.ORDER_REUSED, receipt, emitter=datatoken)
            if not reused:
                raise OceanPaymentError(
                    f"reuseOrder {tx_hash} emitted no OrderReused", tx_hash=tx_hash, spent=True
                )
        if not fees:
            raise OceanPaymentError(
                f"{item.action}Order {tx_hash} emitted no ProviderFee", tx_hash=tx_hash, spent=True
            )


def _raw(result: Any) -> bytes:
    """The bytes of an ``eth_call`` result (``0x``-hex)."""
    return bytes.fromhex(result[2:]) if isinstance(result, str) and result not in ("", "0x") else b""


def _sent(paid: list[tuple[_Planned, SentTransaction]] | None) -> list[tuple[str, str]]:
    """``(did, tx hash)`` of the orders already sent, for the error messages."""
    return [(item.request.did, sent.tx_hash) for item, sent in paid or []]


def _hex_tx(value: Any) -> str:
    text = value.hex() if isinstance(value, bytes) else str(value)
    return text if text.startswith("0x") else "0x" + text


__all__ = [
    "OrderPayer",
    "PaymentPlan",
]
