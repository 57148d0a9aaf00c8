"""Streaming results: download a 1 GiB compute result with the hook, against ``curl`` on the same server,
on an idle machine and beside a CPU-bound neighbour.

Goals: the download's peak resident memory growth stays at or below 64 MB, and its throughput reaches at
least 0.9x curl's against the same server on the same machine, measured side by side in one run, both
idle and loaded, in both positions (right after curl's download and right after its own).

Setup (real, nothing mocked): a fresh sandbox; one compute job is paid for and started through
``OceanComputeHook.run_compute`` with a raw algorithm on ``dataset_raw`` that writes a ``big.bin`` of the
requested size into its outputs. Then, first idle, then loaded, each round downloads it six times, one
after the other:

- ``curl`` twice: ``curl -s -o FILE URL`` fetches ``computeResult`` with a freshly signed URL (new,
  higher nonce; the signature is built with ``airflow_provider_ocean.signing``); its own ``time_total``
  is the time;
- ``hook`` twice: ``OceanComputeHook.download_result(job, index, FILE)`` with the default write path
  (``cache``: the page cache), in this process (which holds nothing else: the sandbox runs in its own
  processes). The time is that call: nonce, signing, request, streaming to disk, SHA-256, atomic rename.
  Its peak RSS growth is ``VmHWM`` after the call minus ``VmRSS`` just before it (the high-water mark is
  reset with ``/proc/self/clear_refs``; where that is refused a 5 ms sampling thread is used);
- ``direct`` twice: the same with ``download_write_path="direct"`` (``O_DIRECT`` past the page cache).
  Not a goal: it tells which write path is faster on this machine (``[ocean] download_write_path``).

"Loaded" runs one busy neighbour process (a Python loop, normal priority) for the whole of those rounds,
as a worker host running other tasks would. Every file is checked (size; the hook's SHA-256 against the
job's file) and deleted right after its download. The goal is checked per mode as the median over the
rounds of hook/curl, for the first download of each pair ("after the other client") and the second ("after
itself").

Run: ``python benchmarks/stream_results.py`` (1 GiB, 5 rounds idle + 5 loaded) or ``--small`` (64 MiB,
2 + 2 rounds; timing goals printed, not enforced).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import _common

MIB = 1024 * 1024
GOAL_PEAK_MB = 64.0
GOAL_RATIO = 0.9
CLIENTS = ("curl", "hook", "direct")
POSITIONS = ("after the other", "after itself")


def raw_writer(size: int) -> dict[str, Any]:
    """A raw algorithm writing ``size`` bytes (a repeated 4 MiB random block) to ``big.bin``."""
    code = (
        "import os\n"
        "out = os.environ.get('OUTPUTS', '/data/outputs')\n"
        f"size = {size}\n"
        "block = os.urandom(4 * 1024 * 1024)\n"
        "with open(os.path.join(out, 'big.bin'), 'wb') as f:\n"
        "    left = size\n"
        "    while left > 0:\n"
        "        left -= f.write(block[: min(left, len(block))])\n"
        "print('wrote', size)\n"
    )
    return {"rawcode": code, "container": _common.CONTAINER}


def hook_download(hook: Any, job_id: str, index: int, destination: Path) -> dict[str, Any]:
    """One ``hook.download_result`` in this process; its time and peak memory growth."""
    gc.collect()
    rss_before = _common.proc_status_kb("VmRSS")
    use_hwm = _common.reset_peak_rss() and _common.proc_status_kb("VmHWM") <= rss_before + 1024
    sampler = None if use_hwm else _common.RssSampler(0.005).__enter__()
    started = time.perf_counter()
    result = hook.download_result(job_id, index, destination)
    seconds = time.perf_counter() - started
    if sampler is not None:
        sampler.__exit__()
        peak = sampler.peak_kb
    else:
        peak = _common.proc_status_kb("VmHWM")
    return {
        "seconds": seconds,
        "bytes": result.bytes_written,
        "sha256": result.sha256,
        "growth_mb": (peak - rss_before) / 1024,
        "peak_method": "VmHWM" if use_hwm else "sampling",
    }


def signed_url(hook: Any, job_id: str, index: int) -> str:
    """The computeResult URL with a fresh nonce and signature, as the hook would send it."""
    from airflow_provider_ocean.signing import NONCES, result_message

    provider = hook.provider
    _method, url = provider.endpoint("computeResult")
    address = hook.consumer_address
    with NONCES.reserve(provider.base_url, address, lambda: provider.get_nonce(address)) as nonce:
        signature = hook.signer.sign(result_message(address, job_id, index, nonce))
    query = {"jobId": job_id, "index": str(index), "consumerAddress": address, "nonce": nonce}
    return f"{url}?{urlencode({**query, 'signature': signature})}"


def run_curl(hook: Any, job_id: str, index: int, destination: Path) -> tuple[float, int]:
    url = signed_url(hook, job_id, index)
    out = subprocess.run(
        ["curl", "-s", "-S", "-f", "-o", str(destination), "-w", "%{size_download} %{time_total}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[1]), int(out[0])


class Neighbour:
    """A CPU-bound process beside the downloads (``None`` count: idle)."""

    def __init__(self, busy: bool) -> None:
        self.busy = busy
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Neighbour:
        if self.busy:
            self.process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(0.5)  # let it take its core before the first download
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


def run_rounds(
    hooks: dict[str, Any],
    job_id: str,
    index: int,
    size: int,
    expected_sha: str,
    tmp: Path,
    rounds: int,
    mode: str,
) -> tuple[list[list[Any]], dict[tuple[str, str], list[float]], list[float]]:
    """Download ``rounds`` times per client and position; rows, speeds and memory growths."""
    rows: list[list[Any]] = []
    speeds: dict[tuple[str, str], list[float]] = {}
    growths: list[float] = []
    for number in range(rounds):
        for who in CLIENTS:
            for when in POSITIONS:
                destination = tmp / f"{mode}-{who}-{number}.bin"
                if who == "curl":
                    seconds, got = run_curl(hooks["hook"], job_id, index, destination)
                    if got != size or destination.stat().st_size != size:
                        raise RuntimeError(f"curl got {got} bytes")
                    memory = "-"
                else:
                    result = hook_download(hooks[who], job_id, index, destination)
                    if result["bytes"] != size or result["sha256"] != expected_sha:
                        raise RuntimeError(f"{who} download mismatch: {result}")
                    seconds = result["seconds"]
                    growths.append(result["growth_mb"])
                    memory = f"{result['growth_mb']:.1f} ({result['peak_method']})"
                destination.unlink()
                speed = size / MIB / seconds
                speeds.setdefault((who, when), []).append(speed)
                rows.append([mode, number + 1, who, when, f"{seconds:.3f}", f"{speed:.0f}", memory])
    return rows, speeds, growths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="64 MiB, 2 rounds per mode (smoke run)")
    parser.add_argument("--size-mib", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None, help="rounds per mode (default 5)")
    parser.add_argument("--modes", default="idle,loaded", help="idle, loaded or both (default)")
    args = parser.parse_args()
    size = (args.size_mib or (64 if args.small else 1024)) * MIB
    rounds = args.rounds or (2 if args.small else 5)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"idle", "loaded"}:
        parser.error("--modes takes idle, loaded or idle,loaded")

    from airflow_provider_ocean.hooks.ocean import OceanComputeHook

    print(f"Streaming results: {size // MIB} MiB result, {rounds} rounds per mode; {_common.machine()}")
    print(f"command: python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}".rstrip())
    with _common.sandbox() as info:
        hook = OceanComputeHook(retry_delay=0.2, download_write_path="cache")
        hooks = {"hook": hook, "direct": OceanComputeHook(retry_delay=0.2, download_write_path="direct")}
        started = time.monotonic()
        run = hook.run_compute([info["assets"]["dataset_raw"]["did"]], raw_writer(size))
        job_id = run["job_id"]
        while True:
            job = hook.get_job_status(job_id)
            if job.is_terminal:
                break
            if time.monotonic() - started > 600:
                raise RuntimeError(f"job {job_id} did not finish")
            time.sleep(0.5)
        big = next((r for r in job.results if r.filename == "big.bin"), None)
        if not job.is_succeeded or big is None:
            raise RuntimeError(f"job {job_id} ended {job.status} {job.status_text}: {job.results}")
        source = next(Path(info["state_dir"]).rglob("big.bin"))
        digest = hashlib.sha256()
        with source.open("rb") as handle:
            while chunk := handle.read(8 * MIB):
                digest.update(chunk)
        expected_sha = digest.hexdigest()
        print(f"job {job_id} wrote {source.stat().st_size} bytes in {time.monotonic() - started:.1f} s")

        rows: list[list[Any]] = []
        speeds: dict[str, dict[tuple[str, str], list[float]]] = {}
        growths: list[float] = []
        loads: dict[str, str] = {}
        with tempfile.TemporaryDirectory(prefix="ocean-bench-dl-", dir=Path(info["state_dir"]).parent) as tmp:
            for mode in modes:
                with Neighbour(busy=mode == "loaded"):
                    before = _common.load_average()
                    mode_rows, speeds[mode], mode_growths = run_rounds(
                        hooks, job_id, big.index, size, expected_sha, Path(tmp), rounds, mode
                    )
                    loads[mode] = f"{before} at the start, {_common.load_average()} at the end"
                rows += mode_rows
                growths += mode_growths
        _common.print_table(
            "Downloads (same server, same directory, each file deleted right after its download)",
            ["mode", "round", "client", "position", "seconds", "MiB/s", "peak RSS growth MB"],
            rows,
        )

    def ratios(mode: str, who: str, when: str) -> list[float]:
        pairs = zip(speeds[mode][(who, when)], speeds[mode][("curl", when)], strict=True)
        return [mine / curl for mine, curl in pairs]

    summary = []
    figures: dict[str, Any] = {"size_mib": size // MIB, "rounds": rounds}
    goals = _common.Goals("stream_results")
    for mode in modes:
        for who in CLIENTS:
            for when in POSITIONS:
                speed = _common.median(speeds[mode][(who, when)])
                row = [mode, who, when, f"{speed:.0f}"]
                key = f"{mode}_{who}_{when.replace(' ', '_')}"
                figures[f"{key}_mib_s"] = round(speed, 1)
                if who == "curl":
                    row += ["", ""]
                else:
                    each = ratios(mode, who, when)
                    row += [f"{_common.median(each):.2f}", " ".join(f"{r:.2f}" for r in each)]
                    figures[f"{key}_ratio"] = round(_common.median(each), 3)
                summary.append(row)
        figures[f"{mode}_load"] = loads[mode]
        worst = min(_common.median(ratios(mode, "hook", when)) for when in POSITIONS)
        goals.check(
            f"{mode}: hook >= {GOAL_RATIO}x curl in both positions",
            ", ".join(f"{_common.median(ratios(mode, 'hook', w)):.2f}x {w}" for w in POSITIONS),
            worst >= GOAL_RATIO,
            enforced=not args.small,
        )
    _common.print_table(
        "Summary (medians over the rounds)",
        ["mode", "client", "position", "MiB/s", "/ curl", "/ curl per round"],
        summary,
    )
    for mode in modes:
        print(f"load average ({mode}): {loads[mode]}")
        cache = min(_common.median(ratios(mode, "hook", w)) for w in POSITIONS)
        direct = min(_common.median(ratios(mode, "direct", w)) for w in POSITIONS)
        faster = "direct" if direct > cache * 1.05 else "cache"
        print(
            f"write path on this machine ({mode}): cache {cache:.2f}x curl, direct {direct:.2f}x curl "
            f"(worse position) -> [ocean] download_write_path = {faster}"
        )
    peak = max(growths)
    figures["peak_rss_growth_mb"] = round(peak, 1)
    print(f"\npeak RSS growth (max of {len(growths)} hook downloads, both write paths): {peak:.1f} MB")
    goals.check(f"peak memory growth <= {GOAL_PEAK_MB:.0f} MB", f"{peak:.1f} MB", peak <= GOAL_PEAK_MB)
    return goals.report(figures)


if __name__ == "__main__":
    sys.exit(main())
