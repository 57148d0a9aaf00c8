"""Cross-host pay + start (issue 14): H worker hosts x T concurrent ``run_compute`` tasks, one wallet, one
Provider, against a sandbox of its own; how many jobs start, which errors, what is left behind.

Setup (real, nothing mocked): a fresh sandbox (ganache + Ocean v4 contracts + the sandbox Provider) on free
127.0.0.1 ports, the Provider waiting ``--provider-receipt-timeout`` seconds for an unknown order
transaction (120 s, as ``ocean-sandbox up`` runs it). A host is a spawned process with its own
``OCEAN_NONCE_LOCK_DIR`` (set before it imports the provider), as a worker on another machine; each runs T
threads, each with its own ``OceanComputeHook`` paying its own order for ``dataset_raw`` with a raw
algorithm and starting one job (``tests/cross_host_support.py``, which runs
``tests/exactly_once_support.pay_and_start_tasks`` in each host). All hosts start together.

Counted from outside the client (``tests/faults/harness.py``): jobs of the wallet on the Provider, orders
paid on chain; an orphan order is an order no job uses, an orphan job a job no task got back, a duplicate
job a second job on one order. Meanwhile ``eth_blockNumber`` and the Provider's ``GET /`` are probed every
0.25 s: the worst answer time shows whether the sandbox stalled.

Goals (each run): every task starts one job of its own; 0 errors, 0 orphan orders or jobs, 0 duplicates.

The chain is the sandbox's (ganache behind its JSON-RPC front); ``--gate off`` turns the front's gate off,
so that every answer is ganache's own, as on barge and as when issue 14 was reported.

Run: ``python benchmarks/cross_host.py [--hosts 3] [--tasks 4] [--repeat N] [--gate off]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _common

from tests.cross_host_support import CrossHostRun, run_cross_host


def machine_load() -> str:
    """``date`` and ``uptime``'s load averages, for the figures."""
    one, five, fifteen = os.getloadavg()
    return f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=3, help="worker hosts (spawned processes), default 3")
    parser.add_argument("--tasks", type=int, default=4, help="concurrent tasks per host, default 4")
    parser.add_argument("--repeat", type=int, default=1, help="runs against the same sandbox, default 1")
    parser.add_argument(
        "--provider-receipt-timeout",
        type=float,
        default=120.0,
        help="seconds the sandbox Provider waits for an unknown order transaction (default 120, as `up`)",
    )
    parser.add_argument(
        "--client-timeout", type=float, default=None, help="the connection's read timeout (default: client's)"
    )
    parser.add_argument(
        "--gate",
        choices=["on", "off"],
        default="on",
        help="the sandbox RPC front's gate: on (as `up` runs it) or off (plain ganache, as in issue 14)",
    )
    args = parser.parse_args(argv)
    command = " ".join([Path(sys.executable).name, *sys.argv])
    print(
        f"Cross-host pay + start: {args.hosts} hosts x {args.tasks} tasks, {args.repeat} run(s), "
        f"RPC front gate {args.gate}"
    )
    print(f"  command: {command}\n  machine: {_common.machine()}\n  start:   {machine_load()}")

    runs: list[CrossHostRun] = []
    front = {"--gate": "off"} if args.gate == "off" else {}
    with _common.sandbox(
        receipt_timeout=args.provider_receipt_timeout, max_job_duration=60, rpc_front_options=front
    ) as info:
        conn = json.loads(info["conn_json"])
        if args.client_timeout is not None:
            conn["extra"]["timeout"] = args.client_timeout
        for index in range(args.repeat):
            run = run_cross_host(info, hosts=args.hosts, tasks=args.tasks, conn_json=json.dumps(conn))
            runs.append(run)
            print(f"\nrun {index + 1}/{args.repeat} ({machine_load()}):\n{run.report()}")

    rows = []
    for index, run in enumerate(runs, 1):
        f = run.figures()
        rows.append(
            [
                index,
                f"{f['jobs_started']}/{f['tasks']}",
                f["errors"],
                f["orphan_orders"],
                f["orphan_jobs"],
                f["duplicate_jobs"],
                f["one_job_per_task"],
                f"{f['wall_seconds']:.1f}",
                f"{f['worst_latency_seconds']['chain']:.2f} / {f['worst_latency_seconds']['provider']:.2f}",
            ]
        )
    _common.print_table(
        f"{args.hosts} hosts x {args.tasks} tasks, one wallet",
        [
            "run",
            "jobs started",
            "errors",
            "orphan orders",
            "orphan jobs",
            "duplicate jobs",
            "one job per task",
            "wall s",
            "worst answer s (chain / Provider)",
        ],
        rows,
    )
    errors: Counter[str] = Counter()
    for run in runs:
        errors.update(run.errors_by_type)
    _common.print_table(
        "errors by type (all runs)",
        ["count", "error"],
        [[count, kind] for kind, count in errors.most_common()] or [[0, "-"]],
    )
    print(f"\n  end: {machine_load()}")

    goals = _common.Goals("cross_host")
    total = args.hosts * args.tasks * len(runs)
    started = sum(r.started for r in runs)
    goals.check("every task starts a job", f"{started}/{total}", started == total)
    goals.check("0 errors", str(sum(len(r.errors) for r in runs)), not any(r.errors for r in runs))
    orphans = sum(r.orphan_orders + r.orphan_jobs for r in runs)
    goals.check("0 orphan orders or jobs", str(orphans), orphans == 0)
    duplicates = sum(r.duplicate_jobs for r in runs)
    goals.check("0 duplicate jobs", str(duplicates), duplicates == 0)
    goals.check(
        "exactly one job per task",
        f"{sum(r.one_job_per_task for r in runs)}/{len(runs)} runs",
        all(r.one_job_per_task for r in runs),
    )
    figures: dict[str, Any] = {
        "hosts": args.hosts,
        "tasks_per_host": args.tasks,
        "repeat": len(runs),
        "runs": [r.figures() for r in runs],
        "errors_by_type": dict(errors),
        "command": command,
        "gate": args.gate,
    }
    return goals.report(figures)


if __name__ == "__main__":
    raise SystemExit(main())
