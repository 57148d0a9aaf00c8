"""The sandbox's Aquarius indexer: DDOs come from the chain's ``MetadataCreated``/``MetadataUpdated`` events.

What it does, as Aquarius's events monitor and processors do (oceanprotocol/aquarius
``aquarius/events/processors.py``, ``aquarius/events/decryptor.py``):

* only events of data NFTs of the sandbox's factory count (``ERC721Factory.erc721List(nft) == nft``);
* the event's ``data`` is decoded by its ``flags``: bit 2 = ECIES-encrypted to the Provider's key (decrypted
  first), bit 1 = LZMA-compressed; the result's sha256 must equal the event's ``metaDataHash``;
* the DDO must validate (:func:`ocean_sandbox.aquarius_api.validate_ddo`) and its ``id`` be the NFT's DID;
* Aquarius adds ``event`` (``tx``, ``block``, ``from``, ``contract``, ``datetime``), ``nft`` (``address``,
  ``name``, ``symbol``, ``state``, ``tokenURI``, ``owner``, ``created``), ``datatokens`` (one per service),
  ``stats`` and ``purgatory``;
* a ``MetadataCreated`` for a DID already stored is ignored; a ``MetadataUpdated`` replaces the stored DDO
  unless it is the same transaction or an older block (an unknown DID is created).

The indexer is one background thread of the sandbox server polling ``eth_getLogs`` every
:data:`POLL_INTERVAL` seconds; the last indexed block is kept in ``<state dir>/aquarius-index.json``, so a
restarted server resumes where it stopped. ``ocean-sandbox up`` runs one pass itself right after publishing
the sample assets, so they are served as soon as ``up`` returns.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_ocean.chain.abi import EventAbi
from airflow_provider_ocean.chain.tx import call_function
from ocean_sandbox.aquarius_api import validate_ddo
from ocean_sandbox.crypto import did_for

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from airflow_provider_ocean.chain.rpc import JsonRpcClient

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5
INDEX_FILE = "aquarius-index.json"
LOG_CHUNK = 5000  # blocks per eth_getLogs
_METADATA_ARGS = ("state", "decryptorUrl", "flags", "data", "metaDataHash", "timestamp", "blockNumber")
_METADATA_TYPES = "uint8,string,bytes,bytes,bytes32,uint256,uint256"
METADATA_CREATED = EventAbi(
    f"MetadataCreated(address,{_METADATA_TYPES})", ("createdBy", *_METADATA_ARGS), (True, *[False] * 7)
)
METADATA_UPDATED = EventAbi(
    f"MetadataUpdated(address,{_METADATA_TYPES})", ("updatedBy", *_METADATA_ARGS), (True, *[False] * 7)
)
SET_METADATA = "setMetaData(uint8,string,string,bytes,bytes,bytes32,(address,uint8,bytes32,bytes32)[])"
FLAG_COMPRESSED = 1
FLAG_ENCRYPTED = 2
_DID_RE = re.compile(r"did:op:[0-9a-fA-F]{64}")


def decode_document(flags: bytes, data: bytes, provider_key: str) -> bytes:
    """Undo a DDO's encoding by its flags byte: ECIES decryption (bit 2) first, then LZMA (bit 1).

    :param flags: the event's ``flags`` (first byte counts; empty = 0).
    :param data: the event's ``data``.
    :param provider_key: the key the DDO was encrypted to (the sandbox Provider's).
    """
    flag = flags[0] if flags else 0
    raw = data
    if flag & FLAG_ENCRYPTED:
        from ecies import decrypt

        raw = decrypt(provider_key, raw)
    if flag & FLAG_COMPRESSED:
        import lzma

        raw = lzma.decompress(raw)
    return raw


class DdoStore:
    """The DDO files (``<did>.json``) both personalities serve and check orders against.

    :param ddo_dir: the folder.
    """

    def __init__(self, ddo_dir: Path) -> None:
        self.ddo_dir = ddo_dir

    def read(self, did: str) -> dict[str, Any] | None:
        """The stored DDO of ``did``, or ``None``."""
        if not _DID_RE.fullmatch(did):
            return None
        try:
            return json.loads((self.ddo_dir / f"{did}.json").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def write(self, ddo: dict[str, Any]) -> None:
        """Store ``ddo`` atomically (readers never see half a file)."""
        self.ddo_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.ddo_dir / f".{ddo['id']}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_text(json.dumps(ddo, indent=2))
        tmp.replace(self.ddo_dir / f"{ddo['id']}.json")

    def all(self) -> Iterator[dict[str, Any]]:
        """Every stored DDO, in DID order."""
        if not self.ddo_dir.is_dir():
            return
        for path in sorted(self.ddo_dir.glob("did:op:*.json")):
            try:
                yield json.loads(path.read_text())
            except (FileNotFoundError, ValueError):
                continue


class MetadataIndexer:
    """Index the metadata events of the factory's data NFTs into a :class:`DdoStore`.

    :param rpc: the chain client.
    :param factory: the ``ERC721Factory`` address.
    :param chain_id: the chain id (for the DID rule).
    :param provider_key: the Provider's key, which decrypts the DDOs.
    :param state_dir: where :data:`INDEX_FILE` (the last indexed block) lives.
    :param store: where DDOs go (default ``<state_dir>/ddos``).
    :param poll_interval: seconds between polls of the background thread (at most 1).
    """

    def __init__(
        self,
        rpc: JsonRpcClient,
        *,
        factory: str,
        chain_id: int,
        provider_key: str,
        state_dir: Path,
        store: DdoStore | None = None,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.rpc = rpc
        self.factory = factory
        self.chain_id = chain_id
        self.provider_key = provider_key
        self.index_file = state_dir / INDEX_FILE
        self.store = store or DdoStore(state_dir / "ddos")
        self.poll_interval = min(poll_interval, 1.0)
        self._ours: dict[str, bool] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- the last block ------------------------------------------------------------------------------
    def last_block(self) -> int:
        try:
            return int(json.loads(self.index_file.read_text())["last_block"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return -1

    def _save_last_block(self, block: int) -> None:
        tmp = self.index_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"last_block": block, "chain_id": self.chain_id}))
        tmp.replace(self.index_file)

    # -- one pass ------------------------------------------------------------------------------------
    def run_once(self) -> int:
        """Index every block after the last indexed one up to the head; the number of DDOs stored."""
        with self._lock:
            head = self.rpc.block_number()
            start = self.last_block() + 1
            if start > head + 1:  # the chain is younger than the index (a new chain): start over
                start = 0
            stored = 0
            while start <= head:
                end = min(head, start + LOG_CHUNK - 1)
                logs = self.rpc.get_logs(
                    {
                        "fromBlock": hex(start),
                        "toBlock": hex(end),
                        "topics": [[METADATA_CREATED.topic0, METADATA_UPDATED.topic0]],
                    }
                )
                for entry in sorted(logs, key=_log_order):
                    try:
                        stored += self._process(entry)
                    except Exception:
                        log.exception("cannot index metadata event of tx %s", entry.get("transactionHash"))
                self._save_last_block(end)
                start = end + 1
            return stored

    def _is_ours(self, nft: str) -> bool:
        if nft not in self._ours:
            try:
                (listed,) = call_function(self.rpc, self.factory, "erc721List(address)", (nft,), ["address"])
                self._ours[nft] = str(listed).lower() == nft.lower()
            except Exception:
                return False
        return self._ours[nft]

    def _process(self, entry: dict[str, Any]) -> int:
        event = METADATA_CREATED.decode_log(entry)
        created = event is not None
        event = event or METADATA_UPDATED.decode_log(entry)
        if event is None:
            return 0
        nft = event["_address"]
        tx = str(entry["transactionHash"])
        block = int(entry["blockNumber"], 16)
        if not self._is_ours(nft):
            log.info("ignoring metadata of %s (tx %s): nft not deployed by our factory", nft, tx)
            return 0
        try:
            raw = decode_document(event["flags"], event["data"], self.provider_key)
        except Exception as exc:
            log.warning("cannot decode the DDO of %s (tx %s): %s", nft, tx, exc)
            return 0
        if hashlib.sha256(raw).digest() != event["metaDataHash"]:
            log.warning("DDO of %s (tx %s) does not match its metaDataHash", nft, tx)
            return 0
        try:
            ddo = json.loads(raw)
        except ValueError:
            log.warning("DDO of %s (tx %s) is not JSON", nft, tx)
            return 0
        errors = validate_ddo(ddo) if isinstance(ddo, dict) else {"ddo": "not an object"}
        if errors or ddo.get("id") != did_for(nft, self.chain_id):
            log.warning("DDO of %s (tx %s) is invalid: %s", nft, tx, errors or "id is not the NFT's DID")
            return 0
        old = self.store.read(ddo["id"])
        if old is not None:
            old_event = old.get("event") or {}
            if created or old_event.get("tx") == tx or block <= int(old_event.get("block", -1)):
                return 0
        self.store.write(self._record(ddo, nft, tx, block, old))
        log.info("indexed %s (%s) from tx %s", ddo["id"], "update" if old else "new", tx)
        return 1

    def _call(self, to: str, signature: str, args: tuple[Any, ...], out: str) -> Any:
        try:
            return call_function(self.rpc, to, signature, args, [out])[0]
        except Exception:
            return ""

    def _record(
        self, ddo: dict[str, Any], nft: str, tx: str, block: int, old: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The stored record: the DDO plus Aquarius's own fields."""
        stamp = int(self.rpc.get_block(block)["timestamp"], 16)
        block_time = datetime.fromtimestamp(stamp, tz=timezone.utc).replace(tzinfo=None).isoformat()
        sender = _checksum((self.rpc.get_transaction(tx) or {}).get("from", ""))
        try:
            out = ["string", "string", "uint8", "bool"]
            state = int(call_function(self.rpc, nft, "getMetaData()", (), out)[2])
        except Exception:
            state = 0
        record = dict(ddo)
        record["event"] = {"tx": tx, "block": block, "from": sender, "contract": nft, "datetime": block_time}
        record["nft"] = {
            "address": nft,
            "name": self._call(nft, "name()", (), "string"),
            "symbol": self._call(nft, "symbol()", (), "string"),
            "state": state,
            "tokenURI": self._call(nft, "tokenURI(uint256)", (1,), "string"),
            "owner": _checksum(self._call(nft, "ownerOf(uint256)", (1,), "address")),
            "created": ((old or {}).get("nft") or {}).get("created") or block_time,
        }
        record["datatokens"] = [
            {
                "address": service.get("datatokenAddress"),
                "name": self._call(service["datatokenAddress"], "name()", (), "string"),
                "symbol": self._call(service["datatokenAddress"], "symbol()", (), "string"),
                "serviceId": service.get("id"),
            }
            for service in ddo.get("services", [])
        ]
        record["stats"] = {"allocated": 0, "orders": 0, "price": {}}
        record["purgatory"] = {"state": bool(((old or {}).get("purgatory") or {}).get("state", False))}
        return record

    # -- the background thread -----------------------------------------------------------------------
    def start(self) -> None:
        """Run :meth:`run_once` every :attr:`poll_interval` seconds in a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._loop, name="aquarius-indexer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # the chain may be restarting: try again at the next tick
                log.warning("indexer pass failed: %s", exc)
            self._stop.wait(self.poll_interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def indexer_for(state_dir: Path, state: dict[str, Any]) -> MetadataIndexer:
    """The indexer of a sandbox state (as ``ocean-sandbox up`` wrote it)."""
    from airflow_provider_ocean.chain.rpc import JsonRpcClient

    return MetadataIndexer(
        JsonRpcClient(state["rpc_url"]),
        factory=state["addresses"]["ERC721Factory"],
        chain_id=int(state["chain_id"]),
        provider_key=state["provider"]["key"],
        state_dir=state_dir,
    )


def _checksum(address: Any) -> str:
    from eth_utils import to_checksum_address

    try:
        return to_checksum_address(address)
    except (TypeError, ValueError):
        return str(address or "")


def _log_order(entry: dict[str, Any]) -> tuple[int, int]:
    return int(entry.get("blockNumber", "0x0"), 16), int(entry.get("logIndex", "0x0"), 16)
