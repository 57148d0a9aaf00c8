"""Run an algorithm and keep its output as the Docker engine keeps a container's log without a TTY.

The sandbox's Ocean Node personality starts the algorithm through this script (run by path with the
sandbox's Python, stdlib only, so it starts fast)::

    python docker_logs.py LOG_FILE LAUNCH_FAILED_MARKER -- ARGV...

Both of the algorithm's streams are read as they are written and each line (a partial line at the end,
or every 16 KiB of a longer one) is appended to ``LOG_FILE`` as one multiplexed frame, as ``docker logs``
serves it: stream byte (1 stdout, 2 stderr), three zero bytes, the payload length as 4 big-endian bytes,
the payload. The script exits with the algorithm's exit code (128 + N when a signal N ended it, as Docker
reports). When the algorithm cannot be started at all, the error text goes into the log as plain text (as
a real node writes it) and ``LAUNCH_FAILED_MARKER`` is created.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading

#: Docker's log driver cuts longer lines into pieces of this size.
MAX_FRAME = 16 * 1024


def frame(stream: int, payload: bytes) -> bytes:
    """One multiplexed log frame.

    :param stream: 1 stdout, 2 stderr.
    :param payload: the bytes written.
    """
    return struct.pack(">BxxxI", stream, len(payload)) + payload


class FramedLog:
    """An append-only log file that takes whole frames from several threads.

    :param path: the log file.
    """

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def write(self, stream: int, payload: bytes) -> None:
        data = frame(stream, payload)
        with self._lock:
            while data:
                data = data[os.write(self._fd, data) :]

    def close(self) -> None:
        os.close(self._fd)


def pump(pipe: int, stream: int, out: FramedLog) -> None:
    """Copy one stream into the log, a frame per line.

    :param pipe: the read end of the algorithm's stdout or stderr.
    :param stream: its stream byte.
    :param out: the log.
    """
    pending = b""
    while True:
        chunk = os.read(pipe, 65536)
        if not chunk:
            break
        pending += chunk
        while True:
            cut = pending.find(b"\n")
            if cut < 0 and len(pending) < MAX_FRAME:
                break
            end = cut + 1 if 0 <= cut < MAX_FRAME else MAX_FRAME
            out.write(stream, pending[:end])
            pending = pending[end:]
    if pending:
        out.write(stream, pending)
    os.close(pipe)


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: docker_logs.py LOG_FILE LAUNCH_FAILED_MARKER -- ARGV...", file=sys.stderr)
        return 2
    log_path, marker, command = argv[0], argv[1], argv[3:]
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out_write, stderr=err_write, close_fds=True
        )
    except OSError as exc:
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(str(exc))
        open(marker, "w").close()  # noqa: SIM115 - an empty marker file
        return 127
    finally:
        os.close(out_write)
        os.close(err_write)
    log = FramedLog(log_path)
    pumps = [
        threading.Thread(target=pump, args=(out_read, 1, log), daemon=True),
        threading.Thread(target=pump, args=(err_read, 2, log), daemon=True),
    ]
    for thread in pumps:
        thread.start()
    code = process.wait()
    for thread in pumps:
        thread.join(timeout=5)
    log.close()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
