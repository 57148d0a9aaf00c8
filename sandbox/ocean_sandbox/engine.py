"""A local imitation of Ocean's v4 compute-to-data backend, without Docker or Kubernetes.

One :class:`JobEngine` plays four v4 components at once:

* **operator-service**: :meth:`~JobEngine.create_job`, :meth:`~JobEngine.list_jobs`,
  :meth:`~JobEngine.stop_jobs` and :meth:`~JobEngine.result_path` store and answer job status objects
  exactly as the operator-service does (fields, status codes and texts, results list, error bodies);
* **operator-engine**: a background thread ticking every ``tick`` seconds (the real engine polls every 5 s)
  picks up status-1 jobs in creation order while fewer than ``max_jobs`` are in the pipeline, moves them
  through the statuses, watches the algorithm, and kills it on a stop request (``stopreq`` 1) or when it
  runs past ``maxtime`` (``stopreq`` 2);
* **pod-configuration**: downloads the inputs (``fetch_input``) and the algorithm (``fetch_algorithm`` or the
  raw code) into the job's volume and answers 30, 31 or 32;
* **pod-publishing**: lists outputs, logs and admin logs into the ``results`` list (always, even after
  31/32 or a stop) and sets ``dateFinished``.

Status sequence: 1 (create) → 20 (picked up) → 30 / 31 / 32 (configure) → 40 (algorithm running) → 60
(publishing) → 70 with ``dateFinished``. After 31/32 the algorithm is skipped, publishing still runs and the
job keeps 31/32. Every status lasts at least until the next engine tick, so a poller sees each of them.

Job layout, under ``<state_dir>/jobs/<jobId>/``::

    workflow.json                 the workflow with ``compute`` overwritten by the engine (maxtime etc.)
    data/                         what the real stack mounts at /data in the algorithm pod
        inputs/<didhex>/<i>       file i of each input, no extension; didhex = DID without "did:op:"
        inputs/algoCustomData.json  only when the workflow algorithm has the key ``algocustomdata``
        transformations/algorithm   algorithm file #0 or the raw code (mode 0o777); further files as 1, 2, ...
        ddos/<didhex>             an input's DDO, when its workflow entry carries a ``ddo`` key
        outputs/                  mode 0o777, written by the algorithm
        logs/algorithm.log        pre-created empty, receives stdout+stderr of the algorithm
    adminlogs/                    configure.log, publish.log: the real /data/adminlogs volume, which is
                                  not mounted in the algorithm pod; kept outside data/ so the algorithm
                                  cannot see it

Algorithm run: ``sh -c <entrypoint>`` with ``$ALGO`` replaced by the absolute path of
``data/transformations/algorithm`` (shell-quoted only if the path needs it), working directory ``data/``,
stdout and stderr merged into ``logs/algorithm.log`` in arrival order, in a new session (process group).
Environment: ``DIDS``, ``TRANSFORMATION_DID``, ``VOLUME``, ``INPUTS``, ``OUTPUTS``, ``LOGS``, ``secret``,
``PATH`` (``python_bin_dir`` first, so ``python $ALGO`` uses the sandbox interpreter), ``HOME``/``LANG`` from
the parent and ``PYTHONUNBUFFERED=1`` so a status poll sees progress in the log.

Deviations from the real stack (deliberate, documented):

* The sandbox cannot mount the job volume at ``/data``: ``$ALGO``, ``VOLUME``, ``INPUTS``, ``OUTPUTS`` and
  ``LOGS`` carry the absolute host paths of the job's ``data/`` directory instead. Portable algorithms use
  these variables or paths relative to the working directory.
* No container image: the entrypoint runs on the host with the host's tools; the image, tag and checksum
  are not used, and there are no CPU/RAM/disk/network limits and no uid change.
* Output goes straight to the log file instead of ``| tee``. The job still ends at 70 whatever the exit code
  (as in v4, where the pipeline hides it), but the engine records the exit status of ``sh -c`` privately
  (:meth:`JobEngine.exit_code`) and writes ``exit code: N`` into ``publish.log`` (negative N = the shell
  was killed by signal -N).
* When the shell exits, whatever is left of its process group is SIGKILLed (a finished pod leaves nothing
  running). Leftover detection after a restart reads ``/proc`` (Linux).
* Publishing "uploads" nothing: the results list always holds every listed file (as with working storage)
  and :meth:`JobEngine.result_path` serves the file from the job directory. Symbolic links in the listed
  folders are not published (only regular files), so an algorithm cannot publish host files.
* A stop sets ``stopreq`` = 1 on every matching job, finished ones included (and over a ``stopreq`` 2), as
  operator-service's ``stop_sql_job`` does; on a finished job nothing else changes and the mark stays. A job
  stopped before its algorithm started is configured and published without running the algorithm (60 → 70,
  ``stopreq`` 1).
* ``maxtime`` (= the environment's ``maxJobDuration``, default 60 s like the real engine) is measured from
  the algorithm start. On a stop or a timeout SIGTERM goes to the whole process group and SIGKILL follows
  after :data:`KILL_GRACE` seconds (also when the shell dies first and the algorithm is still saving work);
  the real engine deletes the pod, with Kubernetes' own grace period.
* Restart: jobs are kept in SQLite (``<state_dir>/jobs.db``). When a new engine starts, every unfinished job
  past status 1 (whatever step it was in when the previous engine stopped or died) has its leftover
  processes killed, its volume wiped and is re-run from configure, like the real operator-engine restarting
  its pods. Jobs still at 1 are simply picked up; finished jobs are served as they are.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

log = logging.getLogger(__name__)

__all__ = ["STATUS_TEXTS", "JobEngine", "OperatorError"]

STATUS_TEXTS: dict[int, str] = {
    1: "Warming up",
    10: "Job started",
    20: "Configuring volumes",
    30: "Provisioning success",
    31: "Data provisioning failed",
    32: "Algorithm provisioning failed",
    40: "Running algorithm ",
    50: "Filtering results",
    60: "Publishing results",
    70: "Job finished",
}
UNKNOWN_STATUS_TEXT = "Unknown status"
DEFAULT_MAX_JOB_DURATION = 60.0
"""The real operator-engine's ``maxtime`` when ``maxJobDuration`` is not set."""
KILL_GRACE = 1.0
"""Seconds between SIGTERM and SIGKILL when the algorithm is stopped."""
RAWCODE_MIN_LENGTH = 10
"""Raw code is written only when longer than this (pod-configuration's rule)."""
DID_PREFIX = "did:op:"
ADMIN_LOG_TYPES = {
    "configure.log": "configrationLog",
    "filter.log": "filteringLog",
    "publish.log": "publishLog",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    agreement_id TEXT NOT NULL,
    status INTEGER NOT NULL,
    date_created TEXT NOT NULL,
    date_finished TEXT,
    results TEXT,
    result_paths TEXT,
    stopreq INTEGER NOT NULL DEFAULT 0,
    removed INTEGER NOT NULL DEFAULT 0,
    algo_did TEXT NOT NULL,
    input_did TEXT NOT NULL,
    workflow TEXT NOT NULL,
    namespace TEXT,
    maxtime REAL NOT NULL,
    provider_address TEXT,
    chain_id INTEGER,
    secret TEXT NOT NULL,
    exit_code INTEGER,
    pid INTEGER
)
"""


class OperatorError(Exception):
    """An operator-service style error answer (forwarded verbatim by the Provider).

    :param status: the HTTP status code, e.g. 404.
    :param body: the JSON body, e.g. ``{"error": "No such index 5 in this compute job"}``.
    """

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("error", body))
        self.status = status
        self.body = body


@dataclass
class _Run:
    """In-memory state of a job in the pipeline (status 20 to 60) of this engine instance."""

    job_id: str
    maxtime: float
    phase: str = "configure"  # configure, configuring, configured, running, publish, publishing, done
    status: int = 20
    worker: threading.Thread | None = None
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    term_sent: float | None = None
    killed: bool = False
    exit_code: int | None = None
    algorithm_ran: bool = False


def _didhex(did: str) -> str:
    return did[len(DID_PREFIX) :] if did.startswith(DID_PREFIX) else did


def _now_text() -> str:
    return f"{time.time():.6f}"


def _max_job_duration(environment: dict[str, Any]) -> float:
    """The environment's ``maxJobDuration`` as seconds (numbers may arrive as strings), else 60 s."""
    try:
        value = float(environment.get("maxJobDuration"))
    except (TypeError, ValueError):
        return DEFAULT_MAX_JOB_DURATION
    return value if value > 0 else DEFAULT_MAX_JOB_DURATION


def _number(value: Any, default: float) -> int | float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float(default)  # a default may be an int: int.is_integer() only exists from Python 3.12
    return int(number) if number.is_integer() else number


def _killpg(pgid: int, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, read from /proc (empty where unavailable)."""
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[0] != "Z" and fields[2] == str(pgid):
            members.append(int(entry))
    return members


def _append_line(path: Path, message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"{stamp} {message}\n")


class JobEngine:
    """operator-service + operator-engine + pod-configuration + pod-publishing, with local subprocesses.

    All public methods are thread-safe.

    :cvar STOP_SIGNAL: what a stop or a timeout sends the algorithm's process group first.

    :param state_dir: directory holding ``jobs.db`` and ``jobs/<jobId>/``; created if missing.
    :param tick: seconds between engine passes (the real operator-engine uses 5 s).
    :param max_jobs: how many jobs may be in the pipeline (statuses 20 to 60) at once; more wait at status 1.
    :param fetch_input: returns the local paths of the files of one workflow input entry
        (``{"index", "id", "remote", ...}``), in file-index order; raising means status 31.
    :param fetch_algorithm: returns the algorithm file bytes of a DID or URL algorithm (the workflow's
        algorithm dict); may also return a sequence of bytes for a multi-file algorithm (file #0 becomes
        ``transformations/algorithm``, the others ``transformations/1``, ...); raising means status 32.
    :param python_bin_dir: directory put first on the algorithm's ``PATH``; default: the directory of
        ``sys.executable``.
    """

    STOP_SIGNAL: int = signal.SIGTERM

    def __init__(
        self,
        state_dir: Path,
        *,
        tick: float = 0.2,
        max_jobs: int = 10,
        fetch_input: Callable[[dict], list[Path]],
        fetch_algorithm: Callable[[dict], bytes],
        python_bin_dir: str | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.tick = tick
        self.max_jobs = max(1, int(max_jobs))
        self.fetch_input = fetch_input
        self.fetch_algorithm = fetch_algorithm
        self.python_bin_dir = python_bin_dir or os.path.dirname(sys.executable)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "jobs").mkdir(exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            str(self.state_dir / "jobs.db"), check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.row_factory = sqlite3.Row
        with self._locked() as db:
            db.execute(_SCHEMA)
        self._runs: dict[str, _Run] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Recover jobs left mid-run by a previous engine and start the background engine thread."""
        if self._thread is not None:
            return
        self._recover()
        self._thread = threading.Thread(target=self._loop, name="ocean-c2d-engine", daemon=True)
        self._thread.start()
        log.info(
            "C2D engine started on %s (tick %s s, max %s jobs)", self.state_dir, self.tick, self.max_jobs
        )

    def close(self) -> None:
        """Stop the engine thread and kill running algorithms (whole process group).

        Jobs left unfinished stay in the database; a new engine over the same ``state_dir`` re-runs them.
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.tick + 10)
        for run in list(self._runs.values()):
            if run.process is not None and run.process.poll() is None:
                log.info("C2D engine closing: killing algorithm of job %s", run.job_id)
                _killpg(run.process.pid, signal.SIGKILL)
                try:
                    run.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    log.warning("algorithm process %s of job %s did not exit", run.process.pid, run.job_id)
            elif run.process is not None:
                _killpg(run.process.pid, signal.SIGKILL)
        workers = [run.worker for run in self._runs.values() if run.worker is not None]
        for worker in workers:
            worker.join(timeout=5)
        if all(not worker.is_alive() for worker in workers):
            with self._lock:
                self._db.close()
        self._runs.clear()

    # -- operator-service API --------------------------------------------------------------------------
    def create_job(
        self,
        *,
        owner: str,
        agreement_id: str,
        workflow: dict,
        environment: dict,
        provider_address: str,
        chain_id: int,
    ) -> dict:
        """Store a new job at status 1 "Warming up" and return its status object.

        The stage's ``compute`` is overwritten with the engine's resources and ``maxtime`` =
        ``environment["maxJobDuration"]``, as the real operator-engine does.

        :param owner: the consumer address exactly as sent (status/stop/result compare it case-sensitively).
        :param agreement_id: the order transaction id chosen by the Provider.
        :param workflow: the workflow the Provider sends (``{"stages": [...], "chainId": ...}``).
        :param environment: the compute environment dict (``id``, ``maxJobDuration``, ...).
        :param provider_address: the Provider's address (stored for reference).
        :param chain_id: the chain id (stored for reference).
        :raises OperatorError: 400 when the workflow has no stage.
        """
        stages = workflow.get("stages") if isinstance(workflow, dict) else None
        if not isinstance(stages, list) or not stages or not isinstance(stages[0], dict):
            raise OperatorError(
                400, {"error": "`workflow` is required in the payload and needs to include `stages`"}
            )
        workflow = json.loads(json.dumps(workflow))
        stage = workflow["stages"][0]
        maxtime = _max_job_duration(environment)
        namespace = str(environment.get("id") or (stage.get("compute") or {}).get("namespace") or "")
        stage["compute"] = {
            "Instances": 1,
            "namespace": namespace,
            "maxtime": _number(maxtime, DEFAULT_MAX_JOB_DURATION),
            "nCPU": _number(environment.get("cpuNumber"), 1),
            "ramGB": _number(environment.get("ramGB"), 1),
            "diskGB": _number(environment.get("diskGB"), 1),
        }
        algorithm = stage.get("algorithm") or {}
        algo_did = algorithm.get("id") or "raw"
        input_did = [entry.get("id") for entry in stage.get("input") or []]
        job_id = uuid.uuid4().hex
        job_dir = self._job_dir(job_id)
        job_dir.mkdir(parents=True)
        (job_dir / "workflow.json").write_text(json.dumps(workflow, indent=2), encoding="utf-8")
        with self._locked() as db:
            db.execute(
                "INSERT INTO jobs (job_id, owner, agreement_id, status, date_created, algo_did, input_did, "
                "workflow, namespace, maxtime, provider_address, chain_id, secret) "
                "VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    owner,
                    agreement_id,
                    _now_text(),
                    algo_did,
                    json.dumps(input_did),
                    json.dumps(workflow),
                    namespace,
                    maxtime,
                    provider_address,
                    chain_id,
                    secrets.token_hex(16),
                ),
            )
            row = self._row(job_id)
        log.info("C2D job %s created for owner %s (agreement %s)", job_id, owner, agreement_id)
        assert row is not None
        return self._status_object(row)

    def list_jobs(self, owner: str, job_id: str | None = None) -> list[dict]:
        """Status objects of ``owner``'s jobs (exact, case-sensitive match), optionally one job, oldest first.

        :param owner: the owner address string exactly as used at start.
        :param job_id: restrict to this job id.
        """
        return [self._status_object(row) for row in self._select(owner, job_id)]

    def stop_jobs(self, owner: str, job_id: str | None = None) -> list[dict]:
        """Request a stop (``stopreq`` = 1) of matching jobs; return their status objects read back after it.

        As operator-service's ``PUT /api/v1/operator/compute`` (``routes.py`` ``stop_compute_job``): every
        job of ``owner`` (or the one ``job_id``) gets ``UPDATE jobs SET stopreq=1`` (``data_store.py``
        ``stop_sql_job``, no condition on the job's state), then ``get_sql_status`` reads them back, so the
        answer already shows ``stopreq`` 1 with ``status`` unchanged. A finished job keeps ``stopreq`` 1 for
        good; an unfinished one is noticed by the engine within a tick, which kills the algorithm, publishes
        and ends the job at 70 with ``stopreq`` 1.

        :param owner: the owner address string exactly as used at start.
        :param job_id: restrict to this job id.
        """
        with self._lock:
            ids = [row["job_id"] for row in self._select(owner, job_id)]
            with self._locked() as db:
                db.executemany("UPDATE jobs SET stopreq = 1 WHERE job_id = ?", [(one,) for one in ids])
            after = [self._status_object(row) for row in self._select(owner, job_id)]
        if ids:
            log.info("C2D stop requested by %s for jobs %s", owner, ids)
        return after

    def result_path(self, owner: str, job_id: str, index: int) -> tuple[Path, str]:
        """The stored file of result ``index`` (position in the ``results`` list) and its filename.

        :param owner: must equal the job's owner exactly.
        :param job_id: the job id.
        :param index: the position in the job's ``results`` list.
        :raises OperatorError: 404 with the operator-service messages.
        """
        with self._lock:
            row = self._row(job_id)
        if row is None:
            raise OperatorError(404, {"error": f"No results for job {job_id}: job not found"})
        if row["owner"] != owner:
            raise OperatorError(404, {"error": f"Owner {owner} mismatch for job {job_id}"})
        if index < 0:
            raise OperatorError(404, {"error": f"Negative index {index}"})
        results = json.loads(row["results"]) if row["results"] else []
        paths = json.loads(row["result_paths"]) if row["result_paths"] else []
        if not results:
            raise OperatorError(404, {"error": f"No results for job {job_id}"})
        if index >= len(results) or index >= len(paths):
            raise OperatorError(404, {"error": f"No such index {index} in this compute job"})
        return self._job_dir(job_id) / paths[index], results[index]["filename"]

    def has_running_job_with_agreement(self, agreement_id: str) -> bool:
        """Whether an unfinished job uses ``agreement_id`` (the operator then refuses a new job)."""
        with self._locked() as db:
            row = db.execute(
                "SELECT 1 FROM jobs WHERE agreement_id = ? AND date_finished IS NULL LIMIT 1", (agreement_id,)
            ).fetchone()
        return row is not None

    # -- extras for the sandbox (not part of the operator-service API) ---------------------------------
    def count_running(self, environment_id: str) -> int:
        """Unfinished jobs (queued ones included) of one environment: ``currentJobs`` of the announcement."""
        with self._locked() as db:
            row = db.execute(
                "SELECT COUNT(*) FROM jobs WHERE namespace = ? AND date_finished IS NULL", (environment_id,)
            ).fetchone()
        return int(row[0])

    def exit_code(self, job_id: str) -> int | None:
        """The algorithm's exit code (negative: killed by that signal); ``None`` if it did not run (yet).

        The real v4 stack loses it; it is kept here for diagnostics only, never in the status object.
        """
        with self._lock:
            row = self._row(job_id)
        return None if row is None else row["exit_code"]

    def job_dir(self, job_id: str) -> Path:
        """The job's directory (``workflow.json``, ``data/``, ``adminlogs/``)."""
        return self._job_dir(job_id)

    # -- storage helpers -------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db

    def _row(self, job_id: str) -> sqlite3.Row | None:
        with self._locked() as db:
            return db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()

    def _select(self, owner: str, job_id: str | None) -> list[sqlite3.Row]:
        with self._locked() as db:
            if job_id is None:
                return db.execute("SELECT * FROM jobs WHERE owner = ? ORDER BY seq", (owner,)).fetchall()
            return db.execute(
                "SELECT * FROM jobs WHERE owner = ? AND job_id = ? ORDER BY seq", (owner, job_id)
            ).fetchall()

    def _update(self, job_id: str, **values: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in values)
        with self._locked() as db:
            db.execute(f"UPDATE jobs SET {columns} WHERE job_id = ?", (*values.values(), job_id))

    @staticmethod
    def _status_object(row: sqlite3.Row) -> dict:
        status = int(row["status"])
        return {
            "agreementId": row["agreement_id"],
            "jobId": row["job_id"],
            "owner": row["owner"],
            "status": status,
            "statusText": STATUS_TEXTS.get(status, UNKNOWN_STATUS_TEXT),
            "dateCreated": row["date_created"],
            "dateFinished": row["date_finished"],
            "results": json.loads(row["results"]) if row["results"] is not None else "",
            "stopreq": int(row["stopreq"]),
            "removed": int(row["removed"]),
            "algoDID": row["algo_did"],
            "inputDID": json.loads(row["input_did"]),
        }

    def _job_dir(self, job_id: str) -> Path:
        return (self.state_dir / "jobs" / job_id).absolute()

    # -- engine loop -----------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:
                log.exception("C2D engine tick failed")
            self._stop.wait(self.tick)

    def _tick(self) -> None:
        with self._locked() as db:
            rows = db.execute("SELECT * FROM jobs WHERE date_finished IS NULL ORDER BY seq").fetchall()
        by_id = {row["job_id"]: row for row in rows}
        for run in list(self._runs.values()):
            if self._stop.is_set():
                return
            self._advance(run, by_id.get(run.job_id))
        for row in rows:
            if len(self._runs) >= self.max_jobs:
                break
            if row["status"] == 1 and row["job_id"] not in self._runs:
                self._update(row["job_id"], status=20)
                self._runs[row["job_id"]] = _Run(row["job_id"], maxtime=float(row["maxtime"]))
                log.info("C2D job %s picked up (status 20)", row["job_id"])

    def _advance(self, run: _Run, row: sqlite3.Row | None) -> None:
        if run.phase == "done" or (row is None and run.phase not in ("configuring", "publishing")):
            self._runs.pop(run.job_id, None)
        elif run.phase == "configure":
            self._spawn(run, self._configure, "configuring")
        elif run.phase == "configured":
            assert row is not None
            if run.status != 30:
                run.phase = "publish"
            elif row["stopreq"]:
                log.info("C2D job %s stopped before its algorithm started", run.job_id)
                self._set_status(run, 60)
                run.phase = "publish"
            else:
                self._launch(run)
        elif run.phase == "running":
            assert row is not None
            self._watch(run, row)
        elif run.phase == "publish":
            self._spawn(run, self._publish, "publishing")

    def _spawn(self, run: _Run, target: Callable[[_Run], None], phase: str) -> None:
        run.phase = phase
        run.worker = threading.Thread(
            target=self._guarded, args=(run, target), name=f"c2d-{phase}-{run.job_id[:8]}", daemon=True
        )
        run.worker.start()

    def _guarded(self, run: _Run, target: Callable[[_Run], None]) -> None:
        try:
            target(run)
        except Exception:
            log.exception("C2D job %s: %s step failed", run.job_id, run.phase)
            if run.phase == "configuring":
                run.status = 31
                try:
                    self._update(run.job_id, status=31)
                except sqlite3.Error:
                    log.exception("C2D job %s: could not store status 31", run.job_id)
                run.phase = "configured"
            elif run.phase == "publishing":
                try:
                    self._update(run.job_id, date_finished=_now_text())
                except sqlite3.Error:
                    log.exception("C2D job %s: could not finish", run.job_id)
                run.phase = "done"

    def _set_status(self, run: _Run, status: int, **values: Any) -> None:
        run.status = status
        self._update(run.job_id, status=status, **values)

    # -- restart recovery ------------------------------------------------------------------------------
    def _recover(self) -> None:
        with self._locked() as db:
            rows = db.execute(
                "SELECT * FROM jobs WHERE date_finished IS NULL AND status != 1 ORDER BY seq"
            ).fetchall()
        for row in rows:
            job_id = row["job_id"]
            if row["pid"]:
                members = _group_members(int(row["pid"]))
                if members:
                    log.warning("C2D job %s: killing leftover algorithm processes %s", job_id, members)
                    _killpg(int(row["pid"]), signal.SIGKILL)
            job_dir = self._job_dir(job_id)
            for name in ("data", "adminlogs"):
                shutil.rmtree(job_dir / name, ignore_errors=True)
            self._update(job_id, status=20, results=None, result_paths=None, exit_code=None, pid=None)
            self._runs[job_id] = _Run(job_id, maxtime=float(row["maxtime"]))
            log.info(
                "C2D job %s was interrupted at status %s: re-running it from configure", job_id, row["status"]
            )

    # -- pod-configuration -----------------------------------------------------------------------------
    def _configure(self, run: _Run) -> None:
        row = self._row(run.job_id)
        assert row is not None
        stage = json.loads(row["workflow"])["stages"][0]
        job_dir = self._job_dir(run.job_id)
        data = job_dir / "data"
        admin = job_dir / "adminlogs"
        for folder in ("inputs", "transformations", "ddos", "outputs", "logs"):
            (data / folder).mkdir(parents=True, exist_ok=True)
        admin.mkdir(parents=True, exist_ok=True)
        os.chmod(data / "outputs", 0o777)
        (data / "logs" / "algorithm.log").write_bytes(b"")
        configure_log = admin / "configure.log"
        configure_log.touch()
        _append_line(configure_log, f"configuring job {run.job_id}")
        status = 30
        try:
            self._provision_inputs(stage, data, configure_log)
        except Exception as exc:
            log.info("C2D job %s: data provisioning failed: %s", run.job_id, exc)
            _append_line(configure_log, f"data provisioning failed: {type(exc).__name__}: {exc}")
            status = 31
        if status == 30:
            try:
                self._provision_algorithm(stage.get("algorithm") or {}, data, configure_log)
            except Exception as exc:
                log.info("C2D job %s: algorithm provisioning failed: %s", run.job_id, exc)
                _append_line(configure_log, f"algorithm provisioning failed: {type(exc).__name__}: {exc}")
                status = 32
        _append_line(configure_log, f"configuration finished with status {status} ({STATUS_TEXTS[status]})")
        self._set_status(run, status)
        run.phase = "configured"

    def _provision_inputs(self, stage: dict, data: Path, configure_log: Path) -> None:
        inputs = data / "inputs"
        for entry in stage.get("input") or []:
            did = str(entry.get("id") or "")
            didhex = _didhex(did)
            if not didhex or "/" in didhex or didhex in (".", ".."):
                raise ValueError(f"invalid input id {did!r}")
            _append_line(configure_log, f"downloading input {entry.get('index')} ({did})")
            paths = list(self.fetch_input(entry))
            if not paths:
                raise ValueError(f"input {did} has no files")
            target = inputs / didhex
            target.mkdir(exist_ok=True)
            for index, path in enumerate(paths):
                shutil.copyfile(path, target / str(index))
                _append_line(configure_log, f"  file {index}: {(target / str(index)).stat().st_size} bytes")
            if "ddo" in entry:
                ddo = entry["ddo"]
                text = ddo if isinstance(ddo, str) else json.dumps(ddo)
                (data / "ddos" / didhex).write_text(text, encoding="utf-8")
        _append_line(configure_log, "inputs provisioned")

    def _provision_algorithm(self, algorithm: dict, data: Path, configure_log: Path) -> None:
        if "algocustomdata" in algorithm:
            (data / "inputs" / "algoCustomData.json").write_text(
                json.dumps(algorithm["algocustomdata"]), encoding="utf-8"
            )
            _append_line(configure_log, "wrote inputs/algoCustomData.json")
        rawcode = algorithm.get("rawcode") or ""
        files: list[bytes]
        if len(rawcode) > RAWCODE_MIN_LENGTH:
            _append_line(configure_log, f"writing raw algorithm code ({len(rawcode)} characters)")
            files = [rawcode.encode("utf-8")]
        elif algorithm.get("id") or algorithm.get("url"):
            source = algorithm.get("id") or "url"
            _append_line(configure_log, f"downloading algorithm ({source})")
            fetched = self.fetch_algorithm(algorithm)
            if isinstance(fetched, (bytes, bytearray)):
                files = [bytes(fetched)]
            else:
                files = [bytes(one) for one in fetched]
            if not files:
                raise ValueError("the algorithm has no files")
        else:
            raise ValueError("no raw code (longer than 10 characters), DID or url for the algorithm")
        transformations = data / "transformations"
        for index, content in enumerate(files):
            path = transformations / ("algorithm" if index == 0 else str(index))
            path.write_bytes(content)
            os.chmod(path, 0o777)
        if "ddo" in algorithm and algorithm.get("id"):
            ddo = algorithm["ddo"]
            text = ddo if isinstance(ddo, str) else json.dumps(ddo)
            (data / "ddos" / _didhex(str(algorithm["id"]))).write_text(text, encoding="utf-8")
        _append_line(configure_log, f"algorithm provisioned ({len(files)} file(s))")

    # -- algorithm pod ---------------------------------------------------------------------------------
    def _algorithm_env(self, row: sqlite3.Row, stage: dict, data: Path) -> dict[str, str]:
        algorithm = stage.get("algorithm") or {}
        dids = [_didhex(str(entry.get("id") or "")) for entry in stage.get("input") or []]
        env = {
            "DIDS": json.dumps(dids),
            "TRANSFORMATION_DID": _didhex(str(algorithm.get("id") or "")),
            "VOLUME": str(data),
            "INPUTS": str(data / "inputs"),
            "OUTPUTS": str(data / "outputs"),
            "LOGS": str(data / "logs"),
            "secret": row["secret"],
            "PATH": os.pathsep.join([self.python_bin_dir, os.environ.get("PATH", os.defpath)]),
            "PYTHONUNBUFFERED": "1",
        }
        for name in ("HOME", "LANG"):
            if name in os.environ:
                env[name] = os.environ[name]
        return env

    def _launch(self, run: _Run) -> None:
        row = self._row(run.job_id)
        assert row is not None
        stage = json.loads(row["workflow"])["stages"][0]
        data = self._job_dir(run.job_id) / "data"
        algorithm_path = data / "transformations" / "algorithm"
        entrypoint = str(((stage.get("algorithm") or {}).get("container") or {}).get("entrypoint") or "")
        command = entrypoint.replace("$ALGO", shlex.quote(str(algorithm_path)))
        log_path = data / "logs" / "algorithm.log"
        try:
            with log_path.open("ab") as out:
                process = subprocess.Popen(
                    ["sh", "-c", command],
                    cwd=str(data),
                    env=self._algorithm_env(row, stage, data),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as exc:
            log.error("C2D job %s: could not start the algorithm: %s", run.job_id, exc)
            with log_path.open("a", encoding="utf-8") as out:
                out.write(f"could not start the algorithm: {exc}\n")
            self._set_status(run, 60)
            run.phase = "publish"
            return
        run.process = process
        run.started = time.monotonic()
        run.algorithm_ran = True
        self._set_status(run, 40, pid=process.pid)
        run.phase = "running"
        log.info("C2D job %s: algorithm running as pid %s: %s", run.job_id, process.pid, command)

    def _watch(self, run: _Run, row: sqlite3.Row) -> None:
        process = run.process
        assert process is not None
        code = process.poll()
        now = time.monotonic()
        if code is not None:
            if (
                run.term_sent is not None
                and not run.killed
                and now - run.term_sent < KILL_GRACE
                and _group_members(process.pid)
            ):
                return  # the shell died of SIGTERM: give the rest of the group its grace period
            _killpg(process.pid, signal.SIGKILL)  # like a deleted pod: nothing of the job survives
            run.exit_code = code
            self._set_status(run, 60, exit_code=code)
            run.phase = "publish"
            log.info("C2D job %s: algorithm exited with code %s", run.job_id, code)
            return
        if run.term_sent is None:
            if row["stopreq"]:
                log.info("C2D job %s: stop requested, stopping the algorithm", run.job_id)
            elif now - run.started > run.maxtime:
                log.info("C2D job %s: algorithm exceeded maxtime %s s, killing it", run.job_id, run.maxtime)
                with self._locked() as db:
                    db.execute("UPDATE jobs SET stopreq = 2 WHERE job_id = ? AND stopreq = 0", (run.job_id,))
            else:
                return
            run.term_sent = now
            _killpg(process.pid, self.STOP_SIGNAL)
        elif not run.killed and now - run.term_sent >= KILL_GRACE:
            run.killed = True
            _killpg(process.pid, signal.SIGKILL)

    # -- pod-publishing --------------------------------------------------------------------------------
    def _publish(self, run: _Run) -> None:
        row = self._row(run.job_id)
        assert row is not None
        job_dir = self._job_dir(run.job_id)
        data = job_dir / "data"
        admin = job_dir / "adminlogs"
        admin.mkdir(parents=True, exist_ok=True)
        publish_log = admin / "publish.log"
        publish_log.touch()
        _append_line(publish_log, f"publishing results of job {run.job_id} (status {run.status})")
        if run.algorithm_ran:
            _append_line(publish_log, f"exit code: {run.exit_code}")
        else:
            _append_line(publish_log, "algorithm not run")
        if row["stopreq"] == 1:
            _append_line(publish_log, "algorithm stopped on request (stopreq 1)")
        elif row["stopreq"] == 2:
            _append_line(publish_log, f"algorithm killed after exceeding maxtime {run.maxtime} s (stopreq 2)")
        folders = [
            ("data/outputs", lambda _name: "output"),
            ("data/logs", _log_type),
            ("adminlogs", _admin_type),
        ]
        candidates: list[tuple[str, str, str]] = []  # (relative path, filename, type)
        for folder, kind in folders:
            for name in _regular_files(job_dir / folder):
                candidates.append((f"{folder}/{name}", name, kind(name)))
        published_outputs = set(_regular_files(data / "outputs"))
        for name in sorted(set(_all_entries(data / "outputs")) - published_outputs):
            _append_line(publish_log, f"skipping outputs/{name}: not a regular file")
        for rel, _name, kind in candidates:
            _append_line(publish_log, f"uploading {rel.removeprefix('data/')} as {kind}")
        _append_line(publish_log, f"published {len(candidates)} file(s)")
        # publish.log is complete from here on: the sizes below match the files served
        results = []
        paths = []
        for rel, name, kind in candidates:
            try:
                size = (job_dir / rel).stat().st_size
            except OSError:
                continue
            results.append({"filename": name, "filesize": size, "type": kind})
            paths.append(rel)
        final = 70 if run.status == 60 else run.status
        self._set_status(
            run, final, results=json.dumps(results), result_paths=json.dumps(paths), date_finished=_now_text()
        )
        run.phase = "done"
        log.info("C2D job %s finished with status %s (%s results)", run.job_id, final, len(results))


def _log_type(name: str) -> str:
    return "algorithmLog" if name == "algorithm.log" else "output"


def _admin_type(name: str) -> str:
    return ADMIN_LOG_TYPES.get(name, "output")


def _all_entries(folder: Path) -> list[str]:
    try:
        return [entry.name for entry in os.scandir(folder)]
    except OSError:
        return []


def _regular_files(folder: Path) -> Sequence[str]:
    """Names of the regular files directly in ``folder`` (no subdirectories, no symlinks), name-sorted."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return sorted(entry.name for entry in entries if entry.is_file(follow_symlinks=False))
