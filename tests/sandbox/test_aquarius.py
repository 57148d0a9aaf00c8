"""The sandbox's Aquarius, driven over the wire by a client that publishes by itself.

The client makes its own transactions with the independent client of :mod:`tests.sandbox.ocean_client`
(factory ``createNftWithErc20``, ``setMetaData``), encrypts files and DDO through the sandbox Provider's
``POST /api/services/encrypt`` and then reads the sandbox's Aquarius routes only: ``GET .../ddo/{did}``,
``POST .../query`` (the bodies ocean.py and ocean.js send) and ``POST .../ddo/validate``. Expected answers
come from oceanprotocol/aquarius (``aquarius/app/assets.py``, ``aquarius/app/util.py``
``get_signature_vrs``, ``aquarius/events/processors.py``) and ocean.py (``ocean_lib/aquarius/aquarius.py``).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import time
from typing import Any

import pytest
import requests
from eth_abi import decode, encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak, to_checksum_address

from tests.sandbox import ocean_client as oc

pytestmark = pytest.mark.chain

CREATE = (
    "createNftWithErc20((string,string,uint256,string,bool,address),"
    "(uint256,string[],address[],uint256[],bytes[]))"
)
SET_METADATA = "setMetaData(uint8,string,string,bytes,bytes,bytes32,(address,uint8,bytes32,bytes32)[])"
NFT_CREATED = (
    "0x" + keccak(text="NFTCreated(address,address,string,address,string,string,bool,address)").hex()
)
TOKEN_CREATED = "0x" + keccak(text="TokenCreated(address,address,string,string,uint256,address)").hex()
OCTET = {"Content-Type": "application/octet-stream"}


def call_data(signature: str, *args: Any) -> bytes:
    types = signature[signature.index("(") + 1 : -1]
    depth, parts, current = 0, [], ""
    for char in types:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return keccak(text=signature)[:4] + encode(parts, list(args))


def encrypt(sandbox: dict[str, Any], raw: bytes) -> bytes:
    answer = requests.post(
        sandbox["provider_url"] + "/api/services/encrypt",
        params={"chainId": sandbox["chain_id"]},
        data=raw,
        headers=OCTET,
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    return bytes.fromhex(answer.text.strip().removeprefix("0x"))


def did_of(nft: str, chain_id: int) -> str:
    return "did:op:" + hashlib.sha256((to_checksum_address(nft) + str(chain_id)).encode()).hexdigest()


def own_ddo(sandbox: dict[str, Any], nft: str, datatoken: str, name: str) -> dict[str, Any]:
    files = {
        "datatokenAddress": datatoken,
        "nftAddress": nft,
        "files": [{"type": "url", "url": sandbox["provider_url"] + "/sandbox/files/weather.csv"}],
    }
    return {
        "@context": ["https://w3id.org/did/v1"],
        "id": did_of(nft, sandbox["chain_id"]),
        "version": "4.1.0",
        "chainId": sandbox["chain_id"],
        "nftAddress": nft,
        "metadata": {
            "created": "2026-01-01T00:00:00Z",
            "updated": "2026-01-01T00:00:00Z",
            "type": "dataset",
            "name": name,
            "description": "published by the test's own client",
            "author": "test",
            "license": "CC0-1.0",
        },
        "services": [
            {
                "id": "0",
                "type": "compute",
                "files": "0x" + encrypt(sandbox, json.dumps(files).encode()).hex(),
                "datatokenAddress": datatoken,
                "serviceEndpoint": sandbox["provider_url"],
                "timeout": 3600,
                "compute": {
                    "allowRawAlgorithm": True,
                    "allowNetworkAccess": True,
                    "publisherTrustedAlgorithms": [],
                    "publisherTrustedAlgorithmPublishers": [],
                },
            }
        ],
    }


def publish_by_itself(sandbox: dict[str, Any], name: str) -> tuple[dict[str, Any], str]:
    """Create NFT + datatoken, encrypt the compressed DDO, setMetaData: (DDO, setMetaData tx)."""
    chain = oc.Chain(sandbox["rpc_url"], sandbox["chain_id"])
    wallet = oc.Wallet.of(sandbox["other"])
    me = wallet.address
    receipt = chain.send(
        wallet.key,
        sandbox["addresses"]["ERC721Factory"],
        call_data(
            CREATE,
            (name, "OWN", 1, "https://example.invalid/own", True, me),
            (1, [f"{name} DT", "OWN-DT"], [me, me, oc.ZERO_ADDRESS, oc.ZERO_ADDRESS], [10**24, 0], []),
        ),
        gas=8_000_000,
    )
    oc.ok(receipt)
    logs = receipt["logs"]
    nft_log = next(entry for entry in logs if entry["topics"][0] == NFT_CREATED)
    nft = to_checksum_address(decode(["address"], bytes.fromhex(nft_log["data"][2:66]))[0])
    token_log = next(entry for entry in logs if entry["topics"][0] == TOKEN_CREATED)
    datatoken = to_checksum_address("0x" + token_log["topics"][1][-40:])
    ddo = own_ddo(sandbox, nft, datatoken, name)
    return ddo, set_metadata(sandbox, ddo)


def set_metadata(sandbox: dict[str, Any], ddo: dict[str, Any]) -> str:
    """``setMetaData`` with the DDO compressed then encrypted (flags 3); the tx hash."""
    chain = oc.Chain(sandbox["rpc_url"], sandbox["chain_id"])
    wallet = oc.Wallet.of(sandbox["other"])
    text = json.dumps(ddo, separators=(",", ":")).encode()
    document = encrypt(sandbox, lzma.compress(text))
    data = call_data(
        SET_METADATA,
        0,
        sandbox["provider_url"],
        sandbox["provider_address"],
        bytes([3]),
        document,
        hashlib.sha256(text).digest(),
        [],
    )
    return oc.ok(chain.send(wallet.key, ddo["nftAddress"], data, gas=3_000_000))


def aquarius(sandbox: dict[str, Any], path: str) -> str:
    return sandbox["provider_url"] + "/api/aquarius/assets" + path


def query(sandbox: dict[str, Any], body: dict[str, Any]) -> list[dict[str, Any]]:
    answer = requests.post(aquarius(sandbox, "/query"), json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["hits"]["hits"]


@pytest.fixture(scope="module")
def own_asset(sandbox: dict[str, Any]) -> dict[str, Any]:
    ddo, tx = publish_by_itself(sandbox, "Own weather")
    deadline = time.monotonic() + 5  # ocean.py's wait_for_ddo polls GET .../ddo/{did}
    while True:
        answer = requests.get(aquarius(sandbox, f"/ddo/{ddo['id']}"), timeout=10)
        if answer.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert answer.status_code == 200, f"not indexed within 5 s: {answer.status_code} {answer.text}"
    return {"published": ddo, "served": answer.json(), "tx": tx}


def test_own_publish_is_served_with_aquarius_fields(own_asset: dict[str, Any], sandbox: dict[str, Any]):
    published, served = own_asset["published"], own_asset["served"]
    assert {k: served[k] for k in published} == published
    assert served["event"]["tx"] == own_asset["tx"]
    assert served["event"]["contract"] == published["nftAddress"]
    assert served["event"]["from"] == sandbox["other"]["address"]
    assert set(served["event"]) == {"tx", "block", "from", "contract", "datetime"}
    nft = served["nft"]
    assert (nft["address"], nft["name"], nft["symbol"], nft["state"]) == (
        published["nftAddress"],
        "Own weather",
        "OWN",
        0,
    )
    assert nft["owner"] == sandbox["other"]["address"]
    assert nft["tokenURI"] == "https://example.invalid/own"
    assert served["datatokens"] == [
        {
            "address": published["services"][0]["datatokenAddress"],
            "name": "Own weather DT",
            "symbol": "OWN-DT",
            "serviceId": "0",
        }
    ]
    assert served["purgatory"] == {"state": False}


def test_query_finds_it_by_did_and_by_nft_address(own_asset: dict[str, Any], sandbox: dict[str, Any]):
    did = own_asset["published"]["id"]
    nft = own_asset["published"]["nftAddress"]
    bodies = [
        {"query": {"query_string": {"query": did.replace(":", "\\:")}}},  # ocean.py assets.search(did)
        {"query": {"term": {"_id": did}}},
        {"query": {"term": {"nft.address": nft}}},
        {"query": {"bool": {"filter": [{"term": {"nftAddress": nft.lower()}}, {"term": {"chainId": 8996}}]}}},
        {
            "query": {
                "query_string": {
                    "query": "own weather",
                    "default_operator": "AND",
                    "fields": ["metadata.name"],
                }
            }
        },
    ]
    for body in bodies:
        hits = query(sandbox, body)
        assert [hit["_id"] for hit in hits] == [did], body
        assert hits[0]["_source"] == own_asset["served"]
        assert hits[0]["_index"] == "oceandb"
    assert query(sandbox, {"query": {"term": {"nft.address": oc.ZERO_ADDRESS}}}) == []
    everything = requests.post(aquarius(sandbox, "/query"), json={"query": {"match_all": {}}, "size": 100})
    total = everything.json()["hits"]["total"]
    assert total["relation"] == "eq"
    assert total["value"] >= 6  # the samples and this one
    assert requests.post(aquarius(sandbox, "/query"), data="[]", timeout=10).status_code == 400


def test_validate_answers_as_aquarius(own_asset: dict[str, Any], sandbox: dict[str, Any]):
    raw = json.dumps(own_asset["published"], separators=(",", ":")).encode()
    answer = requests.post(aquarius(sandbox, "/ddo/validate"), data=raw, headers=OCTET, timeout=10)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    digest = hashlib.sha256(raw).digest()
    assert body["hash"] == "0x" + digest.hex()  # ocean.py: valid when the answer has a hash
    assert set(body) == {"hash", "publicKey", "v", "r", "s"}
    signature = bytes.fromhex(body["r"][0][2:] + body["s"][0][2:]) + bytes([body["v"]])
    signer = Account.recover_message(encode_defunct(primitive=digest), signature=signature)
    assert signer == body["publicKey"]

    invalid = dict(own_asset["published"], metadata={"name": "no description"}, id="did:op:" + "0" * 64)
    answer = requests.post(aquarius(sandbox, "/ddo/validate"), data=json.dumps(invalid), headers=OCTET)
    assert answer.status_code == 400
    errors = answer.json()["errors"]
    assert errors["id"] == "did is not valid for chain Id and nft address"
    assert {"description", "type", "author", "license"} <= set(errors)

    no_version = {k: v for k, v in own_asset["published"].items() if k != "version"}
    answer = requests.post(aquarius(sandbox, "/ddo/validate"), data=json.dumps(no_version), headers=OCTET)
    assert (answer.status_code, answer.json()) == (400, [{"message": "no version provided for DDO."}])
    answer = requests.post(aquarius(sandbox, "/ddo/validate"), json=own_asset["published"], timeout=10)
    assert answer.status_code == 400
    assert answer.json() == [{"message": "Invalid request content type: should be application/octet-stream"}]
    assert requests.get(aquarius(sandbox, "/ddo/validate"), timeout=10).status_code == 405


def test_update_replaces_the_ddo_and_indexing_survives_a_server_restart(
    own_asset: dict[str, Any], sandbox: dict[str, Any]
):
    did = own_asset["published"]["id"]
    sandbox["sandbox"].restart_server()
    assert requests.get(aquarius(sandbox, f"/ddo/{did}"), timeout=10).status_code == 200
    # a second setMetaData emits MetadataUpdated: the restarted server's indexer replaces the DDO
    updated = json.loads(json.dumps(own_asset["published"]))
    updated["metadata"]["description"] = "updated"
    tx = set_metadata(sandbox, updated)
    deadline = time.monotonic() + 5
    while True:
        served = requests.get(aquarius(sandbox, f"/ddo/{did}"), timeout=10).json()
        if served["event"]["tx"] == tx:  # ocean.py's wait_for_ddo_update
            break
        assert time.monotonic() < deadline, "the update was not indexed after the server restart"
        time.sleep(0.2)
    assert served["metadata"]["description"] == "updated"
    assert served["nft"]["created"] == own_asset["served"]["nft"]["created"]
    index = json.loads((sandbox["sandbox"].state_dir / "aquarius-index.json").read_text())
    assert index["last_block"] >= served["event"]["block"]
