"""Docker's multiplexed log frames (airflow_provider_ocean/wire/log_frames.py) and where they are taken off.

A real Ocean Node v3.1.0 serves ``algorithm.log`` and ``computeStreamableLogs`` as the Docker engine's raw
stream: each chunk of output behind an 8-byte header (stream byte 1 stdout / 2 stderr, three zero bytes,
a big-endian 4-byte length). ``tests/wire/data/docker_logs.bin`` is such a stream captured from a real
Docker engine (how: ``tests/wire/data/README.md``); the other cases build frames the same way.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_ocean.signing import Signer
from airflow_provider_ocean.wire.log_frames import (
    LogFrameDecoder,
    decode_chunks,
    is_frame_header,
    is_log_result,
    split_lines,
)
from tests.wire.support import make, serve
from tests.wire.test_ocean_node import FULL, finished
from tests.wire.test_provider_v4 import JOB_ID, KEY, Reply, status_object

if TYPE_CHECKING:
    from collections.abc import Iterator

DATA = Path(__file__).parent / "data"
STATUS = ("GET", "/api/services/compute")
RESULT = ("GET", "/api/services/computeResult")
LOGS = ("GET", "/api/services/computeStreamableLogs")


def frame(payload: bytes, stream: int = 1) -> bytes:
    """One Docker log frame: stream byte, three zero bytes, big-endian length, payload."""
    return struct.pack(">BxxxI", stream, len(payload)) + payload


def cut_everywhere(data: bytes) -> Iterator[list[bytes]]:
    """``data`` in two pieces at every position, and byte by byte."""
    for at in range(len(data) + 1):
        yield [data[:at], data[at:]]
    yield [data[i : i + 1] for i in range(len(data))]


#: What a node without TTY serves for ``print`` lines of an algorithm: one frame per line written.
PRINTED = ["tick 0", "123456789", "warning: low memory", "", "done ✓"]
FRAMED = (
    frame(b"tick 0\n")
    + frame(b"123456789\n")  # 10 bytes: the length byte is a newline
    + frame(b"warning: low memory\n", stream=2)
    + frame(b"\n")
    + frame("done ✓\n".encode())
)


# -- the decoder -----------------------------------------------------------------------------------------
def test_the_captured_real_docker_log_gives_exactly_the_printed_lines() -> None:
    captured = (DATA / "docker_logs.bin").read_bytes()
    expected = json.loads((DATA / "docker_logs.json").read_text())
    assert is_frame_header(captured)  # really framed: the capture starts with a header
    assert b"\x01\x00\x00\x00" in captured
    assert b"\x02\x00\x00\x00" in captured
    for pieces in cut_everywhere(captured) if len(captured) < 400 else [[captured]]:
        assert list(split_lines(pieces)) == expected["lines"]
    for size in (1, 3, 7, 8, 9, 64):
        pieces = [captured[i : i + size] for i in range(0, len(captured), size)]
        assert list(split_lines(pieces)) == expected["lines"]


def test_a_captured_tty_log_is_plain_text_and_passes_untouched() -> None:
    captured = (DATA / "docker_logs_tty.bin").read_bytes()
    assert not is_frame_header(captured)
    for pieces in cut_everywhere(captured):
        assert b"".join(decode_chunks(pieces)) == captured
    assert list(split_lines([captured])) == json.loads((DATA / "docker_logs.json").read_text())["tty_lines"]


def test_frames_split_anywhere_give_the_printed_lines() -> None:
    for pieces in cut_everywhere(FRAMED):
        assert list(split_lines(pieces)) == PRINTED


def test_a_nine_byte_line_is_no_junk_line() -> None:
    """The naive line split shows ``'\\x01\\x00\\x00\\x00\\x00\\x00\\x00'`` before a 9-character line."""
    naive = FRAMED.split(b"\n")
    assert b"\x01\x00\x00\x00\x00\x00\x00" in naive  # what users saw
    lines = list(split_lines([FRAMED]))
    assert "123456789" in lines
    assert not any("\x00" in line for line in lines)


def test_stderr_frames_are_decoded_and_counted() -> None:
    decoder = LogFrameDecoder()
    out = decoder.feed(frame(b"out\n") + frame(b"err\n", stream=2)) + decoder.close()
    assert (out, decoder.framed, decoder.frames, decoder.stderr_bytes) == (b"out\nerr\n", True, 2, 4)


def test_a_long_frame_across_many_chunks() -> None:
    payload = bytes(range(32, 127)) * 1000 + b"\n"
    data = frame(payload) + frame(b"end\n")
    pieces = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    assert b"".join(decode_chunks(pieces)) == payload + b"end\n"


@pytest.mark.parametrize(
    "text",
    [
        b"plain line\nanother\n",
        b"short",  # under one header's length
        b"",
        b"\x1b[32mcolour\x1b[0m\r\n",  # a TTY's output: \r\n line ends, escapes kept
        b"\x01\x02\x03\x04\x05\x06\x07\x08 binary-ish but not a header",
    ],
)
def test_plain_text_passes_untouched(text: bytes) -> None:
    for pieces in cut_everywhere(text):
        assert b"".join(decode_chunks(pieces)) == text


def test_a_stream_that_stops_being_framed_is_passed_on_raw() -> None:
    data = frame(b"framed\n") + b"then plain text\n"
    assert b"".join(decode_chunks([data])) == b"framed\nthen plain text\n"


def test_a_log_cut_inside_a_header_keeps_every_printed_byte() -> None:
    data = frame(b"whole\n") + frame(b"cut payl")[:-3]  # the second frame's payload is cut short
    assert b"".join(decode_chunks([data])) == b"whole\ncut p"
    assert b"".join(decode_chunks([frame(b"whole\n") + b"\x01\x00\x00"])) == b"whole\n"


@pytest.mark.parametrize(
    ("kind", "name", "expected"),
    [
        ("algorithmLog", "algorithm.log", True),
        ("configurationLog", "configuration.log", True),
        ("configrationLog", "configure.log", True),
        ("imageLog", "image.log", True),
        ("publishLog", "publish.log", True),
        ("output", "run.log", False),  # a listed output is never touched, whatever its name
        ("output", "outputs.tar", False),
        (None, "algorithm.log", True),
        (None, "outputs.tar", False),
        (None, None, False),
    ],
)
def test_which_results_are_logs(kind: str | None, name: str | None, expected: bool) -> None:
    assert is_log_result(kind, name) is expected


# -- the clients: downloads and live logs ----------------------------------------------------------------
@pytest.fixture(params=["provider_v4", "ocean_node"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def _job_id(backend: str) -> str:
    return JOB_ID if backend == "provider_v4" else FULL


def _listed(backend: str, results: list[dict[str, Any]]) -> Reply:
    if backend == "provider_v4":
        plain = [{k: v for k, v in r.items() if k != "index"} for r in results]
        return Reply(body=[status_object(status=70, dateFinished="1700000093.5", results=plain)])
    return Reply(body=[finished(results=results)])


@pytest.mark.parametrize("into", ["file object", "path"])
def test_a_framed_log_result_is_written_as_text_and_raw_on_request(
    backend: str, tmp_path: Path, into: str
) -> None:
    server = serve(backend)
    try:
        server.routes[STATUS] = _listed(
            backend,
            [
                {"filename": "algorithm.log", "filesize": len(FRAMED), "type": "algorithmLog", "index": 0},
                {"filename": "outputs.tar", "filesize": len(FRAMED), "type": "output", "index": 1},
            ],
        )
        server.routes[RESULT] = Reply(raw=FRAMED, headers={"Content-Type": "text/plain"})
        signer = Signer(KEY)
        client = make(backend, server.url)
        client.list_results(signer.address, _job_id(backend))
        text = ("\n".join(PRINTED) + "\n").encode()

        def fetch(index: int, **kwargs: Any) -> tuple[Any, bytes]:
            if into == "path":
                target = tmp_path / f"r{index}-{len(list(tmp_path.iterdir()))}"
                got = client.download_result(signer, _job_id(backend), index, target, **kwargs)
                return got, target.read_bytes()
            sink = io.BytesIO()
            got = client.download_result(signer, _job_id(backend), index, sink, **kwargs)
            return got, sink.getvalue()

        got, body = fetch(0)
        assert body == text
        assert (got.bytes_written, got.sha256) == (len(text), hashlib.sha256(text).hexdigest())
        # the listed size is the served size: it is checked against the bytes received, not written
        raw, body = fetch(0, raw_logs=True)
        assert (body, raw.bytes_written) == (FRAMED, len(FRAMED))
        # an output that happens to start like a frame is never decoded
        out, body = fetch(1)
        assert (body, out.sha256) == (FRAMED, hashlib.sha256(FRAMED).hexdigest())
    finally:
        server.close()


def test_live_logs_of_a_framed_node_stream_give_the_printed_lines() -> None:
    """``computeStreamableLogs`` arriving in pieces cut inside headers and inside a 9-byte line."""
    cuts = [3, 9, 15, 20, 31, len(FRAMED) - 2]
    pieces = [FRAMED[a:b] for a, b in zip([0, *cuts], [*cuts, len(FRAMED)], strict=True)]
    server = serve("ocean_node")
    try:
        server.routes[LOGS] = Reply(chunks=lambda: iter(pieces), headers={"Content-Type": "text/plain"})
        client = make("ocean_node", server.url)
        server.routes[("GET", "/api/services/nonce")] = Reply(body={"nonce": 0})
        assert list(client.stream_logs(Signer(KEY), FULL)) == PRINTED
        server.routes[LOGS] = Reply(chunks=lambda: iter([b"plain\n", b"te", b"xt\r\n"]))
        assert list(client.stream_logs(Signer(KEY), FULL)) == ["plain", "text"]
    finally:
        server.close()


def test_a_live_log_whose_answer_waits_does_not_hold_the_wallet_lock() -> None:
    """A node sends the live log's headers with the first output: while the algorithm prints nothing, the
    request waits. The wallet's nonce lock must not wait with it: another signed request (a stop, from
    another task of the same wallet on this host) goes through meanwhile."""
    import threading
    import time

    from airflow_provider_ocean.signing import NonceAllocator

    printed = threading.Event()
    server = serve("ocean_node")
    try:

        def first_output(_request: Any) -> Reply:
            printed.wait(timeout=30)
            return Reply(raw=frame(b"late line\n"), headers={"Content-Type": "text/plain"})

        server.routes[LOGS] = first_output
        server.routes[("PUT", "/api/services/compute")] = Reply(body=[finished()])
        nonces = NonceAllocator()  # one host's wallet lock, shared by both tasks
        follower = make("ocean_node", server.url, nonces=nonces)
        stopper = make("ocean_node", server.url, nonces=nonces)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(follower.stream_logs(Signer(KEY), FULL)))
        reader.start()
        deadline = time.monotonic() + 10
        while not server.calls(*LOGS) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.calls(*LOGS)  # the live log request is out, its answer not yet
        done = threading.Event()
        worker = threading.Thread(target=lambda: (stopper.stop_job(Signer(KEY), FULL), done.set()))
        worker.start()
        assert done.wait(timeout=5), "the stop waited for the live log's answer"
        printed.set()
        reader.join(timeout=10)
        worker.join(timeout=10)
        assert lines == ["late line"]
        nonces_sent = [int(r.query["nonce"]) for r in server.requests if "nonce" in r.query]
        assert len(set(nonces_sent)) == len(nonces_sent) == 2  # each signed with its own nonce
    finally:
        printed.set()
        server.close()
