"""Batched status polling: 1,000 deferred compute jobs waited on by one triggerer.

Goals: all triggers of one triggerer that wait on jobs of the same (Provider, consumer) share one status
request per poll interval, so that the triggerer sends at most 2 status requests per interval (per-job
polling: one per job, 1,000) and its resident memory grows by at most 50 MB.

Setup (real, nothing mocked). A fresh sandbox; N real compute jobs of the consumer wallet, each with its
own paid order, so that the Provider accepts them as N different jobs (it refuses a second running job
on one order):

- one ``initializeCompute`` for ``dataset_raw`` with a raw shell algorithm, one ``startOrder``, then N-1
  ``reuseOrder`` transactions of that order, each with the provider fee the Provider signed (signed
  locally with consecutive nonces and sent in JSON-RPC batches: this is setup, not what is measured);
- N ``POST /api/services/compute`` through the hook's wire client, one per order.

The algorithm is ``while [ ! -e GO ]; do sleep 0.2; done``: every job stays unfinished (10 in the
engine's pipeline at status 40, the rest queued at status 1) until the benchmark creates ``GO``, then
the engine runs them all to the end (status 70) at its own pace (10 at a time; the sandbox engine ticks
every 50 ms here instead of 200 ms to keep the drain short).

A counting reverse proxy on 127.0.0.1 sits in front of the Provider; the triggerer's connection points at
it, so every status request the triggerer sends is counted with its time.

The triggerer is a child process running N real ``OceanComputeJobTrigger`` instances concurrently in one
asyncio loop, as Airflow's triggerer does (one task per trigger consuming ``trigger.run()``):

0. the triggers arrive one after the other over ``--arrival`` seconds (default: two intervals), as
   the tasks of a scheduled batch defer one by one;
1. ``waiting``: ``--intervals`` poll intervals (counted from the first status request, arrivals
   included) while no job can finish;
2. ``drain``: ``GO`` is created; the triggers run until every one fired its event (all must report
   the job ``succeeded``).

Status requests are counted per whole poll interval, from the first status request (before it, the
first trigger imports the hook and derives the key); the triggerer's RSS is
sampled every 250 ms (``VmRSS``; ``VmHWM`` reset at the baseline) and its growth is the peak minus the
baseline taken after Airflow and the trigger module are imported, before the first trigger exists (the
first trigger's imports of the hook, requests and eth-account are thus counted in the growth).

For comparison the same N jobs are first waited on for 2 intervals by naive per-job pollers in another
child (each polls ``GET compute?jobId=...`` every interval, as triggers did before batching).

Run: ``python benchmarks/batched_polling.py`` (1,000 jobs, 5 s interval) or ``--small`` (30 jobs, 1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import _common

GOAL_REQUESTS = 2
GOAL_RSS_MB = 50.0
SH_CONTAINER = {**_common.CONTAINER, "entrypoint": "sh $ALGO"}


# -- setup: N real jobs ------------------------------------------------------------------------------
def create_jobs(info: dict[str, Any], count: int, go_file: Path) -> list[str]:
    """Pay one order, reuse it ``count - 1`` times, start one job per order; return the job ids."""
    from eth_account import Account

    from airflow_provider_ocean.chain import abi
    from airflow_provider_ocean.hooks.ocean import OceanComputeHook
    from airflow_provider_ocean.models import ComputeAlgorithm
    from airflow_provider_ocean.payment.fees import ZERO_ADDRESS, ProviderFee, _bytes32

    hook = OceanComputeHook(retry_delay=0.2)
    provider, rpc, sender = hook.provider, hook.rpc, hook.sender
    asset = info["assets"]["dataset_raw"]
    algorithm = ComputeAlgorithm.coerce(
        {"rawcode": f"while [ ! -e '{go_file}' ]; do sleep 0.2; done\n", "container": SH_CONTAINER}
    )
    env = provider.choose_free_environment(hook.chain_id)
    dataset = {"documentId": asset["did"], "serviceId": asset["service_id"]}
    quote = provider.initialize_compute(
        datasets=[{**dataset, "consumerAddress": env.consumer_address}],
        algorithm=algorithm.to_initialize_request(),
        environment=env.id,
        valid_until=int(time.time()) + 6 * 3600,
        consumer_address=env.consumer_address,
    )
    fee = ProviderFee.from_json(quote["datasets"][0]["providerFee"])
    start = abi.encode_call(
        abi.DT_START_ORDER,
        env.consumer_address,
        int(asset["service_index"]),
        fee.as_tuple(),
        (ZERO_ADDRESS, ZERO_ADDRESS, 0),
    )
    first = sender.transact(asset["datatoken"], start, what="startOrder")["transactionHash"]
    orders = [first]

    reuse = abi.encode_call(abi.DT_REUSE_ORDER, _bytes32(first), fee.as_tuple())
    account = Account.from_key(info["consumer"]["key"])
    template = sender.build(asset["datatoken"], reuse)
    nonce = rpc.get_transaction_count(sender.address, "pending")
    batch: list[dict[str, Any]] = []
    for number in range(count - 1):
        tx = {k: v for k, v in template.items() if k != "from"}
        tx["nonce"] = nonce + number
        raw = bytes(account.sign_transaction(tx).raw_transaction)
        batch.append(
            {"jsonrpc": "2.0", "id": number, "method": "eth_sendRawTransaction", "params": ["0x" + raw.hex()]}
        )
        if len(batch) == 50 or number == count - 2:
            answer = rpc._session.post(rpc.url, json=batch, timeout=300).json()
            for item in sorted(answer, key=lambda a: a["id"]):
                if "result" not in item:
                    raise RuntimeError(f"reuseOrder refused: {item}")
                orders.append(item["result"])
            batch = []
    if count > 1:
        receipt = rpc.wait_for_receipt(orders[-1], timeout=300)
        if int(receipt["status"], 16) != 1:
            raise RuntimeError("the last reuseOrder failed")

    print(f"  {len(orders)} orders paid", flush=True)
    job_ids = []
    started = time.monotonic()
    for number, order in enumerate(orders):
        job = provider.start_compute(
            hook.signer,
            datasets=[{**dataset, "transferTxId": order}],
            algorithm=algorithm.to_start_request(),
            environment=env.id,
        )
        job_ids.append(job.job_id)
        if (number + 1) % 250 == 0:
            print(f"  started {number + 1} jobs ({time.monotonic() - started:.0f} s)", flush=True)
    return job_ids


# -- the triggerer (child process) -------------------------------------------------------------------
class _RssWatch:
    def __init__(self) -> None:
        gc.collect()
        self.baseline_kb = _common.proc_status_kb("VmRSS")
        self.hwm_reset = _common.reset_peak_rss()
        self.peak_kb = self.baseline_kb
        self.samples: list[tuple[float, int]] = []

    async def run(self) -> None:
        while True:
            rss = _common.proc_status_kb("VmRSS")
            self.peak_kb = max(self.peak_kb, rss)
            self.samples.append((time.monotonic(), rss))
            await asyncio.sleep(0.25)

    def peak(self) -> int:
        if self.hwm_reset:
            self.peak_kb = max(self.peak_kb, _common.proc_status_kb("VmHWM"))
        return self.peak_kb


async def triggerer(
    mode: str, job_ids: list[str], interval: float, waiting: int, arrival: float, go_file: str
) -> dict:
    from airflow_provider_ocean.triggers.ocean import OceanComputeJobTrigger
    from airflow_provider_ocean.triggers.polling import OwnerStatusPoller

    watch = _RssWatch()
    sampler = asyncio.create_task(watch.run())
    events: dict[str, str] = {}

    async def batched(job_id: str) -> None:
        trigger = OceanComputeJobTrigger(job_id=job_id, poll_interval=interval)
        async for event in trigger.run():
            events[job_id] = event.payload["status"]
            return

    polls = [0]

    def polled() -> bool:
        if mode == "batched":
            return any(p.requests for p in list(OwnerStatusPoller._registry.values()))
        return polls[0] > 0

    async def per_job(job_id: str) -> None:
        from airflow_provider_ocean.hooks.ocean import OceanComputeHook

        hook = OceanComputeHook()
        while True:
            job = await asyncio.to_thread(hook.get_job_status, job_id)
            polls[0] += 1
            if job.is_terminal:
                events[job_id] = job.outcome
                return
            await asyncio.sleep(interval)

    created = time.monotonic()
    tasks: list[asyncio.Task] = []
    spread = arrival / len(job_ids)

    async def arrive() -> None:
        # tasks defer one after the other, as a scheduled batch of jobs does
        for job_id in job_ids:
            tasks.append(asyncio.create_task((batched if mode == "batched" else per_job)(job_id)))
            if spread:
                await asyncio.sleep(spread)

    arriving = asyncio.create_task(arrive())
    # the waiting phase counts from the first status request (the first trigger's imports come before it)
    while not polled():  # noqa: ASYNC110 - polls state owned by the code under test
        await asyncio.sleep(0.05)
    started = time.monotonic()
    await asyncio.sleep(waiting * interval)
    await arriving
    released = time.monotonic()
    rss_waiting_kb = _common.proc_status_kb("VmRSS")
    finished = None
    if mode == "batched":
        await asyncio.to_thread(Path(go_file).touch)
        timeout = 120 + len(job_ids) / 3
        done, _pending = await asyncio.wait(tasks, timeout=timeout)
        finished = time.monotonic() if len(done) == len(tasks) else None
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    sampler.cancel()
    peak = watch.peak()
    return {
        "created": created,
        "started": started,
        "released": released,
        "finished": finished,
        "events": dict(sorted(_count(events.values()).items())),
        "baseline_mb": watch.baseline_kb / 1024,
        "peak_growth_mb": (peak - watch.baseline_kb) / 1024,
        "waiting_growth_mb": (rss_waiting_kb - watch.baseline_kb) / 1024,
        "rss_method": "VmHWM + 250 ms samples" if watch.hwm_reset else "250 ms samples",
    }


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[value] = out.get(value, 0) + 1
    return out


def child_main(
    mode: str, jobs_file: str, interval: float, waiting: int, arrival: float, go_file: str
) -> None:
    import airflow.sdk  # noqa: F401 - a triggerer has Airflow loaded

    import airflow_provider_ocean.triggers.ocean  # noqa: F401 - and the trigger class

    job_ids = json.loads(Path(jobs_file).read_text())
    result = asyncio.run(triggerer(mode, job_ids, interval, waiting, arrival, go_file))
    print("RESULT=" + json.dumps(result))


def run_child(
    mode: str,
    jobs_file: Path,
    interval: float,
    waiting: int,
    arrival: float,
    go_file: Path,
    proxy_url: str,
    info: dict,
) -> dict[str, Any]:
    env = os.environ.copy()
    env["AIRFLOW_CONN_OCEAN_DEFAULT"] = _common.conn_json(info, provider_url=proxy_url)
    args = [
        sys.executable,
        __file__,
        "--child",
        mode,
        str(jobs_file),
        str(interval),
        str(waiting),
        str(arrival),
        str(go_file),
    ]
    out = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT=")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"triggerer child ({mode}) failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT=") :])


# -- counting ----------------------------------------------------------------------------------------
def status_times(proxy: _common.CountingProxy, mark: int) -> list[float]:
    return [
        t
        for t, method, path, _rpc in proxy.since(mark)
        if method == "GET" and urlsplit(path).path == "/api/services/compute"
    ]


def per_interval(times: list[float], start: float, end: float, interval: float) -> list[int]:
    """Requests in each whole interval ``[start + k*interval, start + (k+1)*interval)`` before ``end``."""
    counts = []
    k = 0
    while start + (k + 1) * interval <= end + 1e-6:
        low, high = start + k * interval, start + (k + 1) * interval
        counts.append(sum(1 for t in times if low <= t < high))
        k += 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="30 jobs, 1 s interval (smoke run)")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--interval", type=float, default=None, help="poll interval in seconds")
    parser.add_argument("--intervals", type=int, default=None, help="intervals of the waiting phase")
    parser.add_argument("--arrival", type=float, default=None, help="seconds over which triggers arrive")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, jobs_file, interval, waiting, arrival, go_file = args.child
        child_main(mode, jobs_file, float(interval), int(waiting), float(arrival), go_file)
        return 0
    count = args.jobs or (30 if args.small else 1000)
    interval = args.interval or (1.0 if args.small else 5.0)
    waiting = args.intervals or (3 if args.small else 6)
    arrival = args.arrival if args.arrival is not None else 2 * interval
    print(
        f"Batched polling benchmark: {count} jobs, poll interval {interval:g} s, triggers arriving over "
        f"{arrival:g} s, {waiting} waiting intervals; {_common.machine()}"
    )
    with (
        _common.sandbox(max_job_duration=24 * 3600) as info,
        tempfile.TemporaryDirectory(prefix="ocean-bench-poll-") as tmp,
    ):
        go_file = Path(tmp) / "GO"
        started = time.monotonic()
        job_ids = create_jobs(info, count, go_file)
        print(f"created {len(job_ids)} jobs in {time.monotonic() - started:.0f} s", flush=True)
        jobs_file = Path(tmp) / "jobs.json"
        jobs_file.write_text(json.dumps(job_ids))
        with _common.CountingProxy(info["provider_url"]) as proxy:
            mark = proxy.mark()
            naive = run_child("per-job", jobs_file, interval, 2, 0.0, go_file, proxy.url, info)
            naive_counts = per_interval(
                status_times(proxy, mark), naive["started"], naive["released"], interval
            )
            mark = proxy.mark()
            batched = run_child("batched", jobs_file, interval, waiting, arrival, go_file, proxy.url, info)
            times = status_times(proxy, mark)
        waiting_counts = per_interval(times, batched["started"], batched["released"], interval)
        end = batched["finished"] or time.monotonic()
        drain_counts = per_interval(times, batched["released"], end, interval)
        # the last, partial interval of the drain counts too
        tail = sum(1 for t in times if t >= batched["released"] + len(drain_counts) * interval)

    _common.print_table(
        "Status requests per poll interval",
        ["triggerer", "phase", "requests in each interval", "max", "total"],
        [
            [
                "per-job polling",
                "waiting",
                " ".join(map(str, naive_counts)),
                max(naive_counts),
                sum(naive_counts),
            ],
            [
                "batched (OceanComputeJobTrigger)",
                "waiting",
                " ".join(map(str, waiting_counts)),
                max(waiting_counts),
                sum(waiting_counts),
            ],
            [
                "batched (OceanComputeJobTrigger)",
                "drain",
                " ".join(map(str, drain_counts))
                + (f" (+{tail} in the last partial interval)" if tail else ""),
                max([*drain_counts, tail]),
                sum(drain_counts) + tail,
            ],
        ],
    )
    drain_s = (batched["finished"] - batched["released"]) if batched["finished"] else float("nan")
    _common.print_table(
        "Triggerer",
        ["figure", "per-job polling", "batched"],
        [
            ["jobs waited on", count, count],
            ["events fired", json.dumps(naive["events"]), json.dumps(batched["events"])],
            ["all jobs ended, events fired within", "-", f"{drain_s:.1f} s after GO"],
            [
                "RSS baseline (Airflow + trigger module)",
                f"{naive['baseline_mb']:.1f} MB",
                f"{batched['baseline_mb']:.1f} MB",
            ],
            [
                "RSS growth at the end of waiting",
                f"{naive['waiting_growth_mb']:.1f} MB",
                f"{batched['waiting_growth_mb']:.1f} MB",
            ],
            ["peak RSS growth", f"{naive['peak_growth_mb']:.1f} MB", f"{batched['peak_growth_mb']:.1f} MB"],
        ],
    )
    goals = _common.Goals("batched_polling")
    worst = max([*waiting_counts, *drain_counts, tail])
    goals.check(
        f"status requests per interval <= {GOAL_REQUESTS} ({count} jobs)",
        f"max {worst} (per-job polling: max {max(naive_counts)})",
        worst <= GOAL_REQUESTS,
    )
    goals.check(
        f"triggerer RSS growth <= {GOAL_RSS_MB:.0f} MB",
        f"{batched['peak_growth_mb']:.1f} MB",
        batched["peak_growth_mb"] <= GOAL_RSS_MB,
    )
    goals.check(
        "every trigger fired one event, all succeeded",
        json.dumps(batched["events"]),
        batched["events"] == {"succeeded": count},
    )
    return goals.report(
        {
            "jobs": count,
            "interval_s": interval,
            "per_job_requests_per_interval": naive_counts,
            "batched_waiting_requests_per_interval": waiting_counts,
            "batched_drain_requests_per_interval": drain_counts,
            "batched_peak_rss_growth_mb": round(batched["peak_growth_mb"], 1),
            "per_job_peak_rss_growth_mb": round(naive["peak_growth_mb"], 1),
            "drain_s": round(drain_s, 1),
        }
    )


if __name__ == "__main__":
    sys.exit(main())
