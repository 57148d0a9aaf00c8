"""Helpers of the browser tests: the api-server and DAG-run processes, screenshots, the run summary."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOTS = REPO / "docs" / "screenshots"
MAX_DOCS_SCREENSHOT = 300 * 1024
API_SERVER_START_TIMEOUT = 180.0
DAG_RUN_TIMEOUT = 600.0
DAG_ID = "ocean_compute_example"

REPORT: dict[str, Any] = {"screenshots": [], "notes": []}


def _airflow() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def note(text: str) -> None:
    """Remember a line for the end-of-run summary (also useful when a test is skipped)."""
    REPORT["notes"].append(text)


@dataclass
class ApiServer:
    """A running ``airflow api-server`` and a small authenticated REST client for it."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    _token: str | None = None

    def token(self) -> str:
        # SimpleAuthManager with simple_auth_manager_all_admins: GET /auth/token needs no credentials.
        if self._token is None:
            response = requests.get(f"{self.url}/auth/token", timeout=30)
            response.raise_for_status()
            self._token = str(response.json()["access_token"])
        return self._token

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kwargs)


@dataclass
class DagRun:
    """``airflow dags test`` running in the background; :meth:`wait` returns its exit code and output."""

    process: subprocess.Popen[bytes]
    log: Path
    results_dir: Path
    started: float
    finished: float | None = None
    returncode: int | None = None
    run_id: str | None = field(default=None)

    def wait(self, timeout: float = DAG_RUN_TIMEOUT) -> int:
        if self.returncode is None:
            try:
                self.returncode = self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
            self.finished = time.monotonic()
            match = re.search(r"DagRun Finished: .*?run_id=(\S+?),", self.log.read_text(errors="replace"))
            self.run_id = match.group(1) if match else None
        return self.returncode

    def output(self, chars: int = 6000) -> str:
        return _tail(self.log, chars)


@dataclass
class AirflowUI:
    api: ApiServer
    run: DagRun
    sandbox: dict[str, Any]
    screenshots: Path


def stop_process(process: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """Stop a process this fixture started (and its process group, which it leads) by its PID."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def start_dag_run(sandbox: dict[str, Any], workdir: Path) -> DagRun:
    results = workdir / "results"
    log = workdir / "dags-test.log"
    env = {
        **os.environ,
        "AIRFLOW_CONN_OCEAN_DEFAULT": sandbox["conn_json"],
        "AIRFLOW_VAR_OCEAN_DATASET_DID": sandbox["assets"]["dataset"]["did"],
        "AIRFLOW_VAR_OCEAN_ALGORITHM_DID": sandbox["assets"]["algorithm"]["did"],
        "AIRFLOW_VAR_OCEAN_RESULTS_DIR": str(results),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [_airflow(), "dags", "test", DAG_ID],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(workdir),
            start_new_session=True,
        )
    return DagRun(process=process, log=log, results_dir=results, started=time.monotonic())


def start_api_server(workdir: Path) -> ApiServer:
    port = _free_port()
    log = workdir / "api-server.log"
    env = {
        **os.environ,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [_airflow(), "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(workdir),
            start_new_session=True,
        )
    server = ApiServer(url=f"http://127.0.0.1:{port}", process=process, log=log)
    deadline = time.monotonic() + API_SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"airflow api-server exited with {process.returncode}:\n{_tail(log)}")
        try:
            if requests.get(f"{server.url}/api/v2/monitor/health", timeout=5).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.5)
    stop_process(process)
    raise RuntimeError(
        f"airflow api-server did not answer within {API_SERVER_START_TIMEOUT:.0f} s:\n{_tail(log)}"
    )


def save_screenshot(driver: Any, directory: Path, name: str, element: Any = None) -> Path:
    """Save a PNG of the page (or of one element) and remember it for the end-of-run summary."""
    path = directory / f"{name}.png"
    if element is not None:
        element.screenshot(str(path))
    else:
        driver.save_screenshot(str(path))
    REPORT["screenshots"].append(path)
    if os.environ.get("OCEAN_UI_SCREENSHOTS_TO_DOCS") == "1" and path.stat().st_size < MAX_DOCS_SCREENSHOT:
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOTS / path.name)
    return path


def write_summary(terminalreporter: Any) -> None:
    if not REPORT["screenshots"] and not REPORT["notes"]:
        return
    terminalreporter.section("Airflow UI (browser tests)")
    for line in REPORT["notes"]:
        terminalreporter.write_line(line)
    if REPORT["screenshots"]:
        terminalreporter.write_line(f"screenshots: {REPORT.get('dir')}")
        for path in REPORT["screenshots"]:
            terminalreporter.write_line(f"  {path.name} ({path.stat().st_size // 1024} KB)")
        if os.environ.get("OCEAN_UI_SCREENSHOTS_TO_DOCS") == "1":
            terminalreporter.write_line(f"copied those under 300 KB to {DOCS_SCREENSHOTS}")


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG without any imaging library: ``(width, height, rows)``.

    Checks the signature, every chunk's CRC and the chunk order, inflates IDAT and undoes all five
    scanline filters. Written independently of the sample algorithm's encoder (which only writes
    filter 0) so that it can vouch for that encoder's output.
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG signature")
    offset, kinds, idat = 8, [], b""
    header: bytes = b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind, body = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise ValueError(f"bad CRC in chunk {kind!r}")
        kinds.append(kind)
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    if not kinds or kinds[0] != b"IHDR" or kinds[-1] != b"IEND" or b"IDAT" not in kinds:
        raise ValueError(f"bad chunk order {kinds}")
    width, height, depth, color, _compression, _filter, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or color not in (2, 6) or interlace != 0:
        raise ValueError(f"unsupported PNG (depth {depth}, color type {color}, interlace {interlace})")
    bpp = 3 if color == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(idat)
    if len(raw) != height * (stride + 1):
        raise ValueError(f"IDAT holds {len(raw)} bytes, expected {height * (stride + 1)}")
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up = previous[i]
            corner = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                estimate = left + up - corner
                pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + predictor) & 0xFF
            elif kind != 0:
                raise ValueError(f"unknown filter type {kind} in row {y}")
        rows.append(bytes(line))
        previous = line
    return width, height, rows
