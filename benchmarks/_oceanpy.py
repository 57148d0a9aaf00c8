"""The reference client for ``pay_start.py``: ocean.py 3.1.2 in a virtualenv of its own, driven in a
subprocess (``oceanpy_flow.py``).

The virtualenv lives outside the repository (``~/.cache/airflow-provider-ocean/oceanpy-3.1.2``, or
``$OCEANPY_VENV``) and is created on first use from the pinned ``oceanpy-3.1.2.txt`` (about half a
minute with PyPI reachable). ocean.py is never a dependency of the project.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VERSION = "3.1.2"
REQUIREMENTS = HERE / f"oceanpy-{VERSION}.txt"
DRIVER = HERE / "oceanpy_flow.py"


class OceanPyUnavailable(RuntimeError):
    """The ocean.py virtualenv could not be created or the driver could not start."""


def venv_dir() -> Path:
    """Where the ocean.py virtualenv is (``$OCEANPY_VENV`` or the user cache)."""
    if os.environ.get("OCEANPY_VENV"):
        return Path(os.environ["OCEANPY_VENV"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "airflow-provider-ocean" / f"oceanpy-{VERSION}"


def ensure_venv() -> Path:
    """The virtualenv's python, creating the virtualenv first if needed (built aside, then renamed).

    :raises OceanPyUnavailable: the virtualenv could not be made (no PyPI, no ``venv`` module...).
    """
    target = venv_dir()
    python = target / "bin" / "python"
    marker = target / ".complete"
    if marker.exists() and marker.read_text() == REQUIREMENTS.read_text():
        return python
    target.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".oceanpy-{VERSION}-", dir=target.parent))
    try:
        print(f"Creating the ocean.py {VERSION} virtualenv in {target} (first use)...", flush=True)
        steps = [
            [sys.executable, "-m", "venv", str(build)],
            [
                str(build / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "-r",
                str(REQUIREMENTS),
            ],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900, check=False)
            if done.returncode != 0:
                said = (done.stderr or done.stdout).strip().splitlines()
                tail = ([line for line in said if not line.startswith("WARNING")] or said)[-3:]
                raise OceanPyUnavailable(f"{' '.join(step[:4])}... failed: {' | '.join(tail)}")
        check = [str(build / "bin" / "python"), "-c", "import ocean_lib.ocean.ocean"]
        done = subprocess.run(check, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise OceanPyUnavailable(f"ocean.py does not import: {done.stderr.strip()[-300:]}")
        # A moved venv still works through its python (pyvenv.cfg sits next to it); only the entry-point
        # scripts keep the build path, and none is used.
        shutil.rmtree(target, ignore_errors=True)
        build.rename(target)
        marker.write_text(REQUIREMENTS.read_text())
        return python
    except (OSError, subprocess.SubprocessError) as error:
        raise OceanPyUnavailable(str(error)) from error
    finally:
        shutil.rmtree(build, ignore_errors=True)


def address_file(info: dict[str, Any], directory: Path) -> Path:
    """Write the ``address.json`` ocean.py reads for chain 8996 (network name ``development``)."""
    addresses = {**info["addresses"], "chainId": info["chain_id"]}
    path = directory / "address.json"
    path.write_text(json.dumps({"development": addresses}))
    return path


class OceanPyDriver:
    """``oceanpy_flow.py`` running in the ocean.py virtualenv; :meth:`run` times one job.

    :param python: the virtualenv's python.
    :param config: ``rpc_url``, ``provider_url``, ``aquarius_url``, ``address_file``, ``key``.
    """

    def __init__(self, python: Path, config: dict[str, str]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        # ocean.py's own prints and logs; closed in close()
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(python), str(DRIVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
            cwd=tempfile.gettempdir(),
        )
        ready = self._ask(config)
        if not ready.get("ready"):
            self.close()
            raise OceanPyUnavailable(f"the ocean.py driver did not start: {ready}")
        self.address = ready["address"]

    def _ask(self, payload: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(payload) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise OceanPyUnavailable(f"the ocean.py driver exited ({self.proc.wait()}): {self.stderr_tail()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def run(self, dids: list[str], algorithm: str) -> dict[str, Any]:
        """Pay for and start one job; the driver's timings (raises on its error)."""
        answer = self._ask({"dids": dids, "algorithm": algorithm})
        if "error" in answer:
            raise RuntimeError(f"ocean.py failed: {answer['error']}\n{answer.get('trace', '')}")
        return answer

    def publish(self, kind: str, name: str, url: str) -> dict[str, Any]:
        """Publish one asset with ocean.py (``kind``: ``dataset`` or ``algorithm``); raises on its error."""
        answer = self._ask({"publish": kind, "name": name, "url": url})
        if "error" in answer:
            raise RuntimeError(f"ocean.py failed: {answer['error']}\n{answer.get('trace', '')}")
        return answer

    def stderr_tail(self, lines: int = 5) -> str:
        """The last lines the driver wrote to stderr."""
        self._stderr.seek(0)
        return " | ".join(self._stderr.read().strip().splitlines()[-lines:])

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()

    def __enter__(self) -> OceanPyDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
