"""Real Redis and Postgres servers for tests, from the Debian packages, on free 127.0.0.1 ports.

Each server is a process of its own started in a temporary directory (never the system-wide service),
stopped by its PID at the end of the session. A missing package is installed with ``apt-get`` when the
session runs as root; where that cannot be done the fixtures skip with the reason.

Fixtures (registered in ``tests/conftest.py``):

- ``redis_server``: the URL ``redis://127.0.0.1:PORT/0`` of a running ``redis-server``;
- ``postgres_server``: a running :class:`PostgresServer` (``dsn(database)``, ``create_database(name)``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT = 60.0
APT_TIMEOUT = 600.0
_apt_lock = threading.Lock()


class ServerUnavailable(RuntimeError):
    """A server cannot be provided on this machine (package missing and not installable)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, chars: int = 3000) -> str:
    """The last ``chars`` characters of a log file (or a placeholder when it cannot be read)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return f"(no log at {path})"


# -- Debian packages --------------------------------------------------------------------------------------
def apt_install(*packages: str) -> None:
    """Install Debian packages non-interactively, as root; raise :class:`ServerUnavailable` otherwise.

    ``RUNLEVEL=1`` keeps the packages' maintainer scripts from starting their system-wide services
    (``invoke-rc.d`` starts nothing in runlevel 1); the tests start their own instances anyway.
    """
    if os.geteuid() != 0:
        raise ServerUnavailable(f"{' '.join(packages)} not installed and not root: cannot apt-get install")
    if shutil.which("apt-get") is None:
        raise ServerUnavailable(f"{' '.join(packages)} not installed and no apt-get on this machine")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "--no-install-recommends"]
    with _apt_lock:
        result = subprocess.run(
            [*install, *packages], env=env, capture_output=True, text=True, timeout=APT_TIMEOUT, check=False
        )
        if result.returncode != 0:  # stale package lists: refresh once and try again
            subprocess.run(
                ["apt-get", "-o", "DPkg::Lock::Timeout=300", "update"],
                env=env,
                capture_output=True,
                text=True,
                timeout=APT_TIMEOUT,
                check=False,
            )
            result = subprocess.run(
                [*install, *packages],
                env=env,
                capture_output=True,
                text=True,
                timeout=APT_TIMEOUT,
                check=False,
            )
    if result.returncode != 0:
        raise ServerUnavailable(
            f"apt-get install {' '.join(packages)} failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout)[-1500:]}"
        )


def redis_binary() -> str:
    """The path of ``redis-server``, installing the Debian package ``redis-server`` when missing."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )
    if found is None:
        apt_install("redis-server")
        found = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.access(found, os.X_OK):
            raise ServerUnavailable("apt-get installed redis-server but no redis-server binary was found")
    return found


def postgres_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with ``initdb`` and ``postgres``, installing the
    Debian package ``postgresql`` when there is none."""

    def newest() -> Path | None:
        candidates = [
            p
            for p in Path("/usr/lib/postgresql").glob("*/bin")
            if (p / "initdb").exists() and (p / "postgres").exists()
        ]
        candidates.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
        return candidates[-1] if candidates else None

    found = newest()
    if found is None:
        apt_install("postgresql")
        found = newest()
        if found is None:
            raise ServerUnavailable("apt-get installed postgresql but no initdb/postgres was found")
    return found


# -- processes --------------------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 20.0) -> None:
    """Stop a process this module started, by its PID: ``sig``, then SIGKILL after ``grace`` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait(timeout=10)


class RedisServer:
    """One ``redis-server`` on a free 127.0.0.1 port, without persistence, in its own directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.workdir / "redis.log"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        """Start the server and wait until it answers ``PING``; return :attr:`url`."""
        binary = redis_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.workdir),
                    "--daemonize",
                    "no",
                    "--protected-mode",
                    "yes",
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{tail(self.log)}")
            if self.ping():
                return self.url
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"redis-server did not answer PING within {START_TIMEOUT:.0f} s:\n{tail(self.log)}"
        )

    def ping(self) -> bool:
        """Whether the server answers ``PING`` (plain RESP over a socket, no client library)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM the server by its PID (SIGKILL if it lingers)."""
        if self.process is not None:
            stop_process(self.process)


class PostgresServer:
    """One Postgres cluster in a temporary directory on a free 127.0.0.1 port.

    Postgres refuses to run as root: when the session is root, ``initdb`` and ``postgres`` run as the
    ``postgres`` OS user (``runuser -u postgres --``) and the data directory is owned by it. Connections
    from 127.0.0.1 are trusted (user ``postgres``, no password).
    """

    superuser = "postgres"

    def __init__(self, max_connections: int = 300) -> None:
        self.max_connections = max_connections
        self.port = 0
        self.root: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.bindir: Path | None = None

    @property
    def datadir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def log(self) -> Path:
        assert self.root is not None
        return self.root / "postgres.log"

    def _as_owner(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def start(self) -> PostgresServer:
        """``initdb`` a fresh cluster, start ``postgres`` and wait until it accepts connections."""
        self.bindir = postgres_bindir()
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            raise ServerUnavailable("running as root without runuser: cannot start postgres as 'postgres'")
        # Under /tmp (world-traversable) rather than pytest's 0700 folders, which 'postgres' cannot enter.
        self.root = Path(tempfile.mkdtemp(prefix="ocean-test-postgres-"))
        self.root.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.port = free_port()
        initdb = subprocess.run(
            [
                *self._as_owner(),
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                self.superuser,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed (exit {initdb.returncode}):\n{initdb.stdout}\n{initdb.stderr}")
        log_fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self.process = subprocess.Popen(
                [
                    *self._as_owner(),
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.datadir),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={self.root}",
                    "-c",
                    f"max_connections={self.max_connections}",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ],
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            os.close(log_fd)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}:\n{tail(self.log)}")
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                timeout=10,
                check=False,
            )
            if ready.returncode == 0:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"postgres did not accept connections within {START_TIMEOUT:.0f} s:\n{tail(self.log)}"
        )

    def postmaster_pid(self) -> int | None:
        """The postmaster's PID from ``postmaster.pid`` (the child of ``runuser`` when run as root)."""
        try:
            first = (self.datadir / "postmaster.pid").read_text().splitlines()[0]
        except (OSError, IndexError):
            return None
        return int(first) if first.strip().isdigit() else None

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL statement through ``psql`` as the superuser; return its output."""
        assert self.bindir is not None
        result = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.superuser,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {result.stderr}")
        return result.stdout

    def create_database(self, name: str) -> str:
        """Create an empty database (a plain identifier); return its DSN (:meth:`dsn`)."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"not a plain database name: {name!r}")
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def dsn(self, database: str = "postgres") -> str:
        """``postgresql://postgres@127.0.0.1:PORT/DATABASE`` (prefix a driver as SQLAlchemy needs it)."""
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """Fast shutdown (SIGINT) of the postmaster by its PID, then of the ``runuser`` around it; the
        temporary directory is removed."""
        pid = self.postmaster_pid()
        if pid is not None and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _alive(pid):
                if self.process is not None and self.process.poll() is not None and not _alive(pid):
                    break
                time.sleep(0.1)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            stop_process(self.process, signal.SIGINT)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


# -- fixtures ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``redis-server`` for the session: yields ``redis://127.0.0.1:PORT/0``.

    Skips when Redis is not installed and cannot be installed (not root, apt-get failing).
    """
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
    except ServerUnavailable as exc:
        pytest.skip(f"no Redis server: {exc}")
    except BaseException:
        server.stop()
        raise
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real Postgres cluster for the session (:class:`PostgresServer`; ``create_database`` gives DSNs).

    Skips when Postgres is not installed and cannot be installed (not root, apt-get failing).
    """
    server = PostgresServer()
    try:
        server.start()
    except ServerUnavailable as exc:
        server.stop()
        pytest.skip(f"no Postgres server: {exc}")
    except BaseException:
        server.stop()
        raise
    try:
        yield server
    finally:
        server.stop()
