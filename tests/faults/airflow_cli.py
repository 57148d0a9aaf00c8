"""Running the real ``airflow`` CLI in subprocesses, each with its own AIRFLOW_HOME and metadata DB.

The metadata DB is migrated once per test process into a template and copied for every home, so each
caller gets a clean DB (its own logs, XComs, triggers) without paying for a migration each time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
_template: Path | None = None
_template_lock = threading.Lock()


def _base_env(home: Path, dags_folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        }
    )
    return env


def migrated_template() -> Path:
    """A migrated, unused metadata DB (created on first call, reused by the whole test process)."""
    global _template
    with _template_lock:
        if _template is None or not (_template / "airflow.db").exists():
            home = Path(tempfile.mkdtemp(prefix="ocean-airflow-template-"))
            result = subprocess.run(
                [AIRFLOW, "db", "migrate"],
                env=_base_env(home, home / "dags"),
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"airflow db migrate failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
                )
            _template = home
        return _template


def fresh_home(home: Path, dags_folder: Path, **extra_env: str) -> dict[str, str]:
    """Prepare ``home`` with a copy of the migrated DB; return the environment for ``airflow`` calls."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_template() / "airflow.db", home / "airflow.db")
    env = _base_env(home, dags_folder)
    env.update(extra_env)
    return env


def airflow(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``airflow ARGS`` to completion (bounded by ``timeout``)."""
    return subprocess.run(
        [AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def popen(env: dict[str, str], output: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start ``airflow ARGS`` in its own process group (so that it can be SIGKILLed whole); stdout and
    stderr go to ``output``."""
    with open(output, "wb") as sink:
        return subprocess.Popen(
            [AIRFLOW, *args],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
