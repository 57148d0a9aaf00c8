"""Building, signing and sending transactions, and checking their receipts.

Nonces of one account are reserved and used under a lock shared by every sender of that account in the
process and, through the wallet locks of :mod:`airflow_provider_ocean.locks` (an ``flock``-ed file per
host, or one cluster-wide Redis lock), by every process: read the pending count, sign, broadcast,
release. Other hosts with the same key and no shared lock are expected, so:

- every answer meaning "this nonce is taken" (the texts of geth, erigon, besu, nethermind, anvil and
  ganache in :data:`NONCE_TAKEN`) makes the sender re-read the pending count and re-sign the same call;
  nothing was accepted, so nothing can be paid twice;
- every signed transaction is unique (a few random units of gas limit), so "already known" can only mean
  this very transaction, never another host's identical one;
- while waiting, a transaction whose nonce the account's *mined* count has passed although it has no
  receipt and the node does not know it was provably replaced by another transaction: it can never be
  mined, so the same call is re-signed with a fresh nonce within seconds (:meth:`TransactionSender.wait`).

A transaction that is merely not mined yet is rebroadcast as the very same signed bytes, so it can only
ever be mined once; a second nonce is spent on the same intent only once the first provably cannot land.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from contextlib import ExitStack, contextmanager, nullcontext
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
    TransactionReplacedError,
    TransactionRevertedError,
    WalletLockUnavailableError,
)
from airflow_provider_ocean.chain.rpc import from_hex
from airflow_provider_ocean.locks import FileLocks, ProcessLocks, WalletLockError, lock_name, wallet_locks

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from eth_account.signers.local import LocalAccount

    from airflow_provider_ocean.chain.rpc import JsonRpcClient
    from airflow_provider_ocean.locks import WalletLocks

log = logging.getLogger(__name__)

#: Broadcast answers meaning "another transaction holds this nonce" (lower-cased, matched as substrings):
#: geth/erigon/anvil ``nonce too low`` and ``replacement transaction underpriced``, besu's
#: ``NONCE_TOO_LOW`` / ``TRANSACTION_REPLACEMENT_UNDERPRICED``, nethermind's ``OldNonce``, ganache's
#: ``the tx doesn't have the correct nonce`` and ``transaction can't be replaced, mining has already
#: started``. Nothing of ours was accepted: re-read the pending count and re-sign.
NONCE_TAKEN = (
    "nonce too low",
    "nonce_too_low",
    "oldnonce",
    "nonce has already been used",
    "replacement transaction underpriced",
    "transaction_replacement_underpriced",
    "replacement fee too low",
    "replacement_underpriced",
    "doesn't have the correct nonce",
    "transaction can't be replaced",
    "mining has already started",
    "transaction replaced by better transaction",
)
#: ganache's answer when its pool already holds a transaction with this nonce (and geth's for a price under
#: its floor): the nonce is taken only when the pending count has moved past it.
UNDERPRICED = ("transaction underpriced",)
#: Answers meaning "the node already has this very transaction" (same hash: ours, since every signed
#: transaction carries a random gas salt): it was sent.
ALREADY_KNOWN = (
    "already known",
    "alreadyknown",
    "known transaction",
    "known_transaction",
    "already imported",
)
#: Attempts at a broadcast whose nonce other senders keep taking (each with the next free nonce), and the
#: seconds they may take: a burst of other hosts' sends takes many in a row (``benchmarks/README.md``).
NONCE_ATTEMPTS = 32
NONCE_RETRY_SECONDS = 30.0
#: Longest random pause (seconds) before re-reading the pending count after a lost nonce.
NONCE_PAUSE_MAX = 0.5
#: Attempts at the same nonce refused as underpriced while nothing is seen holding it (a price under
#: the node's floor is refused every time: raised after these).
UNDERPRICED_ATTEMPTS = 8
#: Re-sends of a call whose transaction was provably replaced while waiting for its receipt.
MAX_RESENDS = 3
#: Upper bound (exclusive) of the random gas-limit salt that makes every signed transaction unique.
GAS_SALT = 1024
#: Seconds between checks of whether a waited-for transaction's nonce was used by another one.
REPLACED_CHECK_INTERVAL = 1.0
#: Receipt polling: the pause after a miss is this share of the time waited so far, between
#: :data:`RECEIPT_POLL_MIN` and :data:`RECEIPT_POLL_MAX` seconds, so a receipt is seen at most about 10 %
#: (and 0.1 s) after it exists: 0.1 s pauses for the first second (a 2 s chain), up to 1 s on a 12 s
#: chain (about 30 reads a block there).
RECEIPT_POLL_SHARE = 0.1
RECEIPT_POLL_MIN = 0.1
RECEIPT_POLL_MAX = 1.0
#: Blocks mined on top of the first sighting before a replaced transaction counts as dead (a shallow
#: reorganisation could otherwise bring it back after its call was sent again) ...
REPLACED_CONFIRMATIONS = 2
#: ... or seconds without any new block (an idle development chain mines only when sent something).
REPLACED_IDLE_CHAIN = 10.0
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
    :param locks: the wallet locks to use instead (e.g. a cluster lock,
        :func:`airflow_provider_ocean.locks.wallet_locks`); wins over ``lock_dir``.
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
        locks: WalletLocks | None = None,
    ) -> None:
        self.rpc = rpc
        self._account: LocalAccount = Account.from_key(private_key)
        self.address: str = self._account.address
        self.gas_multiplier = gas_multiplier
        self.receipt_timeout = receipt_timeout
        self.rebroadcast_interval = (
            rebroadcast_interval if rebroadcast_interval is not None else min(30.0, receipt_timeout / 4)
        )
        if locks is None:
            if lock_dir == DEFAULT_LOCK_DIR:
                locks = wallet_locks()
            else:
                locks = ProcessLocks() if lock_dir is None else FileLocks(lock_dir)
        self.locks: WalletLocks = locks
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
        """Hold the account's nonce lock: every sender of this account in this process, and (through
        :attr:`locks`) every process of the host or of the cluster, waits while one reserves a nonce and
        broadcasts.

        :raises WalletLockUnavailableError: the configured wallet lock cannot be taken (nothing signed).
        """
        name = lock_name("chain-nonce", str(self.chain_id), self.address.lower())
        with _account_lock(self.chain_id, self.address), ExitStack() as held:
            try:
                held.enter_context(self.locks.hold(name))
            except WalletLockError as exc:
                raise WalletLockUnavailableError(str(exc)) from None
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
        on_signed: Callable[[SentTransaction], None] | None = None,
    ) -> SentTransaction:
        """Sign and broadcast a transaction, without waiting for it to be mined.

        ``on_signed`` is called with each signed transaction right before it is broadcast, so that a
        caller can record it (hash and signed bytes) somewhere that survives this process: a process
        killed after the broadcast leaves a transaction that may still be mined, which a later attempt
        finds with :meth:`settle` instead of paying again.

        The nonce is reserved and the transaction broadcast under :meth:`nonce_lock`. A nonce the node
        reports as taken (:data:`NONCE_TAKEN`: another host using the same key, a lagging pending count)
        is re-read and at least bumped past the one tried, up to :data:`NONCE_ATTEMPTS` times within
        :data:`NONCE_RETRY_SECONDS`, with a short random pause (hosts racing for the same nonce fall out
        of step); a transaction the node already knows (:data:`ALREADY_KNOWN`) is ours and not sent
        twice. When the broadcast's answer is lost (transport error), the transaction is treated as sent
        - never re-signed with another nonce - and :meth:`wait` looks for it, rebroadcasts it, or notices
        that its nonce went to another one.
        """
        tx = self.build(to, data, value=value, gas=gas, fees=fees)
        # a random salt in the gas limit makes these signed bytes unique to this call (see module doc)
        tx["gas"] += secrets.randbelow(GAS_SALT)
        in_batch = self._batch_owner == threading.get_ident()
        with nullcontext() if in_batch else self.nonce_lock():
            tx["nonce"] = self._reserve_nonce()
            deadline = time.monotonic() + NONCE_RETRY_SECONDS
            underpriced = 0
            for attempt in range(1, NONCE_ATTEMPTS + 1):
                signable = {k: v for k, v in tx.items() if k != "from"}
                signed = self._account.sign_transaction(signable)
                raw = bytes(signed.raw_transaction)
                tx_hash = "0x" + keccak(raw).hex()
                if on_signed is not None:
                    on_signed(SentTransaction(tx_hash=tx_hash, tx=dict(tx), what=what, raw=raw))
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
                    if is_already_known(exc):
                        break
                    taken = is_nonce_taken(exc)
                    retry = attempt < NONCE_ATTEMPTS and time.monotonic() < deadline
                    if retry and (taken or (is_underpriced(exc) and underpriced < UNDERPRICED_ATTEMPTS - 1)):
                        tried = tx["nonce"]
                        pause = min(0.05 * attempt, NONCE_PAUSE_MAX)
                        time.sleep(random.uniform(0.0, pause))  # noqa: S311 - jitter only
                        pending = self.rpc.get_transaction_count(self.address, "pending")
                        if taken or pending > tried:  # underpriced: taken if another tx holds the nonce
                            tx["nonce"] = max(pending, tried + 1)
                            log.info("Nonce %s was taken (%s); using %s", tried, exc.rpc_message, tx["nonce"])
                            continue
                        # underpriced, the pending count not past the nonce (yet): another host's
                        # transaction may be on its way into the block; the same nonce again after a
                        # pause. A price under the node's floor is refused every time and raised below.
                        underpriced += 1
                        time.sleep(random.uniform(0.0, 2 * pause))  # noqa: S311 - jitter only
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
        When the transaction provably can no longer be mined - its nonce went to another transaction of
        the account (:meth:`replaced_by_another`) - the same call is signed again with a fresh nonce, at
        most :data:`MAX_RESENDS` times; the receipt returned is then the new transaction's.

        :raises TransactionRevertedError: the transaction reverted (with the reason when available).
        :raises TransactionReplacedError: its nonce kept going to other transactions.
        """
        for resend in range(MAX_RESENDS + 1):
            receipt = self._wait_one(sent)
            if receipt is not None:
                return receipt
            if resend == MAX_RESENDS:
                break
            log.warning(
                "%s %s can never be mined: nonce %s was used by another transaction of %s; "
                "sending the same call again with a fresh nonce",
                sent.what,
                sent.tx_hash,
                sent.tx.get("nonce"),
                self.address,
            )
            sent = self.send(
                sent.tx.get("to"),
                sent.tx.get("data", b""),
                value=sent.tx.get("value", 0),
                gas=sent.tx["gas"],
                what=sent.what,
            )
        raise TransactionReplacedError(
            sent.tx_hash, int(sent.tx.get("nonce", -1)), sent.what, MAX_RESENDS + 1
        )

    def settle(self, sent: SentTransaction, timeout: float | None = None) -> dict[str, Any] | None:
        """What became of a transaction an earlier, killed attempt signed and may have broadcast: its
        successful receipt, or ``None`` when it can never be mined (never arrived and its nonce went to
        another transaction). Its signed bytes are broadcast again first, so a transaction that never
        reached the node is mined now - once - rather than paid again.

        :param sent: the recorded transaction (hash, nonce and signed bytes).
        :param timeout: seconds to wait for it (default :attr:`receipt_timeout`).
        :raises ReceiptTimeoutError: still pending after ``timeout`` (it may still be mined).
        :raises TransactionRevertedError: it was mined and reverted (nothing was bought).
        """
        receipt = self.rpc.get_transaction_receipt(sent.tx_hash)
        if receipt is not None:
            check_receipt(self.rpc, receipt, sent)
            return receipt
        self.rebroadcast(sent)
        return self._wait_one(sent, timeout)

    def _wait_one(self, sent: SentTransaction, timeout: float | None = None) -> dict[str, Any] | None:
        """The receipt of ``sent``; ``None`` once it provably can never be mined (see :meth:`wait`)."""
        started = time.monotonic()
        timeout = self.receipt_timeout if timeout is None else timeout
        deadline = started + timeout
        next_rebroadcast = started + self.rebroadcast_interval
        next_check = started + REPLACED_CHECK_INTERVAL
        # first sighting of "replaced": (monotonic time, head block number then)
        replaced_since: tuple[float, int] | None = None
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
            if now >= next_check:
                next_check = now + REPLACED_CHECK_INTERVAL
                replaced_since = self._replaced_sighting(sent, replaced_since, now)
                if replaced_since is not None and self._replaced_for_good(replaced_since, now):
                    return None
            if now >= deadline:
                raise ReceiptTimeoutError(sent.tx_hash, timeout)
            if sent.raw and now >= next_rebroadcast:
                self.rebroadcast(sent)
                next_rebroadcast = now + self.rebroadcast_interval
            pause = min(max((now - started) * RECEIPT_POLL_SHARE, RECEIPT_POLL_MIN), RECEIPT_POLL_MAX)
            time.sleep(min(pause, max(deadline - now, 0.0)))

    def _replaced_sighting(
        self, sent: SentTransaction, since: tuple[float, int] | None, now: float
    ) -> tuple[float, int] | None:
        """The first sighting of ``sent`` replaced (kept while it stays replaced), else ``None``."""
        if not self.replaced_by_another(sent):
            return None
        if since is not None:
            return since
        try:
            return (now, self.rpc.block_number())
        except ChainError:
            return None

    def _replaced_for_good(self, since: tuple[float, int], now: float) -> bool:
        """Seen replaced again two intervals after the first sighting (a lagging node can't fake that),
        with :data:`REPLACED_CONFIRMATIONS` blocks mined since, or none for :data:`REPLACED_IDLE_CHAIN`
        seconds."""
        seen_at, seen_block = since
        if now - seen_at < 2 * REPLACED_CHECK_INTERVAL:
            return False
        try:
            head = self.rpc.block_number()
        except ChainError:
            return False
        if head >= seen_block + REPLACED_CONFIRMATIONS:
            return True
        return head == seen_block and now - seen_at >= REPLACED_IDLE_CHAIN

    def replaced_by_another(self, sent: SentTransaction) -> bool:
        """Whether ``sent`` can never be mined: the account's mined count passed its nonce, yet it has no
        receipt and the node has it in no block (so another transaction took that nonce).

        Read in this order - mined count first - so that a transaction mined in between shows its
        receipt. Any read failure answers ``False`` (not proven).

        :param sent: a sent transaction.
        """
        nonce = sent.tx.get("nonce")
        if nonce is None:
            return False
        try:
            if self.rpc.get_transaction_count(self.address, "latest") <= int(nonce):
                return False
            if self.rpc.get_transaction_receipt(sent.tx_hash) is not None:
                return False
            known = self.rpc.get_transaction(sent.tx_hash)
        except ChainError:
            return False
        return known is None or known.get("blockNumber") is None

    def transact(self, to: str | None, data: bytes, **kwargs: Any) -> dict[str, Any]:
        """Send a transaction and wait for its successful receipt."""
        return self.wait(self.send(to, data, **kwargs))


def is_underpriced(error: RpcError) -> bool:
    """Whether a broadcast was refused as underpriced (:data:`UNDERPRICED`): a taken nonce on ganache.

    :param error: the node's answer to ``eth_sendRawTransaction``.
    """
    message = error.rpc_message.lower()
    return any(text in message for text in UNDERPRICED) and not is_nonce_taken(error)


def is_nonce_taken(error: RpcError) -> bool:
    """Whether a broadcast's error answer means "another transaction holds this nonce".

    :param error: the node's answer to ``eth_sendRawTransaction``.
    """
    message = error.rpc_message.lower()
    return any(text in message for text in NONCE_TAKEN)


def is_already_known(error: RpcError) -> bool:
    """Whether a broadcast's error answer means "the node already has this very transaction".

    :param error: the node's answer to ``eth_sendRawTransaction``.
    """
    message = error.rpc_message.lower()
    return any(text in message for text in ALREADY_KNOWN)


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
