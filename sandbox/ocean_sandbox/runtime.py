"""Bring the whole sandbox up and down: ganache, contracts, sample assets, the sandbox server."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from ocean_sandbox import accounts, ganache
from ocean_sandbox.state import load_state, save_state

log = logging.getLogger(__name__)

FREE_ENV = "ocean-compute"
PAID_ENV = "ocean-compute-paid"
STATE_VERSION = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie child of ours is not alive
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


def stop_pid(pid: int | None, timeout: float = 10.0) -> None:
    """SIGTERM the process group of ``pid``, then SIGKILL it if it lingers."""
    if not pid_alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def environments(engine_address: str, fee_token: str, max_job_duration: int) -> list[dict[str, Any]]:
    """The operator-engine announcements served by computeEnvironments (the paid one with string numbers,
    as real engines announce them from environment variables)."""
    free = {
        "id": FREE_ENV,
        "consumerAddress": engine_address,
        "priceMin": 0,
        "cpuNumber": 1,
        "cpuType": "",
        "gpuNumber": 0,
        "gpuType": "",
        "ramGB": 1,
        "diskGB": 1,
        "desc": "Free sandbox environment",
        "currentJobs": 0,
        "maxJobs": 10,
        "storageExpiry": 0,
        "maxJobDuration": max_job_duration,
        "feeToken": fee_token,
    }
    paid = {
        **free,
        "id": PAID_ENV,
        "priceMin": "0.5",
        "cpuNumber": "2",
        "ramGB": "2",
        "diskGB": "2",
        "maxJobs": "5",
        "maxJobDuration": str(max_job_duration),
        "desc": "Paid sandbox environment (0.5 OCEAN per minute)",
    }
    return [free, paid]


class HardforkMismatchError(RuntimeError):
    """``up`` was asked for another hardfork than the one the state directory's chain runs."""


class Sandbox:
    """The local Ocean: one state directory, one ganache, one sandbox server.

    :param state_dir: where everything lives (chain DB, DDOs, jobs, logs, ``state.json``).
    :param rpc_port: the chain's JSON-RPC port: the front before ganache (``0`` picks a free one on first
        ``up``); ganache itself listens on another, internal port.
    :param provider_port: sandbox server port (``0`` picks a free one on first ``up``).
    :param receipt_timeout: how long the Provider waits for an unknown order tx (real: 120 s).
    :param max_job_duration: the environments' ``maxJobDuration`` in seconds.
    :param engine_tick: the engine's poll interval in seconds (real operator-engine: 5 s).
    :param api: ``provider`` (Provider v4 + Aquarius routes) or ``node`` (the Ocean Node personality);
        ``None`` keeps the state's choice (``provider`` for a new state).
    :param node_rate_limit: Ocean Node personality: requests per IP and minute (the node's default is 30).
    :param node_claim_interval: Ocean Node personality: seconds between payment cron runs (real: 3600).
    :param hardfork: the chain's hardfork (:data:`ocean_sandbox.ganache.HARDFORKS`), chosen when the chain
        is created and kept in the state; ``None`` keeps the state's (``london`` for a new state,
        ``istanbul`` for one deployed before the choice existed). Another one on an existing chain raises
        :class:`HardforkMismatchError`.
    :param ganache_options: ganache options to set or (``None``) leave out when ganache is started, over
        :func:`ocean_sandbox.ganache.options` (for experiments; a running chain is not restarted).
    :param rpc_front_options: options of the JSON-RPC front before ganache (:mod:`ocean_sandbox.rpc_front`,
        e.g. ``{"--gate": "off"}`` for comparisons).
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        rpc_port: int = 18545,
        provider_port: int = 18030,
        receipt_timeout: float = 120.0,
        max_job_duration: int = 3600,
        engine_tick: float = 0.2,
        api: str | None = None,
        node_rate_limit: int | None = None,
        node_claim_interval: float | None = None,
        ganache_options: dict[str, str | None] | None = None,
        rpc_front_options: dict[str, str] | None = None,
        hardfork: str | None = None,
    ) -> None:
        if api not in (None, "provider", "node"):
            raise ValueError(f"api must be 'provider' or 'node', not {api!r}")
        if hardfork not in (None, *ganache.HARDFORKS):
            raise ValueError(f"hardfork must be one of {', '.join(ganache.HARDFORKS)}, not {hardfork!r}")
        self.state_dir = Path(state_dir).absolute()
        self.rpc_port = rpc_port
        self.provider_port = provider_port
        self.receipt_timeout = receipt_timeout
        self.max_job_duration = max_job_duration
        self.engine_tick = engine_tick
        self.api = api
        self.node_rate_limit = node_rate_limit
        self.node_claim_interval = node_claim_interval
        self.ganache_options = dict(ganache_options or {})
        self.rpc_front_options = dict(rpc_front_options or {})
        self.hardfork = hardfork

    # -- state ---------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        try:
            return load_state(self.state_dir)
        except FileNotFoundError:
            return {}

    def info(self) -> dict[str, Any]:
        """What a user (or a test) needs: URLs, keys of the public dev accounts, DIDs, environments."""
        state = load_state(self.state_dir)
        consumer = accounts.account(accounts.CONSUMER)
        other = accounts.account(accounts.OTHER)
        conn = {
            "conn_type": "ocean",
            "host": state["provider_url"],
            "password": consumer.key,
            "extra": {
                "rpc_url": state["rpc_url"],
                "chain_id": state["chain_id"],
                "aquarius_url": state["provider_url"],
            },
        }
        import json

        environments = {"free": FREE_ENV, "paid": PAID_ENV}
        if state.get("api") == "node":
            node_envs = state["node"]["environments"]
            environments = {"free": node_envs[0]["id"], "paid": node_envs[1]["id"]}
        return {
            "api": state.get("api", "provider"),
            "provider_url": state["provider_url"],
            "aquarius_url": state["provider_url"],
            "rpc_url": state["rpc_url"],
            "chain_id": state["chain_id"],
            "hardfork": state.get("hardfork", ganache.LEGACY_HARDFORK),
            "addresses": state["addresses"],
            "consumer": {"address": consumer.address, "key": consumer.key},
            "other": {"address": other.address, "key": other.key},
            "publisher": {
                "address": accounts.account(accounts.DEPLOYER).address,
                "key": accounts.account(accounts.DEPLOYER).key,
            },
            "provider_address": state["provider"]["address"],
            "engine_address": state["engine_address"],
            "environments": environments,
            "assets": state["assets"],
            "state_dir": str(self.state_dir),
            "conn_json": json.dumps(conn),
        }

    # -- up / down -----------------------------------------------------------------------------------
    def _hardfork(self, state: dict[str, Any]) -> str:
        """The chain's hardfork: the state's (a chain deployed before the choice: ``istanbul``), else the
        requested one, else :data:`ocean_sandbox.ganache.DEFAULT_HARDFORK`.

        :param state: the loaded state.
        :raises HardforkMismatchError: the existing chain runs another hardfork than the requested one.
        """
        stored = state.get("hardfork") or (ganache.LEGACY_HARDFORK if state.get("addresses") else None)
        if stored and self.hardfork and self.hardfork != stored:
            raise HardforkMismatchError(
                f"the chain in {self.state_dir} runs {stored}; `ocean-sandbox down --purge` first for a "
                f"{self.hardfork} chain"
            )
        return stored or self.hardfork or ganache.DEFAULT_HARDFORK

    def up(self) -> dict[str, Any]:
        """Start (or resume) everything; idempotent. Returns :meth:`info`."""
        from airflow_provider_ocean.chain.rpc import JsonRpcClient
        from airflow_provider_ocean.chain.tx import TransactionSender
        from ocean_sandbox import contracts, publish

        self.state_dir.mkdir(parents=True, exist_ok=True)
        state = self._state()
        rpc_port = state.get("rpc_port") or self.rpc_port or free_port()
        provider_port = state.get("provider_port") or self.provider_port or free_port()
        rpc_url = f"http://127.0.0.1:{rpc_port}"
        provider_url = f"http://127.0.0.1:{provider_port}"
        hardfork = self._hardfork(state)
        if "ganache_port" not in state and pid_alive(state.get("ganache_pid")):
            stop_pid(state.get("ganache_pid"))  # a state from before the RPC front: ganache moves port
        ganache_port = state.get("ganache_port") or free_port()
        ganache_url = f"http://127.0.0.1:{ganache_port}"
        if not (pid_alive(state.get("ganache_pid")) and ganache.rpc_alive(ganache_url)):
            if ganache.rpc_alive(ganache_url):
                ganache_port = free_port()  # the port was taken meanwhile: ganache's port is internal
                ganache_url = f"http://127.0.0.1:{ganache_port}"
            process = ganache.start(
                self.state_dir / "chain",
                ganache_port,
                self.state_dir / "ganache.log",
                hardfork=hardfork,
                overrides=self.ganache_options,
            )
            state["ganache_pid"] = process.pid
        state.update({"ganache_port": ganache_port, "ganache_url": ganache_url, "hardfork": hardfork})
        if state.get("rpc_front_upstream") != ganache_url and pid_alive(state.get("rpc_front_pid")):
            stop_pid(state.get("rpc_front_pid"))  # the front still forwards to a former ganache
        if not (pid_alive(state.get("rpc_front_pid")) and ganache.rpc_alive(rpc_url)):
            if ganache.rpc_alive(rpc_url):
                raise RuntimeError(f"port {rpc_port} already serves another chain; choose another --rpc-port")
            state["rpc_front_pid"] = self._start_front(rpc_port, ganache_url)
            state["rpc_front_upstream"] = ganache_url
        save_state(self.state_dir, state)
        rpc = JsonRpcClient(rpc_url)
        files_dir = self.state_dir / "files"
        files_dir.mkdir(exist_ok=True)
        for name in publish.SAMPLE_FILES:
            shutil.copyfile(publish.DATA_DIR / name, files_dir / name)
        provider = accounts.account(accounts.PROVIDER)
        engine = accounts.account(accounts.ENGINE)
        state.update(
            {
                "version": STATE_VERSION,
                "rpc_port": rpc_port,
                "provider_port": provider_port,
                "rpc_url": rpc_url,
                "provider_url": provider_url,
                "chain_id": ganache.CHAIN_ID,
                "provider": {"address": provider.address, "key": provider.key},
                "engine_address": engine.address,
                "receipt_timeout": self.receipt_timeout,
                "engine_tick": self.engine_tick,
            }
        )
        if not (
            state.get("addresses") and contracts.is_deployed(rpc, state["addresses"]) and state.get("assets")
        ):
            started = time.monotonic()
            deployer = TransactionSender(rpc, accounts.account(accounts.DEPLOYER).key)
            holders = [accounts.account(i).address for i in (accounts.CONSUMER, accounts.OTHER)]
            state["addresses"] = contracts.deploy_all(deployer, [*holders, engine.address])
            state["assets"] = publish.publish_samples(
                deployer,
                state["addresses"],
                chain_id=ganache.CHAIN_ID,
                provider_url=provider_url,
                provider_key=provider.key,
                provider_address=provider.address,
                files_dir=files_dir,
                holders=holders,
            )
            index_samples(self.state_dir, state)
            state["escrow_source"] = contracts.ESCROW_PACKAGE.spec
            log.info("Deployed contracts and published samples in %.1f s", time.monotonic() - started)
        escrow_replaced = state.get("escrow_source") != contracts.ESCROW_PACKAGE.spec
        if escrow_replaced:
            # a chain deployed with another Escrow (before the sandbox took it from npm): the node
            # personality makes a real node's calls, which only the npm Escrow answers; deposits made in
            # the former Escrow stay there
            deployer = TransactionSender(rpc, accounts.account(accounts.DEPLOYER).key)
            state["addresses"]["Escrow"] = contracts.deploy_escrow(deployer, state["addresses"]["Router"])
            state["escrow_source"] = contracts.ESCROW_PACKAGE.spec
        state["environments_served"] = environments(
            engine.address, state["addresses"]["Ocean"], self.max_job_duration
        )
        previous_api = state.get("api", "provider")
        state["api"] = self.api or previous_api
        if state["api"] == "node":
            from ocean_sandbox.node_api import DEFAULT_RATE_LIMIT, node_environments

            node = state.get("node") or {}
            state["node"] = {
                "environments": node_environments(
                    provider.address, state["addresses"]["Ocean"], ganache.CHAIN_ID, self.max_job_duration
                ),
                "rate_limit": _first_set(self.node_rate_limit, node.get("rate_limit"), DEFAULT_RATE_LIMIT),
                "claim_interval": _first_set(self.node_claim_interval, node.get("claim_interval"), 60.0),
                "claim_timeout": node.get("claim_timeout", 3600),
            }
        save_state(self.state_dir, state)
        if (state["api"] != previous_api or escrow_replaced) and pid_alive(state.get("server_pid")):
            stop_pid(state.get("server_pid"))  # switching personality or Escrow: restart the server
        if not (pid_alive(state.get("server_pid")) and _server_alive(provider_url)):
            if _server_alive(provider_url):
                raise RuntimeError(f"port {provider_port} is already in use; choose another --port")
            state["server_pid"] = self._start_server()
            save_state(self.state_dir, state)
            self._wait_server(provider_url, state["server_pid"])
        return self.info()

    def _start_front(self, port: int, ganache_url: str) -> int:
        """Start the JSON-RPC front (:mod:`ocean_sandbox.rpc_front`) on ``port`` before ganache; its pid."""
        args = [
            sys.executable,
            "-m",
            "ocean_sandbox.rpc_front",
            "--port",
            str(port),
            "--upstream",
            ganache_url,
        ]
        for flag, value in self.rpc_front_options.items():
            args += [flag, value]
        log_file = open(self.state_dir / "rpc_front.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            process = subprocess.Popen(
                args,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log_file.close()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not ganache.rpc_alive(url):
            if process.poll() is not None or time.monotonic() > deadline:
                stop_pid(process.pid)
                raise RuntimeError(
                    f"the RPC front did not answer on {url}; see {self.state_dir / 'rpc_front.log'}"
                )
            time.sleep(0.1)
        return process.pid

    def restart_front(self) -> None:
        """Stop and start the JSON-RPC front only (with :attr:`rpc_front_options`)."""
        state = load_state(self.state_dir)
        stop_pid(state.get("rpc_front_pid"))
        state["rpc_front_pid"] = self._start_front(int(state["rpc_port"]), state["ganache_url"])
        save_state(self.state_dir, state)

    def _start_server(self) -> int:
        log_file = open(self.state_dir / "server.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ocean_sandbox.server",
                    "--state-dir",
                    str(self.state_dir),
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log_file.close()
        return process.pid

    def _wait_server(self, url: str, pid: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                raise RuntimeError(f"sandbox server exited; see {self.state_dir / 'server.log'}")
            if _server_alive(url):
                return
            time.sleep(0.1)
        raise RuntimeError(f"sandbox server did not answer on {url}; see {self.state_dir / 'server.log'}")

    def restart_server(self) -> None:
        """Stop and start the sandbox server only (the chain keeps running)."""
        state = load_state(self.state_dir)
        stop_pid(state.get("server_pid"))
        state["server_pid"] = self._start_server()
        save_state(self.state_dir, state)
        self._wait_server(state["provider_url"], state["server_pid"])

    def restart_chain(self) -> None:
        """Stop and start ganache only (same port and database, with :attr:`ganache_options`); the server
        keeps running and finds the chain where it was."""
        state = load_state(self.state_dir)
        stop_pid(state.get("ganache_pid"))
        process = ganache.start(
            self.state_dir / "chain",
            int(state["ganache_port"]),
            self.state_dir / "ganache.log",
            hardfork=state.get("hardfork", ganache.LEGACY_HARDFORK),
            overrides=self.ganache_options,
        )
        state["ganache_pid"] = process.pid
        save_state(self.state_dir, state)

    def down(self, purge: bool = False) -> None:
        """Stop the server and ganache; ``purge`` also deletes the state directory (chain included)."""
        state = self._state()
        stop_pid(state.get("server_pid"))
        stop_pid(state.get("rpc_front_pid"))
        stop_pid(state.get("ganache_pid"))
        if state:
            state["server_pid"] = None
            state["rpc_front_pid"] = None
            state["ganache_pid"] = None
            save_state(self.state_dir, state)
        if purge and self.state_dir.exists():
            shutil.rmtree(self.state_dir)

    def status(self) -> dict[str, Any]:
        state = self._state()
        if not state:
            return {"state_dir": str(self.state_dir), "chain": "absent", "server": "absent"}
        chain_up = (
            pid_alive(state.get("ganache_pid"))
            and pid_alive(state.get("rpc_front_pid"))
            and ganache.rpc_alive(state["rpc_url"])
        )
        server_up = pid_alive(state.get("server_pid")) and _server_alive(state["provider_url"])
        return {
            "state_dir": str(self.state_dir),
            "chain": f"up at {state['rpc_url']}" if chain_up else "down",
            "server": f"up at {state['provider_url']}" if server_up else "down",
        }


def index_samples(state_dir: Path, state: dict[str, Any]) -> None:
    """Index the chain's metadata events once (the server's indexer does it continuously), so that the
    sample assets just published are served as soon as ``up`` returns."""
    from ocean_sandbox.aquarius import DdoStore, indexer_for

    indexer_for(state_dir, state).run_once()
    store = DdoStore(state_dir / "ddos")
    missing = [name for name, asset in state["assets"].items() if store.read(asset["did"]) is None]
    if missing:
        raise RuntimeError(f"the sample assets {missing} were not indexed; see the log above")


def _server_alive(url: str) -> bool:
    try:
        response = requests.get(url + "/", timeout=1)
        return response.ok and response.json().get("software") in ("Provider", "Ocean-Node")
    except (requests.RequestException, ValueError):
        return False


def _first_set(*values: Any) -> Any:
    """The first value that is not ``None`` (so that 0, "no limit", can be chosen)."""
    return next(value for value in values if value is not None)
