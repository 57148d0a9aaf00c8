"""Pay + start: round trips, transactions and wall time of ``OceanComputeHook.run_compute`` for one and
for three datasets, against a straightforward sequential flow measured in the same run.

Setup (real, nothing mocked): a fresh sandbox (ganache with the Ocean v4 contracts, the sandbox
Provider). Two counting reverse proxies on 127.0.0.1 sit in front of the Provider and of the chain's
JSON-RPC; the connection the flows use points at them, so every HTTP request to the Provider and every
JSON-RPC call of the client is counted (the Provider's own order checks go straight to the chain and
are not). Each flow starts with a new hook (new sessions, nothing cached), on the free environment,
with the registered ``algorithm``:

- one dataset: ``dataset`` (2 orders: dataset + algorithm);
- three datasets: ``dataset``, ``dataset_raw``, ``dataset_trusted`` (4 orders).

Flows:

- ``hook``: ``OceanComputeHook.run_compute`` (checks everything before spending, dry-runs the orders,
  sends all orders without waiting in between, then waits for all receipts, then starts);
- ``sequential``: what a straightforward client does (like the reference client): discover, fetch the
  DDOs, ``initializeCompute``, then for each input build, send and wait for one order after the other,
  then start. No balance checks or dry runs.

Chains: ``instant`` is ganache as the sandbox runs it (a block per transaction, mined at once);
``Ns blocks`` stops ganache's automatic mining (``miner_stop``) and mines a block every N seconds
(``evm_mine``) like a real chain's block time, so that waiting for each order in turn costs a block each.

One untimed run of each flow goes first (imports, first connections).

Goals checked: every order is one transaction and all of a job's orders are sent before the first
receipt is awaited; the hook flow makes no avoidable round trip (``AVOIDABLE``: reads that carry no new
information, each with its fix in ``benchmarks/README.md``). The wall times are printed, not judged: on
ganache the hook's dry runs (``eth_estimateGas`` takes about 0.45 s there) cost about what waiting for
one block less saves with one dataset.

Run: ``python benchmarks/pay_start.py`` (instant and 2 s blocks, 3 repetitions) or ``--small``
(instant and 1 s blocks, 1 repetition).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any

import _common

ZERO = "0x0000000000000000000000000000000000000000"


class BlockProducer:
    """Mines a block every ``interval`` seconds with automatic mining off (``None``: leave ganache as is)."""

    def __init__(self, rpc_url: str, interval: float | None) -> None:
        from airflow_provider_ocean.chain.rpc import JsonRpcClient

        self.rpc = JsonRpcClient(rpc_url)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            self.rpc.request("evm_mine")

    def __enter__(self) -> BlockProducer:
        if self.interval is not None:
            self.rpc.request("miner_stop")
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.interval is not None:
            self._stop.set()
            self._thread.join()
            self.rpc.request("evm_mine")
            self.rpc.request("miner_start")


def hook_flow(hook: Any, dids: list[str], algorithm_did: str) -> str:
    result = hook.run_compute(dids, {"did": algorithm_did}, max_fee=0)
    return result["job_id"]


def sequential_flow(hook: Any, dids: list[str], algorithm_did: str) -> str:
    """Discover, initialize, then order and wait one input at a time, then start."""
    from airflow_provider_ocean.chain import abi
    from airflow_provider_ocean.ddo import find_service
    from airflow_provider_ocean.payment.fees import ProviderFee

    provider = hook.provider
    env = provider.choose_free_environment(hook.chain_id)
    inputs = []
    for position, did in enumerate([*dids, algorithm_did]):
        ddo = provider.get_ddo(did)
        role = (
            "algorithm" if position == len(dids) else ("dataset" if position == 0 else "additional dataset")
        )
        service, index = find_service(ddo, None, role=role)
        inputs.append((did, str(service["id"]), index, service["datatokenAddress"]))
    requests = [{"documentId": did, "serviceId": sid} for did, sid, _i, _dt in inputs]
    quote = provider.initialize_compute(
        datasets=requests[:-1],
        algorithm=requests[-1],
        environment=env.id,
        valid_until=int(time.time()) + 3600,
        consumer_address=env.consumer_address,
    )
    quotes = [*quote["datasets"], quote["algorithm"]]
    txs = []
    for (_did, _sid, index, datatoken), item in zip(inputs, quotes, strict=True):
        fee = ProviderFee.from_json(item["providerFee"])
        data = abi.encode_call(
            abi.DT_START_ORDER, env.consumer_address, index, fee.as_tuple(), (ZERO, ZERO, 0)
        )
        receipt = hook.sender.transact(datatoken, data, what="startOrder")
        txs.append(receipt["transactionHash"])
    bodies = [{**r, "transferTxId": tx} for r, tx in zip(requests, txs, strict=True)]
    job = provider.start_compute(hook.signer, datasets=bodies[:-1], algorithm=bodies[-1], environment=env.id)
    return job.job_id


def measure(
    info: dict[str, Any],
    provider_proxy: _common.CountingProxy,
    rpc_proxy: _common.CountingProxy,
    flow: str,
    dids: list[str],
) -> dict[str, Any]:
    from airflow_provider_ocean.hooks.ocean import OceanComputeHook

    os.environ["AIRFLOW_CONN_OCEAN_DEFAULT"] = _common.conn_json(
        info, provider_url=provider_proxy.url, rpc_url=rpc_proxy.url
    )
    hook = OceanComputeHook(retry_delay=0.2)
    http_mark, rpc_mark, tx_mark = provider_proxy.mark(), rpc_proxy.mark(), len(rpc_proxy.tx_hashes)
    started = time.perf_counter()
    run = hook_flow if flow == "hook" else sequential_flow
    job_id = run(hook, dids, info["assets"]["algorithm"]["did"])
    seconds = time.perf_counter() - started
    http = provider_proxy.since(http_mark)
    rpc = rpc_proxy.since(rpc_mark)
    calls = [name for *_x, names in rpc for name in names]
    sends = [i for i, name in enumerate(calls) if name == "eth_sendRawTransaction"]
    receipts = [i for i, name in enumerate(calls) if name == "eth_getTransactionReceipt"]
    together = bool(sends) and (not receipts or max(sends) < min(receipts))
    blocks = {
        int(hook.rpc.get_transaction_receipt(tx)["blockNumber"], 16) for tx in rpc_proxy.tx_hashes[tx_mark:]
    }
    return {
        "flow": flow,
        "datasets": len(dids),
        "seconds": seconds,
        "http": len(http),
        "http_by_endpoint": dict(_common.CountingProxy.http_counts(http)),
        "rpc": len(calls),
        "rpc_requests": len(rpc),
        "rpc_log": [names for *_x, names in rpc],
        "rpc_by_method": dict(_common.CountingProxy.rpc_counts(rpc)),
        "transactions": len(sends),
        "in_flight_together": together,
        "order_blocks": len(blocks),
        "job_id": job_id,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="instant and 1 s blocks, 1 repetition")
    parser.add_argument("--block-time", type=float, default=None, help="seconds per block (default 2)")
    parser.add_argument("--repeat", type=int, default=None)
    args = parser.parse_args()
    block_time = args.block_time or (1.0 if args.small else 2.0)
    repeat = args.repeat or (1 if args.small else 3)
    chains: list[tuple[str, float | None]] = [("instant", None), (f"{block_time:g}s blocks", block_time)]
    print(f"Pay + start benchmark: {repeat} repetition(s) per cell; {_common.machine()}")

    results: list[dict[str, Any]] = []
    with _common.sandbox() as info:
        assets = info["assets"]
        scenarios = {
            1: [assets["dataset"]["did"]],
            3: [assets["dataset"]["did"], assets["dataset_raw"]["did"], assets["dataset_trusted"]["did"]],
        }
        with (
            _common.CountingProxy(info["provider_url"]) as provider_proxy,
            _common.CountingProxy(info["rpc_url"]) as rpc_proxy,
        ):
            for flow in ("hook", "sequential"):  # warm-up, not counted: imports, first connections
                measure(info, provider_proxy, rpc_proxy, flow, scenarios[1])
            for chain, interval in chains:
                with BlockProducer(info["rpc_url"], interval):
                    for _ in range(repeat):
                        for dids in scenarios.values():
                            for flow in ("hook", "sequential"):
                                result = measure(info, provider_proxy, rpc_proxy, flow, dids)
                                results.append({**result, "chain": chain})

    def cell(chain: str, count: int, flow: str) -> dict[str, Any]:
        runs = [r for r in results if (r["chain"], r["datasets"], r["flow"]) == (chain, count, flow)]
        first = runs[0]
        return {
            **first,
            "seconds": _common.median([r["seconds"] for r in runs]),
            "in_flight_together": all(r["in_flight_together"] for r in runs),
            "order_blocks": max(r["order_blocks"] for r in runs),
        }

    rows = []
    for chain, _interval in chains:
        for count in (1, 3):
            for flow in ("hook", "sequential"):
                c = cell(chain, count, flow)
                rows.append(
                    [
                        chain,
                        count,
                        flow,
                        c["http"],
                        c["rpc"],
                        c["rpc_requests"],
                        c["http"] + c["rpc_requests"],
                        c["transactions"],
                        c["order_blocks"],
                        f"{c['seconds']:.2f}",
                    ]
                )
    _common.print_table(
        f"Pay + start (wall time: median of {repeat})",
        [
            "chain",
            "datasets",
            "flow",
            "Provider HTTP",
            "RPC calls",
            "RPC requests",
            "round trips",
            "transactions",
            "blocks with orders",
            "wall s",
        ],
        rows,
    )
    for count in (1, 3):
        for flow in ("hook", "sequential"):
            c = cell(chains[0][0], count, flow)
            print(
                f"\n{flow}, {count} dataset(s): Provider {json.dumps(c['http_by_endpoint'], sort_keys=True)}"
            )
            print(f"  RPC {json.dumps(c['rpc_by_method'], sort_keys=True)}")

    goals = _common.Goals("pay_start")
    slow_chain = chains[1][0]
    avoidable_rows = []
    for count in (1, 3):
        hook_cell, seq_cell = cell(slow_chain, count, "hook"), cell(slow_chain, count, "sequential")
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
        print(
            f"{count} dataset(s), {slow_chain}: hook {hook_cell['seconds']:.2f} s, "
            f"sequential {seq_cell['seconds']:.2f} s (not a goal: one block less to wait against the "
            "hook's pre-spend checks)"
        )
    _common.print_table(
        "Avoidable round trips of the hook flow (instant chain)",
        ["datasets", *AVOIDABLE, "total"],
        avoidable_rows,
    )
    figures = {
        f"{c['chain']}|{c['datasets']}|{c['flow']}": {
            "http": c["http"],
            "rpc": c["rpc"],
            "rpc_requests": c["rpc_requests"],
            "tx": c["transactions"],
            "s": round(c["seconds"], 2),
        }
        for c in (cell(ch, n, f) for ch, _i in chains for n in (1, 3) for f in ("hook", "sequential"))
    }
    return goals.report(figures)


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
