"""Payer-side calls of Ocean's ``Escrow`` contract: the prepayment Ocean Node charges paid compute from.

Flow of a paid Ocean Node job (README.md, "Ocean Node"): the quote (``initializeCompute``) says how much
the job may cost (``amount``, base units of ``token``) and how long the node will hold the lock
(``minLockSeconds``). Before the start, the payer must have

- ``available >= amount`` in its escrow balance (top up with ``approve`` + ``deposit`` only when short),
- exactly one authorization of the node (payee) for the token with ``currentLockedAmount + amount <=
  maxLockedAmount``, ``maxLockSeconds >= minLockSeconds`` and ``currentLocks + 1 <= maxLockCounts``
  (``authorize`` updates the single entry in place; larger existing limits are kept).

:class:`EscrowPayer` plans all of that from on-chain reads, refuses before sending anything when the
amount exceeds the user's ``max_fee`` or the wallet lacks tokens or gas, then sends only what is missing and
checks every receipt and event. It works with both Escrow interfaces in use (npm @oceanprotocol/contracts 2.x,
PyPI ocean-contracts 3.1.0): see :mod:`airflow_provider_ocean.chain.escrow_abi`.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from eth_utils import to_checksum_address

from airflow_provider_ocean.chain import abi
from airflow_provider_ocean.chain.escrow_abi import (
    AUTH_EVENT,
    AUTH_EVENT_3X,
    AUTH_TYPE,
    DEPOSIT_EVENT,
    ESCROW_AUTHORIZE,
    ESCROW_DEPOSIT,
    ESCROW_GET_AUTHORIZATIONS,
    ESCROW_GET_LOCKS,
    ESCROW_GET_USER_FUNDS,
    ESCROW_WITHDRAW,
    FUNDS_TYPE,
    decode_locks,
)
from airflow_provider_ocean.chain.tx import call_function
from airflow_provider_ocean.exceptions import (
    OceanFeeCapError,
    OceanInsufficientFundsError,
    OceanPaymentError,
    OceanValidationError,
)
from airflow_provider_ocean.locks import lock_name
from airflow_provider_ocean.payment.errors import chain_errors

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_ocean.chain.rpc import JsonRpcClient
    from airflow_provider_ocean.chain.tx import TransactionSender
    from airflow_provider_ocean.locks import WalletLocks

log = logging.getLogger(__name__)

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"

#: Gas budgeted per transaction for the native-balance check when an estimate is not possible yet.
GAS_FALLBACK = {"approve": 100_000, "deposit": 150_000, "authorize": 150_000}


@dataclass(frozen=True)
class EscrowFunds:
    """A payer's escrow balance in one token (base units).

    :param available: free to lock or withdraw.
    :param locked: held by active locks.
    """

    available: int
    locked: int


@dataclass(frozen=True)
class EscrowAuthorization:
    """One payee authorization of a payer for a token.

    :param payee: the authorized payee (the node).
    :param max_locked_amount: sum of active locks the payee may hold.
    :param current_locked_amount: sum of the payee's active locks.
    :param max_lock_seconds: longest lock the payee may create.
    :param max_lock_counts: number of active locks the payee may hold.
    :param current_locks: the payee's active locks.
    """

    payee: str
    max_locked_amount: int
    current_locked_amount: int
    max_lock_seconds: int
    max_lock_counts: int
    current_locks: int

    def fits(self, amount: int, min_lock_seconds: int) -> bool:
        """Whether a new lock of ``amount`` for ``min_lock_seconds`` passes the node's checks.

        :param amount: the lock amount (base units).
        :param min_lock_seconds: the lock duration the node will ask for.
        """
        return (
            self.current_locked_amount + amount <= self.max_locked_amount
            and self.max_lock_seconds >= min_lock_seconds
            and self.current_locks + 1 <= self.max_lock_counts
        )


@dataclass(frozen=True)
class EscrowLock:
    """An active lock (either Escrow interface: :mod:`airflow_provider_ocean.chain.escrow_abi`).

    :param job_id: the lock's job id (uint256 of the node's sha256 of its job id).
    :param payer: the payer.
    :param amount: locked amount.
    :param expiry: unix time the lock expires.
    :param token: the token.
    :param start_time: unix time the lock was created (``None``: the @oceanprotocol/contracts 2.x Escrow
        does not record it).
    """

    job_id: int
    payer: str
    amount: int
    expiry: int
    token: str
    start_time: int | None


@dataclass
class EscrowPlan:
    """What must be sent so that the node can lock ``amount`` for a job.

    :param escrow: the Escrow contract.
    :param token: the fee token.
    :param payee: the node's address.
    :param amount: the quoted job cost (base units).
    :param min_lock_seconds: the quote's ``minLockSeconds``.
    :param funds: the payer's escrow balance before.
    :param authorization: the existing authorization, if any.
    :param deposit: amount to deposit (0 = none).
    :param approve: allowance to grant the Escrow before depositing (0 = none).
    :param authorize: new ``(maxLockedAmount, maxLockSeconds, maxLockCounts)``, or ``None`` when the
        existing authorization already fits.
    """

    escrow: str
    token: str
    payee: str
    amount: int
    min_lock_seconds: int
    funds: EscrowFunds
    authorization: EscrowAuthorization | None
    deposit: int = 0
    approve: int = 0
    authorize: tuple[int, int, int] | None = None
    transactions: dict[str, str] = field(default_factory=dict)

    @property
    def needs_transactions(self) -> bool:
        """Whether anything must be sent."""
        return bool(self.deposit or self.approve or self.authorize)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary (amounts as decimal strings)."""
        data = asdict(self)
        for key in ("amount", "deposit", "approve"):
            data[key] = str(data[key])
        data["funds"] = {k: str(v) for k, v in data["funds"].items()}
        if data["authorization"]:
            data["authorization"] = {
                k: (str(v) if isinstance(v, int) else v) for k, v in data["authorization"].items()
            }
        if data["authorize"]:
            data["authorize"] = [str(v) for v in data["authorize"]]
        return data


class EscrowPayer:
    """Reads and prepares a payer's Escrow state for Ocean Node paid jobs.

    :param rpc: the chain's JSON-RPC client.
    :param escrow: the Escrow contract address (from the quote's ``payment.escrowAddress``).
    :param sender: the payer's transaction sender (needed to send; reads work without it).
    """

    def __init__(self, rpc: JsonRpcClient, escrow: str, sender: TransactionSender | None = None) -> None:
        if not escrow or to_checksum_address(escrow) == ZERO_ADDRESS:
            raise OceanValidationError("The Escrow contract address is missing (the node quoted none)")
        self.rpc = rpc
        self.escrow = to_checksum_address(escrow)
        self.sender = sender

    def __repr__(self) -> str:
        return f"EscrowPayer(escrow={self.escrow!r})"

    # -- reads ---------------------------------------------------------------------------------------
    def _call(self, to: str, signature: str, args: tuple[Any, ...], out: list[str]) -> tuple[Any, ...]:
        with chain_errors(f"eth_call {signature}", plain=True):
            return call_function(self.rpc, to, signature, args, out)

    def funds(self, payer: str, token: str) -> EscrowFunds:
        """``getUserFunds(payer, token)`` → available and locked (base units).

        :param payer: the payer.
        :param token: the token.
        """
        ((available, locked),) = self._call(self.escrow, ESCROW_GET_USER_FUNDS, (payer, token), [FUNDS_TYPE])
        return EscrowFunds(int(available), int(locked))

    def authorizations(self, payer: str, token: str, payee: str) -> list[EscrowAuthorization]:
        """``getAuthorizations(token, payer, payee)`` → the payer's authorizations of ``payee``.

        :param payer: the payer.
        :param token: the token.
        :param payee: the payee (zero address = any payee).
        """
        (entries,) = self._call(self.escrow, ESCROW_GET_AUTHORIZATIONS, (token, payer, payee), [AUTH_TYPE])
        return [
            EscrowAuthorization(
                to_checksum_address(e[0]), int(e[1]), int(e[2]), int(e[3]), int(e[4]), int(e[5])
            )
            for e in entries
        ]

    def locks(self, payee: str, *, payer: str = ZERO_ADDRESS, token: str = ZERO_ADDRESS) -> list[EscrowLock]:
        """``getLocks(token, payer, payee)``: the payee's active locks (the contract's filter is loose:
        filter the result yourself).

        :param payee: the payee (required by the contract).
        :param payer: the payer filter.
        :param token: the token filter.
        """
        with chain_errors(f"eth_call {ESCROW_GET_LOCKS}", plain=True):
            data = self.rpc.call(self.escrow, abi.encode_call(ESCROW_GET_LOCKS, token, payer, payee))
        try:
            entries = decode_locks(data)
        except ValueError as exc:
            raise OceanPaymentError(f"{self.escrow} is no Escrow this client knows: {exc}") from exc
        return [
            EscrowLock(
                int(e[0]),
                to_checksum_address(e[1]),
                int(e[2]),
                int(e[3]),
                to_checksum_address(e[4]),
                None if e[5] is None else int(e[5]),
            )
            for e in entries
        ]

    def balance_of(self, token: str, owner: str) -> int:
        """ERC20 balance.

        :param token: the token.
        :param owner: the holder.
        """
        (value,) = self._call(token, abi.ERC20_BALANCE_OF, (owner,), ["uint256"])
        return int(value)

    def allowance(self, token: str, owner: str) -> int:
        """ERC20 allowance of the Escrow contract.

        :param token: the token.
        :param owner: the holder.
        """
        (value,) = self._call(token, abi.ERC20_ALLOWANCE, (owner, self.escrow), ["uint256"])
        return int(value)

    # -- planning ------------------------------------------------------------------------------------
    def plan(
        self,
        *,
        payer: str,
        token: str,
        payee: str,
        amount: int,
        min_lock_seconds: int,
        max_fee: int | None = None,
        lock_seconds: int | None = None,
        lock_counts: int | None = None,
    ) -> EscrowPlan:
        """Work out the deposit and authorization a job needs; nothing is sent.

        :param payer: the payer (the wallet signing the start).
        :param token: the fee token.
        :param payee: the node's address (the environment's ``consumerAddress``).
        :param amount: the quoted cost in base units.
        :param min_lock_seconds: the quote's ``minLockSeconds``.
        :param max_fee: refuse when ``amount`` exceeds this (base units).
        :param lock_seconds: ``maxLockSeconds`` to authorize (default and minimum: ``min_lock_seconds``).
        :param lock_counts: ``maxLockCounts`` to authorize (default and minimum: current locks + 1).
        :raises OceanFeeCapError: the amount is above ``max_fee``.
        :raises OceanValidationError: more than one authorization exists for (payer, token, payee).
        """
        amount = int(amount)
        min_lock_seconds = int(min_lock_seconds)
        if amount < 0 or min_lock_seconds < 0:
            raise OceanValidationError(f"Invalid quote: amount {amount}, minLockSeconds {min_lock_seconds}")
        if max_fee is not None and amount > int(max_fee):
            raise OceanFeeCapError(
                f"The job costs {amount} base units of {token}, above max_fee {int(max_fee)}",
                hint="raise max_fee, request fewer resources or a shorter max_job_duration",
            )
        funds = self.funds(payer, token)
        auths = self.authorizations(payer, token, payee)
        if len(auths) > 1:
            raise OceanValidationError(
                f"{len(auths)} Escrow authorizations of {payee} exist for {payer}/{token}; "
                "the node accepts exactly one"
            )
        existing = auths[0] if auths else None
        plan = EscrowPlan(
            escrow=self.escrow,
            token=to_checksum_address(token),
            payee=to_checksum_address(payee),
            amount=amount,
            min_lock_seconds=min_lock_seconds,
            funds=funds,
            authorization=existing,
        )
        if funds.available < amount:
            plan.deposit = amount - funds.available
            if self.allowance(token, payer) < plan.deposit:
                plan.approve = plan.deposit
        wanted_seconds = max(min_lock_seconds, int(lock_seconds or 0))
        if existing is None:
            plan.authorize = (amount, wanted_seconds, max(1, int(lock_counts or 0)))
        else:
            limits = (
                max(existing.max_locked_amount, existing.current_locked_amount + amount),
                max(existing.max_lock_seconds, wanted_seconds),
                max(existing.max_lock_counts, existing.current_locks + 1, int(lock_counts or 0)),
            )
            current = (existing.max_locked_amount, existing.max_lock_seconds, existing.max_lock_counts)
            if limits != current:
                plan.authorize = limits
        return plan

    def check_affordable(self, plan: EscrowPlan, payer: str) -> None:
        """Refuse before sending when the wallet lacks the tokens to deposit or the gas to send.

        :param plan: the plan.
        :param payer: the payer.
        :raises OceanInsufficientFundsError: not enough tokens or native gas.
        """
        if plan.deposit:
            held = self.balance_of(plan.token, payer)
            if held < plan.deposit:
                raise OceanInsufficientFundsError(
                    f"Depositing {plan.deposit} base units of {plan.token} into the Escrow needs that much, "
                    f"the wallet {payer} holds {held}",
                    hint="fund the wallet with the fee token",
                )
        count = {"approve": 1 if plan.approve else 0, "deposit": 1 if plan.deposit else 0}
        count["authorize"] = 1 if plan.authorize else 0
        gas = sum(GAS_FALLBACK[name] * n for name, n in count.items())
        if not gas:
            return
        with chain_errors("read gas price and balance", plain=True):
            price = self.rpc.gas_price()
            latest = self.rpc.get_block("latest")
            base = latest.get("baseFeePerGas")
            if base is not None:
                price = max(price, 2 * int(base, 16) if isinstance(base, str) else 2 * int(base))
            balance = self.rpc.get_balance(payer)
        if balance < gas * price:
            raise OceanInsufficientFundsError(
                f"The wallet {payer} has {balance} wei of native gas, about {gas * price} is needed for "
                f"{', '.join(k for k, n in count.items() if n)}",
                hint="fund the wallet with the chain's native coin",
            )

    # -- sending -------------------------------------------------------------------------------------
    @contextmanager
    def turn(self, locks: WalletLocks, chain_id: int, payer: str, token: str) -> Iterator[None]:
        """Hold the payer's Escrow lock (across processes, and hosts with a cluster lock) while its funds
        and authorization are planned, topped up and locked by a start: the node refuses a start whose
        lock would exceed the authorized count or amount, so two starts of one wallet take turns.

        :param locks: the connection's wallet locks.
        :param chain_id: the chain.
        :param payer: the payer.
        :param token: the fee token.
        """
        name = lock_name("escrow", str(chain_id), self.escrow.lower(), payer.lower(), token.lower())
        with locks.hold(name):
            yield

    def secure(self, *, payer: str, token: str, payee: str, amount: int, min_lock_seconds: int) -> EscrowPlan:
        """Plan against the Escrow as it is now and send what is missing (call it inside :meth:`turn`:
        other tasks of the wallet may have locked funds since the job was quoted and paid for).

        :param payer: the payer.
        :param token: the fee token.
        :param payee: the node's address.
        :param amount: the job's quoted cost (already checked against the fee cap).
        :param min_lock_seconds: the quote's ``minLockSeconds``.
        :raises OceanInsufficientFundsError: the wallet cannot top the Escrow up.
        """
        plan = self.plan(
            payer=payer, token=token, payee=payee, amount=amount, min_lock_seconds=min_lock_seconds
        )
        if plan.needs_transactions:
            self.check_affordable(plan, payer)
            self.execute(plan)
        return plan

    def execute(self, plan: EscrowPlan) -> EscrowPlan:
        """Send what ``plan`` needs (approve → deposit → authorize), waiting for and checking each receipt.

        :param plan: the plan from :meth:`plan` (after :meth:`check_affordable`).
        :return: the plan with ``transactions`` filled (``approve``/``deposit``/``authorize`` → tx hash).
        """
        if self.sender is None:
            raise OceanValidationError("EscrowPayer needs a transaction sender to pay")
        payer = self.sender.address
        spent = False
        if plan.approve:
            with chain_errors("approve the Escrow contract", spent=spent, plain=True):
                receipt = self.sender.transact(
                    plan.token,
                    abi.encode_call(abi.ERC20_APPROVE, self.escrow, plan.approve),
                    what=f"approve {plan.approve} to Escrow",
                )
            plan.transactions["approve"] = receipt["transactionHash"]
        if plan.deposit:
            with chain_errors("deposit into the Escrow", spent=spent, plain=True):
                receipt = self.sender.transact(
                    self.escrow,
                    abi.encode_call(ESCROW_DEPOSIT, plan.token, plan.deposit),
                    what="Escrow.deposit",
                )
            events = abi.decode_events(DEPOSIT_EVENT, receipt, emitter=self.escrow)
            if not any(e["payer"] == payer and e["amount"] == plan.deposit for e in events):
                raise OceanPaymentError(
                    f"Escrow.deposit {receipt['transactionHash']} emitted no matching Deposit event",
                    tx_hash=receipt["transactionHash"],
                    spent=True,
                )
            plan.transactions["deposit"] = receipt["transactionHash"]
            spent = True
            log.info(
                "Deposited %s of %s into the Escrow (%s)",
                plan.deposit,
                plan.token,
                receipt["transactionHash"],
            )
        if plan.authorize:
            max_locked, max_seconds, max_counts = plan.authorize
            with chain_errors("authorize the node in the Escrow", spent=spent, plain=True):
                receipt = self.sender.transact(
                    self.escrow,
                    abi.encode_call(
                        ESCROW_AUTHORIZE, plan.token, plan.payee, max_locked, max_seconds, max_counts
                    ),
                    what="Escrow.authorize",
                )
            events = abi.decode_events(AUTH_EVENT, receipt, emitter=self.escrow) or abi.decode_events(
                AUTH_EVENT_3X, receipt, emitter=self.escrow
            )
            if not any(e["payee"] == plan.payee and e["maxLockedAmount"] == max_locked for e in events):
                raise OceanPaymentError(
                    f"Escrow.authorize {receipt['transactionHash']} emitted no matching Auth event",
                    tx_hash=receipt["transactionHash"],
                    spent=spent,
                )
            plan.transactions["authorize"] = receipt["transactionHash"]
            log.info(
                "Authorized node %s in the Escrow: maxLockedAmount %s, maxLockSeconds %s, maxLockCounts %s",
                plan.payee,
                max_locked,
                max_seconds,
                max_counts,
            )
        return plan

    def prepare(
        self,
        *,
        token: str,
        payee: str,
        amount: int,
        min_lock_seconds: int,
        max_fee: int | None = None,
        lock_seconds: int | None = None,
        lock_counts: int | None = None,
    ) -> EscrowPlan:
        """Plan, check and send: after this the node can lock ``amount`` (all checks before any tx).

        :param token: the fee token.
        :param payee: the node's address.
        :param amount: the quoted cost (base units).
        :param min_lock_seconds: the quote's ``minLockSeconds``.
        :param max_fee: refuse above this amount (base units).
        :param lock_seconds: ``maxLockSeconds`` to authorize at least.
        :param lock_counts: ``maxLockCounts`` to authorize at least.
        """
        if self.sender is None:
            raise OceanValidationError("EscrowPayer needs a transaction sender to pay")
        payer = self.sender.address
        plan = self.plan(
            payer=payer,
            token=token,
            payee=payee,
            amount=amount,
            min_lock_seconds=min_lock_seconds,
            max_fee=max_fee,
            lock_seconds=lock_seconds,
            lock_counts=lock_counts,
        )
        if not plan.needs_transactions:
            log.info("Escrow already funded and authorized for %s of %s", amount, token)
            return plan
        self.check_affordable(plan, payer)
        return self.execute(plan)

    def withdraw(self, token: str, amount: int) -> str:
        """``withdraw([token], [amount])``: take unlocked funds back (no-op on the contract if too much).

        :param token: the token.
        :param amount: base units.
        :return: the transaction hash.
        """
        if self.sender is None:
            raise OceanValidationError("EscrowPayer needs a transaction sender to withdraw")
        with chain_errors("withdraw from the Escrow", plain=True):
            receipt = self.sender.transact(
                self.escrow, abi.encode_call(ESCROW_WITHDRAW, [token], [int(amount)]), what="Escrow.withdraw"
            )
        return str(receipt["transactionHash"])


def job_id_hash(job_id: str) -> int:
    """The uint256 the node uses as the lock's ``jobId``: the sha256 of its job id string.

    :param job_id: the node's job id (the bare hash, as stored in its database).
    """
    return int(hashlib.sha256(job_id.encode()).hexdigest(), 16)
