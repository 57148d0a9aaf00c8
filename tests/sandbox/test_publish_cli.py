"""``ocean-sandbox publish``'s options, read back from the DDO the sandbox's Aquarius serves, and bad input
refused before any transaction (issue 15).

The console script runs as a user types it, against the session's sandbox. Expected checksums are computed
here from the served files, as the Provider computes them (docs/reference/provider-v4-api.md: trusted
algorithms' ``filesChecksum`` and ``containerSectionChecksum``).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_ocean.chain.rpc import JsonRpcClient

pytestmark = pytest.mark.chain

CLI = str(Path(sys.executable).with_name("ocean-sandbox"))
SCRIPT = "import os\nprint(sorted(os.listdir(os.environ.get('INPUTS', '/data/inputs'))))\n"


def publish(sandbox: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "--state-dir", sandbox["state_dir"], "publish", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def published(sandbox: dict[str, Any], *args: str) -> dict[str, Any]:
    """Publish with ``--json``; the served DDO."""
    result = publish(sandbox, *args, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    did = json.loads(result.stdout)["did"]
    answer = requests.get(f"{sandbox['provider_url']}/api/aquarius/assets/ddo/{did}", timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_dataset_from_a_url_with_every_compute_option(sandbox: dict[str, Any]) -> None:
    url = f"{sandbox['provider_url']}/sandbox/files/weather.csv"
    algorithm = sandbox["assets"]["algorithm"]["did"]
    trusted_publisher = sandbox["other"]["address"]
    ddo = published(
        sandbox,
        "dataset",
        url,
        "--allow-raw-algorithm",
        "--trusted-algorithm",
        algorithm,
        "--trusted-publisher",
        trusted_publisher,
        "--timeout",
        "600",
        "--name",
        "Weather by URL",
        "--description",
        "the sample CSV, by URL",
        "--author",
        "tests",
        "--license",
        "MIT",
    )
    metadata = ddo["metadata"]
    assert (metadata["type"], metadata["name"], metadata["description"]) == (
        "dataset",
        "Weather by URL",
        "the sample CSV, by URL",
    )
    assert (metadata["author"], metadata["license"]) == ("tests", "MIT")
    [service] = ddo["services"]
    assert (service["type"], service["timeout"]) == ("compute", 600)
    assert service["files"].startswith("0x")  # encrypted by the Provider's route
    assert url not in json.dumps(ddo)
    compute = service["compute"]
    assert compute["allowRawAlgorithm"] is True
    assert compute["publisherTrustedAlgorithmPublishers"] == [trusted_publisher]

    algorithm_ddo = requests.get(
        f"{sandbox['provider_url']}/api/aquarius/assets/ddo/{algorithm}", timeout=10
    ).json()
    script = requests.get(f"{sandbox['provider_url']}/sandbox/files/sample_algorithm.py", timeout=10).content
    container = algorithm_ddo["metadata"]["algorithm"]["container"]
    assert compute["publisherTrustedAlgorithms"] == [
        {
            "did": algorithm,
            "filesChecksum": hashlib.sha256(script).hexdigest(),
            "containerSectionChecksum": hashlib.sha256(
                (container["entrypoint"] + container["checksum"]).encode()
            ).hexdigest(),
        }
    ]
    # the Provider decrypts the service's files and reaches the URL
    info = requests.post(
        f"{sandbox['provider_url']}/api/services/fileinfo",
        json={"did": ddo["id"], "serviceId": service["id"], "checksum": True},
        timeout=30,
    )
    assert info.status_code == 200, info.text
    weather = requests.get(url, timeout=10).content
    assert [(f["valid"], f["checksum"]) for f in info.json()] == [(True, hashlib.sha256(weather).hexdigest())]


def test_an_algorithm_with_its_container(sandbox: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "list_inputs.py").write_text(SCRIPT)
    digest = "sha256:" + "ab" * 32
    ddo = published(
        sandbox,
        "algorithm",
        str(tmp_path / "list_inputs.py"),
        "--image",
        "oceanprotocol/algo_dockers",
        "--tag",
        "python-branin",
        "--entrypoint",
        "python3 $ALGO",
        "--checksum",
        digest,
        "--language",
        "python3",
        "--timeout",
        "120",
    )
    assert ddo["metadata"]["type"] == "algorithm"
    assert ddo["metadata"]["name"] == "list_inputs.py"  # the file name when no --name
    assert ddo["metadata"]["algorithm"]["language"] == "python3"
    assert ddo["metadata"]["algorithm"]["container"] == {
        "entrypoint": "python3 $ALGO",
        "image": "oceanprotocol/algo_dockers",
        "tag": "python-branin",
        "checksum": digest,
    }
    [service] = ddo["services"]
    assert (service["type"], service["timeout"]) == ("access", 120)
    served = Path(sandbox["state_dir"]) / "files"
    [copy] = [p for p in served.iterdir() if p.name.endswith("-list_inputs.py")]
    assert copy.read_text() == SCRIPT  # served by the sandbox, content-addressed name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dataset", "/nonexistent/data.csv"], "no such file: /nonexistent/data.csv"),
        (
            ["dataset", "{script}", "--trusted-algorithm", "did:op:" + "0" * 64],
            "is not known to the sandbox",
        ),
        (["dataset", "{script}", "--trusted-algorithm", "{dataset}"], "is not an algorithm"),
        (["algorithm", "{script}", "--checksum", "md5:abc"], "--checksum must start with sha256:"),
        (["algorithm", "https://example.com/algo.py"], "an algorithm comes from a local script"),
    ],
)
def test_bad_input_is_refused_before_any_transaction(
    sandbox: dict[str, Any], tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "algo.py").write_text(SCRIPT)
    filled = [
        a.format(script=tmp_path / "algo.py", dataset=sandbox["assets"]["dataset"]["did"]) for a in args
    ]
    rpc = JsonRpcClient(sandbox["rpc_url"])
    before = rpc.get_transaction_count(sandbox["publisher"]["address"], "pending")
    result = publish(sandbox, *filled)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert rpc.get_transaction_count(sandbox["publisher"]["address"], "pending") == before
