"""The sandbox's Aquarius indexer on a scripted chain: foreign NFTs are ignored, the last block is kept."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from eth_abi import encode
from eth_account import Account

from ocean_sandbox.aquarius import METADATA_CREATED, MetadataIndexer
from ocean_sandbox.crypto import did_for

FACTORY = "0x" + "fa" * 20
NFT = Account.create().address
CHAIN_ID = 8996


def metadata_log(nft: str, ddo: dict[str, Any], block: int) -> dict[str, Any]:
    raw = json.dumps(ddo).encode()
    data = encode(
        ["uint8", "string", "bytes", "bytes", "bytes32", "uint256", "uint256"],
        [0, "http://provider", b"\x00", raw, hashlib.sha256(raw).digest(), 0, block],
    )
    return {
        "address": nft.lower(),
        "topics": [METADATA_CREATED.topic0, "0x" + "00" * 12 + "11" * 20],
        "data": "0x" + data.hex(),
        "blockNumber": hex(block),
        "logIndex": "0x0",
        "transactionHash": "0x" + f"{block:064x}",
    }


class ScriptedRpc:
    """Answers the reads the indexer makes; ``listed`` = the NFTs the factory created."""

    def __init__(self, head: int, logs: list[dict[str, Any]], listed: set[str]) -> None:
        self.head, self.logs, self.listed, self.ranges = head, logs, listed, []

    def block_number(self) -> int:
        return self.head

    def get_logs(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        low, high = int(params["fromBlock"], 16), int(params["toBlock"], 16)
        self.ranges.append((low, high))
        return [e for e in self.logs if low <= int(e["blockNumber"], 16) <= high]

    def call(self, to: str, data: bytes, **_: Any) -> bytes:
        if to == FACTORY:  # erc721List(nft): the nft itself when the factory made it, else 0x0
            asked = "0x" + data[-20:].hex()
            known = any(asked.lower() == n.lower() for n in self.listed)
            return encode(["address"], [asked if known else "0x" + "00" * 20])
        raise RuntimeError("not scripted")

    def get_block(self, block: int) -> dict[str, Any]:
        return {"timestamp": hex(1_700_000_000 + block)}

    def get_transaction(self, tx: str) -> dict[str, Any]:
        return {"from": "0x" + "11" * 20}


def ddo_for(nft: str) -> dict[str, Any]:
    return {
        "@context": ["https://w3id.org/did/v1"],
        "id": did_for(nft, CHAIN_ID),
        "version": "4.1.0",
        "chainId": CHAIN_ID,
        "nftAddress": nft,
        "metadata": {"type": "dataset", "name": "n", "description": "d", "author": "a", "license": "l"},
        "services": [
            {
                "id": "0",
                "type": "access",
                "files": "0x00",
                "datatokenAddress": "0x" + "22" * 20,
                "serviceEndpoint": "http://provider",
                "timeout": 0,
            }
        ],
    }


def indexer(rpc: ScriptedRpc, tmp_path: Path) -> MetadataIndexer:
    return MetadataIndexer(
        rpc,  # type: ignore[arg-type]
        factory=FACTORY,
        chain_id=CHAIN_ID,
        provider_key="0x" + "01" * 32,
        state_dir=tmp_path,
    )


def test_foreign_nfts_are_ignored_and_the_last_block_survives_a_restart(tmp_path: Path) -> None:
    foreign = Account.create().address
    logs = [metadata_log(foreign, ddo_for(foreign), 3), metadata_log(NFT, ddo_for(NFT), 5)]
    rpc = ScriptedRpc(head=7, logs=logs, listed={NFT})
    assert indexer(rpc, tmp_path).run_once() == 1
    stored = sorted(p.name for p in (tmp_path / "ddos").iterdir())
    assert stored == [f"{did_for(NFT, CHAIN_ID)}.json"]  # the foreign NFT's DDO is not indexed
    ddo = json.loads((tmp_path / "ddos" / stored[0]).read_text())
    assert ddo["event"]["block"] == 5
    assert ddo["event"]["contract"] == NFT
    assert json.loads((tmp_path / "aquarius-index.json").read_text())["last_block"] == 7

    rpc.head = 9  # a new indexer (a restarted server) resumes after block 7
    rpc.ranges.clear()
    assert indexer(rpc, tmp_path).run_once() == 0
    assert rpc.ranges == [(8, 9)]
    assert indexer(rpc, tmp_path).poll_interval <= 1.0
