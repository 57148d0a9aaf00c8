"""The one place where requests are signed and Provider nonces are chosen.

Provider v4 verifies an EIP-191 ``personal_sign`` over the **32-byte keccak** of the UTF-8 message
(not over the text itself). Nonces are per exact address string, must never go down and must never
repeat; :class:`NonceAllocator` hands out ``max(stored + 1, now_ms, last_sent + 1)`` under a lock per
(Provider URL, address). The process-wide allocator :data:`NONCES` also takes the wallet lock of
:mod:`airflow_provider_ocean.locks` (an ``flock``-ed file per host that records the last nonce handed
out, or a cluster-wide Redis lock), so that every task process agrees on the order of a wallet's nonces.

Hosts without a shared lock cannot agree, and Provider v4 accepts a nonce *equal* to the stored one (the
job starts, then the Provider answers 503). So v4 nonces carry this process's random salt as a decimal
fraction (``1765000000123.482913577``): the integer part is the millisecond nonce above and rises
strictly in each process, the fraction differs between processes, so two hosts never send equal nonces;
the magnitude stays in milliseconds, so other clients of the wallet (ocean.py) are not locked out.
Provider v4 compares nonces as decimals and signs the text as sent (docs/reference/provider-v4-api.md
§6); the Ocean Node takes integers only, and refuses an equal nonce before running anything.

``eth_account`` is imported lazily so that importing this module (e.g. while parsing DAGs) stays cheap.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from contextlib import ExitStack, contextmanager
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from airflow_provider_ocean.exceptions import (
    OceanConfigError,
    OceanValidationError,
    OceanWalletLockError,
    register_secret,
)
from airflow_provider_ocean.locks import (
    FileLocks,
    ProcessLocks,
    WalletLockError,
    default_lock_dir,
    lock_name,
    wallet_locks,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_provider_ocean.chain.rpc import JsonRpcClient
    from airflow_provider_ocean.chain.tx import TransactionSender
    from airflow_provider_ocean.locks import Counter, WalletLocks

_KEY_RE = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


def is_private_key(value: str | None) -> bool:
    """Return True if ``value`` looks like a 32-byte hex private key (``0x`` optional).

    :param value: the candidate text.
    """
    return bool(value) and bool(_KEY_RE.match(value.strip()))  # type: ignore[union-attr]


def start_message(consumer_address: str, document_id: str, nonce: str) -> str:
    """Message signed for ``POST /api/services/compute``: ``consumerAddress + documentId + nonce``.

    :param consumer_address: the signing user's address, exactly as sent.
    :param document_id: DID of the first dataset.
    :param nonce: the nonce, exactly as sent.
    """
    return f"{consumer_address}{document_id}{nonce}"


def job_message(consumer_address: str, job_id: str, document_id: str | None, nonce: str) -> str:
    """Message signed for stop/delete: ``consumerAddress + jobId + documentId + nonce``.

    :param consumer_address: the signing user's address, exactly as sent.
    :param job_id: the job id.
    :param document_id: the DID sent as ``documentId`` (empty when not sent).
    :param nonce: the nonce, exactly as sent.
    """
    return f"{consumer_address}{job_id}{document_id or ''}{nonce}"


def result_message(consumer_address: str, job_id: str, index: int | str, nonce: str) -> str:
    """Message signed for ``GET /api/services/computeResult``: ``consumerAddress + jobId + index + nonce``.

    :param consumer_address: the signing user's address, exactly as sent.
    :param job_id: the job id.
    :param index: position of the result in the job's ``results`` list.
    :param nonce: the nonce, exactly as sent.
    """
    return f"{consumer_address}{job_id}{index}{nonce}"


class Signer:
    """Signs Provider requests and builds transaction senders for one wallet.

    The key is kept only inside this object; ``repr``/``str`` show the address, and the object refuses
    to be pickled or copied so that the key cannot travel through XCom or a trigger.

    :param private_key: the wallet's private key as 64 hex digits, ``0x`` optional.
    """

    def __init__(self, private_key: str) -> None:
        if not isinstance(private_key, str) or not is_private_key(private_key):
            # Never echo the value: it may be a real key with a typo.
            raise OceanConfigError(
                "The wallet private key is missing or malformed: expected 64 hex digits (32 bytes), "
                "optionally prefixed with 0x."
            )
        key = private_key.strip()
        key = key if key.startswith(("0x", "0X")) else "0x" + key
        register_secret(key)
        from eth_account import Account

        self.__account = Account.from_key(key)
        self.address: str = self.__account.address

    def __repr__(self) -> str:
        return f"Signer(address={self.address!r})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("Signer holds a private key and cannot be pickled or copied")

    def sign(self, message: str) -> str:
        """Sign ``message`` the Provider v4 way and return the 65-byte signature as 0x-hex.

        :param message: the text to sign; its UTF-8 keccak-256 is signed with the EIP-191 prefix.
        """
        from eth_account.messages import encode_defunct
        from eth_utils import keccak

        signable = encode_defunct(primitive=keccak(text=message))
        signature = self.__account.sign_message(signable).signature.hex()
        return signature if signature.startswith("0x") else "0x" + signature

    def transaction_sender(self, rpc: JsonRpcClient, **kwargs: Any) -> TransactionSender:
        """Build a :class:`~airflow_provider_ocean.chain.tx.TransactionSender` for this wallet.

        :param rpc: the JSON-RPC client of the chain.
        :param kwargs: passed to ``TransactionSender`` (``gas_multiplier``, ``receipt_timeout``).
        """
        from airflow_provider_ocean.chain.tx import TransactionSender

        return TransactionSender(rpc, "0x" + bytes(self.__account.key).hex(), **kwargs)


#: Digits of the per-process salt in a salted nonce's fraction.
SALT_DIGITS = 9
_salt: tuple[int, int] | None = None  # (pid, salt) - a forked child draws its own


def process_salt() -> int:
    """This process's random nonce salt (``1`` to ``10**SALT_DIGITS - 1``), drawn again after a fork."""
    global _salt
    pid = os.getpid()
    if _salt is None or _salt[0] != pid:
        _salt = (pid, 1 + secrets.randbelow(10**SALT_DIGITS - 1))
    return _salt[1]


def salted(nonce: int, salt: int | None = None) -> str:
    """``nonce`` with a salt as a decimal fraction (``"1765000000123.482913577"``).

    :param nonce: the integer (millisecond) nonce.
    :param salt: the salt (default: this process's, :func:`process_salt`).
    """
    return f"{nonce}.{process_salt() if salt is None else salt:0{SALT_DIGITS}d}"


def parse_stored_nonce(value: Any) -> int:
    """Turn the Provider's ``{"nonce": ...}`` value (a Decimal as text, or a number) into an int.

    :param value: the ``nonce`` member of ``GET /api/services/nonce``.
    """
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise OceanValidationError(f"The Provider returned a non-numeric nonce {value!r}") from None
    if not number.is_finite():
        raise OceanValidationError(f"The Provider returned a non-numeric nonce {value!r}")
    return int(number)


class NonceAllocator:
    """Hands out strictly increasing Provider nonces per (Provider URL, address).

    Use :meth:`reserve` as a context manager around the whole signed request, so that nonces reach the
    Provider in the order they were handed out (the Provider refuses a nonce below the stored one).
    Threads of one process are serialised by a lock per wallet; with wallet locks processes are too: the
    wallet's lock (a file per host, or a cluster lock) is held for the same span and records the last
    nonce handed out, so ``n = max(stored + 1, now_ms, last_in_lock + 1, last_in_process + 1)`` is read
    and written under it. Workers on hosts outside the lock are covered by the salted fraction (no equal
    nonces, see the module doc) and by the server's refusal of a lower nonce, which happens before
    anything runs and is answered by re-signing (``WireClient._signed``, wire/http.py).

    :param clock: returns the current time in milliseconds (for tests).
    :param lock_dir: directory of the inter-process lock files; ``None`` = this process only.
    :param locks: the wallet locks to use instead (wins over ``lock_dir``).
    :param salt: returns the salt of salted nonces (default :func:`process_salt`; tests stand in for
        other processes with their own).
    """

    def __init__(
        self,
        clock: Callable[[], int] | None = None,
        *,
        lock_dir: str | None = None,
        locks: WalletLocks | None = None,
        salt: Callable[[], int] | None = None,
    ) -> None:
        self._clock = clock or (lambda: time.time_ns() // 1_000_000)
        self._salt = salt or process_salt
        if locks is None:
            locks = FileLocks(lock_dir) if lock_dir else ProcessLocks()
        self.locks: WalletLocks = locks
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.RLock] = {}
        self._last: dict[tuple[str, str], int] = {}
        # the Provider's stored nonce as last read, per wallet (a lower bound: only ever grows)
        self._stored: dict[tuple[str, str], int] = {}
        # key -> (counter of the held wallet lock, depth) while this process holds it
        self._held: dict[tuple[str, str], tuple[Counter, int]] = {}

    def _lock_for(self, key: tuple[str, str]) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(key, threading.RLock())

    @staticmethod
    def _key(provider_url: str, address: str) -> tuple[str, str]:
        return (provider_url.rstrip("/"), address)

    @contextmanager
    def _wallet_lock(self, key: tuple[str, str]) -> Iterator[Counter]:
        """The thread lock, then (once per holder, re-entrant) the wallet lock of :attr:`locks`.

        :raises OceanWalletLockError: the configured wallet lock cannot be taken (nothing is signed).
        """
        with self._lock_for(key):
            held = self._held.get(key)
            if held is not None:
                self._held[key] = (held[0], held[1] + 1)
                try:
                    yield held[0]
                finally:
                    self._held[key] = (held[0], held[1])
                return
            with ExitStack() as stack:
                try:
                    counter = stack.enter_context(self.locks.hold(lock_name("provider-nonce", *key)))
                except WalletLockError as exc:
                    raise OceanWalletLockError(str(exc)) from None
                self._held[key] = (counter, 1)
                try:
                    yield counter
                finally:
                    del self._held[key]

    def next_nonce(self, provider_url: str, address: str, stored: Any, *, salt: bool = False) -> str:
        """Return the next nonce as text, given the server's stored value.

        :param provider_url: the Provider base URL.
        :param address: the exact address string the nonce is for.
        :param stored: the value of ``GET /api/services/nonce`` (text or number).
        :param salt: add this process's salt as a decimal fraction (:func:`salted`; Provider v4 only).
        """
        key = self._key(provider_url, address)
        with self._wallet_lock(key) as counter:
            nonce = max(
                parse_stored_nonce(stored) + 1,
                self._clock(),
                self._last.get(key, 0) + 1,
                counter.read() + 1,
            )
            counter.write(nonce)
            self._last[key] = nonce
            return salted(nonce, self._salt()) if salt else str(nonce)

    @contextmanager
    def reserve(
        self,
        provider_url: str,
        address: str,
        fetch_stored: Callable[[], Any],
        *,
        refresh: bool = False,
        salt: bool = False,
    ) -> Iterator[str]:
        """Hold the per-wallet locks and yield the next nonce.

        The Provider's stored nonce is only asked for (``fetch_stored``) when nothing on this host has
        signed for the wallet at this Provider yet, or with ``refresh``: otherwise the nonces this
        process and the lock file handed out already bound it, and ``now_ms`` keeps rising. A Provider
        that stored a higher nonce (another host or client) refuses ours before doing anything; the
        caller then asks again with ``refresh=True``.

        :param provider_url: the Provider base URL.
        :param address: the exact address string the nonce is for.
        :param fetch_stored: returns the Provider's stored nonce (``GET /api/services/nonce``).
        :param refresh: read the stored nonce whatever is known (after a refusal).
        :param salt: add this process's salt as a decimal fraction (:func:`salted`; Provider v4 only).
        :raises OceanWalletLockError: the configured wallet lock cannot be taken (nothing is signed).
        """
        key = self._key(provider_url, address)
        with self._wallet_lock(key) as counter:
            known = key in self._stored or key in self._last or counter.read() > 0
            if refresh or not known:
                stored = parse_stored_nonce(fetch_stored())
                self._stored[key] = max(stored, self._stored.get(key, 0))
            yield self.next_nonce(provider_url, address, self._stored.get(key, 0), salt=salt)

    def last_sent(self, provider_url: str, address: str) -> int | None:
        """Return the last nonce this process handed out for this (Provider, address), if any.

        :param provider_url: the Provider base URL.
        :param address: the exact address string.
        """
        return self._last.get(self._key(provider_url, address))


#: Process-wide allocator shared by every hook and client; its lock files make all task processes of a
#: worker host agree on the nonces of a wallet.
NONCES = NonceAllocator(lock_dir=default_lock_dir())
_CLUSTER_NONCES: dict[str, NonceAllocator] = {}
_CLUSTER_GUARD = threading.Lock()


def nonce_allocator(wallet_lock_url: str | None = None) -> NonceAllocator:
    """The process-wide allocator for a connection: :data:`NONCES`, or one per cluster lock URL.

    :param wallet_lock_url: the connection's ``wallet_lock_url`` extra (``redis://…``), or ``None``.
    :raises OceanWalletLockError: the URL is not usable (not Redis, or redis-py missing).
    """
    if not wallet_lock_url:
        return NONCES
    with _CLUSTER_GUARD:
        if wallet_lock_url not in _CLUSTER_NONCES:
            try:
                locks = wallet_locks(wallet_lock_url)
            except WalletLockError as exc:
                raise OceanWalletLockError(str(exc)) from None
            _CLUSTER_NONCES[wallet_lock_url] = NonceAllocator(locks=locks)
        return _CLUSTER_NONCES[wallet_lock_url]
