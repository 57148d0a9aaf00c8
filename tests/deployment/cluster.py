"""A real distributed Airflow 3 deployment on one machine: CeleryExecutor, Postgres, Redis, many "hosts".

One AIRFLOW_HOME (configuration, DAG folder, task logs) is shared, as a deployment shares its settings
and log storage; everything else is as on separate hosts:

- the metadata DB is a Postgres database, the Celery broker a Redis database, the Celery result backend
  the same Postgres database (``db+postgresql://``);
- ``airflow api-server`` serves the REST API and the execution API that workers run tasks through
  (``[core] execution_api_server_url``); the scheduler signs the tasks' tokens with the shared
  ``[api_auth] jwt_secret`` the api-server checks;
- ``airflow scheduler``, ``airflow dag-processor`` and ``airflow triggerer`` run once each;
- every Celery worker stands in for a host of its own: its own ``HOME``, ``TMPDIR`` and
  ``OCEAN_NONCE_LOCK_DIR`` (the provider's per-host lock files), its own Celery hostname and
  Airflow hostname (``tests/deployment/hostname.py``).

Every process is started in a process group of its own, bound to 127.0.0.1 on free ports, and stopped
by its PID (the group it leads).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from tests.deployment.hostname import HOSTNAME_ENV
from tests.servers import PostgresServer, free_port, tail

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DAGS_FOLDER = Path(__file__).resolve().parent / "dags"


@dataclass
class Component:
    """One long-running ``airflow`` process (a process group of its own), with its log file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        """Start the process (again); output is appended to :attr:`log`."""
        self.starts += 1
        with self.log.open("ab") as sink:
            sink.write(
                f"\n===== start {self.starts} of {self.name} at {time.strftime('%X')} =====\n".encode()
            )
            sink.flush()
            self.process = subprocess.Popen(
                [AIRFLOW, *self.args],
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.env.get("HOME"),
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the process group this component leads (its PID)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a host that dies) and reap the leader."""
        self.signal_group(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=30)

    def terminate(self) -> None:
        """SIGTERM the group once (a second SIGTERM makes Airflow components force their exit)."""
        if self.process is not None and self.process.poll() is None:
            self.signal_group(signal.SIGTERM)

    def reap(self, grace: float = 30.0) -> int | None:
        """Wait up to ``grace`` seconds for the leader to exit after :meth:`terminate`, SIGKILL the group
        then; return the exit code."""
        if self.process is None:
            return None
        try:
            self.process.wait(timeout=max(grace, 0.0))
        except subprocess.TimeoutExpired:
            self.kill()
        self.signal_group(signal.SIGKILL)  # leftovers of the group (e.g. a task process) go too
        return self.process.returncode

    def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds; return the exit code."""
        self.terminate()
        return self.reap(grace)

    def tail(self, chars: int = 4000) -> str:
        return tail(self.log, chars)


@dataclass
class AirflowDeployment:
    """The deployment: configure with :meth:`create`, then :meth:`migrate`, :meth:`start`, :meth:`stop`.

    :param root: a fresh folder for AIRFLOW_HOME, the hosts' folders and the process logs.
    :param sql_alchemy_conn: metadata DB URL (``postgresql+psycopg2://...``).
    :param result_backend: Celery result backend URL (``db+postgresql+psycopg2://...``).
    :param broker_url: Celery broker URL (``redis://...``).
    :param workers: how many Celery workers ("hosts").
    :param concurrency: task slots per worker.
    :param extra_env: more environment for every process (connections, variables).
    """

    root: Path
    sql_alchemy_conn: str
    result_backend: str
    broker_url: str
    workers: int = 3
    concurrency: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    api_port: int = 0
    components: dict[str, Component] = field(default_factory=dict)
    _token: str | None = None

    @classmethod
    def create(
        cls,
        root: Path,
        postgres: PostgresServer,
        redis_url: str,
        *,
        database: str = "airflow_deployment",
        **kwargs: Any,
    ) -> AirflowDeployment:
        """A deployment on a new database of ``postgres`` with ``redis_url`` as the Celery broker."""
        dsn = postgres.create_database(database)
        return cls(
            root=root,
            sql_alchemy_conn=dsn.replace("postgresql://", "postgresql+psycopg2://", 1),
            # SQLAlchemy 2.1's default PostgreSQL driver is psycopg 3: name psycopg2 explicitly
            result_backend="db+" + dsn.replace("postgresql://", "postgresql+psycopg2://", 1),
            broker_url=redis_url,
            **kwargs,
        )

    # -- configuration ------------------------------------------------------------------------------------
    @property
    def home(self) -> Path:
        return self.root / "airflow-home"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def logs(self) -> Path:
        """The task logs (``[logging] base_log_folder``)."""
        return self.home / "logs"

    def host_dir(self, host: str) -> Path:
        return self.root / "hosts" / host

    def base_env(self) -> dict[str, str]:
        """The environment every process of the deployment shares."""
        if not self.api_port:
            self.api_port = free_port()
        secrets_file = self.root / "secrets.json"
        if secrets_file.exists():
            shared = json.loads(secrets_file.read_text())
        else:
            shared = {
                "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
                "jwt_secret": secrets.token_urlsafe(32),
                "secret_key": secrets.token_urlsafe(32),
            }
            self.root.mkdir(parents=True, exist_ok=True)
            secrets_file.write_text(json.dumps(shared))
        # Nothing of the test session's own Airflow configuration (its SQLite home) leaks in.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW_", "AIRFLOW__", "OCEAN_NONCE_LOCK_DIR", HOSTNAME_ENV))
        }
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                HOSTNAME_ENV: "control",
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.deployment.hostname.get_hostname",
                "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__FERNET_KEY": shared["fernet_key"],
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                # as many task instances queued or running as the workers have slots: the scheduler,
                # not the broker, then decides what runs next (by priority)
                "AIRFLOW__CORE__PARALLELISM": str(self.workers * self.concurrency),
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "128",
                "AIRFLOW__CORE__MAX_ACTIVE_RUNS_PER_DAG": "64",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                # workers reach the execution API of the api-server (Airflow 3)
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__API__BASE_URL": self.url,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__SECRET_KEY": shared["secret_key"],
                "AIRFLOW__API_AUTH__JWT_SECRET": shared["jwt_secret"],
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.sql_alchemy_conn,
                "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": self.result_backend,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.concurrency),
                # a worker takes a message only for a free slot: a killed worker strands no reserved ones
                "AIRFLOW__CELERY__EXTRA_CELERY_CONFIG": json.dumps({"worker_disable_prefetch": True}),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                # a dead worker's task instances are noticed within seconds, not five minutes
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "180",
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "15",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def host_env(self, host: str) -> dict[str, str]:
        """The environment of a worker "host": its own HOME, TMPDIR and nonce lock folder."""
        folder = self.host_dir(host)
        paths = {"HOME": folder / "home", "TMPDIR": folder / "tmp", "OCEAN_NONCE_LOCK_DIR": folder / "locks"}
        for path in paths.values():
            path.mkdir(parents=True, exist_ok=True)
        return {**self.base_env(), **{k: str(v) for k, v in paths.items()}, HOSTNAME_ENV: host}

    # -- lifecycle ----------------------------------------------------------------------------------------
    def migrate(self, timeout: float = 300) -> float:
        """``airflow db migrate`` on the Postgres database; returns the seconds it took."""
        self.home.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        result = subprocess.run(
            [AIRFLOW, "db", "migrate"],
            env=self.base_env(),
            cwd=str(self.root),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return time.monotonic() - started

    def _component(self, name: str, args: list[str], env: dict[str, str]) -> Component:
        control = self.root / "control"
        control.mkdir(parents=True, exist_ok=True)
        env.setdefault("HOME", str(control))
        component = Component(name=name, args=args, env=env, log=self.root / f"{name}.log")
        self.components[name] = component
        return component

    def start(self) -> None:
        """Start the api-server, scheduler, dag-processor, triggerer and the workers (not waiting)."""
        env = self.base_env()
        self._component(
            "api-server",
            ["api-server", "--host", "127.0.0.1", "--port", str(self.api_port), "--workers", "1"],
            dict(env),
        ).start()
        self._component("scheduler", ["scheduler"], dict(env)).start()
        self._component("dag-processor", ["dag-processor"], dict(env)).start()
        self._component("triggerer", ["triggerer"], dict(env)).start()
        for host in self.worker_hosts:
            self._component(
                host,
                [
                    "celery",
                    "worker",
                    "--celery-hostname",
                    f"{host}@%h",
                    "--concurrency",
                    str(self.concurrency),
                    "--skip-serve-logs",
                    "--without-mingle",
                    "--without-gossip",
                ],
                self.host_env(host),
            ).start()

    @property
    def worker_hosts(self) -> list[str]:
        return [f"host{i}" for i in range(1, self.workers + 1)]

    def stop(self, grace: float = 30.0) -> dict[str, int | None]:
        """Stop every component by its PID (the workers first, then the scheduler, dag-processor and
        triggerer, the api-server last; the components of one step together); return exit codes."""
        steps = [self.worker_hosts, ["triggerer", "scheduler", "dag-processor"], ["api-server"]]
        codes: dict[str, int | None] = {}
        for names in steps:
            step = {name: self.components[name] for name in names if name in self.components}
            for component in step.values():
                component.terminate()
            deadline = time.monotonic() + grace
            for name, component in step.items():
                try:
                    codes[name] = component.reap(deadline - time.monotonic())
                except Exception as exc:  # keep stopping the others
                    codes[name] = None
                    print(f"stopping {name} (pid {component.pid}) failed: {exc}")
        return codes

    def wait_ready(self, dag_id: str, timeout: float = 240) -> dict[str, float]:
        """Wait until the api-server answers, the scheduler, triggerer and dag-processor report healthy,
        ``dag_id`` is parsed, and every worker said it is ready; returns when each was first seen (s)."""
        started = time.monotonic()
        seen: dict[str, float] = {}
        deadline = started + timeout
        while time.monotonic() < deadline:
            for name, component in self.components.items():
                if not component.alive():
                    raise RuntimeError(f"{name} exited early:\n{component.tail()}")
            if "api-server" not in seen and self._answers():
                seen["api-server"] = time.monotonic() - started
            if "api-server" in seen:
                health = self._health()
                for part in ("scheduler", "triggerer", "dag_processor"):
                    if part not in seen and (health.get(part) or {}).get("status") == "healthy":
                        seen[part] = time.monotonic() - started
                if "dag" not in seen and self.request("GET", f"/api/v2/dags/{dag_id}").status_code == 200:
                    seen["dag"] = time.monotonic() - started
            for host in self.worker_hosts:
                if host not in seen and " ready." in self.components[host].tail(20000):
                    seen[host] = time.monotonic() - started
            wanted = {"api-server", "scheduler", "triggerer", "dag_processor", "dag", *self.worker_hosts}
            if wanted <= set(seen):
                return seen
            time.sleep(0.5)
        missing = sorted({"api-server", "scheduler", "triggerer", "dag_processor", "dag"} - set(seen))
        raise TimeoutError(f"deployment not ready after {timeout:.0f} s; missing {missing}\n{self.tails()}")

    def _answers(self) -> bool:
        try:
            return requests.get(f"{self.url}/api/v2/monitor/health", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def _health(self) -> dict[str, Any]:
        try:
            body = requests.get(f"{self.url}/api/v2/monitor/health", timeout=10).json()
        except (requests.RequestException, ValueError):
            return {}
        return body if isinstance(body, dict) else {}

    # -- REST API -----------------------------------------------------------------------------------------
    def token(self) -> str:
        """A JWT from ``GET /auth/token`` (SimpleAuthManager with every user an admin)."""
        if self._token is None:
            response = requests.get(f"{self.url}/auth/token", timeout=30)
            response.raise_for_status()
            self._token = str(response.json()["access_token"])
        return self._token

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """An authenticated REST call (one retry on a refused token or a connection error)."""
        for attempt in range(2):
            headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
            try:
                response = requests.request(
                    method, f"{self.url}{path}", headers=headers, timeout=60, **kwargs
                )
            except requests.ConnectionError:
                if attempt:
                    raise
                time.sleep(1)
                continue
            if response.status_code == 401 and not attempt:
                self._token = None
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def trigger(self, dag_id: str, run_id: str) -> None:
        response = self.request(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"dag_run_id": run_id, "logical_date": None}
        )
        if response.status_code not in (200, 201):
            raise RuntimeError(f"triggering {run_id}: {response.status_code} {response.text}")

    def unpause(self, dag_id: str) -> None:
        response = self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        response.raise_for_status()

    def dag_runs(self, dag_id: str) -> dict[str, str]:
        """``{run_id: state}`` of every run of ``dag_id``."""
        response = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 1000})
        response.raise_for_status()
        return {run["dag_run_id"]: run["state"] for run in response.json()["dag_runs"]}

    def task_instances(self, dag_id: str, **params: Any) -> list[dict[str, Any]]:
        """Task instances of every run of ``dag_id`` (filters as the REST API's query parameters)."""
        response = self.request(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/~/taskInstances", params={"limit": 1000, **params}
        )
        response.raise_for_status()
        return list(response.json()["task_instances"])

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"
            f"/xcomEntries/{key}"
        )
        response = self.request("GET", path)
        if response.status_code != 200:
            return None
        value = response.json().get("value")
        if isinstance(value, str) and value[:1] in ('"', "{", "["):
            with contextlib.suppress(ValueError):
                return json.loads(value)
        return value

    # -- faults -------------------------------------------------------------------------------------------
    def kill_worker(self, host: str) -> None:
        """SIGKILL a worker's process group (pool, supervisors, task processes) at once: the host dies."""
        self.components[host].kill()

    def restart(self, name: str, grace: float = 60.0) -> float:
        """SIGTERM a component, wait for it to exit, start it again; returns the seconds it was down."""
        component = self.components[name]
        started = time.monotonic()
        component.stop(grace)
        component.start()
        return time.monotonic() - started

    # -- diagnostics --------------------------------------------------------------------------------------
    def tails(self, chars: int = 3000) -> str:
        """The end of every component's log (for failure messages)."""
        return "\n".join(
            f"----- {name} (pid {c.pid}, {c.log}) -----\n{c.tail(chars)}"
            for name, c in self.components.items()
        )

    def task_logs(self) -> list[Path]:
        return sorted(p for p in self.logs.rglob("*") if p.is_file()) if self.logs.exists() else []
