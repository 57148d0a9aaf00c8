"""The exactly-once fault scenarios, as plain functions shared by pytest and the benchmark runner.

Each scenario scripts the proxies, runs a *client* and returns an :class:`Outcome` counted from outside
(jobs from the sandbox Provider directly, orders from chain logs, result bytes against the sandbox's own
files). Two clients:

- ``"hook"``: ``OceanComputeHook.run_compute`` once (no retry), then wait and download with the hook;
- ``"task"``: ``OceanComputeStartOperator.execute`` (``wait_for_completion``, not deferrable) retried once
  on failure like an Airflow task with ``retries=1`` (same XComs and task state), then
  ``OceanComputeResultsOperator.execute``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from tests.faults import harness
from tests.faults.proxy import FaultProxy

START = ("POST", "/api/services/compute")
STATUS = ("GET", "/api/services/compute")
RESULT = ("GET", "/api/services/computeResult")
NONCE = ("GET", "/api/services/nonce")
ENVIRONMENTS = ("GET", "/api/services/computeEnvironments")
CONN_ID = "ocean_faults"


@dataclasses.dataclass
class Outcome:
    """What one scenario run did, counted from outside the client."""

    name: str
    client: str
    job_id: str | None = None
    error: str | None = None
    error_type: str | None = None
    jobs: list[str] = dataclasses.field(default_factory=list)
    orders: dict[str, int] = dataclasses.field(default_factory=dict)
    transactions: int = 0
    terminal: bool = True
    succeeded_jobs: int = 0
    results_expected: int = 0
    results_ok: int = 0
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    sequence: list[str] = dataclasses.field(default_factory=list)
    elapsed: float = 0.0
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def duplicate_jobs(self) -> int:
        return max(0, len(self.jobs) - 1)

    @property
    def duplicate_orders(self) -> int:
        return sum(max(0, n - 1) for n in self.orders.values())

    @property
    def lost_results(self) -> int:
        """Results of a job that ran to success but did not reach the client intact."""
        if not self.succeeded_jobs:
            return 0
        return 1 if self.results_expected == 0 or self.results_ok < self.results_expected else 0

    def summary(self) -> str:
        return (
            f"{self.name}[{self.client}]: jobs={len(self.jobs)} orders={self.orders} tx={self.transactions} "
            f"terminal={self.terminal} results={self.results_ok}/{self.results_expected} "
            f"error={self.error_type}: {(self.error or '')[:300]}"
        )


class FaultLab:
    """A sandbox plus a Provider proxy and an RPC proxy; scenarios script the proxies.

    :param info: the sandbox info dict (``Sandbox.info()`` plus ``"sandbox"``, the Sandbox object).
    """

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self.provider = FaultProxy(info["provider_url"]).start()
        self.rpc = FaultProxy(info["rpc_url"]).start()
        self.owner = info["consumer"]["address"]
        assets = info["assets"]
        self.dataset = assets["dataset"]
        self.algorithm = assets["algorithm"]
        self.dataset_raw = assets["dataset_raw"]
        self.workdir = Path(tempfile.mkdtemp(prefix="ocean-faults-"))
        #: use quick raw jobs (one order) instead of the published algorithm (two orders)
        self.fast = False

    def close(self) -> None:
        self.provider.stop()
        self.rpc.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def reset(self) -> None:
        self.provider.clear()
        self.rpc.clear()

    def connect(self, conn_id: str = CONN_ID, **extra: Any) -> str:
        harness.set_connection(
            conn_id, harness.conn_json(self.info, host=self.provider.url, rpc_url=self.rpc.url, **extra)
        )
        return conn_id

    def hook(self, conn_id: str = CONN_ID, **kwargs: Any) -> Any:
        from airflow_provider_ocean.hooks.ocean import OceanComputeHook

        kwargs.setdefault("retry_delay", 0.1)
        return OceanComputeHook(conn_id, **kwargs)

    def ledger(self, datatokens: list[str]) -> harness.Ledger:
        return harness.Ledger.take(self.info, self.owner, datatokens)

    def fresh_dir(self, name: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workdir))
        return path


# -- inputs ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Job:
    """What to run: the datasets, the algorithm and the datatokens that get orders."""

    datasets: list[str]
    algorithm: Any
    datatokens: list[str]


def published_job(lab: FaultLab) -> Job:
    """The weather dataset with the published algorithm: two orders (the algorithm's is the agreementId)."""
    if lab.fast:
        return sleeping_job(lab, 0.0)
    return Job(
        [lab.dataset["did"]],
        {"did": lab.algorithm["did"]},
        [lab.dataset["datatoken"], lab.algorithm["datatoken"]],
    )


def sleeping_job(lab: FaultLab, seconds: float) -> Job:
    """A raw algorithm that runs ``seconds`` on the dataset that allows raw code: one order."""
    return Job([lab.dataset_raw["did"]], harness.raw_sleep_algorithm(seconds), [lab.dataset_raw["datatoken"]])


# -- clients -----------------------------------------------------------------------------------------------
def _wait_with_hook(hook: Any, job_id: str, timeout: float = 90.0, poll: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = hook.get_job_status(job_id)
        if job.is_terminal or time.monotonic() >= deadline:
            return job
        time.sleep(poll)


def _check_downloads(lab: FaultLab, job_id: str, files: dict[str, Path], outcome: Outcome) -> None:
    for filename, path in files.items():
        try:
            original = harness.original_result(lab.info, job_id, filename)
        except FileNotFoundError:
            continue
        if path.is_file() and path.read_bytes() == original:
            outcome.results_ok += 1


def run_hook_client(
    lab: FaultLab, job: Job, outcome: Outcome, *, hook: Any = None, wait_hook: Any = None
) -> None:
    """``run_compute`` once; on success wait for the job and download every result with the hook."""
    hook = hook or lab.hook()
    try:
        started = hook.run_compute(job.datasets, job.algorithm)
    except Exception as exc:
        outcome.error, outcome.error_type = str(exc), type(exc).__name__
        return
    outcome.job_id = started["job_id"]
    final = _wait_with_hook(wait_hook or hook, outcome.job_id)
    if not final.is_terminal:
        outcome.error = f"job {outcome.job_id} did not end in time"
        return
    results = [r for r in final.results if r.type in ("output", "algorithmLog")]
    outcome.results_expected = len(results)
    folder = lab.fresh_dir("hook-results")
    files: dict[str, Path] = {}
    for result in results:
        try:
            downloaded = hook.download_result(outcome.job_id, result.index, folder)
        except Exception as exc:
            outcome.error, outcome.error_type = str(exc), type(exc).__name__
            continue
        files[result.filename] = Path(downloaded.path)
    _check_downloads(lab, outcome.job_id, files, outcome)


def run_task_client(
    lab: FaultLab,
    job: Job,
    outcome: Outcome,
    *,
    attempts: int = 2,
    poll_interval: float = 0.3,
    during: Callable[[], None] | None = None,
) -> None:
    """The start operator as an Airflow task with ``retries=attempts-1``, then the results operator."""
    from airflow_provider_ocean.operators.compute import OceanComputeStartOperator
    from airflow_provider_ocean.operators.results import OceanComputeResultsOperator

    xcoms: dict[str, Any] = {}
    state: dict[str, Any] = {}
    errors: list[str] = []
    job_id = None
    for attempt in range(1, attempts + 1):
        operator = OceanComputeStartOperator(
            task_id="start",
            datasets=job.datasets,
            algorithm=job.algorithm,
            ocean_conn_id=CONN_ID,
            wait_for_completion=True,
            deferrable=False,
            poll_interval=poll_interval,
            wait_timeout=120,
        )
        context = harness.task_context("start", xcoms=xcoms, state=state, try_number=attempt)
        try:
            job_id = operator.execute(context)
            break
        except Exception as exc:
            errors.append(f"try {attempt}: {type(exc).__name__}: {exc}")
            outcome.error_type = type(exc).__name__
    outcome.notes["task_errors"] = errors
    if job_id is None:
        outcome.error = " | ".join(errors)
        return
    outcome.job_id = str(job_id)
    outcome.error = None
    outcome.error_type = None
    destination = lab.fresh_dir("task-results")
    collect = OceanComputeResultsOperator(
        task_id="collect", job_id=outcome.job_id, destination=str(destination), ocean_conn_id=CONN_ID
    )
    manifest: list[dict[str, Any]] = []
    for attempt in range(1, attempts + 1):
        try:
            manifest = collect.execute(harness.task_context("collect", try_number=attempt))
            break
        except Exception as exc:
            errors.append(f"collect try {attempt}: {type(exc).__name__}: {exc}")
    hook = lab.hook()
    final = hook.get_job_status(outcome.job_id)
    outcome.results_expected = len([r for r in final.results if r.type in ("output", "algorithmLog")])
    by_name = {r.filename: r for r in final.results}
    files = {}
    for entry in manifest:
        index = entry["index"]
        name = next((n for n, r in by_name.items() if r.index == index), None)
        if name is not None:
            files[name] = Path(entry["uri"].replace("file://", "", 1))
    _check_downloads(lab, outcome.job_id, files, outcome)


def run_client(lab: FaultLab, client: str, job: Job, outcome: Outcome, **kwargs: Any) -> None:
    if client == "hook":
        run_hook_client(lab, job, outcome, **kwargs)
    elif client == "task":
        run_task_client(lab, job, outcome, **kwargs)
    else:
        raise ValueError(f"unknown client {client!r}")


# -- the scenario frame ------------------------------------------------------------------------------------
@contextlib.contextmanager
def observed(lab: FaultLab, name: str, client: str, job: Job) -> Iterator[Outcome]:
    """Snapshot before, then fill the outcome's outside counts after the body ran."""
    lab.reset()
    lab.connect()
    ledger = lab.ledger(job.datatokens)
    outcome = Outcome(name=name, client=client)
    started = time.monotonic()
    try:
        yield outcome
    finally:
        outcome.elapsed = time.monotonic() - started
        outcome.jobs = ledger.new_jobs()
        outcome.terminal = harness.wait_until_terminal(lab.info["provider_url"], lab.owner, outcome.jobs, 90)
        finished = {j["jobId"]: j for j in harness.jobs_of(lab.info["provider_url"], lab.owner)}
        outcome.succeeded_jobs = sum(
            1
            for i in outcome.jobs
            if finished.get(i, {}).get("status") == 70 and not int(finished.get(i, {}).get("stopreq") or 0)
        )
        outcome.orders = ledger.orders()
        outcome.transactions = ledger.transactions()
        outcome.counts = dict(lab.provider.counts) | {f"rpc {k}": v for k, v in lab.rpc.counts.items()}
        outcome.sequence = list(lab.provider.sequence)
        lab.reset()


def reset_after_start(lab: FaultLab, client: str = "hook") -> Outcome:
    """(1) The start request reaches the Provider, then the client's connection is reset."""
    job = published_job(lab)
    with observed(lab, "reset_after_start", client, job) as outcome:
        lab.provider.add(method=START[0], path=START[1], action="reset", times=1)
        run_client(lab, client, job, outcome)
    return outcome


def errors_on_reads(lab: FaultLab, client: str = "hook") -> Outcome:
    """(2) Two 503s on each of environments, nonce and status before they are forwarded."""
    job = published_job(lab)
    with observed(lab, "errors_on_reads", client, job) as outcome:
        for method, path in (ENVIRONMENTS, NONCE, STATUS):
            lab.provider.add(method=method, path=path, action="error", status=503, times=2)
        # The stored nonce is read only by a worker that never signed for this wallet at this Provider
        # (nothing else bounds it): play one, so that the burst on the nonce read is met.
        from airflow_provider_ocean.signing import NonceAllocator
        from airflow_provider_ocean.wire import provider_v4

        with mock.patch.object(provider_v4, "NONCES", NonceAllocator(lock_dir=None)):
            run_client(lab, client, job, outcome)
        outcome.notes["rule_hits"] = [r.hits for r in lab.provider.rules]
    return outcome


def error_on_start(lab: FaultLab, client: str = "hook", *, after_forward: bool = False) -> Outcome:
    """(3) A 5xx answer to the start: before the Provider saw it (503), or after it acted (502)."""
    job = published_job(lab)
    name = "error_after_start" if after_forward else "error_before_start"
    with observed(lab, name, client, job) as outcome:
        lab.provider.add(
            method=START[0],
            path=START[1],
            action="error",
            status=502 if after_forward else 503,
            after_forward=after_forward,
            times=1,
        )
        run_client(lab, client, job, outcome)
    return outcome


def blind_retries(sequence: list[str]) -> int:
    """Start requests that followed an earlier start with no job-list/status read in between."""
    blind = 0
    seen_start = False
    looked = False
    for route in sequence:
        if route == " ".join(START):
            if seen_start and not looked:
                blind += 1
            seen_start, looked = True, False
        elif route == " ".join(STATUS):
            looked = True
    return blind


def slow_status(
    lab: FaultLab, client: str = "hook", *, delay: float = 3.0, read_timeout: float | None = None
) -> Outcome:
    """(4) The first status answer is held ``delay`` seconds (optionally longer than the read timeout)."""
    job = published_job(lab)
    name = "slow_status" if read_timeout is None else "status_read_timeout"
    with observed(lab, name, client, job) as outcome:
        lab.provider.add(method=STATUS[0], path=STATUS[1], action="delay", delay=delay, times=1)
        if client == "hook":
            wait_hook = lab.hook(timeout=read_timeout) if read_timeout else None
            run_hook_client(lab, job, outcome, wait_hook=wait_hook)
        else:
            run_task_client(lab, job, outcome)
        outcome.notes["status_requests"] = lab.provider.count(*STATUS)
    return outcome


def truncated_download(lab: FaultLab, client: str = "hook", *, keep: int = 10) -> Outcome:
    """(5) The first output download is cut after ``keep`` bytes; a retry must be byte-identical."""
    job = published_job(lab)
    with observed(lab, "truncated_download", client, job) as outcome:
        hook = lab.hook()
        started = hook.run_compute(job.datasets, job.algorithm)
        outcome.job_id = started["job_id"]
        final = _wait_with_hook(hook, outcome.job_id)
        first = next(r for r in final.results if r.type == "output")
        if first.filesize:  # cut strictly inside the file, whatever its size
            keep = max(1, min(keep, int(first.filesize) // 2))
        lab.provider.add(
            method=RESULT[0],
            path=RESULT[1],
            body_contains=f"index={first.index}",
            action="truncate",
            truncate_after=keep,
            times=1,
        )
        destination = lab.fresh_dir("truncated")
        if client == "hook":
            try:
                hook.download_result(outcome.job_id, first.index, destination)
            except Exception as exc:
                outcome.error, outcome.error_type = str(exc), type(exc).__name__
        else:
            from airflow_provider_ocean.operators.results import OceanComputeResultsOperator

            collect = OceanComputeResultsOperator(
                task_id="collect", job_id=outcome.job_id, destination=str(destination), ocean_conn_id=CONN_ID
            )
            try:
                collect.execute(harness.task_context("collect"))
            except Exception as exc:
                outcome.error, outcome.error_type = str(exc), type(exc).__name__
        outcome.notes["truncations"] = lab.provider.rules[0].hits
        outcome.notes["left_after_failure"] = sorted(p.name for p in destination.iterdir())
        # the retry (the rule is used up)
        outcome.results_expected = 1
        try:
            if client == "hook":
                path = Path(hook.download_result(outcome.job_id, first.index, destination).path)
            else:
                manifest = collect.execute(harness.task_context("collect", try_number=2))
                path = Path(
                    next(e for e in manifest if e["index"] == first.index)["uri"].replace("file://", "")
                )
            if path.read_bytes() == harness.original_result(lab.info, outcome.job_id, first.filename):
                outcome.results_ok = 1
            outcome.notes["after_retry"] = sorted(p.name for p in destination.iterdir())
        except Exception as exc:
            outcome.notes["retry_error"] = f"{type(exc).__name__}: {exc}"
    return outcome


def server_restart(lab: FaultLab, client: str = "task", *, run_seconds: float = 3.0) -> Outcome:
    """(6) The sandbox server restarts while the job's algorithm runs."""
    job = sleeping_job(lab, run_seconds)
    box = lab.info["sandbox"]
    with observed(lab, "server_restart", client, job) as outcome:
        before = harness.job_ids(lab.info["provider_url"], lab.owner)
        restarted = threading.Event()

        def restart_when_running() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    running = [
                        j
                        for j in harness.jobs_of(lab.info["provider_url"], lab.owner)
                        if j["jobId"] not in before and j["status"] == 40
                    ]
                except Exception:
                    running = []
                if running:
                    box.restart_server()
                    restarted.set()
                    return
                time.sleep(0.1)

        watcher = threading.Thread(target=restart_when_running, daemon=True)
        watcher.start()
        if client == "task":
            run_task_client(lab, job, outcome, attempts=1)
        else:
            run_hook_client(lab, job, outcome, hook=lab.hook(retry_limit=6, retry_delay=0.5))
        watcher.join(timeout=70)
        outcome.notes["restarted"] = restarted.is_set()
    return outcome


def rpc_reset_after_send(lab: FaultLab, client: str = "hook") -> Outcome:
    """(7) The node receives ``eth_sendRawTransaction``, then the client's connection is reset."""
    job = published_job(lab)
    with observed(lab, "rpc_reset_after_send", client, job) as outcome:
        lab.rpc.add(method="POST", body_contains="eth_sendRawTransaction", action="reset", times=1)
        run_client(lab, client, job, outcome)
        outcome.notes["raw_sends"] = sum(v for k, v in lab.rpc.counts.items())
    return outcome


def duplicate_nonce_on_start(lab: FaultLab, client: str = "hook") -> Outcome:
    """(8) The start reaches the Provider twice with the same nonce: the client sees its 503 duplicate."""
    job = published_job(lab)
    with observed(lab, "duplicate_nonce_on_start", client, job) as outcome:
        lab.provider.add(method=START[0], path=START[1], action="replay", times=1)
        run_client(lab, client, job, outcome)
    return outcome


# -- (9) a worker killed with SIGKILL while waiting ---------------------------------------------------------
WORKER_SCRIPT = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from tests.faults import harness
from airflow_provider_ocean.operators.compute import OceanComputeStartOperator

state_file = Path(sys.argv[1])
saved = json.loads(state_file.read_text()) if state_file.exists() else {"xcoms": {}, "state": {}, "tries": 0}
saved["tries"] += 1
spec = json.loads(sys.argv[3])


class Persisting(dict):
    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        state_file.write_text(json.dumps(saved))

    def pop(self, key, default=None):
        value = super().pop(key, default)
        state_file.write_text(json.dumps(saved))
        return value


saved["xcoms"] = Persisting(saved["xcoms"])
saved["state"] = Persisting(saved["state"])
state_file.write_text(json.dumps(saved))
context = harness.task_context("start", xcoms=saved["xcoms"], state=saved["state"], try_number=saved["tries"])
operator = OceanComputeStartOperator(
    task_id="start", datasets=spec["datasets"], algorithm=spec["algorithm"], ocean_conn_id=spec["conn_id"],
    wait_for_completion=True, deferrable=False, poll_interval=0.3, wait_timeout=120,
)
print("RESULT", json.dumps(operator.execute(context)), flush=True)
"""


def sigkill_worker(lab: FaultLab, client: str = "process", *, run_seconds: float = 4.0) -> Outcome:
    """(9) A worker process runs the start operator, is SIGKILLed once the job runs; a new one reruns it."""
    job = sleeping_job(lab, run_seconds)
    repo = str(Path(__file__).resolve().parents[2])
    with observed(lab, "sigkill_worker", client, job) as outcome:
        folder = lab.fresh_dir("worker")
        script = folder / "worker.py"
        script.write_text(WORKER_SCRIPT)
        state_file = folder / "task-state.json"
        spec = {"datasets": job.datasets, "algorithm": job.algorithm, "conn_id": CONN_ID}
        env = os.environ.copy()
        before = harness.job_ids(lab.info["provider_url"], lab.owner)
        args = [sys.executable, str(script), str(state_file), repo, json.dumps(spec)]
        first_log = folder / "first.log"
        with open(first_log, "wb") as sink:
            first = subprocess.Popen(
                args, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        killed = False
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and first.poll() is None:
            new = harness.job_ids(lab.info["provider_url"], lab.owner) - before
            if new:
                time.sleep(0.8)  # let the worker persist the job and start polling
                os.killpg(first.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.1)
        first.wait(timeout=30)
        outcome.notes["killed"] = killed
        outcome.notes["first_output"] = first_log.read_text(errors="replace")[-3000:]
        second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180, check=False)
        outcome.notes["second_rc"] = second.returncode
        outcome.notes["second_output"] = (second.stdout + second.stderr)[-3000:]
        for line in second.stdout.splitlines():
            if line.startswith("RESULT "):
                outcome.job_id = json.loads(line[len("RESULT ") :])
        if second.returncode != 0:
            outcome.error = outcome.notes["second_output"][-1500:]
            outcome.error_type = "WorkerFailed"
        elif outcome.job_id:
            hook = lab.hook()
            final = hook.get_job_status(outcome.job_id)
            results = [r for r in final.results if r.type == "output"]
            outcome.results_expected = len(results)
            dest = lab.fresh_dir("worker-results")
            files = {
                r.filename: Path(hook.download_result(outcome.job_id, r.index, dest).path) for r in results
            }
            _check_downloads(lab, outcome.job_id, files, outcome)
    return outcome


# -- (10) a triggerer restarted mid-wait --------------------------------------------------------------------
def triggerer_restart(lab: FaultLab, client: str = "trigger", *, run_seconds: float = 3.0) -> Outcome:
    """(10) A trigger is cancelled mid-wait; a new one built from ``serialize()`` fires exactly one event."""
    import asyncio
    import importlib

    from airflow_provider_ocean.triggers.ocean import OceanComputeJobTrigger

    job = sleeping_job(lab, run_seconds)
    with observed(lab, "triggerer_restart", client, job) as outcome:
        hook = lab.hook()
        started = hook.run_compute(job.datasets, job.algorithm)
        outcome.job_id = started["job_id"]
        first = OceanComputeJobTrigger(job_id=outcome.job_id, ocean_conn_id=CONN_ID, poll_interval=0.3)
        classpath, kwargs = first.serialize()

        async def drain(trigger: Any, events: list[Any], limit: float) -> None:
            async def consume() -> None:
                async for event in trigger.run():
                    events.append(event.payload)

            await asyncio.wait_for(consume(), timeout=limit)

        async def main() -> tuple[list[Any], list[Any], bool]:
            old_events: list[Any] = []
            task = asyncio.ensure_future(drain(first, old_events, 60))
            await asyncio.sleep(1.0)
            cancelled = not task.done()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await task
            module, _, name = classpath.rpartition(".")
            cls = getattr(importlib.import_module(module), name)
            new_events: list[Any] = []
            await drain(cls(**kwargs), new_events, 60)
            return old_events, new_events, cancelled

        old_events, new_events, cancelled = asyncio.run(main())
        outcome.notes.update(
            {"old_events": old_events, "new_events": new_events, "cancelled_mid_wait": cancelled}
        )
        terminal_events = [
            e for e in new_events if e.get("status") in ("succeeded", "failed", "stopped", "timed_out")
        ]
        if len(terminal_events) == 1 and terminal_events[0].get("status") == "succeeded":
            final = terminal_events[0]["job"]
            results = [r for r in final["results"] if r["type"] == "output"]
            outcome.results_expected = len(results)
            dest = lab.fresh_dir("trigger-results")
            files = {
                r["filename"]: Path(hook.download_result(outcome.job_id, r["index"], dest).path)
                for r in results
            }
            _check_downloads(lab, outcome.job_id, files, outcome)
        else:
            outcome.error = f"events after the restart: {new_events!r}"
    return outcome


SCENARIOS: dict[str, Callable[..., Outcome]] = {
    "reset_after_start": reset_after_start,
    "errors_on_reads": errors_on_reads,
    "error_before_start": lambda lab, client="hook": error_on_start(lab, client, after_forward=False),
    "error_after_start": lambda lab, client="hook": error_on_start(lab, client, after_forward=True),
    "slow_status": slow_status,
    "status_read_timeout": lambda lab, client="hook": slow_status(lab, client, delay=3.0, read_timeout=1.5),
    "truncated_download": truncated_download,
    "server_restart": server_restart,
    "rpc_reset_after_send": rpc_reset_after_send,
    "duplicate_nonce_on_start": duplicate_nonce_on_start,
    "sigkill_worker": sigkill_worker,
    "triggerer_restart": triggerer_restart,
}
