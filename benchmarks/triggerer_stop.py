"""Triggerer stop with a status request in flight: how long ``airflow triggerer`` takes to exit after
SIGTERM while an ``OceanComputeJobTrigger`` waits on an HTTP request, with the trigger's blocking calls in
daemon threads (``run_blocking``) and, side by side, routed back through ``asyncio.to_thread``.

Setup (real Airflow, nothing mocked): a temporary ``AIRFLOW_HOME`` with a copy of a freshly migrated SQLite
metadata DB (``tests/faults/airflow_cli.py``), a DAG folder with one deferrable
``OceanComputeJobStatusSensor``, and a connection (``AIRFLOW_CONN_OCEAN_SLOW``, a fresh random wallet key)
pointing at a slow HTTP server on a free 127.0.0.1 port that holds every request ``--hold`` seconds (default
120, well above the hook's 30 s read timeout) before answering ``[]``. ``airflow dags reserialize`` and
``airflow dags trigger`` create the DAG run and its task instance; the sensor itself builds the trigger it
defers with (``_defer_until_done`` raising ``TaskDeferred``), which is stored and the task instance put in
the deferred state, as the task runner does.

Each round starts ``airflow triggerer --skip-serve-logs`` (no log server: nothing listens outside
127.0.0.1), waits until the slow server holds the trigger's first request, waits 2 s, sends SIGTERM and
times the exit; the triggerer's log tells whether its supervisor had to escalate to SIGKILL. Between rounds
the trigger's ``triggerer_id`` is reset, so the next triggerer picks it up at once. By default the rounds
alternate between the two modes:

* ``run_blocking``: the provider as shipped;
* ``baseline``: the same, with a ``sitecustomize.py`` (in a temporary directory on the triggerer's
  ``PYTHONPATH``) that sets ``airflow_provider_ocean.triggers.ocean.run_blocking = asyncio.to_thread`` as soon
  as that module is imported (in whichever process imports it), the code before ``run_blocking``.

Goals (``run_blocking`` rounds): the triggerer exits at most 5 s after SIGTERM, and nothing is SIGKILLed
(neither the trigger runner by the supervisor nor the triggerer by the benchmark). The baseline's figures
are printed beside them, not a goal. Every process started is stopped by its PID (its process group).

Run: ``python benchmarks/triggerer_stop.py [--rounds 5] [--hold 120] [--baseline | --no-baseline]``;
``--small``: 2 rounds of each mode with a 10 s hold (smoke run; the 5 s goal is then not enforced).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import _common

from tests.faults import airflow_cli

#: The goal: seconds from SIGTERM to the triggerer's exit with ``run_blocking``.
STOP_GOAL_SECONDS = 5.0
#: Seconds between the slow server holding the trigger's request and the SIGTERM.
SETTLE_SECONDS = 2.0

DAG_FILE = """\
from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_provider_ocean.sensors.ocean import OceanComputeJobStatusSensor

with DAG("ocean_wait", schedule=None, start_date=datetime.datetime(2026, 1, 1), catchup=False) as dag:
    OceanComputeJobStatusSensor(
        task_id="wait", job_id="a" * 32, ocean_conn_id="ocean_slow", deferrable=True, poke_interval=5
    )
"""

#: Run in the Airflow home: defers the task instance with the trigger the sensor itself builds.
DEFER_SCRIPT = """\
import runpy
import sys
import time
from datetime import timedelta

from airflow.models.taskinstance import TaskInstance
from airflow.models.trigger import Trigger
from airflow.sdk.exceptions import TaskDeferred
from airflow.utils.session import create_session
from airflow.utils.state import TaskInstanceState
from sqlalchemy import select

sensor = runpy.run_path(sys.argv[1])["dag"].get_task("wait")
timeout = sensor.timeout.total_seconds() if isinstance(sensor.timeout, timedelta) else float(sensor.timeout)
try:  # as OceanComputeJobStatusSensor.execute defers (no DAG run deadline here)
    sensor._defer_until_done(sensor.job_id, time.time() + timeout, stop_on_kill=True)
    raise SystemExit("the sensor did not defer")
except TaskDeferred as deferred:
    with create_session() as session:
        ti = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == "ocean_wait")).one()
        trigger = Trigger.from_object(deferred.trigger)
        session.add(trigger)
        session.flush()
        ti.state = TaskInstanceState.DEFERRED
        ti.trigger_id = trigger.id
        ti.next_method = deferred.method_name
        ti.next_kwargs = deferred.kwargs
        print("deferred", ti.id, "trigger", trigger.id, deferred.trigger.serialize())
"""

#: ``sitecustomize.py`` of the baseline: the trigger's blocking calls go back to ``asyncio.to_thread``.
BASELINE_SHIM = '''\
"""Benchmark baseline: airflow_provider_ocean.triggers.ocean.run_blocking = asyncio.to_thread."""
import asyncio
import importlib.abc
import importlib.machinery
import os
import sys

TARGET = "airflow_provider_ocean.triggers.ocean"


class _Patch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def patched(module):
            exec_module(module)
            module.run_blocking = asyncio.to_thread
            with open(os.environ["OCEAN_BENCH_SHIM_MARK"], "a") as mark:
                mark.write(f"{os.getpid()}\\n")

        spec.loader.exec_module = patched
        return spec


sys.meta_path.insert(0, _Patch())
'''


class SlowServer(_common.LocalHttpServer):
    """An HTTP server on a free 127.0.0.1 port that holds every request ``hold`` seconds, then answers
    ``[]``; each request is logged as ``(monotonic time, method, path)``. Held requests are released when
    the server stops.

    :param hold: seconds each request is held.
    """

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.log: list[tuple[float, str, str]] = []
        self._changed = threading.Condition()
        self._release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def _hold(self) -> None:
                with server._changed:
                    server.log.append((time.monotonic(), self.command, self.path))
                    server._changed.notify_all()
                server._release.wait(server.hold)
                body = b"[]"
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client has gone
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = _hold

        super().__init__(Handler)

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        super().__exit__(*exc)

    def mark(self) -> int:
        with self._changed:
            return len(self.log)

    def wait_for_request(self, mark: int, timeout: float) -> tuple[float, str, str] | None:
        """The first request logged after ``mark``, waiting up to ``timeout`` seconds; None if none came."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.log) > mark, timeout)
            return self.log[mark] if len(self.log) > mark else None


@dataclass
class Round:
    """One SIGTERM of one triggerer."""

    mode: str
    index: int
    held: str = ""  # "GET /" of the held request
    start_to_held_s: float = float("nan")
    stop_s: float = float("nan")  # SIGTERM → the triggerer's exit
    exit_code: int | None = None
    killed_by_benchmark: bool = False  # did not exit within the stop timeout
    runner_exit: str = ""  # the supervisor's "Process exited" line: exit code and last signal sent
    runner_sigkilled: bool = False
    escalations: int = 0  # "did not terminate in time; escalating" lines
    shim_applied: bool = False
    load: str = ""

    @property
    def no_sigkill(self) -> bool:
        return (
            bool(self.runner_exit)
            and not self.runner_sigkilled
            and not self.killed_by_benchmark
            and self.exit_code not in (None, -signal.SIGKILL)
        )


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL what is left of the process group ``proc`` leads (started with ``start_new_session``)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def reset_trigger(db: Path) -> None:
    """Unassign every trigger, so that the next triggerer picks it up at once."""
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE trigger SET triggerer_id = NULL")


def parse_log(text: str, round_: Round) -> None:
    """Fill the supervisor's view of the trigger runner's exit from the triggerer's log."""
    exited = [line for line in text.splitlines() if "Process exited" in line]
    if exited:
        code = re.search(r"exit_code=(-?\d+)", exited[-1])
        sent = re.search(r"signal_sent=(\w+)", exited[-1])
        round_.runner_exit = f"{code.group(1) if code else '?'} after {sent.group(1) if sent else '-'}"
        round_.runner_sigkilled = bool(
            (sent and sent.group(1) == "SIGKILL") or (code and code.group(1) == str(-signal.SIGKILL))
        )
    round_.escalations = text.count("did not terminate in time")


def run_round(
    mode: str,
    index: int,
    *,
    env: dict[str, str],
    server: SlowServer,
    work: Path,
    stop_timeout: float,
) -> Round:
    """Start a triggerer, SIGTERM it :data:`SETTLE_SECONDS` after its request is held, time its exit."""
    round_ = Round(mode=mode, index=index)
    mark_file = work / f"shim-{mode}-{index}.txt"
    log_file = work / f"triggerer-{mode}-{index}.log"
    run_env = dict(env, OCEAN_BENCH_SHIM_MARK=str(mark_file))
    if mode == "baseline":
        run_env["PYTHONPATH"] = os.pathsep.join([str(work / "shim"), env["PYTHONPATH"]])
    reset_trigger(Path(env["AIRFLOW_HOME"]) / "airflow.db")
    mark = server.mark()
    started = time.monotonic()
    proc = airflow_cli.popen(run_env, log_file, "triggerer", "--skip-serve-logs")
    try:
        request = server.wait_for_request(mark, timeout=120)
        if request is None or proc.poll() is not None:
            print(f"  {mode} {index}: no request held (triggerer exit code {proc.poll()}); see its log:")
            print(log_file.read_text(errors="replace")[-3000:])
            return round_
        round_.held = f"{request[1]} {request[2]}"
        round_.start_to_held_s = request[0] - started
        time.sleep(SETTLE_SECONDS)
        round_.load = _common.load_average()
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            round_.exit_code = proc.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            round_.killed_by_benchmark = True
        round_.stop_s = time.monotonic() - sent
    finally:
        stop_group(proc)
    parse_log(log_file.read_text(errors="replace"), round_)
    round_.shim_applied = mark_file.exists() and bool(mark_file.read_text().strip())
    print(
        f"  {mode} round {index}: request held {round_.start_to_held_s:.1f} s after start, exit "
        f"{round_.stop_s:.2f} s after SIGTERM, exit code {round_.exit_code}, runner exit {round_.runner_exit}"
        f"{', killed by the benchmark' if round_.killed_by_benchmark else ''} (load {round_.load})",
        flush=True,
    )
    return round_


def prepare(tmp: Path, server: SlowServer) -> dict[str, str]:
    """An Airflow home with a deferred sensor task; the environment for ``airflow`` calls in it."""
    from eth_account import Account

    dags = tmp / "dags"
    dags.mkdir()
    dag_file = dags / "ocean_wait.py"
    dag_file.write_text(DAG_FILE)
    (tmp / "shim").mkdir()
    (tmp / "shim" / "sitecustomize.py").write_text(BASELINE_SHIM)
    conn = {
        "conn_type": "ocean",
        "host": server.url,
        "password": "0x" + bytes(Account.create().key).hex(),
        "extra": {"backend": "provider_v4", "chain_id": 8996},
    }
    env = airflow_cli.fresh_home(  # a copy of the migrated template DB
        tmp / "home",
        dags,
        AIRFLOW_CONN_OCEAN_SLOW=json.dumps(conn),
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",  # the supervisor's "Process exited" lines
        PYTHONPATH=os.pathsep.join(filter(None, [str(_common.REPO), os.environ.get("PYTHONPATH")])),
    )
    env.pop("BENCH_AIRFLOW_HOME", None)
    for args in (["dags", "reserialize"], ["dags", "trigger", "ocean_wait", "-r", "bench"]):
        result = airflow_cli.airflow(env, *args)
        if result.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )
    (tmp / "defer_task.py").write_text(DEFER_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(tmp / "defer_task.py"), str(dag_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"deferring the task failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    print("  " + result.stdout.strip().splitlines()[-1])
    return env


def summary(rounds: list[Round]) -> dict[str, Any]:
    stops = [r.stop_s for r in rounds if r.stop_s == r.stop_s]
    return {
        "rounds": len(rounds),
        "stop_seconds": [round(s, 2) for s in stops],
        "stop_seconds_median": round(_common.median(stops), 2) if stops else None,
        "stop_seconds_max": round(max(stops), 2) if stops else None,
        "sigkilled_rounds": sum(not r.no_sigkill for r in rounds),
        "exit_codes": [r.exit_code for r in rounds],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds per mode (default 5; --small: 2)")
    parser.add_argument(
        "--hold", type=float, default=None, help="seconds each request is held (default 120; --small: 10)"
    )
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--baseline", action="store_true", help="only the asyncio.to_thread baseline")
    modes.add_argument("--no-baseline", action="store_true", help="only run_blocking (the provider as is)")
    parser.add_argument("--small", action="store_true", help="2 rounds per mode, 10 s hold (smoke run)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.small else 5)
    hold = args.hold or (10.0 if args.small else 120.0)
    mode_names = ["baseline"] if args.baseline else ["run_blocking"] if args.no_baseline else None
    mode_names = mode_names or ["run_blocking", "baseline"]
    stop_timeout = hold + 60.0
    command = " ".join([Path(sys.executable).name, *sys.argv])
    print(
        f"Triggerer stop with a status request held {hold:g} s: {rounds} round(s) of "
        f"{' and '.join(mode_names)}, SIGTERM {SETTLE_SECONDS:g} s after the request is held"
    )
    print(f"  command: {command}\n  machine: {_common.machine()}")

    # A terminated benchmark still stops its triggerer and deletes its files (finally blocks run).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="ocean-bench-triggerer-"))
    template: Path | None = None
    results: list[Round] = []
    began = time.monotonic()
    try:
        with SlowServer(hold) as server:
            template = airflow_cli.migrated_template()
            env = prepare(tmp, server)
            print(f"  setup: {time.monotonic() - began:.0f} s (migrated DB, DAG run, deferred task)")
            for index in range(1, rounds + 1):
                for mode in mode_names:
                    results.append(
                        run_round(mode, index, env=env, server=server, work=tmp, stop_timeout=stop_timeout)
                    )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if template is not None:
            shutil.rmtree(template, ignore_errors=True)
    wall = time.monotonic() - began
    print(f"\n  end: load average {_common.load_average()}, {wall:.0f} s in all")

    by_mode = {mode: [r for r in results if r.mode == mode] for mode in mode_names}
    _common.print_table(
        f"SIGTERM {SETTLE_SECONDS:g} s into a status request held {hold:g} s",
        [
            "mode",
            "round",
            "held request",
            "start → held s",
            "SIGTERM → exit s",
            "exit code",
            "runner exit (code after last signal)",
            "escalations",
            "to_thread shim",
            "load (1/5/15)",
        ],
        [
            [
                r.mode,
                r.index,
                r.held or "-",
                f"{r.start_to_held_s:.1f}",
                f"{r.stop_s:.2f}" + (" (killed)" if r.killed_by_benchmark else ""),
                r.exit_code,
                r.runner_exit or "-",
                r.escalations,
                "yes" if r.shim_applied else "no",
                r.load,
            ]
            for r in results
        ],
    )
    figures_by_mode = {mode: summary(rs) for mode, rs in by_mode.items()}
    _common.print_table(
        "side by side",
        ["mode", "rounds", "SIGTERM → exit s (median / max)", "SIGKILLed rounds"],
        [
            [
                mode,
                f["rounds"],
                f"{f['stop_seconds_median']} / {f['stop_seconds_max']}",
                f"{f['sigkilled_rounds']}/{f['rounds']}",
            ]
            for mode, f in figures_by_mode.items()
        ],
    )

    goals = _common.Goals("triggerer_stop")
    held = sum(bool(r.held) for r in results)
    goals.check("every round's triggerer had a request held", f"{held}/{len(results)}", held == len(results))
    shims = [r for r in results if r.shim_applied != (r.mode == "baseline")]
    goals.check(
        "to_thread shim in baseline rounds only",
        f"{len(shims)} round(s) wrong",
        not shims and bool(results),
    )
    ours = by_mode.get("run_blocking", [])
    if ours:
        worst = max((r.stop_s for r in ours), default=float("nan"))
        goals.check(
            f"run_blocking: every stop ≤ {STOP_GOAL_SECONDS:g} s after SIGTERM",
            f"max {worst:.2f} s",
            all(r.stop_s <= STOP_GOAL_SECONDS for r in ours),
            enforced=not args.small,
        )
        clean = sum(r.no_sigkill for r in ours)
        goals.check("run_blocking: no SIGKILL", f"{clean}/{len(ours)} rounds without", clean == len(ours))
    figures: dict[str, Any] = {
        "command": command,
        "hold_seconds": hold,
        "settle_seconds": SETTLE_SECONDS,
        "modes": figures_by_mode,
        "rounds": [asdict(r) for r in results],
        "wall_seconds": round(wall, 1),
        "load_average_end": _common.load_average(),
        "machine": _common.machine(),
    }
    return goals.report(figures)


if __name__ == "__main__":
    sys.exit(main())
