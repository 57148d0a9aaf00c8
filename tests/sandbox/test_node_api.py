"""The sandbox's Ocean Node personality over HTTP, driven by an independent client (node_client.py).

Expected values come from docs/reference/ocean-node-api.md (cited as §n; the Aquarius-compatible routes:
§10) and docs/reference/c2d-job-runtime.md §5. Every
test that signs uses a fresh wallet funded from ``other``, so nonces, escrow balances and job lists of
different tests never interact.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from typing import Any

import pytest
import requests
from eth_abi import decode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_keys import keys
from eth_utils import keccak, to_checksum_address

from airflow_provider_ocean.wire.log_frames import decode_chunks, is_frame_header, split_lines
from tests.node_fixtures import NODE_TEST_RATE_LIMIT, node_admin
from tests.sandbox import node_client as nc
from tests.sandbox import ocean_client as oc

pytestmark = pytest.mark.chain

ONE = 10**18
HEX64 = re.compile(r"^0x[0-9a-f]{64}$")  # v3.1.0 ids: 0x<sha256> (ocean_sandbox/node_release.py)
LIST_INPUTS = (
    "import json, os\n"
    "inputs = os.environ['INPUTS']\n"
    "names = sorted(os.listdir(inputs))\n"
    "env = sorted(k for k in os.environ if k in ('DIDS', 'TRANSFORMATION_DID', 'secret', 'MODE'))\n"
    "custom = json.load(open(os.path.join(inputs, 'algoCustomData.json')))\n"
    "os.makedirs(os.path.join(os.environ['OUTPUTS'], 'sub'), exist_ok=True)\n"
    "json.dump({'inputs': names, 'env': env, 'custom': custom, 'mode': os.environ.get('MODE')},\n"
    "          open(os.path.join(os.environ['OUTPUTS'], 'sub', 'report.json'), 'w'))\n"
    "print('listed', names)\n"
)


class World:
    """The node sandbox seen through the independent client."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self.url = info["provider_url"]
        self.node = nc.Node(self.url)
        self.chain = oc.Chain(info["rpc_url"], int(info["chain_id"]))
        self.funder = oc.Wallet.of(info["other"])
        self.ocean = info["addresses"]["Ocean"]
        self.escrow = info["addresses"]["Escrow"]
        self.node_address = info["provider_address"]
        self.free_env = info["environments"]["free"]
        self.paid_env = info["environments"]["paid"]

    def user(self, ocean: int = 0, datatokens: dict[str, int] | None = None) -> oc.Wallet:
        wallet = oc.Wallet.create()
        oc.ok(self.chain.send(self.funder.key, wallet.address, value=10**18, gas=21_000))
        if ocean:
            oc.ok(oc.transfer(self.chain, self.funder.key, self.ocean, wallet.address, ocean * ONE))
        for asset, count in (datatokens or {}).items():
            token = self.info["assets"][asset]["datatoken"]
            oc.ok(oc.transfer(self.chain, self.funder.key, token, wallet.address, count * ONE))
        return wallet

    def free_body(self, wallet: oc.Wallet, algorithm: dict[str, Any] | None = None, **extra: Any) -> dict:
        body = {
            "environment": self.free_env,
            "algorithm": algorithm or nc.raw_algorithm("print('hello')"),
            "datasets": [nc.url_dataset(self.url)],
            **extra,
        }
        return self.node.signed_body(wallet, "freeStartCompute", body)

    def paid_body(self, wallet: oc.Wallet, **extra: Any) -> dict:
        body = {
            "environment": self.paid_env,
            "algorithm": nc.raw_algorithm("print('paid')"),
            "datasets": [nc.url_dataset(self.url)],
            "maxJobDuration": 60,
            "payment": {"chainId": int(self.info["chain_id"]), "token": self.ocean},
            **extra,
        }
        return self.node.signed_body(wallet, "startCompute", body)


@pytest.fixture(scope="module")
def world(node_sandbox: dict[str, Any]) -> World:
    return World(node_sandbox)


# -- §1 discovery, §6 environments -----------------------------------------------------------------------
def test_root(world: World) -> None:
    root = world.node.get("/").json()
    assert root["software"] == "Ocean-Node"
    assert root["version"] == "0.0.1"
    assert root["chainIds"] == [str(world.info["chain_id"])]
    assert root["providerAddress"] == world.node_address
    assert root["nodeId"].startswith("16Uiu2HAm")
    # v3.1.0 serialises the key's bytes as a JSON object (ocean_sandbox/node_release.py)
    shown = root["nodePublicKey"]
    assert sorted(shown, key=int) == [str(i) for i in range(33)]
    public = keys.PublicKey.from_compressed_bytes(bytes(shown[str(i)] for i in range(33)))
    assert public.to_checksum_address() == world.node_address
    endpoints = root["serviceEndpoints"]
    assert endpoints["freeCompute"] == ["POST", "/api/services/freeCompute"]
    assert endpoints["computeStreamableLogs"] == ["GET", "/api/services/computeStreamableLogs"]
    assert endpoints["computeStop"] == ["PUT", "/api/services/compute"]
    assert "providerAddresses" not in root


def test_environments(world: World) -> None:
    envs = world.node.get("/api/services/computeEnvironments").json()
    assert isinstance(envs, list)
    assert [e["id"] for e in envs] == [world.free_env, world.paid_env]
    prefixes = {e["id"].split("-", 1)[0] for e in envs}
    assert len(prefixes) == 1
    for env in envs:
        prefix, rest = env["id"].split("-", 1)
        assert HEX64.match(prefix)
        assert HEX64.match(rest)
        assert env["consumerAddress"] == world.node_address
        (fee,) = env["fees"][str(world.info["chain_id"])]
        assert fee["feeToken"] == world.ocean
        assert {p["id"] for p in fee["prices"]} == {"cpu", "ram", "disk"}
        ids = [r["id"] for r in env["resources"]]
        assert ids == ["cpu", "ram", "disk"]
        for resource in env["resources"]:
            assert {"total", "min", "max", "inUse"} <= set(resource)
    assert envs[0]["free"]["resources"][0]["id"] == "cpu"
    assert "free" not in envs[1]
    assert world.node.get("/api/services/computeEnvironments", chainId="1").json() == []
    assert (
        len(world.node.get("/api/services/computeEnvironments", chainId=str(world.info["chain_id"])).json())
        == 2
    )


# -- §2.1 free job end to end, c2d-job-runtime §5 ---------------------------------------------------------
def test_free_job_end_to_end(world: World) -> None:
    user = world.user()
    algorithm = nc.raw_algorithm(LIST_INPUTS, envs={"MODE": "fast"})
    body = world.free_body(user, algorithm, metadata={"run": 1})
    response = world.node.free_start(body)
    assert response.status_code == 200, response.text
    (job,) = response.json()
    prefix, bare = job["jobId"].split("-", 1)
    assert prefix == world.free_env.split("-", 1)[0]
    assert HEX64.match(bare)
    assert job["status"] == 10  # v3.1.0: the start answer is already at the image step
    assert job["statusText"] == "Pulling algorithm image"
    assert job["isFree"] is True
    assert job["payment"] is None
    assert job["owner"] == user.address
    assert job["metadata"] == {"run": 1}
    assert job["terminationDetails"] == {"exitCode": None, "OOMKilled": None}
    assert world.node.nonce(user.address).json() == {"nonce": body["nonce"]}

    entry, seen = world.node.wait(job["jobId"])
    assert entry["jobId"] == bare  # status echoes the bare hash
    assert entry["status"] in (70, 71)
    assert seen[0] == 10
    assert 40 in seen
    assert 60 in seen  # "Publishing results", between the run and 71
    assert entry["terminationDetails"] == {"exitCode": 0, "OOMKilled": False}
    assert float(entry["algoDuration"]) > 0
    types = [r["type"] for r in entry["results"]]
    assert types == ["imageLog", "configurationLog", "algorithmLog", "output"]  # no publish.log
    assert [r["index"] for r in entry["results"]] == [0, 1, 2, 3]
    by_type = {r["type"]: r for r in entry["results"]}
    assert by_type["output"]["filename"] == "outputs.tar"

    tar_bytes = world.node.result(user, job["jobId"], by_type["output"]["index"])
    assert tar_bytes.status_code == 200
    assert tar_bytes.headers["Content-Type"] == "application/octet-stream"
    assert len(tar_bytes.content) == by_type["output"]["filesize"]
    with tarfile.open(fileobj=io.BytesIO(tar_bytes.content)) as archive:
        names = archive.getnames()
        report = json.load(archive.extractfile("outputs/sub/report.json"))  # subdirectories are kept
    assert "outputs/sub/report.json" in names
    assert report == {
        "inputs": ["algoCustomData.json", "weather.csv"],  # flat, named by the URL's basename
        "env": ["MODE"],  # only algorithm.envs, no DIDS / TRANSFORMATION_DID / secret
        "custom": {},  # algoCustomData.json is always written
        "mode": "fast",
    }
    log = world.node.result(user, job["jobId"], by_type["algorithmLog"]["index"])
    assert log.headers["Content-Type"].startswith("text/plain")
    # Docker's multiplexed frames, as a node without TTY serves them; the client's decoder reads them
    assert is_frame_header(log.content)
    assert len(log.content) == by_type["algorithmLog"]["filesize"]
    assert "listed" in b"".join(decode_chunks([log.content])).decode()
    configuration = world.node.result(user, job["jobId"], by_type["configurationLog"]["index"])
    assert not is_frame_header(configuration.content)  # the node's own logs are plain text

    # the payment cron moves 71 to 70 for free jobs too
    final, _ = world.node.wait(job["jobId"], done=lambda e: e["status"] == 70)
    assert final["dateFinished"] == entry["dateFinished"]


def test_custom_data_is_written(world: World) -> None:
    user = world.user()
    algorithm = nc.raw_algorithm(LIST_INPUTS, algocustomdata={"epochs": 3})
    response = world.node.free_start(world.free_body(user, algorithm))
    job_id = response.json()[0]["jobId"]
    entry, _ = world.node.wait(job_id)
    index = next(r["index"] for r in entry["results"] if r["type"] == "output")
    with tarfile.open(fileobj=io.BytesIO(world.node.result(user, job_id, index).content)) as archive:
        assert json.load(archive.extractfile("outputs/sub/report.json"))["custom"] == {"epochs": 3}


def test_failing_algorithm_records_its_exit_code(world: World) -> None:
    user = world.user()
    body = world.free_body(user, nc.raw_algorithm("import sys\nprint('boom')\nsys.exit(3)\n"))
    job_id = world.node.free_start(body).json()[0]["jobId"]
    entry, _ = world.node.wait(job_id)
    assert entry["status"] in (70, 71)  # not a failure code: judge by exitCode
    assert entry["terminationDetails"]["exitCode"] == 3


# -- §2.1 paid job through the Escrow, §7 --------------------------------------------------------------
def test_paid_job_with_escrow(world: World) -> None:
    user = world.user(ocean=50)
    chain_id = int(world.info["chain_id"])
    quote = world.node.initialize(
        {
            "datasets": [],  # raw datasets are not quoted (the route answers 400 "Missing dataset did")
            "algorithm": nc.raw_algorithm("print('paid')"),
            "environment": world.paid_env,
            "consumerAddress": user.address,
            "maxJobDuration": 120,
            "payment": {"chainId": chain_id, "token": world.ocean, "resources": [{"id": "cpu", "amount": 2}]},
        }
    )
    assert quote.status_code == 200, quote.text
    payment = quote.json()["payment"]
    assert payment["escrowAddress"] == world.escrow
    assert payment["payee"] == world.node_address
    # maxJobDuration is capped at the environment's (60 s in the test sandbox) + queueMaxWaitTime 0 + 3600
    assert payment["minLockSeconds"] == 60 + 0 + 3600
    # (2 cpu × 2 + 1 ram × 1 + 1 disk × 0.2) per minute × 1 minute
    assert int(payment["amount"]) == int(5.2 * ONE)
    assert quote.json()["datasets"] == []

    amount = 20 * ONE
    resources = [{"id": "cpu", "amount": 1}]
    expected_cost = int(3.2 * ONE)  # (2 + 1 + 0.2) × 1 minute
    refused = world.node.paid_start(world.paid_body(user, resources=resources))
    assert refused.status_code == 400
    assert refused.json() == f"User {user.address} does not have enough funds"
    nc.escrow_deposit(world.chain, user, world.escrow, world.ocean, amount)
    refused = world.node.paid_start(world.paid_body(user, resources=resources))
    assert refused.status_code == 400
    assert refused.json() == (
        f"No escrow auths found for: chain={chain_id}, token={world.ocean}, payer={user.address}, "
        f"nodeAddress={world.node_address}. Found 0 authorizations."
    )
    for limits, text in [
        ((amount, 60, 1), "No valid escrow auths found(maxLockSeconds too low)"),
        ((ONE, 3660, 1), "No valid escrow auths found(will go over limit)"),
        ((amount, 3660, 0), "No valid escrow auths found(too many active locks)"),
    ]:
        nc.escrow_authorize(world.chain, user, world.escrow, world.ocean, world.node_address, *limits)
        refused = world.node.paid_start(world.paid_body(user, resources=resources))
        assert (refused.status_code, refused.json()) == (400, text)
    nc.escrow_authorize(world.chain, user, world.escrow, world.ocean, world.node_address, amount, 3660, 1)

    response = world.node.paid_start(world.paid_body(user, resources=resources))
    assert response.status_code == 200, response.text
    (job,) = response.json()
    bare = job["jobId"].split("-", 1)[1]
    assert job["isFree"] is False
    assert job["resources"] == [
        {"id": "cpu", "amount": 1, "price": 2},
        {"id": "ram", "amount": 1, "price": 1},
        {"id": "disk", "amount": 1, "price": 0.2},
    ]
    lock_tx = job["payment"]["lockTx"]
    assert job["payment"]["claimTx"] is None
    receipt = world.chain.receipt(lock_tx)
    assert int(receipt["status"], 16) == 1
    assert to_checksum_address(receipt["from"]) == world.node_address  # sent with the node's own key
    (event,) = [log for log in receipt["logs"] if log["topics"][0] == nc.LOCK_TOPIC]
    payer, payee, lock_id, locked, expiry, token = decode(
        ["address", "address", "uint256", "uint256", "uint256", "address"], bytes.fromhex(event["data"][2:])
    )
    assert (to_checksum_address(payer), to_checksum_address(payee)) == (user.address, world.node_address)
    assert lock_id == int(job["jobIdHash"], 16) == nc.lock_job_id(bare)
    assert (locked, expiry, to_checksum_address(token)) == (expected_cost, 60 + 3600, world.ocean)
    locks = nc.escrow_locks(world.chain, world.escrow, world.ocean, user.address, world.node_address)
    assert any(lock[0] == lock_id and lock[2] == expected_cost for lock in locks)
    assert nc.escrow_funds(world.chain, world.escrow, user.address, world.ocean) == (
        amount - expected_cost,
        expected_cost,
    )
    node_balance = oc.balance_of(world.chain, world.ocean, world.node_address)

    entry, _ = world.node.wait(job["jobId"], done=lambda e: e["status"] == 70)
    assert entry["terminationDetails"]["exitCode"] == 0
    claim_tx = entry["payment"]["claimTx"]
    assert claim_tx
    assert entry["payment"]["cost"] == pytest.approx(3.2)
    # claimed as a released node claims (§7): claimLocksAndWithdraw(jobIds, tokens, payers, amounts,
    # proofs) from the node's key, five arguments, the job's status JSON as the proof
    sent = world.chain.rpc("eth_getTransactionByHash", [claim_tx])
    assert to_checksum_address(sent["from"]) == world.node_address
    assert to_checksum_address(sent["to"]) == world.escrow
    data = bytes.fromhex(sent["input"][2:])
    assert data[:4] == nc.CLAIM_LOCKS_AND_WITHDRAW
    ids, tokens, payers, amounts, proofs = decode(
        ["uint256[]", "address[]", "address[]", "uint256[]", "bytes[]"], data[4:]
    )
    mine = ids.index(lock_id)
    assert to_checksum_address(tokens[mine]) == world.ocean
    assert to_checksum_address(payers[mine]) == user.address
    assert amounts[mine] == expected_cost
    assert json.loads(proofs[mine])["jobId"] == bare
    claim = world.chain.receipt(claim_tx)
    assert int(claim["status"], 16) == 1
    claimed = nc.claimed_events(claim)
    (event,) = [e for e in claimed if e["jobId"] == lock_id]
    assert (event["escrow"], event["payee"], event["payer"]) == (
        world.escrow,
        world.node_address,
        user.address,
    )
    assert (event["token"], event["amount"]) == (world.ocean, expected_cost)
    # the payer's lock is spent: what was not claimed is available again, nothing stays locked
    assert nc.escrow_funds(world.chain, world.escrow, user.address, world.ocean) == (
        amount - expected_cost,
        0,
    )
    # the node (payee) is paid the claims minus the router's OPC fee, withdrawn in the same transaction
    rate = nc.opc_fee(world.chain, world.info["addresses"]["Router"], world.ocean)
    payout = sum(e["amount"] - e["amount"] * rate // ONE for e in claimed if e["payee"] == world.node_address)
    assert (world.escrow, world.node_address, payout) in nc.transfers(claim, world.ocean)
    paid = expected_cost - expected_cost * rate // ONE
    assert oc.balance_of(world.chain, world.ocean, world.node_address) >= node_balance + paid > node_balance
    (auth,) = nc.escrow_auths(world.chain, world.escrow, world.ocean, user.address, world.node_address)
    assert (auth[2], auth[5]) == (0, 0)  # currentLockedAmount, currentLocks released
    # status by agreement id (the lock tx)
    by_agreement = world.node.status(agreementId=lock_tx).json()
    assert [e["jobId"] for e in by_agreement] == [bare]


def test_paid_did_dataset_needs_an_order_to_the_node_and_trust(world: World) -> None:
    assets = world.info["assets"]
    user = world.user(ocean=20, datatokens={"dataset_trusted": 2, "algorithm": 2, "dataset": 1})
    chain_id = int(world.info["chain_id"])
    dataset = {
        "documentId": assets["dataset_trusted"]["did"],
        "serviceId": assets["dataset_trusted"]["service_id"],
    }
    algorithm = {"documentId": assets["algorithm"]["did"], "serviceId": assets["algorithm"]["service_id"]}
    quote = world.node.initialize(
        {
            "datasets": [dataset],
            "algorithm": algorithm,
            "environment": world.paid_env,
            "consumerAddress": user.address,
            "maxJobDuration": 60,
            "payment": {"chainId": chain_id, "token": world.ocean},
        }
    ).json()
    for answer in (quote["datasets"][0], quote["algorithm"]):
        assert answer["consumerAddress"] == world.node_address
        assert answer["validOrder"] is False
        assert oc.provider_fee_signer(answer["providerFee"]) == world.node_address
    orders = {}
    for name, answer in (("dataset_trusted", quote["datasets"][0]), ("algorithm", quote["algorithm"])):
        receipt = oc.start_order(
            world.chain,
            user.key,
            answer["datatoken"],
            world.node_address,
            assets[name]["service_index"],
            answer["providerFee"],
        )
        orders[name] = oc.ok(receipt)
    amount = int(quote["payment"]["amount"])
    nc.escrow_deposit(world.chain, user, world.escrow, world.ocean, amount)
    nc.escrow_authorize(world.chain, user, world.escrow, world.ocean, world.node_address, amount, 3660, 2)

    missing = world.node.paid_start(world.paid_body(user, datasets=[dataset], algorithm=algorithm))
    assert (missing.status_code, missing.json()) == (
        500,
        f"Missing transferTxId for DDO {algorithm['documentId']}",
    )
    untrusted = {"documentId": assets["dataset"]["did"], "serviceId": assets["dataset"]["service_id"]}
    refused = world.node.paid_start(
        world.paid_body(
            user, datasets=[untrusted], algorithm={**algorithm, "transferTxId": orders["algorithm"]}
        )
    )
    # both trust lists empty = deny on Ocean Node (the opposite of Provider v4)
    assert refused.status_code == 400
    assert (
        refused.json()
        == f"Algorithm {algorithm['documentId']} not allowed to run on the dataset: {untrusted['documentId']}"
    )
    # the quote refuses it too (plain text), so that a client learns it before ordering anything
    quoted = world.node.initialize(
        {
            "datasets": [untrusted],
            "algorithm": algorithm,
            "environment": world.paid_env,
            "consumerAddress": user.address,
            "payment": {"chainId": chain_id, "token": world.ocean},
        }
    )
    assert (quoted.status_code, quoted.text) == (400, refused.json())
    raw = world.node.initialize(
        {
            "datasets": [{"fileObject": {"type": "url", "url": "http://127.0.0.1/x.csv", "method": "get"}}],
            "algorithm": algorithm,
            "environment": world.paid_env,
            "consumerAddress": user.address,
            "payment": {"chainId": chain_id, "token": world.ocean},
        }
    )
    assert (raw.status_code, raw.text) == (400, "Missing dataset did")

    response = world.node.paid_start(
        world.paid_body(
            user,
            datasets=[{**dataset, "transferTxId": orders["dataset_trusted"]}],
            algorithm={**algorithm, "transferTxId": orders["algorithm"]},
        )
    )
    assert response.status_code == 200, response.text
    entry, _ = world.node.wait(response.json()[0]["jobId"])
    assert entry["terminationDetails"]["exitCode"] == 0
    requoted = world.node.initialize(
        {
            "datasets": [{**dataset, "transferTxId": orders["dataset_trusted"]}],
            "algorithm": algorithm,
            "environment": world.paid_env,
            "consumerAddress": user.address,
            "payment": {"chainId": chain_id, "token": world.ocean},
        }
    ).json()
    assert requoted["datasets"][0]["validOrder"] == orders["dataset_trusted"]
    assert "providerFee" not in requoted["datasets"][0]


# -- §4 nonces and signatures, §5 error shapes ------------------------------------------------------------
def test_validation_messages(world: World) -> None:
    user = world.user()
    body = world.free_body(user)
    del body["environment"]
    response = world.node.free_start(body)
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == (
        'Missing one ( "environment" ) or more required field(s) for command: "freeStartCompute". '
        "Required fields: algorithm,datasets,environment"
    )
    paid = world.paid_body(user)
    del paid["maxJobDuration"]
    assert world.node.paid_start(paid).json() == (
        'Missing one ( "maxJobDuration" ) or more required field(s) for command: "startCompute". '
        "Required fields: environment,algorithm,datasets,maxJobDuration"
    )
    bad_address = {**world.free_body(user), "consumerAddress": "0x1234"}
    response = world.node.free_start(bad_address)
    assert (response.status_code, response.json()) == (
        400,
        'Parameter : "consumerAddress" is not a valid web3 address',
    )
    zero = world.node.paid_start(world.paid_body(user, maxJobDuration=0))
    assert (zero.status_code, zero.json()) == (400, "Invalid maxJobDuration")
    # validation failures happen before the nonce check: nothing was consumed
    assert world.node.nonce(user.address).json() == {"nonce": "0"}


def test_nonce_is_consumed_even_when_the_command_fails(world: World) -> None:
    user = world.user()
    body = world.free_body(user, environment=world.free_env.split("-", 1)[0] + "-" + "0" * 64)
    response = world.node.free_start(body)
    assert (response.status_code, response.json()) == (500, "Invalid C2D Environment")
    assert world.node.nonce(user.address).json() == {"nonce": body["nonce"]}
    replay = world.node.free_start({**body, "environment": world.free_env})
    assert replay.status_code == 401
    assert replay.json() == f"nonce: {body['nonce']} is not a valid nonce"
    lower = world.node.signed_body(user, "freeStartCompute", {}, nonce=int(body["nonce"]) - 5)
    too_low = world.node.free_start({**world.free_body(user), **lower})
    assert too_low.json() == f"nonce: {int(body['nonce']) - 5} is not a valid nonce"


def test_signature_mismatch(world: World) -> None:
    user = world.user()
    nonce = nc.next_nonce()
    wrong_command = {
        **world.free_body(user),
        "nonce": str(nonce),
        "signature": nc.sign(user.key, user.address, nonce, "startCompute"),
    }
    response = world.node.free_start(wrong_command)
    assert (response.status_code, response.json()) == (401, "consumer address and nonce signature mismatch")
    nonce = nc.next_nonce()
    lower_case = {
        **world.free_body(user),
        "nonce": str(nonce),
        "signature": nc.sign(user.key, user.address.lower(), nonce, "freeStartCompute"),
    }
    response = world.node.free_start(lower_case)  # signed the lower-case address, sent the checksummed one
    assert response.status_code == 401
    assert world.node.nonce(user.address).json() == {"nonce": "0"}  # a mismatch consumes nothing
    nonce = nc.next_nonce()
    decimal = {
        **world.free_body(user),
        "nonce": f"{nonce}.5",  # parseInt truncates it: the signature over "….5" no longer matches
        "signature": nc.sign(user.key, user.address, f"{nonce}.5", "freeStartCompute"),
    }
    assert world.node.free_start(decimal).json() == "consumer address and nonce signature mismatch"


def test_resource_and_environment_errors(world: World) -> None:
    user = world.user(ocean=5)
    not_free = world.node.free_start(world.free_body(user, environment=world.paid_env))
    assert (not_free.status_code, not_free.json()) == (400, "Error: This env does not support free jobs")
    too_big = world.node.paid_start(world.paid_body(user, resources=[{"id": "cpu", "amount": 5}]))
    assert (too_big.status_code, too_big.json()) == (
        400,
        "Not enough cpu resources. Requested 5, but max is 4",
    )
    other_token = world.node.paid_start(
        world.paid_body(user, payment={"chainId": 8996, "token": world.escrow})
    )
    assert other_token.status_code == 500
    assert (
        other_token.json()
        == f"This compute env does not accept payments on chain: 8996 using token {world.escrow}"
    )
    no_checksums = world.paid_body(user, algorithm={"meta": {"container": nc.CONTAINER}})
    response = world.node.paid_start(no_checksums)
    assert (response.status_code, response.json()) == (
        500,
        "Failed to retrieve algorithm checksums. Both container and files checksums are required.",
    )


def test_initialize_errors_are_plain_text(world: World) -> None:
    user = world.user()
    response = world.node.initialize(
        {"datasets": [], "environment": world.paid_env, "consumerAddress": user.address, "payment": {}}
    )
    assert (response.status_code, response.text) == (400, "Missing algorithm")
    assert response.headers["Content-Type"].startswith("text/plain")
    response = world.node.initialize(
        {
            "datasets": [],
            "algorithm": nc.raw_algorithm("x"),
            "environment": "nope",
            "consumerAddress": user.address,
            "payment": {"chainId": 8996, "token": world.ocean},
        }
    )
    assert (response.status_code, response.text) == (500, "Invalid C2D Environment")


def test_status_and_stop_errors_are_internal_server_errors(world: World) -> None:
    user = world.user()
    assert world.node.status().status_code == 500
    assert world.node.status().text == "Internal Server Error"
    assert world.node.status(consumerAddress="0xnot-an-address").status_code == 500
    assert world.node.status(consumerAddress=user.address).json() == []
    assert world.node.status(jobId=world.free_env.split("-", 1)[0] + "-" + "ab" * 32).json() == []
    stranger = world.user()
    params = {
        "consumerAddress": user.address,
        "jobId": world.free_env.split("-", 1)[0] + "-" + "ab" * 32,
        "nonce": "5",
        "signature": nc.sign(stranger.key, user.address, 5, "stopCompute"),
    }
    bad = requests.put(world.url + "/api/services/compute", params=params, timeout=30)
    assert (bad.status_code, bad.text) == (500, "Internal Server Error")
    delete = requests.delete(world.url + "/api/services/compute", timeout=30)
    assert (delete.status_code, delete.text) == (404, "Not yet implemented!")


def test_results_are_for_the_exact_owner_string(world: World) -> None:
    user = world.user()
    stranger = world.user()
    job_id = world.node.free_start(world.free_body(user)).json()[0]["jobId"]
    entry, _ = world.node.wait(job_id)
    other = world.node.result(stranger, job_id, 0)
    assert other.status_code == 500
    assert other.text == f"{stranger.address} is not authorized to get results for job with id {job_id}"
    lower = world.node.result(user, job_id, 0, address=user.address.lower())
    assert other.headers["Content-Type"].startswith("text/plain")
    assert lower.status_code == 500  # case-sensitive compare
    unknown_index = world.node.result(user, job_id, 99)
    assert (unknown_index.status_code, unknown_index.content) == (200, b"")
    missing = world.node.result(user, world.free_env.split("-", 1)[0] + "-" + "cd" * 32, 0)
    assert missing.status_code == 500
    assert missing.text.startswith("Cannot find job with id")
    logs = world.node.logs(user, job_id)
    assert (logs.status_code, logs.text) == (404, "Job not found or not running")


def test_additional_viewers_may_read_results(world: World) -> None:
    user = world.user()
    viewer = world.user()
    body = world.free_body(user, additionalViewers=[viewer.address])
    job_id = world.node.free_start(body).json()[0]["jobId"]
    world.node.wait(job_id)
    assert world.node.result(viewer, job_id, 0).status_code == 200


def test_auth_tokens(world: World) -> None:
    user = world.user()
    nonce = nc.next_nonce()
    created = requests.post(
        world.url + "/api/services/auth/token",
        json={
            "address": user.address,
            "nonce": str(nonce),
            "signature": nc.sign(user.key, user.address, nonce, "createAuthToken"),
        },
        timeout=30,
    )
    assert created.status_code == 200, created.text
    token = created.json()["token"]
    body = {
        "environment": world.free_env,
        "algorithm": nc.raw_algorithm("print('token')"),
        "datasets": [],
        "consumerAddress": user.address,
    }
    bearer = world.node.free_start(body, headers={"Authorization": f"Bearer {token}"})
    assert (bearer.status_code, bearer.json()) == (401, "Invalid token")
    started = world.node.free_start(body, headers={"Authorization": token})
    assert started.status_code == 200, started.text
    nonce = nc.next_nonce()
    revoked = requests.post(
        world.url + "/api/services/auth/token/invalidate",
        json={
            "address": user.address,
            "nonce": str(nonce),
            "signature": nc.sign(user.key, user.address, nonce, "invalidateAuthToken"),
            "token": token,
        },
        timeout=30,
    )
    assert revoked.status_code == 200
    assert world.node.free_start(body, headers={"Authorization": token}).status_code == 401


# -- running jobs: live logs and stop --------------------------------------------------------------------
def test_streamable_logs_and_stop(world: World) -> None:
    user = world.user()
    code = "import time\nfor i in range(300):\n    print('tick', i, flush=True)\n    time.sleep(0.1)\n"
    job_id = world.node.free_start(world.free_body(user, nc.raw_algorithm(code))).json()[0]["jobId"]
    world.node.wait(job_id, done=lambda e: e["status"] == 40)
    stream = world.node.logs(user, job_id, stream=True)
    assert stream.status_code == 200
    raw = b""
    for chunk in stream.iter_content(chunk_size=None):
        raw += chunk
        if len(list(split_lines([raw]))) > 3:
            break
    stream.close()
    # the live stream is framed too: ``\x01\x00\x00\x00\x00\x00\x00\x07tick 0\n``...
    assert raw.startswith(b"\x01\x00\x00\x00\x00\x00\x00\x07tick 0\n")
    assert list(split_lines([raw]))[:3] == ["tick 0", "tick 1", "tick 2"]
    stopped = world.node.stop(user, job_id)
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()[0]["stopRequested"] is True
    entry, _ = world.node.wait(job_id)
    assert entry["stopRequested"] is True
    # docker stop: the algorithm (PID 1, no SIGTERM handler) is killed: 128 + SIGKILL, as Docker reports it
    assert entry["terminationDetails"]["exitCode"] == 137
    ended = world.node.logs(user, job_id)
    assert (ended.status_code, ended.text) == (404, "Job not found or not running")
    prefix = job_id.split("-", 1)[0]
    unknown = world.node.logs(user, f"{prefix}-{'0' * 64}")
    assert (unknown.status_code, unknown.text) == (404, "Job not found or not running")


def test_an_algorithm_that_cannot_start_fails_at_41_with_a_plain_log(world: World) -> None:
    """The container cannot start: 41 "Failed to run algorithm", the error as plain text in algorithm.log."""
    user = world.user()
    algorithm = nc.raw_algorithm("print('never')\n")
    algorithm["meta"]["container"] = {**nc.CONTAINER, "entrypoint": "no-such-program-c2d $ALGO"}
    job_id = world.node.free_start(world.free_body(user, algorithm)).json()[0]["jobId"]
    entry, seen = world.node.wait(job_id)
    assert 41 in seen
    assert entry["terminationDetails"]["exitCode"] is None
    log_entry = next(r for r in entry["results"] if r["type"] == "algorithmLog")
    log = world.node.result(user, job_id, log_entry["index"]).content
    assert not is_frame_header(log)
    assert b"no-such-program-c2d" in log


# -- §5 rate limit -----------------------------------------------------------------------------------------
def test_rate_limit(world: World) -> None:
    node_admin(world.info, rate_limit=5)
    try:
        answers = [world.node.get("/api/services/computeEnvironments") for _ in range(6)]
        assert [a.status_code for a in answers[:5]] == [200] * 5
        limited = answers[5]
        assert limited.status_code == 429
        match = re.fullmatch(r"Rate limit exceeded\. Try again in (\d+) seconds\.", limited.text)
        assert match
        assert 1 <= int(match.group(1)) <= 60
    finally:
        node_admin(world.info, rate_limit=NODE_TEST_RATE_LIMIT)
    assert world.node.get("/").status_code == 200


# -- Aquarius-compatible routes (oceanprotocol/ocean-node src/components/httpRoutes/aquarius.ts) ----------
AQUARIUS = "/api/aquarius/assets"
HTML = "text/html; charset=utf-8"
MISSING_DDO = (
    'Missing one ( "ddo" ) or more required field(s) for command: "validateDDO". Required fields: ddo'
)


def sample_dids(world: World) -> list[str]:
    return sorted(asset["did"] for asset in world.info["assets"].values())


def sample_ddo(world: World, name: str = "dataset") -> dict[str, Any]:
    answer = world.node.get(f"{AQUARIUS}/ddo/{world.info['assets'][name]['did']}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def query(world: World, body: Any) -> requests.Response:
    return requests.post(world.url + AQUARIUS + "/metadata/query", json=body, timeout=nc.TIMEOUT)


def validate(world: World, body: Any, **kwargs: Any) -> requests.Response:
    return requests.post(world.url + AQUARIUS + "/ddo/validate", json=body, timeout=nc.TIMEOUT, **kwargs)


def hit_ids(answer: requests.Response) -> list[list[str]]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    return [[ddo["id"] for ddo in hits] for hits in answer.json()]


def test_ddo_and_metadata_routes_answer_as_the_node(world: World) -> None:
    did = world.info["assets"]["dataset"]["did"]
    ddo = sample_ddo(world)
    assert ddo["id"] == did
    assert world.node.get(f"{AQUARIUS}/metadata/{did}").json() == ddo
    assert world.node.get(f"{AQUARIUS}/ddo/{did}/false").json() == ddo  # the optional :force segment
    unknown = world.node.get(f"{AQUARIUS}/metadata/did:op:{'0' * 64}")
    assert (unknown.status_code, unknown.text) == (404, "DDO not found")
    assert unknown.headers["Content-Type"] == HTML
    bad = world.node.get(f"{AQUARIUS}/ddo/not-a-did")
    assert (bad.status_code, bad.text) == (400, 'Missing or invalid required parameter: "did"')


def test_query_finds_the_sample_asset_by_did_with_a_bool_term_filter(world: World) -> None:
    """An Elasticsearch body (``query.bool``) runs as is; the answer is one list of DDOs per DDO index."""
    did = world.info["assets"]["dataset"]["did"]
    answer = query(world, {"query": {"bool": {"filter": [{"term": {"id": did}}]}}})
    assert hit_ids(answer) == [[did]]
    assert answer.json()[0][0] == sample_ddo(world)
    nothing = query(world, {"query": {"bool": {"filter": [{"term": {"id": "did:op:" + "0" * 64}}]}}})
    assert hit_ids(nothing) == []


def test_query_without_bool_is_typesense_style_and_drops_a_match_clause(world: World) -> None:
    """``{"query": {"match": ...}}`` is no Elasticsearch body to the node: it keeps no filter (all DDOs)."""
    did = world.info["assets"]["dataset"]["did"]
    everything = hit_ids(query(world, {"query": {"match": {"id": did}}}))
    assert len(everything) == 1
    assert sorted(everything[0]) == sample_dids(world)  # five samples, under the default 10 hits
    assert hit_ids(query(world, {"filter_by": f"id:={did}"})) == [[did]]
    others = hit_ids(query(world, {"filter_by": f"id:!={did}"}))
    assert sorted(others[0]) == [d for d in sample_dids(world) if d != did]
    two = world.info["assets"]["algorithm"]["did"]
    assert sorted(hit_ids(query(world, {"filter_by": f"id:=[{did},{two}]"}))[0]) == sorted([did, two])


def test_query_from_is_a_page_number(world: World) -> None:
    pair = sorted([world.info["assets"]["dataset"]["did"], world.info["assets"]["algorithm"]["did"]])
    body = {"query": {"bool": {"filter": [{"terms": {"id": pair}}]}}, "size": 1}
    first, second = (hit_ids(query(world, {**body, "from": page})) for page in (1, 2))
    assert hit_ids(query(world, {**body, "from": 0})) == first
    assert len(first[0]) == len(second[0]) == 1
    assert sorted(first[0] + second[0]) == pair
    assert hit_ids(query(world, {**body, "from": 3})) == []


def test_query_errors(world: World) -> None:
    bad = requests.post(world.url + AQUARIUS + "/metadata/query", data=b"{not json", timeout=nc.TIMEOUT)
    assert (bad.status_code, bad.text) == (400, "Bad Request")
    wrong = query(world, {"filter_by": 7})
    assert (wrong.status_code, wrong.text) == (500, "Internal Server Error")
    refused = query(world, {"query": {"bool": {"filter": [{"no_such_query": {}}]}}})
    assert hit_ids(refused) == []  # the database refuses it per index: logged, still 200
    aquarius_path = requests.post(world.url + AQUARIUS + "/query", json={}, timeout=nc.TIMEOUT)
    assert aquarius_path.status_code == 404  # Aquarius's path is not a node route


def test_validate_signs_a_valid_ddo_as_the_node(world: World) -> None:
    """200 ``{hash, publicKey, r, s, v}``: sha256 of ``JSON.stringify(ddo)``, signed by the node's key."""
    ddo = sample_ddo(world)
    answer = validate(world, {"ddo": ddo})
    assert answer.status_code == 200, answer.text
    signed = answer.json()
    assert list(signed) == ["hash", "publicKey", "r", "s", "v"]
    compact = json.dumps(ddo, separators=(",", ":"), ensure_ascii=False)
    assert signed["hash"] == "0x" + hashlib.sha256(compact.encode()).hexdigest()
    assert signed["publicKey"] == world.node_address
    assert HEX64.fullmatch(signed["r"])
    assert HEX64.fullmatch(signed["s"])
    assert signed["v"] in (27, 28)
    message = keccak(text=signed["hash"]).lstrip(b"\x00")
    vrs = (signed["v"], int(signed["r"], 16), int(signed["s"], 16))
    assert Account.recover_message(encode_defunct(primitive=message), vrs=vrs) == world.node_address


def test_validate_refuses_an_invalid_ddo_with_the_node_texts(world: World) -> None:
    ddo = sample_ddo(world)
    invalid = validate(world, {"ddo": {**ddo, "nftAddress": "0x" + "12" * 20}})
    assert (invalid.status_code, invalid.text) == (400, "Validation error: [object Object]")
    assert invalid.headers["Content-Type"] == HTML
    no_name = {**ddo, "metadata": {k: v for k, v in ddo["metadata"].items() if k != "name"}}
    assert validate(world, {"ddo": no_name}).text == "Validation error: [object Object]"
    cases = [
        ({}, 400, MISSING_DDO),
        ({"ddo": None}, 400, MISSING_DDO),
        ({"ddo": {**ddo, "id": "urn:x"}}, 400, ' Missing or invalid required parameter "id'),
        ({"ddo": {k: v for k, v in ddo.items() if k != "version"}}, 400, "Missing DDO version"),
        ({"ddo": {**ddo, "version": "3.0.0"}}, 500, "Unknown error: Unsupported DDO version: 3.0.0"),
    ]
    for body, status, message in cases:
        answer = validate(world, body)
        assert (answer.status_code, answer.text) == (status, message), body


def test_validate_errors_of_the_request(world: World) -> None:
    ddo = sample_ddo(world)
    url = world.url + AQUARIUS + "/ddo/validate"
    bad = requests.post(url, data=b"{not json", timeout=nc.TIMEOUT)
    assert (bad.status_code, bad.text) == (400, "Bad Request")
    # Aquarius's framing (the DDO itself as an octet-stream body) has no "ddo" field for the node
    octet = {"Content-Type": "application/octet-stream"}
    aquarius_style = requests.post(url, data=json.dumps(ddo), headers=octet, timeout=nc.TIMEOUT)
    assert (aquarius_style.status_code, aquarius_style.text) == (400, MISSING_DDO)
    wrong_signature = {
        "ddo": ddo,
        "publisherAddress": oc.Wallet.create().address,
        "nonce": str(nc.next_nonce()),
        "signature": "0x" + "11" * 65,
    }
    refused = validate(world, wrong_signature)
    assert (refused.status_code, refused.text) == (401, "consumer address and nonce signature mismatch")
    token = validate(world, {"ddo": ddo}, headers={"Authorization": "not-a-token"})
    assert (token.status_code, token.text) == (401, "Invalid token")
    as_get = requests.get(url, timeout=nc.TIMEOUT)  # GET: the :did route, with did "validate"
    assert (as_get.status_code, as_get.text) == (400, 'Missing or invalid required parameter: "did"')
