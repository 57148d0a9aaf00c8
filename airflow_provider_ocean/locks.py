"""Wallet locks: who may reserve the next nonce of a wallet (Provider request nonces, chain nonces).

Three kinds, one interface (:class:`WalletLocks`: ``hold(name)`` yields a :class:`Counter` that the
holder reads and rewrites):

- :class:`FileLocks` (the default) - an exclusive ``fcntl.flock`` on a small file in a per-user
  directory, which also holds the counter. ``flock`` locks belong to the open file, so they exclude other
  threads and other processes of the **host** alike, and the kernel drops them when the holder dies (a
  crashed worker leaves no stale lock). Without ``fcntl`` it degrades to "this process only".
- :class:`RedisLocks` - one lock for the whole **cluster**, taken with redis-py's ``Lock`` on the Redis
  a Celery deployment already runs (connection extra ``wallet_lock_url``). Its lease is short and renewed
  while held, so a killed holder blocks the others for one lease at most. A Redis that cannot be reached
  raises :class:`WalletLockError` before anything is signed.
- :class:`ProcessLocks` - this process only (``OCEAN_NONCE_LOCK_DIR=off``).

Without a cluster lock, hosts that share a wallet never coordinate; the callers make that safe on their
own (docs/deployment.md). No Airflow import here: the chain client (used by the sandbox) relies on it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger(__name__)

#: Environment variable naming the directory of the lock files; ``off`` disables inter-process locking
#: (threads of one process are still serialised).
LOCK_DIR_ENV = "OCEAN_NONCE_LOCK_DIR"


def default_lock_dir() -> str | None:
    """The directory of the inter-process lock files: ``$OCEAN_NONCE_LOCK_DIR``, else a per-user folder in
    the system temp dir; ``None`` when the variable says ``off``.
    """
    configured = os.environ.get(LOCK_DIR_ENV)
    if configured is not None and configured.strip().lower() in ("", "0", "off", "none", "false"):
        return None
    if configured:
        return configured
    uid = os.getuid() if hasattr(os, "getuid") else os.getpid()
    return os.path.join(tempfile.gettempdir(), f"airflow-provider-ocean-{uid}", "locks")


@contextmanager
def file_lock(lock_dir: str, name: str) -> Iterator[IO[str] | None]:
    """Hold an exclusive ``fcntl.flock`` on ``lock_dir/name`` and yield the open file (``None`` if file
    locking is unavailable on this platform or the directory cannot be used).

    ``flock`` locks belong to the open file, so they exclude other threads and other processes alike, and
    the kernel releases them when the holder dies (no stale locks after a worker crash).

    :param lock_dir: the directory (created with mode 0700 when missing).
    :param name: the file name.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield None
        return
    handle: IO[str] | None = None
    try:
        os.makedirs(lock_dir, mode=0o700, exist_ok=True)
        handle = open(os.path.join(lock_dir, name), "a+", encoding="ascii")  # noqa: SIM115
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    except OSError as exc:
        if handle is not None:
            handle.close()
            handle = None
        log.warning("Inter-process lock %s unavailable (%s); locking within this process only", name, exc)
    try:
        yield handle
    finally:
        if handle is not None:
            handle.close()  # closing the file releases the flock


def read_counter(handle: IO[str] | None) -> int:
    """Read the integer stored in a locked counter file (0 when empty, unreadable or absent).

    :param handle: the file yielded by :func:`file_lock`.
    """
    if handle is None:
        return 0
    handle.seek(0)
    text = handle.read().strip()
    return int(text) if text.isdigit() else 0


def write_counter(handle: IO[str] | None, value: int) -> None:
    """Replace the integer stored in a locked counter file.

    :param handle: the file yielded by :func:`file_lock`.
    :param value: the new value.
    """
    if handle is None:
        return
    handle.seek(0)
    handle.truncate()
    handle.write(str(value))
    handle.flush()


def redacted_url(url: str) -> str:
    """``url`` without its password (for messages and logs).

    :param url: a URL such as ``redis://:secret@host:6379/0``.
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class WalletLockError(RuntimeError):
    """The configured wallet lock cannot be taken (unreachable, or not free within the allowed wait)."""


class Counter(Protocol):
    """An integer kept beside a lock, read and rewritten by the holder."""

    def read(self) -> int:
        """The stored value (0 when none)."""
        ...

    def write(self, value: int) -> None:
        """Replace the stored value.

        :param value: the new value.
        """
        ...


class WalletLocks(Protocol):
    """Named exclusive locks, each with a :class:`Counter`."""

    #: What the locks cover, for messages (``"this host"``, ``"the cluster (redis://…)"``).
    scope: str

    def hold(self, name: str) -> Any:
        """A context manager holding lock ``name`` and yielding its :class:`Counter`.

        :param name: the lock's name (:func:`lock_name`).
        """
        ...


class _MemoryCounter:
    """A counter that lives as long as the lock holder's process."""

    def __init__(self) -> None:
        self.value = 0

    def read(self) -> int:
        return self.value

    def write(self, value: int) -> None:
        self.value = value


class _FileCounter:
    def __init__(self, handle: IO[str]) -> None:
        self.handle = handle

    def read(self) -> int:
        return read_counter(self.handle)

    def write(self, value: int) -> None:
        write_counter(self.handle, value)


class ProcessLocks:
    """Locks of this process only (the callers' thread locks already exclude other threads)."""

    scope = "this process"

    def __init__(self) -> None:
        self._counters: dict[str, _MemoryCounter] = {}

    @contextmanager
    def hold(self, name: str) -> Iterator[Counter]:
        yield self._counters.setdefault(name, _MemoryCounter())


class FileLocks:
    """``flock``-ed files in ``lock_dir``: every process of this host.

    :param lock_dir: the directory of the lock files.
    """

    scope = "this host"

    def __init__(self, lock_dir: str) -> None:
        self.lock_dir = lock_dir
        self._fallback = ProcessLocks()

    @contextmanager
    def hold(self, name: str) -> Iterator[Counter]:
        with file_lock(self.lock_dir, name) as handle:
            if handle is None:
                with self._fallback.hold(name) as counter:
                    yield counter
            else:
                yield _FileCounter(handle)


class _RedisCounter:
    def __init__(self, client: Any, key: str) -> None:
        self.client, self.key = client, key

    def read(self) -> int:
        value = self.client.get(self.key)
        text = value.decode() if isinstance(value, bytes) else str(value or "")
        return int(text) if text.isdigit() else 0

    def write(self, value: int) -> None:
        self.client.set(self.key, str(value))


class RedisLocks:
    """One lock per name for the whole cluster, in Redis (redis-py ``Lock``; the ``redis`` extra).

    :param url: ``redis://[:password@]host:port/db`` (``rediss://`` for TLS).
    :param lease: seconds the lock lives without renewal; renewed every third of it while held, so a
        killed holder blocks the others for at most this long.
    :param wait: seconds to wait for a held lock before :class:`WalletLockError`.
    :param socket_timeout: seconds for connecting to and answering from Redis.
    """

    prefix = "airflow-provider-ocean:"

    def __init__(
        self, url: str, *, lease: float = 30.0, wait: float = 300.0, socket_timeout: float = 5.0
    ) -> None:
        try:
            import redis
        except ImportError:
            raise WalletLockError(
                "wallet_lock_url names a Redis lock but the redis package is not installed: "
                "pip install 'airflow-provider-ocean[redis]'"
            ) from None
        self.url = url
        self.scope = f"the cluster ({redacted_url(url)})"
        self.lease, self.wait = float(lease), float(wait)
        self._errors: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)
        try:
            self.client = redis.Redis.from_url(
                url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
            )
        except (ValueError, *self._errors) as exc:
            raise WalletLockError(f"Invalid wallet lock URL {redacted_url(url)}: {exc}") from None

    def ping(self) -> None:
        """Check that Redis answers; :class:`WalletLockError` otherwise."""
        try:
            self.client.ping()
        except self._errors as exc:
            raise WalletLockError(
                f"The wallet lock at {redacted_url(self.url)} cannot be reached: {exc}"
            ) from None

    @contextmanager
    def hold(self, name: str) -> Iterator[Counter]:
        # one Lock object per hold; not thread-local, so that the renewing thread shares its token
        lock = self.client.lock(
            self.prefix + name, timeout=self.lease, blocking_timeout=self.wait, thread_local=False
        )
        try:
            acquired = lock.acquire()
        except self._errors as exc:
            raise WalletLockError(
                f"The wallet lock at {redacted_url(self.url)} cannot be reached: {exc}"
            ) from None
        if not acquired:
            raise WalletLockError(
                f"The wallet lock {name} at {redacted_url(self.url)} was not free within {self.wait:.0f} s"
            )
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(lock, stop), name=f"renew-{name}", daemon=True)
        renewer.start()
        try:
            yield _RedisCounter(self.client, self.prefix + name + ":counter")
        finally:
            stop.set()
            renewer.join()
            try:
                lock.release()
            except self._errors as exc:  # expired meanwhile, or Redis gone: the lease ends it anyway
                log.warning("Releasing wallet lock %s: %s", name, exc)

    def _renew(self, lock: Any, stop: threading.Event) -> None:
        while not stop.wait(self.lease / 3):
            try:
                lock.reacquire()
            except self._errors as exc:
                log.warning("Renewing wallet lock %s failed: %s", lock.name, exc)


#: The URL schemes of a cluster wallet lock (redis-py's).
LOCK_URL_SCHEMES = ("redis://", "rediss://", "unix://")
_REGISTRY: dict[str, WalletLocks] = {}
_REGISTRY_GUARD = threading.Lock()


def wallet_locks(url: str | None = None) -> WalletLocks:
    """The wallet locks of this process for a connection: a cluster lock when ``url`` names one, else
    this host's lock files (:func:`default_lock_dir`), else this process only. One instance per URL.

    :param url: the ``wallet_lock_url`` extra (``redis://…``), or ``None``.
    :raises WalletLockError: ``url`` is not a Redis URL, or redis-py is missing.
    """
    key = (url or "").strip()
    with _REGISTRY_GUARD:
        if key not in _REGISTRY:
            if key:
                if not key.startswith(LOCK_URL_SCHEMES):
                    raise WalletLockError(
                        "wallet_lock_url must be a redis://, rediss:// or unix:// URL, "
                        f"got {redacted_url(key)!r}"
                    )
                _REGISTRY[key] = RedisLocks(key)
            else:
                lock_dir = default_lock_dir()
                _REGISTRY[key] = FileLocks(lock_dir) if lock_dir else ProcessLocks()
        return _REGISTRY[key]


def lock_name(kind: str, *parts: str) -> str:
    """A file name for the lock of ``parts`` (hashed: URLs and addresses are not file-name safe).

    :param kind: a prefix (``provider-nonce``, ``chain-nonce``).
    :param parts: what the lock is for.
    """
    return f"{kind}-{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:32]}.lock"
