"""Pinned npm packages installed once per machine into the sandbox's cache.

The one npm installer of the sandbox: ganache (:mod:`ocean_sandbox.ganache`) and the npm
``@oceanprotocol/contracts`` whose Escrow the sandbox deploys (:mod:`ocean_sandbox.contracts`). Each package
gets its own prefix ``<cache>/<name>-<version>/``; a file lock makes concurrent first uses (two sandboxes
starting at once) install it once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class NpmError(RuntimeError):
    """An npm package could not be installed."""


def cache_dir() -> Path:
    """Where npm packages are installed once per machine (``$OCEAN_SANDBOX_CACHE`` overrides)."""
    base = os.environ.get("OCEAN_SANDBOX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "airflow_provider_ocean"
    )
    return Path(base)


@dataclass(frozen=True)
class NpmPackage:
    """A pinned npm package.

    :param name: the npm name, e.g. ``"ganache"`` or ``"@oceanprotocol/contracts"``.
    :param version: the exact version.
    """

    name: str
    version: str

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    def prefix(self) -> Path:
        """The package's install prefix in the cache, e.g. ``<cache>/oceanprotocol-contracts-2.6.0``."""
        return cache_dir() / f"{self.name.lstrip('@').replace('/', '-')}-{self.version}"

    def path(self, relative: str) -> Path:
        """A path inside the prefix, e.g. ``node_modules/.bin/ganache``."""
        return self.prefix() / relative


def ensure_installed(package: NpmPackage, required: str) -> Path:
    """Install ``package`` into its cache prefix unless ``required`` is there already; return that path.

    :param package: the pinned package.
    :param required: a file the installed package must provide, relative to the prefix; its presence is
        what "installed" means.
    :raises NpmError: npm is missing or the install failed or did not provide ``required``.
    """
    target = package.path(required)
    if target.exists():
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise NpmError(f"npm is not on PATH: install Node.js and npm to run the sandbox ({package.spec})")
    prefix = package.prefix()
    prefix.mkdir(parents=True, exist_ok=True)
    with open(prefix.parent / f".{prefix.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():  # another process installed it while this one waited
            return target
        log.info("Installing %s with npm into %s", package.spec, prefix)
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), package.spec],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not target.exists():
            raise NpmError(
                f"npm install {package.spec} failed (or has no {required}):\n{result.stderr[-2000:]}"
            )
    return target
