"""Pay + start: the hook's ``run_compute`` against the reference client, ocean.py 3.1.2, side by side in
one run, on the same sandbox, interleaved (hook, ocean.py, hook, ocean.py...).

Setup (real, nothing mocked): a fresh sandbox (ganache with the Ocean v4 contracts, the sandbox Provider,
which also serves Aquarius's routes). Two counting reverse proxies on 127.0.0.1 sit in front of the
Provider and of the chain's JSON-RPC; both clients go through them, so every HTTP request to the Provider
and every JSON-RPC call of either client is counted (the Provider's own order checks go straight to the
chain and are not). Each job uses the free environment and the registered ``algorithm``:

- one dataset: ``dataset`` (2 orders: dataset + algorithm);
- three datasets: ``dataset``, ``dataset_raw``, ``dataset_trusted`` (4 orders).

Clients (the time of each: DIDs in, job id out):

- ``hook``: a new ``OceanComputeHook`` (new sessions, nothing cached) and ``run_compute``: fetch the DDOs
  and environments, ``initializeCompute``, check everything before spending (balances, allowances, fees,
  a dry run of every order, the gas balance), send all orders without waiting in between, wait for all
  receipts, start. The consumer wallet of the sandbox connection.
- ``ocean.py``: ocean.py 3.1.2 in a virtualenv of its own (``_oceanpy.py``: created on first use in
  ``~/.cache/airflow-provider-ocean/oceanpy-3.1.2`` from the pinned ``oceanpy-3.1.2.txt``), driven in a
  subprocess by ``oceanpy_flow.py``: ``ocean.assets.resolve`` of every DID, the free environment,
  ``ocean.assets.pay_for_compute_service`` (``initializeCompute``, then for each input an estimated,
  sent and awaited ``startOrder``), ``ocean.compute.start``. The sandbox's second funded wallet
  (``other``), so that neither client's nonces touch the other's.

Chains: ``instant`` is ganache as the sandbox runs it (a block per transaction, mined at once);
``Ns blocks`` stops ganache's automatic mining (``miner_stop``) and mines a block every N seconds
(``evm_mine``) like a real chain's block time. A job starts at any point of a real chain's block clock:
repetition i of R starts (i + 0.5) / R of a block interval after a block was mined, the same point for
both clients (run one after the other, each would otherwise start right after the other's last block).

One untimed run of each client and size goes first (imports, first connections, configuration).

Goals: the hook's pay + start takes at most half of ocean.py's (median over the repetitions) in each of
the four configurations; every order is one transaction and all of a job's orders are sent before the
first receipt is awaited; the hook makes no avoidable round trip (``AVOIDABLE``: reads that carry no
new information, each with its fix in ``benchmarks/README.md``). The exit status is 1 when a goal that
was measured is missed. If ocean.py cannot be installed or run, the comparison is reported as skipped
and the other goals still decide.

The hook's time is split into phases by the timestamps of its requests: ``discover`` (Provider root,
environments, DDOs, chain id), ``initialize`` (``initializeCompute``), ``checks`` (the pre-spend reads
and dry runs), ``send`` (pending nonce, broadcasts), ``receipts`` (waiting for the orders to be mined),
``start`` (the signed start).

Run: ``python benchmarks/pay_start.py`` (instant and 2 s blocks, 5 repetitions), ``--small`` (instant
and 1 s blocks, 1 repetition; the timing goal is printed, not enforced), ``--no-oceanpy`` (the hook
alone: never creates the ocean.py virtualenv; the smoke test uses it).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import _common
import _oceanpy

GOAL_RATIO = 0.5
PHASES = ["discover", "initialize", "checks", "send", "receipts", "start"]


class BlockProducer:
    """Mines a block every ``interval`` seconds with automatic mining off (``None``: leave ganache as is)."""

    def __init__(self, rpc_url: str, interval: float | None) -> None:
        from airflow_provider_ocean.chain.rpc import JsonRpcClient

        self.rpc = JsonRpcClient(rpc_url)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.last_mined = time.monotonic()

    def _run(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval - (time.monotonic() - self.last_mined) % self.interval):
            self.rpc.request("evm_mine")
            self.last_mined = time.monotonic()

    def align(self, phase: float) -> None:
        """Wait until ``phase`` (0-1) of a block interval has passed since a block was mined.

        A user's job starts at any point of the chain's block clock; clients measured one after the other
        would otherwise start in step with it (each right after the previous one's last block).
        """
        if self.interval is None:
            return
        wait = (self.last_mined + phase * self.interval - time.monotonic()) % self.interval
        time.sleep(wait)

    def __enter__(self) -> BlockProducer:
        if self.interval is not None:
            self.rpc.request("miner_stop")
            self.last_mined = time.monotonic()
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.interval is not None:
            self._stop.set()
            self._thread.join()
            self.rpc.request("evm_mine")
            self.rpc.request("miner_start")


class Bench:
    """The sandbox, the proxies and the clients of one run.

    :param info: the sandbox's info.
    :param provider_proxy: the counting proxy in front of the Provider.
    :param rpc_proxy: the counting proxy in front of the chain.
    :param oceanpy: the ocean.py driver, or ``None`` (skipped).
    """

    def __init__(
        self,
        info: dict[str, Any],
        provider_proxy: _common.CountingProxy,
        rpc_proxy: _common.CountingProxy,
        oceanpy: _oceanpy.OceanPyDriver | None,
    ) -> None:
        self.info = info
        self.provider_proxy = provider_proxy
        self.rpc_proxy = rpc_proxy
        self.oceanpy = oceanpy
        self.algorithm = info["assets"]["algorithm"]["did"]
        os.environ["AIRFLOW_CONN_OCEAN_DEFAULT"] = _common.conn_json(
            info, provider_url=provider_proxy.url, rpc_url=rpc_proxy.url
        )
        from airflow_provider_ocean.chain.rpc import JsonRpcClient

        self.chain = JsonRpcClient(info["rpc_url"])  # straight to the chain: not counted

    def measure(self, client: str, dids: list[str]) -> dict[str, Any]:
        """One pay + start by ``client`` (``hook`` or ``ocean.py``): wall time, requests, phases."""
        http_mark, rpc_mark = self.provider_proxy.mark(), self.rpc_proxy.mark()
        tx_mark = len(self.rpc_proxy.tx_hashes)
        extra: dict[str, Any] = {}
        if client == "hook":
            from airflow_provider_ocean.hooks.ocean import OceanComputeHook

            hook = OceanComputeHook(retry_delay=0.2)
            started = time.monotonic()
            job_id = hook.run_compute(dids, {"did": self.algorithm}, max_fee=0)["job_id"]
            finished = time.monotonic()
        else:
            assert self.oceanpy is not None
            started = time.monotonic()
            answer = self.oceanpy.run(dids, self.algorithm)
            finished = time.monotonic()
            job_id = answer["job_id"]
            extra["oceanpy_phases"] = {k: answer[k] for k in ("resolve_s", "pay_s", "start_s")}
        http = self.provider_proxy.spans(http_mark)
        rpc = self.rpc_proxy.spans(rpc_mark)
        calls = [name for *_x, names in rpc for name in names]
        sends = [i for i, name in enumerate(calls) if name == "eth_sendRawTransaction"]
        receipts = [i for i, name in enumerate(calls) if name == "eth_getTransactionReceipt"]
        blocks = {
            int(self.chain.get_transaction_receipt(tx)["blockNumber"], 16)
            for tx in self.rpc_proxy.tx_hashes[tx_mark:]
        }
        entries = [(t, m, p, r) for t, _e, m, p, r in http]
        rpc_entries = [(t, m, p, r) for t, _e, m, p, r in rpc]
        return {
            "client": client,
            "datasets": len(dids),
            "seconds": finished - started,
            "http": len(http),
            "http_by_endpoint": dict(_common.CountingProxy.http_counts(entries)),
            "rpc": len(calls),
            "rpc_requests": len(rpc),
            "rpc_log": [names for *_x, names in rpc],
            "rpc_by_method": dict(_common.CountingProxy.rpc_counts(rpc_entries)),
            "transactions": len(sends),
            "in_flight_together": bool(sends) and (not receipts or max(sends) < min(receipts)),
            "order_blocks": len(blocks),
            "phases": hook_phases(started, finished, http, rpc) if client == "hook" else {},
            "job_id": job_id,
            **extra,
        }


def hook_phases(
    started: float,
    finished: float,
    http: list[tuple[float, float, str, str, list[str]]],
    rpc: list[tuple[float, float, str, str, list[str]]],
) -> dict[str, float]:
    """Split the hook's wall time at the timestamps of its requests (see the module docstring)."""
    paths = [(t, e, urlsplit(p).path) for t, e, _m, p, _r in http]
    init = [(t, e) for t, e, p in paths if p.endswith("/initializeCompute")]
    start = [t for t, _e, p in paths if p.endswith("/api/services/compute") or p.endswith("/nonce")]
    broadcasts = [(t, e) for t, e, _m, _p, r in rpc if "eth_sendRawTransaction" in r]
    if not init or not start or not broadcasts:
        return {}
    # the pending-nonce read right before the first broadcast belongs to sending (later ones are the
    # wait's checks for a replaced transaction)
    counts = [t for t, _e, _m, _p, r in rpc if "eth_getTransactionCount" in r and t <= broadcasts[0][0]]
    t_init, t_checks = init[0][0], init[-1][1]
    t_send = counts[-1] if counts else broadcasts[0][0]
    t_wait = max(e for _t, e in broadcasts)
    later = [t for t in start if t >= t_wait]
    t_start = min(later) if later else finished
    marks = [started, t_init, t_checks, t_send, t_wait, t_start, finished]
    return {name: max(0.0, b - a) for name, a, b in zip(PHASES, marks, marks[1:], strict=False)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="instant and 1 s blocks, 1 repetition")
    parser.add_argument("--block-time", type=float, default=None, help="seconds per block (default 2)")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions per cell (default 5)")
    parser.add_argument(
        "--no-oceanpy", action="store_true", help="the hook alone (never creates the ocean.py virtualenv)"
    )
    args = parser.parse_args()
    block_time = args.block_time or (1.0 if args.small else 2.0)
    repeat = args.repeat or (1 if args.small else 5)
    chains: list[tuple[str, float | None]] = [("instant", None), (f"{block_time:g}s blocks", block_time)]
    load_before = os.getloadavg()
    print(
        f"Pay + start benchmark: {repeat} repetition(s) per cell; {_common.machine()}; "
        f"command: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}",
        flush=True,
    )

    skipped: str | None = "--no-oceanpy" if args.no_oceanpy else None
    python: Path | None = None
    if skipped is None:
        try:
            python = _oceanpy.ensure_venv()
        except _oceanpy.OceanPyUnavailable as error:
            skipped = f"ocean.py {_oceanpy.VERSION} could not be installed: {error}"
    clients = ["hook"] if skipped else ["hook", "ocean.py"]

    results: list[dict[str, Any]] = []
    loads: list[float] = [load_before[0]]
    with _common.sandbox() as info, tempfile.TemporaryDirectory(prefix="ocean-bench-oceanpy-") as scratch:
        assets = info["assets"]
        scenarios = {
            1: [assets["dataset"]["did"]],
            3: [assets["dataset"]["did"], assets["dataset_raw"]["did"], assets["dataset_trusted"]["did"]],
        }
        with (
            _common.CountingProxy(info["provider_url"]) as provider_proxy,
            _common.CountingProxy(info["rpc_url"]) as rpc_proxy,
        ):
            driver: _oceanpy.OceanPyDriver | None = None
            if python is not None:
                try:
                    driver = _oceanpy.OceanPyDriver(
                        python,
                        {
                            "rpc_url": rpc_proxy.url,
                            "provider_url": provider_proxy.url,
                            "aquarius_url": provider_proxy.url,
                            "address_file": str(_oceanpy.address_file(info, Path(scratch))),
                            "key": info["other"]["key"],
                        },
                    )
                except _oceanpy.OceanPyUnavailable as error:
                    skipped, clients = f"the ocean.py driver did not start: {error}", ["hook"]
            bench = Bench(info, provider_proxy, rpc_proxy, driver)
            try:
                for client in clients:  # warm-up, not counted: imports, first connections
                    for dids in scenarios.values():
                        bench.measure(client, dids)
                for chain, interval in chains:
                    with BlockProducer(info["rpc_url"], interval) as blocks:
                        for index in range(repeat):
                            for dids in scenarios.values():
                                for client in clients:  # interleaved
                                    # each repetition at its own point of the block clock, the same for
                                    # both clients: (index + 0.5) / repeat of an interval after a block
                                    blocks.align((index + 0.5) / repeat)
                                    result = bench.measure(client, dids)
                                    results.append({**result, "chain": chain})
                            loads.append(os.getloadavg()[0])
            finally:
                if driver is not None:
                    driver.close()
    return report(args, chains, repeat, results, clients, skipped, loads)


def report(
    args: argparse.Namespace,
    chains: list[tuple[str, float | None]],
    repeat: int,
    results: list[dict[str, Any]],
    clients: list[str],
    skipped: str | None,
    loads: list[float],
) -> int:
    def runs(chain: str, count: int, client: str) -> list[dict[str, Any]]:
        return [r for r in results if (r["chain"], r["datasets"], r["client"]) == (chain, count, client)]

    def cell(chain: str, count: int, client: str) -> dict[str, Any]:
        these = runs(chain, count, client)
        seconds = [r["seconds"] for r in these]
        phases = {p: _common.median([r["phases"].get(p, math.nan) for r in these]) for p in PHASES}
        return {
            **these[0],
            "seconds": _common.median(seconds),
            "min": min(seconds),
            "max": max(seconds),
            "in_flight_together": all(r["in_flight_together"] for r in these),
            "order_blocks": max(r["order_blocks"] for r in these),
            "phases": phases,
        }

    print(f"\nLoad average (1 min) during the run: {min(loads):.2f} to {max(loads):.2f}")
    if skipped:
        print(f"\nocean.py comparison SKIPPED ({skipped}): the hook alone is measured below.")
    goals = _common.Goals("pay_start")
    figures: dict[str, Any] = {"load_1min": [round(min(loads), 2), round(max(loads), 2)], "repeat": repeat}
    summary = []
    for chain, _interval in chains:
        for count in (1, 3):
            cells = {client: cell(chain, count, client) for client in clients}
            rows = [
                [
                    client,
                    f"{c['seconds']:.2f}",
                    f"{c['min']:.2f}-{c['max']:.2f}",
                    c["http"],
                    c["rpc"],
                    c["rpc_requests"],
                    c["http"] + c["rpc_requests"],
                    c["transactions"],
                    c["order_blocks"],
                ]
                for client, c in cells.items()
            ]
            _common.print_table(
                f"{chain}, {count} dataset(s) + algorithm: pay + start, median of {repeat} (interleaved)",
                [
                    "client",
                    "wall s",
                    "min-max s",
                    "Provider HTTP",
                    "RPC calls",
                    "RPC requests",
                    "round trips",
                    "transactions",
                    "blocks with orders",
                ],
                rows,
            )
            hook = cells["hook"]
            key = f"{chain}|{count}"
            figures[key] = {
                client: {
                    "s": round(c["seconds"], 3),
                    "min": round(c["min"], 3),
                    "max": round(c["max"], 3),
                    "http": c["http"],
                    "rpc": c["rpc"],
                    "rpc_requests": c["rpc_requests"],
                    "tx": c["transactions"],
                    "blocks": c["order_blocks"],
                }
                for client, c in cells.items()
            }
            figures[key]["hook"]["phases"] = {p: round(v, 3) for p, v in hook["phases"].items()}
            if "ocean.py" in cells:
                ref = cells["ocean.py"]
                ratio = hook["seconds"] / ref["seconds"]
                figures[key]["ratio"] = round(ratio, 3)
                print(f"  hook / ocean.py = {ratio:.2f} (goal <= {GOAL_RATIO})")
                goals.check(
                    f"{chain}, {count} dataset(s): hook <= {GOAL_RATIO}x ocean.py {_oceanpy.VERSION}",
                    f"{hook['seconds']:.2f} s vs {ref['seconds']:.2f} s = {ratio:.2f}x",
                    ratio <= GOAL_RATIO,
                    enforced=not args.small,
                )
                summary.append(
                    [chain, count, f"{hook['seconds']:.2f}", f"{ref['seconds']:.2f}", f"{ratio:.2f}"]
                )
    if summary:
        _common.print_table(
            f"Summary: pay + start, median of {repeat}, hook vs ocean.py {_oceanpy.VERSION}",
            ["chain", "datasets", "hook s", "ocean.py s", "hook / ocean.py"],
            summary,
        )
    _common.print_table(
        "Where the hook's time goes (median s per phase; see the module docstring)",
        ["chain", "datasets", *PHASES, "total"],
        [
            [
                chain,
                count,
                *(f"{cell(chain, count, 'hook')['phases'][p]:.3f}" for p in PHASES),
                f"{cell(chain, count, 'hook')['seconds']:.3f}",
            ]
            for chain, _i in chains
            for count in (1, 3)
        ],
    )
    if "ocean.py" in clients:
        _common.print_table(
            f"Where ocean.py {_oceanpy.VERSION}'s time goes (median s, measured in its process)",
            ["chain", "datasets", "resolve DDOs + environment", "pay_for_compute_service", "compute.start"],
            [
                [
                    chain,
                    count,
                    *(
                        f"{_common.median([r['oceanpy_phases'][k] for r in these]):.3f}"
                        for k in ("resolve_s", "pay_s", "start_s")
                    ),
                ]
                for chain, _i in chains
                for count in (1, 3)
                for these in [runs(chain, count, "ocean.py")]
            ],
        )
    for count in (1, 3):
        for client in clients:
            c = cell(chains[0][0], count, client)
            print(f"\n{client}, {count} dataset(s), instant: Provider {json_sorted(c['http_by_endpoint'])}")
            print(f"  RPC {json_sorted(c['rpc_by_method'])}")

    slow_chain = chains[1][0]
    avoidable_rows = []
    for count in (1, 3):
        hook_cell = cell(slow_chain, count, "hook")
        orders = count + 1
        goals.check(
            f"{count} dataset(s): one transaction per order ({orders}), sent together",
            f"{hook_cell['transactions']} tx, all sent before the first receipt poll: "
            f"{hook_cell['in_flight_together']}, mined in {hook_cell['order_blocks']} block(s)",
            hook_cell["transactions"] == orders
            and hook_cell["in_flight_together"]
            and cell(chains[0][0], count, "hook")["in_flight_together"],
        )
        instant_hook = cell(chains[0][0], count, "hook")
        avoidable = avoidable_round_trips(instant_hook)
        avoidable_rows.append([count, *[avoidable[k] for k in AVOIDABLE], sum(avoidable.values())])
        goals.check(
            f"{count} dataset(s): no avoidable round trip",
            f"{sum(avoidable.values())} avoidable of "
            f"{instant_hook['http'] + instant_hook['rpc_requests']} round trips",
            sum(avoidable.values()) == 0,
            enforced=not args.small,
        )
    _common.print_table(
        "Avoidable round trips of the hook flow (instant chain)",
        ["datasets", *AVOIDABLE, "total"],
        avoidable_rows,
    )
    if skipped:
        figures["oceanpy_skipped"] = skipped
        print(
            f"\nocean.py comparison SKIPPED ({skipped}): the goal hook <= {GOAL_RATIO}x ocean.py "
            f"{_oceanpy.VERSION} was not measured; the result below is the other goals'."
        )
    return goals.report(figures)


def json_sorted(value: dict[str, Any]) -> str:
    import json

    return json.dumps(value, sort_keys=True)


#: Round trips the hook flow makes that carry no new information (see benchmarks/README.md).
AVOIDABLE = [
    "fee fields re-read per tx",
    "pending nonce re-read per tx",
    "job list before a start on fresh orders",
    "nonce read before the signed start",
    "pre-spend reads sent alone",
]
#: Reads the pre-spend checks make; they can share JSON-RPC batches (one round trip each batch).
BATCHABLE = {"eth_call", "eth_estimateGas", "eth_getBalance", "eth_gasPrice", "eth_getBlockByNumber"}


def avoidable_round_trips(hook_cell: dict[str, Any]) -> dict[str, int]:
    rpc, http = hook_cell["rpc_by_method"], hook_cell["http_by_endpoint"]
    return {
        # read once for the gas budget, then again for every transaction
        AVOIDABLE[0]: max(rpc.get("eth_gasPrice", 0) - 1, 0)
        + max(rpc.get("eth_getBlockByNumber", 0) - 1, 0)
        + max(rpc.get("eth_maxPriorityFeePerGas", 0) - 1, 0),
        # the orders of one payment are sent back to back by one sender
        AVOIDABLE[1]: max(rpc.get("eth_getTransactionCount", 0) - 1, 0),
        # no job can use an order paid a moment ago by this very call
        AVOIDABLE[2]: http.get("GET /api/services/compute", 0),
        # the allocator's nonce is max(stored + 1, now_ms, last + 1) and a refused one is re-signed once
        AVOIDABLE[3]: http.get("GET /api/services/nonce", 0),
        # balances, allowances, fees, dry runs, gas price and balance sent one per request before the
        # first order (the hook sends them in two batches: what the quotes name, then the dry runs)
        AVOIDABLE[4]: _alone_before_first_send(hook_cell["rpc_log"]),
    }


def _alone_before_first_send(rpc_log: list[list[str]]) -> int:
    alone = 0
    for names in rpc_log:
        if "eth_sendRawTransaction" in names:
            break
        if len(names) == 1 and names[0] in BATCHABLE:
            alone += 1
    return alone


if __name__ == "__main__":
    sys.exit(main())
