"""The reference client publishes on the sandbox, and the hook computes on what it published.

ocean.py 3.1.2 (in a virtualenv of its own, ``_oceanpy.py``; driven by ``oceanpy_flow.py``) publishes a
dataset with a compute service (``ocean.assets.create_url_asset(..., with_compute=True)``) and an algorithm
(``ocean.assets.create_algo_asset``), both with its own defaults and from the sandbox's publisher wallet:
its own transactions (data NFT, datatoken), Aquarius's ``ddo/validate``, the Provider's ``encrypt``,
``setMetaData``, then its own wait until Aquarius serves the DDO (``wait_for_ddo``). It then resolves each
DID and searches for each name (``POST /api/aquarius/assets/query``). The publisher mints 10 datatokens of
each asset to the consumer wallet (what ocean.py's C2D walkthrough does), and the hook's ``run_compute``
pays for and starts a job on the two DIDs, waits for it and reads its results.

Figures: ocean.py's publish time per asset (transactions through the DDO being served), and the hook's
pay + start and the job's run time. Goals: both assets published, resolved and found by ocean.py; the job
succeeds with an output. Exit status 1 when a goal is missed, 2 when ocean.py cannot be installed or run.

    python benchmarks/oceanpy_publish.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import _oceanpy

ONE = 10**18


def mint_to_consumer(info: dict[str, Any], ddo: dict[str, Any]) -> None:
    """The publisher (the datatoken's minter) mints 10 datatokens of every service to the consumer."""
    from airflow_provider_ocean.chain import abi
    from airflow_provider_ocean.chain.rpc import JsonRpcClient
    from airflow_provider_ocean.chain.tx import TransactionSender

    sender = TransactionSender(JsonRpcClient(info["rpc_url"]), info["publisher"]["key"])
    for token in sorted({s["datatokenAddress"] for s in ddo["services"]}):
        call = abi.encode_call("mint(address,uint256)", info["consumer"]["address"], 10 * ONE)
        receipt = sender.transact(token, call, what="mint datatokens to the consumer")
        assert int(receipt["status"], 16) == 1, receipt


def main() -> int:
    from airflow_provider_ocean.hooks.ocean import OceanComputeHook

    print(
        f"ocean.py publish on the sandbox; {_common.machine()}; command: "
        f"{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}",
        flush=True,
    )
    try:
        python = _oceanpy.ensure_venv()
    except _oceanpy.OceanPyUnavailable as error:
        print(f"RESULT oceanpy_publish: NOT RUN (ocean.py {_oceanpy.VERSION} not installed: {error})")
        return 2
    goals = _common.Goals("oceanpy_publish")
    with _common.sandbox() as info, tempfile.TemporaryDirectory(prefix="ocean-bench-publish-") as scratch:
        files = f"{info['provider_url']}/sandbox/files"
        config = {
            "rpc_url": info["rpc_url"],
            "provider_url": info["provider_url"],
            "aquarius_url": info["provider_url"],
            "address_file": str(_oceanpy.address_file(info, Path(scratch))),
            "key": info["publisher"]["key"],
        }
        try:
            driver = _oceanpy.OceanPyDriver(python, config)
        except _oceanpy.OceanPyUnavailable as error:
            print(f"RESULT oceanpy_publish: NOT RUN (the ocean.py driver did not start: {error})")
            return 2
        published: dict[str, dict[str, Any]] = {}
        figures: dict[str, Any] = {"command": "python benchmarks/oceanpy_publish.py"}
        with driver:
            for kind, name, url in (
                ("dataset", "Weather readings (ocean.py)", f"{files}/weather.csv"),
                ("algorithm", "Station statistics (ocean.py)", f"{files}/sample_algorithm.py"),
            ):
                answer = driver.publish(kind, name, url)
                published[kind] = answer
                print(
                    f"  ocean.py published the {kind} {answer['did']} in {answer['publish_s']:.2f} s "
                    f"(its transactions until Aquarius served the DDO); resolved as "
                    f"{answer['resolved_name']!r}; search found {len(answer['search_dids'])} DDO(s)",
                    flush=True,
                )
                ok = answer["resolved_name"] == name and answer["did"] in answer["search_dids"]
                goals.check(f"ocean.py publishes, resolves and finds the {kind}", "yes" if ok else "no", ok)
                figures[f"{kind}_publish_s"] = round(answer["publish_s"], 2)

        hook = OceanComputeHook("ocean_default", retry_delay=0.2)
        dataset, algorithm = published["dataset"]["did"], published["algorithm"]["did"]
        for did in (dataset, algorithm):
            mint_to_consumer(info, hook.get_ddo(did))
        started = time.perf_counter()
        result = hook.run_compute([dataset], algorithm)
        paid = time.perf_counter() - started
        deadline = time.monotonic() + 120
        while not (job := hook.get_job_status(result["job_id"])).is_terminal and time.monotonic() < deadline:
            time.sleep(0.5)
        ran = time.perf_counter() - started - paid
        outputs = [r.filename for r in job.results if r.type == "output"]
        print(
            f"  the hook paid for and started job {result['job_id']} in {paid:.2f} s; it ended "
            f"{job.status} {job.status_text!r} {ran:.1f} s later with outputs {outputs}",
            flush=True,
        )
        ok = job.is_succeeded and bool(outputs)
        goals.check("the hook computes on the two DIDs", "succeeded" if ok else job.status_text, ok)
        figures.update(pay_start_s=round(paid, 2), job_s=round(ran, 1), outputs=outputs)
    print(f"  end: load average {_common.load_average()}")
    return goals.report(figures)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
