"""DAG parse cost: what importing the provider's DAG-facing modules adds on top of ``import airflow.sdk``.

Goal: importing the operators module adds at most 30 ms over ``import airflow.sdk``, measured with
``python -X importtime``; the heavy modules (eth-account, eth-abi, eth-utils, eth-keys, requests, the
hook, the wire client, the payment and chain code) are not imported while a DAG is parsed, only when a
task executes.

Method: for each module, a fresh ``python -X importtime -c "import airflow.sdk; import MODULE"`` runs
``--repeat`` times (interleaved). The added cost of one run is the sum of the cumulative times of the
top-level imports listed after ``airflow.sdk`` (everything the module pulled in that ``airflow.sdk`` had
not). The goal is checked on the fastest run, as ``timeit`` does: on a shared machine other load only
ever adds time (the median and the range are printed too, and the median of ``airflow.sdk`` itself for
scale). The same child reports which heavy modules are in ``sys.modules``, after the import and after
building a DAG with every operator and the sensor (as a DAG file does). A last child then does what
``execute`` does first (reads the connection's key, imports the payment code) and shows the heavy
modules arriving there.

Run: ``python benchmarks/dag_parse_cost.py`` (9 runs per module) or ``--small`` (3 runs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import _common

GOAL_MS = 30.0
MODULES = [
    "airflow_provider_ocean.operators.compute",
    "airflow_provider_ocean.operators.results",
    "airflow_provider_ocean.sensors.ocean",
    "airflow_provider_ocean.triggers.ocean",
]
HEAVY = [
    "eth_account",
    "eth_abi",
    "eth_utils",
    "eth_keys",
    "coincurve",
    "requests",
    "urllib3",
    "airflow_provider_ocean.hooks.ocean",
    "airflow_provider_ocean.wire.provider_v4",
    "airflow_provider_ocean.payment.orders",
    "airflow_provider_ocean.signing",
    "airflow_provider_ocean.chain.abi",
    "airflow_provider_ocean.chain.tx",
    "airflow_provider_ocean.chain.rpc",
]
BUILD_DAG = """
from datetime import datetime
from airflow.sdk import DAG
from airflow_provider_ocean.operators.compute import OceanComputeStartOperator, OceanComputeStopOperator
from airflow_provider_ocean.operators.results import OceanComputeResultsOperator
from airflow_provider_ocean.sensors.ocean import OceanComputeJobStatusSensor
with DAG(dag_id="parse_cost", schedule=None, start_date=datetime(2026, 1, 1)):
    start = OceanComputeStartOperator(task_id="start", datasets=["did:op:1"], algorithm={"did": "did:op:2"})
    wait = OceanComputeJobStatusSensor(task_id="wait", job_id="x", deferrable=True)
    results = OceanComputeResultsOperator(task_id="results", job_id="x", destination="/tmp/x")
    stop = OceanComputeStopOperator(task_id="stop", job_id="x")
    start >> wait >> results >> stop
"""
EXECUTE = """
from airflow_provider_ocean.hooks.ocean import OceanComputeHook
hook = OceanComputeHook()
hook.signer  # what every execute() needs first: the wallet key
import airflow_provider_ocean.payment.orders  # what pay_for_compute() imports
"""


def heavy_report(tag: str) -> str:
    check = f"[m for m in {HEAVY!r} if m in sys.modules]"
    return f"import sys, json\nprint('HEAVY_{tag}=' + json.dumps({check}))\n"


def parse_child(modules: list[str]) -> str:
    """Import airflow.sdk, then ``modules`` in turn, then build a DAG; report heavy modules after each."""
    imports = "".join(f"import {m}\n" for m in modules)
    return (
        "import airflow.sdk\n"
        + heavy_report("SDK")
        + imports
        + heavy_report("IMPORT")
        + BUILD_DAG
        + heavy_report("DAG")
    )


def run_child(code: str, *, importtime: bool = False) -> tuple[str, str]:
    args = [sys.executable] + (["-X", "importtime"] if importtime else []) + ["-c", code]
    out = subprocess.run(args, capture_output=True, text=True, env=os.environ.copy(), check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child failed: {out.stderr[-3000:]}")
    return out.stdout, out.stderr


def parse_importtime(stderr: str, modules: list[str]) -> tuple[float, dict[str, float]]:
    """``(airflow.sdk cumulative ms, {module: ms})``: each module's cost is the sum of the cumulative
    times of the top-level imports after the previous one (or after airflow.sdk) up to its own line."""
    sdk_ms = 0.0
    added: dict[str, float] = {}
    pending_us = 0
    seen_sdk = False
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _self, cumulative, name = line[len("import time:") :].split("|", 2)
        if name.startswith("  "):  # nested import: counted in its top-level parent
            continue
        name = name.strip()
        if name == "airflow.sdk":
            seen_sdk = True
            sdk_ms = int(cumulative) / 1000
            continue
        if seen_sdk and len(added) < len(modules):
            pending_us += int(cumulative)
            if name == modules[len(added)]:
                added[name] = pending_us / 1000
                pending_us = 0
    if not seen_sdk or len(added) != len(modules):
        raise RuntimeError("airflow.sdk or a module is missing from the -X importtime output")
    return sdk_ms, added


def heavy_of(stdout: str, tag: str) -> list[str]:
    line = next(x for x in stdout.splitlines() if x.startswith(f"HEAVY_{tag}="))
    return json.loads(line[len(f"HEAVY_{tag}=") :])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="one run importing all modules (smoke run)")
    parser.add_argument("--repeat", type=int, default=None)
    args = parser.parse_args()
    repeat = args.repeat or (1 if args.small else 9)
    together = args.small
    print(
        f"DAG parse cost benchmark: {repeat} run(s)"
        + (" importing the modules one after the other in one child" if together else " per module")
        + f"; {_common.machine()}"
    )

    samples: dict[str, list[float]] = {m: [] for m in MODULES}
    sdk_samples: list[float] = []
    baseline_heavy: set[str] = set()
    import_heavy: set[str] = set()
    dag_heavy: set[str] = set()
    for _ in range(repeat):
        for group in [MODULES] if together else [[m] for m in MODULES]:
            stdout, stderr = run_child(parse_child(group), importtime=True)
            sdk_ms, added = parse_importtime(stderr, group)
            for module, ms in added.items():
                samples[module].append(ms)
            sdk_samples.append(sdk_ms)
            baseline_heavy |= set(heavy_of(stdout, "SDK"))
            import_heavy |= set(heavy_of(stdout, "IMPORT"))
            dag_heavy |= set(heavy_of(stdout, "DAG"))
    os.environ.setdefault(
        "AIRFLOW_CONN_OCEAN_DEFAULT",
        json.dumps(
            {
                "conn_type": "ocean",
                "host": "http://127.0.0.1:9",
                # the sandbox's public development consumer key; nothing is contacted
                "password": "0xef4b441145c1d0f3b4bc6d61d29f5c6e502359481152f869247c7a4244d45209",
            }
        ),
    )
    exec_out, _ = run_child(EXECUTE + heavy_report("EXEC"))
    exec_heavy = set(heavy_of(exec_out, "EXEC"))

    def new(found: set[str]) -> list[str]:
        return [m for m in HEAVY if m in found and m not in baseline_heavy]

    rows = [
        [
            module.replace("airflow_provider_ocean.", ""),
            f"{min(samples[module]):.1f}",
            f"{_common.median(samples[module]):.1f}",
            f"{max(samples[module]):.1f}",
        ]
        for module in MODULES
    ]
    how = "each module imported alone after airflow.sdk" if not together else "imported in this order"
    _common.print_table(
        f"Added import time over airflow.sdk, {repeat} run(s), {how} (airflow.sdk itself: median "
        f"{_common.median(sdk_samples):.0f} ms)",
        ["module", "fastest ms", "median ms", "slowest ms"],
        rows,
    )
    _common.print_table(
        "Heavy modules in sys.modules, beyond those airflow.sdk loads itself ("
        + (", ".join(sorted(baseline_heavy)) or "none")
        + ")",
        ["moment", "heavy modules"],
        [
            ["after importing the module(s)", ", ".join(new(import_heavy)) or "none"],
            [
                "after building a DAG with start operator, sensor, results, stop",
                ", ".join(new(dag_heavy)) or "none",
            ],
            ["execute: hook.signer + payment import", ", ".join(m for m in new(exec_heavy) if "." not in m)],
        ],
    )
    goals = _common.Goals("dag_parse_cost")
    compute_ms = min(samples[MODULES[0]])
    goals.check(
        f"operators module adds <= {GOAL_MS:.0f} ms over airflow.sdk",
        f"{compute_ms:.1f} ms",
        compute_ms <= GOAL_MS,
        enforced=not args.small,
    )
    worst = max(MODULES, key=lambda m: min(samples[m]))
    worst_ms = min(samples[worst])
    goals.check(
        f"each DAG-facing module adds <= {GOAL_MS:.0f} ms",
        f"max {worst_ms:.1f} ms ({worst.replace('airflow_provider_ocean.', '')})",
        worst_ms <= GOAL_MS,
        enforced=not args.small,
    )
    parse_heavy = sorted(set(new(import_heavy)) | set(new(dag_heavy)))
    goals.check("no heavy module at DAG parse", ", ".join(parse_heavy) or "none", not parse_heavy)
    lazy = [m for m in ("eth_account", "eth_abi") if m in exec_heavy]
    goals.check(
        "eth-account and eth-abi load at execute time",
        ", ".join(lazy) or "not loaded",
        lazy == ["eth_account", "eth_abi"],
    )
    return goals.report(
        {
            "repeat": repeat,
            "airflow_sdk_ms_median": round(_common.median(sdk_samples), 1),
            "added_ms_fastest": {
                m.replace("airflow_provider_ocean.", ""): round(min(v), 1) for m, v in samples.items()
            },
            "added_ms_median": {
                m.replace("airflow_provider_ocean.", ""): round(_common.median(v), 1)
                for m, v in samples.items()
            },
            "heavy_at_parse": parse_heavy,
            "heavy_at_execute": [m for m in new(exec_heavy) if "." not in m],
        }
    )


if __name__ == "__main__":
    sys.exit(main())
