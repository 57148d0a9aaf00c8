"""The Ocean Node wire client and the node status mapping (no chain, no sandbox).

Facts under test come from docs/reference/ocean-node-api.md (cited as §n). HTTP is served by
requests_mock; signatures are checked by recovering them with eth-account, independently of the client.
"""

from __future__ import annotations

import io
import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests_mock
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak

from airflow_provider_ocean.exceptions import OceanJobNotFoundError, OceanValidationError
from airflow_provider_ocean.models import JobStatus
from airflow_provider_ocean.signing import NonceAllocator, Signer
from airflow_provider_ocean.wire.errors import OceanNodeError, parse_node_error, retry_after_seconds
from airflow_provider_ocean.wire.node_payloads import (
    environment_from_node,
    fill_resources,
    full_job_id,
    job_cost,
    job_status_from_node,
    node_results,
    split_job_id,
    supports_free,
)
from airflow_provider_ocean.wire.ocean_node import (
    BACKEND_OCEAN_NODE,
    BACKEND_PROVIDER_V4,
    OceanNodeClient,
    detect_backend,
    node_message,
)

# §4 test vector
VECTOR_KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
VECTOR_ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
VECTOR_MESSAGE = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c231700000000003startCompute"
VECTOR_HASH = "0x5bfdc307112cad82513422ac5abd071b94aef51e883d8fa4b37b14bf8fe0fe11"
VECTOR_SIGNATURE = (
    "0xc152db8ce450e422f753259ce471206f7048cd3ea5e35fe72b52238006d93d255f9421e6f0acd591d12899f0d991066bc"
    "f9d8721d1eb56caf5c5fe3c02de16161b"
)
URL = "http://node.test:8001"
ENGINE = "a1b2c3"
ENV_ID = f"{ENGINE}-" + "9f8e" * 16
BARE = "5e1f" * 16
FULL = f"{ENGINE}-{BARE}"
OCEAN = "0x2473f4F7bf40ed9310838edFCA6262C17A59DF64"
NODE = "0xA78deb2Fa79463945C247991075E2a0e98Ba7A09"
ROOT = {
    "nodeId": "16Uiu2HAmExample",
    "chainIds": ["8996"],
    "providerAddress": NODE,
    "nodePublicKey": "0x02ab",
    "serviceEndpoints": {
        "computeStart": ["POST", "/api/services/compute"],
        "freeCompute": ["POST", "/api/services/freeCompute"],
        "computeStatus": ["GET", "/api/services/compute"],
        "computeStop": ["PUT", "/api/services/compute"],
        "computeResult": ["GET", "/api/services/computeResult"],
        "computeStreamableLogs": ["GET", "/api/services/computeStreamableLogs"],
        "computeEnvironments": ["GET", "/api/services/computeEnvironments"],
        "initializeCompute": ["POST", "/api/services/initializeCompute"],
        "nonce": ["GET", "/api/services/nonce"],
    },
    "software": "Ocean-Node",
    "version": "0.0.1",
}
ENV = {
    "id": ENV_ID,
    "consumerAddress": NODE,
    "fees": {
        "8996": [{"feeToken": OCEAN, "prices": [{"id": "cpu", "price": 1}, {"id": "ram", "price": 0.5}]}]
    },
    "resources": [
        {"id": "cpu", "total": 4, "min": 1, "max": 2, "inUse": 0},
        {"id": "ram", "total": 8, "min": 1, "max": 4, "inUse": 0},
        {"id": "disk", "total": 10, "min": 0, "max": 5, "inUse": 0},
    ],
    "minJobDuration": 60,
    "maxJobDuration": 3600,
    "free": {"maxJobDuration": 60, "resources": [{"id": "cpu", "max": 1}, {"id": "ram", "max": 1}]},
}
RESULTS = [
    {"filename": "image.log", "filesize": 10, "type": "imageLog", "index": 0},
    {"filename": "algorithm.log", "filesize": 20, "type": "algorithmLog", "index": 1},
    {"filename": "outputs.tar", "filesize": 2048, "type": "output", "index": 2},
]


def recover(message: str, signature: str) -> str:
    return Account.recover_message(encode_defunct(primitive=keccak(text=message)), signature=signature)


def status_entry(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "owner": VECTOR_ADDRESS,
        "jobId": BARE,
        "dateCreated": "1700000000.1",
        "dateFinished": None,
        "status": 40,
        "statusText": "Running algorithm ",
        "results": [],
        "environment": ENV_ID,
        "maxJobDuration": 600,
        "stopRequested": False,
        "terminationDetails": {"exitCode": None, "OOMKilled": None},
        "algoDuration": 0,
        "payment": None,
    }
    entry.update(overrides)
    return entry


def finished(code: int = 71, exit_code: int | None = 0, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "status": code,
        "statusText": {71: "Job settling", 70: "Job finished"}.get(code, "x"),
        "dateFinished": "1700000100.5",
        "results": RESULTS,
        "terminationDetails": {"exitCode": exit_code, "OOMKilled": False},
        "algoDuration": 12.5,
    }
    values.update(overrides)
    return status_entry(**values)


@pytest.fixture
def signer() -> Signer:
    return Signer(VECTOR_KEY)


@pytest.fixture
def node() -> requests_mock.Mocker:
    with requests_mock.Mocker() as mock:
        mock.get(URL + "/", json=ROOT)
        mock.get(URL + "/api/services/nonce", json={"nonce": "0"})
        yield mock


def client(**kwargs: Any) -> OceanNodeClient:
    kwargs.setdefault("nonces", NonceAllocator(clock=lambda: 1_700_000_000_000))
    kwargs.setdefault("sleep", lambda _s: None)
    kwargs.setdefault("retry_delay", 0)
    return OceanNodeClient(URL, **kwargs)


# -- signatures and nonces (§4) -----------------------------------------------------------------------
def test_signature_test_vector(signer: Signer) -> None:
    message = node_message(signer.address, "1700000000003", "startCompute")
    assert message == VECTOR_MESSAGE
    assert "0x" + keccak(text=message).hex() == VECTOR_HASH
    assert signer.sign(message) == VECTOR_SIGNATURE


def test_message_uses_the_integer_nonce_and_the_exact_address() -> None:
    assert node_message(VECTOR_ADDRESS, 5, "stopCompute") == f"{VECTOR_ADDRESS}5stopCompute"
    with pytest.raises(ValueError):
        node_message(VECTOR_ADDRESS, "123.5", "stopCompute")  # the node would truncate and fail


def test_nonce_rule_is_max_of_clock_stored_plus_one_and_last_plus_one(
    node: requests_mock.Mocker, signer: Signer
) -> None:
    node.get(URL + "/api/services/nonce", [{"json": {"nonce": "0"}}, {"json": {"nonce": "1800000000000"}}])
    node.put(URL + "/api/services/compute", json=[])
    c = client()
    c.stop_job(signer, FULL)
    c.stop_job(signer, FULL)
    c.stop_job(signer, FULL)
    sent = [dict(parse_qsl(urlsplit(r.url).query)) for r in node.request_history if r.method == "PUT"]
    nonces = [int(q["nonce"]) for q in sent]
    assert nonces == [1_700_000_000_000, 1_800_000_000_001, 1_800_000_000_002]
    for query in sent:
        assert recover(f"{signer.address}{query['nonce']}stopCompute", query["signature"]) == signer.address


def test_a_refused_nonce_is_never_reused_and_start_resigns_once(
    node: requests_mock.Mocker, signer: Signer
) -> None:
    node.post(
        URL + "/api/services/freeCompute",
        [
            {"status_code": 401, "text": '"nonce: 1700000000000 is not a valid nonce"'},
            {"json": [status_entry(status=0, statusText="Job started", jobId=FULL)]},
        ],
    )
    job = client().start_free_compute(signer, environment=ENV_ID, algorithm={"meta": {}}, datasets=[])
    bodies = [r.json() for r in node.request_history if r.method == "POST"]
    assert [b["nonce"] for b in bodies] == ["1700000000000", "1700000000001"]
    assert job["jobId"] == FULL
    for body in bodies:
        assert (
            recover(f"{signer.address}{body['nonce']}freeStartCompute", body["signature"]) == signer.address
        )


def test_nonce_error_on_stop_is_not_retried(node: requests_mock.Mocker, signer: Signer) -> None:
    node.put(URL + "/api/services/compute", status_code=500, text="Internal Server Error")
    with pytest.raises(OceanNodeError) as caught:
        client().stop_job(signer, FULL)
    assert caught.value.status == 500
    assert len([r for r in node.request_history if r.method == "PUT"]) == 1


def test_auth_token_is_sent_raw_instead_of_a_signature(node: requests_mock.Mocker, signer: Signer) -> None:
    node.put(URL + "/api/services/compute", json=[])
    client(auth_token="jwt.token.value").stop_job(signer, FULL)
    request = next(r for r in node.request_history if r.method == "PUT")
    assert request.headers["Authorization"] == "jwt.token.value"  # not "Bearer ..."
    query = dict(parse_qsl(urlsplit(request.url).query))
    assert "signature" not in query
    assert query["consumerAddress"] == signer.address


# -- discovery ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("root", "expected"),
    [
        (ROOT, BACKEND_OCEAN_NODE),
        ({"nodeId": "x"}, BACKEND_OCEAN_NODE),
        ({"software": "Provider", "providerAddresses": {"8996": NODE}}, BACKEND_PROVIDER_V4),
        ({"providerAddresses": {}}, BACKEND_PROVIDER_V4),
        ({"software": "something"}, None),
    ],
)
def test_detect_backend(root: dict[str, Any], expected: str | None) -> None:
    assert detect_backend(root) == expected


def test_root_facts(node: requests_mock.Mocker) -> None:
    c = client()
    assert c.backend == BACKEND_OCEAN_NODE
    assert c.node_address == NODE
    assert c.chain_ids == [8996]  # announced as strings
    assert c.endpoint("freeCompute") == ("POST", URL + "/api/services/freeCompute")


def test_environments_are_a_flat_list(node: requests_mock.Mocker) -> None:
    node.get(URL + "/api/services/computeEnvironments", json=[ENV])
    (env,) = client().environments(8996)
    assert node.last_request.qs == {"chainid": ["8996"]}
    assert env.id == ENV_ID
    assert env.consumer_address == NODE
    assert env.fee_token == OCEAN
    assert env.price_min == pytest.approx(1.5)  # 1 cpu + 1 ram at their minimum
    assert supports_free(env)
    assert env.max_job_duration == 3600


# -- errors (§5) -------------------------------------------------------------------------------------
def test_error_shapes() -> None:
    error = parse_node_error(400, '"Missing one ( \\"environment\\" ) or more required field(s)"')
    assert error.detail.startswith('Missing one ( "environment" )')
    assert parse_node_error(500, "Internal Server Error").detail == "Internal Server Error"
    assert (
        parse_node_error(500, "<html><body>Internal Server Error</body></html>").detail
        == "Internal Server Error"
    )
    assert parse_node_error(401, '{"error": "Invalid token"}').detail == "Invalid token"
    limited = parse_node_error(429, "Rate limit exceeded. Try again in 17 seconds.")
    assert limited.is_rate_limited
    assert limited.retry_after == 17
    funds = parse_node_error(400, '"User 0xabc does not have enough funds"')
    assert "deposit" in (funds.hint or "")
    nonce = parse_node_error(401, '"nonce: 5 is not a valid nonce"')
    assert nonce.is_nonce_error
    assert not funds.is_nonce_error
    assert retry_after_seconds("no number") is None


def test_signatures_never_appear_in_error_messages() -> None:
    error = parse_node_error(400, json.dumps(f"bad signature {VECTOR_SIGNATURE}"))
    assert VECTOR_SIGNATURE[2:] not in str(error)


def test_429_is_waited_out_with_the_announced_seconds(node: requests_mock.Mocker, signer: Signer) -> None:
    slept: list[float] = []
    node.get(
        URL + "/api/services/compute",
        [
            {"status_code": 429, "text": "Rate limit exceeded. Try again in 3 seconds."},
            {"json": [status_entry()]},
        ],
    )
    job = client(sleep=slept.append).job_status(signer.address, FULL)
    assert job.job_id == FULL
    assert len(slept) == 1
    assert 3 <= slept[0] <= 3.5


def test_429_on_a_signed_command_is_resent_with_a_fresh_nonce(
    node: requests_mock.Mocker, signer: Signer
) -> None:
    node.put(
        URL + "/api/services/compute",
        [{"status_code": 429, "text": "Rate limit exceeded. Try again in 1 seconds."}, {"json": []}],
    )
    client().stop_job(signer, FULL)
    nonces = [
        dict(parse_qsl(urlsplit(r.url).query))["nonce"] for r in node.request_history if r.method == "PUT"
    ]
    assert len(nonces) == 2
    assert nonces[0] != nonces[1]


def test_429_gives_up_after_the_wait_budget(node: requests_mock.Mocker, signer: Signer) -> None:
    node.get(
        URL + "/api/services/compute", status_code=429, text="Rate limit exceeded. Try again in 50 seconds."
    )
    with pytest.raises(OceanNodeError) as caught:
        client(max_rate_limit_wait=120).job_status(signer.address, FULL)
    assert caught.value.status == 429
    assert len([r for r in node.request_history if "compute" in r.url]) == 3


# -- job ids and statuses (§2.3, §3) --------------------------------------------------------------------
def test_job_id_prefix_is_kept() -> None:
    assert split_job_id(FULL) == (ENGINE, BARE)
    assert split_job_id(BARE) == (None, BARE)
    assert full_job_id(BARE, known=FULL) == FULL
    assert full_job_id(BARE, environment=ENV_ID) == FULL
    assert full_job_id(FULL) == FULL


def test_status_query_sends_the_full_id_and_restores_it(node: requests_mock.Mocker, signer: Signer) -> None:
    node.get(URL + "/api/services/compute", json=[status_entry()])
    c = client()
    job = c.job_status(signer.address, FULL)
    assert node.last_request.qs["jobid"] == [FULL.lower()]
    assert job.job_id == FULL
    assert job.status == 40
    assert not job.is_terminal
    assert [j.job_id for j in c.list_jobs(signer.address)] == [FULL]
    with pytest.raises(OceanValidationError):
        c.get_status(job_id=BARE)  # would query every engine without a job filter


def test_unknown_job(node: requests_mock.Mocker, signer: Signer) -> None:
    node.get(URL + "/api/services/compute", json=[])
    with pytest.raises(OceanJobNotFoundError):
        client().job_status(signer.address, FULL)


def test_stop_parameters_go_in_the_query_string(node: requests_mock.Mocker, signer: Signer) -> None:
    node.put(URL + "/api/services/compute", json=[status_entry(stopRequested=True)])
    (job,) = client().stop_job(signer, FULL)
    request = node.last_request
    assert request.body is None
    assert dict(parse_qsl(urlsplit(request.url).query))["jobId"] == FULL
    assert job["jobId"] == FULL


@pytest.mark.parametrize(
    ("entry", "previous", "outcome", "status"),
    [
        (finished(71, 0), None, "succeeded", 70),
        (finished(70, 0), None, "succeeded", 70),
        (finished(71, 1), None, "failed", 71),
        (finished(70, 1), None, "failed", 71),
        (finished(70, 0, results=RESULTS[:2]), None, "failed", 71),  # no outputs.tar
        (finished(71, 0, terminationDetails={"exitCode": 0, "OOMKilled": True}), None, "failed", 71),
        (finished(70, 0), 41, "failed", 41),  # the cron replaced the failure code
        (status_entry(status=41, dateFinished="1.0"), None, "failed", 41),
        (status_entry(status=31, dateFinished="1.0"), None, "failed", 31),
        (status_entry(status=2), None, "failed", 2),
        (finished(71, 143, stopRequested=True), None, "stopped", 71),
        (finished(71, 137, algoDuration=600), None, "timed_out", 71),
        (status_entry(status=0), None, "running", 0),
        (status_entry(status=10), None, "running", 10),
        (status_entry(status=60), None, "running", 60),
    ],
)
def test_status_mapping(entry: dict[str, Any], previous: int | None, outcome: str, status: int) -> None:
    before = JobStatus(job_id=FULL, status=previous) if previous is not None else None
    job = job_status_from_node(entry, job_id=FULL, previous=before)
    assert (job.outcome, job.status) == (outcome, status)
    assert job.job_id == FULL
    # the verdict survives the XCom / trigger-event round trip through the v4 model
    again = JobStatus.from_dict(json.loads(json.dumps(job.to_dict())))
    assert again.outcome == outcome
    assert again.is_succeeded == (outcome == "succeeded")


def test_results_keep_the_explicit_index() -> None:
    shuffled = [RESULTS[2], RESULTS[0]]
    parsed = node_results(shuffled)
    assert [(r.index, r.type) for r in parsed] == [(2, "output"), (0, "imageLog")]


def test_download_result_by_index(node: requests_mock.Mocker, signer: Signer) -> None:
    node.get(
        URL + "/api/services/computeResult",
        content=b"tar-bytes",
        headers={"Content-Type": "application/octet-stream"},
    )
    sink = io.BytesIO()
    got = client().download_result(signer, FULL, 2, sink)
    query = dict(parse_qsl(urlsplit(node.last_request.url).query))
    assert query["index"] == "2"
    assert query["jobId"] == FULL
    assert recover(f"{signer.address}{query['nonce']}getComputeResult", query["signature"]) == signer.address
    assert sink.getvalue() == b"tar-bytes"
    assert got.bytes_written == 9


def test_stream_logs_yields_lines_and_ends_quietly_when_not_running(
    node: requests_mock.Mocker, signer: Signer
) -> None:
    node.get(
        URL + "/api/services/computeStreamableLogs",
        [
            {"content": b"line one\nline two\npartial"},
            {"status_code": 404, "text": "Job not found or not running"},
        ],
    )
    c = client()
    assert list(c.stream_logs(signer, FULL)) == ["line one", "line two", "partial"]
    assert list(c.stream_logs(signer, FULL)) == []


def test_start_body(node: requests_mock.Mocker, signer: Signer) -> None:
    node.post(URL + "/api/services/compute", json=[status_entry(status=0, jobId=FULL)])
    client().start_compute(
        signer,
        environment=ENV_ID,
        algorithm={"meta": {"rawcode": "print(1)"}},
        datasets=[{"fileObject": {"type": "url", "url": "https://x/d.csv", "method": "get"}}],
        max_job_duration=600,
        payment={"chainId": 8996, "token": OCEAN},
        resources=[{"id": "cpu", "amount": 1}],
        queue_max_wait_time=0,
        additional_viewers=[NODE],
    )
    body = node.last_request.json()
    assert body["consumerAddress"] == signer.address
    assert body["payment"] == {"chainId": 8996, "token": OCEAN}
    assert body["maxJobDuration"] == 600
    assert body["queueMaxWaitTime"] == 0
    assert body["resources"] == [{"id": "cpu", "amount": 1}]
    assert recover(f"{signer.address}{body['nonce']}startCompute", body["signature"]) == signer.address
    with pytest.raises(OceanValidationError):
        client().start_compute(
            signer, environment=ENV_ID, algorithm={}, datasets=[], max_job_duration=0, payment={}
        )


# -- resources and cost (§6) ---------------------------------------------------------------------------
def test_fill_resources_and_cost() -> None:
    filled = fill_resources(ENV, [{"id": "cpu", "amount": 2}])
    assert filled == [{"id": "cpu", "amount": 2}, {"id": "ram", "amount": 1}, {"id": "disk", "amount": 0}]
    with pytest.raises(OceanValidationError, match="Not enough cpu resources. Requested 3, but max is 2"):
        fill_resources(ENV, [{"id": "cpu", "amount": 3}])
    with pytest.raises(OceanValidationError, match="Not enough cpu resources"):
        fill_resources(ENV, [{"id": "cpu", "amount": 2}], free=True)
    with pytest.raises(OceanValidationError, match="does not support free jobs"):
        fill_resources({**ENV, "free": None}, [], free=True)
    # (2 × 1 + 1 × 0.5) per minute × ceil(max(90, 60) / 60) = 2.5 × 2
    assert job_cost(ENV, 8996, OCEAN, filled, 90) == 5
    assert job_cost(ENV, 8996, OCEAN, filled, 10) == pytest.approx(2.5)  # minJobDuration applies
    with pytest.raises(OceanValidationError):
        job_cost(ENV, 1, OCEAN, filled, 60)
    assert environment_from_node(ENV, 1).price_min == 0
