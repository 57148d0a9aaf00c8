"""``ocean-sandbox``: a local Ocean (ganache + Ocean v4 contracts + a Provider-faithful C2D server)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path

from ocean_sandbox import publish_cli
from ocean_sandbox.ganache import HARDFORKS
from ocean_sandbox.runtime import HardforkMismatchError, Sandbox
from ocean_sandbox.state import default_state_dir


def _print_info(info: dict) -> None:
    print("Ocean sandbox is up.")
    if info.get("api") == "node":
        print(f"  Ocean Node          : {info['provider_url']} (node {info['provider_address']})")
    else:
        print(f"  Provider + Aquarius : {info['provider_url']}")
    print(f"  Chain RPC           : {info['rpc_url']} (chain id {info['chain_id']}, {info['hardfork']})")
    print(f"  Consumer account    : {info['consumer']['address']} (public development key)")
    print(f"  Environments        : free={info['environments']['free']} paid={info['environments']['paid']}")
    print("  Assets:")
    for name, asset in info["assets"].items():
        print(f"    {name:20s} {asset['did']} (service {asset['service_id']})")
    print("\nAirflow connection (copy into your shell):")
    print(f"  export AIRFLOW_CONN_OCEAN_DEFAULT='{info['conn_json']}'")
    print(f"\nState and logs: {info['state_dir']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ocean-sandbox", description=__doc__)
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="default: $OCEAN_SANDBOX_DIR or ./.sandbox"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start (or resume) the sandbox")
    up.add_argument("--detach", action="store_true", help="return once everything is up")
    up.add_argument("--port", type=int, default=18030, help="sandbox server port (0: any free port)")
    up.add_argument("--rpc-port", type=int, default=18545, help="chain JSON-RPC port (0: any free port)")
    up.add_argument("--receipt-timeout", type=float, default=120.0, help="Provider wait for unknown txs (s)")
    up.add_argument("--max-job-duration", type=int, default=3600, help="environments' maxJobDuration (s)")
    up.add_argument("--json", action="store_true", help="print the sandbox facts as JSON")
    up.add_argument(
        "--api",
        choices=("provider", "node"),
        default=None,
        help="server personality: Provider v4 (default) or Ocean Node; kept in the state",
    )
    up.add_argument(
        "--hardfork",
        choices=HARDFORKS,
        default=None,
        help="chain rules: london (EIP-1559; the default for a new chain, as in ocean.py's local setup) or "
        "istanbul (barge's default); kept with the chain (another one needs `down --purge`)",
    )
    up.add_argument("--rate-limit", type=int, default=None, help="Ocean Node: requests per IP and minute")
    up.add_argument(
        "--claim-interval", type=float, default=None, help="Ocean Node: seconds between payment cron runs"
    )
    down = sub.add_parser("down", help="stop the sandbox")
    down.add_argument("--purge", action="store_true", help="also delete the state directory (chain included)")
    sub.add_parser("status", help="show what is running")
    sub.add_parser("info", help="print the sandbox facts as JSON")
    publish_cli.add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    state_dir = args.state_dir or default_state_dir()

    if args.command == "up":
        sandbox = Sandbox(
            state_dir,
            rpc_port=args.rpc_port,
            provider_port=args.port,
            receipt_timeout=args.receipt_timeout,
            max_job_duration=args.max_job_duration,
            api=args.api,
            node_rate_limit=args.rate_limit,
            node_claim_interval=args.claim_interval,
            hardfork=args.hardfork,
        )
        started = time.monotonic()
        try:
            info = sandbox.up()
        except HardforkMismatchError as exc:
            print(f"ocean-sandbox: {exc}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            _print_info(info)
            print(f"(up in {time.monotonic() - started:.1f} s)")
        if args.detach:
            return 0
        print("Press Ctrl-C to stop.")
        stop = {"flag": False}

        def _stop(*_: object) -> None:
            stop["flag"] = True

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        while not stop["flag"]:
            time.sleep(0.5)
        sandbox.down()
        print("Ocean sandbox stopped.")
        return 0
    if args.command == "publish":
        return publish_cli.run(args, state_dir)
    sandbox = Sandbox(state_dir)
    if args.command == "down":
        sandbox.down(purge=args.purge)
        print("Ocean sandbox stopped." + (" State deleted." if args.purge else ""))
        return 0
    if args.command == "status":
        for key, value in sandbox.status().items():
            print(f"{key:10s} {value}")
        return 0
    if args.command == "info":
        print(json.dumps(sandbox.info(), indent=2))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
