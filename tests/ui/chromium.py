"""Find Debian's Chromium + ChromeDriver, installing them with apt-get when we are root and may."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver",)
APT_PACKAGES = ("chromium", "chromium-driver")
#: Flags every Chromium started by the UI tests runs with (plus a fresh --user-data-dir).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1500",
)


@dataclass(frozen=True)
class Browser:
    """Paths of a usable browser and its driver, and how long an installation took (0 if none)."""

    chromium: str
    chromedriver: str
    installed_seconds: float = 0.0


class ChromiumUnavailable(RuntimeError):
    """No Chromium/ChromeDriver and no way to install them here; the message says why."""


def _first(override: str | None, candidates: tuple[str, ...], name: str) -> str | None:
    if override:  # an explicit path is used alone
        return override if os.access(override, os.X_OK) else None
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    return shutil.which(name)


def find() -> Browser | None:
    """The installed browser and driver (``$OCEAN_UI_CHROMIUM`` / ``$OCEAN_UI_CHROMEDRIVER`` override the
    paths), or ``None`` when either is missing."""
    chromium = _first(os.environ.get("OCEAN_UI_CHROMIUM"), CHROMIUM_CANDIDATES, "chromium")
    driver = _first(os.environ.get("OCEAN_UI_CHROMEDRIVER"), DRIVER_CANDIDATES, "chromedriver")
    if chromium and driver:
        return Browser(chromium, driver)
    return None


def _run(command: list[str], deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ChromiumUnavailable(f"ran out of time before `{' '.join(command)}`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=remaining, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise ChromiumUnavailable(f"`{' '.join(command)}` did not finish in time") from None
    if result.returncode != 0:
        tail = (result.stderr or result.stdout)[-800:]
        raise ChromiumUnavailable(f"`{' '.join(command)}` exited {result.returncode}: {tail}")


def ensure(timeout: float = 900.0) -> Browser:
    """Return the browser, installing ``chromium chromium-driver`` with apt-get if needed and possible.

    :param timeout: seconds allowed for ``apt-get update`` + ``apt-get install`` together.
    :raises ChromiumUnavailable: not installed and not installable (not root, no apt-get, apt failed).
    """
    found = find()
    if found is not None:
        return found
    if os.environ.get("OCEAN_UI_NO_INSTALL"):
        raise ChromiumUnavailable("Chromium is not installed and OCEAN_UI_NO_INSTALL is set")
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        raise ChromiumUnavailable("Chromium/ChromeDriver are not installed and there is no apt-get")
    if os.geteuid() != 0:
        raise ChromiumUnavailable(
            "Chromium/ChromeDriver are not installed and installing them needs root: "
            f"sudo apt-get install {' '.join(APT_PACKAGES)}"
        )
    started = time.monotonic()
    deadline = started + timeout
    lists = Path("/var/lib/apt/lists")
    if not any(lists.glob("*Packages*")):
        _run([apt_get, "update", "-q"], deadline)
    try:
        _run([apt_get, "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES], deadline)
    except ChromiumUnavailable:
        # Stale package lists are the usual cause: refresh once and try again.
        _run([apt_get, "update", "-q"], deadline)
        _run([apt_get, "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES], deadline)
    found = find()
    if found is None:
        raise ChromiumUnavailable(f"apt-get installed {' '.join(APT_PACKAGES)} but no chromium/chromedriver")
    return Browser(found.chromium, found.chromedriver, time.monotonic() - started)
