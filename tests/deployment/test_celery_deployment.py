"""A real distributed Airflow deployment runs many Ocean compute DAG runs exactly once through failures.

CeleryExecutor with Postgres (metadata DB, Celery results) and Redis (broker) from the Debian packages, an
api-server, a scheduler, a dag-processor, a triggerer, and three Celery workers standing in for three
hosts (each its own HOME, TMPDIR and nonce lock folder), all sharing one wallet: the sandbox's consumer
(see ``tests/deployment/cluster.py``). ``RUNS`` runs of ``tests/deployment/dags/ocean_deployment.py``
are triggered together; while they run, one worker is SIGKILLed while it pays for or starts a job (a
host dying mid-run), and the triggerer is restarted once while sensors are deferred (the jobs are held
until then: see the DAG's docstring). Then:

- every run succeeded;
- the sandbox Provider holds exactly one new job per run (each run's job), and no other;
- every order paid on chain since the start (``OrderStarted``/``OrderReused`` of the consumer) is the
  agreement of one of those jobs, and every job's agreement is such an order: nothing was paid twice or
  for nothing (an order may serve more than one run: a retry offers the wallet's valid orders);
- no task log holds a nonce error (a clash the client absorbed and logged as info/warning is counted);
- every run's results were written.

``OCEAN_DEPLOY_CONN_EXTRA`` (JSON) is merged into the connection's extra for every process, with
``{redis_url}`` in its strings replaced by a Redis database of the session's server (e.g. to give the
workers a shared wallet lock); by default the hosts share nothing but the wallet.

The figures (runs, kills, jobs, orders, retries, wall time) are printed and written to
``deployment-figures.json`` in the test's folder. On failure the message carries the tail of every
component's log and of the failed task logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import exactly_once_support as support
from tests.deployment.cluster import DAGS_FOLDER, AirflowDeployment
from tests.deployment.observe import (
    mined_at,
    order_transactions,
    result_folders,
    scan_nonce_lines,
    summary_line,
)
from tests.faults.harness import block_number, jobs_of, orders_since
from tests.servers import PostgresServer

pytestmark = [pytest.mark.chain, pytest.mark.slow]

DAG_ID = "ocean_deployment"
RUNS = 24
WORKERS = 3
CONCURRENCY = 4
READY_TIMEOUT = 240.0
RUNS_TIMEOUT = 300.0
STOP_GRACE = 8.0
TERMINAL = {"success", "failed"}


def _connection(sandbox: dict[str, Any], redis_url: str) -> str:
    """The sandbox's connection, with ``OCEAN_DEPLOY_CONN_EXTRA`` merged into its extra."""
    conn = json.loads(sandbox["conn_json"])
    extra = json.loads(os.environ.get("OCEAN_DEPLOY_CONN_EXTRA") or "{}")
    for key, value in extra.items():
        conn["extra"][key] = value.replace("{redis_url}", redis_url) if isinstance(value, str) else value
    return json.dumps(conn)


@pytest.fixture(scope="module")
def deployment(
    sandbox: dict[str, Any],
    postgres_server: PostgresServer,
    redis_server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AirflowDeployment]:
    """The deployment, configured and migrated, its processes started (and stopped at the end by PID)."""
    assert (DAGS_FOLDER / "ocean_deployment.py").exists()
    root = tmp_path_factory.mktemp("deployment")
    results = root / "results"
    broker = redis_server.rsplit("/", 1)[0] + "/1"  # its own Redis databases
    for_the_provider = redis_server.rsplit("/", 1)[0] + "/2"
    deployment = AirflowDeployment.create(
        root,
        postgres_server,
        broker,
        workers=WORKERS,
        concurrency=CONCURRENCY,
        extra_env={
            "AIRFLOW_CONN_OCEAN_DEFAULT": _connection(sandbox, for_the_provider),
            "AIRFLOW_VAR_OCEAN_DEPLOY_DATASET_DID": sandbox["assets"]["dataset_raw"]["did"],
            "AIRFLOW_VAR_OCEAN_DEPLOY_RESULTS_DIR": str(results),
            "AIRFLOW_VAR_OCEAN_DEPLOY_RELEASE_FILE": str(root / "release-jobs"),
        },
    )
    try:
        yield deployment
    finally:
        stopping = time.monotonic()
        # the runs are over: a component still not gone after a few seconds is SIGKILLed (the triggerer
        # sometimes waits 10 s for its trigger runner, an Airflow escalation delay)
        codes = deployment.stop(grace=STOP_GRACE)
        seconds = time.monotonic() - stopping
        print(f"\ndeployment stopped in {seconds:.1f} s (exit codes {codes}); logs in {root}")


def _runs_done(states: dict[str, str], run_ids: list[str]) -> bool:
    return all(states.get(run_id) in TERMINAL for run_id in run_ids)


def _task_log(deployment: AirflowDeployment, ti: dict[str, Any]) -> str:
    path = (
        deployment.logs
        / f"dag_id={DAG_ID}/run_id={ti['dag_run_id']}/task_id={ti['task_id']}/attempt={ti['try_number']}.log"
    )
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _pick_victim(
    deployment: AirflowDeployment, tis: list[dict[str, Any]], alive_hosts: set[str], waited: float
) -> str | None:
    """The worker host to kill: one whose ``pay_and_start`` is between its quote and its started job (its
    log says "Quoting" but not yet "Started:": an order or a start in flight); after 60 s without one, the
    host running most tasks."""
    running = [ti for ti in tis if ti["state"] == "running" and ti["hostname"] in alive_hosts]
    for ti in running:
        if ti["task_id"] == "pay_and_start":
            log = _task_log(deployment, ti)
            if "Quoting" in log and "Started:" not in log:
                return str(ti["hostname"])
    busy = Counter(ti["hostname"] for ti in running)
    if busy and waited > 60:
        return str(busy.most_common(1)[0][0])
    return None


def _logs_mentioning(deployment: AirflowDeployment, text: str) -> list[Path]:
    return [p for p in deployment.task_logs() if text.lower() in p.read_text(errors="replace").lower()]


def _diagnostics(deployment: AirflowDeployment, tis: list[dict[str, Any]]) -> str:
    """Process log tails and the tails of the task logs of failed or retried task instances."""
    parts = [deployment.tails(3000)]
    bad = {
        (ti["dag_run_id"], ti["task_id"]) for ti in tis if ti["state"] != "success" or ti["try_number"] > 1
    }
    for path in deployment.task_logs():
        text = str(path)
        if any(f"run_id={run_id}/" in text and f"task_id={task_id}/" in text for run_id, task_id in bad):
            parts.append(
                f"----- task log {path.relative_to(deployment.logs)} -----\n{path.read_text()[-2500:]}"
            )
    return "\n".join(parts)[-60000:]


@dataclass
class Drive:
    """What happened while the runs ran: their last states and task instances, the faults injected."""

    states: dict[str, str] = field(default_factory=dict)
    tis: list[dict[str, Any]] = field(default_factory=list)
    kill: dict[str, Any] | None = None
    triggerer_restart: dict[str, Any] | None = None
    max_deferred: int = 0
    seconds: float = 0.0


def _drive(deployment: AirflowDeployment, run_ids: list[str], release: Path) -> Drive:
    """Trigger the runs, then poll the REST API until they all ended (bounded by ``RUNS_TIMEOUT``): kill
    one worker once it pays for or starts a job, then restart the triggerer once sensors are deferred and
    release the held jobs."""
    drive = Drive()
    deployment.unpause(DAG_ID)
    triggered = time.monotonic()
    for run_id in run_ids:
        deployment.trigger(DAG_ID, run_id)
    alive = set(deployment.worker_hosts)
    while time.monotonic() < triggered + RUNS_TIMEOUT:
        drive.states = deployment.dag_runs(DAG_ID)
        drive.tis = deployment.task_instances(DAG_ID)
        if _runs_done(drive.states, run_ids):
            break
        deferred = sum(1 for ti in drive.tis if ti["state"] == "deferred")
        drive.max_deferred = max(drive.max_deferred, deferred)
        elapsed = round(time.monotonic() - triggered, 1)
        if drive.kill is None:
            victim = _pick_victim(deployment, drive.tis, alive, elapsed)
            if victim is not None:
                running = sorted(
                    f"{ti['dag_run_id']}.{ti['task_id']}"
                    for ti in drive.tis
                    if ti["state"] == "running" and ti["hostname"] == victim
                )
                deployment.kill_worker(victim)
                alive.discard(victim)
                drive.kill = {
                    "host": victim,
                    "at_seconds": elapsed,
                    "at_utc": time.strftime("%H:%M:%S UTC", time.gmtime()),
                    "running": running,
                }
                print(f"\nSIGKILLed worker {victim} at +{elapsed} s while it ran {running}")
        elif drive.triggerer_restart is None and (deferred >= 2 or elapsed > 120):
            down = deployment.restart("triggerer")
            release.touch()  # the held jobs may end now
            drive.triggerer_restart = {
                "at_seconds": elapsed,
                "deferred_then": deferred,
                "down_seconds": round(down, 1),
            }
            print(f"Restarted the triggerer at +{elapsed} s ({deferred} deferred; down {down:.1f} s)")
        time.sleep(0.5 if drive.kill is None else 1.5)
    drive.seconds = time.monotonic() - triggered
    return drive


@contextlib.contextmanager
def _logs_on_error(deployment: AirflowDeployment) -> Iterator[None]:
    """Print the components' log tails when the block raises (a timeout, a REST error...)."""
    try:
        yield
    except BaseException:
        print(f"\n{deployment.tails(4000)}")
        raise


def test_runs_succeed_exactly_once_through_a_killed_worker_and_a_restarted_triggerer(
    deployment: AirflowDeployment, sandbox: dict[str, Any]
) -> None:
    wall_started = time.monotonic()
    figures: dict[str, Any] = {
        "runs": RUNS,
        "workers": WORKERS,
        "concurrency_per_worker": CONCURRENCY,
        "connection_extra_added": sorted(json.loads(os.environ.get("OCEAN_DEPLOY_CONN_EXTRA") or "{}")),
    }
    support.top_up(sandbox, ("dataset_raw",), RUNS + 16)
    consumer = sandbox["consumer"]["address"]
    datatoken = sandbox["assets"]["dataset_raw"]["datatoken"]
    jobs_before = {job["jobId"] for job in jobs_of(sandbox["provider_url"], consumer)}
    block_before = block_number(sandbox["rpc_url"])
    run_ids = [f"deploy_{i:02d}" for i in range(1, RUNS + 1)]

    with _logs_on_error(deployment):
        figures["migrate_seconds"] = round(deployment.migrate(), 1)
        deployment.start()
        ready = deployment.wait_ready(DAG_ID, READY_TIMEOUT)
        figures["ready_seconds"] = {k: round(v, 1) for k, v in ready.items()}
        figures["setup_seconds"] = round(time.monotonic() - wall_started, 1)
        drive = _drive(
            deployment, run_ids, Path(deployment.extra_env["AIRFLOW_VAR_OCEAN_DEPLOY_RELEASE_FILE"])
        )

        # -- what happened, seen from outside Airflow and the provider ---------------------------------
        run_jobs = {run_id: deployment.xcom(DAG_ID, run_id, "pay_and_start") for run_id in run_ids}
        provider_jobs = {
            job["jobId"]: job
            for job in jobs_of(sandbox["provider_url"], consumer)
            if job["jobId"] not in jobs_before
        }
        orders = order_transactions(sandbox["rpc_url"], datatoken, consumer, block_before)
        counted = orders_since(sandbox["rpc_url"], [datatoken], consumer, block_before)
        agreements = {str(job.get("agreementId") or "").lower() for job in provider_jobs.values()} - {""}
        nonce_lines = scan_nonce_lines(deployment.task_logs())
        results_dir = Path(deployment.extra_env["AIRFLOW_VAR_OCEAN_DEPLOY_RESULTS_DIR"])
        results = result_folders(results_dir, run_ids)

    states, tis = drive.states, drive.tis
    figures.update(
        {
            "succeeded": sum(1 for run_id in run_ids if states.get(run_id) == "success"),
            "run_states": dict(Counter(states.get(run_id, "missing") for run_id in run_ids)),
            "workers_killed": 1 if drive.kill else 0,
            "kill": drive.kill,
            "triggerer_restarts": 1 if drive.triggerer_restart else 0,
            "triggerer_restart": drive.triggerer_restart,
            "max_deferred_seen": drive.max_deferred,
            "jobs": len(provider_jobs),
            "distinct_run_jobs": len({j for j in run_jobs.values() if j}),
            "orders": len(orders),
            "orders_by_kind": dict(Counter(orders.values())),
            "distinct_agreements": len(agreements),
            "orders_without_job": sorted(set(orders) - agreements),
            "retried_task_instances": sorted(
                f"{ti['dag_run_id']}.{ti['task_id']} x{ti['try_number']}"
                for ti in tis
                if ti["try_number"] > 1
            ),
            "task_instances_by_host": dict(Counter(str(ti["hostname"]) for ti in tis)),
            "nonce_errors": len(nonce_lines.errors),
            "nonce_clashes_handled": len(nonce_lines.handled),
            "runs_seconds": round(drive.seconds, 1),
            "wall_seconds": round(time.monotonic() - wall_started, 1),
        }
    )
    figures_file = deployment.root / "deployment-figures.json"
    figures_file.write_text(json.dumps(figures, indent=2))
    print(f"\nDeployment figures ({figures_file}):\n{json.dumps(figures, indent=2)}")
    print(f"Deployment: {summary_line(figures)}")
    for line in nonce_lines.handled[:10]:
        print(f"  nonce clash handled: {line}")

    # -- checks ---------------------------------------------------------------------------------------
    problems: list[str] = []
    if not _runs_done(states, run_ids):
        problems.append(f"runs not finished after {RUNS_TIMEOUT:.0f} s: {figures['run_states']}")
    failed = [run_id for run_id in run_ids if states.get(run_id) != "success"]
    if failed:
        problems.append(f"{len(failed)} run(s) did not succeed: {failed}")
    if drive.kill is None:
        problems.append("no worker was ever seen running a task, so none was killed")
    if drive.triggerer_restart is None:
        problems.append("the triggerer was not restarted")
    elif not drive.triggerer_restart["deferred_then"]:
        problems.append("no sensor was deferred when the triggerer was restarted (nothing handed over)")
    if set(provider_jobs) != {j for j in run_jobs.values() if j} or len(provider_jobs) != RUNS:
        problems.append(
            f"expected exactly one job per run ({RUNS}); the Provider has {len(provider_jobs)} new job(s) "
            f"{sorted(provider_jobs)}, the runs returned {run_jobs}"
        )
    if sum(counted.values()) != len(orders):
        problems.append(f"order counts disagree: orders_since {counted}, order logs {len(orders)}")
    if set(orders) != agreements:
        unused = sorted(set(orders) - agreements)
        mentioned = {
            tx: {
                "mined": mined_at(sandbox["rpc_url"], tx),
                "task logs naming it": [
                    str(p.relative_to(deployment.logs)) for p in _logs_mentioning(deployment, tx)
                ],
            }
            for tx in unused
        }
        problems.append(
            f"orders on chain are not exactly the agreements of the runs' jobs: {len(orders)} order(s) for "
            f"{len(agreements)} agreement(s); paid but used by no job: {mentioned} (no task log naming "
            "it: paid by a try that died before logging it; worker killed at "
            f"{(drive.kill or {}).get('at_utc')}); "
            "agreements without an order of this test: "
            f"{sorted(agreements - set(orders))}"
        )
    if nonce_lines.errors:
        problems.append(
            f"{len(nonce_lines.errors)} nonce error line(s) in task logs:\n"
            + "\n".join(nonce_lines.errors[:20])
        )
    missing_results = [run_id for run_id, names in results.items() if "done.txt" not in names]
    if missing_results and not failed:
        problems.append(f"no done.txt in the results of {missing_results}")
    if problems:
        pytest.fail("\n".join(problems) + "\n\n" + _diagnostics(deployment, tis), pytrace=False)
