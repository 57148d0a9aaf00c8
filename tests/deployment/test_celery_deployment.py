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
- every order paid on chain since the start is the agreement of one of those jobs (nothing paid twice);
- no task log holds a nonce error (a clash the client absorbed and logged as info/warning is counted);
- every run's results were written.

The figures (runs, kills, jobs, orders, retries, wall time) are printed and written to
``deployment-figures.json`` in the test's folder. On failure the message carries the tail of every
component's log and of the failed task logs.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import exactly_once_support as support
from tests.deployment.cluster import DAGS_FOLDER, AirflowDeployment
from tests.deployment.observe import order_transactions, result_folders, scan_nonce_lines, summary_line
from tests.faults.harness import block_number, jobs_of
from tests.servers import PostgresServer

pytestmark = [pytest.mark.chain, pytest.mark.slow]

DAG_ID = "ocean_deployment"
RUNS = 24
WORKERS = 3
CONCURRENCY = 4
READY_TIMEOUT = 240.0
RUNS_TIMEOUT = 300.0
TERMINAL = {"success", "failed"}


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
    broker = redis_server.rsplit("/", 1)[0] + "/1"  # its own Redis database
    deployment = AirflowDeployment.create(
        root,
        postgres_server,
        broker,
        workers=WORKERS,
        concurrency=CONCURRENCY,
        extra_env={
            "AIRFLOW_CONN_OCEAN_DEFAULT": sandbox["conn_json"],
            "AIRFLOW_VAR_OCEAN_DEPLOY_DATASET_DID": sandbox["assets"]["dataset_raw"]["did"],
            "AIRFLOW_VAR_OCEAN_DEPLOY_RESULTS_DIR": str(results),
            "AIRFLOW_VAR_OCEAN_DEPLOY_RELEASE_FILE": str(root / "release-jobs"),
        },
    )
    try:
        yield deployment
    finally:
        codes = deployment.stop()
        print(f"\ndeployment stopped (exit codes {codes}); logs in {root}")


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


def test_runs_succeed_exactly_once_through_a_killed_worker_and_a_restarted_triggerer(
    deployment: AirflowDeployment, sandbox: dict[str, Any]
) -> None:
    wall_started = time.monotonic()
    figures: dict[str, Any] = {"runs": RUNS, "workers": WORKERS, "concurrency_per_worker": CONCURRENCY}
    support.top_up(sandbox, ("dataset_raw",), RUNS + 16)
    consumer = sandbox["consumer"]["address"]
    datatoken = sandbox["assets"]["dataset_raw"]["datatoken"]
    jobs_before = {job["jobId"] for job in jobs_of(sandbox["provider_url"], consumer)}
    block_before = block_number(sandbox["rpc_url"])

    figures["migrate_seconds"] = round(deployment.migrate(), 1)
    deployment.start()
    ready = deployment.wait_ready(DAG_ID, READY_TIMEOUT)
    figures["ready_seconds"] = {k: round(v, 1) for k, v in ready.items()}
    figures["setup_seconds"] = round(time.monotonic() - wall_started, 1)

    deployment.unpause(DAG_ID)
    run_ids = [f"deploy_{i:02d}" for i in range(1, RUNS + 1)]
    triggered = time.monotonic()
    for run_id in run_ids:
        deployment.trigger(DAG_ID, run_id)
    figures["trigger_seconds"] = round(time.monotonic() - triggered, 1)

    release = Path(deployment.extra_env["AIRFLOW_VAR_OCEAN_DEPLOY_RELEASE_FILE"])
    alive = set(deployment.worker_hosts)
    killed: dict[str, Any] | None = None
    triggerer_restart: dict[str, Any] | None = None
    states: dict[str, str] = {}
    tis: list[dict[str, Any]] = []
    max_deferred = 0
    deadline = triggered + RUNS_TIMEOUT
    while time.monotonic() < deadline:
        states = deployment.dag_runs(DAG_ID)
        tis = deployment.task_instances(DAG_ID)
        if _runs_done(states, run_ids):
            break
        deferred = sum(1 for ti in tis if ti["state"] == "deferred")
        max_deferred = max(max_deferred, deferred)
        now = time.monotonic()
        if killed is None:
            victim = _pick_victim(deployment, tis, alive, now - triggered)
            if victim is not None:
                running = sorted(
                    f"{ti['dag_run_id']}.{ti['task_id']}"
                    for ti in tis
                    if ti["state"] == "running" and ti["hostname"] == victim
                )
                deployment.kill_worker(victim)
                alive.discard(victim)
                killed = {"host": victim, "at_seconds": round(now - triggered, 1), "running": running}
                print(f"\nSIGKILLed worker {victim} at +{killed['at_seconds']} s while it ran {running}")
        elif triggerer_restart is None and (deferred >= 2 or now - triggered > 120):
            down = deployment.restart("triggerer")
            release.touch()  # the held jobs may end now
            triggerer_restart = {
                "at_seconds": round(now - triggered, 1),
                "deferred_then": deferred,
                "down_seconds": round(down, 1),
            }
            print(f"Restarted the triggerer at +{triggerer_restart['at_seconds']} s ({deferred} deferred)")
        time.sleep(0.5 if killed is None else 1.5)
    runs_seconds = time.monotonic() - triggered

    # -- what happened --------------------------------------------------------------------------------
    run_jobs = {run_id: deployment.xcom(DAG_ID, run_id, "pay_and_start") for run_id in run_ids}
    provider_jobs = {
        job["jobId"]: job
        for job in jobs_of(sandbox["provider_url"], consumer)
        if job["jobId"] not in jobs_before
    }
    orders = order_transactions(sandbox["rpc_url"], datatoken, consumer, block_before)
    agreements = {str(job.get("agreementId") or "").lower() for job in provider_jobs.values()}
    nonce_lines = scan_nonce_lines(deployment.task_logs())
    results = result_folders(Path(deployment.extra_env["AIRFLOW_VAR_OCEAN_DEPLOY_RESULTS_DIR"]), run_ids)
    retried = sorted(
        f"{ti['dag_run_id']}.{ti['task_id']} x{ti['try_number']}" for ti in tis if ti["try_number"] > 1
    )
    figures.update(
        {
            "succeeded": sum(1 for run_id in run_ids if states.get(run_id) == "success"),
            "run_states": dict(Counter(states.get(run_id, "missing") for run_id in run_ids)),
            "workers_killed": 1 if killed else 0,
            "kill": killed,
            "triggerer_restarts": 1 if triggerer_restart else 0,
            "triggerer_restart": triggerer_restart,
            "max_deferred_seen": max_deferred,
            "jobs": len(provider_jobs),
            "distinct_run_jobs": len({j for j in run_jobs.values() if j}),
            "orders": len(orders),
            "orders_by_kind": dict(Counter(orders.values())),
            "orders_without_job": sorted(set(orders) - agreements),
            "retried_task_instances": retried,
            "tasks_by_host": dict(Counter(str(ti["hostname"]) for ti in tis)),
            "nonce_errors": len(nonce_lines.errors),
            "nonce_clashes_handled": len(nonce_lines.handled),
            "runs_seconds": round(runs_seconds, 1),
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
    if killed is None:
        problems.append("no worker was ever seen running a task, so none was killed")
    if triggerer_restart is None:
        problems.append("the triggerer was not restarted")
    elif not triggerer_restart["deferred_then"]:
        problems.append("no sensor was deferred when the triggerer was restarted (nothing handed over)")
    if set(provider_jobs) != {j for j in run_jobs.values() if j} or len(provider_jobs) != RUNS:
        problems.append(
            f"expected exactly one job per run ({RUNS}); the Provider has {len(provider_jobs)} new job(s) "
            f"{sorted(provider_jobs)}, the runs returned {run_jobs}"
        )
    if set(orders) != agreements - {""}:
        unused = sorted(set(orders) - agreements)
        mentioned = {
            tx: [str(p.relative_to(deployment.logs)) for p in _logs_mentioning(deployment, tx)]
            for tx in unused
        }
        problems.append(
            f"orders on chain are not exactly the agreements of the runs' jobs: {len(orders)} order(s) for "
            f"{len(agreements)} agreement(s); paid but used by no job: {mentioned} (task logs naming them); "
            f"agreements without an order of this test: {sorted(agreements - set(orders) - {''})}"
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
