"""Publish the sandbox's sample assets: data NFTs + datatokens on chain, DDOs in the local Aquarius store."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_ocean.chain import abi
from airflow_provider_ocean.chain.abi import encode_call
from ocean_sandbox.contracts import CALL_GAS, ZERO
from ocean_sandbox.crypto import did_for

if TYPE_CHECKING:
    from airflow_provider_ocean.chain.tx import TransactionSender

log = logging.getLogger(__name__)

CREATE_NFT_WITH_ERC20 = (
    "createNftWithErc20((string,string,uint256,string,bool,address),"
    "(uint256,string[],address[],uint256[],bytes[]))"
)
CONTAINER = {
    "entrypoint": "python $ALGO",
    "image": "python",
    "tag": "3.11-slim",
    "checksum": "sha256:" + hashlib.sha256(b"python:3.11-slim (sandbox placeholder digest)").hexdigest(),
}
DATA_DIR = Path(__file__).parent / "data"
SAMPLE_FILES = ("weather.csv", "sample_algorithm.py")


@dataclass
class ServiceSpec:
    """One DDO service to publish."""

    id: str
    type: str  # "access" | "compute"
    file: str
    timeout: int = 3600
    compute: dict[str, Any] | None = None


@dataclass
class AssetSpec:
    """An asset to publish: ``kind`` is ``dataset`` or ``algorithm``."""

    key: str
    name: str
    kind: str
    services: list[ServiceSpec]
    dispenser: bool = False
    mint_to: dict[str, int] = field(default_factory=dict)


def files_checksum(files_dir: Path, name: str) -> str:
    return hashlib.sha256((files_dir / name).read_bytes()).hexdigest()


def container_checksum(container: dict[str, str]) -> str:
    return hashlib.sha256((container["entrypoint"] + container["checksum"]).encode()).hexdigest()


def encrypt_files(provider_key: str, plaintext: dict[str, Any]) -> str:
    from ecies import encrypt
    from eth_keys import keys

    public = keys.PrivateKey(bytes.fromhex(provider_key[2:])).public_key.to_hex()
    return "0x" + encrypt(public, json.dumps(plaintext, separators=(",", ":")).encode()).hex()


def create_asset(sender: TransactionSender, factory: str, name: str, symbol: str) -> tuple[str, str, int]:
    """Create a data NFT with one template-1 datatoken; return (nft, datatoken, block)."""
    owner = sender.address
    receipt = sender.transact(
        factory,
        encode_call(
            CREATE_NFT_WITH_ERC20,
            (name, symbol, 1, f"https://sandbox.invalid/{symbol}", True, owner),
            (1, [f"{name} DT", f"{symbol}-DT"], [owner, owner, ZERO, ZERO], [10**27, 0], []),
        ),
        gas=CALL_GAS * 3,
        what=f"createNftWithErc20 {name}",
    )
    nft = abi.decode_events(abi.NFT_CREATED, receipt)[0]["newTokenAddress"]
    datatoken = abi.decode_events(abi.TOKEN_CREATED, receipt)[0]["newTokenAddress"]
    return nft, datatoken, int(receipt["blockNumber"], 16)


def publish(
    sender: TransactionSender,
    addresses: dict[str, Any],
    spec: AssetSpec,
    *,
    chain_id: int,
    provider_url: str,
    provider_key: str,
    files_dir: Path,
    ddo_dir: Path,
    trusted: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Publish one asset on chain and write its DDO; return the asset facts tests and users need."""
    symbol = spec.key.upper().replace("_", "")[:8]
    nft, datatoken, block = create_asset(sender, addresses["ERC721Factory"], spec.name, symbol)
    did = did_for(nft, chain_id)
    services = []
    for service in spec.services:
        url = f"{provider_url}/sandbox/files/{service.file}"
        entry: dict[str, Any] = {
            "id": service.id,
            "type": service.type,
            "files": encrypt_files(
                provider_key,
                {
                    "datatokenAddress": datatoken,
                    "nftAddress": nft,
                    "files": [{"type": "url", "url": url, "method": "GET"}],
                },
            ),
            "datatokenAddress": datatoken,
            "serviceEndpoint": provider_url,
            "timeout": service.timeout,
        }
        if service.type == "compute":
            entry["compute"] = {
                "allowRawAlgorithm": False,
                "allowNetworkAccess": True,
                "publisherTrustedAlgorithms": [],
                "publisherTrustedAlgorithmPublishers": [],
                **(service.compute or {}),
            }
            if trusted is not None and "publisherTrustedAlgorithms" not in (service.compute or {}):
                entry["compute"]["publisherTrustedAlgorithms"] = trusted
        services.append(entry)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    metadata: dict[str, Any] = {
        "created": now,
        "updated": now,
        "type": spec.kind,
        "name": spec.name,
        "description": f"Sandbox sample {spec.kind}: {spec.name}",
        "author": "ocean-sandbox",
        "license": "CC0-1.0",
        "tags": ["sandbox"],
    }
    if spec.kind == "algorithm":
        metadata["algorithm"] = {"language": "python", "version": "1.0", "container": CONTAINER}
    ddo = {
        "@context": ["https://w3id.org/did/v1"],
        "id": did,
        "version": "4.1.0",
        "chainId": chain_id,
        "nftAddress": nft,
        "metadata": metadata,
        "services": services,
        "credentials": {"allow": [], "deny": []},
        "nft": {
            "address": nft,
            "name": spec.name,
            "symbol": symbol,
            "state": 0,
            "owner": sender.address,
            "created": now,
        },
        "datatokens": [
            {"address": datatoken, "name": f"{spec.name} DT", "symbol": f"{symbol}-DT", "serviceId": s.id}
            for s in spec.services
        ],
        "event": {"block": block, "from": sender.address, "contract": nft, "datetime": now},
        "stats": {"orders": 0, "price": {"value": 0}},
    }
    ddo_dir.mkdir(parents=True, exist_ok=True)
    (ddo_dir / f"{did}.json").write_text(json.dumps(ddo, indent=2))
    for holder, amount in spec.mint_to.items():
        sender.transact(
            datatoken, encode_call("mint(address,uint256)", holder, amount), gas=CALL_GAS, what="mint DT"
        )
    if spec.dispenser:
        sender.transact(
            datatoken,
            encode_call(
                "createDispenser(address,uint256,uint256,bool,address)",
                addresses["Dispenser"],
                10 * 10**18,
                10 * 10**18,
                True,
                ZERO,
            ),
            gas=CALL_GAS,
            what="createDispenser",
        )
    compute = next((s for s in services if s["type"] == "compute"), None)
    main = compute or services[0]
    info = {
        "did": did,
        "nft": nft,
        "datatoken": datatoken,
        "service_id": main["id"],
        "service_index": services.index(main),
        "name": spec.name,
    }
    if spec.kind == "algorithm":
        info["files_checksum"] = files_checksum(files_dir, spec.services[0].file)
        info["container_checksum"] = container_checksum(CONTAINER)
    return info


def publish_samples(
    sender: TransactionSender,
    addresses: dict[str, Any],
    *,
    chain_id: int,
    provider_url: str,
    provider_key: str,
    files_dir: Path,
    ddo_dir: Path,
    holders: list[str],
) -> dict[str, dict[str, Any]]:
    """Publish the standard sample assets; each holder gets 100 datatokens of each."""
    mint = {h: 100 * 10**18 for h in holders}
    common = {
        "chain_id": chain_id,
        "provider_url": provider_url,
        "provider_key": provider_key,
        "files_dir": files_dir,
        "ddo_dir": ddo_dir,
    }
    assets: dict[str, dict[str, Any]] = {}
    algo = AssetSpec(
        "algorithm",
        "Station statistics",
        "algorithm",
        [ServiceSpec("0", "access", "sample_algorithm.py")],
        mint_to=mint,
    )
    assets["algorithm"] = publish(sender, addresses, algo, **common)
    other = AssetSpec(
        "algorithm_untrusted",
        "Untrusted statistics",
        "algorithm",
        [ServiceSpec("0", "access", "sample_algorithm.py")],
        mint_to=mint,
    )
    assets["algorithm_untrusted"] = publish(sender, addresses, other, **common)
    dataset = AssetSpec(
        "dataset",
        "Weather observations",
        "dataset",
        [ServiceSpec("0", "access", "weather.csv"), ServiceSpec("1", "compute", "weather.csv")],
        mint_to=mint,
    )
    assets["dataset"] = publish(sender, addresses, dataset, **common)
    raw = AssetSpec(
        "dataset_raw",
        "Weather observations (raw algorithms allowed)",
        "dataset",
        [ServiceSpec("compute", "compute", "weather.csv", compute={"allowRawAlgorithm": True})],
        dispenser=True,
        mint_to=mint,
    )
    assets["dataset_raw"] = publish(sender, addresses, raw, **common)
    trusted_entry = {
        "did": assets["algorithm"]["did"],
        "filesChecksum": assets["algorithm"]["files_checksum"],
        "containerSectionChecksum": assets["algorithm"]["container_checksum"],
    }
    trusted = AssetSpec(
        "dataset_trusted",
        "Weather observations (one trusted algorithm)",
        "dataset",
        [ServiceSpec("1", "compute", "weather.csv")],
        mint_to=mint,
    )
    assets["dataset_trusted"] = publish(sender, addresses, trusted, trusted=[trusted_entry], **common)
    return assets
