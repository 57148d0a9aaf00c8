"""Writing large downloads straight to disk (``O_DIRECT``), past the page cache.

A gigabyte written through the page cache costs the kernel a lot of system time on some machines (2-4 s
per GiB on small VMs, and more for a process that has not written much yet); the same bytes written with
``O_DIRECT`` from page-aligned buffers cost almost none, and run at the disk's speed. Only large results
are written this way (:data:`DIRECT_IO_MIN_BYTES`): small files are better served by the cache. Where the
platform or the file system has no ``O_DIRECT`` (macOS, tmpfs), :func:`open_direct` says so and the
caller writes through the cache as usual.
"""

from __future__ import annotations

import errno
import fcntl
import http.client
import mmap
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from airflow_provider_ocean.exceptions import OceanConnectionError

#: Results at least this large (``Content-Length``) are written with ``O_DIRECT``.
DIRECT_IO_MIN_BYTES = 64 * 1024 * 1024
#: Size of each of the two page-aligned buffers.
DIRECT_IO_BUFFER = 8 * 1024 * 1024
# O_DIRECT needs lengths and offsets in multiples of the logical block size; 4 KiB covers all disks.
_ALIGN = 4096


def stream_broke(operation: str, received: int, exc: BaseException) -> OceanConnectionError:
    """The error of a download whose stream failed (only the exception's type: its text may hold URLs).

    :param operation: what is being done.
    :param received: the bytes received before.
    :param exc: the transport error.
    """
    return OceanConnectionError(
        f"{operation}: the stream broke after {received} bytes ({type(exc).__name__})"
    )


def check_length(operation: str, written: int, expected: int | None) -> None:
    """Raise when a body ended before its ``Content-Length``.

    :param operation: what is being done.
    :param written: the bytes received.
    :param expected: the declared length (``None``: not checked).
    :raises OceanConnectionError: ``written`` differs from ``expected``.
    """
    if expected is not None and written != expected:
        raise OceanConnectionError(
            f"{operation}: the stream broke after {written} of {expected} bytes (connection closed)"
        )


def open_direct(path: str) -> int | None:
    """Open an existing file for writing with ``O_DIRECT``; ``None`` when the platform or file system
    cannot (then write it through the page cache).

    :param path: the file (typically a fresh temporary file next to the destination).
    """
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        return os.open(path, os.O_WRONLY | flag)
    except OSError:
        return None


def _drop_direct(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~getattr(os, "O_DIRECT", 0))


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        try:
            count = os.write(fd, view)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # the file system took the flag but refuses direct writes: go through the cache from here
            _drop_direct(fd)
            count = os.write(fd, view)
        view = view[count:]


def copy_body_direct(
    body: http.client.HTTPResponse, expected: int | None, fd: int, digest: Any, operation: str
) -> int:
    """Stream ``body`` into ``fd`` (opened by :func:`open_direct`) and hash it; return the byte count.

    Two page-aligned buffers are filled in turn from the socket; each full one is written in one
    aligned write and hashed in a helper thread while the next one fills. The last, partial block is
    written after ``O_DIRECT`` is turned off on ``fd``.

    :param body: the HTTP response body, nothing read yet.
    :param expected: the declared ``Content-Length``, to detect a short body.
    :param fd: the file descriptor.
    :param digest: a ``hashlib`` object updated with every byte.
    :param operation: what is being done, for messages.
    :raises OceanConnectionError: the stream broke or ended short.
    """
    buffers = (mmap.mmap(-1, DIRECT_IO_BUFFER), mmap.mmap(-1, DIRECT_IO_BUFFER))
    hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ocean-sha256")
    pending: Future[None] | None = None
    written = 0
    turn = 0
    try:
        while True:
            view = memoryview(buffers[turn])
            turn ^= 1
            filled = 0
            while filled < DIRECT_IO_BUFFER:
                try:
                    count = body.readinto(view[filled:])
                except (OSError, http.client.HTTPException) as exc:
                    raise stream_broke(operation, written + filled, exc) from None
                if not count:
                    break
                filled += count
            if pending is not None:
                pending.result()  # the other buffer is hashed: this one may be refilled next time
                pending = None
            if not filled:
                break
            chunk = view[:filled]
            pending = hasher.submit(digest.update, chunk)
            aligned = filled - filled % _ALIGN
            if aligned:
                _write_all(fd, chunk[:aligned])
            if aligned < filled:  # the tail of the body: a short fill only happens at its end
                _drop_direct(fd)
                _write_all(fd, chunk[aligned:])
            written += filled
            if filled < DIRECT_IO_BUFFER:
                break
        if pending is not None:
            pending.result()
    finally:
        hasher.shutdown(wait=True)
    check_length(operation, written, expected)
    return written
