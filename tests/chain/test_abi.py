from __future__ import annotations

import json
from importlib import resources

import pytest
from eth_abi import encode

from airflow_provider_ocean.chain import abi


def _artifact_abi(name: str) -> list[dict]:
    return json.loads((resources.files("artifacts") / f"{name}.json").read_text())["abi"]


def _canonical(param: dict) -> str:
    if param["type"].startswith("tuple"):
        return "(" + ",".join(_canonical(c) for c in param["components"]) + ")" + param["type"][5:]
    return param["type"]


@pytest.mark.parametrize(
    ("event", "artifact"),
    [
        (abi.ORDER_STARTED, "ERC20Template"),
        (abi.ORDER_REUSED, "ERC20Template"),
        (abi.PROVIDER_FEE, "ERC20Template"),
        (abi.NFT_CREATED, "ERC721Factory"),
        (abi.TOKEN_CREATED, "ERC721Factory"),
        (abi.TOKENS_DISPENSED, "Dispenser"),
    ],
)
def test_event_abis_match_the_contract_artifacts(event: abi.EventAbi, artifact: str) -> None:
    entry = next(e for e in _artifact_abi(artifact) if e["type"] == "event" and e["name"] == event.name)
    signature = f"{entry['name']}({','.join(_canonical(i) for i in entry['inputs'])})"
    assert signature == event.signature
    assert tuple(i["indexed"] for i in entry["inputs"]) == event.indexed
    assert tuple(i["name"] for i in entry["inputs"]) == event.names


@pytest.mark.parametrize(
    ("signature", "selector"),
    [
        (abi.DT_START_ORDER, "79d9d7f3"),
        (abi.DT_REUSE_ORDER, "361fef49"),
        (abi.NFT_GET_METADATA, "d2786ba4"),
        (abi.NFT_IS_DEPLOYED, "90184b02"),
        (abi.DT_GET_PUBLISHING_MARKET_FEE, "397b3743"),
        (abi.DISPENSER_DISPENSE, "1d746d83"),
        (abi.ERC20_ALLOWANCE, "dd62ed3e"),
        (abi.FRE_BUY_DT, "68c4b7e9"),
    ],
)
def test_selectors_match_the_reference(signature: str, selector: str) -> None:
    assert abi.selector(signature).hex() == selector


def test_topics_match_the_reference() -> None:
    assert abi.ORDER_STARTED.topic0 == "0xe1c4fa794edfa8f619b8257a077398950357b9c6398528f94480307352f9afcc"
    assert abi.ORDER_REUSED.topic0 == "0x526e31449ea46e2aecf9b480c8d7dfa191348ef74ffdf75b445a6ab726daa6ff"
    assert abi.PROVIDER_FEE.topic0 == "0xf8ed11cdaaf10eca2b6c941fb802cb8682afe86cac1eb93f70d0780fa062c544"


def test_split_types_keeps_tuples_whole() -> None:
    assert abi.split_types("address,(uint256,(bytes,bool)),bool[]") == [
        "address",
        "(uint256,(bytes,bool))",
        "bool[]",
    ]
    assert abi.arg_types(abi.DT_REUSE_ORDER) == (
        "bytes32",
        "(address,address,uint256,uint8,bytes32,bytes32,uint256,bytes)",
    )


def test_encode_call_is_selector_plus_arguments() -> None:
    data = abi.encode_call(abi.ERC20_APPROVE, "0x" + "11" * 20, 5)
    assert data[:4].hex() == "095ea7b3"
    assert data[4:] == encode(["address", "uint256"], ["0x" + "11" * 20, 5])


def test_revert_reasons_decode() -> None:
    error = abi.ERROR_STRING_SELECTOR + encode(["string"], ["Not enough datatokens to start Order"])
    assert abi.decode_revert_reason("0x" + error.hex()) == "Not enough datatokens to start Order"
    assert abi.decode_revert_reason(abi.PANIC_SELECTOR + encode(["uint256"], [0x11])) == "panic code 0x11"
    assert abi.decode_revert_reason("0xdeadbeef") is None
    assert abi.decode_revert_reason(None) is None


def test_decode_log_reads_indexed_and_data_fields() -> None:
    consumer = "0x" + "ab" * 20
    payer = "0x" + "cd" * 20
    log = {
        "address": "0x" + "01" * 20,
        "topics": [abi.ORDER_STARTED.topic0, "0x" + "00" * 12 + "ab" * 20, "0x" + "00" * 32],
        "data": "0x"
        + encode(["address", "uint256", "uint256", "uint256", "uint256"], [payer, 10**18, 1, 1700, 9]).hex(),
        "logIndex": "0x3",
    }
    decoded = abi.ORDER_STARTED.decode_log(log)
    assert decoded is not None
    assert decoded["consumer"].lower() == consumer
    assert decoded["payer"].lower() == payer
    assert (decoded["amount"], decoded["serviceIndex"], decoded["timestamp"]) == (10**18, 1, 1700)
    assert decoded["_logIndex"] == 3
    assert abi.ORDER_REUSED.decode_log(log) is None
    assert abi.decode_events(abi.ORDER_STARTED, {"logs": [log]}, emitter="0x" + "02" * 20) == []
