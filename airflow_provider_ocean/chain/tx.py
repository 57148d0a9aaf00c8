"""Building, signing and sending transactions, and checking their receipts.

Nonces of one account are reserved and used under a lock shared by every sender of that account in the
process and, through an ``flock``-ed file (:mod:`airflow_provider_ocean.locks`), by every process of the
host: read the pending count, sign, broadcast, release. A nonce the node says is taken is refetched (and
at least bumped past the one tried). A transaction that is not mined in time is rebroadcast as the very
same signed bytes, so it can only ever be mined once; a second nonce is never spent on the same intent.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eth_account import Account
from eth_utils import keccak, to_checksum_address

from airflow_provider_ocean.chain.abi import decode_output, encode_call
from airflow_provider_ocean.chain.errors import (
    ChainError,
    ReceiptTimeoutError,
    RpcError,
    RpcUnavailableError,
    TransactionRevertedError,
)
from airflow_provider_ocean.chain.rpc import from_hex
from airflow_provider_ocean.locks import default_lock_dir, file_lock, lock_name

if TYPE_CHECKING:
    from collections.abc import Iterator

    from eth_account.signers.local import LocalAccount

    from airflow_provider_ocean.chain.rpc import JsonRpcClient

log = logging.getLogger(__name__)

# geth/erigon/besu phrasing, and ganache's (barge) "the tx doesn't have the correct nonce"
_NONCE_ERRORS = (
    "nonce too low",
    "replacement transaction underpriced",
    "replacement fee too low",
    "doesn't have the correct nonce",
)
_KNOWN_ERRORS = ("already known", "known transaction", "already imported")
#: Marker for "use the default lock directory" (``None`` means no inter-process lock).
DEFAULT_LOCK_DIR = "default"
# One lock per (chain id, address) shared by every TransactionSender of this process.
_ACCOUNT_LOCKS: dict[tuple[int, str], threading.Lock] = {}
_ACCOUNT_LOCKS_GUARD = threading.Lock()


def _account_lock(chain_id: int, address: str) -> threading.Lock:
    with _ACCOUNT_LOCKS_GUARD:
        return _ACCOUNT_LOCKS.setdefault((chain_id, address.lower()), threading.Lock())


@dataclass(frozen=True)
class SentTransaction:
    """A transaction that was accepted by the node.

    :param tx_hash: 0x-prefixed transaction hash.
    :param tx: the unsigned transaction fields (no secrets), kept to replay a revert.
    :param what: a short description used in messages (``"startOrder on 0x…"``).
    :param raw: the signed transaction bytes, kept to rebroadcast the same transaction (public once
        broadcast; left out of ``repr``).
    """

    tx_hash: str
    tx: dict[str, Any]
    what: str
    raw: bytes = field(default=b"", repr=False)


def compose_fee_fields(latest_block: dict[str, Any], gas_price: int, tip: int | None) -> dict[str, int]:
    """The fee fields of a transaction from the latest block, ``eth_gasPrice`` and the suggested tip.

    EIP-1559 fields when the block carries a base fee (``maxFeePerGas`` = twice the base fee plus the
    tip, at least the gas price), else a legacy ``gasPrice``.

    :param latest_block: the ``latest`` block object.
    :param gas_price: ``eth_gasPrice``.
    :param tip: ``eth_maxPriorityFeePerGas``, or ``None`` when the node has none (then gas price - base).
    """
    base_fee = latest_block.get("baseFeePerGas")
    if base_fee is None:
        return {"gasPrice": gas_price}
    base = from_hex(base_fee)
    if tip is None:
        tip = max(gas_price - base, 1)
    return {"maxPriorityFeePerGas": tip, "maxFeePerGas": max(2 * base + tip, gas_price)}


def call_function(
    rpc: JsonRpcClient, to: str, signature: str, args: tuple[Any, ...], out_types: list[str], **kw: Any
) -> tuple[Any, ...]:
    """``eth_call`` a contract function and decode its outputs.

    :param rpc: the JSON-RPC client.
    :param to: contract address.
    :param signature: canonical function signature.
    :param args: function arguments.
    :param out_types: ABI output types.
    """
    return decode_output(out_types, rpc.call(to, encode_call(signature, *args), **kw))


class TransactionSender:
    """Signs and sends transactions for one account, keeping nonces in order.

    The private key stays inside the eth-account object; it is never part of ``repr``, messages or logs.

    :param rpc: the JSON-RPC client.
    :param private_key: hex private key of the sender.
    :param gas_multiplier: safety factor applied to ``eth_estimateGas``.
    :param receipt_timeout: seconds to wait for a receipt.
    :param rebroadcast_interval: seconds without a receipt after which the same signed transaction is
        broadcast again (default: a quarter of ``receipt_timeout``, at most 30 s).
    :param lock_dir: directory of the inter-process nonce lock files; ``None`` = this process only;
        default ``$OCEAN_NONCE_LOCK_DIR`` or a per-user temp folder.
    """

    def __init__(
        self,
        rpc: JsonRpcClient,
        private_key: str,
        *,
        gas_multiplier: float = 1.3,
        receipt_timeout: float = 120.0,
        rebroadcast_interval: float | None = None,
        lock_dir: str | None = DEFAULT_LOCK_DIR,
    ) -> None:
        self.rpc = rpc
        self._account: LocalAccount = Account.from_key(private_key)
        self.address: str = self._account.address
        self.gas_multiplier = gas_multiplier
        self.receipt_timeout = receipt_timeout
        self.rebroadcast_interval = (
            rebroadcast_interval if rebroadcast_interval is not None else min(30.0, receipt_timeout / 4)
        )
        self.lock_dir = default_lock_dir() if lock_dir == DEFAULT_LOCK_DIR else lock_dir
        self._next_nonce: int | None = None
        self._chain_id: int | None = None
        # thread holding the nonce lock through batch(), and whether it read the pending count yet
        self._batch_owner: int | None = None
        self._batch_counted = False

    def __repr__(self) -> str:
        return f"TransactionSender(address={self.address!r}, rpc={self.rpc.url!r})"

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = self.rpc.chain_id()
        return self._chain_id

    def fee_fields(self) -> dict[str, int]:
        """Pick the fee fields the chain supports: EIP-1559 when blocks carry a base fee, else legacy."""
        latest = self.rpc.get_block("latest")
        gas_price = self.rpc.gas_price()
        tip = self.rpc.max_priority_fee() if latest.get("baseFeePerGas") is not None else None
        return compose_fee_fields(latest, gas_price, tip)

    def build(
        self,
        to: str | None,
        data: bytes,
        *,
        value: int = 0,
        gas: int | None = None,
        fees: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        """Build an unsigned transaction (without nonce); estimates gas unless ``gas`` is given."""
        tx: dict[str, Any] = {"from": self.address, "data": data, "value": value, "chainId": self.chain_id}
        if to is not None:
            tx["to"] = to_checksum_address(to)
        tx.update(fees or self.fee_fields())
        if gas is None:
            estimate = self.rpc.estimate_gas({k: v for k, v in tx.items() if k != "chainId"})
            gas = int(estimate * self.gas_multiplier) + 10_000
        tx["gas"] = gas
        return tx

    @contextmanager
    def nonce_lock(self) -> Iterator[None]:
        """Hold the account's nonce lock: every sender of this account in this process, and (with a lock
        directory) every process of this host, waits while one reserves a nonce and broadcasts."""
        with _account_lock(self.chain_id, self.address):
            if self.lock_dir is None:
                yield
                return
            with file_lock(self.lock_dir, lock_name("chain-nonce", str(self.chain_id), self.address.lower())):
                yield

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Send several transactions back to back under one hold of :meth:`nonce_lock`.

        The pending count is read once, by the first :meth:`send` of the batch; the following ones take
        the next nonces in turn (nobody else can use the account's nonces meanwhile, except another host
        with the same key, which the "nonce too low" path of :meth:`send` absorbs). Keep only
        broadcasts inside: other senders of the account wait for the batch to end. Re-entrant.
        """
        me = threading.get_ident()
        if self._batch_owner == me:
            yield
            return
        with self.nonce_lock():
            self._batch_owner, self._batch_counted = me, False
            try:
                yield
            finally:
                self._batch_owner, self._batch_counted = None, False

    def _reserve_nonce(self) -> int:
        if (
            self._batch_owner == threading.get_ident()
            and self._batch_counted
            and self._next_nonce is not None
        ):
            nonce = self._next_nonce
        else:
            pending = self.rpc.get_transaction_count(self.address, "pending")
            nonce = pending if self._next_nonce is None else max(pending, self._next_nonce)
            self._batch_counted = self._batch_owner == threading.get_ident()
        self._next_nonce = nonce + 1
        return nonce

    def send(
        self,
        to: str | None,
        data: bytes,
        *,
        value: int = 0,
        gas: int | None = None,
        what: str = "transaction",
        fees: dict[str, int] | None = None,
    ) -> SentTransaction:
        """Sign and broadcast a transaction, without waiting for it to be mined.

        The nonce is reserved and the transaction broadcast under :meth:`nonce_lock`. A nonce the node
        reports as taken (another host using the same key, a lagging pending count) is refetched and at
        least bumped past the one tried, up to three times; a transaction the node already knows is not
        sent twice. When the broadcast's answer is lost (transport error), the transaction is treated as
        sent - never re-signed with another nonce - and :meth:`wait` looks for it or rebroadcasts it.
        """
        tx = self.build(to, data, value=value, gas=gas, fees=fees)
        in_batch = self._batch_owner == threading.get_ident()
        with nullcontext() if in_batch else self.nonce_lock():
            tx["nonce"] = self._reserve_nonce()
            for attempt in range(4):
                signable = {k: v for k, v in tx.items() if k != "from"}
                signed = self._account.sign_transaction(signable)
                raw = bytes(signed.raw_transaction)
                tx_hash = "0x" + keccak(raw).hex()
                try:
                    self.rpc.send_raw_transaction(raw)
                except RpcUnavailableError as exc:
                    # The node may have received it (answer lost). These signed bytes can be mined
                    # once only, so keep them as sent: wait() finds them by hash or rebroadcasts them.
                    log.warning(
                        "No answer to the broadcast of %s %s (nonce %s): %s; treating it as sent",
                        what,
                        tx_hash,
                        tx["nonce"],
                        exc,
                    )
                    break
                except RpcError as exc:
                    message = exc.rpc_message.lower()
                    if any(m in message for m in _KNOWN_ERRORS):
                        break
                    if attempt < 3 and any(m in message for m in _NONCE_ERRORS):
                        tried = tx["nonce"]
                        pending = self.rpc.get_transaction_count(self.address, "pending")
                        tx["nonce"] = max(pending, tried + 1)
                        log.info("Nonce %s was taken (%s); using %s", tried, exc.rpc_message, tx["nonce"])
                        continue
                    self._next_nonce = None
                    raise
                break
            self._next_nonce = tx["nonce"] + 1
        log.debug("Sent %s as %s (nonce %s)", what, tx_hash, tx["nonce"])
        return SentTransaction(tx_hash=tx_hash, tx=tx, what=what, raw=raw)

    def rebroadcast(self, sent: SentTransaction) -> None:
        """Broadcast the same signed transaction again (same nonce, same hash: it can be mined once only).

        Answers meaning "the node has it" or "its nonce is used" are expected and ignored; the receipt
        decides.
        """
        if not sent.raw:
            return
        try:
            self.rpc.send_raw_transaction(sent.raw)
            log.info("Rebroadcast %s %s (nonce %s)", sent.what, sent.tx_hash, sent.tx.get("nonce"))
        except RpcError as exc:
            log.info("Rebroadcast of %s %s: %s", sent.what, sent.tx_hash, exc.rpc_message)
        except ChainError as exc:
            log.warning("Rebroadcast of %s %s failed: %s", sent.what, sent.tx_hash, exc)

    def wait(self, sent: SentTransaction) -> dict[str, Any]:
        """Wait for a sent transaction's receipt and check its status.

        Every :attr:`rebroadcast_interval` seconds without a receipt the same signed transaction is
        broadcast again (a node may have dropped it); after :attr:`receipt_timeout` seconds
        :class:`ReceiptTimeoutError` is raised (the transaction may still be mined later, never twice).

        :raises TransactionRevertedError: the transaction reverted (with the reason when available).
        """
        started = time.monotonic()
        deadline = started + self.receipt_timeout
        next_rebroadcast = started + self.rebroadcast_interval
        delay = 0.1
        while True:
            try:
                receipt = self.rpc.get_transaction_receipt(sent.tx_hash)
            except RpcUnavailableError as exc:  # a flaky node: keep asking until the deadline
                if time.monotonic() >= deadline:
                    raise
                log.warning("Receipt of %s %s not readable yet: %s", sent.what, sent.tx_hash, exc)
                receipt = None
            if receipt is not None:
                check_receipt(self.rpc, receipt, sent)
                return receipt
            now = time.monotonic()
            if now >= deadline:
                raise ReceiptTimeoutError(sent.tx_hash, self.receipt_timeout)
            if sent.raw and now >= next_rebroadcast:
                self.rebroadcast(sent)
                next_rebroadcast = now + self.rebroadcast_interval
            time.sleep(min(delay, max(deadline - now, 0.0)))
            delay = min(delay * 1.5, 2.0)

    def transact(self, to: str | None, data: bytes, **kwargs: Any) -> dict[str, Any]:
        """Send a transaction and wait for its successful receipt."""
        return self.wait(self.send(to, data, **kwargs))


def check_receipt(rpc: JsonRpcClient, receipt: dict[str, Any], sent: SentTransaction | None = None) -> None:
    """Raise :class:`TransactionRevertedError` unless ``receipt`` has ``status == 1``."""
    if from_hex(receipt.get("status")) == 1:
        return
    tx_hash = receipt.get("transactionHash", sent.tx_hash if sent else "?")
    reason = None
    if sent is not None:
        block = from_hex(receipt.get("blockNumber"))
        reason = rpc.revert_reason(sent.tx, max(block - 1, 0))
    raise TransactionRevertedError(tx_hash, reason, sent.what if sent else "transaction")


def contract_address_of(receipt: dict[str, Any]) -> str:
    """Return the address of a contract created by a deployment receipt."""
    address = receipt.get("contractAddress")
    if not address:
        raise ChainError(f"receipt {receipt.get('transactionHash')} created no contract")
    return to_checksum_address(address)
