"""Inter-process locks for per-wallet nonces (Provider request nonces and chain transaction nonces).

A lock is an exclusive ``fcntl.flock`` on a small file in a per-user directory; the file also holds a
counter that the lock holder reads and rewrites. ``flock`` locks belong to the open file, so they exclude
other threads and other processes alike, and the kernel drops them when the holder dies (a crashed
worker leaves no stale lock). On platforms without ``fcntl`` locking degrades to "this process only".

No Airflow import here: the chain client (used by the sandbox without Airflow) relies on it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING

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


def lock_name(kind: str, *parts: str) -> str:
    """A file name for the lock of ``parts`` (hashed: URLs and addresses are not file-name safe).

    :param kind: a prefix (``provider-nonce``, ``chain-nonce``).
    :param parts: what the lock is for.
    """
    return f"{kind}-{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:32]}.lock"
