"""The one download path for result files, and the one safe file name.

:func:`save_result` streams a result answer in constant memory to a file object, a file path or an existing
directory (the name then comes from ``Content-Disposition`` or the job's listing, through
:func:`safe_filename`). It hashes every byte (SHA-256), writes paths atomically (a temporary file next to
the target, renamed at the end; nothing is left behind on failure), writes through the page cache (large
results with ``O_DIRECT`` instead where the ``direct`` write path is chosen: :data:`WRITE_PATHS`,
:mod:`airflow_provider_ocean.wire.direct_io`), and checks the body against its ``Content-Length`` and
against the size the job lists for the result: Ocean Node answers 200 with an empty body for an index or
owner it does not serve, which must not pass for the file. Logs are written without Docker's log frames
(:mod:`airflow_provider_ocean.wire.log_frames`) unless the raw bytes are asked for.
"""

from __future__ import annotations

import collections
import hashlib
import http.client
import io
import logging
import os
import posixpath
import re
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Union
from urllib.parse import unquote

import requests

from airflow_provider_ocean.exceptions import OceanResultSizeError, OceanValidationError
from airflow_provider_ocean.models import DownloadedResult
from airflow_provider_ocean.wire.direct_io import (
    DIRECT_IO_MIN_BYTES,
    check_length,
    copy_body_direct,
    open_direct,
    stream_broke,
)
from airflow_provider_ocean.wire.log_frames import LogFrameDecoder

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import TypeAlias

    from airflow_provider_ocean.models import ResultFile


class BinarySink(Protocol):
    """Where a result's bytes may be streamed: anything with ``write(bytes)`` (a file, a buffer, a tail
    keeper, a size-capped writer)."""

    def write(self, data: bytes | memoryview, /) -> Any: ...


#: A download destination: a file path, an existing directory, or a :class:`BinarySink`.
Destination: TypeAlias = Union[str, "os.PathLike[str]", BinarySink]  # noqa: UP007

log = logging.getLogger(__name__)

#: How results are written to a path: ``cache`` (the page cache, the default) or ``direct`` (results of
#: :data:`~airflow_provider_ocean.wire.direct_io.DIRECT_IO_MIN_BYTES` or more with ``O_DIRECT``). Which one
#: is faster depends on the machine: ``benchmarks/stream_results.py`` measures both (benchmarks/README.md).
WRITE_PATHS = ("cache", "direct")


def checked_write_path(value: str) -> str:
    """``value`` if it is one of :data:`WRITE_PATHS`.

    :param value: the write path asked for.
    :raises OceanValidationError: it is not.
    """
    if value not in WRITE_PATHS:
        raise OceanValidationError(f"write_path must be one of {WRITE_PATHS}, got {value!r}")
    return value


#: Bounds of the read buffer: half of one core's L2 cache within them (:func:`read_chunk_size`).
MIN_CHUNK_SIZE = 128 * 1024
MAX_CHUNK_SIZE = 1024 * 1024
#: The read buffer where the L2 cache size cannot be read.
DEFAULT_CHUNK_SIZE = 256 * 1024
_L2_SIZE_FILE = "/sys/devices/system/cpu/cpu0/cache/index{}/size"


def read_chunk_size() -> int:
    """Bytes per read of a result body: half of one core's L2 cache, within :data:`MIN_CHUNK_SIZE` and
    :data:`MAX_CHUNK_SIZE` (:data:`DEFAULT_CHUNK_SIZE` where Linux's ``sysfs`` does not tell it).

    Each buffer is received into, written and hashed while it is still in the cache; a buffer larger than
    the cache makes every one of those passes go to memory. Measured on a 2-core VM with 512 KiB of L2 per
    core, 1 GiB through the page cache (benchmarks/README.md): 4 MiB buffers cost 1.5-1.8 s of kernel time
    and ran at 0.73x curl; 1-2 MiB ones 1.2-1.5 s; 256 KiB ones 0.6-0.8 s, at 1.3x curl in both positions of
    the benchmark, where 512 KiB (the whole L2) fell to 0.8x right after another process's download.
    """
    for index in range(6):
        try:
            level = Path(_L2_SIZE_FILE.format(index)).with_name("level").read_text().strip()
            if level != "2":
                continue
            text = Path(_L2_SIZE_FILE.format(index)).read_text().strip().upper()
        except OSError:
            continue
        match = re.fullmatch(r"(\d+)([KM]?)", text)
        if not match:
            break
        size = int(match.group(1)) * {"": 1, "K": 1024, "M": 1024 * 1024}[match.group(2)]
        return min(max(size // 2, MIN_CHUNK_SIZE), MAX_CHUNK_SIZE)
    return DEFAULT_CHUNK_SIZE


CHUNK_SIZE = read_chunk_size()
#: Longest file name :func:`safe_filename` returns.
MAX_NAME_LENGTH = 200
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str | None, fallback: str) -> str:
    """A flat, harmless file name for a server-given name: no directories, no traversal, no hidden file,
    only ``A-Z a-z 0-9 . _ -`` (other runs become ``_``), at most :data:`MAX_NAME_LENGTH` characters.

    :param name: the name the server gave (``Content-Disposition``, a result's ``filename``).
    :param fallback: the name to use when nothing usable is left.
    """
    base = posixpath.basename((name or "").replace("\\", "/")).strip()
    base = _UNSAFE.sub("_", base).lstrip(".")
    return base[:MAX_NAME_LENGTH] or fallback


def content_disposition_filename(header: str | None) -> str | None:
    """Extract the file name from a ``Content-Disposition`` header (``attachment;filename=out.txt``).

    :param header: the header value.
    """
    if not header:
        return None
    match = re.search(r"filename\*\s*=\s*[^']*'[^']*'([^;]+)", header, flags=re.IGNORECASE)
    if match:
        return unquote(match.group(1).strip().strip('"'))
    match = re.search(r"filename\s*=\s*(\"[^\"]*\"|[^;]+)", header, flags=re.IGNORECASE)
    if match:
        return match.group(1).strip().strip('"') or None
    return None


class ListedSizes:
    """The result sizes and types the latest status answers listed, per job (bounded: the most recent jobs).

    :param max_jobs: how many jobs to remember.
    """

    def __init__(self, max_jobs: int = 256) -> None:
        self.max_jobs = max_jobs
        self._jobs: collections.OrderedDict[str, dict[int, tuple[int | None, str]]] = (
            collections.OrderedDict()
        )

    def remember(self, job_id: str, results: Iterable[ResultFile]) -> None:
        """Keep the sizes of a job's listed results (an empty listing keeps what was known).

        :param job_id: the job id, as downloads name it.
        :param results: the job's result files.
        """
        listed = {r.index: (r.filesize, r.type) for r in results}
        if not listed:
            return
        self._jobs[job_id] = listed
        self._jobs.move_to_end(job_id)
        while len(self._jobs) > self.max_jobs:
            self._jobs.popitem(last=False)

    def get(self, job_id: str, index: int) -> int | None:
        """The listed size of one result, if a status answer listed it.

        :param job_id: the job id.
        :param index: the result's index.
        """
        return self._jobs.get(job_id, {}).get(int(index), (None, ""))[0]

    def kind(self, job_id: str, index: int) -> str | None:
        """The listed ``type`` of one result, if a status answer listed it.

        :param job_id: the job id.
        :param index: the result's index.
        """
        listed = self._jobs.get(job_id, {}).get(int(index))
        return listed[1] if listed else None


def save_result(
    response: requests.Response,
    destination: Destination,
    *,
    job_id: str,
    index: int,
    operation: str,
    fallback_name: str,
    filename: str | None = None,
    expected_size: int | None = None,
    chunk_size: int = CHUNK_SIZE,
    started: float | None = None,
    decode_log_frames: bool = False,
    write_path: str = "cache",
) -> DownloadedResult:
    """Stream a result answer to ``destination``; the response is closed in every case.

    :param response: the streamed answer (``stream=True``), status already checked.
    :param destination: a writable binary file object, a file path, or an existing directory. Paths are
        written atomically.
    :param job_id: the job id (for the record and messages).
    :param index: the result's index.
    :param operation: what is being done, for messages.
    :param fallback_name: the file name in a directory when the answer and the listing give none.
    :param filename: the listed file name (used when the answer has no ``Content-Disposition``).
    :param expected_size: the size the job lists for this result; a body of another length is an error
        (``None`` or 0: not checked).
    :param chunk_size: bytes per read.
    :param started: when the request was sent (``time.monotonic()``), for the log line.
    :param decode_log_frames: the result is a log: write it without Docker's log frames (plain text is
        written unchanged). The listed size is checked against the bytes received; ``bytes_written`` and
        ``sha256`` describe what was written.
    :param write_path: ``cache`` or ``direct`` (:data:`WRITE_PATHS`): how a large result goes to a path.
    :raises OceanConnectionError: the stream broke or ended before its ``Content-Length``.
    :raises OceanResultSizeError: the body's length is not the listed size.
    """
    started = time.monotonic() if started is None else started
    name = content_disposition_filename(response.headers.get("Content-Disposition")) or filename
    digest = hashlib.sha256()
    target: Path | None = None
    tmp_name: str | None = None
    frames: _FrameStrippingSink | None = None
    try:
        if not isinstance(destination, str | os.PathLike):
            sink: BinarySink = destination
            if decode_log_frames:
                sink = frames = _FrameStrippingSink(destination, digest)
            written = _copy(response, sink, _digest_of(frames, digest), chunk_size, operation)
            _check_size(written, expected_size, operation, response.url)
            if frames is not None:
                frames.close()
        else:
            target = Path(destination)
            if target.is_dir():
                target = target / safe_filename(name, fallback_name)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".ocean-", suffix=".part", dir=target.parent)
            direct = None
            if write_path == "direct" and not decode_log_frames:
                direct = _direct_target(response, tmp_name)
            if direct is not None:  # a large result: straight to disk, past the page cache
                os.close(fd)
                body, fd = direct
                try:
                    written = copy_body_direct(body, _declared_length(response), fd, digest, operation)
                finally:
                    os.close(fd)
            else:
                with os.fdopen(fd, "wb") as handle:
                    sink = handle
                    if decode_log_frames:
                        sink = frames = _FrameStrippingSink(handle, digest)
                    written = _copy(response, sink, _digest_of(frames, digest), chunk_size, operation)
                    if frames is not None:
                        frames.close()
            _check_size(written, expected_size, operation, response.url)
            os.replace(tmp_name, target)
            tmp_name = None
    finally:
        response.close()
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
    if frames is not None and frames.decoder.framed:
        log.info(
            "Result %s of job %s is a Docker-framed log: %s frames, %s bytes received, %s bytes of text",
            index,
            job_id,
            frames.decoder.frames,
            written,
            frames.written,
        )
        written = frames.written
    log.info(
        "Downloaded result %s of job %s (%s, %s bytes) in %.1f s",
        index,
        job_id,
        name,
        written,
        time.monotonic() - started,
    )
    return DownloadedResult(
        job_id=job_id,
        index=int(index),
        bytes_written=written,
        sha256=digest.hexdigest(),
        filename=name,
        content_type=response.headers.get("Content-Type"),
        path=str(target) if target is not None else None,
    )


class _NoDigest:
    """Stands in for the digest where the sink hashes what it writes."""

    def update(self, data: Any, /) -> None:
        return None


def _digest_of(frames: _FrameStrippingSink | None, digest: Any) -> Any:
    return _NoDigest() if frames is not None else digest


class _FrameStrippingSink:
    """A sink that writes a log without Docker's frames and hashes what it writes.

    :param target: where the text goes.
    :param digest: the hash of the written bytes.
    """

    def __init__(self, target: BinarySink, digest: Any) -> None:
        self.target = target
        self.digest = digest
        self.decoder = LogFrameDecoder()
        self.written = 0

    def write(self, data: bytes | memoryview, /) -> int:
        self._put(self.decoder.feed(data))
        return len(data)

    def close(self) -> None:
        """Write what the decoder still holds (the end of a short plain log)."""
        self._put(self.decoder.close())

    def _put(self, text: bytes) -> None:
        if text:
            self.target.write(text)
            self.digest.update(text)
            self.written += len(text)


def _check_size(written: int, expected: int | None, operation: str, url: str | None) -> None:
    if not expected or written == expected:
        return
    what = "an empty body" if written == 0 else f"{written} bytes"
    raise OceanResultSizeError(
        f"{operation}: got {what}, but the job lists {expected} bytes for this result",
        expected=expected,
        received=written,
        url=(url or "").split("?", 1)[0] or None,
        hint="the server did not send this result (Ocean Node answers an index or owner it does not "
        "serve with an empty 200); check the job's results and the owner address, then download again",
    )


# -- streaming bodies ----------------------------------------------------------------------------------
def _plain_body(response: requests.Response) -> http.client.HTTPResponse | None:
    """The ``http.client`` response under ``requests``/``urllib3``, when the body can be read from it
    directly: no content coding to undo and nothing consumed yet. ``None`` otherwise (then the body is
    read through ``iter_content``)."""
    coding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
    if coding not in ("", "identity"):
        return None
    raw = getattr(response, "raw", None)
    body = getattr(raw, "_fp", None)
    if not isinstance(body, http.client.HTTPResponse):
        return None
    try:
        if raw.tell() != 0:  # type: ignore[union-attr]
            return None
    except (AttributeError, OSError, ValueError):
        return None
    return body


def _declared_length(response: requests.Response) -> int | None:
    if "chunked" in (response.headers.get("Transfer-Encoding") or "").lower():
        return None
    try:
        length = int(response.headers.get("Content-Length") or "")
    except ValueError:
        return None
    return length if length >= 0 else None


def _direct_target(response: requests.Response, path: str) -> tuple[http.client.HTTPResponse, int] | None:
    """``(body, O_DIRECT file descriptor)`` when a result is large enough and the disk allows it."""
    expected = _declared_length(response)
    if expected is None or expected < DIRECT_IO_MIN_BYTES:
        return None
    body = _plain_body(response)
    if body is None:
        return None
    fd = open_direct(path)
    return None if fd is None else (body, fd)


def _copy(
    response: requests.Response, handle: BinarySink, digest: Any, chunk_size: int, operation: str
) -> int:
    body = _plain_body(response)
    if body is not None:
        return _copy_body(body, _declared_length(response), handle, digest, chunk_size, operation)
    written = 0
    try:
        for chunk in response.iter_content(chunk_size=chunk_size):
            if not chunk:
                continue
            handle.write(chunk)
            digest.update(chunk)
            written += len(chunk)
    except requests.RequestException as exc:
        raise stream_broke(operation, written, exc) from None
    return written


#: Hash in a helper thread only while a core is free for it: sampled every this many reads ...
BUSY_SAMPLE_EVERY = 8
#: ... and decided by the majority of the last this many samples.
BUSY_VOTES = 5
_LOADAVG = "/proc/loadavg"


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def no_core_free(cpus: int) -> bool:
    """Whether every usable core but this thread's has a runnable thread right now (the running count of
    ``/proc/loadavg``, this thread excluded); ``False`` where it cannot be read.

    Hashing in a helper thread wins only on a free core: beside a CPU-bound neighbour on 2 cores, a 1 GiB
    download ran at 0.82x curl with the helper thread and 0.89-0.95x hashing inline (benchmarks/README.md).

    :param cpus: the cores this process may run on.
    """
    try:
        with open(_LOADAVG, "rb") as handle:
            running = int(handle.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return False
    return running - 1 >= cpus - 1


def _copy_body(
    body: http.client.HTTPResponse,
    expected: int | None,
    handle: BinarySink,
    digest: Any,
    chunk_size: int,
    operation: str,
) -> int:
    """Stream ``body`` to ``handle`` at socket speed in constant memory.

    Two buffers of ``chunk_size`` (:func:`read_chunk_size`) are filled in turn with ``readinto`` (no bytes
    object per chunk); each is written, and hashed in a helper thread while the next one is received and
    written (SHA-256 runs at about the speed of a local socket, so hashing inline would halve the
    throughput where a core is free; ``hashlib``, ``readinto`` and ``write`` all release the GIL). While
    no core is free (:func:`no_core_free`, sampled as the download goes) the buffers are hashed inline.
    File objects other than plain files and ``BytesIO`` get a copy of each chunk, since they might keep a
    reference to what they are given.
    """
    size = max(int(chunk_size), 64 * 1024)
    buffers = (bytearray(size), bytearray(size))
    reuse_ok = isinstance(handle, io.BufferedWriter | io.BufferedRandom | io.FileIO | io.BytesIO)
    written = 0
    turn = 0
    reads = 0
    cpus = _usable_cpus()
    busy: collections.deque[bool] = collections.deque(maxlen=BUSY_VOTES)
    hasher: ThreadPoolExecutor | None = None
    pending: Future[None] | None = None
    try:
        while True:
            view = memoryview(buffers[turn])
            turn ^= 1
            try:
                count = body.readinto(view)
            except (OSError, http.client.HTTPException) as exc:
                raise stream_broke(operation, written, exc) from None
            if not count:
                break
            chunk = view[:count]
            if pending is not None:
                pending.result()  # the other buffer is hashed: it can be refilled after this one
                pending = None
            if reads % BUSY_SAMPLE_EVERY == 0:  # sampled while the hashing thread is idle
                busy.append(no_core_free(cpus))
            reads += 1
            if written == 0 or sum(busy) * 2 > len(busy):
                digest.update(chunk)  # small files, or no core free: hashing inline costs less
            else:
                if hasher is None:
                    hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ocean-sha256")
                pending = hasher.submit(digest.update, chunk)
            handle.write(chunk if reuse_ok else bytes(chunk))
            written += count
        if pending is not None:
            pending.result()
    finally:
        if hasher is not None:
            hasher.shutdown(wait=True)
    check_length(operation, written, expected)
    return written
