"""Gas for a datatoken payment: the dry run of every order before anything is sent, the gas limits,
the fee fields and the native-balance check (docs/paying.md#gas-and-the-dry-run).

An order is dry-run with ``eth_call`` of the very transaction it will send — same sender, contract, data
and **gas limit** — against the latest block. A revert (a tampered or expired provider fee, a missing
datatoken, a paused token...) comes back as the node's error with its reason, exactly as an
``eth_estimateGas`` would report it, and running out of gas within the limit is a revert too: an order
that passes its dry run does not revert for lack of gas in the state it was checked against. Nothing is
sent after a failed dry run.

Why not ``eth_estimateGas``: it runs the transaction a dozen times (a binary search over the gas limit);
on ganache that is about 0.45 s of its single thread per order against about 0.05 s for one
``eth_call``, and on a real node it is the slowest read of the payment too. The limit is instead a
fixed ceiling per kind of transaction (:data:`GAS_LIMIT`), several times what an order uses (a
``startOrder`` or ``reuseOrder`` uses 80 000 to 140 000 gas on the Ocean v4 contracts, measured on the
sandbox). A node charges only the gas used, never the unused part of the limit; the balance check below
budgets the whole limit at the price the transactions are sent with, the bound a node itself applies
before it accepts a transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eth_utils import to_checksum_address

from airflow_provider_ocean.chain import abi
from airflow_provider_ocean.chain.errors import RpcError
from airflow_provider_ocean.chain.rpc import from_hex, rpc_tx
from airflow_provider_ocean.chain.tx import compose_fee_fields
from airflow_provider_ocean.exceptions import (
    OceanConnectionError,
    OceanInsufficientFundsError,
    OceanPaymentError,
)
from airflow_provider_ocean.payment.errors import chain_errors

if TYPE_CHECKING:
    from airflow_provider_ocean.chain.rpc import JsonRpcClient
    from airflow_provider_ocean.payment.orders import PaymentPlan

#: Gas limit per kind of transaction: the limit an order is dry-run and sent with, and the budget of a
#: transaction that cannot be dry-run yet (it depends on an approval or a purchase that is not mined;
#: the sender estimates it once they are). Several times the gas these use on the Ocean v4 contracts.
GAS_LIMIT = {"approve": 100_000, "start": 600_000, "reuse": 300_000, "dispense": 250_000, "buy": 500_000}


def revert_error(result: RpcError, what: str) -> OceanPaymentError:
    """The error of an order whose dry run reverted (nothing was sent).

    :param result: the node's answer to the dry run.
    :param what: the order, for the message.
    """
    reason = None
    if isinstance(result.data, str):
        reason = abi.decode_revert_reason(result.data)
    elif isinstance(result.data, dict):
        raw = result.data.get("result") or result.data.get("data")
        reason = abi.decode_revert_reason(raw) if isinstance(raw, str) else None
    return OceanPaymentError(
        f"{what} would revert ({reason or result.rpc_message}); nothing was sent",
        hint="re-initialize to get a fresh provider fee; check balances and the order inputs",
    )


def budget_gas(rpc: JsonRpcClient, payer: str, plan: PaymentPlan) -> None:
    """Dry-run the orders that do not wait for an earlier transaction, read the fee fields and the gas
    balance (one JSON-RPC batch), set every order's gas limit and the plan's ``gas``, ``gas_price`` and
    ``fees``; raise if an order would revert or the wallet cannot pay for the gas.

    :param rpc: the chain's JSON-RPC client.
    :param payer: the wallet.
    :param plan: the plan, its approvals and acquisitions decided.
    :raises OceanPaymentError: an order would revert.
    :raises OceanInsufficientFundsError: the native balance does not cover the gas budget.
    """
    dependent: set[str] = {to_checksum_address(spender) for _t, spender, _a in plan.approvals}
    dependent |= {a.datatoken for a in plan.acquisitions}
    gas = GAS_LIMIT["approve"] * len(plan.approvals)
    for acquisition in plan.acquisitions:
        gas += GAS_LIMIT["dispense" if acquisition.kind == "dispense" else "buy"]
        if acquisition.needs_approval:
            gas += GAS_LIMIT["approve"]
    checked: list[tuple[Any, str]] = []
    calls: list[tuple[str, list[Any]]] = []
    for item in plan.orders:
        if item.action == "valid":
            continue
        datatoken = to_checksum_address(item.request.datatoken)
        limit = GAS_LIMIT[item.action]
        gas += limit
        if datatoken in dependent:
            item.gas = 0  # estimated by the sender once the approvals / purchases are mined
            continue
        item.gas = limit
        tx = {"from": payer, "to": datatoken, "data": item.data, "value": 0, "gas": limit}
        checked.append((item, f"{item.action}Order on {datatoken} ({item.request.did})"))
        calls.append(("eth_call", [rpc_tx(tx), "latest"]))
    calls += [
        ("eth_getBlockByNumber", ["latest", False]),
        ("eth_gasPrice", []),
        ("eth_getBalance", [payer, "latest"]),
        ("eth_maxPriorityFeePerGas", []),
    ]
    with chain_errors("dry-run the orders and read the gas price and balance"):
        results = rpc.request_batch(calls)
        block, gas_price, native = (_answer(r) for r in results[len(checked) : len(checked) + 3])
    tip = results[-1]
    for (_item, what), result in zip(checked, results, strict=False):
        if isinstance(result, RpcError):
            raise revert_error(result, what)
    if not isinstance(block, dict):
        raise OceanConnectionError(f"The RPC node at {rpc.url} returned no latest block")
    suggested_tip = None if isinstance(tip, RpcError) else from_hex(tip)
    fees = compose_fee_fields(block, from_hex(gas_price), suggested_tip)
    price = int(fees.get("maxFeePerGas") or fees.get("gasPrice") or 0)
    balance = from_hex(native)
    plan.gas, plan.gas_price, plan.fees = gas, price, fees
    if gas * price > balance:
        raise OceanInsufficientFundsError(
            f"{payer} holds {balance} wei but the transactions of this payment may cost up to "
            f"{gas * price} wei ({gas} gas at {price}); nothing was sent"
        )


def _answer(result: Any) -> Any:
    """A batch item's result; its :class:`RpcError` raised."""
    if isinstance(result, RpcError):
        raise result
    return result


__all__ = ["GAS_LIMIT", "budget_gas", "revert_error"]
