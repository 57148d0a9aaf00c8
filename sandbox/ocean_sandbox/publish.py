"""Publish assets on the sandbox chain as a client does: NFT + datatoken, encrypted files, ``setMetaData``.

One way for both the sample assets of ``ocean-sandbox up`` and ``ocean-sandbox publish``
(:mod:`ocean_sandbox.publish_cli`); the DDOs reach the Aquarius store through the chain's metadata events
(:mod:`ocean_sandbox.aquarius`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import lzma
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_ocean.chain import abi
from airflow_provider_ocean.chain.abi import encode_call
from ocean_sandbox.aquarius import FLAG_COMPRESSED, FLAG_ENCRYPTED, SET_METADATA
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
#: bytes -> the ciphertext as ``0x`` hex, encrypted to the Provider's key
Encryptor = Callable[[bytes], str]


@dataclass
class ServiceSpec:
    """One DDO service to publish."""

    id: str
    type: str  # "access" | "compute"
    file: str  # a file name under the state's files/ (served under /sandbox/files/), unless ``url`` is set
    timeout: int = 3600
    compute: dict[str, Any] | None = None
    url: str | None = None


@dataclass
class AssetSpec:
    """An asset to publish: ``kind`` is ``dataset`` or ``algorithm``."""

    key: str
    name: str
    kind: str
    services: list[ServiceSpec]
    dispenser: bool = False
    mint_to: dict[str, int] = field(default_factory=dict)
    fixed_rate: int | None = None  # OCEAN wei per datatoken on the FixedRateExchange (which may mint)
    description: str | None = None
    author: str = "ocean-sandbox"
    license: str = "CC0-1.0"
    tags: tuple[str, ...] = ("sandbox",)
    container: dict[str, str] | None = None  # algorithms; default :data:`CONTAINER`
    language: str = "python"


def files_checksum(contents: list[bytes]) -> str:
    """The Provider's ``filesChecksum`` of an algorithm: the sha256 hex digests of its files' contents, in
    order, concatenated (what the sandbox Provider recomputes when it checks a trusted algorithm)."""
    return "".join(hashlib.sha256(content).hexdigest() for content in contents).lower()


def container_checksum(container: dict[str, str]) -> str:
    """The Provider's ``containerSectionChecksum``: sha256 hex of the entrypoint + the image checksum."""
    return hashlib.sha256((container["entrypoint"] + container["checksum"]).encode()).hexdigest()


def local_encryptor(provider_key: str) -> Encryptor:
    """Encrypt to the Provider's key in-process, as its ``encrypt`` route does (``up``, before the server
    runs)."""
    from ecies import encrypt
    from eth_keys import keys

    public = keys.PrivateKey(bytes.fromhex(provider_key.removeprefix("0x"))).public_key.to_hex()
    return lambda raw: "0x" + encrypt(public, raw).hex()


def route_encryptor(provider_url: str, chain_id: int) -> Encryptor:
    """Encrypt through the Provider's ``POST /api/services/encrypt?chainId=N`` (raw body,
    ``application/octet-stream``; the answer is hex text, with or without ``0x``)."""
    import requests

    def encrypt(raw: bytes) -> str:
        response = requests.post(
            f"{provider_url}/api/services/encrypt",
            params={"chainId": chain_id},
            data=raw,
            headers={"Content-Type": "application/octet-stream"},
            timeout=30,
        )
        if response.status_code != 201:
            raise RuntimeError(f"encrypt failed: HTTP {response.status_code}: {response.text[:300]}")
        return "0x" + response.text.strip().removeprefix("0x")

    return encrypt


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


def set_metadata(
    sender: TransactionSender,
    nft: str,
    ddo: dict[str, Any],
    *,
    provider_url: str,
    provider_address: str,
    encrypt: Encryptor,
    flags: int = FLAG_COMPRESSED | FLAG_ENCRYPTED,
) -> dict[str, Any]:
    """``setMetaData`` on the NFT as ocean.py does: the compact JSON of ``ddo``, LZMA-compressed (flag 1)
    then encrypted to the Provider (flag 2), with ``metaDataHash`` = sha256 of the JSON; the receipt.

    :param sender: the NFT owner (it holds the metadata role from the factory).
    :param nft: the data NFT.
    :param ddo: the DDO as published (Aquarius adds its own fields when it indexes the event).
    :param provider_url: the decryptor URL written into the event.
    :param provider_address: the decryptor address.
    :param encrypt: how to encrypt (:func:`route_encryptor` or :func:`local_encryptor`).
    :param flags: the flags byte.
    """
    raw = json.dumps(ddo, separators=(",", ":")).encode()
    document = lzma.compress(raw) if flags & FLAG_COMPRESSED else raw
    if flags & FLAG_ENCRYPTED:
        document = bytes.fromhex(encrypt(document).removeprefix("0x"))
    return sender.transact(
        nft,
        encode_call(
            SET_METADATA,
            0,
            provider_url,
            provider_address,
            bytes([flags]),
            document,
            hashlib.sha256(raw).digest(),
            [],
        ),
        gas=CALL_GAS,
        what="setMetaData",
    )


def build_ddo(
    spec: AssetSpec, *, did: str, nft: str, chain_id: int, services: list[dict[str, Any]]
) -> dict[str, Any]:
    """The DDO a publisher writes (version 4.1.0; no Aquarius fields)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    metadata: dict[str, Any] = {
        "created": now,
        "updated": now,
        "type": spec.kind,
        "name": spec.name,
        "description": spec.description or f"Sandbox sample {spec.kind}: {spec.name}",
        "author": spec.author,
        "license": spec.license,
        "tags": list(spec.tags),
    }
    if spec.kind == "algorithm":
        metadata["algorithm"] = {
            "language": spec.language,
            "version": "1.0",
            "container": dict(spec.container or CONTAINER),
        }
    return {
        "@context": ["https://w3id.org/did/v1"],
        "id": did,
        "version": "4.1.0",
        "chainId": chain_id,
        "nftAddress": nft,
        "metadata": metadata,
        "services": services,
        "credentials": {"allow": [], "deny": []},
    }


def _service_entry(
    service: ServiceSpec,
    *,
    nft: str,
    datatoken: str,
    provider_url: str,
    encrypt: Encryptor,
    trusted: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    url = service.url or f"{provider_url}/sandbox/files/{service.file}"
    plaintext = {
        "datatokenAddress": datatoken,
        "nftAddress": nft,
        "files": [{"type": "url", "url": url, "method": "GET"}],
    }
    entry: dict[str, Any] = {
        "id": service.id,
        "type": service.type,
        "files": encrypt(json.dumps(plaintext, separators=(",", ":")).encode()),
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
    return entry


def _file_content(service: ServiceSpec, files_dir: Path) -> bytes:
    if service.url is None:
        return (files_dir / service.file).read_bytes()
    import requests

    response = requests.get(service.url, timeout=30)
    response.raise_for_status()
    return response.content


def publish(
    sender: TransactionSender,
    addresses: dict[str, Any],
    spec: AssetSpec,
    *,
    chain_id: int,
    provider_url: str,
    provider_address: str,
    encrypt: Encryptor,
    files_dir: Path,
    trusted: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Publish one asset on chain the way a client does: data NFT + datatoken from the factory, files
    encrypted to the Provider, the DDO set with ``setMetaData`` (the indexer of :mod:`ocean_sandbox.aquarius`
    stores it), then the pricing. Returns the asset facts tests and users need.

    :param sender: the publisher.
    :param addresses: the contract addresses of the sandbox.
    :param spec: what to publish.
    :param chain_id: the chain id.
    :param provider_url: the Provider the files are encrypted for (the services' ``serviceEndpoint``).
    :param provider_address: the Provider's address (the DDO's decryptor).
    :param encrypt: how files and DDO get encrypted (:func:`route_encryptor` or :func:`local_encryptor`).
    :param files_dir: where files named by :attr:`ServiceSpec.file` live (served under ``/sandbox/files/``).
    :param trusted: ``publisherTrustedAlgorithms`` of compute services that do not set their own.
    """
    symbol = re.sub(r"[^A-Z0-9]", "", spec.key.upper())[:8] or "ASSET"
    nft, datatoken, block = create_asset(sender, addresses["ERC721Factory"], spec.name, symbol)
    did = did_for(nft, chain_id)
    common = {"nft": nft, "datatoken": datatoken, "provider_url": provider_url, "encrypt": encrypt}
    services = [_service_entry(s, trusted=trusted, **common) for s in spec.services]  # type: ignore[arg-type]
    ddo = build_ddo(spec, did=did, nft=nft, chain_id=chain_id, services=services)
    receipt = set_metadata(
        sender, nft, ddo, provider_url=provider_url, provider_address=provider_address, encrypt=encrypt
    )
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
    if spec.fixed_rate is not None:
        sender.transact(
            datatoken,
            encode_call(
                "createFixedRate(address,address[],uint256[])",
                addresses["FixedPrice"],
                [addresses["Ocean"], sender.address, sender.address, ZERO],
                [18, 18, spec.fixed_rate, 0, 1],
            ),
            gas=CALL_GAS,
            what="createFixedRate",
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
        "block": block,
        "tx": receipt.get("transactionHash"),
    }
    if spec.kind == "algorithm":
        info["files_checksum"] = files_checksum([_file_content(spec.services[0], files_dir)])
        info["container_checksum"] = container_checksum(ddo["metadata"]["algorithm"]["container"])
    return info


def publish_samples(
    sender: TransactionSender,
    addresses: dict[str, Any],
    *,
    chain_id: int,
    provider_url: str,
    provider_key: str,
    provider_address: str,
    files_dir: Path,
    holders: list[str],
) -> dict[str, dict[str, Any]]:
    """Publish the standard sample assets; each holder gets 100 datatokens of each. The files and DDOs are
    encrypted in-process (the server is not running yet), as the Provider's ``encrypt`` route does."""
    mint = {h: 100 * 10**18 for h in holders}
    common: dict[str, Any] = {
        "chain_id": chain_id,
        "provider_url": provider_url,
        "provider_address": provider_address,
        "encrypt": local_encryptor(provider_key),
        "files_dir": files_dir,
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
