"""OceanComputeResultsOperator in real Airflow (``dag.test()``) on jobs that really ran on the sandbox.

The sandbox tests run against both personalities (``[provider_v4]``, ``[ocean_node]``): a Provider v4 job
publishes each output file on its own, an Ocean Node job one ``outputs.tar`` (plus its logs).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import DAG

from airflow_provider_ocean.hooks.ocean import OceanComputeHook
from airflow_provider_ocean.links import job_status_url
from airflow_provider_ocean.models import JobStatus
from airflow_provider_ocean.operators.results import OceanComputeResultsOperator
from airflow_provider_ocean.wire.download import safe_filename
from airflow_provider_ocean.wire.log_frames import decode_chunks, is_frame_header
from tests.operators.support import (
    failure,
    make_hook,
    proxy_server,
    raw_algorithm,
    record_failure,
    run_dag,
    sleeping_algorithm,
    stop_if_running,
    task_states,
    unique_dag_id,
    wait_terminal,
    xcom,
)
from tests.personalities import Personality

# -- pure: file name sanitising ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("summary.csv", "summary.csv"),
        ("../../etc/passwd", "passwd"),
        ("/abs/x", "x"),
        ("a\\b", "b"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("", "fallback"),
        (None, "fallback"),
        (".", "fallback"),
        ("..", "fallback"),
        ("dir/", "fallback"),
        ("   ", "fallback"),
        (".hidden", "hidden"),
        ("...", "fallback"),
        ("a b?c*.csv", "a_b_c_.csv"),
        ("x\x00y\n.txt", "x_y_.txt"),
        ("résumé.txt", "r_sum_.txt"),
    ],
)
def test_safe_filename(name: str | None, expected: str) -> None:
    assert safe_filename(name, "fallback") == expected


def test_safe_filename_is_always_flat_and_bounded() -> None:
    nasty = [
        "../" * 50 + "x" * 500,
        "..",
        "/",
        "\\",
        "~/.ssh/id_rsa",
        "C:\\x\\..\\y",
        "a/../../b",
        "\u202e.exe",
    ]
    for name in nasty:
        safe = safe_filename(name, "fb")
        assert safe
        assert "/" not in safe
        assert "\\" not in safe
        assert not safe.startswith(".")
        assert len(safe) <= 200
        assert safe not in (".", "..")


# -- against the sandbox -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_jobs() -> dict[str, JobStatus]:
    """One finished job per personality, started on first use and shared by the module's tests."""
    return {}


@pytest.fixture
def finished_job(any_sandbox: Personality, any_conn: str, finished_jobs: dict[str, JobStatus]) -> JobStatus:
    """A finished job (dataset + published algorithm) whose results the tests below collect."""
    if any_sandbox.name not in finished_jobs:
        hook = make_hook(any_conn)
        job = wait_terminal(hook, any_sandbox.start_registered(hook))
        assert job.is_succeeded
        finished_jobs[any_sandbox.name] = job
    return finished_jobs[any_sandbox.name]


@pytest.fixture
def hook(any_conn: str) -> OceanComputeHook:
    return make_hook(any_conn)


def results_dag(dag_id: str, job_id: str, destination: str, **kwargs: Any) -> DAG:
    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        OceanComputeResultsOperator(
            task_id="collect",
            job_id=job_id,
            destination=destination,
            on_failure_callback=record_failure,
            **kwargs,
        )
    return dag


def download_to_memory(hook: OceanComputeHook, job_id: str, index: int) -> bytes:
    sink = io.BytesIO()
    hook.download_result(job_id, index, sink)
    return sink.getvalue()


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def output_name(box: Personality) -> str:
    """The file an ``output`` result is written to: one file of the algorithm's (v4) or the archive (node)."""
    return "outputs.tar" if box.is_node else "summary.csv"


def summary_csv(box: Personality, folder: Path) -> str:
    """The algorithm's summary.csv among the written results (node: inside outputs.tar)."""
    if not box.is_node:
        return (folder / "summary.csv").read_text()
    with tarfile.open(folder / "outputs.tar") as archive:
        member = archive.extractfile("outputs/summary.csv")
        assert member is not None
        return member.read().decode()


@pytest.mark.chain
class TestCollect:
    @pytest.mark.parametrize("form", ["path", "file_uri"])
    def test_streams_results_with_a_checked_manifest(
        self,
        hook: OceanComputeHook,
        any_sandbox: Personality,
        airflow_db: str,
        finished_job: JobStatus,
        tmp_path: Path,
        form: str,
    ) -> None:
        folder = tmp_path / "out" / "nested"
        destination = str(folder) if form == "path" else folder.as_uri()
        dag_id = unique_dag_id(f"results_{form}")
        dr = run_dag(results_dag(dag_id, finished_job.job_id, destination))

        assert dr.state == "success", failure(dag_id, "collect")
        manifest = xcom(dr, "collect")
        expected = [r for r in finished_job.results if r.type in ("output", "algorithmLog")]
        assert [(e["name"], e["type"], e["index"]) for e in manifest] == [
            (r.filename, r.type, r.index) for r in expected
        ]
        assert files_in(folder) == sorted(r.filename for r in expected)  # nothing else, no leftovers
        for entry in manifest:
            written = (folder / entry["name"]).read_bytes()
            assert written == download_to_memory(hook, finished_job.job_id, entry["index"])
            assert entry["sha256"] == hashlib.sha256(written).hexdigest()
            assert entry["size"] == len(written) > 0
            assert entry["uri"].endswith("/" + entry["name"])
            assert str(folder) in entry["uri"]
        assert summary_csv(any_sandbox, folder).splitlines()[0] == "station,count,mean,min,max"
        assert xcom(dr, "collect", "ocean_job_status_url") == job_status_url(
            any_sandbox["provider_url"], any_sandbox["consumer"]["address"], finished_job.job_id
        )

    @pytest.mark.parametrize(
        ("result_types", "expected_types"),
        [
            (["output"], {"output"}),
            (["algorithmLog"], {"algorithmLog"}),
            (None, "all"),
        ],
        ids=["output", "algorithmLog", "all"],
    )
    def test_only_the_chosen_result_types_are_written(
        self,
        any_sandbox: Personality,
        airflow_db: str,
        any_conn: str,
        finished_job: JobStatus,
        tmp_path: Path,
        result_types: list[str] | None,
        expected_types: set[str] | str,
    ) -> None:
        wanted = any_sandbox.all_result_types if expected_types == "all" else expected_types
        dag_id = unique_dag_id("results_types")
        dr = run_dag(results_dag(dag_id, finished_job.job_id, str(tmp_path), result_types=result_types))

        assert dr.state == "success", failure(dag_id, "collect")
        manifest = xcom(dr, "collect")
        assert {e["type"] for e in manifest} == wanted
        expected = sorted(r.filename for r in finished_job.results if r.type in wanted)
        assert files_in(tmp_path) == expected == sorted(e["name"] for e in manifest)

    def test_algorithm_log_is_copied_into_the_task_log(
        self,
        airflow_db: str,
        any_conn: str,
        finished_job: JobStatus,
        tmp_path: Path,
        capfd: pytest.CaptureFixture,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        dag_id = unique_dag_id("results_log")
        dr = run_dag(results_dag(dag_id, finished_job.job_id, str(tmp_path), result_types=["output"]))
        captured = capfd.readouterr()
        task_log = captured.out + captured.err + caplog.text

        assert dr.state == "success", failure(dag_id, "collect")
        assert f"Algorithm log of job {finished_job.job_id}" in task_log
        assert "wrote summary for 2 groups" in task_log  # printed by the algorithm itself
        assert "\x00\x00\x00" not in task_log  # no Docker log frame reaches the task log (node)
        assert "algorithm.log" not in files_in(tmp_path)  # logged, but not written (not chosen)

    def test_asset_outlet_gets_an_event_with_the_manifest_summary(
        self, airflow_db: str, any_conn: str, finished_job: JobStatus, tmp_path: Path
    ) -> None:
        from airflow.models.asset import AssetEvent, AssetModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        uri = f"file:///ocean-results/test-{uuid.uuid4().hex[:8]}"
        dag_id = unique_dag_id("results_asset")
        dr = run_dag(results_dag(dag_id, finished_job.job_id, str(tmp_path), asset=uri))

        assert dr.state == "success", failure(dag_id, "collect")
        manifest = xcom(dr, "collect")
        with create_session() as session:
            events = session.scalars(
                select(AssetEvent)
                .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .where(AssetModel.uri == uri)
            ).all()
            extras = [e.extra for e in events]
        assert len(extras) == 1
        assert extras[0]["job_id"] == finished_job.job_id
        assert extras[0]["files"] == [
            {"name": e["name"], "sha256": e["sha256"], "size": e["size"]} for e in manifest
        ]

    # Provider v4 only: there each output file is a result of its own, named by the algorithm. An Ocean Node
    # publishes one outputs.tar; the names inside it are made safe by unpack_outputs (next test and
    # tests/test_outputs_tar.py).
    @pytest.mark.parametrize("personality", ["provider_v4"], indirect=True)
    def test_odd_and_duplicate_result_names_are_made_safe_and_unique(
        self, hook: OceanComputeHook, any_sandbox: Personality, airflow_db: str, tmp_path: Path
    ) -> None:
        code = (
            "import os\n"
            "out = os.environ['OUTPUTS']\n"
            "for name in ['algorithm.log', '.hidden', 'sp ace?.txt']:\n"
            "    open(os.path.join(out, name), 'w').write('content of ' + name)\n"
            "print('wrote three files')\n"
        )
        job = wait_terminal(hook, any_sandbox.start_raw(hook, raw_algorithm(code)))
        assert job.is_succeeded
        dag_id = unique_dag_id("results_names")
        dr = run_dag(results_dag(dag_id, job.job_id, str(tmp_path), result_types=None))

        assert dr.state == "success", failure(dag_id, "collect")
        manifest = xcom(dr, "collect")
        names = [e["name"] for e in manifest]
        assert len(names) == len(set(names)) == len(job.results)
        assert {"hidden", "sp_ace_.txt", "algorithm.log"} <= set(names)
        assert files_in(tmp_path) == sorted(names)
        for entry in manifest:
            assert not entry["name"].startswith(".")
            assert "/" not in entry["name"]
            data = (tmp_path / entry["name"]).read_bytes()
            assert data == download_to_memory(hook, job.job_id, entry["index"])
        # the algorithm's own "algorithm.log" output and the real log both survive
        by_type = {
            (e["type"], (tmp_path / e["name"]).read_bytes().startswith(b"content of")) for e in manifest
        }
        assert ("output", True) in by_type
        assert ("algorithmLog", False) in by_type

    # Ocean Node only: a Provider v4 job has no archive to unpack (unpack_outputs is a no-op there).
    @pytest.mark.parametrize("personality", ["ocean_node"], indirect=True)
    def test_outputs_tar_is_unpacked_next_to_it(
        self, hook: OceanComputeHook, airflow_db: str, finished_job: JobStatus, tmp_path: Path
    ) -> None:
        dag_id = unique_dag_id("results_unpack")
        dr = run_dag(
            results_dag(
                dag_id, finished_job.job_id, str(tmp_path), result_types=["output"], unpack_outputs=True
            )
        )

        assert dr.state == "success", failure(dag_id, "collect")
        manifest = xcom(dr, "collect")
        archive, *unpacked = manifest
        assert (archive["name"], archive["type"]) == ("outputs.tar", "output")
        assert {"summary.csv", "summary.json", "summary.png"} <= {e["name"] for e in unpacked}
        with tarfile.open(tmp_path / "outputs.tar") as tar:
            members = {m.name.removeprefix("outputs/"): m for m in tar.getmembers() if m.isfile()}
            for entry in unpacked:
                assert entry["archive"] == "outputs.tar"
                assert entry["index"] == archive["index"]
                data = (tmp_path / entry["name"]).read_bytes()
                source = tar.extractfile(members[entry["name"]])
                assert source is not None
                assert data == source.read()
                assert entry["sha256"] == hashlib.sha256(data).hexdigest()
                assert entry["size"] == len(data)
        assert json.loads((tmp_path / "summary.json").read_text())["column"] == "temperature_c"

    # Ocean Node only: the node personality serves algorithm.log as Docker's multiplexed frames (v3.1.0).
    @pytest.mark.parametrize("personality", ["ocean_node"], indirect=True)
    def test_node_logs_are_written_without_docker_frames_unless_raw(
        self, hook: OceanComputeHook, airflow_db: str, finished_job: JobStatus, tmp_path: Path
    ) -> None:
        entry = next(r for r in finished_job.results if r.type == "algorithmLog")
        served = download_to_memory_raw(hook, finished_job.job_id, entry.index)
        assert is_frame_header(served)
        assert len(served) == entry.filesize
        printed = b"".join(decode_chunks([served]))
        for raw, folder in ((False, tmp_path / "text"), (True, tmp_path / "raw")):
            dag_id = unique_dag_id("results_raw_logs" if raw else "results_text_logs")
            dr = run_dag(
                results_dag(
                    dag_id, finished_job.job_id, str(folder), result_types=["algorithmLog"], raw_logs=raw
                )
            )
            assert dr.state == "success", failure(dag_id, "collect")
            (written,) = xcom(dr, "collect")
            content = (folder / "algorithm.log").read_bytes()
            assert content == (served if raw else printed)
            assert (written["size"], written["sha256"]) == (len(content), hashlib.sha256(content).hexdigest())
        assert b"wrote summary for 2 groups" in printed
        assert b"\x00" not in printed


def download_to_memory_raw(hook: OceanComputeHook, job_id: str, index: int) -> bytes:
    sink = io.BytesIO()
    hook.download_result(job_id, index, sink, raw_logs=True)
    return sink.getvalue()


@pytest.mark.chain
class TestCollectFailures:
    def test_unfinished_job_fails_clearly(
        self, hook: OceanComputeHook, any_sandbox: Personality, airflow_db: str, tmp_path: Path
    ) -> None:
        job_id = any_sandbox.start_raw(hook, sleeping_algorithm(40))
        try:
            dag_id = unique_dag_id("results_unfinished")
            dr = run_dag(results_dag(dag_id, job_id, str(tmp_path / "out")))
            assert task_states(dr) == {"collect": "failed"}
            message = failure(dag_id, "collect")
            assert "OceanJobError" in message
            assert job_id in message
            assert "has not finished" in message
            assert files_in(tmp_path / "out") == []
        finally:
            stop_if_running(hook, job_id)

    def test_result_above_max_file_size_fails_before_writing(
        self, airflow_db: str, any_conn: str, finished_job: JobStatus, tmp_path: Path
    ) -> None:
        dag_id = unique_dag_id("results_too_big")
        dr = run_dag(results_dag(dag_id, finished_job.job_id, str(tmp_path), max_file_size=10))
        assert task_states(dr) == {"collect": "failed"}
        message = failure(dag_id, "collect")
        assert "max_file_size 10" in message
        first = next(r for r in finished_job.results if r.type in ("output", "algorithmLog"))
        assert first.filename in message
        assert files_in(tmp_path) == []

    def test_understated_size_is_caught_while_streaming_and_leaves_no_partial_file(
        self,
        any_sandbox: Personality,
        airflow_db: str,
        finished_job: JobStatus,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The status says every file has 1 byte: the cap must still hold while the bytes stream in."""

        def understate(jobs: Any) -> Any:
            for job in jobs:
                for result in job.get("results") or []:
                    result["filesize"] = 1
            return jobs

        with proxy_server(any_sandbox["provider_url"]) as proxy:
            proxy.rewrite_status = understate
            monkeypatch.setenv("AIRFLOW_CONN_OCEAN_PROXY", proxy.conn_json(any_sandbox.info))
            dag_id = unique_dag_id("results_cap")
            dr = run_dag(
                results_dag(
                    dag_id, finished_job.job_id, str(tmp_path), ocean_conn_id="ocean_proxy", max_file_size=20
                )
            )
        assert task_states(dr) == {"collect": "failed"}
        message = failure(dag_id, "collect")
        assert "exceeds the cap of 20 bytes" in message
        assert files_in(tmp_path) == []  # the partial file was removed

    def test_broken_stream_leaves_no_partial_file(
        self,
        any_sandbox: Personality,
        airflow_db: str,
        finished_job: JobStatus,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        with proxy_server(any_sandbox["provider_url"]) as proxy:
            if any_sandbox.is_node:
                proxy.truncate_indexes = {next(r.index for r in finished_job.results if r.type == "output")}
            else:
                proxy.truncate_results = {"summary.csv"}
            monkeypatch.setenv("AIRFLOW_CONN_OCEAN_PROXY", proxy.conn_json(any_sandbox.info))
            dag_id = unique_dag_id("results_broken")
            dr = run_dag(
                results_dag(
                    dag_id,
                    finished_job.job_id,
                    str(tmp_path),
                    ocean_conn_id="ocean_proxy",
                    result_types=["output"],
                )
            )
        assert task_states(dr) == {"collect": "failed"}
        assert "stream broke" in failure(dag_id, "collect")
        assert files_in(tmp_path) == []  # neither a truncated output nor a .part file

    def test_relative_destination_is_relative_to_the_working_directory(
        self,
        any_sandbox: Personality,
        airflow_db: str,
        any_conn: str,
        finished_job: JobStatus,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        relative = f"ocean-rel-{uuid.uuid4().hex[:8]}"
        monkeypatch.chdir(tmp_path)
        try:
            dag_id = unique_dag_id("results_relative")
            dr = run_dag(results_dag(dag_id, finished_job.job_id, relative, result_types=["output"]))
            assert dr.state == "success", failure(dag_id, "collect")
            assert (tmp_path / relative / output_name(any_sandbox)).is_file()
            assert not Path("/", relative).exists()  # not under the filesystem root
        finally:
            shutil.rmtree(Path("/", relative), ignore_errors=True)
