"""Helpers shared by the tests that run operators, sensors and triggers in real Airflow against the sandbox.

``dag.test()`` in Airflow 3.3 needs the DAG in the metadata DB (a ``DagVersion``); :func:`run_dag` writes
the in-memory DAG there first, then runs it in-process (tasks, reschedules and deferrals; triggers run
in-line). Results are read back from the metadata DB: task states, XComs, reschedules.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from airflow_provider_ocean.hooks.ocean import OceanComputeHook
from airflow_provider_ocean.models import JobStatus

CONTAINER: dict[str, str] = {
    "entrypoint": "python $ALGO",
    "image": "python",
    "tag": "3.11-slim",
    "checksum": "sha256:" + "0" * 64,
}
#: Exceptions of failed tasks, by (dag_id, task_id), recorded by :func:`record_failure`.
FAILURES: dict[tuple[str, str], BaseException | None] = {}


def raw_algorithm(code: str) -> dict[str, Any]:
    """A raw algorithm (only the ``dataset_raw`` asset allows them)."""
    return {"rawcode": code, "container": dict(CONTAINER)}


def sleeping_algorithm(seconds: float = 30.0, marker: str = "sleeping") -> dict[str, Any]:
    """A raw algorithm that prints ``marker`` and sleeps ``seconds`` in small steps (stoppable quickly)."""
    steps = int(seconds * 10)
    return raw_algorithm(
        f"import time\nprint({marker!r}, flush=True)\n"
        f"for _ in range({steps}):\n    time.sleep(0.1)\n"
        "print('woke')\n"
    )


def unique_dag_id(prefix: str) -> str:
    """A dag id no other test (or earlier session on the same DB) uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def record_failure(context: Any) -> None:
    """``on_failure_callback`` keeping the task's exception for the test to inspect."""
    ti = context["ti"]
    FAILURES[(ti.dag_id, ti.task_id)] = context.get("exception")


def failure(dag_id: str, task_id: str) -> str:
    """The text of the exception that failed ``task_id`` (empty when none was recorded)."""
    exc = FAILURES.get((dag_id, task_id))
    return "" if exc is None else f"{type(exc).__name__}: {exc}"


def register_dag(dag: Any) -> None:
    """Write an in-memory DAG to the metadata DB (what the DAG processor does for files)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
        session.commit()
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
        )


def run_dag(dag: Any, *, logical_date: datetime | None = None) -> Any:
    """Run ``dag`` with ``dag.test()`` (in-process, triggers in-line); return the finished DagRun."""
    register_dag(dag)
    if logical_date is None:
        return dag.test()
    return dag.test(logical_date=logical_date)


def task_states(dag_run: Any) -> dict[str, str | None]:
    """``{task_id: state}`` of a finished run, read from the DB."""
    from airflow.utils.session import create_session

    with create_session() as session:
        return {
            ti.task_id: (None if ti.state is None else str(getattr(ti.state, "value", ti.state)))
            for ti in dag_run.get_task_instances(session=session)
        }


def xcoms(dag_run: Any, task_id: str | None = None) -> dict[tuple[str, str], Any]:
    """Every XCom of a run as ``{(task_id, key): value}`` (optionally of one task)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = select(XComModel).where(XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id)
    if task_id is not None:
        query = query.where(XComModel.task_id == task_id)
    with create_session() as session:
        return {(row.task_id, row.key): row.value for row in session.scalars(query)}


def xcom(dag_run: Any, task_id: str, key: str = "return_value") -> Any:
    """One XCom value of a finished run (``KeyError`` when it was never pushed)."""
    return xcoms(dag_run, task_id)[(task_id, key)]


def reschedule_count(dag_run: Any, task_id: str) -> int:
    """How many times ``task_id`` was rescheduled (rows in ``task_reschedule``)."""
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        ti = dag_run.get_task_instance(task_id, session=session)
        return session.scalar(
            select(func.count()).select_from(TaskReschedule).where(TaskReschedule.ti_id == ti.id)
        )


def make_hook(conn_id: str = "ocean_default") -> OceanComputeHook:
    return OceanComputeHook(conn_id, retry_delay=0.2)


def wait_terminal(hook: OceanComputeHook, job_id: str, timeout: float = 60.0) -> JobStatus:
    """Poll the real sandbox until the job ended."""
    deadline = time.monotonic() + timeout
    while True:
        job = hook.get_job_status(job_id)
        if job.is_terminal:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.status} {job.status_text!r}"
        time.sleep(0.2)


def stop_if_running(hook: OceanComputeHook, job_id: str | None) -> None:
    """Clean-up: stop a job a test left running (best effort)."""
    if not job_id:
        return
    try:
        if not hook.get_job_status(job_id).is_terminal:
            hook.stop_job(job_id)
    except Exception:  # noqa: BLE001 - clean-up only
        pass


def start_job(hook: OceanComputeHook, sandbox: dict[str, Any], algorithm: dict[str, Any]) -> str:
    """Pay for and start a job on ``dataset_raw`` with a raw algorithm; return its id."""
    started = hook.run_compute([sandbox["assets"]["dataset_raw"]["did"]], algorithm)
    return started["job_id"]


def registered_job(hook: OceanComputeHook, sandbox: dict[str, Any], column: str = "temperature_c") -> str:
    """Pay for and start a job: the dataset with the published (trusted) algorithm; return its id."""
    started = hook.run_compute(
        [sandbox["assets"]["dataset"]["did"]],
        {"did": sandbox["assets"]["algorithm"]["did"], "algocustomdata": {"column": column}},
    )
    return started["job_id"]


class ProxyServer:
    """A real HTTP server forwarding every request to the sandbox Provider.

    It counts status requests (``GET /api/services/compute``), can answer the next N of them with an
    error status instead of forwarding, and can rewrite status answers (``rewrite_status``).
    """

    STATUS_PATH = "/api/services/compute"
    RESULT_PATH = "/api/services/computeResult"

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.status_times: list[float] = []
        self.failures: list[int] = []
        self.rewrite_status: Callable[[Any], Any] | None = None
        #: result file names whose download is cut in the middle (the connection then closes); matched on
        #: the ``Content-Disposition`` file name (Provider v4)
        self.truncate_results: set[str] = set()
        #: the same by the ``index`` query parameter of ``computeResult`` (Ocean Node names no file)
        self.truncate_indexes: set[int] = set()
        self.lock = threading.Lock()
        self.session = requests.Session()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                path_only = self.path.split("?", 1)[0]
                is_status = self.command == "GET" and path_only == proxy.STATUS_PATH
                if is_status:
                    with proxy.lock:
                        proxy.status_times.append(time.monotonic())
                        code = proxy.failures.pop(0) if proxy.failures else None
                    if code is not None:
                        payload = json.dumps({"error": f"injected {code}"}).encode()
                        self.send_response(code)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
                }
                upstream = proxy.session.request(
                    self.command, proxy.upstream + self.path, data=body, headers=headers, timeout=60
                )
                content = upstream.content
                if is_status and proxy.rewrite_status is not None and upstream.status_code == 200:
                    content = json.dumps(proxy.rewrite_status(upstream.json())).encode()
                disposition = upstream.headers.get("Content-Disposition") or ""
                cut = any(f"filename={name}" in disposition for name in proxy.truncate_results)
                if path_only == proxy.RESULT_PATH and proxy.truncate_indexes:
                    index = parse_qs(urlsplit(self.path).query).get("index", [""])[0]
                    cut = cut or (index.isdigit() and int(index) in proxy.truncate_indexes)
                self.send_response(upstream.status_code)
                for name, value in upstream.headers.items():
                    if name.lower() in ("content-type", "content-disposition"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if cut:  # announce everything, send half, hang up
                    self.wfile.write(content[: len(content) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # a short poll interval: shutdown() returns within it (the default is 0.5 s)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def status_requests(self) -> int:
        with self.lock:
            return len(self.status_times)

    def fail_next(self, *codes: int) -> None:
        with self.lock:
            self.failures.extend(codes)

    def conn_json(self, sandbox: dict[str, Any]) -> str:
        """The sandbox connection, with the Provider URL replaced by the proxy's."""
        conn = json.loads(sandbox["conn_json"])
        conn["host"] = self.url
        conn["extra"]["aquarius_url"] = self.url
        return json.dumps(conn)


@contextmanager
def proxy_server(upstream: str) -> Iterator[ProxyServer]:
    proxy = ProxyServer(upstream)
    proxy.thread.start()
    try:
        yield proxy
    finally:
        proxy.server.shutdown()
        proxy.server.server_close()


def triggers_for(job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """``(classpath, kwargs)`` of every trigger row in the metadata DB that waits on ``job_id``.

    A deferring task leaves its serialized trigger there (``dag.test()`` then runs it in-line).
    """
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = [(t.classpath, t.kwargs) for t in session.scalars(select(Trigger))]
    return [(classpath, kwargs) for classpath, kwargs in rows if kwargs.get("job_id") == job_id]
