"""Install (pinned, from npm) and run ganache the way Ocean's barge does."""

from __future__ import annotations

import logging
import subprocess
import time
from typing import TYPE_CHECKING

import requests

from ocean_sandbox import npm

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

log = logging.getLogger(__name__)

GANACHE_VERSION = "7.9.2"
GANACHE = npm.NpmPackage("ganache", GANACHE_VERSION)
CHAIN_ID = 8996
MNEMONIC = "taxi music thumb unique chat sand crew more leg another off lamp"
ACCOUNTS = 10
#: ``--hardfork`` choices of ``ocean-sandbox up``: ``london`` (EIP-1559 blocks with ``baseFeePerGas``, type-2
#: transactions), what the reference client's local setup runs (ocean.py ``READMEs/setup-local.md``:
#: ``export GANACHE_FORK=london`` "for support of type 2 transactions" before barge's ``start_ocean.sh``),
#: and ``istanbul``, barge's own default (``start_ocean.sh``: ``GANACHE_FORK=${GANACHE_FORK:-"istanbul"}``;
#: no base fee, legacy transactions only).
HARDFORKS = ("london", "istanbul")
DEFAULT_HARDFORK = "london"
#: The hardfork of a state directory deployed before the choice existed.
LEGACY_HARDFORK = "istanbul"


class GanacheError(RuntimeError):
    """ganache could not be started (installing it raises :class:`ocean_sandbox.npm.NpmError`)."""


def ensure_installed() -> Path:
    """Install ganache into the cache with npm if it is not there yet and return its executable."""
    return npm.ensure_installed(GANACHE, "node_modules/.bin/ganache")


def rpc_alive(url: str, timeout: float = 1.0) -> bool:
    """Whether a JSON-RPC node answers ``eth_chainId`` at ``url``."""
    try:
        response = requests.post(
            url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=timeout
        )
        return response.ok and "result" in response.json()
    except (requests.RequestException, ValueError):
        return False


def options(
    db_dir: Path, port: int, *, host: str = "127.0.0.1", hardfork: str = DEFAULT_HARDFORK
) -> dict[str, str]:
    """ganache's command-line options as the sandbox runs it, flag -> value (``ganache --help`` lists them).

    As barge runs it: chain id 8996, barge mnemonic, gas price 1 wei, instamine; the hardfork of
    :data:`HARDFORKS` (on ``london`` blocks carry a base fee, 1 gwei at genesis, which a gas price of 1 wei
    does not cover: clients price from the latest block's ``baseFeePerGas``).

    :param db_dir: chain database directory.
    :param port: RPC port on ``host``.
    :param host: the address to listen on.
    :param hardfork: one of :data:`HARDFORKS`.
    """
    if hardfork not in HARDFORKS:
        raise GanacheError(f"hardfork must be one of {', '.join(HARDFORKS)}, not {hardfork!r}")
    return {
        "--server.host": host,
        "--server.port": str(port),
        "--chain.chainId": str(CHAIN_ID),
        "--chain.networkId": str(CHAIN_ID),
        "--chain.allowUnlimitedContractSize": "true",
        "--chain.hardfork": hardfork,
        "--wallet.mnemonic": MNEMONIC,
        "--wallet.totalAccounts": str(ACCOUNTS),
        "--wallet.defaultBalance": "1000000",
        "--miner.blockGasLimit": "50000000",
        "--miner.defaultGasPrice": "1",
        "--database.dbPath": str(db_dir),
        "--logging.quiet": "true",
    }


def start(
    db_dir: Path,
    port: int,
    log_file: Path,
    *,
    host: str = "127.0.0.1",
    hardfork: str = DEFAULT_HARDFORK,
    overrides: Mapping[str, str | None] | None = None,
) -> subprocess.Popen:
    """Start ganache with :func:`options` and wait until it answers.

    :param db_dir: chain database directory (kept between runs so the deployment survives ``down``/``up``).
    :param port: RPC port on ``host``.
    :param log_file: where ganache's output goes.
    :param host: the address to listen on.
    :param hardfork: one of :data:`HARDFORKS`.
    :param overrides: options to set (flag -> value) or, with ``None``, to leave out (for experiments such
        as ``benchmarks/sandbox_load.py --ganache-option``).
    """
    binary = ensure_installed()
    db_dir.mkdir(parents=True, exist_ok=True)
    chosen: dict[str, str | None] = {
        **options(db_dir, port, host=host, hardfork=hardfork),
        **(overrides or {}),
    }
    args = [str(binary)]
    for flag, value in chosen.items():
        if value is not None:
            args += [flag, value]
    log.info("Starting ganache: %s", " ".join(a for a in args[1:] if a != MNEMONIC))
    with open(log_file, "ab") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise GanacheError(f"ganache exited with code {process.returncode}; see {log_file}")
        if rpc_alive(url):
            return process
        time.sleep(0.2)
    process.kill()
    raise GanacheError(f"ganache did not answer on {url} within 60 s; see {log_file}")
