"""Cross-host runs (issue 14): H worker "hosts" x T concurrent ``run_compute`` tasks each, one wallet, one
Provider, counted from outside the client.

A host is a **spawned** process with its own ``OCEAN_NONCE_LOCK_DIR``, set before the provider is imported
(``airflow_provider_ocean.signing.NONCES`` reads it at import time): its file locks exclude its own tasks
only, as on separate machines. Each host runs ``tests.exactly_once_support.pay_and_start_tasks``: T
threads, each with its own ``OceanComputeHook`` that pays its own order (``pay_for_compute``) and starts
one job with it (``start_compute``) - what ``run_compute`` does. All hosts start together at a barrier.

What is counted, never with the code under test (``tests/faults/harness.py``): the owner's jobs straight
from the Provider, the orders (``OrderStarted``/``OrderReused`` with the wallet as payer) on chain, and,
with :class:`LatencyProbe`, how long the chain and the Provider take to answer a trivial request meanwhile.

Shared by ``tests/test_cross_host.py`` and ``benchmarks/cross_host.py``. Nothing here imports the provider
at module level: a spawned host re-imports its parent's main module before it sets its lock directory.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from tests.faults import harness

#: Spawned, not forked: a host is a fresh interpreter that imports the provider after its lock directory is
#: set, as a worker on another machine does (a fork would inherit the parent's ``NONCES``).
SPAWN = multiprocessing.get_context("spawn")
LOCK_DIR_ENV = "OCEAN_NONCE_LOCK_DIR"  # airflow_provider_ocean.locks.LOCK_DIR_ENV (not imported here)
#: Error messages of issue 14 (and the neighbouring ones), as short labels.
KNOWN_ERRORS = {
    "mining has already started": "transaction can't be replaced, mining has already started",
    "was not mined within": "transaction was not mined within the receipt timeout",
    "ReadTimeout": "ReadTimeout (no answer from the chain or the Provider)",
    "nonce": "nonce error",
    "order_invalid": "order_invalid",
    "agreementId": "agreementId already in use",
    "replaced by better transaction": "transaction replaced by better transaction",
}


@contextmanager
def plain_ganache(box: Any) -> Iterator[None]:
    """Turn the gate of the sandbox's JSON-RPC front off for the block: every request reaches ganache at
    once and gets ganache's own answer, as on a plain ganache (barge, and the sandbox when issue 14 was
    reported); restored afterwards.

    :param box: the running :class:`~ocean_sandbox.runtime.Sandbox`.
    """
    previous = dict(box.rpc_front_options)
    box.rpc_front_options = {**previous, "--gate": "off"}
    box.restart_front()
    try:
        yield
    finally:
        box.rpc_front_options = previous
        box.restart_front()


def host_main(
    lock_dir: str,
    conn_json: str,
    index: int,
    tasks: int,
    dataset: str,
    algorithm: Any,
    barrier: Any,
) -> dict[str, Any]:
    """One worker host (runs in a spawned process): set its lock directory, then import the provider and run
    ``tasks`` concurrent pay + start tasks (``pay_and_start_tasks``).

    :param lock_dir: this host's ``OCEAN_NONCE_LOCK_DIR`` (shared by nobody else).
    :param conn_json: the ``ocean`` connection as JSON.
    :param index: the host's number (names its tasks ``p<index>-t<slot>``).
    :param tasks: concurrent tasks on this host.
    :param dataset: the dataset DID.
    :param algorithm: the algorithm (DID or raw algorithm dict).
    :param barrier: a manager barrier shared by all hosts and the parent.
    :return: ``pay_and_start_tasks``'s answer plus the lock directory the provider actually used.
    """
    if "airflow_provider_ocean.signing" in sys.modules:
        raise RuntimeError("the provider was imported before the host's lock directory was set")
    os.environ[LOCK_DIR_ENV] = lock_dir
    from airflow_provider_ocean.signing import NONCES
    from tests import exactly_once_support as support

    answer = support.pay_and_start_tasks(conn_json, index, tasks, dataset, algorithm, barrier)
    return {**answer, "lock_dir": getattr(NONCES.locks, "lock_dir", None), "pid": os.getpid()}


class LatencyProbe:
    """Asks the chain (``eth_blockNumber``) and the Provider (``GET /``) every ``interval`` seconds in two
    threads and keeps the worst answer time of each (a request that fails or times out counts as its time
    and as a failure).

    :param rpc_url: the chain's JSON-RPC URL.
    :param provider_url: the Provider's base URL.
    :param interval: seconds between two probes of one target.
    :param timeout: read timeout of a probe.
    """

    def __init__(
        self, rpc_url: str, provider_url: str, *, interval: float = 0.25, timeout: float = 120.0
    ) -> None:
        self.interval = interval
        self.timeout = timeout
        self.worst: dict[str, float] = {"chain": 0.0, "provider": 0.0}
        self.failures: Counter[str] = Counter()
        self.samples: Counter[str] = Counter()
        self._stop = threading.Event()
        payload = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
        self._threads = [
            threading.Thread(
                target=self._run,
                args=("chain", lambda s: s.post(rpc_url, json=payload, timeout=timeout)),
                daemon=True,
            ),
            threading.Thread(
                target=self._run,
                args=("provider", lambda s: s.get(provider_url + "/", timeout=timeout)),
                daemon=True,
            ),
        ]

    def _run(self, name: str, ask: Any) -> None:
        with requests.Session() as session:
            while not self._stop.wait(self.interval):
                started = time.monotonic()
                try:
                    ask(session).raise_for_status()
                except requests.RequestException:
                    self.failures[name] += 1
                self.samples[name] += 1
                self.worst[name] = max(self.worst[name], time.monotonic() - started)

    def __enter__(self) -> LatencyProbe:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)


@dataclasses.dataclass
class CrossHostRun:
    """One run's outcome, counted from outside the client.

    :param hosts: worker hosts (processes with their own lock directory).
    :param tasks: concurrent tasks per host.
    :param results: one dict per task (``job_id``... or ``error``), from ``pay_and_start_tasks``.
    :param lock_dirs: the lock directory each host's provider used.
    :param seconds: wall time from the barrier (all hosts ready) to the last task's end.
    :param new_jobs: the wallet's jobs on the Provider that appeared during the run.
    :param orders: orders paid on chain by the wallet during the run (all datatokens).
    :param worst_latency: worst answer time of the chain and the Provider probes during the run.
    :param probe_failures: probes that failed or timed out, per target.
    :param provider_resigned: Provider requests re-signed after a refused nonce (all hosts).
    :param chain_refetched: chain nonces refetched after "taken" (all hosts).
    :param chain_worst: worst answer time per JSON-RPC method (or batch of methods) during the run, as the
        sandbox's JSON-RPC front measured it (every client's and the Provider's calls).
    """

    hosts: int
    tasks: int
    results: list[dict[str, Any]]
    lock_dirs: list[str]
    seconds: float
    new_jobs: list[dict[str, Any]]
    orders: int
    worst_latency: dict[str, float]
    probe_failures: dict[str, int]
    provider_resigned: int
    chain_refetched: int
    chain_worst: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def errors(self) -> list[str]:
        return [r["error"] for r in self.results if "error" in r]

    @property
    def errors_by_type(self) -> Counter[str]:
        return Counter(error_kind(e) for e in self.errors)

    @property
    def job_ids(self) -> list[str]:
        """The job ids the tasks got back (one per task that did not fail)."""
        return [r["job_id"] for r in self.results if r.get("job_id")]

    @property
    def started(self) -> int:
        """Tasks that got a job back."""
        return len(self.job_ids)

    @property
    def agreements(self) -> Counter[str]:
        return Counter(str(job.get("agreementId")) for job in self.new_jobs)

    @property
    def orphan_orders(self) -> int:
        """Orders paid that no job uses (paid, then the task failed before or while starting)."""
        return max(self.orders - len(self.agreements), 0)

    @property
    def orphan_jobs(self) -> int:
        """Jobs on the Provider that no task got back (started, but the task failed)."""
        return len({job["jobId"] for job in self.new_jobs} - set(self.job_ids))

    @property
    def duplicate_jobs(self) -> int:
        """Jobs beyond the first on one order, plus job ids handed to more than one task."""
        return sum(n - 1 for n in self.agreements.values()) + (len(self.job_ids) - len(set(self.job_ids)))

    @property
    def one_job_per_task(self) -> bool:
        """Every task got a job of its own, and the wallet has exactly those new jobs."""
        ids = self.job_ids
        return (
            len(ids) == self.hosts * self.tasks
            and len(set(ids)) == len(ids)
            and set(ids) == {job["jobId"] for job in self.new_jobs}
        )

    def figures(self) -> dict[str, Any]:
        """The run as a JSON-safe dict."""
        return {
            "hosts": self.hosts,
            "tasks_per_host": self.tasks,
            "jobs_started": self.started,
            "tasks": self.hosts * self.tasks,
            "errors": len(self.errors),
            "errors_by_type": dict(self.errors_by_type),
            "orphan_orders": self.orphan_orders,
            "orphan_jobs": self.orphan_jobs,
            "duplicate_jobs": self.duplicate_jobs,
            "one_job_per_task": self.one_job_per_task,
            "orders_on_chain": self.orders,
            "new_jobs": len(self.new_jobs),
            "wall_seconds": round(self.seconds, 1),
            "worst_latency_seconds": {k: round(v, 2) for k, v in self.worst_latency.items()},
            "probe_failures": self.probe_failures,
            "provider_resigned": self.provider_resigned,
            "chain_refetched": self.chain_refetched,
            "chain_worst_seconds": self.chain_worst,
        }

    def report(self) -> str:
        """A human-readable summary with one line per distinct error."""
        f = self.figures()
        worst = f["worst_latency_seconds"]
        lines = [
            (
                f"{self.hosts} hosts x {self.tasks} tasks, one wallet: {f['jobs_started']}/{f['tasks']} jobs "
                f"started in {f['wall_seconds']} s; errors {f['errors']} {f['errors_by_type']}; "
                f"orphan orders {f['orphan_orders']}, orphan jobs {f['orphan_jobs']}, "
                f"duplicate jobs {f['duplicate_jobs']}; "
                f"one job per task: {f['one_job_per_task']}; worst answer: chain {worst['chain']} s, "
                f"Provider {worst['provider']} s (failed probes {f['probe_failures']})"
            )
        ]
        slow = {k: v for k, v in sorted(self.chain_worst.items(), key=lambda kv: -kv[1]) if v >= 0.5}
        lines.append(f"  slowest JSON-RPC answers (>= 0.5 s, at the front): {slow or 'none'}")
        for error, count in Counter(_shorten(e) for e in self.errors).most_common():
            lines.append(f"  {count} x {error}")
        return "\n".join(lines)


def error_kind(error: str) -> str:
    """``"<ExceptionType>: <known message>"`` for a task's ``"<type>: <message>"`` error text."""
    kind, _, message = error.partition(": ")
    for needle, label in KNOWN_ERRORS.items():
        if needle in message:
            return f"{kind}: {label}"
    # "startOrder on 0x... for did:op:... failed: <what the node said>"
    message = re.sub(r"^\w+ on 0x[0-9a-fA-F]+ for did:op:[0-9a-f]+( failed)?: ", "", message)
    return f"{kind}: {_shorten(message)[:80]}"


def _shorten(text: str) -> str:
    return re.sub(r"0x[0-9a-fA-F]{16,}", "0x…", text)[:400]


def run_cross_host(
    sandbox_info: dict[str, Any],
    *,
    hosts: int,
    tasks: int,
    lock_root: Path | None = None,
    dataset_key: str = "dataset_raw",
    conn_json: str | None = None,
    timeout: float = 900.0,
) -> CrossHostRun:
    """Run ``hosts`` x ``tasks`` pay + start tasks of the consumer wallet against the sandbox and count.

    :param sandbox_info: the sandbox's info (``Sandbox.up()``).
    :param hosts: spawned worker processes, each with its own lock directory under ``lock_root``.
    :param tasks: concurrent tasks per host.
    :param lock_root: where the hosts' lock directories go (a new temporary directory by default).
    :param dataset_key: the sample dataset (raw algorithms allowed: one order per task).
    :param conn_json: the connection (default: the sandbox's, the client's default timeouts).
    :param timeout: seconds to wait for every host to end.
    """
    from tests import exactly_once_support as support  # the parent only: the hosts are spawned afresh

    total = hosts * tasks
    support.top_up(sandbox_info, (dataset_key,), total + 20)
    dataset = sandbox_info["assets"][dataset_key]["did"]
    owner = sandbox_info["consumer"]["address"]
    ledger = harness.Ledger.take(sandbox_info, owner, [sandbox_info["assets"][dataset_key]["datatoken"]])
    root = lock_root or Path(tempfile.mkdtemp(prefix="ocean-cross-host-"))
    conn = conn_json or sandbox_info["conn_json"]
    json.loads(conn)  # fail early on a bad connection
    with SPAWN.Manager() as manager:
        barrier = manager.Barrier(hosts + 1)  # the hosts and this process, to time the run from the start
        with ProcessPoolExecutor(max_workers=hosts, mp_context=SPAWN) as pool:
            futures = [
                pool.submit(
                    host_main, str(root / f"host-{i}"), conn, i, tasks, dataset, support.QUICK_RAW, barrier
                )
                for i in range(hosts)
            ]
            barrier.wait(timeout=300)  # every host has imported the provider; none has built a hook yet
            front_stats(sandbox_info["rpc_url"], reset=True)
            started = time.monotonic()
            with LatencyProbe(sandbox_info["rpc_url"], sandbox_info["provider_url"]) as probe:
                chunks = [f.result(timeout=timeout) for f in futures]
                seconds = time.monotonic() - started
    chain_worst = front_stats(sandbox_info["rpc_url"]).get("worst_seconds", {})
    new = set(ledger.new_jobs())
    jobs = [job for job in harness.jobs_of(ledger.provider_url, owner) if job["jobId"] in new]
    harness.wait_until_terminal(ledger.provider_url, owner, new, timeout=120)  # leave an idle engine
    return CrossHostRun(
        hosts=hosts,
        tasks=tasks,
        results=[r for chunk in chunks for r in chunk["results"]],
        lock_dirs=[chunk["lock_dir"] for chunk in chunks],
        seconds=seconds,
        new_jobs=jobs,
        orders=sum(ledger.orders().values()),
        worst_latency=dict(probe.worst),
        probe_failures=dict(probe.failures),
        provider_resigned=sum(c["provider_resigned"] for c in chunks),
        chain_refetched=sum(c["chain_refetched"] for c in chunks),
        chain_worst=chain_worst,
    )


def front_stats(rpc_url: str, *, reset: bool = False) -> dict[str, Any]:
    """The sandbox JSON-RPC front's counters (``GET /sandbox/rpc-front``; ``{}`` when there is none)."""
    try:
        response = requests.get(rpc_url + "/sandbox/rpc-front" + ("?reset=1" if reset else ""), timeout=30)
        return response.json() if response.ok else {}
    except (requests.RequestException, ValueError):
        return {}
