"""Secrets and hostile servers.

- Full DAG runs of ``dags/ocean_compute_example.py`` with ``airflow dags test`` in subprocesses (a
  successful run whose sensor defers, and a failing run, side by side): the wallet key and every request
  signature the server received (read from a recording proxy) appear in no task log, no stdout/stderr, no
  XCom, no trigger row (decrypted), nowhere in the metadata DB, and in no exception text.
- Server-chosen result file names are made safe; result downloads are capped; TLS is verified by default;
  results are written as bytes and never unpickled.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import io
import json
import os
import pickle
import sqlite3
import threading
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ocean.exceptions import (
    OceanConnectionError,
    OceanError,
    OceanJobError,
    OceanProviderError,
)
from airflow_provider_ocean.hooks.ocean import OceanComputeHook
from airflow_provider_ocean.operators.results import OceanComputeResultsOperator
from tests.faults import airflow_cli, harness
from tests.faults.proxy import FaultProxy, UpstreamResponse, self_signed_context

pytestmark = [pytest.mark.chain, pytest.mark.alone]  # the sensor must still be waiting when it runs

REPO = Path(__file__).resolve().parents[1]
CONN_ID = "ocean_secrets"
RESULT_ROUTE = "/api/services/computeResult"
STATUS_ROUTE = "/api/services/compute"


# -- what must never leak ---------------------------------------------------------------------------------
def key_needles(key: str) -> list[str]:
    """The key as bare lower-case hex, plus each half (a half-leaked key is a leak too)."""
    bare = key.lower().removeprefix("0x")
    return [bare, bare[:32], bare[32:]]


def signatures_seen(proxy: FaultProxy) -> list[str]:
    """Every ``signature`` value the server received, as bare lower-case hex."""
    from urllib.parse import parse_qs

    found: set[str] = set()
    for request in proxy.requests:
        values = parse_qs(request.query).get("signature", [])
        if request.body:
            with contextlib.suppress(ValueError):
                body = json.loads(request.body)
                if isinstance(body, dict) and body.get("signature"):
                    values.append(str(body["signature"]))
        found.update(v.lower().removeprefix("0x") for v in values if v)
    return sorted(found)


def leaks(haystack: str | bytes, needles: list[str]) -> list[str]:
    text = haystack.decode("utf-8", errors="replace") if isinstance(haystack, bytes) else haystack
    lowered = text.lower()
    return [n[:12] + "…" for n in needles if n and n in lowered]


def exception_text(exc: BaseException) -> str:
    parts = ["".join(traceback.format_exception(exc)), repr(exc), str(exc)]
    for name in ("body", "detail", "errors", "message", "hint", "status"):
        parts.append(repr(getattr(exc, name, "")))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def recorder(sandbox: dict[str, Any]) -> Iterator[FaultProxy]:
    with FaultProxy(sandbox["provider_url"], record=True) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def conn(sandbox: dict[str, Any], recorder: FaultProxy) -> Iterator[str]:
    variable = f"AIRFLOW_CONN_{CONN_ID.upper()}"
    saved = os.environ.get(variable)
    harness.set_connection(CONN_ID, harness.conn_json(sandbox, host=recorder.url))
    yield CONN_ID
    if saved is None:
        os.environ.pop(variable, None)
    else:
        os.environ[variable] = saved


@pytest.fixture(scope="module")
def finished_job(sandbox: dict[str, Any], conn: str) -> str:
    """One finished job of the consumer (published algorithm): the results the hostile tests fetch."""
    hook = OceanComputeHook(conn)
    assets = sandbox["assets"]
    job_id = hook.run_compute([assets["dataset"]["did"]], {"did": assets["algorithm"]["did"]})["job_id"]
    deadline = time.monotonic() + 90
    while not hook.get_job_status(job_id).is_terminal:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    return job_id


# -- full DAG runs in subprocesses --------------------------------------------------------------------------
class TriggerWatcher:
    """Polls the metadata DB's trigger table while a run goes on (rows may be deleted when they fire)."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.rows: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        deadline = time.monotonic() + 600
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.poll()
            self._stop.wait(0.2)

    def poll(self) -> None:
        if not self.db.exists():
            return
        try:
            with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=1)) as db:
                self.rows.update(
                    str(row[0]) + "|" + str(row[1])
                    for row in db.execute("SELECT classpath, kwargs FROM trigger")
                )
        except sqlite3.Error:
            pass

    def __enter__(self) -> TriggerWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.poll()


def decrypt_trigger_kwargs(home: Path, stored: str) -> str:
    """Trigger kwargs as stored (Fernet-encrypted when the home has a fernet_key), decrypted."""
    if stored.startswith("{"):
        return stored
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(home / "airflow.cfg")
    key = parser.get("core", "fernet_key", fallback="")
    if not key:
        return stored
    from cryptography.fernet import Fernet

    return Fernet(key.encode()).decrypt(stored.encode()).decode()


@pytest.fixture(scope="module")
def dag_runs(
    sandbox: dict[str, Any], recorder: FaultProxy, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A successful (deferred) run and a failing run of the example DAG, through the recording proxy.

    The two runs go at the same time, each in its own AIRFLOW_HOME (``homes``, a copy of the migrated DB
    each); ``triggers`` holds the trigger rows seen in each home's DB while its run went on.
    """
    root = tmp_path_factory.mktemp("secrets-dag-runs")
    results = root / "results"
    conn_value = harness.conn_json(sandbox, host=recorder.url)
    assets = sandbox["assets"]
    plans = {
        "success": (assets["dataset"]["did"], assets["algorithm"]["did"]),
        "failure": (assets["dataset_trusted"]["did"], assets["algorithm_untrusted"]["did"]),
    }

    def run(name: str, dataset: str, algorithm: str) -> tuple[Path, set[str], Any]:
        home = root / f"home-{name}"
        env = airflow_cli.fresh_home(home, REPO / "dags", AIRFLOW_CONN_OCEAN_DEFAULT=conn_value)
        env.update(
            {
                "AIRFLOW_VAR_OCEAN_DATASET_DID": dataset,
                "AIRFLOW_VAR_OCEAN_ALGORITHM_DID": algorithm,
                "AIRFLOW_VAR_OCEAN_RESULTS_DIR": str(results),
            }
        )
        with TriggerWatcher(home / "airflow.db") as watcher:
            done = airflow_cli.airflow(env, "dags", "test", "ocean_compute_example", timeout=400)
        return home, watcher.rows, done

    recorder.clear()
    with ThreadPoolExecutor(max_workers=len(plans)) as pool:
        futures = {name: pool.submit(run, name, *plan) for name, plan in plans.items()}
    runs: dict[str, Any] = {"results": results, "homes": {}, "triggers": {}}
    for name, future in futures.items():
        runs["homes"][name], runs["triggers"][name], runs[name] = future.result()
    runs["signatures"] = signatures_seen(recorder)
    return runs


def test_the_dag_runs_did_what_they_should(dag_runs: dict[str, Any]) -> None:
    success, failure = dag_runs["success"], dag_runs["failure"]
    assert success.returncode == 0, success.stdout[-3000:] + success.stderr[-3000:]
    written = sorted(p.name for p in dag_runs["results"].rglob("*") if p.is_file())
    assert "summary.csv" in written, written
    assert "publisherTrustedAlgorithms" in failure.stdout + failure.stderr
    assert dag_runs["triggers"]["success"], "the sensor deferred: a trigger row was seen"
    # start + at least one result download were signed
    assert len(dag_runs["signatures"]) >= 2


def _needles(sandbox: dict[str, Any], dag_runs: dict[str, Any]) -> list[str]:
    return key_needles(sandbox["consumer"]["key"]) + dag_runs["signatures"]


def test_no_secret_in_stdout_or_stderr(sandbox: dict[str, Any], dag_runs: dict[str, Any]) -> None:
    needles = _needles(sandbox, dag_runs)
    for name in ("success", "failure"):
        assert not leaks(dag_runs[name].stdout, needles), name
        assert not leaks(dag_runs[name].stderr, needles), name


def test_no_secret_in_task_logs(sandbox: dict[str, Any], dag_runs: dict[str, Any]) -> None:
    """Task log files under $AIRFLOW_HOME/logs, if any; ``airflow dags test`` streams the task logs to its
    stdout instead of writing files, so that stream must hold the task log lines."""
    needles = _needles(sandbox, dag_runs)
    for home in dag_runs["homes"].values():
        for path in (p for p in (home / "logs").rglob("*") if p.is_file()):
            assert not leaks(path.read_bytes(), needles), path
    streamed = dag_runs["success"].stdout + dag_runs["success"].stderr
    for line in ("Paid: dataset", "Started: job", "Wrote summary.csv"):
        assert line in streamed, f"task log line {line!r} not captured"
    assert not leaks(streamed, needles)


def test_no_secret_in_xcom_trigger_rows_or_anywhere_in_the_db(
    sandbox: dict[str, Any], dag_runs: dict[str, Any]
) -> None:
    needles = _needles(sandbox, dag_runs)
    all_xcoms: list[str] = []
    seen_triggers: list[tuple[Path, str]] = []
    for name, home in dag_runs["homes"].items():
        with contextlib.closing(sqlite3.connect(home / "airflow.db")) as db:
            xcoms = [str(row) for row in db.execute("SELECT dag_id, task_id, key, value FROM xcom")]
            triggers = [str(row[0]) for row in db.execute("SELECT kwargs FROM trigger")]
            next_kwargs = [
                str(row) for row in db.execute("SELECT next_method, next_kwargs FROM task_instance")
            ]
        all_xcoms += xcoms
        for value in xcoms + next_kwargs:
            assert not leaks(value, needles), value[:300]
        seen_triggers += [(home, t) for t in triggers]
        seen_triggers += [(home, row.split("|", 1)[1]) for row in dag_runs["triggers"][name]]
        for path in home.glob("airflow.db*"):
            assert not leaks(path.read_bytes(), needles), path
    assert any("ocean_job_id" in x or "return_value" in x for x in all_xcoms), all_xcoms
    assert seen_triggers
    for home, stored in seen_triggers:
        plain = decrypt_trigger_kwargs(home, stored)
        assert "job_id" in plain
        assert not leaks(plain, needles), plain[:300]


# -- exception texts -----------------------------------------------------------------------------------------
def _echo_signature(proxy: FaultProxy, status: int, shape: str) -> Any:
    """A Provider-like error answer that echoes the signature of the request it answers."""

    def rewrite(response: UpstreamResponse) -> UpstreamResponse:
        request = proxy.requests[-1]
        from urllib.parse import parse_qs

        sig = (parse_qs(request.query).get("signature") or [""])[0]
        if not sig and request.body:
            sig = json.loads(request.body).get("signature", "")
        if shape == "validation":
            body: Any = {
                "errors": {
                    "signature": f"Invalid signature {sig} for ethereum address 0xabc, message x and nonce 1"
                },
                "message": "Validation error",
                "success": False,
            }
        else:
            body = {"error": f"boom while handling {sig}", "context": {"signature": sig, "nonce": "1"}}
        return dataclasses_replace(response, status=status).with_json(body)

    return rewrite


def dataclasses_replace(response: UpstreamResponse, **changes: Any) -> UpstreamResponse:
    import dataclasses

    return dataclasses.replace(response, **changes)


@pytest.mark.parametrize(
    ("route", "status", "shape"),
    [
        (("GET", RESULT_ROUTE), 400, "validation"),
        (("GET", RESULT_ROUTE), 503, "uncaught"),
        (("PUT", STATUS_ROUTE), 400, "validation"),
        (("PUT", STATUS_ROUTE), 503, "uncaught"),
    ],
)
def test_exceptions_never_carry_the_signature(
    sandbox: dict[str, Any],
    conn: str,
    recorder: FaultProxy,
    finished_job: str,
    route: Any,
    status: int,
    shape: str,
) -> None:
    recorder.clear()
    recorder.add(
        method=route[0], path=route[1], action="rewrite", rewrite=_echo_signature(recorder, status, shape)
    )
    hook = OceanComputeHook(conn)
    call = (
        (lambda: hook.stop_job("0" * 32))  # an unknown job: an ended one is not sent a stop at all
        if route[0] == "PUT"
        else (lambda: hook.download_result(finished_job, 0, io.BytesIO()))
    )
    with pytest.raises(OceanProviderError) as raised:
        call()
    signatures = signatures_seen(recorder)
    assert signatures, "the request was signed"
    text = exception_text(raised.value)
    assert str(status) in text
    assert not leaks(text, signatures + key_needles(sandbox["consumer"]["key"])), text[:2000]
    recorder.clear()


def test_a_broken_signed_download_does_not_show_its_query(
    sandbox: dict[str, Any], conn: str, recorder: FaultProxy, finished_job: str
) -> None:
    recorder.clear()
    recorder.add(method="GET", path=RESULT_ROUTE, action="reset_before", times=1)
    with pytest.raises(OceanConnectionError) as raised:
        OceanComputeHook(conn).download_result(finished_job, 0, io.BytesIO())
    signatures = signatures_seen(recorder)
    assert signatures
    assert not leaks(exception_text(raised.value), signatures + key_needles(sandbox["consumer"]["key"]))
    recorder.clear()


def test_a_key_that_is_almost_a_key_is_not_echoed(
    sandbox: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = sandbox["consumer"]["key"].lower().removeprefix("0x")
    almost = "0x" + bare[:-1] + "g"  # one non-hex digit: maybe a real key with a typo
    monkeypatch.setenv("AIRFLOW_CONN_OCEAN_ALMOST", harness.conn_json(sandbox, password=almost))
    with pytest.raises(OceanError, match="not a private key") as raised:
        OceanComputeHook("ocean_almost").run_compute(
            [sandbox["assets"]["dataset"]["did"]], sandbox["assets"]["algorithm"]["did"]
        )
    text = exception_text(raised.value).lower()
    assert bare[:32] not in text
    assert bare[32:63] not in text


# -- hostile result names, size caps, pickles ----------------------------------------------------------------
EVIL_NAMES = ["../../evil", "/etc/passwd", "..\\..\\evil.txt", ".hidden", ""]


def _rename_results(name: str) -> Any:
    def rewrite(response: UpstreamResponse) -> UpstreamResponse:
        body = response.json()
        for job in body if isinstance(body, list) else []:
            for result in job.get("results") or []:
                result["filename"] = name
        return response.with_json(body)

    return rewrite


def _disposition(name: str) -> Any:
    return lambda response: response.with_header("Content-Disposition", f"attachment;filename={name}")


def _files_outside(root: Path, inside: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and inside not in p.parents]


@pytest.mark.parametrize("name", EVIL_NAMES)
def test_server_file_names_stay_inside_the_destination(
    conn: str, recorder: FaultProxy, finished_job: str, tmp_path: Path, name: str
) -> None:
    passwd = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    destination = tmp_path / "a" / "b" / "out"
    recorder.clear()
    recorder.add(method="GET", path=STATUS_ROUTE, action="rewrite", rewrite=_rename_results(name), times=None)
    recorder.add(method="GET", path=RESULT_ROUTE, action="rewrite", rewrite=_disposition(name), times=None)
    manifest = OceanComputeResultsOperator(
        task_id="collect",
        job_id=finished_job,
        destination=str(destination),
        ocean_conn_id=conn,
        result_types=None,
    ).execute(harness.task_context("collect"))
    assert len(manifest) >= 4
    assert len({e["name"] for e in manifest}) == len(manifest), "names stay distinct"
    for entry in manifest:
        path = Path(entry["uri"].replace("file://", "", 1))
        assert destination in path.parents, entry
        assert ".." not in Path(entry["name"]).parts
        assert not entry["name"].startswith(".")
    # the hook's own directory mode uses the Content-Disposition name
    downloaded = OceanComputeHook(conn).download_result(finished_job, 0, destination)
    assert destination in Path(downloaded.path).parents
    assert _files_outside(tmp_path, destination) == []
    assert hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest() == passwd
    recorder.clear()


def test_results_above_max_file_size_are_refused(conn: str, finished_job: str, tmp_path: Path) -> None:
    with pytest.raises(OceanJobError, match="above max_file_size 10"):
        OceanComputeResultsOperator(
            task_id="collect",
            job_id=finished_job,
            destination=str(tmp_path),
            ocean_conn_id=conn,
            max_file_size=10,
        ).execute(harness.task_context("collect"))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_lying_filesize_is_caught_while_streaming(
    conn: str, recorder: FaultProxy, finished_job: str, tmp_path: Path
) -> None:
    def tiny_sizes(response: UpstreamResponse) -> UpstreamResponse:
        body = response.json()
        for job in body if isinstance(body, list) else []:
            for result in job.get("results") or []:
                result["filesize"] = 1
        return response.with_json(body)

    recorder.clear()
    recorder.add(method="GET", path=STATUS_ROUTE, action="rewrite", rewrite=tiny_sizes, times=None)
    with pytest.raises(OceanJobError, match="cap of 20 bytes"):
        OceanComputeResultsOperator(
            task_id="collect",
            job_id=finished_job,
            destination=str(tmp_path),
            ocean_conn_id=conn,
            max_file_size=20,
        ).execute(harness.task_context("collect"))
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [], "the capped file was removed"
    recorder.clear()


class _Boom:
    marker = ""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.marker,))


def test_results_are_written_as_bytes_and_never_unpickled(
    conn: str, recorder: FaultProxy, finished_job: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "unpickled"
    boom = _Boom()
    boom.marker = str(marker)
    payload = pickle.dumps(boom)
    calls: list[str] = []
    real_loads, real_load = pickle.loads, pickle.load
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append("loads") or real_loads(*a, **k))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: calls.append("load") or real_load(*a, **k))

    def payload_sizes(response: UpstreamResponse) -> UpstreamResponse:
        # the job lists what the server sends: a body unlike the listed size is refused before this test
        body = response.json()
        for job in body if isinstance(body, list) else []:
            for result in job.get("results") or []:
                result["filesize"] = len(payload)
        return response.with_json(body)

    recorder.clear()
    recorder.add(method="GET", path=STATUS_ROUTE, action="rewrite", rewrite=payload_sizes, times=None)
    recorder.add(
        method="GET",
        path=RESULT_ROUTE,
        action="rewrite",
        rewrite=lambda r: dataclasses_replace(r, body=payload).with_header(
            "Content-Type", "application/python-pickle"
        ),
        times=None,
    )
    destination = tmp_path / "out"
    manifest = OceanComputeResultsOperator(
        task_id="collect", job_id=finished_job, destination=str(destination), ocean_conn_id=conn
    ).execute(harness.task_context("collect"))
    assert manifest
    for entry in manifest:
        assert Path(entry["uri"].replace("file://", "", 1)).read_bytes() == payload
        assert entry["sha256"] == hashlib.sha256(payload).hexdigest()
    sink = io.BytesIO()
    OceanComputeHook(conn).download_result(finished_job, 0, sink)
    assert sink.getvalue() == payload
    assert not marker.exists(), "the payload was executed"
    assert calls == []
    recorder.clear()


# -- TLS ------------------------------------------------------------------------------------------
def test_tls_is_verified_by_default(
    sandbox: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, _cert = self_signed_context(tmp_path)
    with FaultProxy(sandbox["provider_url"], tls=context) as tls_proxy:
        assert tls_proxy.url.startswith("https://")
        monkeypatch.setenv("AIRFLOW_CONN_OCEAN_TLS", harness.conn_json(sandbox, host=tls_proxy.url))
        hook = OceanComputeHook("ocean_tls", retry_limit=1)
        assert hook.settings.verify_ssl is True
        assert hook.provider.verify is True
        assert hook.rpc.verify is True
        with pytest.raises(OceanConnectionError, match="SSL"):
            hook.get_environments()

        monkeypatch.setenv(
            "AIRFLOW_CONN_OCEAN_TLS", harness.conn_json(sandbox, host=tls_proxy.url, verify_ssl="false")
        )
        insecure = OceanComputeHook("ocean_tls", retry_limit=1)
        assert insecure.settings.verify_ssl is False
        assert [e.id for e in insecure.get_environments()]
