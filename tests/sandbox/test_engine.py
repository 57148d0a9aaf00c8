"""Tests of the local C2D engine: real subprocesses, real files, no mocks."""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ocean_sandbox.engine import JobEngine, OperatorError

OWNER = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
DID_A = "did:op:" + "a1" * 32
DID_B = "did:op:" + "b2" * 32
DID_ALGO = "did:op:" + "c3" * 32
DID_BAD = "did:op:" + "dd" * 32
ENV = {"id": "ocean-compute", "maxJobDuration": 30, "maxJobs": 10, "cpuNumber": 1, "ramGB": 1, "diskGB": 1}
CONTAINER = {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11", "checksum": "sha256:" + "0" * 64}
TEXTS = {
    1: "Warming up",
    20: "Configuring volumes",
    30: "Provisioning success",
    31: "Data provisioning failed",
    32: "Algorithm provisioning failed",
    40: "Running algorithm ",
    60: "Publishing results",
    70: "Job finished",
}
STATUS_KEYS = [
    "agreementId",
    "jobId",
    "owner",
    "status",
    "statusText",
    "dateCreated",
    "dateFinished",
    "results",
    "stopreq",
    "removed",
    "algoDID",
    "inputDID",
]


class Source:
    """Input files and algorithm bytes served to the engine, with a record of every call."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.inputs: dict[str, list[bytes]] = {}
        self.algorithms: dict[str, Any] = {}
        self.input_calls: list[dict] = []
        self.algorithm_calls: list[dict] = []

    def fetch_input(self, entry: dict) -> list[Path]:
        self.input_calls.append(entry)
        if entry["id"] not in self.inputs:
            raise RuntimeError(f"download of {entry['id']} failed with HTTP 500")
        folder = self.root / f"download-{len(self.input_calls)}"
        folder.mkdir(parents=True)
        paths = []
        for index, content in enumerate(self.inputs[entry["id"]]):
            path = folder / f"file{index}.csv"
            path.write_bytes(content)
            paths.append(path)
        return paths

    def fetch_algorithm(self, algorithm: dict) -> Any:
        self.algorithm_calls.append(algorithm)
        key = algorithm.get("id") or algorithm.get("url")
        if key not in self.algorithms:
            raise RuntimeError(f"algorithm {key} unavailable")
        return self.algorithms[key]


@pytest.fixture
def source(tmp_path: Path) -> Source:
    return Source(tmp_path / "source")


@pytest.fixture
def make_engine(tmp_path: Path, source: Source) -> Iterator[Callable[..., JobEngine]]:
    engines: list[JobEngine] = []

    def make(start: bool = True, **kwargs: Any) -> JobEngine:
        kwargs.setdefault("tick", 0.1)
        engine = JobEngine(
            kwargs.pop("state_dir", tmp_path / "state"),
            fetch_input=source.fetch_input,
            fetch_algorithm=source.fetch_algorithm,
            **kwargs,
        )
        engines.append(engine)
        if start:
            engine.start()
        return engine

    yield make
    for engine in engines:
        engine.close()


def code(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


def raw_algorithm(rawcode: str, url: str = "") -> dict:
    return {"id": "", "url": url, "rawcode": rawcode, "container": CONTAINER}


def did_algorithm(did: str, custom: Any) -> dict:
    return {
        "id": did,
        "rawcode": "",
        "container": CONTAINER,
        "remote": {
            "serviceEndpoint": "http://provider",
            "txId": "0xalgo",
            "serviceId": "0",
            "userData": None,
        },
        "algouserdata": None,
        "algocustomdata": custom,
    }


def workflow(algorithm: dict, dids: list[str] | None = None, ddo: dict | None = None) -> dict:
    inputs = []
    for index, did in enumerate([DID_A] if dids is None else dids):
        entry: dict[str, Any] = {
            "index": index,
            "id": did,
            "remote": {"txId": f"0xtx{index}", "serviceId": "1"},
        }
        if ddo is not None and index == len(dids or [DID_A]) - 1:
            entry["ddo"] = ddo
        inputs.append(entry)
    stage = {
        "index": 0,
        "input": inputs,
        "compute": {"Instances": 1, "namespace": "ocean-compute", "maxtime": 3600},
        "algorithm": algorithm,
        "output": {"metadataUri": "http://aquarius"},
    }
    return {"stages": [stage], "chainId": 8996}


_agreements = iter(range(1, 10**6))


def start_job(engine: JobEngine, flow: dict, env: dict | None = None, owner: str = OWNER) -> dict:
    return engine.create_job(
        owner=owner,
        agreement_id=f"0x{next(_agreements):064x}",
        workflow=flow,
        environment=env or ENV,
        provider_address="0x00000000000000000000000000000000000000aa",
        chain_id=8996,
    )


def wait_done(
    engine: JobEngine, job_id: str, timeout: float = 15.0, on_poll: Callable[[dict], None] | None = None
) -> tuple[dict, list[int]]:
    """Poll until ``dateFinished`` is set; return the final status object and the statuses seen, in order."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (job,) = engine.list_jobs(OWNER, job_id)
        if not seen or seen[-1] != job["status"]:
            seen.append(job["status"])
        assert job["statusText"] == TEXTS[job["status"]]
        if on_poll is not None:
            on_poll(job)
        if job["dateFinished"] is not None:
            return job, seen
        time.sleep(0.005)
    raise AssertionError(f"job {job_id} not finished in {timeout} s, statuses seen {seen}")


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached in time")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def result_bytes(engine: JobEngine, job: dict, filename: str) -> bytes:
    index = [item["filename"] for item in job["results"]].index(filename)
    path, name = engine.result_path(OWNER, job["jobId"], index)
    assert name == filename
    return path.read_bytes()


# -- the normal path ----------------------------------------------------------------------------------
def test_full_run_statuses_results_and_files(make_engine: Callable[..., JobEngine], source: Source) -> None:
    source.inputs[DID_A] = [b"a,b\n1,2\n"]
    engine = make_engine()
    algorithm = code(
        """
        import os, sys, time
        out = os.environ["OUTPUTS"]
        print("starting")
        time.sleep(0.6)
        with open(os.path.join(out, "b.txt"), "w") as f:
            f.write("bee\\n")
        with open(os.path.join(out, "a.txt"), "wb") as f:
            f.write(b"\\x00\\x01alpha")
        os.makedirs(os.path.join(out, "sub"))
        with open(os.path.join(out, "sub", "c.txt"), "w") as f:
            f.write("ignored")
        with open(os.path.join(os.environ["LOGS"], "extra.log"), "w") as f:
            f.write("x" * 7)
        custom = os.path.join(os.environ["INPUTS"], "algoCustomData.json")
        print("custom data present:", os.path.exists(custom))
        print("to stderr", file=sys.stderr)
        """
    )
    created = start_job(engine, workflow(raw_algorithm(algorithm)))
    assert list(created) == STATUS_KEYS
    assert created["status"] == 1
    assert created["statusText"] == "Warming up"
    assert re.fullmatch(r"[0-9a-f]{32}", created["jobId"])
    assert abs(float(created["dateCreated"]) - time.time()) < 5
    assert "." in created["dateCreated"]
    assert created["dateFinished"] is None
    assert created["results"] == ""
    assert (created["stopreq"], created["removed"]) == (0, 0)
    assert created["algoDID"] == "raw"
    assert created["inputDID"] == [DID_A]
    assert created["owner"] == OWNER
    job_id = created["jobId"]
    log_path = engine.job_dir(job_id) / "data" / "logs" / "algorithm.log"
    progress_seen_while_running = []

    def check(job: dict) -> None:
        if job["dateFinished"] is None:
            assert job["results"] == ""
        if job["status"] == 40 and log_path.exists() and b"starting" in log_path.read_bytes():
            progress_seen_while_running.append(True)

    final, seen = wait_done(engine, job_id, on_poll=check)
    assert seen == [1, 20, 30, 40, 60, 70]
    assert progress_seen_while_running, "stdout did not reach algorithm.log while the job ran"
    assert final["statusText"] == "Job finished"
    assert final["stopreq"] == 0
    assert float(final["dateFinished"]) >= float(final["dateCreated"])
    assert [(r["filename"], r["type"]) for r in final["results"]] == [
        ("a.txt", "output"),
        ("b.txt", "output"),
        ("algorithm.log", "algorithmLog"),
        ("extra.log", "output"),
        ("configure.log", "configrationLog"),
        ("publish.log", "publishLog"),
    ]
    for index, item in enumerate(final["results"]):
        assert list(item) == ["filename", "filesize", "type"]
        path, name = engine.result_path(OWNER, job_id, index)
        assert name == item["filename"]
        assert path.stat().st_size == item["filesize"]
    assert result_bytes(engine, final, "a.txt") == b"\x00\x01alpha"
    assert result_bytes(engine, final, "b.txt") == b"bee\n"
    assert result_bytes(engine, final, "extra.log") == b"xxxxxxx"
    algo_log = result_bytes(engine, final, "algorithm.log").decode()
    assert "starting" in algo_log
    assert "custom data present: False" in algo_log
    assert "to stderr" in algo_log
    assert "exit code: 0" in result_bytes(engine, final, "publish.log").decode()
    assert "configuring job" in result_bytes(engine, final, "configure.log").decode()
    assert engine.exit_code(job_id) == 0
    stored = json.loads((engine.job_dir(job_id) / "workflow.json").read_text())
    assert stored["stages"][0]["compute"]["maxtime"] == 30
    assert not engine.has_running_job_with_agreement(final["agreementId"])


def test_input_layout_and_environment(make_engine: Callable[..., JobEngine], source: Source) -> None:
    source.inputs[DID_A] = [b"first file", b"second file"]
    source.inputs[DID_B] = [b"other dataset"]
    report_algorithm = code(
        """
        import json, os, stat, sys
        inputs = os.environ["INPUTS"]
        tree = {}
        for root, dirs, files in os.walk(inputs):
            for name in files:
                path = os.path.join(root, name)
                with open(path) as f:
                    tree[os.path.relpath(path, inputs)] = f.read()
        transformations = os.path.join(os.getcwd(), "transformations")
        with open(os.path.join(transformations, "1")) as f:
            helper = f.read()
        ddos = {}
        for name in os.listdir(os.path.join(os.getcwd(), "ddos")):
            with open(os.path.join(os.getcwd(), "ddos", name)) as f:
                ddos[name] = json.load(f)
        report = {
            "cwd": os.getcwd(),
            "argv0": sys.argv[0],
            "executable": sys.executable,
            "env": {k: os.environ.get(k) for k in
                    ["DIDS", "TRANSFORMATION_DID", "VOLUME", "INPUTS", "OUTPUTS", "LOGS", "secret",
                     "PYTHONUNBUFFERED", "HOME"]},
            "env_keys": sorted(os.environ),
            "path0": os.environ["PATH"].split(os.pathsep)[0],
            "inputs": tree,
            "algo_mode": stat.S_IMODE(os.stat(sys.argv[0]).st_mode),
            "outputs_mode": stat.S_IMODE(os.stat(os.environ["OUTPUTS"]).st_mode),
            "helper": helper,
            "ddos": ddos,
            "listing": sorted(os.listdir(os.getcwd())),
            "log_size_at_start": os.path.getsize(os.path.join(os.environ["LOGS"], "algorithm.log")),
        }
        with open(os.path.join(os.environ["OUTPUTS"], "report.json"), "w") as f:
            json.dump(report, f)
        """
    )
    source.algorithms[DID_ALGO] = [report_algorithm.encode(), b"helper file"]
    engine = make_engine()
    ddo = {"id": DID_B, "metadata": {"name": "other"}}
    job = start_job(engine, workflow(did_algorithm(DID_ALGO, {"epochs": 3}), [DID_A, DID_B], ddo=ddo))
    assert job["algoDID"] == DID_ALGO
    assert job["inputDID"] == [DID_A, DID_B]
    null_job = start_job(engine, workflow(did_algorithm(DID_ALGO, None)))
    final, _ = wait_done(engine, job["jobId"])
    null_final, _ = wait_done(engine, null_job["jobId"])
    assert (final["status"], null_final["status"]) == (70, 70)

    report = json.loads(result_bytes(engine, final, "report.json"))
    data = engine.job_dir(job["jobId"]) / "data"
    hex_a, hex_b = DID_A.removeprefix("did:op:"), DID_B.removeprefix("did:op:")
    assert report["cwd"] == str(data)
    assert report["argv0"] == str(data / "transformations" / "algorithm")
    assert report["inputs"] == {
        f"{hex_a}/0": "first file",
        f"{hex_a}/1": "second file",
        f"{hex_b}/0": "other dataset",
        "algoCustomData.json": '{"epochs": 3}',
    }
    env = report["env"]
    assert json.loads(env["DIDS"]) == [hex_a, hex_b]
    assert env["TRANSFORMATION_DID"] == DID_ALGO.removeprefix("did:op:")
    assert env["VOLUME"] == str(data)
    assert env["INPUTS"] == str(data / "inputs")
    assert env["OUTPUTS"] == str(data / "outputs")
    assert env["LOGS"] == str(data / "logs")
    assert re.fullmatch(r"[0-9a-f]{16,}", env["secret"])
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["HOME"] == os.environ.get("HOME")
    assert "ALGO" not in report["env_keys"]
    assert "VIRTUAL_ENV" not in report["env_keys"] or "VIRTUAL_ENV" in os.environ
    assert report["path0"] == os.path.dirname(sys.executable)
    assert os.path.dirname(report["executable"]) == os.path.dirname(sys.executable)
    assert report["algo_mode"] == 0o777
    assert report["outputs_mode"] == 0o777
    assert report["helper"] == "helper file"
    assert report["ddos"] == {hex_b: ddo}
    assert report["listing"] == ["ddos", "inputs", "logs", "outputs", "transformations"]
    assert report["log_size_at_start"] == 0
    # what pod-configuration was given: the workflow input entries (both jobs configure concurrently)
    calls = sorted((call["index"], call["id"], call["remote"]["txId"]) for call in source.input_calls)
    assert calls == [(0, DID_A, "0xtx0"), (0, DID_A, "0xtx0"), (1, DID_B, "0xtx1")]
    assert source.algorithm_calls[0]["id"] == DID_ALGO
    # custom data key present with a null value -> the file holds "null"
    null_inputs = engine.job_dir(null_job["jobId"]) / "data" / "inputs"
    assert (null_inputs / "algoCustomData.json").read_text() == "null"
    # the other job's secret differs
    other = json.loads(result_bytes(engine, null_final, "report.json"))
    assert other["env"]["secret"] != env["secret"]
    assert other["inputs"]["algoCustomData.json"] == "null"


# -- provisioning failures ----------------------------------------------------------------------------
def test_short_raw_code_fails_32_unless_a_url_is_given(
    make_engine: Callable[..., JobEngine], source: Source
) -> None:
    source.inputs[DID_A] = [b"data"]
    source.algorithms["http://algo.example/run.py"] = code(
        """
        import os
        open(os.path.join(os.environ["OUTPUTS"], "from_url.txt"), "w").write("url algorithm ran")
        """
    ).encode()
    engine = make_engine()
    short = start_job(engine, workflow(raw_algorithm("print(123)")))  # exactly 10 characters: not written
    via_url = start_job(engine, workflow(raw_algorithm("x=1", url="http://algo.example/run.py")))
    final, seen = wait_done(engine, short["jobId"])
    assert seen == [1, 20, 32]
    assert final["statusText"] == "Algorithm provisioning failed"
    assert final["dateFinished"] is not None
    assert [(r["filename"], r["type"], r["filesize"]) for r in final["results"][:1]] == [
        ("algorithm.log", "algorithmLog", 0)
    ]
    assert [r["type"] for r in final["results"][1:]] == ["configrationLog", "publishLog"]
    assert "algorithm provisioning failed" in result_bytes(engine, final, "configure.log").decode()
    assert "algorithm not run" in result_bytes(engine, final, "publish.log").decode()
    assert not (engine.job_dir(short["jobId"]) / "data" / "transformations" / "algorithm").exists()
    assert engine.exit_code(short["jobId"]) is None

    url_final, _ = wait_done(engine, via_url["jobId"])
    assert url_final["status"] == 70
    assert result_bytes(engine, url_final, "from_url.txt") == b"url algorithm ran"
    assert [call.get("url") for call in source.algorithm_calls] == ["http://algo.example/run.py"]


def test_data_and_algorithm_download_failures(make_engine: Callable[..., JobEngine], source: Source) -> None:
    source.inputs[DID_A] = [b"data"]
    marker_algorithm = code(
        """
        import os
        open(os.path.join(os.environ["OUTPUTS"], "ran.txt"), "w").write("ran")
        """
    )
    engine = make_engine()
    bad_data = start_job(engine, workflow(raw_algorithm(marker_algorithm), [DID_A, DID_BAD]))
    bad_algo = start_job(engine, workflow(did_algorithm(DID_ALGO, None)))  # not in source.algorithms
    final, seen = wait_done(engine, bad_data["jobId"])
    assert seen == [1, 20, 31]
    assert final["statusText"] == "Data provisioning failed"
    assert final["dateFinished"] is not None
    assert [r["filename"] for r in final["results"]] == ["algorithm.log", "configure.log", "publish.log"]
    configure_log = result_bytes(engine, final, "configure.log").decode()
    assert "data provisioning failed" in configure_log
    assert "HTTP 500" in configure_log
    assert not (engine.job_dir(bad_data["jobId"]) / "data" / "outputs" / "ran.txt").exists()
    assert not engine.has_running_job_with_agreement(final["agreementId"])

    algo_final, algo_seen = wait_done(engine, bad_algo["jobId"])
    assert algo_final["status"] == 32
    assert 40 not in algo_seen
    assert (
        "algorithm " + DID_ALGO + " unavailable" in result_bytes(engine, algo_final, "configure.log").decode()
    )


def test_crashing_algorithm_still_ends_70(make_engine: Callable[..., JobEngine], source: Source) -> None:
    source.inputs[DID_A] = [b"data"]
    engine = make_engine()
    crash = code(
        """
        import os, subprocess
        leftover = subprocess.Popen(["sleep", "60"], stdout=subprocess.DEVNULL)
        open(os.path.join(os.environ["OUTPUTS"], "partial.txt"), "w").write(str(leftover.pid))
        print("about to fail")
        raise ValueError("boom")
        """
    )
    job = start_job(engine, workflow(raw_algorithm(crash)))
    final, seen = wait_done(engine, job["jobId"])
    assert seen == [1, 20, 30, 40, 60, 70]
    assert (final["status"], final["stopreq"]) == (70, 0)
    algo_log = result_bytes(engine, final, "algorithm.log").decode()
    assert "about to fail" in algo_log
    assert "Traceback (most recent call last)" in algo_log
    assert "ValueError: boom" in algo_log
    leftover = int(result_bytes(engine, final, "partial.txt"))
    wait_for(lambda: not alive(leftover), timeout=2)  # like a finished pod, nothing of the job survives
    assert "exit code: 1" in result_bytes(engine, final, "publish.log").decode()
    assert engine.exit_code(job["jobId"]) == 1
    # a stop on a finished job marks it for good and answers it read back (operator-service routes.py
    # stop_compute_job: stop_sql_job sets stopreq=1 with no condition, then get_sql_status); nothing else
    # changes
    (answer,) = engine.stop_jobs(OWNER, job["jobId"])
    assert {**answer, "stopreq": 0} == final
    assert answer["stopreq"] == 1
    time.sleep(3 * engine.tick)
    assert engine.list_jobs(OWNER, job["jobId"]) == [answer]


# -- stop and max duration ----------------------------------------------------------------------------
def test_stop_kills_process_group_and_still_publishes(
    make_engine: Callable[..., JobEngine], source: Source
) -> None:
    source.inputs[DID_A] = [b"data"]
    engine = make_engine()
    stubborn = code(
        """
        import os, signal, subprocess, time
        child = subprocess.Popen(["sleep", "60"])
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open(os.path.join(os.environ["OUTPUTS"], "pids.txt"), "w") as f:
            f.write(f"{os.getpid()} {child.pid}")
        print("ready")
        time.sleep(60)
        """
    )
    # "exec" (the entrypoint is run by sh -c) makes python the group leader, so SIGTERM reaches it directly
    algorithm = {**raw_algorithm(stubborn), "container": {**CONTAINER, "entrypoint": "exec python $ALGO"}}
    job = start_job(engine, workflow(algorithm))
    job_id = job["jobId"]
    pids_file = engine.job_dir(job_id) / "data" / "outputs" / "pids.txt"
    wait_for(lambda: pids_file.exists() and len(pids_file.read_text().split()) == 2)
    pids = [int(pid) for pid in pids_file.read_text().split()]
    assert all(alive(pid) for pid in pids)
    assert engine.has_running_job_with_agreement(job["agreementId"])

    assert engine.stop_jobs(OWNER.lower(), job_id) == []  # owner compared case-sensitively
    assert engine.list_jobs(OWNER, job_id)[0]["stopreq"] == 0

    stopped_at = time.monotonic()
    answer = engine.stop_jobs(OWNER, job_id)
    # the answer is read back after the update: stopreq already 1, status unchanged (operator-service)
    assert [(j["jobId"], j["status"], j["stopreq"]) for j in answer] == [(job_id, 40, 1)]
    assert engine.list_jobs(OWNER, job_id)[0]["stopreq"] == 1
    final, seen = wait_done(engine, job_id)
    elapsed = time.monotonic() - stopped_at
    assert seen[-2:] == [60, 70]
    assert (final["status"], final["stopreq"]) == (70, 1)
    assert 0.9 <= elapsed < 6, elapsed  # SIGTERM ignored: SIGKILL after the ~1 s grace
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=3)
    assert "ready" in result_bytes(engine, final, "algorithm.log").decode()
    assert "pids.txt" in [r["filename"] for r in final["results"]]
    assert engine.exit_code(job_id) == -9
    assert "stopped on request" in result_bytes(engine, final, "publish.log").decode()
    assert not engine.has_running_job_with_agreement(job["agreementId"])


def test_max_job_duration_kill_sets_stopreq_2(make_engine: Callable[..., JobEngine], source: Source) -> None:
    source.inputs[DID_A] = [b"data"]
    engine = make_engine()
    slow = code(
        """
        import os, signal, sys, time

        def graceful(signum, frame):
            time.sleep(0.3)
            with open(os.path.join(os.environ["OUTPUTS"], "cleanup.txt"), "w") as f:
                f.write("saved on SIGTERM")
            sys.exit(3)

        signal.signal(signal.SIGTERM, graceful)
        print("started")
        time.sleep(30)
        print("never")
        """
    )
    env = {**ENV, "maxJobDuration": "1"}  # engines announce numbers as strings
    job = start_job(engine, workflow(raw_algorithm(slow)), env=env)
    began = time.monotonic()
    final, seen = wait_done(engine, job["jobId"])
    assert seen == [1, 20, 30, 40, 60, 70]
    assert (final["status"], final["stopreq"]) == (70, 2)
    assert 1.0 <= time.monotonic() - began < 6
    algo_log = result_bytes(engine, final, "algorithm.log").decode()
    assert "started" in algo_log
    assert "never" not in algo_log
    # the group got SIGTERM; the shell died at once, the algorithm used its grace period to save its work
    assert result_bytes(engine, final, "cleanup.txt") == b"saved on SIGTERM"
    assert engine.exit_code(job["jobId"]) == -15  # the exit status of sh -c (the entrypoint's shell)
    # a late stop overwrites the kill marker: operator-service data_store.py stop_sql_job is
    # "UPDATE jobs SET stopreq=1 WHERE workflowId=%s", with no condition on the job's state or stopreq
    assert [(j["status"], j["stopreq"]) for j in engine.stop_jobs(OWNER, job["jobId"])] == [(70, 1)]
    publish_log = result_bytes(engine, final, "publish.log").decode()
    assert "exit code: -15" in publish_log
    assert "exceeding maxtime" in publish_log
    stored = json.loads((engine.job_dir(job["jobId"]) / "workflow.json").read_text())
    assert stored["stages"][0]["compute"]["maxtime"] == 1


# -- operator-service answers -------------------------------------------------------------------------
def test_result_path_errors_and_owner_case(make_engine: Callable[..., JobEngine], source: Source) -> None:
    source.inputs[DID_A] = [b"data"]
    engine = make_engine()
    quick = code(
        """
        import os
        open(os.path.join(os.environ["OUTPUTS"], "out.txt"), "w").write("ok")
        """
    )
    job = start_job(engine, workflow(raw_algorithm(quick)))
    job_id = job["jobId"]
    final, _ = wait_done(engine, job_id)
    count = len(final["results"])

    def error(owner: str, one_job: str, index: int, on: JobEngine = engine) -> tuple[int, dict]:
        with pytest.raises(OperatorError) as info:
            on.result_path(owner, one_job, index)
        return info.value.status, info.value.body

    assert error(OWNER, job_id, count) == (404, {"error": f"No such index {count} in this compute job"})
    assert error(OWNER, job_id, -1) == (404, {"error": "Negative index -1"})
    assert error(OWNER.lower(), job_id, 0) == (
        404,
        {"error": f"Owner {OWNER.lower()} mismatch for job {job_id}"},
    )
    status, body = error(OWNER, "f" * 32, 0)
    assert status == 404
    assert "f" * 32 in body["error"]
    path, name = engine.result_path(OWNER, job_id, 0)
    assert (name, path.read_bytes()) == ("out.txt", b"ok")

    # owner filtering is exact string equality
    assert engine.list_jobs(OWNER.lower()) == []
    assert engine.list_jobs(OWNER.lower(), job_id) == []
    assert [j["jobId"] for j in engine.list_jobs(OWNER)] == [job_id]
    assert engine.list_jobs(OWNER, "0" * 32) == []

    # a job without results yet (engine never picks it up)
    idle = make_engine(start=False, state_dir=engine.state_dir.parent / "idle")
    pending = start_job(idle, workflow(raw_algorithm(quick)))
    assert error(OWNER, pending["jobId"], 0, idle) == (
        404,
        {"error": f"No results for job {pending['jobId']}"},
    )
    assert idle.has_running_job_with_agreement(pending["agreementId"])
    assert not idle.has_running_job_with_agreement("0xunknown")
    assert idle.count_running("ocean-compute") == 1
    assert idle.count_running("other-env") == 0
    with pytest.raises(OperatorError) as info:
        idle.create_job(
            owner=OWNER,
            agreement_id="0x1",
            workflow={"stages": []},
            environment=ENV,
            provider_address="",
            chain_id=1,
        )
    assert info.value.status == 400


def test_jobs_survive_a_new_engine_and_interrupted_jobs_rerun(
    make_engine: Callable[..., JobEngine], source: Source, tmp_path: Path
) -> None:
    source.inputs[DID_A] = [b"data"]
    runs_file = tmp_path / "runs.txt"
    first = make_engine(max_jobs=1)
    done = start_job(first, workflow(raw_algorithm("print('first job output')")))
    counted = code(
        f"""
        import os, time
        with open({str(runs_file)!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
        with open({str(runs_file)!r}) as f:
            first_run = len(f.read().split()) == 1
        time.sleep(30 if first_run else 0.3)  # the first run is interrupted
        open(os.path.join(os.environ["OUTPUTS"], "done.txt"), "w").write("complete")
        """
    )
    interrupted = start_job(first, workflow(raw_algorithm(counted)))
    queued = start_job(first, workflow(raw_algorithm("print('third job output')")))
    done_final, _ = wait_done(first, done["jobId"])
    wait_for(lambda: runs_file.exists() and len(runs_file.read_text().split()) == 1)
    orphan = int(runs_file.read_text().split()[0])
    assert first.list_jobs(OWNER, interrupted["jobId"])[0]["status"] == 40
    assert first.list_jobs(OWNER, queued["jobId"])[0]["status"] == 1  # max_jobs=1
    # simulate a dying engine: its thread stops, the algorithm process is left behind
    first._stop.set()
    assert first._thread is not None
    first._thread.join(timeout=5)
    assert alive(orphan)

    second = make_engine(start=False)
    listed = second.list_jobs(OWNER)
    assert [j["jobId"] for j in listed] == [done["jobId"], interrupted["jobId"], queued["jobId"]]
    assert listed[0] == done_final
    assert [j["status"] for j in listed] == [70, 40, 1]
    second.start()
    wait_for(lambda: not alive(orphan), timeout=3)  # the leftover process group was killed
    rerun, seen = wait_done(second, interrupted["jobId"])
    assert seen[0] in (20, 30, 40)
    assert rerun["status"] == 70
    assert result_bytes(second, rerun, "done.txt") == b"complete"
    assert len(runs_file.read_text().split()) == 2  # re-run from configure
    third, _ = wait_done(second, queued["jobId"])
    assert third["status"] == 70
    assert "third job output" in result_bytes(second, third, "algorithm.log").decode()
    assert "first job output" in result_bytes(second, done_final, "algorithm.log").decode()


def test_max_jobs_concurrency(make_engine: Callable[..., JobEngine], source: Source) -> None:
    source.inputs[DID_A] = [b"data"]
    engine = make_engine(max_jobs=2)
    timed = code(
        """
        import os, time
        start = time.time()
        time.sleep(0.8)
        open(os.path.join(os.environ["OUTPUTS"], "times.txt"), "w").write(f"{start} {time.time()}")
        """
    )
    jobs = [start_job(engine, workflow(raw_algorithm(timed))) for _ in range(4)]
    ids = [job["jobId"] for job in jobs]
    assert engine.count_running("ocean-compute") == 4
    busiest = 0
    order: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        listed = {job["jobId"]: job for job in engine.list_jobs(OWNER)}
        active = [i for i in ids if listed[i]["status"] != 1 and listed[i]["dateFinished"] is None]
        assert len(active) <= 2, [listed[i]["status"] for i in ids]
        busiest = max(busiest, len(active))
        order.extend(i for i in ids if listed[i]["status"] != 1 and i not in order)
        if all(listed[i]["dateFinished"] is not None for i in ids):
            break
        time.sleep(0.005)
    assert busiest == 2
    assert order[:2] == ids[:2]  # picked up in creation order
    finals = [engine.list_jobs(OWNER, i)[0] for i in ids]
    assert [job["status"] for job in finals] == [70, 70, 70, 70]
    spans = [tuple(map(float, result_bytes(engine, job, "times.txt").split())) for job in finals]
    for start, _ in spans:
        assert sum(1 for other_start, other_end in spans if other_start <= start < other_end) <= 2
    assert engine.count_running("ocean-compute") == 0


def test_stop_before_the_algorithm_starts(make_engine: Callable[..., JobEngine], source: Source) -> None:
    source.inputs[DID_A] = [b"data"]
    engine = make_engine(start=False)
    marker = code(
        """
        import os
        open(os.path.join(os.environ["OUTPUTS"], "ran.txt"), "w").write("ran")
        """
    )
    job = start_job(engine, workflow(raw_algorithm(marker)))
    answer = engine.stop_jobs(OWNER)
    assert [(j["status"], j["stopreq"]) for j in answer] == [(1, 1)]
    engine.start()
    final, seen = wait_done(engine, job["jobId"])
    assert 40 not in seen
    assert (final["status"], final["stopreq"]) == (70, 1)
    assert "ran.txt" not in [r["filename"] for r in final["results"]]
    assert "algorithm not run" in result_bytes(engine, final, "publish.log").decode()
