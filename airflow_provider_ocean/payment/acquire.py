"""Obtaining the datatokens a payment lacks: from a dispenser (free) or a fixed-rate exchange (bought).

:class:`DatatokenAcquirer` is what :class:`~airflow_provider_ocean.payment.orders.OrderPayer` calls when
the wallet holds fewer datatokens than its new orders need (one per ``startOrder``). It plans from
on-chain reads only (the payer's read snapshot), explains every source it could not use, and later sends
the dispense, or the base-token approval and the ``buyDT``, through the payer (which translates chain
errors and uses the payment's fee fields).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_utils import to_checksum_address

from airflow_provider_ocean.chain import abi
from airflow_provider_ocean.exceptions import OceanInsufficientFundsError, OceanValidationError
from airflow_provider_ocean.payment.fees import ZERO_ADDRESS

if TYPE_CHECKING:
    from collections.abc import Callable

    #: ``(contract, function signature, arguments, output types) -> decoded outputs`` (an ``eth_call``).
    Read = Callable[[str, str, tuple[Any, ...], list[str]], tuple[Any, ...]]
    #: ``(to, data, what, fee fields) -> receipt``: send one transaction and wait for its receipt.
    Transact = Callable[[str, bytes, str, "dict[str, int] | None"], dict[str, Any]]

log = logging.getLogger(__name__)

ONE_DATATOKEN = 10**18
ACQUIRE_MODES = ("dispenser", "fixed_rate", "any")
_EXCHANGE_TYPES = [
    "address",
    "address",
    "uint256",
    "address",
    "uint256",
    "uint256",
    "bool",
    "uint256",
    "uint256",
    "uint256",
    "uint256",
    "bool",
]
_DISPENSER_STATUS_TYPES = ["bool", "address", "bool", "uint256", "uint256", "uint256", "address"]


@dataclass
class Acquisition:
    """One planned dispense or purchase of datatokens.

    :param kind: ``dispense`` or ``buy``.
    :param datatoken: the datatoken.
    :param amount: base units to obtain.
    :param contract: the dispenser or the fixed-rate exchange contract.
    :param exchange_id: the exchange id (``buy``).
    :param base_token: the token the exchange is paid in (``buy``).
    :param base_cost: base units of ``base_token`` the purchase costs (``buy``).
    :param needs_approval: the exchange must first be allowed to pull ``base_cost`` (``buy``).
    """

    kind: str  # "dispense" | "buy"
    datatoken: str
    amount: int
    contract: str
    exchange_id: bytes = b""
    base_token: str | None = None
    base_cost: int = 0
    needs_approval: bool = False


def check_mode(mode: str | None) -> None:
    """Refuse an unknown acquisition mode.

    :param mode: ``None``, ``"dispenser"``, ``"fixed_rate"`` or ``"any"``.
    :raises OceanValidationError: any other value.
    """
    if mode not in (None, *ACQUIRE_MODES):
        raise OceanValidationError(f"acquire must be one of {ACQUIRE_MODES} or None, got {mode!r}")


class DatatokenAcquirer:
    """Plans and obtains missing datatokens for one wallet.

    :param payer: the wallet that receives the datatokens.
    :param mode: ``None`` (off), ``"dispenser"``, ``"fixed_rate"`` or ``"any"`` (dispenser first).
    :param max_price: highest base-token amount (base units) per datatoken bought; required to buy.
    :param read: the payer's ``eth_call`` from its read snapshot:
        ``(contract, function signature, arguments, output types) -> decoded outputs``.
    :param transact: the payer's send-and-wait, chain errors translated:
        ``(to, data, what, fee fields) -> receipt``.
    """

    def __init__(
        self,
        payer: str,
        mode: str | None,
        max_price: int | None,
        *,
        read: Read,
        transact: Transact,
    ) -> None:
        check_mode(mode)
        self.payer = payer
        self.mode = mode
        self.max_price = max_price
        self.read = read
        self.transact = transact

    def __repr__(self) -> str:
        return f"DatatokenAcquirer(payer={self.payer!r}, mode={self.mode!r})"

    # -- planning ------------------------------------------------------------------------------------
    def plan(self, datatoken: str, shortfall: int, held: int) -> Acquisition:
        """Find a source for ``shortfall`` base units of ``datatoken``; nothing is sent.

        :param datatoken: the datatoken (checksummed).
        :param shortfall: base units missing.
        :param held: base units the wallet holds.
        :raises OceanInsufficientFundsError: no usable source (every reason is in the message).
        """
        reasons: list[str] = []
        if self.mode in ("dispenser", "any"):
            found = self._plan_dispense(datatoken, shortfall, held, reasons)
            if found is not None:
                return found
        if self.mode in ("fixed_rate", "any"):
            found = self._plan_buy(datatoken, shortfall, reasons)
            if found is not None:
                return found
        if self.mode is None:
            reasons.append("datatoken acquisition is off (acquire=None)")
        raise OceanInsufficientFundsError(
            f"{self.payer} holds {held} base units of datatoken {datatoken} but needs {held + shortfall} "
            f"(1 datatoken per new order); nothing was sent. " + "; ".join(reasons),
            hint=(
                "get datatokens first, or enable acquire='dispenser'/'fixed_rate' (with max_datatoken_price)"
            ),
        )

    def _plan_dispense(
        self, datatoken: str, shortfall: int, held: int, reasons: list[str]
    ) -> Acquisition | None:
        dispensers = self.read(datatoken, abi.DT_GET_DISPENSERS, (), ["address[]"])[0]
        if not dispensers:
            reasons.append("the datatoken has no dispenser")
        for dispenser in dispensers:
            dispenser = to_checksum_address(dispenser)
            active, _owner, is_minter, max_tokens, max_balance, balance, allowed = self.read(
                dispenser, abi.DISPENSER_STATUS, (datatoken,), _DISPENSER_STATUS_TYPES
            )
            if not active:
                reasons.append(f"dispenser {dispenser} is inactive")
            elif allowed.lower() != ZERO_ADDRESS and allowed.lower() != self.payer.lower():
                reasons.append(f"dispenser {dispenser} only serves {allowed}")
            elif shortfall > max_tokens:
                reasons.append(f"dispenser {dispenser} gives at most {max_tokens} per call")
            elif held >= max_balance:
                reasons.append(f"dispenser {dispenser} refuses holders of {max_balance} or more")
            elif not is_minter and balance < shortfall:
                reasons.append(f"dispenser {dispenser} holds only {balance}")
            else:
                return Acquisition("dispense", datatoken, shortfall, dispenser)
        return None

    def _plan_buy(self, datatoken: str, shortfall: int, reasons: list[str]) -> Acquisition | None:
        rates = self.read(datatoken, abi.DT_GET_FIXED_RATES, (), ["(address,bytes32)[]"])[0]
        if not rates:
            reasons.append("the datatoken has no fixed-rate exchange")
        for contract, exchange_id in rates:
            contract = to_checksum_address(contract)
            exchange = self.read(contract, abi.FRE_GET_EXCHANGE, (exchange_id,), _EXCHANGE_TYPES)
            if not exchange[6]:
                reasons.append(f"exchange {exchange_id.hex()} is inactive")
                continue
            base_token = to_checksum_address(exchange[3])
            cost = int(
                self.read(contract, abi.FRE_CALC_BASE_IN, (exchange_id, shortfall, 0), ["uint256"] * 4)[0]
            )
            if self.max_price is None:
                reasons.append(
                    f"exchange {exchange_id.hex()} asks {cost} of {base_token}; no max_datatoken_price set"
                )
                continue
            limit = int(self.max_price) * shortfall // ONE_DATATOKEN
            if cost > limit:
                reasons.append(
                    f"exchange {exchange_id.hex()} asks {cost} of {base_token}, above the limit {limit} "
                    "(max_datatoken_price)"
                )
                continue
            return Acquisition(
                "buy",
                datatoken,
                shortfall,
                contract,
                exchange_id=exchange_id,
                base_token=base_token,
                base_cost=cost,
            )
        return None

    # -- execution -----------------------------------------------------------------------------------
    def execute(self, acquisition: Acquisition, fees: dict[str, int] | None = None) -> None:
        """Dispense, or approve (when needed) and buy; each transaction waited for before the next.

        :param acquisition: a planned acquisition (``needs_approval`` decided by the payer's plan).
        :param fees: the payment's fee fields.
        """
        if acquisition.kind == "dispense":
            data = abi.encode_call(
                abi.DISPENSER_DISPENSE, acquisition.datatoken, acquisition.amount, self.payer
            )
            self.transact(acquisition.contract, data, f"dispense {acquisition.datatoken}", fees)
            log.info("Dispensed %s of datatoken %s", acquisition.amount, acquisition.datatoken)
            return
        assert acquisition.base_token is not None
        if acquisition.needs_approval:
            approve = abi.encode_call(abi.ERC20_APPROVE, acquisition.contract, acquisition.base_cost)
            self.transact(acquisition.base_token, approve, f"approve {acquisition.base_token} to FRE", fees)
        buy = abi.encode_call(
            abi.FRE_BUY_DT,
            acquisition.exchange_id,
            acquisition.amount,
            acquisition.base_cost,
            ZERO_ADDRESS,
            0,
        )
        self.transact(acquisition.contract, buy, f"buyDT {acquisition.datatoken}", fees)
        log.info(
            "Bought %s of datatoken %s for %s of %s",
            acquisition.amount,
            acquisition.datatoken,
            acquisition.base_cost,
            acquisition.base_token,
        )


__all__ = ["ACQUIRE_MODES", "ONE_DATATOKEN", "Acquisition", "DatatokenAcquirer", "check_mode"]
