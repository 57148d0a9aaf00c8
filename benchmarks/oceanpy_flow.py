"""The reference client's pay + start, driven by ``benchmarks/pay_start.py``: runs ONLY in the ocean.py
3.1.2 virtualenv the benchmark creates (``_oceanpy.py``), never with the project's packages.

What a user of ocean.py 3.1.2 writes for one compute job with a registered algorithm
(``READMEs/c2d-flow.md`` of ocean.py): resolve the DDOs from Aquarius, pick the free environment,
``ocean.assets.pay_for_compute_service(datasets, algorithm, ...)`` (``initializeCompute`` then one
``startOrder`` per input, each sent and awaited in turn), then ``ocean.compute.start(...)``.

Protocol: one JSON object per line on stdin, one answer per line on stdout.

- first line, the configuration: ``{"rpc_url", "provider_url", "aquarius_url", "address_file",
  "key"}``; answered with ``{"ready": true, "address": ...}`` once ocean.py is imported and configured
  (not timed);
- then one job per line: ``{"dids": [...], "algorithm": did}``; answered with ``{"job_id", "resolve_s",
  "pay_s", "start_s", "seconds"}`` (``seconds``: DIDs in, job id out: resolve + pay + start, the same
  scope as the hook's ``run_compute``), or ``{"error": "..."}``;
- or a publication (``benchmarks/oceanpy_publish.py``): ``{"publish": "dataset" | "algorithm", "name",
  "url"}``: ``ocean.assets.create_url_asset(..., with_compute=True)`` or ``create_algo_asset`` with their
  defaults (its own transactions, Aquarius's validate, the Provider's encrypt, ``setMetaData``, then its
  own wait until Aquarius serves the DDO), ``ocean.assets.resolve`` and ``ocean.assets.search`` of the
  name; answered with ``{"did", "publish_s", "resolved_name", "search_dids"}``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from typing import Any


def main() -> int:
    out = sys.stdout
    sys.stdout = sys.stderr  # ocean.py prints; only our answers go to the real stdout
    config_line = json.loads(sys.stdin.readline())
    os.environ["ADDRESS_FILE"] = config_line["address_file"]
    logging.disable(logging.WARNING)

    from eth_account import Account
    from ocean_lib.example_config import get_config_dict
    from ocean_lib.models.compute_input import ComputeInput
    from ocean_lib.ocean.ocean import Ocean

    config = get_config_dict(config_line["rpc_url"])
    config["PROVIDER_URL"] = config_line["provider_url"]
    config["METADATA_CACHE_URI"] = config_line["aquarius_url"]
    ocean = Ocean(config)
    wallet = Account.from_key(config_line["key"])
    chain_id = config["CHAIN_ID"]

    def answer(payload: dict[str, Any]) -> None:
        out.write(json.dumps(payload) + "\n")
        out.flush()

    answer({"ready": True, "address": wallet.address})

    def compute_input(did: str, kind: str) -> Any:
        ddo = ocean.assets.resolve(did)
        service = next((s for s in ddo.services if s.type == kind), ddo.services[0])
        return ComputeInput(ddo, service)

    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        if "publish" in job:
            answer(publish(ocean, wallet, job))
            continue
        try:
            started = time.perf_counter()
            datasets = [compute_input(did, "compute") for did in job["dids"]]
            algorithm = compute_input(job["algorithm"], "access")
            endpoint = datasets[0].service.service_endpoint
            env = ocean.compute.get_free_c2d_environment(endpoint, chain_id)
            resolved = time.perf_counter()
            datasets, algorithm = ocean.assets.pay_for_compute_service(
                datasets=datasets,
                algorithm_data=algorithm,
                compute_environment=env["id"],
                valid_until=int(time.time()) + 3600,
                consume_market_order_fee_address=wallet.address,
                tx_dict={"from": wallet},
                consumer_address=env["consumerAddress"],
            )
            paid = time.perf_counter()
            job_id = ocean.compute.start(
                consumer_wallet=wallet,
                dataset=datasets[0],
                compute_environment=env["id"],
                algorithm=algorithm,
                additional_datasets=datasets[1:],
            )
            done = time.perf_counter()
            answer(
                {
                    "job_id": job_id,
                    "resolve_s": resolved - started,
                    "pay_s": paid - resolved,
                    "start_s": done - paid,
                    "seconds": done - started,
                }
            )
        except Exception as error:  # reported to the benchmark, which fails the run
            answer({"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()[-2000:]})
    return 0


def publish(ocean: Any, wallet: Any, job: dict[str, Any]) -> dict[str, Any]:
    """Publish one asset with ocean.py's own defaults, then read it back through Aquarius."""
    try:
        started = time.perf_counter()
        if job["publish"] == "algorithm":
            _nft, _token, ddo = ocean.assets.create_algo_asset(job["name"], job["url"], {"from": wallet})
        else:
            _nft, _token, ddo = ocean.assets.create_url_asset(
                job["name"], job["url"], {"from": wallet}, with_compute=True
            )
        published = time.perf_counter()
        resolved = ocean.assets.resolve(ddo.did)
        found = ocean.assets.search(job["name"])
        return {
            "did": ddo.did,
            "publish_s": published - started,
            "resolved_name": resolved.metadata["name"],
            "search_dids": [d.did for d in found],
        }
    except Exception as error:  # reported to the caller, which fails the run
        return {"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()[-2000:]}


if __name__ == "__main__":
    sys.exit(main())
