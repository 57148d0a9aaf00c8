"""The one download path and the one safe file name (airflow_provider_ocean/wire/download.py).

Downloads run against the recording server on 127.0.0.1, once per client: a body whose length differs
from the size the job lists for the result is an error that leaves nothing at the destination (Ocean Node
answers 200 with an empty body for an index it does not serve), and names given by the server are made
flat and harmless the same way for both clients and for OceanComputeResultsOperator.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ocean.exceptions import OceanConnectionError, OceanResultSizeError, OceanValidationError
from airflow_provider_ocean.signing import Signer
from airflow_provider_ocean.wire.download import MAX_NAME_LENGTH, ListedSizes, safe_filename
from tests.wire.support import BACKENDS, make, serve
from tests.wire.test_ocean_node import FULL, finished
from tests.wire.test_provider_v4 import JOB_ID, KEY, RecordingServer, Reply, status_object

STATUS = ("GET", "/api/services/compute")
RESULT = ("GET", "/api/services/computeResult")
LISTED = 2048


@pytest.fixture
def signer() -> Signer:
    return Signer(KEY)


def job_id(backend: str) -> str:
    return JOB_ID if backend == "provider_v4" else FULL


def listed_job(backend: str, name: str = "outputs.tar", size: int = LISTED) -> Reply:
    """A finished job whose only result (index 0) is ``name`` with ``size`` bytes."""
    results: list[dict[str, Any]] = [{"filename": name, "filesize": size, "type": "output"}]
    if backend == "provider_v4":
        return Reply(body=[status_object(status=70, dateFinished="1700000093.5", results=results)])
    return Reply(body=[finished(results=[{**results[0], "index": 0}])])


def list_results(backend: str, client: Any, signer: Signer) -> list[Any]:
    return client.list_results(signer.address, job_id(backend))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def server(backend: str) -> Any:
    srv = serve(backend)
    yield srv
    srv.close()


# -- the listed size -------------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [b"", b"x" * 100], ids=["empty", "short"])
@pytest.mark.parametrize("into", ["file", "directory"])
def test_a_body_unlike_the_listed_size_raises_and_leaves_nothing(
    backend: str, server: RecordingServer, signer: Signer, tmp_path: Path, body: bytes, into: str
) -> None:
    server.routes[STATUS] = listed_job(backend)
    server.routes[RESULT] = Reply(raw=body, headers={"Content-Type": "application/octet-stream"})
    client = make(backend, server.url)
    assert [r.filesize for r in list_results(backend, client, signer)] == [LISTED]
    destination = tmp_path / "out.tar" if into == "file" else tmp_path
    with pytest.raises(OceanConnectionError, match=f"lists {LISTED} bytes") as caught:
        client.download_result(signer, job_id(backend), 0, destination)
    assert isinstance(caught.value, OceanResultSizeError)
    assert (caught.value.expected, caught.value.received) == (LISTED, len(body))
    assert list(tmp_path.iterdir()) == []


def test_the_listed_size_can_be_given(backend: str, server: RecordingServer, signer: Signer) -> None:
    server.routes[RESULT] = Reply(raw=b"", headers={"Content-Type": "application/octet-stream"})
    client = make(backend, server.url)
    with pytest.raises(OceanResultSizeError, match="got an empty body"):
        client.download_result(signer, job_id(backend), 0, io.BytesIO(), expected_size=10)


def test_a_body_of_the_listed_size_is_written(
    backend: str, server: RecordingServer, signer: Signer, tmp_path: Path
) -> None:
    server.routes[STATUS] = listed_job(backend, size=5)
    server.routes[RESULT] = Reply(raw=b"12345", headers={"Content-Type": "application/octet-stream"})
    client = make(backend, server.url)
    list_results(backend, client, signer)
    got = client.download_result(signer, job_id(backend), 0, tmp_path / "r")
    assert (got.bytes_written, (tmp_path / "r").read_bytes()) == (5, b"12345")


def test_an_unknown_or_zero_size_is_not_checked(
    backend: str, server: RecordingServer, signer: Signer, tmp_path: Path
) -> None:
    server.routes[STATUS] = listed_job(backend, size=0)
    server.routes[RESULT] = Reply(raw=b"abc", headers={"Content-Type": "application/octet-stream"})
    client = make(backend, server.url)
    assert client.download_result(signer, job_id(backend), 0, tmp_path / "a").bytes_written == 3
    list_results(backend, client, signer)
    assert client.download_result(signer, job_id(backend), 0, tmp_path / "b").bytes_written == 3


def test_listed_sizes_keep_the_latest_jobs() -> None:
    from airflow_provider_ocean.models import ResultFile

    sizes = ListedSizes(max_jobs=2)
    for name in ("a", "b", "c"):
        sizes.remember(name, [ResultFile(index=0, filename="x", filesize=len(name) + 1)])
    sizes.remember("c", [])  # an empty listing keeps what was known
    assert (sizes.get("a", 0), sizes.get("b", 0), sizes.get("c", 0), sizes.get("c", 1)) == (None, 2, 2, None)


def test_large_results_go_through_the_page_cache_by_default(
    backend: str, server: RecordingServer, signer: Signer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_ocean.wire import download

    opened: list[str] = []
    monkeypatch.setattr(download, "DIRECT_IO_MIN_BYTES", 1024 * 1024)
    monkeypatch.setattr(download, "open_direct", lambda path: opened.append(path))
    body = bytes(range(256)) * 8192 + b"tail"
    server.routes[STATUS] = listed_job(backend, size=len(body))
    server.routes[RESULT] = Reply(raw=body, headers={"Content-Type": "application/octet-stream"})
    client = make(backend, server.url)
    assert client.write_path == "cache"
    list_results(backend, client, signer)
    got = client.download_result(signer, job_id(backend), 0, tmp_path / "big.tar")
    assert opened == []
    assert got.sha256 == hashlib.sha256((tmp_path / "big.tar").read_bytes()).hexdigest()
    assert got.sha256 == hashlib.sha256(body).hexdigest()


def test_an_unknown_write_path_is_refused(backend: str) -> None:
    with pytest.raises(OceanValidationError, match="write_path"):
        make(backend, "http://127.0.0.1:9", write_path="tmpfs")


def test_large_results_are_written_with_o_direct_on_both_clients(
    backend: str, server: RecordingServer, signer: Signer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_ocean.wire import direct_io, download

    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    fd = direct_io.open_direct(str(probe))
    probe.unlink()
    if fd is None:
        pytest.skip("no O_DIRECT for the temporary directory")
    os.close(fd)
    opened: list[str] = []
    monkeypatch.setattr(download, "DIRECT_IO_MIN_BYTES", 1024 * 1024)
    monkeypatch.setattr(
        download, "open_direct", lambda path: opened.append(path) or direct_io.open_direct(path)
    )
    body = bytes(range(256)) * 8192 + b"tail"  # 2 MiB and a partial block
    server.routes[STATUS] = listed_job(backend, size=len(body))
    server.routes[RESULT] = Reply(raw=body, headers={"Content-Type": "application/octet-stream"})
    client = make(backend, server.url, write_path="direct")
    list_results(backend, client, signer)
    got = client.download_result(signer, job_id(backend), 0, tmp_path / "big.tar")
    assert len(opened) == 1
    assert (
        got.sha256
        == hashlib.sha256(body).hexdigest()
        == hashlib.sha256((tmp_path / "big.tar").read_bytes()).hexdigest()
    )
    assert [p.name for p in tmp_path.iterdir()] == ["big.tar"]


# -- file names ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../../etc/cron.d/job", "job"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("/", "fb"),
        ("", "fb"),
        (None, "fb"),
        (".bashrc", "bashrc"),
        ("..", "fb"),
        ("out put (1).csv", "out_put_1_.csv"),
        ("naïve.txt", "na_ve.txt"),
        ("a\r\nb.log", "a_b.log"),
        ("-rf", "-rf"),
        ("x" * 300 + ".tar", "x" * MAX_NAME_LENGTH),
    ],
)
def test_safe_filename(name: str | None, expected: str) -> None:
    assert safe_filename(name, "fb") == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("attachment;filename=../../.profile", "profile"),
        ('attachment; filename="my results?.csv"', "my_results_.csv"),
        ("attachment; filename=..", "fallback"),
    ],
)
def test_a_directory_download_uses_the_safe_name_on_both_clients(
    backend: str, server: RecordingServer, signer: Signer, tmp_path: Path, header: str, expected: str
) -> None:
    server.routes[RESULT] = Reply(raw=b"x", headers={"Content-Disposition": header})
    client = make(backend, server.url)
    got = client.download_result(signer, job_id(backend), 3, tmp_path)
    fallback = f"{JOB_ID}-3" if backend == "provider_v4" else f"{FULL.split('-', 1)[1]}-3"
    name = fallback if expected == "fallback" else expected
    assert got.path == str(tmp_path / name)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_the_node_listed_name_is_made_safe(signer: Signer, tmp_path: Path) -> None:
    """The node sends no Content-Disposition: the listed name is used, made safe the same way."""
    server = serve("ocean_node")
    server.routes[RESULT] = Reply(raw=b"x", headers={"Content-Type": "application/octet-stream"})
    try:
        got = make("ocean_node", server.url).download_result(signer, FULL, 0, tmp_path, filename=".out tar")
    finally:
        server.close()
    assert got.path == str(tmp_path / "out_tar")


# -- read buffer -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("caches", "expected"),
    [
        ({"index0": ("1", "32K"), "index1": ("1", "32K"), "index2": ("2", "512K")}, 256 * 1024),
        ({"index0": ("1", "48K"), "index2": ("2", "2048K"), "index3": ("3", "32M")}, 1024 * 1024),
        ({"index0": ("2", "4M")}, 1024 * 1024),
        ({"index0": ("2", "128K")}, 128 * 1024),
        ({"index0": ("2", "1M")}, 512 * 1024),
        ({"index0": ("1", "32K"), "index1": ("3", "8M")}, 256 * 1024),  # no L2 listed
        ({"index0": ("2", "a lot")}, 256 * 1024),
        ({}, 256 * 1024),  # no sysfs (macOS, a container without /sys)
    ],
)
def test_the_read_buffer_is_half_of_one_cores_l2_cache_within_bounds(
    caches: dict[str, tuple[str, str]], expected: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_ocean.wire import download

    for index, (level, size) in caches.items():
        (tmp_path / index).mkdir()
        (tmp_path / index / "level").write_text(level + "\n")
        (tmp_path / index / "size").write_text(size + "\n")
    monkeypatch.setattr(download, "_L2_SIZE_FILE", str(tmp_path / "index{}" / "size"))
    assert download.read_chunk_size() == expected


# -- hashing beside the download -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("loadavg", "cpus", "expected"),
    [
        ("0.50 0.40 0.30 1/120 999\n", 2, False),  # only this thread runs: the other core is free
        ("1.50 1.40 1.30 2/120 999\n", 2, True),  # one neighbour on a 2-core machine
        ("1.50 1.40 1.30 2/120 999\n", 4, False),
        ("3.10 2.40 2.30 4/120 999\n", 4, True),
        ("garbage\n", 2, False),
    ],
)
def test_no_core_free_reads_the_running_count(
    loadavg: str, cpus: int, expected: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_ocean.wire import download

    (tmp_path / "loadavg").write_text(loadavg)
    monkeypatch.setattr(download, "_LOADAVG", str(tmp_path / "loadavg"))
    assert download.no_core_free(cpus) is expected
    monkeypatch.setattr(download, "_LOADAVG", str(tmp_path / "missing"))
    assert download.no_core_free(cpus) is False


@pytest.mark.parametrize("busy", [False, True])
def test_the_hash_is_the_same_inline_and_in_a_helper_thread(
    busy: bool,
    backend: str,
    server: RecordingServer,
    signer: Signer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A busy machine hashes inline (no helper thread started); a free core gets the helper thread."""
    from airflow_provider_ocean.wire import download

    threads: list[int] = []
    real_pool = download.ThreadPoolExecutor

    def pool(*args: Any, **kwargs: Any) -> Any:
        threads.append(1)
        return real_pool(*args, **kwargs)

    monkeypatch.setattr(download, "ThreadPoolExecutor", pool)
    monkeypatch.setattr(download, "no_core_free", lambda cpus: busy)
    body = os.urandom(3 * 1024 * 1024 + 17)
    server.routes[STATUS] = listed_job(backend, size=len(body))
    server.routes[RESULT] = Reply(raw=body, headers={"Content-Type": "application/octet-stream"})
    client = make(backend, server.url)
    list_results(backend, client, signer)
    got = client.download_result(signer, job_id(backend), 0, tmp_path / "out.bin", chunk_size=128 * 1024)
    assert got.sha256 == hashlib.sha256(body).hexdigest()
    assert got.bytes_written == len(body)
    assert threads == ([] if busy else [1])
