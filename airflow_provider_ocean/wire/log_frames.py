"""Docker's multiplexed log frames, taken off a job's log as it is read.

An Ocean Node whose Docker engine runs the algorithm's container without a TTY (v3.1.0 does) hands the
engine's raw log stream on: ``algorithm.log`` and ``computeStreamableLogs`` are a sequence of frames, each
an 8-byte header (the stream: 0 stdin, 1 stdout, 2 stderr; three zero bytes; the payload length as a
4-byte big-endian number) and then that many bytes of output. A node whose containers have a TTY, a
Provider v4 and the node's own logs (``configuration.log``, ``image.log``) serve plain text.

:class:`LogFrameDecoder` tells the two apart from the first 8 bytes and, for framed logs, yields only the
payloads: across chunk boundaries (a header may be split anywhere), for stdout and stderr frames alike.
Plain text passes untouched. A framed stream that stops making sense (a header with a stream byte above 2
or non-zero padding) is passed on raw from there, so no byte of output is ever lost to a wrong guess.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

log = logging.getLogger(__name__)

#: Header length of one frame.
HEADER_BYTES = 8
#: The stream byte of stdin (written on stdout), stdout and stderr frames.
STREAMS = (0, 1, 2)
#: Result types whose files are logs (decoded by default when downloaded).
LOG_RESULT_TYPES = frozenset(
    {
        "algorithmLog",
        "configurationLog",
        "configrationLog",  # sic, Provider v4
        "filteringLog",
        "publishLog",
        "imageLog",
    }
)

_UNDECIDED, _FRAMED, _PLAIN = "undecided", "framed", "plain"


def is_frame_header(header: bytes | bytearray | memoryview) -> bool:
    """Whether 8 bytes are a Docker log frame header (stream 0-2, three zero bytes, any length).

    :param header: at least 8 bytes; only the first 8 are read.
    """
    return len(header) >= HEADER_BYTES and header[0] in STREAMS and not any(header[1:4])


def is_log_result(result_type: str | None, filename: str | None = None) -> bool:
    """Whether a result is a log: by its listed ``type``, else (type unknown) by a ``.log`` file name.

    :param result_type: the result's ``type`` from the job's results list, if known.
    :param filename: the result's file name, if known.
    """
    if result_type:
        return result_type in LOG_RESULT_TYPES or result_type.endswith("Log")
    return bool(filename) and str(filename).lower().endswith(".log")


class LogFrameDecoder:
    """Incremental decoder: :meth:`feed` chunks as they arrive, then :meth:`close`.

    ``feed`` and ``close`` return the log's text bytes (frame payloads, or the plain text unchanged).
    """

    def __init__(self) -> None:
        self._mode = _UNDECIDED
        self._pending = bytearray()  # undecided bytes, or a partial header
        self._left = 0  # payload bytes still to come of the current frame
        self.frames = 0
        self.stderr_bytes = 0
        self._stream = 1

    @property
    def framed(self) -> bool:
        """Whether the log was recognised as Docker frames (so far)."""
        return self._mode == _FRAMED

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        """Take the next chunk; return the text bytes it completes.

        :param data: the next bytes of the log, as received.
        """
        if not data:
            return b""
        if self._mode == _PLAIN:
            return bytes(data)
        self._pending += data
        if self._mode == _UNDECIDED:
            if len(self._pending) < HEADER_BYTES:
                return b""
            self._mode = _FRAMED if is_frame_header(self._pending) else _PLAIN
            if self._mode == _PLAIN:
                return self._flush_plain()
        return self._decode()

    def close(self) -> bytes:
        """The end of the log: return what is still held (a short plain log; nothing of a cut header)."""
        if self._mode == _UNDECIDED or self._mode == _PLAIN:
            self._mode = _PLAIN
            return self._flush_plain()
        if self._pending:
            log.debug("log ends inside a frame header (%s bytes dropped)", len(self._pending))
            self._pending.clear()
        return b""

    def _flush_plain(self) -> bytes:
        out = bytes(self._pending)
        self._pending.clear()
        return out

    def _decode(self) -> bytes:
        out = bytearray()
        buffer = self._pending
        position = 0
        size = len(buffer)
        while position < size:
            if self._left:
                take = min(self._left, size - position)
                out += buffer[position : position + take]
                if self._stream == 2:
                    self.stderr_bytes += take
                self._left -= take
                position += take
                continue
            if size - position < HEADER_BYTES:
                break  # a header split across chunks: wait for the rest
            header = buffer[position : position + HEADER_BYTES]
            if not is_frame_header(header):
                log.debug("log frame header expected at a frame boundary; passing the rest on raw")
                self._mode = _PLAIN
                out += buffer[position:]
                position = size
                break
            self._stream = header[0]
            self._left = int.from_bytes(header[4:8], "big")
            self.frames += 1
            position += HEADER_BYTES
        del buffer[:position]
        return bytes(out)


def decode_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decode a whole log given as chunks (plain logs pass unchanged).

    :param chunks: the log's bytes, in order, cut anywhere.
    """
    decoder = LogFrameDecoder()
    for chunk in chunks:
        out = decoder.feed(chunk)
        if out:
            yield out
    rest = decoder.close()
    if rest:
        yield rest


def split_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Decode a log's chunks and yield its lines (without line ends; UTF-8, bad bytes replaced).

    :param chunks: the log's bytes as they arrive (framed or plain).
    """
    pending = b""
    for text in decode_chunks(chunks):
        pending += text
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", errors="replace").rstrip("\r")
    if pending:
        yield pending.decode("utf-8", errors="replace").rstrip("\r")
