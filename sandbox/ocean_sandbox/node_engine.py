"""The Ocean Node job runtime of the sandbox: :class:`~.engine.JobEngine` with Ocean Node's layout.

A small adapter over the v4 engine (whose behaviour is unchanged): the queue, the engine thread, stop and
``maxJobDuration`` kills, persistence and restart recovery are the engine's; this subclass changes only what
Ocean Node's Docker engine does differently (docs/reference/c2d-job-runtime.md §5-6):

- an image step first: status 10 "Pulling algorithm image" with an ``image.log`` (no image is pulled);
- inputs are **flat**: ``data/inputs/<last path segment of the file URL>`` (same names overwrite);
- ``data/inputs/algoCustomData.json`` is **always** written (``{}`` by default); raw code of any length;
- the entrypoint is split on single spaces (exec form, no shell) with ``$ALGO`` replaced by the
  **relative** ``data/transformations/algorithm``, run with the job folder as working directory (so the
  relative path resolves as it does from ``/`` in the container);
- the environment holds only ``algorithm.envs`` plus, because the sandbox cannot mount ``/data``,
  ``VOLUME``/``INPUTS``/``OUTPUTS``/``LOGS`` pointing at the job folder (no ``DIDS``,
  ``TRANSFORMATION_DID`` or ``secret``);
- the algorithm's stdout and stderr are kept as Docker keeps a container's log without a TTY: multiplexed
  frames in ``algorithm.log`` (:mod:`ocean_sandbox.docker_logs`), when the release followed does so;
- a stop (or ``maxJobDuration``) kills the algorithm with the release's stop signal (SIGKILL: exit 137);
- after the run the job passes 60 "Publishing results" and ends at 71 "Job settling" with the exit code
  recorded, ``outputs.tar`` (a real tar of ``data/outputs`` with entries under ``outputs/``) and the
  release's results list with explicit indexes. A command that cannot be started ends at 41 "Failed to
  run algorithm" with the error as plain text in ``algorithm.log``.

The node release followed, and what differs between releases, is :mod:`ocean_sandbox.node_release`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ocean_sandbox import docker_logs
from ocean_sandbox.engine import JobEngine, _append_line, _killpg
from ocean_sandbox.node_release import RELEASE

if TYPE_CHECKING:
    import sqlite3

    from ocean_sandbox.engine import _Run

log = logging.getLogger(__name__)

ALGO_RELATIVE = "data/transformations/algorithm"
#: Created by :mod:`ocean_sandbox.docker_logs` when the algorithm could not be started.
LAUNCH_FAILED = "adminlogs/launch-failed"
_NODE_SCHEMA = """
CREATE TABLE IF NOT EXISTS node_runs (
    job_id TEXT PRIMARY KEY,
    algo_start REAL,
    algo_stop REAL,
    launch_failed INTEGER NOT NULL DEFAULT 0
)
"""


def url_basename(url: str) -> str:
    """The last path segment of a file URL (empty when the URL ends with ``/``), as Ocean Node names inputs.

    :param url: the file's URL.
    """
    path = urlsplit(url).path
    return path.rsplit("/", 1)[-1]


class NodeJobEngine(JobEngine):
    """:class:`JobEngine` with Ocean Node's job layout, statuses and results (see the module docstring).

    ``fetch_input`` must return one local path per file whose **name** is the input's final file name.
    """

    STOP_SIGNAL = RELEASE.stop_signal

    def __init__(self, state_dir: Path, **kwargs: Any) -> None:
        super().__init__(state_dir, **kwargs)
        with self._locked() as db:
            db.execute(_NODE_SCHEMA)

    # -- extra facts -----------------------------------------------------------------------------------
    def run_facts(self, job_id: str) -> dict[str, Any]:
        """``{"algo_start", "algo_stop", "launch_failed", "exit_code", "status", ...}`` of an engine job.

        :param job_id: the engine's job id.
        """
        with self._locked() as db:
            row = db.execute(
                "SELECT j.status, j.exit_code, j.date_finished, j.date_created, j.results, j.stopreq, "
                "n.algo_start, n.algo_stop, n.launch_failed "
                "FROM jobs j LEFT JOIN node_runs n ON n.job_id = j.job_id WHERE j.job_id = ?",
                (job_id,),
            ).fetchone()
        return dict(row) if row is not None else {}

    def set_status(self, job_id: str, status: int) -> None:
        """Overwrite a finished job's status (the payment cron moves 71 → 70).

        :param job_id: the engine's job id.
        :param status: the new code.
        """
        self._update(job_id, status=status)

    def request_stop(self, job_id: str) -> None:
        """Mark one job for stopping (``stopreq`` 1) if it is unfinished and not marked yet.

        :param job_id: the engine's job id.
        """
        with self._locked() as db:
            db.execute(
                "UPDATE jobs SET stopreq = 1 WHERE job_id = ? AND stopreq = 0 AND date_finished IS NULL",
                (job_id,),
            )

    def log_path(self, job_id: str) -> Path:
        """The live algorithm log of a job.

        :param job_id: the engine's job id.
        """
        return self._job_dir(job_id) / "data" / "logs" / "algorithm.log"

    def is_running(self, job_id: str) -> bool:
        """Whether the job's algorithm is running now (status 40).

        :param job_id: the engine's job id.
        """
        row = self._row(job_id)
        return row is not None and row["status"] == 40 and row["date_finished"] is None

    def _node_update(self, job_id: str, **values: Any) -> None:
        with self._locked() as db:
            db.execute("INSERT OR IGNORE INTO node_runs (job_id) VALUES (?)", (job_id,))
            columns = ", ".join(f"{name} = ?" for name in values)
            db.execute(f"UPDATE node_runs SET {columns} WHERE job_id = ?", (*values.values(), job_id))

    # -- image + configure -----------------------------------------------------------------------------
    def _configure(self, run: _Run) -> None:
        row = self._row(run.job_id)
        assert row is not None
        container = ((json.loads(row["workflow"])["stages"][0].get("algorithm") or {}).get("container")) or {}
        admin = self._job_dir(run.job_id) / "adminlogs"
        admin.mkdir(parents=True, exist_ok=True)
        image = str(container.get("image") or "")
        reference = (
            f"{image}@{container['checksum']}"
            if container.get("checksum")
            else f"{image}:{container.get('tag') or 'latest'}"
        )
        self._set_status(run, 10)
        _append_line(admin / "image.log", f"Pulling image {reference}")
        _append_line(admin / "image.log", "sandbox: no image is pulled; the entrypoint runs on the host")
        self._stop.wait(self.tick)  # let a poller see status 10
        self._set_status(run, 20)
        self._set_status(run, 30)
        super()._configure(run)
        configure = admin / "configure.log"
        if configure.exists():
            os.replace(configure, admin / "configuration.log")

    def _provision_inputs(self, stage: dict, data: Path, configure_log: Path) -> None:
        inputs = data / "inputs"
        for entry in stage.get("input") or []:
            _append_line(configure_log, f"downloading input {entry.get('index')}")
            for path in self.fetch_input(entry):
                name = Path(path).name
                if not name or name in (".", ".."):
                    raise ValueError("the input file has no name (its URL ends with '/')")
                shutil.copyfile(path, inputs / name)
                _append_line(configure_log, f"  inputs/{name}: {(inputs / name).stat().st_size} bytes")
        _append_line(configure_log, "inputs provisioned")

    def _provision_algorithm(self, algorithm: dict, data: Path, configure_log: Path) -> None:
        custom = algorithm.get("algocustomdata")
        (data / "inputs" / "algoCustomData.json").write_text(
            json.dumps(custom if custom is not None else {}), encoding="utf-8"
        )
        _append_line(configure_log, "wrote inputs/algoCustomData.json")
        rawcode = algorithm.get("rawcode") or ""
        if rawcode:
            content = rawcode.encode("utf-8")
        elif algorithm.get("id") or algorithm.get("url"):
            fetched = self.fetch_algorithm(algorithm)
            content = bytes(fetched) if isinstance(fetched, bytes | bytearray) else bytes(list(fetched)[0])
        else:
            raise ValueError("the algorithm has neither raw code nor a file")
        path = data / "transformations" / "algorithm"
        path.write_bytes(content)
        os.chmod(path, 0o777)
        _append_line(configure_log, f"algorithm provisioned ({len(content)} bytes)")

    # -- run -------------------------------------------------------------------------------------------
    def _algorithm_env(self, row: sqlite3.Row, stage: dict, data: Path) -> dict[str, str]:
        algorithm = stage.get("algorithm") or {}
        env = {
            # sandbox deviation: the job folder is not mounted at /data, and no image brings its own PATH
            "VOLUME": str(data),
            "INPUTS": str(data / "inputs"),
            "OUTPUTS": str(data / "outputs"),
            "LOGS": str(data / "logs"),
            "PATH": os.pathsep.join([self.python_bin_dir, os.environ.get("PATH", os.defpath)]),
            "PYTHONUNBUFFERED": "1",
        }
        for name in ("HOME", "LANG"):
            if name in os.environ:
                env[name] = os.environ[name]
        # the algorithm's own envs win, as the node passes them to the container unchanged
        env.update({str(k): str(v) for k, v in (algorithm.get("envs") or {}).items()})
        return env

    def _launch(self, run: _Run) -> None:
        row = self._row(run.job_id)
        assert row is not None
        stage = json.loads(row["workflow"])["stages"][0]
        job_dir = self._job_dir(run.job_id)
        data = job_dir / "data"
        entrypoint = str(((stage.get("algorithm") or {}).get("container") or {}).get("entrypoint") or "")
        argv = [part for part in entrypoint.replace("$ALGO", ALGO_RELATIVE).split(" ") if part]
        log_path = data / "logs" / "algorithm.log"
        if RELEASE.framed_logs and argv:
            # the container has no TTY: its output is kept as Docker's multiplexed frames
            argv = [
                sys.executable,
                docker_logs.__file__,
                str(log_path),
                str(job_dir / LAUNCH_FAILED),
                "--",
                *argv,
            ]
        try:
            if not argv:
                raise OSError("empty entrypoint")
            with log_path.open("ab") as out:
                process = subprocess.Popen(
                    argv,
                    cwd=str(job_dir),
                    env=self._algorithm_env(row, stage, data),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as exc:
            log.info("Node job %s: could not start the algorithm: %s", run.job_id, exc)
            with log_path.open("a", encoding="utf-8") as out:
                out.write(f"could not start the algorithm: {exc}\n")
            self._node_update(run.job_id, launch_failed=1)
            self._set_status(run, 60)
            run.phase = "publish"
            return
        run.process = process
        run.started = time.monotonic()
        run.algorithm_ran = True
        self._node_update(run.job_id, algo_start=time.time())
        self._set_status(run, 40, pid=process.pid)
        run.phase = "running"
        log.info("Node job %s: algorithm running as pid %s: %s", run.job_id, process.pid, argv)

    # -- results ---------------------------------------------------------------------------------------
    def _publish(self, run: _Run) -> None:
        row = self._row(run.job_id)
        assert row is not None
        if run.status == 60:
            self._stop.wait(self.tick)  # the node publishes in its next engine pass: let a poller see 60
        facts = self.run_facts(run.job_id)
        job_dir = self._job_dir(run.job_id)
        data = job_dir / "data"
        admin = job_dir / "adminlogs"
        admin.mkdir(parents=True, exist_ok=True)
        if facts.get("algo_start") and not facts.get("algo_stop"):
            self._node_update(run.job_id, algo_stop=time.time())
        if run.process is not None:
            _killpg(run.process.pid, signal.SIGKILL)
        if (job_dir / LAUNCH_FAILED).exists():  # the node could not start the container
            self._node_update(run.job_id, launch_failed=1)
            self._update(run.job_id, exit_code=None)
            run.exit_code = None
            facts["launch_failed"] = 1
        publish_log = admin / "publish.log"
        _append_line(publish_log, f"publishing results of job {run.job_id} (status {run.status})")
        final = run.status
        if run.status == 60:
            final = 41 if facts.get("launch_failed") else 71
        if run.algorithm_ran:
            _append_line(publish_log, f"exit code: {run.exit_code}")
        if final == 71 and (data / "outputs").is_dir():
            try:
                with tarfile.open(job_dir / "outputs.tar", "w") as archive:
                    archive.add(data / "outputs", arcname="outputs")
                _append_line(publish_log, "archived /data/outputs as outputs.tar")
            except OSError as exc:
                _append_line(publish_log, f"could not archive the outputs: {exc}")
                final = 61
        results: list[dict[str, Any]] = []
        paths: list[str] = []
        # the sandbox's own record (a real node writes none, and the release may not list it)
        _append_line(publish_log, f"job ends with status {final}")
        for filename, rel, kind in RELEASE.result_files:
            path = job_dir / rel
            if not path.is_file():
                continue
            results.append(
                {"filename": filename, "filesize": path.stat().st_size, "type": kind, "index": len(results)}
            )
            paths.append(rel)
        self._set_status(
            run,
            final,
            results=json.dumps(results),
            result_paths=json.dumps(paths),
            date_finished=f"{time.time():.3f}",
        )
        run.phase = "done"
        log.info("Node job %s finished with status %s (%s results)", run.job_id, final, len(results))

    def result_file(self, job_id: str, index: int) -> tuple[Path, str] | None:
        """The stored file of result ``index`` (the node's explicit index), or ``None``.

        :param job_id: the engine's job id.
        :param index: the result index.
        """
        row = self._row(job_id)
        if row is None or not row["results"]:
            return None
        results = json.loads(row["results"])
        paths = json.loads(row["result_paths"] or "[]")
        for entry, rel in zip(results, paths, strict=False):
            if int(entry.get("index", -1)) == index:
                return self._job_dir(job_id) / rel, str(entry["filename"])
        return None
