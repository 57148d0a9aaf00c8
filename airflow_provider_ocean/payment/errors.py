"""The one translation of chain client errors into Ocean errors, for every payment step.

``airflow_provider_ocean/chain/errors.py`` stays free of Airflow (the sandbox uses the chain client
without it), so its errors are turned into :class:`~airflow_provider_ocean.exceptions.OceanError` s here,
around every read and transaction of the order payer (``payment/orders.py``, ``payment/acquire.py``) and
the Escrow payer (``payment/escrow.py``):

- ``TransactionRevertedError`` (mined with status 0): :class:`OceanPaymentError` with its ``tx_hash``;
- ``ReceiptTimeoutError`` (no receipt in time): :class:`OceanPaymentError`, by default with its
  ``tx_hash`` and the hint that it may still be mined;
- ``RpcUnavailableError`` (no answer, not JSON-RPC): :class:`OceanConnectionError`;
- ``WalletLockUnavailableError`` (the cluster wallet lock cannot be taken; nothing signed):
  :class:`OceanWalletLockError`;
- ``RpcError`` (the node's error object) and any other chain error: :class:`OceanPaymentError`, by
  default with the node's own message and a hint when the wallet lacks gas funds.

The wording is the order payer's by default and ``<what>: <the chain error>`` for the Escrow calls
(``plain=True``); :func:`translate` gives every message. Orders already sent (``paid``) are named at the
end of every message, so that they can be reused as transfer tx ids, and make every payment error
``spent``. Other exceptions pass through unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from airflow_provider_ocean.chain.errors import (
    ChainError,
    ReceiptTimeoutError,
    RpcError,
    RpcUnavailableError,
    TransactionRevertedError,
    WalletLockUnavailableError,
)
from airflow_provider_ocean.exceptions import (
    OceanConnectionError,
    OceanError,
    OceanPaymentError,
    OceanWalletLockError,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

#: Hint of a transaction whose receipt did not arrive in time.
MAY_STILL_BE_MINED = "the transaction may still be mined; check it before paying again"
#: Hint of a node refusing a transaction for lack of native coin.
NO_GAS_FUNDS = "the wallet lacks native gas funds"


def translate(
    exc: ChainError,
    what: str,
    *,
    spent: bool = False,
    paid: Sequence[tuple[str, str]] = (),
    plain: bool = False,
) -> OceanError:
    """The Ocean error to raise for a chain error of one payment step.

    :param exc: the chain client's error.
    :param what: the step, which starts every message (``startOrder on 0x… for did:op:…``).
    :param spent: something was already spent before this step (e.g. the Escrow deposit was mined).
    :param paid: ``(did, tx hash)`` of the orders already sent, named in the message.
    :param plain: word every message ``<what>: <the chain error>`` and report ``spent`` as given, even for
        a mined revert (the Escrow calls). By default, the order payer's wording: a revert reason with
        its tx, a receipt timeout with its tx and a hint, the node's own message; a mined revert and an
        unconfirmed transaction count as spent.
    :return: an :class:`OceanConnectionError` when the RPC node could not be reached, otherwise an
        :class:`OceanPaymentError`.
    """
    spent = spent or bool(paid)
    tail = "" if plain and not paid else "." + _already_sent(paid)
    if isinstance(exc, TransactionRevertedError):
        if plain:
            return OceanPaymentError(f"{what}: {exc}{tail}", tx_hash=exc.tx_hash, spent=spent)
        return OceanPaymentError(
            f"{what} reverted: {exc.reason or 'no reason'} (tx {exc.tx_hash}){tail}",
            tx_hash=exc.tx_hash,
            spent=True,
        )
    if isinstance(exc, ReceiptTimeoutError) and not plain:
        return OceanPaymentError(
            f"{what}: {exc}{tail}", tx_hash=exc.tx_hash, spent=True, hint=MAY_STILL_BE_MINED
        )
    if isinstance(exc, RpcUnavailableError):
        return OceanConnectionError(f"{what}: {exc}{tail}")
    if isinstance(exc, WalletLockUnavailableError):
        return OceanWalletLockError(f"{what}: {exc}{tail}")
    if plain:
        return OceanPaymentError(f"{what}: {exc}{tail}", spent=spent)
    message = exc.rpc_message if isinstance(exc, RpcError) else str(exc)
    hint = NO_GAS_FUNDS if "insufficient funds" in message.lower() else None
    return OceanPaymentError(f"{what} failed: {message}{tail}", spent=spent, hint=hint)


@contextmanager
def chain_errors(
    what: str,
    *,
    spent: bool = False,
    paid: Sequence[tuple[str, str]] = (),
    plain: bool = False,
) -> Iterator[None]:
    """Turn a chain error raised in the block into its Ocean error (:func:`translate`; the chain error is
    not chained, its text is in the message); other exceptions pass through.

    :param what: the step.
    :param spent: something was already spent before this step.
    :param paid: ``(did, tx hash)`` of the orders already sent.
    :param plain: the Escrow calls' wording (see :func:`translate`).
    """
    try:
        yield
    except ChainError as exc:
        raise translate(exc, what, spent=spent, paid=paid, plain=plain) from None


def _already_sent(paid: Sequence[tuple[str, str]]) -> str:
    """The sentence naming the orders already sent (empty without any)."""
    if not paid:
        return ""
    return " Orders already sent (reuse them as transfer tx ids): " + ", ".join(
        f"{did}={tx_hash}" for did, tx_hash in paid
    )


__all__ = ["MAY_STILL_BE_MINED", "NO_GAS_FUNDS", "chain_errors", "translate"]
