"""The sandbox Provider driven over HTTP by an independent client: discovery and the happy paths.

Expected values come from docs/reference/provider-v4-api.md (cited as §n) and
docs/reference/contracts-and-payment.md.
Every chain-using test works with fresh accounts funded from ``other``, so nonces, balances and job lists of
different tests never interact.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from eth_utils import to_checksum_address

from tests.sandbox import ocean_client as oc

pytestmark = pytest.mark.chain

WEATHER = Path(__file__).parents[2] / "sandbox" / "ocean_sandbox" / "data" / "weather.csv"
STATUS_KEYS = {
    "agreementId",
    "jobId",
    "owner",
    "status",
    "statusText",
    "dateCreated",
    "dateFinished",
    "results",
    "stopreq",
    "removed",
    "algoDID",
    "inputDID",
}
ENV_KEYS = {
    "id",
    "consumerAddress",
    "priceMin",
    "cpuNumber",
    "cpuType",
    "gpuNumber",
    "gpuType",
    "ramGB",
    "diskGB",
    "desc",
    "currentJobs",
    "maxJobs",
    "storageExpiry",
    "maxJobDuration",
    "lastSeen",
    "feeToken",
}
STATUS_ORDER = [1, 20, 30, 40, 60, 70]
CONTENT_TYPE_ERROR = "Invalid request content type: should be application/octet-stream"
RESULTS = [
    ("summary.csv", "output"),
    ("summary.json", "output"),
    ("summary.png", "output"),
    ("algorithm.log", "algorithmLog"),
    ("configure.log", "configrationLog"),
    ("publish.log", "publishLog"),
]
CONTAINER = {
    "entrypoint": "python $ALGO",
    "image": "python",
    "tag": "3.11-slim",
    "checksum": "sha256:" + "ab" * 32,
}
RAW_PROBE = """
import json, os
inputs = os.environ["INPUTS"]
names = sorted(os.path.relpath(os.path.join(r, f), inputs) for r, _, fs in os.walk(inputs) for f in fs)
print("probe:", json.dumps({"dids": json.loads(os.environ["DIDS"]),
      "algo_did": os.environ["TRANSFORMATION_DID"], "inputs": names}))
with open(os.path.join(os.environ["OUTPUTS"], "probe.txt"), "w") as out:
    out.write("raw algorithm ran\\n")
"""


@pytest.fixture(scope="module")
def lab(sandbox: dict[str, Any]) -> oc.Lab:
    return oc.Lab(sandbox)


def didhex(did: str) -> str:
    return did.removeprefix("did:op:")


def expected_summary_csv(column: str, copies: int = 1) -> str:
    """Per-station count/mean/min/max of ``column``, computed here from the sample CSV."""
    groups: dict[str, list[float]] = {}
    with WEATHER.open(newline="") as handle:
        for row in csv.DictReader(handle):
            groups.setdefault(row["station"], []).append(float(row[column]))
    lines = ["station,count,mean,min,max"]
    for station in sorted(groups):
        values = groups[station] * copies
        mean = round(math.fsum(values) / len(values), 4)
        lines.append(f"{station},{len(values)},{mean},{min(values)},{max(values)}")
    return "\n".join(lines) + "\n"


def assert_fresh_job(job: dict[str, Any], owner: str, algo_did: str, input_dids: list[str]) -> None:
    """The status object of a just-created job (§5 success, §8)."""
    assert set(job) == STATUS_KEYS
    assert re.fullmatch(r"[0-9a-f]{32}", job["jobId"])
    assert job["owner"] == owner
    assert job["status"] == 1
    assert job["statusText"] == "Warming up"
    assert job["dateFinished"] is None
    assert job["results"] == ""
    assert job["stopreq"] == 0
    assert job["removed"] == 0
    assert job["algoDID"] == algo_did
    assert job["inputDID"] == input_dids
    assert isinstance(job["dateCreated"], str)
    assert abs(float(job["dateCreated"]) - time.time()) < 60


def start_ok(lab: oc.Lab, body: dict[str, Any]) -> dict[str, Any]:
    response = lab.provider.start(body)
    assert response.status_code == 200, response.text
    jobs = response.json()
    assert isinstance(jobs, list)
    assert len(jobs) == 1
    return jobs[0]


def raw_meta(code: str) -> dict[str, Any]:
    return {"rawcode": code, "container": CONTAINER}


def wait_status(lab: oc.Lab, owner: str, job_id: str, status: int, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        (job,) = lab.provider.status(owner, job_id).json()
        if job["status"] >= status or job["dateFinished"]:
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck at {job['status']}"
        time.sleep(0.05)


def fetch_all_results(lab: oc.Lab, user: oc.Wallet, job: dict[str, Any]) -> dict[str, bytes]:
    files = {}
    for index, entry in enumerate(job["results"]):
        response = lab.provider.result(user, job["jobId"], index)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Disposition"] == f"attachment;filename={entry['filename']}"
        assert len(response.content) == entry["filesize"]
        files[entry["filename"]] = response.content
    return files


# -- 1-4: discovery ------------------------------------------------------------------------------------
def test_root_describes_the_provider(lab: oc.Lab, sandbox: dict[str, Any]) -> None:
    """§2.1 and the endpoint table of §2."""
    response = lab.provider.root()
    assert response.status_code == 200
    body = response.json()
    assert body["software"] == "Provider"
    assert isinstance(body["version"], str)
    assert body["chainIds"] == [8996]
    assert body["providerAddresses"] == {"8996": sandbox["provider_address"]}
    endpoints = body["serviceEndpoints"]
    assert endpoints["computeStart"] == ["POST", "/api/services/compute"]
    assert {name: endpoints[name] for name in endpoints if name.startswith("compute") or name == "nonce"} == {
        "nonce": ["GET", "/api/services/nonce"],
        "computeEnvironments": ["GET", "/api/services/computeEnvironments"],
        "computeStart": ["POST", "/api/services/compute"],
        "computeStatus": ["GET", "/api/services/compute"],
        "computeStop": ["PUT", "/api/services/compute"],
        "computeDelete": ["DELETE", "/api/services/compute"],
        "computeResult": ["GET", "/api/services/computeResult"],
    }
    assert endpoints["initializeCompute"] == ["POST", "/api/services/initializeCompute"]
    # §1: every response carries Connection: close; CORS is on
    assert response.headers["Connection"].lower() == "close"
    assert response.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(
    "name",
    [
        name
        for name, (method, path) in sorted(
            {
                "computeDelete": ("DELETE", "/api/services/compute"),
                "computeEnvironments": ("GET", "/api/services/computeEnvironments"),
                "computeResult": ("GET", "/api/services/computeResult"),
                "computeStart": ("POST", "/api/services/compute"),
                "computeStatus": ("GET", "/api/services/compute"),
                "computeStop": ("PUT", "/api/services/compute"),
                "create_auth_token": ("GET", "/api/services/createAuthToken"),
                "decrypt": ("POST", "/api/services/decrypt"),
                "delete_auth_token": ("DELETE", "/api/services/deleteAuthToken"),
                "download": ("GET", "/api/services/download"),
                "encrypt": ("POST", "/api/services/encrypt"),
                "fileinfo": ("POST", "/api/services/fileinfo"),
                "initialize": ("GET", "/api/services/initialize"),
                "initializeCompute": ("POST", "/api/services/initializeCompute"),
                "nonce": ("GET", "/api/services/nonce"),
                "validateContainer": ("POST", "/api/services/validateContainer"),
            }.items()
        )
    ],
)
def test_every_advertised_endpoint_is_routed(lab: oc.Lab, name: str) -> None:
    """§2: each serviceEndpoints entry answers something other than the unknown-route 404."""
    method, path = lab.provider.root().json()["serviceEndpoints"][name]
    response = requests.request(method, lab.provider.base_url + path, timeout=30)
    assert response.status_code not in (404, 405), (name, response.status_code, response.text[:200])


@pytest.mark.parametrize("path", ["/api/services/nothing", "/api/v1/operator/compute", "/nope/"])
def test_unknown_route_is_a_404_with_context(lab: oc.Lab, path: str) -> None:
    """§1.1: uncaught-exception shape for an unknown route."""
    response = lab.provider.get(path)
    assert response.status_code == 404
    body = response.json()
    assert set(body) == {"context", "error"}
    assert body["context"] is None
    assert body["error"].startswith("404 Not Found: ")


def test_nonce_of_an_unknown_address_is_the_string_1(lab: oc.Lab) -> None:
    """§2.2: a JSON string, and GET does not advance it."""
    address = oc.Wallet.create().address
    for _ in range(2):
        response = lab.provider.nonce(address)
        assert response.status_code == 200
        assert response.json() == {"nonce": "1"}


def test_nonce_without_user_address_is_a_validation_error(lab: oc.Lab) -> None:
    """§2.2 + §1.1 flask-sieve shape."""
    response = lab.provider.nonce(None)
    assert response.status_code == 400
    assert response.json() == {
        "errors": {"userAddress": ["The userAddress field is required."]},
        "message": "Validation error",
        "success": False,
    }


def test_compute_environments(lab: oc.Lab, sandbox: dict[str, Any]) -> None:
    """§2.3: keyed by chain-id string; engine wallet as consumerAddress; Ocean as fee token."""
    response = lab.provider.environments()
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["8996"]
    envs = {env["id"]: env for env in body["8996"]}
    assert set(envs) == {"ocean-compute", "ocean-compute-paid"}
    for env in envs.values():
        assert set(env) == ENV_KEYS
        assert env["consumerAddress"] == sandbox["engine_address"]
        assert env["feeToken"] == sandbox["addresses"]["Ocean"]
        assert float(env["lastSeen"]) == pytest.approx(time.time(), abs=60)
    free, paid = envs["ocean-compute"], envs["ocean-compute-paid"]
    assert free["priceMin"] == 0
    assert float(free["maxJobDuration"]) == 60
    # the paid engine announces its numbers from environment variables: strings
    assert paid["priceMin"] == "0.5"
    assert paid["maxJobDuration"] == "60"
    assert all(isinstance(paid[key], str) for key in ("cpuNumber", "ramGB", "diskGB", "maxJobs"))
    # a chainId parameter is ignored
    other_chain = lab.provider.get("/api/services/computeEnvironments", chainId="1")
    assert other_chain.status_code == 200
    assert [env["id"] for env in other_chain.json()["8996"]] == [env["id"] for env in body["8996"]]


@pytest.mark.parametrize(
    ("container", "status", "expected"),
    [
        (CONTAINER, 200, CONTAINER),
        ({**CONTAINER, "entrypoint": ""}, 400, {"error": "missing_entrypoint_image_checksum"}),
        ({**CONTAINER, "checksum": "abc"}, 400, {"error": "checksum_prefix"}),
    ],
)
def test_validate_container(lab: oc.Lab, container: dict[str, str], status: int, expected: Any) -> None:
    """§2.10."""
    response = requests.post(
        lab.provider.base_url + "/api/services/validateContainer", json=container, timeout=30
    )
    assert response.status_code == status
    assert response.json() == expected


def test_encrypt_answers_201_with_0x_hex_that_decrypts(lab: oc.Lab, sandbox: dict[str, Any]) -> None:
    """§2.10: the Provider's ``routes/encrypt.py`` ``_encrypt`` answers 201 ``text/plain`` with
    ``utils/encryption.py`` ``do_encrypt``'s ``Web3.toHex(ecies.encrypt(...))``: ``0x``-prefixed hex that the
    Provider's key decrypts (and that the sandbox's DDO ``files`` reader takes as it is)."""
    from ecies import decrypt

    from ocean_sandbox.state import load_state

    response = requests.post(
        lab.provider.base_url + "/api/services/encrypt?chainId=8996",
        data=b'[{"type":"url"}]',
        headers={"Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert response.status_code == 201
    assert response.headers["Content-Type"] == "text/plain"
    assert re.fullmatch(r"0x[0-9a-f]+", response.text)
    provider_key = load_state(Path(sandbox["state_dir"]))["provider"]["key"]
    plain = decrypt(provider_key, bytes.fromhex(response.text.removeprefix("0x")))
    assert plain == b'[{"type":"url"}]'


@pytest.mark.parametrize(
    ("query", "headers", "error"),
    [
        ("?chainId=8996", {"Content-Type": "application/json"}, CONTENT_TYPE_ERROR),
        ("?chainId=8996", {"Content-Type": "application/octet-stream; charset=utf-8"}, CONTENT_TYPE_ERROR),
        ("?chainId=8996", {}, CONTENT_TYPE_ERROR),
        ("", {"Content-Type": "application/octet-stream"}, "Missing chainId query parameter."),
        ("?chainId=", {"Content-Type": "application/octet-stream"}, "Missing chainId query parameter."),
        ("", {"Content-Type": "text/plain"}, CONTENT_TYPE_ERROR),  # the content type is checked first
    ],
)
def test_encrypt_refusals(lab: oc.Lab, query: str, headers: dict[str, str], error: str) -> None:
    """The Provider's ``routes/encrypt.py`` ``encrypt``: ``request.content_type`` (the whole header) must
    equal ``application/octet-stream``, then ``request.args.get("chainId")`` must be non-empty; each refusal
    is ``utils/error_responses.py`` ``error_response(..., 400)``: ``{"error": text}``."""
    response = requests.post(
        lab.provider.base_url + "/api/services/encrypt" + query, data=b"[]", headers=headers, timeout=30
    )
    assert response.status_code == 400
    assert response.json() == {"error": error}


@pytest.mark.parametrize(
    "asset", ["dataset", "algorithm", "dataset_raw", "dataset_trusted", "algorithm_untrusted"]
)
def test_aquarius_ddo(lab: oc.Lab, sandbox: dict[str, Any], asset: str) -> None:
    """§9: the DDO fields the Provider reads."""
    facts = sandbox["assets"][asset]
    response = lab.provider.ddo(facts["did"])
    assert response.status_code == 200
    ddo = response.json()
    assert ddo["id"] == facts["did"]
    assert ddo["chainId"] == 8996
    assert ddo["nftAddress"].lower() == facts["nft"].lower()
    assert ddo["nft"]["address"].lower() == facts["nft"].lower()
    assert ddo["nft"]["owner"] == sandbox["publisher"]["address"]
    assert ddo["nft"]["state"] == 0
    assert ddo["metadata"]["type"] == ("algorithm" if asset.startswith("algorithm") else "dataset")
    service = ddo["services"][facts["service_index"]]
    assert service["id"] == facts["service_id"]
    assert service["datatokenAddress"].lower() == facts["datatoken"].lower()
    assert service["serviceEndpoint"] == sandbox["provider_url"]
    assert {"id", "type", "files", "datatokenAddress", "serviceEndpoint", "timeout"} <= set(service)
    # v4 DID rule
    expected = hashlib.sha256((to_checksum_address(facts["nft"]) + "8996").encode()).hexdigest()
    assert facts["did"] == "did:op:" + expected


def test_aquarius_unknown_did_is_404(lab: oc.Lab) -> None:
    response = lab.provider.ddo("did:op:" + "0" * 64)
    assert response.status_code == 404


# -- 5: the full flow on the free environment ------------------------------------------------------------
@pytest.fixture(scope="module")
def free_job(lab: oc.Lab) -> dict[str, Any]:
    """dataset + registered algorithm on the free env, polled to the end (the assertions are in tests)."""
    user = lab.new_user({"dataset": 1, "algorithm": 1})
    valid_until = int(time.time()) + 3600
    quote = lab.initialize([lab.ref("dataset")], lab.ref("algorithm"), lab.free_env, valid_until)
    before = {
        asset: oc.balance_of(lab.chain, lab.assets[asset]["datatoken"], user.address)
        for asset in ("dataset", "algorithm")
    }
    body = quote.json()
    dataset_receipt = oc.start_order(
        lab.chain,
        user.key,
        body["datasets"][0]["datatoken"],
        lab.env_consumer[lab.free_env],
        lab.assets["dataset"]["service_index"],
        body["datasets"][0]["providerFee"],
    )
    algo_receipt = oc.start_order(
        lab.chain,
        user.key,
        body["algorithm"]["datatoken"],
        lab.env_consumer[lab.free_env],
        lab.assets["algorithm"]["service_index"],
        body["algorithm"]["providerFee"],
    )
    dataset_tx, algo_tx = oc.ok(dataset_receipt), oc.ok(algo_receipt)
    start_body = lab.provider.start_body(
        user,
        lab.ref("dataset", dataset_tx),
        lab.ref("algorithm", algo_tx, algocustomdata={"column": "humidity_pct"}),
        lab.free_env,
    )
    start = lab.provider.start(start_body)
    job_id = start.json()[0]["jobId"] if start.status_code == 200 else None
    finished, seen = lab.provider.wait_finished(user.address, job_id) if job_id else (None, [])
    return {
        "user": user,
        "valid_until": valid_until,
        "quote": quote,
        "before": before,
        "receipts": {"dataset": dataset_receipt, "algorithm": algo_receipt},
        "start": start,
        "finished": finished,
        "seen": seen,
    }


def test_initialize_compute_quotes_a_new_order_per_input(
    lab: oc.Lab, free_job: dict[str, Any], sandbox: dict[str, Any]
) -> None:
    """§4: {"datasets":[{datatoken, providerFee}], "algorithm": {datatoken, providerFee}}; fee signed by the
    provider key over the packed hash (checked here independently, as startOrder's ecrecover does)."""
    assert free_job["quote"].status_code == 200
    quote = free_job["quote"].json()
    assert set(quote) == {"datasets", "algorithm"}
    assert len(quote["datasets"]) == 1
    for asset, answer in (("dataset", quote["datasets"][0]), ("algorithm", quote["algorithm"])):
        assert set(answer) == {"datatoken", "providerFee"}
        assert answer["datatoken"].lower() == sandbox["assets"][asset]["datatoken"].lower()
        fee = answer["providerFee"]
        assert set(fee) == {
            "providerFeeAddress",
            "providerFeeToken",
            "providerFeeAmount",
            "providerData",
            "v",
            "r",
            "s",
            "validUntil",
        }
        assert fee["providerFeeAddress"] == sandbox["provider_address"]
        assert fee["providerFeeToken"] == sandbox["addresses"]["Ocean"]
        assert fee["providerFeeAmount"] == "0"
        assert fee["validUntil"] == free_job["valid_until"]
        assert fee["v"] in (27, 28)
        assert re.fullmatch(r"0x[0-9a-f]{64}", fee["r"])
        assert re.fullmatch(r"0x[0-9a-f]{64}", fee["s"])
        assert oc.provider_fee_signer(fee) == sandbox["provider_address"]
        data = oc.provider_data(fee)
        assert list(data) == ["environment", "timestamp", "dt", "id"]
        assert data["environment"] == "ocean-compute"
        assert data["dt"].lower() == sandbox["assets"][asset]["datatoken"].lower()
        assert data["id"] == sandbox["assets"][asset]["service_id"]
        assert data["timestamp"] == pytest.approx(time.time(), abs=120)


def test_orders_emit_the_expected_events(
    lab: oc.Lab, free_job: dict[str, Any], sandbox: dict[str, Any]
) -> None:
    """docs/reference/contracts-and-payment.md §2/§3: OrderStarted(consumer=env wallet, payer=user); 1 DT
    each."""
    user = free_job["user"]
    for asset, receipt in free_job["receipts"].items():
        assert int(receipt["status"], 16) == 1
        (started,) = oc.order_started_events(receipt)
        assert started["emitter"].lower() == sandbox["assets"][asset]["datatoken"].lower()
        assert started["consumer"] == sandbox["engine_address"]
        assert started["payer"] == user.address
        assert started["amount"] == oc.ONE_TOKEN
        assert started["serviceIndex"] == sandbox["assets"][asset]["service_index"]
        (fee,) = oc.provider_fee_events(receipt)
        assert fee["providerFeeAddress"] == sandbox["provider_address"]
        assert fee["providerData"]["id"] == sandbox["assets"][asset]["service_id"]
        after = oc.balance_of(lab.chain, sandbox["assets"][asset]["datatoken"], user.address)
        assert free_job["before"][asset] - after == oc.ONE_TOKEN


def test_start_answers_a_list_with_one_warming_up_job(
    free_job: dict[str, Any], sandbox: dict[str, Any]
) -> None:
    """§5 success + §7 rule 12: on a free env every input pays enough; the algorithm's order wins."""
    response = free_job["start"]
    assert response.status_code == 200, response.text
    (job,) = response.json()
    assert_fresh_job(
        job,
        free_job["user"].address,
        sandbox["assets"]["algorithm"]["did"],
        [sandbox["assets"]["dataset"]["did"]],
    )
    assert job["agreementId"] == free_job["receipts"]["algorithm"]["transactionHash"]


def test_status_sequence_and_finished_job(free_job: dict[str, Any]) -> None:
    """§8: codes only move forward through 1,20,30,40,60,70; terminal = dateFinished; results list."""
    seen = [1, *free_job["seen"]] if free_job["seen"][:1] != [1] else free_job["seen"]
    assert seen == sorted(set(seen)), seen
    assert set(seen) <= set(STATUS_ORDER), seen
    assert seen[-1] == 70
    job = free_job["finished"]
    assert set(job) == STATUS_KEYS
    assert job["statusText"] == "Job finished"
    assert job["stopreq"] == 0
    assert job["removed"] == 0
    assert float(job["dateFinished"]) >= float(job["dateCreated"])
    assert [(r["filename"], r["type"]) for r in job["results"]] == RESULTS
    assert all(set(r) == {"filename", "filesize", "type"} for r in job["results"])


def test_results_are_served_by_index(lab: oc.Lab, free_job: dict[str, Any], sandbox: dict[str, Any]) -> None:
    """§2.8: bytes + Content-Disposition per index; the statistics match an independent computation."""
    files = fetch_all_results(lab, free_job["user"], free_job["finished"])
    assert files["summary.csv"].decode() == expected_summary_csv("humidity_pct")
    summary = json.loads(files["summary.json"])
    assert summary["column"] == "humidity_pct"
    assert summary["inputs"] == 1
    log = files["algorithm.log"].decode()
    assert 'custom data: {"column": "humidity_pct"}' in log
    assert f"reading {didhex(sandbox['assets']['dataset']['did'])}/0" in log
    assert files["configure.log"]
    assert files["publish.log"]


def test_status_lists_every_job_of_the_owner(lab: oc.Lab, free_job: dict[str, Any]) -> None:
    """§2.6: without jobId the owner's jobs are listed; the status call is not signed."""
    response = lab.provider.status(free_job["user"].address)
    assert response.status_code == 200
    assert [job["jobId"] for job in response.json()] == [free_job["finished"]["jobId"]]


def test_status_owner_is_case_sensitive(lab: oc.Lab, free_job: dict[str, Any]) -> None:
    """§2.6: the operator filters by owner with exact string equality."""
    user, job_id = free_job["user"], free_job["finished"]["jobId"]
    response = lab.provider.status(user.address.lower(), job_id)
    assert response.status_code == 200
    assert response.json() == []
    assert [job["jobId"] for job in lab.provider.status(user.address, job_id).json()] == [job_id]


def test_status_ignores_signatures_and_reads_a_json_body(lab: oc.Lab, free_job: dict[str, Any]) -> None:
    """§2.6 status is unsigned (a signature sent anyway is ignored); §1 GET reads a JSON body when there is
    no query string, and the query wins otherwise (never a merge)."""
    user, job_id = free_job["user"], free_job["finished"]["jobId"]
    url = lab.provider.base_url + "/api/services/compute"
    signed = lab.provider.get(
        "/api/services/compute", consumerAddress=user.address, jobId=job_id, signature="0x" + "00" * 65
    )
    assert signed.status_code == 200
    assert [job["jobId"] for job in signed.json()] == [job_id]
    by_body = requests.get(url, json={"consumerAddress": user.address, "jobId": job_id}, timeout=30)
    assert by_body.status_code == 200
    assert [job["jobId"] for job in by_body.json()] == [job_id]
    mixed = requests.get(url, params={"jobId": job_id}, json={"consumerAddress": user.address}, timeout=30)
    assert mixed.status_code == 400
    assert mixed.json()["errors"] == {"consumerAddress": ["The consumerAddress field is required."]}


def test_status_without_consumer_address_is_a_validation_error(lab: oc.Lab) -> None:
    response = lab.provider.get("/api/services/compute", jobId="0" * 32)
    assert response.status_code == 400
    assert response.json() == {
        "errors": {"consumerAddress": ["The consumerAddress field is required."]},
        "message": "Validation error",
        "success": False,
    }


@pytest.mark.parametrize("past_end", [0, 7])
def test_result_index_past_the_end_is_404(lab: oc.Lab, free_job: dict[str, Any], past_end: int) -> None:
    """§2.8 operator error, passed through with its status."""
    job = free_job["finished"]
    index = len(job["results"]) + past_end
    nonce = oc.next_nonce()
    response = lab.provider.result(free_job["user"], job["jobId"], index, nonce)
    assert response.status_code == 404
    assert response.json() == {"error": f"No such index {index} in this compute job"}
    # §2.8: the nonce is saved before the operator is asked
    assert lab.provider.nonce(free_job["user"].address).json() == {"nonce": nonce}


def test_result_negative_index_is_404(lab: oc.Lab, free_job: dict[str, Any]) -> None:
    response = lab.provider.result(free_job["user"], free_job["finished"]["jobId"], -1)
    assert response.status_code == 404
    assert response.json() == {"error": "Negative index -1"}


def test_result_owner_mismatch(lab: oc.Lab, free_job: dict[str, Any]) -> None:
    """§2.8: the owner check is an exact string compare, while signatures are case-insensitive (§3.2)."""
    job_id = free_job["finished"]["jobId"]
    stranger = oc.Wallet.create()
    response = lab.provider.result(stranger, job_id, 0)
    assert response.status_code == 404
    assert response.json() == {"error": f"Owner {stranger.address} mismatch for job {job_id}"}
    user = free_job["user"]
    lower = oc.Wallet(user.address.lower(), user.key)
    response = lab.provider.result(lower, job_id, 0)
    assert response.status_code == 404
    assert response.json() == {"error": f"Owner {lower.address} mismatch for job {job_id}"}


# -- 6: order states in initializeCompute, reuseOrder ----------------------------------------------------
def test_initialize_reports_valid_orders_and_reuse(lab: oc.Lab) -> None:
    """§4 answer forms: validOrder alone; datatoken+providerFee+validOrder → reuseOrder (no DT moves); P4."""
    user = lab.new_user({"dataset": 1, "algorithm": 1})
    valid_until = int(time.time()) + 600
    (dataset_ref,), algo_ref = lab.quote_and_order(user, ["dataset"], "algorithm", lab.free_env, valid_until)
    tx = {"dataset": dataset_ref["transferTxId"], "algorithm": algo_ref["transferTxId"]}

    same = lab.initialize([dataset_ref], algo_ref, lab.free_env, valid_until)
    assert same.status_code == 200, same.text
    assert same.json() == {
        "datasets": [{"validOrder": tx["dataset"]}],
        "algorithm": {"validOrder": tx["algorithm"]},
    }

    longer = lab.initialize([dataset_ref], algo_ref, lab.free_env, valid_until + 3000)
    assert longer.status_code == 200, longer.text
    quote = longer.json()
    answers = {"dataset": quote["datasets"][0], "algorithm": quote["algorithm"]}
    balances = {a: oc.balance_of(lab.chain, lab.assets[a]["datatoken"], user.address) for a in answers}
    assert balances == {"dataset": 0, "algorithm": 0}  # the one DT each went into the first orders
    reuse = {}
    for asset, answer in answers.items():
        assert set(answer) == {"datatoken", "providerFee", "validOrder"}
        assert answer["validOrder"] == tx[asset]
        assert answer["providerFee"]["validUntil"] == valid_until + 3000
        receipt = oc.reuse_order(
            lab.chain, user.key, answer["datatoken"], answer["validOrder"], answer["providerFee"]
        )
        reuse[asset] = oc.ok(receipt)
        (event,) = oc.order_reused_events(receipt)
        assert event == {"orderTxId": tx[asset], "caller": user.address}
        assert oc.balance_of(lab.chain, lab.assets[asset]["datatoken"], user.address) == 0

    # P4: asking with the reuse txs reports the ORIGINAL startOrder txs as validOrder
    again = lab.initialize(
        [lab.ref("dataset", reuse["dataset"])],
        lab.ref("algorithm", reuse["algorithm"]),
        lab.free_env,
        valid_until + 3000,
    )
    assert again.status_code == 200, again.text
    assert again.json() == {
        "datasets": [{"validOrder": tx["dataset"]}],
        "algorithm": {"validOrder": tx["algorithm"]},
    }

    body = lab.provider.start_body(
        user, lab.ref("dataset", reuse["dataset"]), lab.ref("algorithm", reuse["algorithm"]), lab.free_env
    )
    job = start_ok(lab, body)
    assert job["agreementId"] == reuse["algorithm"]


# -- 7: two datasets -----------------------------------------------------------------------------------
def test_additional_dataset_reaches_the_algorithm(lab: oc.Lab, sandbox: dict[str, Any]) -> None:
    """§5 additionalDatasets; docs/reference/c2d-job-runtime.md §2 inputs/<didhex>/<i>."""
    user = lab.new_user({"dataset": 1, "dataset_raw": 1, "algorithm": 1})
    valid_until = int(time.time()) + 3600
    quote = lab.initialize(
        [lab.ref("dataset"), lab.ref("dataset_raw")], lab.ref("algorithm"), lab.free_env, valid_until
    )
    assert quote.status_code == 200, quote.text
    answers = quote.json()
    assert len(answers["datasets"]) == 2
    main_tx = lab.order(user, answers["datasets"][0], "dataset", lab.free_env)
    extra_tx = lab.order(user, answers["datasets"][1], "dataset_raw", lab.free_env)
    algo_tx = lab.order(user, answers["algorithm"], "algorithm", lab.free_env)
    body = lab.provider.start_body(
        user,
        lab.ref("dataset", main_tx),
        lab.ref("algorithm", algo_tx, algocustomdata={"column": "rain_mm"}),
        lab.free_env,
        additional=[lab.ref("dataset_raw", extra_tx)],
    )
    job = start_ok(lab, body)
    dids = [sandbox["assets"]["dataset"]["did"], sandbox["assets"]["dataset_raw"]["did"]]
    assert_fresh_job(job, user.address, sandbox["assets"]["algorithm"]["did"], dids)
    finished, _ = lab.provider.wait_finished(user.address, job["jobId"])
    assert finished["status"] == 70
    files = fetch_all_results(lab, user, finished)
    log = files["algorithm.log"].decode()
    for did in dids:
        assert f"reading {didhex(did)}/0" in log
    assert json.loads(files["summary.json"])["inputs"] == 2
    assert files["summary.csv"].decode() == expected_summary_csv("rain_mm", copies=2)


# -- 8: raw algorithms ---------------------------------------------------------------------------------
def test_raw_algorithm_runs(lab: oc.Lab, sandbox: dict[str, Any]) -> None:
    """§5 algorithm.meta; docs/reference/c2d-job-runtime.md §2: DIDS env, empty TRANSFORMATION_DID, no
    algoCustomData."""
    user = lab.new_user({"dataset_raw": 1})
    meta = raw_meta(RAW_PROBE)
    quote = lab.initialize([lab.ref("dataset_raw")], {"meta": meta}, lab.free_env, int(time.time()) + 3600)
    assert quote.status_code == 200, quote.text
    assert list(quote.json()) == ["datasets"]  # no "algorithm" answer for a raw algorithm
    tx = lab.order(user, quote.json()["datasets"][0], "dataset_raw", lab.free_env)
    body = lab.provider.start_body(
        user, lab.ref("dataset_raw", tx), {"meta": meta, "algocustomdata": {"ignored": True}}, lab.free_env
    )
    job = start_ok(lab, body)
    did = sandbox["assets"]["dataset_raw"]["did"]
    assert_fresh_job(job, user.address, "raw", [did])
    assert job["agreementId"] == tx
    finished, _ = lab.provider.wait_finished(user.address, job["jobId"])
    assert finished["status"] == 70
    assert finished["stopreq"] == 0
    files = fetch_all_results(lab, user, finished)
    assert files["probe.txt"] == b"raw algorithm ran\n"
    (line,) = [x for x in files["algorithm.log"].decode().splitlines() if x.startswith("probe: ")]
    assert json.loads(line.removeprefix("probe: ")) == {
        "dids": [didhex(did)],
        "algo_did": "",
        "inputs": [f"{didhex(did)}/0"],
    }


def test_raw_code_of_ten_characters_fails_algorithm_provisioning(lab: oc.Lab) -> None:
    """docs/reference/c2d-job-runtime.md §2: raw code ≤ 10 chars is not written → 32 'Algorithm
    provisioning failed'."""
    user = lab.new_user({"dataset_raw": 1})
    meta = raw_meta("print(123)")  # exactly 10 characters
    quote = lab.initialize([lab.ref("dataset_raw")], {"meta": meta}, lab.free_env, int(time.time()) + 3600)
    assert quote.status_code == 200, quote.text
    tx = lab.order(user, quote.json()["datasets"][0], "dataset_raw", lab.free_env)
    job = start_ok(
        lab, lab.provider.start_body(user, lab.ref("dataset_raw", tx), {"meta": meta}, lab.free_env)
    )
    finished, seen = lab.provider.wait_finished(user.address, job["jobId"])
    assert finished["status"] == 32
    assert finished["statusText"] == "Algorithm provisioning failed"
    assert finished["dateFinished"] is not None
    assert 40 not in seen
    assert 70 not in seen


# -- 9: stop and delete; agreementId reuse -------------------------------------------------------------
def test_stop_and_delete_a_running_job(lab: oc.Lab, sandbox: dict[str, Any]) -> None:
    """§2.7 stop/delete; §7 rule 12: a running job blocks its agreementId, a finished one does not.

    The stop answer and the late stop of a finished job follow operator-service ``routes.py``
    ``stop_compute_job`` (``stop_sql_job`` on every matching job, then ``get_sql_status``), forwarded verbatim
    by the Provider's ``routes/compute.py`` ``computeStop``.
    """
    user = lab.new_user({"dataset_raw": 1})
    did = sandbox["assets"]["dataset_raw"]["did"]
    sleeper = raw_meta("import time\nprint('sleeping', flush=True)\ntime.sleep(30)\n")
    quote = lab.initialize([lab.ref("dataset_raw")], {"meta": sleeper}, lab.free_env, int(time.time()) + 3600)
    tx = lab.order(user, quote.json()["datasets"][0], "dataset_raw", lab.free_env)
    job = start_ok(
        lab, lab.provider.start_body(user, lab.ref("dataset_raw", tx), {"meta": sleeper}, lab.free_env)
    )
    running = wait_status(lab, user.address, job["jobId"], 40)
    assert running["status"] == 40

    # the operator refuses a second job on the same order while the first one runs
    twice = lab.provider.start(
        lab.provider.start_body(user, lab.ref("dataset_raw", tx), {"meta": sleeper}, lab.free_env)
    )
    assert twice.status_code == 400
    assert twice.json() == {"error": "`agreementId` already in use for other job."}
    # §6: the nonce is stored after forwarding, whatever the operator answered
    twice_nonce = json.loads(twice.request.body)["nonce"]
    assert lab.provider.nonce(user.address).json() == {"nonce": twice_nonce}

    stop = lab.provider.stop(lab.provider.stop_params(user, job["jobId"], did))
    assert stop.status_code == 200, stop.text
    # operator-service (routes.py stop_compute_job) sets stopreq=1 first, then reads the status back:
    # the answer already shows stopreq 1, the status unchanged
    (as_read_back,) = stop.json()
    assert as_read_back["jobId"] == job["jobId"]
    assert as_read_back["status"] == 40
    assert as_read_back["stopreq"] == 1
    assert as_read_back["dateFinished"] is None
    stopped_at = time.monotonic()
    finished, _ = lab.provider.wait_finished(user.address, job["jobId"], timeout=15)
    assert time.monotonic() - stopped_at < 10
    assert finished["status"] == 70
    assert finished["stopreq"] == 1
    assert [r["type"] for r in finished["results"]] == ["algorithmLog", "configrationLog", "publishLog"]

    delete = lab.provider.delete(lab.provider.stop_params(user, job["jobId"], did))
    assert delete.status_code == 200
    assert delete.text == '""'
    # §1: without a query string the JSON body is read
    delete = requests.delete(
        lab.provider.base_url + "/api/services/compute",
        json=lab.provider.stop_params(user, job["jobId"], did),
        timeout=30,
    )
    assert delete.status_code == 200
    assert delete.text == '""'
    assert delete.json() == ""
    # delete is a no-op: the job is still listed, unchanged
    assert lab.provider.status(user.address, job["jobId"]).json() == [finished]

    # the Provider keeps no record of used orders: the finished job's order starts another one
    quick = raw_meta("print('second job on the same order')")
    again = start_ok(
        lab, lab.provider.start_body(user, lab.ref("dataset_raw", tx), {"meta": quick}, lab.free_env)
    )
    assert again["agreementId"] == tx
    assert again["jobId"] != job["jobId"]
    done, _ = lab.provider.wait_finished(user.address, again["jobId"])
    assert (done["status"], done["stopreq"]) == (70, 0)

    # a late stop marks the finished job for good (operator-service data_store.py stop_sql_job: "UPDATE jobs
    # SET stopreq=1 WHERE workflowId=%s", no condition on dateFinished), answered as read back; nothing else
    late = lab.provider.stop(lab.provider.stop_params(user, again["jobId"], did))
    assert late.status_code == 200, late.text
    assert late.json() == [{**done, "stopreq": 1}]
    time.sleep(1)
    assert lab.provider.status(user.address, again["jobId"]).json() == [{**done, "stopreq": 1}]


# -- 10: paid environment -------------------------------------------------------------------------------
def test_provider_fee_amount_is_rounded_as_the_provider_does(lab: oc.Lab) -> None:
    """§4 amount, with the Provider's rounding: ``utils/provider_fees.py`` ``get_provider_fee_amount``
    computes ``float(seconds * float(priceMin) / 60)`` and returns ``utils/currency.py``
    ``parse_units(str(amount), decimals)`` (the float's text as a ``Decimal``, truncated). 599 s at 0.5
    OCEAN/minute gives ``4.991666666666666`` → ``4991666666666666000`` (exact arithmetic: ``…666``)."""
    from ocean_sandbox.provider import fee_units

    expected = 4991666666666666000
    assert fee_units(599, "0.5", 18) == expected
    offset = requests.get(lab.provider.base_url + "/sandbox/admin/clock", timeout=30).json()["offset"]
    for _attempt in range(3):
        # validUntil 600 s after the Provider's current second, sent early in that second: 599 whole seconds
        while not 0.02 < (time.time() + offset) % 1 < 0.2:
            time.sleep(0.01)
        valid_until = int(time.time() + offset) + 600
        response = lab.initialize([lab.ref("dataset")], lab.ref("algorithm"), lab.paid_env, valid_until)
        assert response.status_code == 200, response.text
        amount = int(response.json()["datasets"][0]["providerFee"]["providerFeeAmount"])
        if amount == expected:
            return
        assert amount == fee_units(598, "0.5", 18), amount  # the quote crossed a second boundary: try again
    pytest.fail("no quote was computed within the second it was asked in")


def test_paid_environment_fee_is_charged_once(lab: oc.Lab, sandbox: dict[str, Any]) -> None:
    """§4 fee formula + one carrier; docs/reference/contracts-and-payment.md §2.1 approvals; §7 rule 11/12."""
    user = lab.new_user({"dataset": 2, "algorithm": 1}, ocean=100)
    before_quote = time.time()
    valid_until = int(before_quote) + 600
    response = lab.initialize([lab.ref("dataset")], lab.ref("algorithm"), lab.paid_env, valid_until)
    after_quote = time.time()
    assert response.status_code == 200, response.text
    quote = response.json()
    fee = quote["datasets"][0]["providerFee"]
    amount = int(fee["providerFeeAmount"])
    # amount = whole seconds left * 0.5 OCEAN / 60, in 18-decimal units
    low = int(math.floor(valid_until - after_quote) * 10**18 // 120)
    high = int(math.ceil(valid_until - before_quote) * 10**18 // 120)
    assert low - 10**16 <= amount <= high + 10**16, amount
    assert fee["providerFeeToken"] == sandbox["addresses"]["Ocean"]
    assert oc.provider_data(fee)["environment"] == "ocean-compute-paid"
    assert quote["algorithm"]["providerFee"]["providerFeeAmount"] == "0"
    assert oc.provider_fee_signer(fee) == sandbox["provider_address"]

    datatoken = quote["datasets"][0]["datatoken"]
    consumer = lab.env_consumer[lab.paid_env]
    index = lab.assets["dataset"]["service_index"]
    unapproved = oc.start_order(lab.chain, user.key, datatoken, consumer, index, fee)
    assert int(unapproved["status"], 16) == 0
    assert oc.balance_of(lab.chain, datatoken, user.address) == 2 * oc.ONE_TOKEN

    provider_before = oc.balance_of(lab.chain, lab.ocean, sandbox["provider_address"])
    user_before = oc.balance_of(lab.chain, lab.ocean, user.address)
    oc.ok(oc.approve(lab.chain, user.key, lab.ocean, datatoken, amount))
    dataset_tx = oc.ok(oc.start_order(lab.chain, user.key, datatoken, consumer, index, fee))
    assert oc.balance_of(lab.chain, lab.ocean, sandbox["provider_address"]) - provider_before == amount
    assert user_before - oc.balance_of(lab.chain, lab.ocean, user.address) == amount
    algo_tx = lab.order(user, quote["algorithm"], "algorithm", lab.paid_env)

    body = lab.provider.start_body(
        user, lab.ref("dataset", dataset_tx), lab.ref("algorithm", algo_tx), lab.paid_env
    )
    job = start_ok(lab, body)
    # only the dataset paid enough: it is the payer, its order the agreementId
    assert job["agreementId"] == dataset_tx
    finished, _ = lab.provider.wait_finished(user.address, job["jobId"])
    assert finished["status"] == 70


def test_paid_fee_wraps_every_24_hours(lab: oc.Lab) -> None:
    """§4: amount uses ``timedelta(validUntil - now).seconds``, so one day + 10 min costs 10 minutes."""
    now = time.time()
    response = lab.initialize(
        [lab.ref("dataset")], lab.ref("algorithm"), lab.paid_env, int(now) + 86_400 + 600
    )
    assert response.status_code == 200, response.text
    amount = int(response.json()["datasets"][0]["providerFee"]["providerFeeAmount"])
    assert amount == pytest.approx(600 * 10**18 // 120, abs=2 * 10**16)
