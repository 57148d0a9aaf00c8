"""Shared fixtures: one real sandbox (ganache + Ocean v4 contracts + sandbox server) per test session."""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

# Airflow reads its configuration when first imported: give the test session its own home (SQLite DB,
# logs) before any test module imports Airflow, and never touch the user's.
REPO = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="ocean-test-airflow-")
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ.pop("AIRFLOW_CONN_OCEAN_DEFAULT", None)

from ocean_sandbox.runtime import Sandbox  # noqa: E402


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A running sandbox on free 127.0.0.1 ports, stopped at the end of the session.

    The Provider's wait for unknown transactions is cut from 120 s to 5 s and the environments'
    maxJobDuration to 60 s to keep the suite fast; everything else is as ``ocean-sandbox up`` runs it.
    """
    state_dir = tmp_path_factory.mktemp("ocean-sandbox")
    box = Sandbox(state_dir, rpc_port=0, provider_port=0, receipt_timeout=5.0, max_job_duration=60)
    try:
        info = box.up()
        yield {**info, "sandbox": box}
    finally:
        box.down()


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """The session's Airflow metadata DB (SQLite), migrated once; returns AIRFLOW_HOME.

    It is a copy of the migrated DB that the tests running the ``airflow`` CLI copy too
    (``tests/faults/airflow_cli.py``): one ``airflow db migrate`` per session, not two.
    """
    from tests.faults import airflow_cli

    shutil.copyfile(airflow_cli.migrated_template() / "airflow.db", Path(_AIRFLOW_HOME) / "airflow.db")
    return _AIRFLOW_HOME


@pytest.fixture
def provider_clock(sandbox: dict[str, Any]) -> Iterator[Any]:
    """Shift the sandbox Provider's clock (its 'now' for fees and order expiry); reset afterwards."""
    url = sandbox["provider_url"] + "/sandbox/admin/clock"

    def shift(seconds: float) -> None:
        requests.post(url, json={"offset": seconds}, timeout=10).raise_for_status()

    yield shift
    shift(0)


@pytest.fixture
def ocean_conn(sandbox: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> str:
    """``AIRFLOW_CONN_OCEAN_DEFAULT`` pointing at the sandbox, as the consumer account."""
    monkeypatch.setenv("AIRFLOW_CONN_OCEAN_DEFAULT", sandbox["conn_json"])
    return "ocean_default"


# -- pytest-xdist: two workers (``addopts`` in setup.cfg) ---------------------------------------------------
# Each worker is a test session of its own: its own AIRFLOW_HOME (above), sandboxes and servers on free ports
# and temporary folders. ``--dist loadfile`` keeps every module on one worker (module fixtures are set up
# once) and ``--no-loadscope-reorder`` keeps the order set here: modules with a ``slow`` test first, so that
# the long ones start early and the short ones fill in around them, and the ``alone`` tests last.
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::")[0]

    slow = {module(item) for item in items if item.get_closest_marker("slow")}
    alone = {module(item) for item in items if item.get_closest_marker("alone")}
    # stable: the order within a rank (and within a module) stays the collection order
    items.sort(key=lambda item: 2 if module(item) in alone else 0 if module(item) in slow else 1)


def _lock_base(workerinput: dict[str, Any]) -> Path:
    """The run's lock files, without suffix (one run of pytest-xdist, whatever else runs on the machine)."""
    return Path(tempfile.gettempdir()) / f"ocean-tests-{workerinput['testrunuid']}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[Any]:
    """Under pytest-xdist, an ``alone`` test (setup, call and teardown) runs while no other worker runs one.

    Every test holds the run's lock file shared; an ``alone`` test holds it exclusively. A turnstile lock
    taken first keeps new shared holders out while an ``alone`` test waits for the running ones to end.
    """
    workerinput = getattr(item.config, "workerinput", None)
    if workerinput is None:  # one process: nothing else runs meanwhile
        return (yield)
    base = _lock_base(workerinput)
    exclusive = item.get_closest_marker("alone") is not None
    with open(f"{base}.turnstile", "a") as turnstile, open(f"{base}.lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        if not exclusive:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        return (yield)  # closing the files releases the locks


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On an xdist worker: hand the browser tests' summary (``tests/ui``) to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        from tests.ui.support import REPORT

        workeroutput["ocean_ui_report"] = {
            "dir": str(REPORT["dir"]) if REPORT.get("dir") else None,
            "screenshots": [str(path) for path in REPORT["screenshots"]],
            "notes": list(REPORT["notes"]),
        }


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """On the xdist controller: gather the browser tests' summary of a finished worker; remove the lock files
    (a worker left alone needs none)."""
    from tests.ui.support import REPORT

    for suffix in (".lock", ".turnstile"):
        Path(f"{_lock_base(node.workerinput)}{suffix}").unlink(missing_ok=True)

    report = getattr(node, "workeroutput", {}).get("ocean_ui_report") or {}
    REPORT["notes"].extend(report.get("notes", []))
    REPORT["screenshots"].extend(Path(path) for path in report.get("screenshots", []))
    if report.get("dir"):
        REPORT["dir"] = Path(report["dir"])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The browser tests' screenshots and notes (``tests/ui``), whichever process ran them."""
    from tests.ui.support import write_summary

    write_summary(terminalreporter)


def pytest_report_header(config: pytest.Config) -> str:
    return f"ocean sandbox cache: {os.environ.get('OCEAN_SANDBOX_CACHE', '~/.cache/airflow_provider_ocean')}"


# The Ocean Node personality of the sandbox (a second sandbox, started on first use).
from tests.node_fixtures import node_sandbox  # noqa: E402, F401

# Tests that run against both personalities (``any_sandbox`` / ``any_conn``).
from tests.personalities import any_conn, any_sandbox, personality  # noqa: E402, F401

# Real Redis and Postgres servers (Debian packages, own instances on free ports; ``redis_server`` URL).
from tests.servers import postgres_server, redis_server  # noqa: E402, F401
