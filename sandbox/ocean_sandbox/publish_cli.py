"""``ocean-sandbox publish dataset|algorithm``: publish your own data or algorithm to a running sandbox.

It publishes as a client does, with :func:`ocean_sandbox.publish.publish` (NFT + datatoken from the factory,
files and DDO encrypted through the sandbox Provider's ``POST /api/services/encrypt``, ``setMetaData``), then
waits until the sandbox's Aquarius has indexed the DDO and prints the DID (``--json``: the asset facts).

A local file is copied into the state's ``files/`` folder and served under ``/sandbox/files/<name>`` (the
Provider downloads it from there, as it would from any URL), so it survives ``down``/``up`` with the chain.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from ocean_sandbox import accounts
from ocean_sandbox.publish import (
    AssetSpec,
    ServiceSpec,
    container_checksum,
    files_checksum,
    publish,
    route_encryptor,
)
from ocean_sandbox.routes import FILE_ROUTE
from ocean_sandbox.state import load_state

if TYPE_CHECKING:
    import argparse

INDEX_WAIT = 30.0
ONE = 10**18


def add_parser(sub: Any) -> None:
    """Add the ``publish`` subcommand to the ``ocean-sandbox`` parser.

    :param sub: the subparsers object of the main parser.
    """
    parser = sub.add_parser("publish", help="publish your own dataset or algorithm to the running sandbox")
    kinds = parser.add_subparsers(dest="kind", required=True)
    dataset = kinds.add_parser("dataset", help="a dataset with a compute service, from a local file or URL")
    dataset.add_argument("source", help="a local file (served by the sandbox) or an http(s) URL")
    dataset.add_argument(
        "--allow-raw-algorithm", action="store_true", help="accept algorithms sent as code or URL"
    )
    dataset.add_argument(
        "--trusted-algorithm",
        action="append",
        default=[],
        metavar="DID",
        help="a published algorithm this dataset trusts (repeatable; the Provider's checksums)",
    )
    dataset.add_argument(
        "--trusted-publisher",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="trust every algorithm this address published (repeatable)",
    )
    algorithm = kinds.add_parser("algorithm", help="an algorithm from a local script, with its container")
    algorithm.add_argument("source", help="the algorithm's script (a local file)")
    algorithm.add_argument("--image", default="python", help="container image (default: python)")
    algorithm.add_argument("--tag", default="3.11-slim", help="image tag (default: 3.11-slim)")
    algorithm.add_argument(
        "--entrypoint", default="python $ALGO", help="command run in the container; $ALGO = the script"
    )
    algorithm.add_argument(
        "--checksum",
        default=None,
        help="the image's digest, sha256:... (real C2D checks it; default: a sandbox placeholder)",
    )
    algorithm.add_argument("--language", default="python", help="the metadata's algorithm language")
    for kind in (dataset, algorithm):
        kind.add_argument("--name", default=None, help="asset name (default: the file name)")
        kind.add_argument("--description", default=None)
        kind.add_argument("--author", default="ocean-sandbox user")
        kind.add_argument("--license", default="CC0-1.0")
        kind.add_argument("--timeout", type=int, default=3600, help="the service's timeout in seconds")
        kind.add_argument(
            "--pricing",
            choices=("free", "dispenser", "fixed"),
            default="free",
            help="free: the sandbox's consumer accounts get 100 datatokens each; dispenser: a free "
            "dispenser; fixed: a fixed-rate exchange in OCEAN (--price)",
        )
        kind.add_argument("--price", type=float, default=1.0, help="OCEAN per datatoken with --pricing fixed")
        kind.add_argument("--json", action="store_true", help="print the asset facts as JSON")


def _serve_local_file(source: Path, files_dir: Path) -> str:
    """Copy ``source`` into the served files folder; its name there (content-addressed, route-safe)."""
    content = source.read_bytes()
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", source.name).lstrip(".") or "file"
    name = f"{hashlib.sha256(content).hexdigest()[:12]}-{stem}"
    if not FILE_ROUTE.match(f"/sandbox/files/{name}"):
        raise ValueError(f"cannot serve a file named {source.name!r}")
    files_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, files_dir / name)
    return name


def _service(source: str, service_type: str, files_dir: Path, timeout: int) -> ServiceSpec:
    if re.match(r"^https?://", source):
        return ServiceSpec("0", service_type, "", timeout=timeout, url=source)
    path = Path(source)
    if not path.is_file():
        raise SystemExit(f"ocean-sandbox publish: no such file: {source}")
    return ServiceSpec("0", service_type, _serve_local_file(path, files_dir), timeout=timeout)


def trusted_algorithm(did: str, state: dict[str, Any]) -> dict[str, str]:
    """A ``publisherTrustedAlgorithms`` entry for a published algorithm, with the checksums the Provider
    recomputes: the files of its first service (decrypted with the sandbox Provider's key and downloaded)
    and its container section.

    :param did: the algorithm's DID (served by the sandbox's Aquarius).
    :param state: the sandbox state.
    """
    from ecies import decrypt

    response = requests.get(f"{state['provider_url']}/api/aquarius/assets/ddo/{did}", timeout=30)
    if response.status_code != 200:
        raise SystemExit(f"ocean-sandbox publish: algorithm {did} is not known to the sandbox")
    ddo = response.json()
    container = ((ddo.get("metadata") or {}).get("algorithm") or {}).get("container")
    if not container:
        raise SystemExit(f"ocean-sandbox publish: {did} is not an algorithm")
    encrypted = bytes.fromhex(str(ddo["services"][0]["files"]).removeprefix("0x"))
    plain = json.loads(decrypt(state["provider"]["key"], encrypted))
    contents = []
    for file_object in plain["files"] if isinstance(plain, dict) else plain:
        download = requests.get(file_object["url"], timeout=30)
        download.raise_for_status()
        contents.append(download.content)
    return {
        "did": did,
        "filesChecksum": files_checksum(contents),
        "containerSectionChecksum": container_checksum(container),
    }


def _spec(args: argparse.Namespace, state: dict[str, Any], files_dir: Path) -> AssetSpec:
    name = args.name or Path(args.source.rstrip("/")).name or args.kind
    key = re.sub(r"[^A-Za-z0-9]", "", name)[:8] or args.kind
    holders = [accounts.account(i).address for i in (accounts.CONSUMER, accounts.OTHER)]
    pricing: dict[str, Any] = {
        "mint_to": {h: 100 * ONE for h in holders} if args.pricing == "free" else {},
        "dispenser": args.pricing == "dispenser",
        "fixed_rate": int(args.price * ONE) if args.pricing == "fixed" else None,
    }
    common = {"description": args.description, "author": args.author, "license": args.license, "tags": ()}
    if args.kind == "algorithm":
        checksum = (
            args.checksum
            or "sha256:"
            + hashlib.sha256(f"{args.image}:{args.tag} (sandbox placeholder digest)".encode()).hexdigest()
        )
        if not checksum.startswith("sha256:"):
            raise SystemExit("ocean-sandbox publish: --checksum must start with sha256:")
        if re.match(r"^https?://", args.source):
            raise SystemExit("ocean-sandbox publish: an algorithm comes from a local script")
        container = {"entrypoint": args.entrypoint, "image": args.image, "tag": args.tag}
        container["checksum"] = checksum
        service = _service(args.source, "access", files_dir, args.timeout)
        return AssetSpec(
            key,
            name,
            "algorithm",
            [service],
            container=container,
            language=args.language,
            **pricing,
            **common,
        )
    service = _service(args.source, "compute", files_dir, args.timeout)
    service.compute = {
        "allowRawAlgorithm": bool(args.allow_raw_algorithm),
        "publisherTrustedAlgorithms": [trusted_algorithm(did, state) for did in args.trusted_algorithm],
        "publisherTrustedAlgorithmPublishers": list(args.trusted_publisher),
    }
    return AssetSpec(key, name, "dataset", [service], **pricing, **common)


def wait_indexed(provider_url: str, did: str, timeout: float = INDEX_WAIT) -> dict[str, Any]:
    """Wait until the sandbox's Aquarius serves ``did`` (as ocean.py's ``wait_for_ddo``); its DDO."""
    deadline = time.monotonic() + timeout
    while True:
        response = requests.get(f"{provider_url}/api/aquarius/assets/ddo/{did}", timeout=10)
        if response.status_code == 200:
            return response.json()
        if time.monotonic() > deadline:
            raise SystemExit(f"ocean-sandbox publish: {did} was not indexed within {timeout:.0f} s")
        time.sleep(0.2)


def run(args: argparse.Namespace, state_dir: Path) -> int:
    """Publish what ``args`` describe to the sandbox of ``state_dir``; print the DID (or JSON).

    :param args: the parsed ``publish`` arguments.
    :param state_dir: the sandbox's state directory.
    """
    from airflow_provider_ocean.chain.rpc import JsonRpcClient
    from airflow_provider_ocean.chain.tx import TransactionSender

    state = load_state(state_dir)
    try:
        alive = requests.get(state["provider_url"] + "/", timeout=5).ok
    except requests.RequestException:
        alive = False
    if not alive:
        raise SystemExit("ocean-sandbox publish: the sandbox is not running; run `ocean-sandbox up` first")
    if state.get("api") == "node":
        raise SystemExit("ocean-sandbox publish: needs the Provider personality (its encrypt route)")
    files_dir = state_dir / "files"
    spec = _spec(args, state, files_dir)
    sender = TransactionSender(JsonRpcClient(state["rpc_url"]), accounts.account(accounts.DEPLOYER).key)
    info = publish(
        sender,
        state["addresses"],
        spec,
        chain_id=int(state["chain_id"]),
        provider_url=state["provider_url"],
        provider_address=state["provider"]["address"],
        encrypt=route_encryptor(state["provider_url"], int(state["chain_id"])),
        files_dir=files_dir,
    )
    wait_indexed(state["provider_url"], info["did"])
    info.update({"kind": spec.kind, "pricing": args.pricing, "publisher": sender.address})
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(info["did"])
    return 0
