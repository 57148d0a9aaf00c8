"""The journal of order transactions: what a killed attempt signed, so that the next one settles it.

A worker can die after broadcasting a ``startOrder`` and before recording the payment. That transaction
may still be mined - an order nobody would use, paid again by the retry. So every order transaction is
recorded (:func:`sent_order_record`, kept by the start operator in task state) right before its
broadcast, and a retry first settles what was recorded (:func:`settle_records`): mined orders are reused,
transactions that never arrived are broadcast again (the very same bytes, mined once at most), and those
whose nonce went to another transaction are dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_ocean.chain.errors import ChainError, ReceiptTimeoutError, TransactionRevertedError
from airflow_provider_ocean.chain.tx import SentTransaction
from airflow_provider_ocean.exceptions import OceanPaymentError
from airflow_provider_ocean.payment.errors import translate

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow_provider_ocean.chain.tx import TransactionSender


def sent_order_record(sent: SentTransaction, role: str, did: str, service_id: str) -> dict[str, Any]:
    """A JSON record of a signed order transaction: enough to find it, or broadcast it again, later.

    Holds no secret: the signed bytes are public once broadcast.

    :param sent: the signed transaction.
    :param role: ``dataset`` or ``algorithm``.
    :param did: the input's DID.
    :param service_id: its service id.
    """
    tx = sent.tx
    return {
        "role": role,
        "did": did,
        "service_id": service_id,
        "tx_hash": sent.tx_hash,
        "what": sent.what,
        "nonce": int(tx["nonce"]),
        "to": tx.get("to"),
        "data": "0x" + bytes(tx.get("data") or b"").hex(),
        "raw": "0x" + sent.raw.hex(),
    }


def recorded_transaction(record: dict[str, Any]) -> SentTransaction:
    """The :class:`SentTransaction` of a :func:`sent_order_record`.

    :param record: the record.
    """
    raw = str(record.get("raw") or "0x")
    data = str(record.get("data") or "0x")
    return SentTransaction(
        tx_hash=str(record["tx_hash"]),
        tx={"nonce": int(record["nonce"]), "to": record.get("to"), "data": bytes.fromhex(data[2:])},
        what=str(record.get("what") or "order"),
        raw=bytes.fromhex(raw[2:]),
    )


def settle_records(
    sender: TransactionSender, records: Sequence[dict[str, Any]], timeout: float = 60.0
) -> list[dict[str, Any]]:
    """Settle the recorded order transactions of an earlier attempt; return the records that were mined
    successfully (their ``tx_hash`` is the order to reuse), in their order.

    Several records of one input (a broadcast refused for a taken nonce, then signed again) settle to at
    most one mined transaction: the others can never be mined.

    :param sender: the wallet's transaction sender.
    :param records: :func:`sent_order_record` dicts.
    :param timeout: seconds to wait for each one still pending.
    :raises OceanPaymentError: one is still pending after ``timeout`` (it may yet be mined: paying again
        now could pay twice).
    """
    mined: list[dict[str, Any]] = []
    for record in records:
        sent = recorded_transaction(record)
        try:
            receipt = sender.settle(sent, timeout)
        except TransactionRevertedError:
            continue  # mined and reverted: it bought nothing
        except ReceiptTimeoutError:
            raise OceanPaymentError(
                f"{sent.what} {sent.tx_hash}, sent by an earlier try, is still pending after "
                f"{timeout:.0f} s; not paying again while it may be mined",
                tx_hash=sent.tx_hash,
                spent=True,
            ) from None
        except ChainError as exc:
            raise translate(exc, f"settle {sent.what} {sent.tx_hash}", spent=True) from None
        if receipt is not None:
            mined.append(record)
    return mined
