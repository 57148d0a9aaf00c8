"""The independent test client checked against the reference test vectors (no chain needed)."""

from __future__ import annotations

import hashlib
import json

import pytest
from eth_utils import keccak

from tests.sandbox import ocean_client as oc

KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
DID = "did:op:62b18537305dacbec82ee60d3dedf67e0e3b353990336314c07e53d17af119ae"
JOB_ID = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


def test_vector_did() -> None:
    nft = "0x1111111111111111111111111111111111111111"
    assert "did:op:" + hashlib.sha256((nft + "8996").encode()).hexdigest() == DID


# docs/reference/provider-v4-api.md §3.3
@pytest.mark.parametrize(
    ("message", "message_hash", "signature", "v"),
    [
        pytest.param(
            oc.start_message(ADDRESS, DID, "1700000000000"),
            "0xbc2ed8bc0cdd156cd2facc2dd2edaa25678714c6ef42f60f47ba8ad043154aa9",
            "0x2b9e1dba93fd969420c3e90543734a5ab59b5bae501077782e8f3c50a5c8ee9f"
            "6adfef1e5c5f402def61548f1b8f4221fd7665798d7d9fb7a406d4728e5e00df1c",
            28,
            id="start",
        ),
        pytest.param(
            oc.result_message(ADDRESS, JOB_ID, 0, "1700000000001"),
            "0x2c44ab23c03049c9cf543014857940338b6108d42615c0a0981d49057463178d",
            "0xafb85629e2882cf5f6ddfc2b616fe1eaa38bde3df0ff394f521b127b5205187d"
            "35dd28526b1f43f5af0d2c42b87f3a8f0463fab7e03af6c0d0c4444fbd01e0291b",
            27,
            id="result",
        ),
        pytest.param(
            oc.stop_message(ADDRESS, JOB_ID, DID, "1700000000002"),
            "0x9d7bafea12239b097bd378e969741625f22e14fe5b6abfca2a5468b15313023d",
            "0x298fd3657d97b59571713da303a2df99a7a47f1d90a333c87c336a6e3bec77fa"
            "220580e36366ba6aedf66a6982a916ef65020679f2ea0822a23a860df57aa5431b",
            27,
            id="stop",
        ),
    ],
)
def test_request_signature_vectors(message: str, message_hash: str, signature: str, v: int) -> None:
    assert oc.hex0x(keccak(text=message)) == message_hash
    produced = oc.sign_request(KEY, message)
    assert produced == signature
    assert int(produced[-2:], 16) == v
    assert oc.recover_request_signer(message, produced) == ADDRESS


def test_start_vector_message_and_digest() -> None:
    message = oc.start_message(ADDRESS, DID, "1700000000000")
    assert message == ADDRESS + DID + "1700000000000"
    digest = keccak(b"\x19Ethereum Signed Message:\n32" + keccak(text=message))
    assert oc.hex0x(digest) == "0x4faac5b0461b28a3ad2a24429c4b4a79c055a9215b83ff169218b66e97daca60"


def test_provider_fee_vector() -> None:
    """docs/reference/provider-v4-api.md §4: the packed fee hash and its signature by the same key acting
    as provider."""
    provider_data = json.dumps(
        {
            "environment": "ocean-compute",
            "timestamp": 1700000000.5,
            "dt": "0x2222222222222222222222222222222222222222",
            "id": "1",
        },
        separators=(",", ":"),
    ).encode()
    digest = oc.provider_fee_hash(provider_data, ADDRESS, oc.ZERO_ADDRESS, 0, 1700003600)
    assert oc.hex0x(digest) == "0xb71fd669b8fc01fa00287618d3ce4962ec03e5b08acdc234926113abcbeec0d2"
    fee = {
        "providerFeeAddress": ADDRESS,
        "providerFeeToken": oc.ZERO_ADDRESS,
        "providerFeeAmount": "0",
        "providerData": oc.hex0x(provider_data),
        "v": 28,
        "r": "0x0fccd13cb9237d6dfa1de5cac63c159e240a24e1b4ee25e7ca03532a1ed83c72",
        "s": "0x6450a3b10f1cfdb7694e05eb776b3e49fac95a93a8bf156958a84ab1d8bdb533",
        "validUntil": 1700003600,
    }
    assert oc.provider_fee_signer(fee) == ADDRESS
    # providerData goes LAST in the on-chain tuple
    assert oc.fee_tuple(fee)[-1] == provider_data
    assert oc.fee_tuple(fee)[2] == 0


@pytest.mark.parametrize(
    ("signature", "constant"),
    [
        (oc.START_ORDER_SIGNATURE, oc.START_ORDER_SELECTOR),
        (oc.REUSE_ORDER_SIGNATURE, oc.REUSE_ORDER_SELECTOR),
        ("approve(address,uint256)", oc.APPROVE_SELECTOR),
        ("transfer(address,uint256)", oc.TRANSFER_SELECTOR),
        ("balanceOf(address)", oc.BALANCE_OF_SELECTOR),
    ],
)
def test_selectors(signature: str, constant: bytes) -> None:
    assert keccak(text=signature)[:4] == constant


@pytest.mark.parametrize(
    ("signature", "topic"),
    [
        ("OrderStarted(address,address,uint256,uint256,uint256,address,uint256)", oc.ORDER_STARTED_TOPIC),
        ("OrderReused(bytes32,address,uint256,uint256)", oc.ORDER_REUSED_TOPIC),
        ("ProviderFee(address,address,uint256,bytes,uint8,bytes32,bytes32,uint256)", oc.PROVIDER_FEE_TOPIC),
    ],
)
def test_event_topics(signature: str, topic: str) -> None:
    assert oc.hex0x(keccak(text=signature)) == topic


def test_nonces_strictly_rise() -> None:
    nonces = [int(oc.next_nonce()) for _ in range(200)]
    assert all(b > a for a, b in zip(nonces, nonces[1:], strict=False))
    assert all(len(str(n)) == 13 for n in nonces)  # milliseconds
