"""Repeat the exactly-once fault scenarios many times against a sandbox of its own and count what went wrong.

Usage::

    python benchmarks/faults_repeat.py --runs 200            # all scenarios, heavy ones every 4th cycle
    python benchmarks/faults_repeat.py --runs 200 --fast     # light scenarios only, one-order raw jobs
    python benchmarks/faults_repeat.py --runs 30 --scenarios reset_after_start,rpc_reset_after_send

The client is the one Airflow runs: ``OceanComputeStartOperator.execute`` retried once on failure with the
same XComs and task state (``retries=1``), then ``OceanComputeResultsOperator`` (the trigger scenario runs
``OceanComputeJobTrigger``, the SIGKILL scenario a worker subprocess). Every run is counted from outside
the client (see ``tests/faults/harness.py``):

- duplicate jobs: jobs started beyond the first;
- duplicate orders: orders (``OrderStarted``/``OrderReused`` with the consumer as payer) beyond one per
  datatoken;
- lost results: a job ran to success but its results did not reach the client byte-identical;
- non-terminal runs: a started job still not finished 90 s after the client returned.

The last four must be 0; the exit status is 1 otherwise. The sandbox (ganache + contracts + server) runs
on free 127.0.0.1 ports with ``receipt_timeout=5`` and is stopped and deleted at the end.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# A private Airflow home (before Airflow is imported): nothing of the user's is read or written.
_HOME = tempfile.mkdtemp(prefix="ocean-faults-bench-airflow-")
os.environ["AIRFLOW_HOME"] = _HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "ERROR")

LIGHT = [
    "reset_after_start",
    "errors_on_reads",
    "error_before_start",
    "error_after_start",
    "truncated_download",
    "rpc_reset_after_send",
    "duplicate_nonce_on_start",
    "status_read_timeout",
    "triggerer_restart",
]
HEAVY = ["slow_status", "server_restart", "sigkill_worker"]
FAST_EXCLUDED = {"status_read_timeout", "triggerer_restart"}


def schedule(runs: int, *, fast: bool, names: list[str] | None, heavy_every: int) -> list[str]:
    """The scenario of each run: round-robin cycles, heavy scenarios only in every ``heavy_every``-th."""
    if names:
        cycle_plan = [names]
    else:
        light = [n for n in LIGHT if not (fast and n in FAST_EXCLUDED)]
        cycle_plan = [light + HEAVY] + [light] * (heavy_every - 1) if not fast else [light]
    out: list[str] = []
    cycle = 0
    while len(out) < runs:
        out.extend(cycle_plan[cycle % len(cycle_plan)])
        cycle += 1
    return out[:runs]


def client_for(name: str) -> str:
    return {"triggerer_restart": "trigger", "sigkill_worker": "process"}.get(name, "task")


def run_one(lab: Any, name: str) -> Any:
    from tests.faults import scenarios

    if name == "triggerer_restart":
        return scenarios.triggerer_restart(lab, "trigger", run_seconds=1.5 if lab.fast else 3.0)
    if name == "sigkill_worker":
        return scenarios.sigkill_worker(lab, "process", run_seconds=3.0)
    if name == "server_restart":
        return scenarios.server_restart(lab, "task", run_seconds=2.0)
    if name == "slow_status":
        return scenarios.slow_status(lab, "task", delay=3.0)
    if name == "status_read_timeout":
        return scenarios.slow_status(lab, "hook", delay=3.0, read_timeout=1.5)
    return scenarios.SCENARIOS[name](lab, client_for(name))


def fund(info: dict[str, Any], amount: int) -> None:
    """Mint ``amount`` of each sample datatoken the scenarios order to the consumer (the publisher mints)."""
    from tests.faults import harness

    for asset in ("dataset", "algorithm", "dataset_raw"):
        harness.send_transaction(
            info["rpc_url"],
            info["publisher"]["key"],
            info["assets"][asset]["datatoken"],
            data=harness.erc20_call_data("mint(address,uint256)", info["consumer"]["address"], amount),
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="total scenario runs (default 200)")
    parser.add_argument("--fast", action="store_true", help="light scenarios only, with quick one-order jobs")
    parser.add_argument("--scenarios", default="", help="comma-separated scenario names (default: all)")
    parser.add_argument("--heavy-every", type=int, default=4, help="heavy scenarios in every Nth cycle")
    parser.add_argument("--time-budget", type=float, default=0.0, help="stop starting runs after N seconds")
    parser.add_argument("--verbose", action="store_true", help="print every run")
    args = parser.parse_args(argv)

    from ocean_sandbox.runtime import Sandbox
    from tests.faults import scenarios

    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in scenarios.SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {sorted(scenarios.SCENARIOS)}")
    plan = schedule(args.runs, fast=args.fast, names=names or None, heavy_every=max(1, args.heavy_every))

    started = time.monotonic()
    state = Path(tempfile.mkdtemp(prefix="ocean-faults-bench-sandbox-"))
    box = Sandbox(state / "state", rpc_port=0, provider_port=0, receipt_timeout=5.0, max_job_duration=60)
    lab = None
    per: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    seconds: dict[str, float] = collections.defaultdict(float)
    totals: collections.Counter[str] = collections.Counter()
    examples: list[str] = []
    try:
        info = {**box.up(), "sandbox": box}
        fund(info, 3 * len(plan) * 10**18)
        lab = scenarios.FaultLab(info)
        lab.fast = args.fast
        setup = time.monotonic() - started
        print(f"sandbox up in {setup:.1f} s; {len(plan)} runs planned", flush=True)
        for number, name in enumerate(plan, 1):
            if args.time_budget and time.monotonic() - started > args.time_budget:
                print(f"time budget reached after {number - 1} runs", flush=True)
                break
            try:
                outcome = run_one(lab, name)
            except Exception as exc:  # a scenario that crashed is a run with an unknown outcome
                per[name]["crashed"] += 1
                totals["crashed"] += 1
                examples.append(f"run {number} {name}: crashed: {type(exc).__name__}: {exc}"[:500])
                continue
            counts = per[name]
            counts["runs"] += 1
            seconds[name] += outcome.elapsed
            counts["duplicate jobs"] += outcome.duplicate_jobs
            counts["duplicate orders"] += outcome.duplicate_orders
            counts["lost results"] += outcome.lost_results
            counts["non-terminal"] += 0 if outcome.terminal else 1
            counts["client errors"] += 1 if outcome.error else 0
            counts["partial files"] += 1 if outcome.notes.get("left_after_failure") else 0
            bad = outcome.duplicate_jobs or outcome.duplicate_orders or outcome.lost_results
            if (bad or not outcome.terminal) and len(examples) < 12:
                examples.append(f"run {number}: {outcome.summary()}"[:600])
            if args.verbose:
                print(f"{number:4d} {outcome.summary()[:220]} ({outcome.elapsed:.1f} s)", flush=True)
            elif number % 10 == 0:
                print(f"  {number} runs, {time.monotonic() - started:.0f} s", flush=True)
        for counts in per.values():
            totals.update(counts)
    finally:
        if lab is not None:
            lab.close()
        box.down()
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(_HOME, ignore_errors=True)
    wall = time.monotonic() - started

    columns = ["runs", "duplicate jobs", "duplicate orders", "lost results", "non-terminal", "client errors"]
    columns += ["partial files", "crashed"]
    width = max(len(n) for n in per) if per else 10
    print()
    short = ["runs", "dup jobs", "dup orders", "lost res", "non-term", "errors", "partial", "crashed"]
    print(f"{'scenario':<{width}}  " + "  ".join(f"{c:>10}" for c in short) + "  mean s")
    for name in sorted(per):
        counts = per[name]
        mean = seconds[name] / counts["runs"] if counts["runs"] else 0.0
        print(f"{name:<{width}}  " + "  ".join(f"{counts[c]:>10d}" for c in columns) + f"  {mean:6.1f}")
    print()
    for line in examples:
        print("example:", line)
    print()
    print(f"runs: {totals['runs']}")
    print(f"duplicate jobs: {totals['duplicate jobs']}")
    print(f"duplicate orders: {totals['duplicate orders']}")
    print(f"lost results: {totals['lost results']}")
    print(f"non-terminal runs: {totals['non-terminal']}")
    print(f"client errors (truncated_download raises once by design): {totals['client errors']}")
    print(f"crashed scenario runs: {totals['crashed']}")
    print(f"wall time: {wall:.1f} s")
    bad = sum(
        totals[k] for k in ("duplicate jobs", "duplicate orders", "lost results", "non-terminal", "crashed")
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
