"""Sandbox load: how many requests the sandbox chain (ganache) and server answer, and how long the slowest
takes, under N concurrent paying clients.

Setup (real, nothing mocked): a fresh sandbox (ganache + Ocean v4 contracts + the sandbox Provider) on free
127.0.0.1 ports. N client threads, each with a wallet of its own (funded at setup, so that clients never
compete for nonces and only the sandbox is measured), each doing what a paying task does, over and over,
with the independent protocol client of the sandbox tests (``tests/sandbox/ocean_client.py``, none of the
provider's code):

1. ``POST initializeCompute`` (``dataset_raw`` with a raw algorithm, free environment) for a provider fee;
2. ``eth_estimateGas`` of its ``startOrder``, ``eth_getTransactionCount`` (pending), ``eth_gasPrice``;
3. ``eth_sendRawTransaction``;
4. ``eth_getTransactionReceipt`` until mined, polled as the provider's client does (0.1 s, x1.5, <= 2 s);
5. ``POST /api/services/compute`` with the order (the Provider checks it on chain and starts a job).

Meanwhile ``eth_blockNumber`` and the Provider's ``GET /`` are probed every 0.25 s (``LatencyProbe``). Every
request's answer time is recorded client-side, with a read timeout of ``--timeout`` seconds (long, so that
a slow answer is measured rather than cut).

Figures per number of clients: orders mined per second, JSON-RPC requests per second, and per request kind
the count, median, 95th percentile and worst answer time; failures by kind.

Setups (``--setups``, in order, on the same chain): ``sandbox`` is the sandbox as ``ocean-sandbox up`` runs
it (ganache behind the JSON-RPC front of ``ocean_sandbox/rpc_front.py``, gate on); ``direct`` sends the
clients' JSON-RPC to ganache itself, as before the front existed; ``gate-off`` goes through the front with
its gate off (the proxy hop without the gate). ``--compare`` is ``--setups direct,sandbox``.

Goals (judged for ``sandbox`` only, the others are printed for reference): every request answered
(0 failures); every request but ``eth_estimateGas`` within ``--max-seconds`` (default 5); and no estimate
waiting longer than its turn: at most ``--estimate-seconds`` (default 1) per client. Ganache spends about
half a second of its one thread on a ``startOrder`` estimate (about a dozen EVM runs), so N
clients estimating at once wait up to about N x 0.5 s whatever the order; the front serves them first come
first served.

Run: ``python benchmarks/sandbox_load.py [--clients 1,8,24] [--seconds 45] [--compare]``;
``--ganache-option --flag=value`` and ``--front-option --flag=value`` (repeatable; ``--flag=`` leaves a
ganache flag out) start ganache or the front with other options.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import _common
import requests
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak

from tests.cross_host_support import LatencyProbe, front_stats
from tests.sandbox import ocean_client as oc

QUICK = {"rawcode": "print('load')\n", "container": _common.CONTAINER}
ASSET = "dataset_raw"


def machine_load() -> str:
    """``date`` and ``uptime``'s load averages."""
    one, five, fifteen = os.getloadavg()
    return f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


class Recorder:
    """Answer times and failures per request kind (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.failures: Counter[str] = Counter()
        self.orders = 0

    def timed(self, kind: str, call: Any) -> Any:
        """Run ``call()``, record its answer time under ``kind`` (and a failure when it raises)."""
        started = time.monotonic()
        try:
            return call()
        except Exception as exc:
            with self._lock:
                self.failures[f"{kind}: {type(exc).__name__}: {str(exc)[:120]}"] += 1
            raise
        finally:
            with self._lock:
                self.times[kind].append(time.monotonic() - started)

    def record(self, kind: str, seconds: float) -> None:
        with self._lock:
            self.times[kind].append(seconds)

    def order_mined(self) -> None:
        with self._lock:
            self.orders += 1


class LoadClient(threading.Thread):
    """One paying client with its own wallet, looping until ``stop`` is set.

    :param lab: the independent client's harness (Provider and chain URLs, assets).
    :param wallet: this client's funded wallet.
    :param recorder: where answer times go.
    :param stop: set to end the loop (after the current iteration).
    :param timeout: read timeout of every request.
    :param start_jobs: also start a job with each order (``POST /api/services/compute``).
    :param rpc_url: where the client's JSON-RPC goes (the sandbox's ``rpc_url``, or ganache itself).
    """

    def __init__(
        self,
        lab: oc.Lab,
        wallet: oc.Wallet,
        recorder: Recorder,
        stop: threading.Event,
        *,
        timeout: float,
        start_jobs: bool,
        rpc_url: str,
    ) -> None:
        super().__init__(daemon=True)
        self.rpc_url = rpc_url
        self.lab = lab
        self.wallet = wallet
        self.recorder = recorder
        self.stop = stop
        self.timeout = timeout
        self.start_jobs = start_jobs
        self.session = requests.Session()
        self.env = lab.free_env
        self.asset = lab.assets[ASSET]

    def rpc(self, method: str, params: list[Any]) -> Any:
        def call() -> Any:
            answer = self.session.post(
                self.rpc_url,
                json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                timeout=(10, self.timeout),
            ).json()
            if "error" in answer:
                raise oc.RpcError(f"{method}: {answer['error'].get('message')}")
            return answer["result"]

        return self.recorder.timed(method, call)

    def http(self, kind: str, method: str, path: str, body: dict[str, Any]) -> Any:
        def call() -> Any:
            response = self.session.request(
                method, self.lab.provider.base_url + path, json=body, timeout=(10, self.timeout)
            )
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
            return response.json()

        return self.recorder.timed(kind, call)

    def iteration(self) -> None:
        lab, wallet = self.lab, self.wallet
        consumer = lab.env_consumer[self.env]
        quote = self.http(
            "POST initializeCompute",
            "POST",
            "/api/services/initializeCompute",
            {
                "datasets": [lab.ref(ASSET)],
                "algorithm": {"meta": QUICK},
                "compute": {"env": self.env, "validUntil": int(time.time()) + 3600},
                "consumerAddress": consumer,
            },
        )
        answer = quote["datasets"][0]
        data = oc.START_ORDER_SELECTOR + encode(
            ["address", "uint256", oc.PROVIDER_FEE_TYPE, oc.CONSUME_MARKET_FEE_TYPE],
            [
                consumer,
                self.asset["service_index"],
                oc.fee_tuple(answer["providerFee"]),
                (oc.ZERO_ADDRESS, oc.ZERO_ADDRESS, 0),
            ],
        )
        call = {"from": wallet.address, "to": answer["datatoken"], "data": oc.hex0x(data)}
        gas = int(self.rpc("eth_estimateGas", [call]), 16)
        nonce = int(self.rpc("eth_getTransactionCount", [wallet.address, "pending"]), 16)
        price = oc.legacy_gas_price(
            int(self.rpc("eth_gasPrice", []), 16), self.rpc("eth_getBlockByNumber", ["latest", False])
        )
        tx = {
            "to": answer["datatoken"],
            "data": data,
            "value": 0,
            "gas": int(gas * 1.3) + 10_000,
            "gasPrice": price,
            "nonce": nonce,
            "chainId": lab.chain.chain_id,
        }
        raw = Account.sign_transaction(tx, wallet.key).raw_transaction
        tx_hash = "0x" + keccak(raw).hex()
        self.rpc("eth_sendRawTransaction", [oc.hex0x(raw)])
        sent = time.monotonic()
        delay = 0.1
        while True:
            receipt = self.rpc("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None:
                break
            if time.monotonic() - sent > self.timeout:
                raise TimeoutError(f"{tx_hash} not mined in {self.timeout} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)
        self.recorder.record("receipt after broadcast", time.monotonic() - sent)
        if int(receipt["status"], 16) != 1:
            raise RuntimeError(f"startOrder {tx_hash} reverted")
        self.recorder.order_mined()
        if self.start_jobs:
            body = lab.provider.start_body(wallet, lab.ref(ASSET, tx_hash), {"meta": QUICK}, self.env)
            self.http("POST compute (start)", "POST", "/api/services/compute", body)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.iteration()
            except Exception:  # recorded by Recorder.timed (or below); the client goes on
                time.sleep(0.5)


def wallets_for(info: dict[str, Any], count: int) -> list[oc.Wallet]:
    """``count`` deterministic wallets (keccak of a label), each with 1 ETH from ``other`` and 100,000
    ``ASSET`` datatokens minted by the publisher."""
    from tests.faults import harness

    token = info["assets"][ASSET]["datatoken"]
    out = []
    for index in range(count):
        key = "0x" + keccak(text=f"sandbox-load-client-{index}").hex()
        wallet = oc.Wallet(Account.from_key(key).address, key)
        harness.send_transaction(
            info["rpc_url"], info["other"]["key"], wallet.address, value=10**18, gas=21_000
        )
        mint = harness.erc20_call_data("mint(address,uint256)", wallet.address, 100_000 * oc.ONE_TOKEN)
        harness.send_transaction(info["rpc_url"], info["publisher"]["key"], token, data=mint)
        out.append(wallet)
    return out


def measure(
    info: dict[str, Any],
    wallets: list[oc.Wallet],
    *,
    seconds: float,
    timeout: float,
    start_jobs: bool,
    rpc_url: str,
) -> dict[str, Any]:
    """Run ``len(wallets)`` clients for ``seconds`` and return the figures."""
    lab = oc.Lab(info)
    recorder = Recorder()
    stop = threading.Event()
    clients = [
        LoadClient(lab, w, recorder, stop, timeout=timeout, start_jobs=start_jobs, rpc_url=rpc_url)
        for w in wallets
    ]
    with LatencyProbe(rpc_url, info["provider_url"], timeout=timeout) as probe:
        started = time.monotonic()
        for client in clients:
            client.start()
        time.sleep(seconds)
        stop.set()
        for client in clients:
            client.join(timeout + 30)
        elapsed = time.monotonic() - started
    rpc_kinds = [k for k in recorder.times if k.startswith("eth_")]
    rpc_requests = sum(len(recorder.times[k]) for k in rpc_kinds)
    kinds = {
        kind: {
            "count": len(values),
            "median": round(statistics.median(values), 3),
            "p95": round(_percentile(values, 0.95), 3),
            "max": round(max(values), 3),
        }
        for kind, values in sorted(recorder.times.items())
        if values
    }
    kinds["probe eth_blockNumber"] = {"count": probe.samples["chain"], "max": round(probe.worst["chain"], 3)}
    kinds["probe GET / (Provider)"] = {
        "count": probe.samples["provider"],
        "max": round(probe.worst["provider"], 3),
    }
    failures = Counter(recorder.failures)
    for name, count in probe.failures.items():
        failures[f"probe {name}"] += count
    return {
        "clients": len(wallets),
        "seconds": round(elapsed, 1),
        "orders": recorder.orders,
        "orders_per_second": round(recorder.orders / elapsed, 2),
        "rpc_requests_per_second": round(rpc_requests / elapsed, 1),
        "kinds": kinds,
        "failures": dict(failures),
        "worst_request": max(
            (v["max"] for k, v in kinds.items() if k != "receipt after broadcast"), default=0.0
        ),
        "worst_other_than_estimate": max(
            (v["max"] for k, v in kinds.items() if k not in ("receipt after broadcast", "eth_estimateGas")),
            default=0.0,
        ),
    }


def settle(info: dict[str, Any], wallets: list[oc.Wallet]) -> None:
    """Wait until the wallets' jobs have ended (an idle engine for the next step)."""
    from tests.faults import harness

    for wallet in wallets:
        ids = harness.job_ids(info["provider_url"], wallet.address)
        harness.wait_until_terminal(info["provider_url"], wallet.address, ids, timeout=180)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def parse_options(items: list[str], what: str) -> dict[str, str | None]:
    """``--flag=value`` items into options (``--flag=`` leaves the flag out)."""
    out: dict[str, str | None] = {}
    for item in items:
        flag, sep, value = item.partition("=")
        if not sep or not flag.startswith("--"):
            raise SystemExit(f"--{what}-option wants --flag=value, not {item!r}")
        out[flag] = value or None
    return out


#: The setups ``--setups`` can name: (description, front options, clients talk to ganache itself).
SETUPS: dict[str, tuple[str, dict[str, str], bool]] = {
    "direct": ("ganache alone (clients bypass the front, as before it)", {}, True),
    "gate-off": ("front without gate", {"--gate": "off"}, False),
    "sandbox": ("sandbox as `up` runs it (front, gate on)", {}, False),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,8,24", help="numbers of concurrent clients, default 1,8,24")
    parser.add_argument("--seconds", type=float, default=45.0, help="seconds of load per step, default 45")
    parser.add_argument("--timeout", type=float, default=120.0, help="read timeout of each request (s)")
    parser.add_argument(
        "--max-seconds", type=float, default=5.0, help="goal: worst answer but estimates (s), default 5"
    )
    parser.add_argument(
        "--estimate-seconds",
        type=float,
        default=1.0,
        help="goal: worst eth_estimateGas per concurrent client (s), default 1",
    )
    parser.add_argument("--no-jobs", action="store_true", help="pay orders only, start no job")
    parser.add_argument(
        "--setups",
        default="sandbox",
        help=f"comma-separated, in order, from {sorted(SETUPS)} (default: sandbox; goals judge `sandbox`)",
    )
    parser.add_argument("--compare", action="store_true", help="short for --setups direct,sandbox")
    parser.add_argument(
        "--ganache-option", action="append", default=[], help="--flag=value for ganache (repeatable)"
    )
    parser.add_argument(
        "--front-option", action="append", default=[], help="--flag=value for the RPC front (repeatable)"
    )
    args = parser.parse_args(argv)
    steps = [int(n) for n in args.clients.split(",") if n.strip()]
    names = (
        ["direct", "sandbox"] if args.compare else [n.strip() for n in args.setups.split(",") if n.strip()]
    )
    unknown = [n for n in names if n not in SETUPS]
    if unknown:
        parser.error(f"unknown setups {unknown}; known: {sorted(SETUPS)}")
    ganache_options = parse_options(args.ganache_option, "ganache")
    extra_front = {k: v for k, v in parse_options(args.front_option, "front").items() if v is not None}
    command = " ".join([Path(sys.executable).name, *sys.argv])
    print(f"Sandbox load: clients {steps}, {args.seconds:g} s each, setups {names}; {_common.machine()}")
    print(f"  command: {command}\n  start:   {machine_load()}")
    if ganache_options or extra_front:
        print(f"  ganache options {ganache_options}, front options {extra_front}")

    results: list[dict[str, Any]] = []
    with _common.sandbox(
        receipt_timeout=120.0,
        max_job_duration=60,
        ganache_options=ganache_options,
        rpc_front_options=extra_front,
    ) as info:
        from ocean_sandbox.state import load_state

        box = info["sandbox"]
        ganache_url = load_state(box.state_dir)["ganache_url"]
        wallets = wallets_for(info, max(steps))
        for name in names:
            label, front_options, direct = SETUPS[name]
            wanted = {**front_options, **extra_front}
            if wanted != box.rpc_front_options:
                box.rpc_front_options = wanted
                box.restart_front()
            for count in steps:
                front_stats(info["rpc_url"], reset=True)
                figures = measure(
                    info,
                    wallets[:count],
                    seconds=args.seconds,
                    timeout=args.timeout,
                    start_jobs=not args.no_jobs,
                    rpc_url=ganache_url if direct else info["rpc_url"],
                )
                figures.update(
                    setup=name, config=label, at=machine_load(), front=front_stats(info["rpc_url"])
                )
                results.append(figures)
                report_step(figures)
                settle(info, wallets[:count])
    print(f"\n  end: {machine_load()}")

    _common.print_table(
        "summary",
        [
            "setup",
            "clients",
            "orders/s",
            "RPC req/s",
            "worst but estimates s",
            "worst estimateGas s",
            "failures",
        ],
        [
            [
                r["setup"],
                r["clients"],
                r["orders_per_second"],
                r["rpc_requests_per_second"],
                r["worst_other_than_estimate"],
                r["kinds"].get("eth_estimateGas", {}).get("max", "-"),
                sum(r["failures"].values()),
            ]
            for r in results
        ],
    )
    goals = _common.Goals("sandbox_load")
    for r in results:
        name = f"{r['setup']}, {r['clients']} clients"
        judged = r["setup"] == "sandbox"
        failures = sum(r["failures"].values())
        goals.check(f"{name}: every request answered", f"{failures} failures", not failures, enforced=judged)
        goals.check(
            f"{name}: worst answer but estimates <= {args.max_seconds:g} s",
            f"{r['worst_other_than_estimate']:.2f} s",
            r["worst_other_than_estimate"] <= args.max_seconds,
            enforced=judged,
        )
        budget = args.estimate_seconds * r["clients"]
        worst_estimate = r["kinds"].get("eth_estimateGas", {}).get("max", 0.0)
        goals.check(
            f"{name}: worst eth_estimateGas <= {budget:g} s ({args.estimate_seconds:g} s per client)",
            f"{worst_estimate:.2f} s",
            worst_estimate <= budget,
            enforced=judged,
        )
    return goals.report({"command": command, "steps": results})


def report_step(figures: dict[str, Any]) -> None:
    """Print one step's table."""
    rows = [
        [kind, v["count"], v.get("median", ""), v.get("p95", ""), v["max"]]
        for kind, v in figures["kinds"].items()
    ]
    _common.print_table(
        f"{figures['config']}: {figures['clients']} clients for {figures['seconds']} s ({figures['at']}): "
        f"{figures['orders']} orders ({figures['orders_per_second']}/s), "
        f"{figures['rpc_requests_per_second']} JSON-RPC requests/s",
        ["request", "count", "median s", "p95 s", "max s"],
        rows,
    )
    for failure, count in Counter(figures["failures"]).most_common():
        print(f"  FAILED {count} x {failure}")
    front = figures.get("front") or {}
    if front.get("worst_seconds"):
        worst = ", ".join(f"{k} {v}" for k, v in sorted(front["worst_seconds"].items()) if v >= 0.5)
        print(f"  at the front: worst {worst or '< 0.5 s'}; gate {front.get('gate')}")


if __name__ == "__main__":
    raise SystemExit(main())
