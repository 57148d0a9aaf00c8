"""Assets published with ``ocean-sandbox publish`` survive ``ocean-sandbox down`` and ``up`` (issue 15), and
run on the Ocean Node personality too.

Everything goes through the console script, as a user types it, on a sandbox of this module's own (the
session one is shared and must not stop). After the restart the DDOs are served unchanged (the chain and
the indexer's store are in the state directory), the dataset's file is still served, and the hook pays
for and runs a job on the two assets: the datatokens, trust list and checksums all came back. Then the
same state comes up as an Ocean Node (``up --api node``; publishing needs the Provider's ``encrypt``
route) and a free node job runs the published algorithm on the published dataset.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_ocean.hooks.ocean import OceanComputeHook
from tests.dags.test_publish_own import ALGORITHM, CSV

pytestmark = pytest.mark.chain

CLI = str(Path(sys.executable).with_name("ocean-sandbox"))


def sandbox_cli(state_dir: Path, *args: str) -> str:
    """Run ``ocean-sandbox --state-dir <state_dir> <args>``; its stdout (a failure fails the test)."""
    result = subprocess.run(
        [CLI, "--state-dir", str(state_dir), *args], capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A sandbox of this module's own, started with the CLI; purged at the end."""
    state = tmp_path_factory.mktemp("ocean-sandbox-persist")
    sandbox_cli(state, "up", "--detach", "--port", "0", "--rpc-port", "0", "--max-job-duration", "60")
    try:
        yield state
    finally:
        subprocess.run([CLI, "--state-dir", str(state), "down", "--purge"], capture_output=True, timeout=60)


def info(state_dir: Path) -> dict[str, Any]:
    return json.loads(sandbox_cli(state_dir, "info"))


def ddo(provider_url: str, did: str) -> dict[str, Any]:
    answer = requests.get(f"{provider_url}/api/aquarius/assets/ddo/{did}", timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture(scope="module")
def assets(state_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """A CSV dataset and a script published with the CLI; the dataset trusts the script."""
    sources = tmp_path_factory.mktemp("own-assets")
    (sources / "readings.csv").write_text(CSV)
    (sources / "count.py").write_text(ALGORITHM)
    algorithm = json.loads(
        sandbox_cli(state_dir, "publish", "algorithm", str(sources / "count.py"), "--json")
    )
    dataset = json.loads(
        sandbox_cli(
            state_dir,
            "publish",
            "dataset",
            str(sources / "readings.csv"),
            "--trusted-algorithm",
            algorithm["did"],
            "--json",
        )
    )
    return {"algorithm": algorithm, "dataset": dataset}


def wait_terminal(hook: OceanComputeHook, job_id: str) -> Any:
    deadline = time.monotonic() + 90
    while not (job := hook.get_job_status(job_id)).is_terminal:
        assert time.monotonic() < deadline, f"job still {job.status} {job.status_text}"
        time.sleep(0.5)
    return job


def test_published_assets_survive_down_and_up(
    state_dir: Path, assets: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    algorithm, dataset = assets["algorithm"], assets["dataset"]
    before = info(state_dir)
    ddos = {did: ddo(before["provider_url"], did) for did in (dataset["did"], algorithm["did"])}
    served = sorted(p.name for p in (state_dir / "files").iterdir())

    assert "stopped" in sandbox_cli(state_dir, "down")
    with pytest.raises(requests.ConnectionError):
        requests.get(before["provider_url"], timeout=5)
    sandbox_cli(state_dir, "up", "--detach")
    after = info(state_dir)

    assert (after["provider_url"], after["rpc_url"]) == (before["provider_url"], before["rpc_url"])
    for did, document in ddos.items():
        assert ddo(after["provider_url"], did) == document
    assert sorted(p.name for p in (state_dir / "files").iterdir()) == served
    [csv_file] = [name for name in served if name.endswith("-readings.csv")]
    answer = requests.get(f"{after['provider_url']}/sandbox/files/{csv_file}", timeout=10)
    assert answer.content.decode() == CSV

    monkeypatch.setenv("AIRFLOW_CONN_OCEAN_PERSIST", after["conn_json"])
    hook = OceanComputeHook("ocean_persist", retry_delay=0.2)
    started = hook.run_compute([dataset["did"]], {"did": algorithm["did"]})
    job = wait_terminal(hook, started["job_id"])
    assert job.is_succeeded, job
    [counts] = [r for r in job.results if r.filename == "counts.json"]
    with io.BytesIO() as buffer:
        hook.download_result(started["job_id"], counts.index, buffer)
        assert json.loads(buffer.getvalue()) == {"north": 2, "south": 1}


def test_the_published_assets_run_on_the_node_personality(
    state_dir: Path, assets: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox_cli(state_dir, "down")
    sandbox_cli(state_dir, "up", "--detach", "--api", "node")
    node = info(state_dir)
    assert requests.get(node["provider_url"], timeout=10).json()["software"] == "Ocean-Node"
    dataset, algorithm = assets["dataset"]["did"], assets["algorithm"]["did"]
    assert ddo(node["provider_url"], dataset)["id"] == dataset  # served by the node's own routes

    monkeypatch.setenv("AIRFLOW_CONN_OCEAN_PERSIST_NODE", node["conn_json"])
    hook = OceanComputeHook("ocean_persist_node", retry_delay=0.2)
    assert hook.is_ocean_node
    payment = hook.pay_for_compute([dataset], {"did": algorithm}, free=True)
    started = hook.start_compute([dataset], {"did": algorithm}, payment=payment)
    job = wait_terminal(hook, started.job_id)
    assert job.is_succeeded, job
    [outputs] = [r for r in job.results if r.filename == "outputs.tar"]
    with io.BytesIO() as buffer:
        hook.download_result(started.job_id, outputs.index, buffer)
        buffer.seek(0)
        with tarfile.open(fileobj=buffer) as archive:
            member = next(m for m in archive.getmembers() if m.name.endswith("counts.json"))
            extracted = archive.extractfile(member)
            assert extracted is not None
            assert json.loads(extracted.read()) == {"north": 2, "south": 1}
