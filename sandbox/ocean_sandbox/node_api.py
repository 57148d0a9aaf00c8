"""The sandbox's Ocean Node personality: route logic and HTTP framing, faithful to
docs/reference/ocean-node-api.md.

``ocean-sandbox up --api node`` serves this instead of the Provider v4 routes (same chain, contracts,
sample assets and job runtime). What it answers like (§ = sections of docs/reference/ocean-node-api.md):

- ``GET /`` with ``software: "Ocean-Node"``, ``nodeId``, ``providerAddress``, ``nodePublicKey``, the node's
  ``serviceEndpoints`` (§1); the node's single key is the sandbox Provider's dev key, so it decrypts the
  sample DDOs' files, signs provider fees, is the environments' ``consumerAddress`` and the escrow payee;
- a flat environment list with ids ``0x<engineHash>-0x<sha256>`` (the node release followed:
  :mod:`ocean_sandbox.node_release`), fees per chain with per-resource prices in whole tokens per minute,
  ``cpu``/``ram``/``disk`` resources with ``min``/``max``/``inUse``, a ``free`` block on the first
  environment (§6);
- nonces per exact address string, refused when ``parseInt(nonce) <= stored`` (401 ``nonce: N is not a valid
  nonce``) and consumed once the signature checks out, even when the command then fails; signatures over
  ``address + nonce + command`` (401 ``consumer address and nonce signature mismatch``); raw
  ``Authorization`` auth tokens (§4);
- ``freeCompute`` and paid ``compute`` with the node's validation messages and JSON-string error bodies; the
  paid start checks the payer's Escrow funds and authorization (exact texts of §5) and sends
  ``createLock(jobIdHash, token, payer, amount, expiry)`` from the node's key on the real Escrow contract;
  raw ``fileObject`` URL datasets, inline ``rawcode`` algorithms and DID inputs (orders to the node for
  paid starts, the node's trust rule: both trust lists empty = deny) (§2.1, §7);
- status by ``jobId``/``consumerAddress``/``agreementId`` (bare hash echoed; 500 ``Internal Server Error`` on
  any validation error), stop with query parameters, results with explicit indexes (``outputs.tar`` a real tar
  with entries under ``outputs/``), ``computeStreamableLogs``, ``DELETE`` → 404 ``Not yet implemented!``;
- a per-IP limit (``Rate limit exceeded. Try again in N seconds.``, 429) and the payment cron that claims
  locks (``claimLocksAndWithdraw``, per job ``claimLockAndWithdraw``), releases expired ones
  (``cancelExpiredLocks``) and moves 71 (and 41/42/61/62) to 70 (§3, §5), with a real node's calls on the
  npm @oceanprotocol/contracts Escrow the sandbox deploys.

- the node's Aquarius-compatible routes: ``GET /api/aquarius/assets/ddo/:did`` and ``.../metadata/:did``,
  ``POST /api/aquarius/assets/metadata/query``, ``POST /api/aquarius/assets/ddo/validate``, with the node's
  paths, codes and bodies (:mod:`ocean_sandbox.node_aquarius`).

Sandbox-only routes: ``/sandbox/files/<name>`` (sample files) and ``/sandbox/admin/node`` (read or change the
rate limit and the cron interval at run time).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import signal
import sqlite3
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ocean_sandbox import node_aquarius
from ocean_sandbox.node_release import RELEASE
from ocean_sandbox.provider import Response
from ocean_sandbox.routes import FILE_ROUTE

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from airflow_provider_ocean.chain.rpc import JsonRpcClient
    from airflow_provider_ocean.chain.tx import TransactionSender
    from ocean_sandbox.node_engine import NodeJobEngine
    from ocean_sandbox.orders import OrderValidator
    from ocean_sandbox.provider import ProviderApp

log = logging.getLogger(__name__)

NODE_VERSION = "0.0.1"  # hard-coded by the real node too
ENGINE_HASH = RELEASE.hash_id(hashlib.sha256(b"ocean-sandbox docker engine").hexdigest())
CLAIM_TIMEOUT = 3600  # ESCROW_CLAIM_TIMEOUT
DEFAULT_RATE_LIMIT = 320  # barge's node.yml; the node's own default is 30
ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
INT_PREFIX_RE = re.compile(r"^\s*([+-]?\d+)")
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
SETTLE_STATUSES = frozenset({41, 42, 61, 62, 71})
SERVICE_ENDPOINTS = {
    "computeStart": ["POST", "/api/services/compute"],
    "freeCompute": ["POST", "/api/services/freeCompute"],
    "computeStatus": ["GET", "/api/services/compute"],
    "computeStop": ["PUT", "/api/services/compute"],
    "computeDelete": ["DELETE", "/api/services/compute"],
    "computeResult": ["GET", "/api/services/computeResult"],
    "computeStreamableLogs": ["GET", "/api/services/computeStreamableLogs"],
    "computeEnvironments": ["GET", "/api/services/computeEnvironments"],
    "initializeCompute": ["POST", "/api/services/initializeCompute"],
    "nonce": ["GET", "/api/services/nonce"],
    "generateAuthToken": ["POST", "/api/services/auth/token"],
    "invalidateAuthToken": ["POST", "/api/services/auth/token/invalidate"],
    "escrowEvents": ["GET", "/api/services/escrow/events"],
}
STATUS_TEXTS = {
    0: "Job started",
    1: "Job queued",
    2: "Job expired in queue",
    10: "Pulling algorithm image",
    20: "Configuring volumes",
    30: "Provisioning data",
    31: "Data provisioning failed",
    32: "Algorithm provisioning failed",
    40: "Running algorithm ",
    41: "Failed to run algorithm",
    60: "Publishing results",
    61: "Failed to get outputs folder from container",
    62: "Failed to upload results to storage",
    70: "Job finished",
    71: "Job settling",
}


@dataclass
class NodeResponse(Response):
    """A :class:`Response` that may also stream (``stream`` yields bytes until the body ends)."""

    stream: Iterator[bytes] | None = None


def json_string(status: int, message: str) -> NodeResponse:
    """The start routes' error body: a JSON-encoded string."""
    return NodeResponse(status, message)


def text(status: int, message: str, content_type: str = "text/plain; charset=utf-8") -> NodeResponse:
    """A plain-text answer."""
    return NodeResponse(status, raw=message.encode(), headers={"Content-Type": content_type})


def express(answer: node_aquarius.Answer) -> NodeResponse:
    """Express's framing of a ``(status, body)`` answer: ``res.send(text)`` or ``res.json(body)``."""
    status, body = answer
    if isinstance(body, str):
        return text(status, body, "text/html; charset=utf-8")
    return NodeResponse(status, body, headers={"Content-Type": "application/json; charset=utf-8"})


def internal_error() -> NodeResponse:
    """What GET/PUT ``/compute`` answer for any validation or auth error."""
    return text(500, "Internal Server Error", "text/html; charset=utf-8")


def missing_fields(command: str, required: list[str], data: dict[str, Any]) -> str | None:
    """validateCommandParameters' message for the first missing field, if any."""
    for name in required:
        if data.get(name) is None:
            return (
                f'Missing one ( "{name}" ) or more required field(s) for command: "{command}". '
                f"Required fields: {','.join(required)}"
            )
    return None


def parse_int(value: Any) -> int | None:
    """JavaScript ``parseInt``: the leading integer of the text, ``None`` for NaN."""
    match = INT_PREFIX_RE.match(str(value)) if value is not None else None
    return int(match.group(1)) if match else None


def node_environments(
    node_address: str, fee_token: str, chain_id: int, max_job_duration: int
) -> list[dict[str, Any]]:
    """The two environments the sandbox node announces (ids are stable for given fees).

    Environment 0 accepts free jobs (``free`` block) and paid jobs; environment 1 is paid only with more
    resources. Prices are whole tokens per resource unit and minute.
    """
    specs = [
        {
            "description": "Sandbox environment: free jobs (small) and paid jobs",
            "prices": [{"id": "cpu", "price": 1}, {"id": "ram", "price": 0.5}, {"id": "disk", "price": 0.1}],
            "resources": [("cpu", 4, 1, 2), ("ram", 8, 1, 4), ("disk", 10, 1, 5)],
            "free": True,
        },
        {
            "description": "Sandbox environment: paid jobs only",
            "prices": [{"id": "cpu", "price": 2}, {"id": "ram", "price": 1}, {"id": "disk", "price": 0.2}],
            "resources": [("cpu", 8, 1, 4), ("ram", 16, 1, 8), ("disk", 20, 1, 10)],
            "free": False,
        },
    ]
    envs = []
    for index, spec in enumerate(specs):
        fees = {str(chain_id): [{"feeToken": fee_token, "prices": spec["prices"]}]}
        env_hash = hashlib.sha256((json.dumps(fees, separators=(",", ":")) + str(index)).encode()).hexdigest()
        env: dict[str, Any] = {
            "id": f"{ENGINE_HASH}-{RELEASE.hash_id(env_hash)}",
            "consumerAddress": node_address,
            "platform": {"architecture": "x86_64", "os": "Linux"},
            "description": spec["description"],
            "fees": fees,
            "resources": [
                {
                    "id": rid,
                    "type": rid,
                    "kind": rid,
                    "total": total,
                    "min": minimum,
                    "max": maximum,
                    "inUse": 0,
                }
                for rid, total, minimum, maximum in spec["resources"]
            ],
            "storageExpiry": 604800,
            "minJobDuration": 60,
            "maxJobDuration": max_job_duration,
            "maxJobs": 10,
            "enableNetwork": True,
            "access": {"addresses": [], "accessLists": None},
            "runningJobs": 0,
            "runningfreeJobs": 0,
            "queuedJobs": 0,
            "queuedFreeJobs": 0,
            "queMaxWaitTime": 0,
            "queMaxWaitTimeFree": 0,
            "runMaxWaitTime": 0,
            "runMaxWaitTimeFree": 0,
        }
        if spec["free"]:
            env["free"] = {
                "access": {"addresses": [], "accessLists": None},
                "storageExpiry": 604800,
                "minJobDuration": 10,
                "maxJobDuration": max_job_duration,
                "maxJobs": 5,
                "resources": [
                    {"id": "cpu", "max": 1, "inUse": 0},
                    {"id": "ram", "max": 1, "inUse": 0},
                    {"id": "disk", "max": 1, "inUse": 0},
                ],
                "allowImageBuild": False,
            }
        envs.append(env)
    return envs


@dataclass
class NodeConfig:
    """Static facts of the sandbox node.

    :param base_url: the node's URL (also the DDOs' ``serviceEndpoint``).
    :param chain_id: the chain.
    :param node_key: the node's private key (a public development key).
    :param node_address: its address.
    :param escrow: the Escrow contract.
    :param ocean: the Ocean token (fee token).
    :param environments: the announced environments.
    :param ddo_dir: DDO JSON files.
    :param files_dir: files served under ``/sandbox/files/``.
    :param rate_limit: requests per IP and minute (``MAX_REQ_PER_MINUTE``).
    :param claim_interval: seconds between payment cron runs (``paymentClaimInterval``).
    :param claim_timeout: ``ESCROW_CLAIM_TIMEOUT`` seconds added to ``minLockSeconds``.
    """

    base_url: str
    chain_id: int
    node_key: str
    node_address: str
    escrow: str
    ocean: str
    environments: list[dict[str, Any]]
    ddo_dir: Path
    files_dir: Path
    rate_limit: int = DEFAULT_RATE_LIMIT
    claim_interval: float = 60.0
    claim_timeout: int = CLAIM_TIMEOUT


class NodeStore:
    """The node's SQLite: nonces per exact address string and the jobs' node-side facts.

    :param path: database file.
    """

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS nonces (address TEXT PRIMARY KEY, nonce INTEGER NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, engine_job_id TEXT NOT NULL, "
            "owner TEXT NOT NULL, environment TEXT NOT NULL, job_id_hash TEXT NOT NULL, "
            "is_free INTEGER NOT NULL, "
            "max_job_duration REAL NOT NULL, resources TEXT NOT NULL, payment TEXT, metadata TEXT, "
            "additional_viewers TEXT, queue_max_wait_time INTEGER NOT NULL DEFAULT 0, "
            "stop_requested INTEGER NOT NULL DEFAULT 0, date_created TEXT NOT NULL, agreement_id TEXT, "
            "settled INTEGER NOT NULL DEFAULT 0, seq INTEGER)"
        )

    def nonce(self, address: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT nonce FROM nonces WHERE address = ?", (address,)).fetchone()
        return int(row[0]) if row else 0

    def set_nonce(self, address: str, nonce: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO nonces VALUES (?, ?) ON CONFLICT(address) DO UPDATE SET nonce = excluded.nonce",
                (address, nonce),
            )

    def add_job(self, **values: Any) -> None:
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._lock:
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            self._db.execute(
                f"INSERT INTO jobs ({columns}, seq) VALUES ({marks}, ?)", (*values.values(), seq)
            )

    def update_job(self, job_id: str, **values: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in values)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {columns} WHERE job_id = ?", (*values.values(), job_id))

    def jobs(self, where: str = "1 = 1", args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM jobs WHERE {where} ORDER BY seq", args).fetchall()
        return [dict(row) for row in rows]


class RateLimiter:
    """Requests per IP within the last 60 s; :meth:`check` returns the seconds to wait when over the limit.

    :param per_minute: the limit (0 or less disables it).
    """

    def __init__(self, per_minute: int) -> None:
        self.per_minute = int(per_minute)
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, ip: str, now: float | None = None) -> int | None:
        if self.per_minute <= 0:
            return None
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.setdefault(ip, deque())
            while hits and hits[0] <= now - 60:
                hits.popleft()
            if len(hits) >= self.per_minute:
                return max(1, math.ceil(hits[0] + 60 - now))
            hits.append(now)
            return None

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()


class _Rejected(Exception):
    """A handled failure: ``status`` and ``message`` (formatted by the route)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class NodeApp:
    """Route logic of the sandbox Ocean Node.

    :param config: static facts.
    :param rpc: chain client.
    :param sender: the node's transaction sender (its own key: locks and claims).
    :param engine: the node job runtime.
    :param store: nonces and node-side job facts.
    :param orders: order validation (fees signed by the node, consumer = the node).
    :param helper: a Provider app over the same DDOs/key, reused for DDO reads, decryption and downloads.
    :param tokens: the auth token store.
    """

    def __init__(
        self,
        config: NodeConfig,
        rpc: JsonRpcClient,
        sender: TransactionSender,
        engine: NodeJobEngine,
        store: NodeStore,
        orders: OrderValidator,
        helper: ProviderApp,
        tokens: Any,
    ) -> None:
        self.config = config
        self.rpc = rpc
        self.sender = sender
        self.engine = engine
        self.store = store
        self.orders = orders
        self.helper = helper
        self.tokens = tokens
        self.limiter = RateLimiter(config.rate_limit)
        self._cron_stop = threading.Event()
        self._cron_wake = threading.Event()
        self._cron: threading.Thread | None = None
        self._decimals: dict[str, int] = {}
        self._chain_lock = threading.Lock()
        self._settle_lock = threading.Lock()

    # -- environment helpers ---------------------------------------------------------------------------
    def environment(self, env_id: Any) -> dict[str, Any] | None:
        return next((e for e in self.config.environments if e["id"] == env_id), None)

    def _live_environment(self, env: dict[str, Any]) -> dict[str, Any]:
        out = json.loads(json.dumps(env))
        running = [j for j in self.store.jobs("environment = ?", (env["id"],)) if not self._finished(j)]
        in_use: dict[str, float] = {}
        free_in_use: dict[str, float] = {}
        for job in running:
            target = free_in_use if job["is_free"] else in_use
            for resource in json.loads(job["resources"]):
                target[resource["id"]] = target.get(resource["id"], 0) + float(resource["amount"])
        for resource in out["resources"]:
            resource["inUse"] = _num(in_use.get(resource["id"], 0) + free_in_use.get(resource["id"], 0))
        if out.get("free"):
            for resource in out["free"]["resources"]:
                resource["inUse"] = _num(free_in_use.get(resource["id"], 0))
        out["runningJobs"] = sum(1 for j in running if not j["is_free"])
        out["runningfreeJobs"] = sum(1 for j in running if j["is_free"])
        return out

    def _finished(self, job: dict[str, Any]) -> bool:
        return bool(self.engine.run_facts(job["engine_job_id"]).get("date_finished"))

    def _token_decimals(self, token: str) -> int:
        from airflow_provider_ocean.chain import abi
        from airflow_provider_ocean.chain.tx import call_function

        if token not in self._decimals:
            (decimals,) = call_function(self.rpc, token, abi.ERC20_DECIMALS, (), ["uint8"])
            self._decimals[token] = int(decimals)
        return self._decimals[token]

    def _prices(self, env: dict[str, Any], chain_id: Any, token: Any) -> dict[str, Decimal] | None:
        for entry in (env.get("fees") or {}).get(str(chain_id)) or []:
            if str(entry.get("feeToken", "")).lower() == str(token).lower():
                return {str(p["id"]): Decimal(str(p["price"])) for p in entry.get("prices") or []}
        return None

    def _cost_wei(
        self,
        env: dict[str, Any],
        prices: dict[str, Decimal],
        resources: list[dict],
        seconds: float,
        token: str,
    ) -> int:
        minutes = math.ceil(max(float(seconds), float(env.get("minJobDuration") or 0)) / 60)
        total = sum(
            (prices.get(r["id"], Decimal(0)) * Decimal(str(r["amount"])) * minutes for r in resources),
            Decimal(0),
        )
        return int(total * (Decimal(10) ** self._token_decimals(token)))

    @staticmethod
    def _fill_resources(env: dict[str, Any], requested: Any, free: bool) -> list[dict[str, Any]]:
        """checkAndFillMissingResources: raises ``ValueError`` with the node's texts."""
        if free and not env.get("free"):
            raise ValueError("This env does not support free jobs")
        wanted: dict[str, float] = {}
        for item in requested or []:
            if isinstance(item, dict) and item.get("id") is not None:
                wanted[str(item["id"])] = float(item.get("amount") or 0)
        ids = [str(r["id"]) for r in (env.get("free") or {}).get("resources") or []] if free else []
        ids += [str(r["id"]) for r in env["resources"] if str(r["id"]) not in ids]
        out = []
        for rid in ids:
            base = next((r for r in env["resources"] if r["id"] == rid), {})
            limits = dict(base)
            if free:
                limits.update(next((r for r in env["free"]["resources"] if r["id"] == rid), {}))
            minimum, maximum = float(limits.get("min", 0)), float(limits.get("max", 0))
            desired = wanted.get(rid)
            if desired is None:
                desired = minimum
            else:
                desired = max(desired, minimum)
                if desired > maximum:
                    raise ValueError(
                        f"Not enough {rid} resources. Requested {_num(desired)}, but max is {_num(maximum)}"
                    )
            out.append({"id": rid, "amount": _num(desired)})
        return out

    # -- auth ------------------------------------------------------------------------------------------
    def _authenticate(
        self,
        data: dict[str, Any],
        command: str,
        authorization: str | None,
        *,
        address_key: str = "consumerAddress",
    ) -> None:
        """Signature (preferred when address, nonce and signature are all present) or auth token.

        :raises _Rejected: 401 with the node's message.
        """
        address = data.get(address_key)
        nonce = data.get("nonce")
        signature = data.get("signature")
        if address and nonce is not None and signature:
            self._check_signature(str(address), nonce, str(signature), command)
            return
        if authorization:
            owner, _reason = self.tokens.check(authorization)
            if owner is None:
                raise _Rejected(401, "Invalid token")
            return
        raise _Rejected(401, "Invalid nonce or signature")

    def _check_signature(self, address: str, nonce: Any, signature: str, command: str) -> None:
        number = parse_int(nonce)
        stored = self.store.nonce(address)
        if number is None or number <= stored:
            raise _Rejected(401, f"nonce: {'NaN' if number is None else number} is not a valid nonce")
        message = f"{address}{number}{command}"
        if not _signature_matches(message, signature, address):
            raise _Rejected(401, "consumer address and nonce signature mismatch")
        self.store.set_nonce(address, number)  # consumed from here on, whatever the command does

    # -- routes: discovery ---------------------------------------------------------------------------
    def root(self) -> NodeResponse:
        from eth_keys import keys

        public = keys.PrivateKey(bytes.fromhex(self.config.node_key[2:])).public_key
        return NodeResponse(
            200,
            {
                "nodeId": "16Uiu2HAm" + hashlib.sha256(public.to_bytes()).hexdigest()[:44],
                "chainIds": [str(self.config.chain_id)],
                "providerAddress": self.config.node_address,
                "nodePublicKey": RELEASE.public_key(public.to_compressed_bytes()),
                "serviceEndpoints": SERVICE_ENDPOINTS,
                "software": "Ocean-Node",
                "version": NODE_VERSION,
            },
        )

    def nonce(self, query: dict[str, Any]) -> NodeResponse:
        address = query.get("userAddress")
        if not address:
            return text(
                400,
                'Missing one ( "address" ) or more required field(s) for command: "nonce". '
                "Required fields: address",
            )
        return NodeResponse(200, {"nonce": str(self.store.nonce(str(address)))})

    def compute_environments(self, query: dict[str, Any]) -> NodeResponse:
        chain = query.get("chainId")
        envs = [self._live_environment(e) for e in self.config.environments]
        if chain not in (None, ""):
            envs = [e for e in envs if str(chain) in (e.get("fees") or {})]
        return NodeResponse(200, envs)

    # -- routes: Aquarius-compatible (:mod:`ocean_sandbox.node_aquarius`) ----------------------------
    def ddo(self, did: str) -> NodeResponse:
        """``GET /api/aquarius/assets/ddo/:did`` (and ``.../metadata/:did``)."""
        return express(node_aquarius.ddo_answer(did, self.helper.get_ddo))

    def query_metadata(self, body: dict[str, Any]) -> NodeResponse:
        """``POST /api/aquarius/assets/metadata/query`` over the indexed DDOs."""
        from ocean_sandbox.aquarius import DdoStore

        return express(node_aquarius.query_answer(body, DdoStore(self.config.ddo_dir).all()))

    def validate_ddo(self, body: dict[str, Any], authorization: str | None) -> NodeResponse:
        """``POST /api/aquarius/assets/ddo/validate``; sent credentials are checked as for any command."""

        def authenticate(sent: dict[str, Any]) -> node_aquarius.Answer | None:
            if not authorization and not any(sent.values()):
                return None
            try:
                self._authenticate(
                    sent, node_aquarius.VALIDATE_COMMAND, authorization, address_key="publisherAddress"
                )
            except _Rejected as exc:
                return exc.status, exc.message
            return None

        return express(node_aquarius.validate_answer(body, self.config.node_key, authenticate))

    # -- DID inputs ------------------------------------------------------------------------------------
    def _did_input(self, elem: dict[str, Any], *, consumer: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """DDO and service of a DID element, with the checks every start does (500/403 texts)."""
        did = str(elem.get("documentId"))
        ddo = self.helper.get_ddo(did)
        if ddo is None:
            raise _Rejected(500, f"DDO {did} not found")
        credentials = ddo.get("credentials") or {}
        deny = [
            v.lower() for c in credentials.get("deny", []) if c.get("type") == "address" for v in c["values"]
        ]
        allow = [
            v.lower() for c in credentials.get("allow", []) if c.get("type") == "address" for v in c["values"]
        ]
        if consumer.lower() in deny or (allow and consumer.lower() not in allow):
            raise _Rejected(403, f"Error: Access to asset {did} was denied")
        service = next(
            (s for s in ddo.get("services", []) if str(s.get("id")) == str(elem.get("serviceId"))), None
        )
        if service is None:
            raise _Rejected(500, f"Cannot find service {elem.get('serviceId')} in DDO {did}")
        return ddo, service

    def _algorithm_checksums(self, algorithm: dict[str, Any]) -> tuple[str, str] | None:
        if not algorithm.get("documentId"):
            return None
        ddo = self.helper.get_ddo(str(algorithm["documentId"]))
        service = next(
            (
                s
                for s in (ddo or {}).get("services", [])
                if str(s.get("id")) == str(algorithm.get("serviceId"))
            ),
            None,
        )
        if ddo is None or service is None or (ddo.get("metadata") or {}).get("type") != "algorithm":
            return None
        try:
            return self.helper._algo_checksums(ddo, service)
        except Exception:
            return None

    @staticmethod
    def _algo_allowed(
        service: dict[str, Any],
        algorithm: dict[str, Any],
        checksums: tuple[str, str] | None,
        algo_ddo: dict | None,
    ) -> bool:
        """validateAlgoForDataset: raw code needs allowRawAlgorithm; DID algorithms must be trusted
        (both lists empty = deny; ``*`` wildcards); access services skip the check."""
        if service.get("type") != "compute":
            return True
        compute = service.get("compute") or {}
        if not algorithm.get("documentId"):
            return compute.get("allowRawAlgorithm") is True
        trusted = compute.get("publisherTrustedAlgorithms") or []
        publishers = compute.get("publisherTrustedAlgorithmPublishers") or []
        if not trusted and not publishers:
            return False
        if publishers:
            owner = ((algo_ddo or {}).get("nft") or {}).get("owner", "")
            if "*" not in publishers and owner.lower() not in [p.lower() for p in publishers]:
                return False
        if trusted:
            files, container = checksums or ("", "")
            for entry in trusted:
                if entry.get("did") not in ("*", algorithm.get("documentId")):
                    continue
                if (
                    entry.get("filesChecksum") not in ("*", None, "")
                    and str(entry["filesChecksum"]).lower() != files
                ):
                    continue
                if (
                    entry.get("containerSectionChecksum") not in ("*", None, "")
                    and entry["containerSectionChecksum"] != container
                ):
                    continue
                return True
            return False
        return True

    def _validate_paid_order(
        self, elem: dict[str, Any], ddo: dict[str, Any], service: dict[str, Any]
    ) -> None:
        from ocean_sandbox.orders import OrderInvalidError

        tx = elem.get("transferTxId")
        if not tx:
            raise _Rejected(500, f"Missing transferTxId for DDO {elem.get('documentId')}")
        try:
            self.orders.validate(
                sender=self.config.node_address,
                tx_id=str(tx),
                ddo=ddo,
                service=service,
                now=time.time(),
                is_dataset=False,
                enforce_fee_expiry=False,
            )
        except OrderInvalidError as exc:
            log.info("order %s not valid for the node: %s", tx, exc)
            raise _Rejected(
                500,
                f"TxId Service {tx} is not valid for DDO {elem.get('documentId')} "
                f"and service {service.get('id')}",
            ) from exc

    # -- initializeCompute -----------------------------------------------------------------------------
    def initialize_compute(self, body: dict[str, Any]) -> NodeResponse:
        for name in ("datasets", "algorithm", "payment", "consumerAddress", "environment"):
            if body.get(name) is None:
                return text(400, f"Missing {name}")
        if isinstance(body["datasets"], list) and any(
            not (isinstance(d, dict) and d.get("documentId")) for d in body["datasets"]
        ):
            return text(400, "Missing dataset did")  # the route's own check: raw datasets are not quoted
        consumer = str(body["consumerAddress"])
        if not ADDRESS_RE.match(consumer):
            return text(400, 'Parameter : "consumerAddress" is not a valid web3 address')
        env = self.environment(body.get("environment"))
        if env is None:
            return text(500, "Invalid C2D Environment")
        payment = body.get("payment") if isinstance(body.get("payment"), dict) else {}
        chain_id, token = payment.get("chainId"), payment.get("token")
        prices = self._prices(env, chain_id, token)
        if prices is None:
            return text(
                500, f"This compute env does not accept payments on chain: {chain_id} using token {token}"
            )
        try:
            resources = self._fill_resources(env, payment.get("resources") or body.get("resources"), False)
        except ValueError as exc:
            return text(400, str(exc))
        duration = _float(body.get("maxJobDuration"), 0) or float(env["maxJobDuration"])
        duration = min(duration, float(env["maxJobDuration"]))
        queue_wait = int(_float(body.get("queueMaxWaitTime"), 0))
        answer: dict[str, Any] = {"algorithm": None, "datasets": []}
        datasets = body.get("datasets") if isinstance(body.get("datasets"), list) else []
        algorithm = body.get("algorithm") if isinstance(body.get("algorithm"), dict) else {}
        try:
            algo_ddo, checksums = self._paid_algorithm_facts(algorithm)
        except _Rejected as exc:
            return text(exc.status, exc.message)
        now = time.time()
        for position, elem in enumerate([algorithm, *datasets]):
            result: dict[str, Any] = {"validOrder": False}
            if isinstance(elem, dict) and elem.get("documentId"):
                try:
                    ddo, service = self._did_input(elem, consumer=consumer)
                    # the node refuses here what the paid start would refuse, before anything is paid
                    self._check_paid_input(elem, ddo, service, algorithm, checksums, algo_ddo)
                except _Rejected as exc:
                    return text(exc.status, exc.message)
                result.update(
                    {
                        "did": ddo["id"],
                        "serviceId": service["id"],
                        "datatoken": service["datatokenAddress"],
                        "chainId": ddo["chainId"],
                        "consumerAddress": self.config.node_address,
                    }
                )
                valid = False
                if elem.get("transferTxId"):
                    try:
                        self._validate_paid_order(elem, ddo, service)
                        valid = True
                    except _Rejected:
                        valid = False
                if valid:
                    result["validOrder"] = elem["transferTxId"]
                else:
                    timeout = int(service.get("timeout") or 0)
                    valid_until = int(now + timeout) if timeout else int(now + duration + queue_wait + 3600)
                    result["providerFee"] = self.helper.provider_fee(
                        {"id": env["id"]}, service["datatokenAddress"], str(service["id"]), valid_until, 0
                    )
            if position == 0:
                answer["algorithm"] = result
            else:
                answer["datasets"].append(result)
        amount = self._cost_wei(env, prices, resources, duration, str(token))
        answer["payment"] = {
            "escrowAddress": self.config.escrow,
            "payee": self.config.node_address,
            "chainId": int(chain_id),
            "minLockSeconds": int(duration) + queue_wait + self.config.claim_timeout,
            "token": token,
            "amount": str(amount),
        }
        return NodeResponse(200, answer)

    # -- start -----------------------------------------------------------------------------------------
    def start(self, body: dict[str, Any], authorization: str | None, *, free: bool) -> NodeResponse:
        command = "freeStartCompute" if free else "startCompute"
        required = (
            ["algorithm", "datasets", "environment"]
            if free
            else ["environment", "algorithm", "datasets", "maxJobDuration"]
        )
        message = missing_fields(command, required, body)
        if message:
            return json_string(400, message)
        consumer = str(body.get("consumerAddress") or "")
        if not ADDRESS_RE.match(consumer):
            return json_string(400, 'Parameter : "consumerAddress" is not a valid web3 address')
        if not free and (parse_int(body.get("maxJobDuration")) or 0) <= 0:
            return json_string(400, "Invalid maxJobDuration")
        try:
            self._authenticate(body, command, authorization)
            return self._start(body, consumer, free)
        except _Rejected as exc:
            return json_string(exc.status, exc.message)

    def _start(self, body: dict[str, Any], consumer: str, free: bool) -> NodeResponse:
        env_id = str(body.get("environment"))
        if env_id.split("-", 1)[0] != ENGINE_HASH or "-" not in env_id:
            raise _Rejected(500, "Invalid C2D Environment")
        env = self.environment(env_id)
        if env is None:
            raise _Rejected(500, "Invalid C2D Environment")
        algorithm = body.get("algorithm") if isinstance(body.get("algorithm"), dict) else {}
        datasets = body.get("datasets") if isinstance(body.get("datasets"), list) else []
        payment = body.get("payment")
        try:
            resources = self._fill_resources(env, body.get("resources"), free)
        except ValueError as exc:
            raise _Rejected(400, f"Error: {exc}" if free else str(exc)) from exc
        limit = (
            float((env.get("free") or {}).get("maxJobDuration") or env["maxJobDuration"])
            if free
            else float(env["maxJobDuration"])
        )
        duration = _float(body.get("maxJobDuration"), 0)
        if not duration or duration > limit:
            duration = limit
        queue_wait = int(_float(body.get("queueMaxWaitTime"), 0))
        if free:
            algo_ddo, checksums = self._algorithm_ddo(algorithm), None
        else:
            algo_ddo, checksums = self._paid_algorithm_facts(algorithm)
        inputs = []
        elements = [algorithm, *datasets]
        for position, elem in enumerate(elements):
            if not isinstance(elem, dict):
                raise _Rejected(400, "Invalid dataset")
            if elem.get("documentId"):
                ddo, service = self._did_input(elem, consumer=consumer)
                if not free:
                    self._check_paid_input(elem, ddo, service, algorithm, checksums, algo_ddo)
                    self._validate_paid_order(elem, ddo, service)
                if position > 0:
                    inputs.append(
                        {
                            "index": position - 1,
                            "id": ddo["id"],
                            "remote": {
                                "serviceId": service["id"],
                                "txId": elem.get("transferTxId"),
                                "userdata": elem.get("userdata"),
                            },
                        }
                    )
            elif position > 0:
                inputs.append(
                    {"index": position - 1, "id": "", "fileObject": elem.get("fileObject"), "remote": {}}
                )
        workflow_algorithm = self._workflow_algorithm(algorithm, algo_ddo)
        priced = resources
        lock: dict[str, Any] | None = None
        bare = RELEASE.hash_id(
            hashlib.sha256(
                json.dumps([consumer, env_id, uuid.uuid4().hex, time.time()], separators=(",", ":")).encode()
            ).hexdigest()
        )
        job_id_hash = "0x" + hashlib.sha256(bare.encode()).hexdigest()
        if not free:
            if not isinstance(payment, dict):
                raise _Rejected(500, "Cannot read properties of undefined (reading 'chainId')")
            prices = self._prices(env, payment.get("chainId"), payment.get("token"))
            if prices is None:
                raise _Rejected(
                    500,
                    "This compute env does not accept payments on chain: "
                    f"{payment.get('chainId')} using token {payment.get('token')}",
                )
            priced = [{**r, "price": _num(prices.get(r["id"], 0))} for r in resources]
            cost = self._cost_wei(env, prices, resources, duration, str(payment["token"]))
            expiry = int(duration) + queue_wait + self.config.claim_timeout
            lock = self._create_lock(
                int(payment["chainId"]), job_id_hash, str(payment["token"]), consumer, cost, expiry
            )
        else:
            priced = [{**r, "price": 0} for r in resources]
        engine_job = self.engine.create_job(
            owner=consumer,
            agreement_id=(lock or {}).get("lockTx") or "",
            workflow={
                "stages": [
                    {
                        "index": 0,
                        "input": inputs,
                        "compute": {"Instances": 1, "namespace": env_id, "maxtime": duration},
                        "algorithm": workflow_algorithm,
                        "output": {},
                    }
                ],
                "chainId": self.config.chain_id,
            },
            environment={
                "id": env_id,
                "maxJobDuration": duration,
                **{
                    key: float(next((r["amount"] for r in resources if r["id"] == rid), 1))
                    for key, rid in (("cpuNumber", "cpu"), ("ramGB", "ram"), ("diskGB", "disk"))
                },
            },
            provider_address=self.config.node_address,
            chain_id=self.config.chain_id,
        )
        self.store.add_job(
            job_id=bare,
            engine_job_id=engine_job["jobId"],
            owner=consumer,
            environment=env_id,
            job_id_hash=job_id_hash,
            is_free=1 if free else 0,
            max_job_duration=duration,
            resources=json.dumps(priced),
            payment=json.dumps(lock) if lock else None,
            metadata=json.dumps(body.get("metadata")) if body.get("metadata") is not None else None,
            additional_viewers=json.dumps(body.get("additionalViewers"))
            if body.get("additionalViewers")
            else None,
            queue_max_wait_time=queue_wait,
            date_created=f"{time.time():.3f}",
            agreement_id=(lock or {}).get("lockTx"),
        )
        log.info("node job %s (%s) started for %s on %s", bare, "free" if free else "paid", consumer, env_id)
        job = self.status_object(self.store.jobs("job_id = ?", (bare,))[0])
        job["jobId"] = f"{ENGINE_HASH}-{bare}"  # the start answer carries the engine prefix
        return NodeResponse(200, [job])

    def _algorithm_ddo(self, algorithm: dict[str, Any]) -> dict[str, Any] | None:
        """The DDO of a DID algorithm (``None`` for raw code or a file object)."""
        return self.helper.get_ddo(str(algorithm["documentId"])) if algorithm.get("documentId") else None

    def _paid_algorithm_facts(self, algorithm: dict[str, Any]) -> tuple[dict[str, Any] | None, Any]:
        """The algorithm's DDO and checksums; a paid job without raw code needs both checksums.

        :raises _Rejected: 500 with the node's text when the checksums cannot be had.
        """
        algo_ddo = self._algorithm_ddo(algorithm)
        checksums = self._algorithm_checksums(algorithm)
        meta = algorithm.get("meta") if isinstance(algorithm.get("meta"), dict) else {}
        if not meta.get("rawcode") and checksums is None:
            raise _Rejected(
                500,
                "Failed to retrieve algorithm checksums. Both container and files checksums are required.",
            )
        return algo_ddo, checksums

    def _check_paid_input(
        self,
        elem: dict[str, Any],
        ddo: dict[str, Any],
        service: dict[str, Any],
        algorithm: dict[str, Any],
        checksums: Any,
        algo_ddo: dict[str, Any] | None,
    ) -> None:
        """A paid DID input: its files must be decryptable here and its trust lists must allow the algorithm.

        :raises _Rejected: with the node's status and text.
        """
        files = self.helper.decrypt_files(ddo, service)
        if service.get("type") == "compute" and not files:
            raise _Rejected(
                500,
                f"Service {elem.get('serviceId')} from DDO {elem.get('documentId')} "
                "cannot be used in compute on this provider",
            )
        if (ddo.get("metadata") or {}).get("type") != "algorithm" and not self._algo_allowed(
            service, algorithm, checksums, algo_ddo
        ):
            raise _Rejected(
                400,
                f"Algorithm {algorithm.get('documentId')} not allowed to run on the dataset: {ddo['id']}",
            )

    def _workflow_algorithm(
        self, algorithm: dict[str, Any], algo_ddo: dict[str, Any] | None
    ) -> dict[str, Any]:
        meta = algorithm.get("meta") if isinstance(algorithm.get("meta"), dict) else {}
        container = dict(meta.get("container") or {})
        out: dict[str, Any] = {
            "id": algorithm.get("documentId") or "",
            "rawcode": meta.get("rawcode") or "",
            "algocustomdata": algorithm.get("algocustomdata"),
            "envs": algorithm.get("envs") or {},
        }
        if algorithm.get("documentId") and algo_ddo is not None:
            container = container or dict(
                ((algo_ddo.get("metadata") or {}).get("algorithm") or {}).get("container") or {}
            )
            out["remote"] = {"serviceId": algorithm.get("serviceId"), "txId": algorithm.get("transferTxId")}
        elif isinstance(algorithm.get("fileObject"), dict):
            out["fileObject"] = algorithm["fileObject"]
            out["url"] = algorithm["fileObject"].get("url", "")
        out["container"] = container
        return out

    def _create_lock(
        self, chain_id: int, job_id_hash: str, token: str, payer: str, amount: int, expiry: int
    ) -> dict[str, Any]:
        """escrow.createLock: the node's checks (exact texts), then ``createLock`` from the node's key."""
        from airflow_provider_ocean.chain import abi
        from airflow_provider_ocean.chain.errors import ChainError
        from airflow_provider_ocean.chain.escrow_abi import (
            AUTH_TYPE,
            ESCROW_CREATE_LOCK,
            ESCROW_GET_AUTHORIZATIONS,
            ESCROW_GET_USER_FUNDS,
            FUNDS_TYPE,
        )
        from airflow_provider_ocean.chain.tx import call_function

        escrow = self.config.escrow
        node = self.config.node_address
        with self._chain_lock:
            ((available, _locked),) = call_function(
                self.rpc, escrow, ESCROW_GET_USER_FUNDS, (payer, token), [FUNDS_TYPE]
            )
            if int(available) < amount:
                raise _Rejected(400, f"User {payer} does not have enough funds")
            (auths,) = call_function(
                self.rpc, escrow, ESCROW_GET_AUTHORIZATIONS, (token, payer, node), [AUTH_TYPE]
            )
            if len(auths) != 1:
                raise _Rejected(
                    400,
                    f"No escrow auths found for: chain={chain_id}, token={token}, payer={payer}, "
                    f"nodeAddress={node}. "
                    f"Found {len(auths)} authorizations.",
                )
            _payee, max_locked, current_locked, max_seconds, max_counts, current_locks = auths[0]
            if int(current_locked) + amount > int(max_locked):
                raise _Rejected(400, "No valid escrow auths found(will go over limit)")
            if int(max_seconds) < expiry:
                raise _Rejected(400, "No valid escrow auths found(maxLockSeconds too low)")
            if int(current_locks) + 1 > int(max_counts):
                raise _Rejected(400, "No valid escrow auths found(too many active locks)")
            if self.rpc.get_balance(node) == 0:
                raise _Rejected(
                    400,
                    "Node insufficient gas funds. "
                    "If you are the node owner, please add gas funds to the node.",
                )
            try:
                receipt = self.sender.transact(
                    escrow,
                    abi.encode_call(ESCROW_CREATE_LOCK, int(job_id_hash, 16), token, payer, amount, expiry),
                    what="Escrow.createLock",
                )
            except ChainError as exc:
                raise _Rejected(400, str(exc)) from exc
        tx = receipt["transactionHash"]
        log.info("locked %s of %s from %s for job hash %s (%s)", amount, token, payer, job_id_hash, tx)
        return {
            "chainId": chain_id,
            "token": token,
            "lockTx": tx,
            "claimTx": None,
            "cancelTx": None,
            "cost": 0,
            "amount": str(amount),
            "expiry": expiry,
        }

    # -- status ----------------------------------------------------------------------------------------
    def status_object(self, job: dict[str, Any]) -> dict[str, Any]:
        facts = self.engine.run_facts(job["engine_job_id"])
        engine_status = int(facts.get("status") or 1)
        finished = facts.get("date_finished")
        status = engine_status
        if engine_status == 1 or (
            engine_status == 20
            and not (self.engine.job_dir(job["engine_job_id"]) / "adminlogs" / "image.log").exists()
        ):
            # not yet at the image step: queued when a queue wait was asked for, else pulling the image
            status = 1 if (job["queue_max_wait_time"] or 0) > 0 else RELEASE.start_status
        exit_code = facts.get("exit_code")
        if exit_code is not None and int(exit_code) < 0:
            exit_code = 128 + abs(int(exit_code))  # Docker reports a signal as 128 + N
        start = facts.get("algo_start")
        stop = facts.get("algo_stop")
        duration = 0.0
        if start:
            duration = (stop or time.time()) - start
        payment = json.loads(job["payment"]) if job["payment"] else None
        if payment is not None:
            payment = {
                k: payment.get(k) for k in ("chainId", "token", "lockTx", "claimTx", "cancelTx", "cost")
            }
        results = json.loads(facts["results"]) if finished and facts.get("results") else []
        return {
            "owner": job["owner"],
            "jobId": job["job_id"],
            "jobIdHash": job["job_id_hash"],
            "dateCreated": job["date_created"],
            "dateFinished": finished,
            "status": status,
            "statusText": STATUS_TEXTS.get(status, ""),
            "results": results,
            "environment": job["environment"],
            "agreementId": job["agreement_id"] or "",
            "maxJobDuration": _num(job["max_job_duration"]),
            "resources": json.loads(job["resources"]),
            "isFree": bool(job["is_free"]),
            "stopRequested": bool(job["stop_requested"]),
            "payment": payment,
            "metadata": json.loads(job["metadata"]) if job["metadata"] else None,
            "additionalViewers": json.loads(job["additional_viewers"]) if job["additional_viewers"] else None,
            "queueMaxWaitTime": job["queue_max_wait_time"],
            "terminationDetails": {
                "exitCode": exit_code if finished else None,
                "OOMKilled": False if finished and start else None,
            },
            "algoStartTimestamp": f"{start:.3f}" if start else "0",
            "algoStopTimestamp": f"{stop:.3f}" if stop else "0",
            "algoDuration": round(duration, 3),
            "buildStartTimestamp": "0",
            "buildStopTimestamp": "0",
        }

    def compute_status(self, query: dict[str, Any]) -> NodeResponse:
        consumer, job_id, agreement = (
            query.get("consumerAddress"),
            query.get("jobId"),
            query.get("agreementId"),
        )
        if not (consumer or job_id or agreement):
            return internal_error()
        if consumer and not ADDRESS_RE.match(str(consumer)):
            return internal_error()
        clauses, args = [], []
        if job_id and "-" in str(job_id):
            prefix, bare = str(job_id).split("-", 1)
            if prefix != ENGINE_HASH:
                return NodeResponse(200, [])
            clauses.append("job_id = ?")
            args.append(bare)
        if consumer:
            clauses.append("owner = ?")
            args.append(str(consumer))
        if agreement:
            clauses.append("agreement_id = ?")
            args.append(str(agreement))
        jobs = self.store.jobs(" AND ".join(clauses) or "1 = 1", tuple(args))
        return NodeResponse(200, [self.status_object(j) for j in jobs])

    def compute_stop(self, query: dict[str, Any], authorization: str | None) -> NodeResponse:
        consumer, job_id = query.get("consumerAddress"), query.get("jobId")
        if not consumer or not job_id or not ADDRESS_RE.match(str(consumer)):
            return internal_error()
        try:
            self._authenticate(query, "stopCompute", authorization)
        except _Rejected:
            return internal_error()
        bare = _bare_job_id(str(job_id))
        jobs = self.store.jobs("job_id = ? AND owner = ?", (bare, str(consumer)))
        out = []
        for job in jobs:
            if not self._finished(job):
                self.store.update_job(job["job_id"], stop_requested=1)
                self.engine.request_stop(job["engine_job_id"])
            out.append(self.status_object(self.store.jobs("job_id = ?", (job["job_id"],))[0]))
        return NodeResponse(200, out)

    # -- results and logs ------------------------------------------------------------------------------
    def _job_for_owner(self, query: dict[str, Any]) -> dict[str, Any]:
        job_id = str(query.get("jobId"))
        bare = _bare_job_id(job_id)
        jobs = self.store.jobs("job_id = ?", (bare,))
        if not jobs:
            raise _Rejected(500, f"Cannot find job with id {job_id}")
        job = jobs[0]
        viewers = json.loads(job["additional_viewers"]) if job["additional_viewers"] else []
        consumer = str(query.get("consumerAddress"))
        if consumer != job["owner"] and consumer not in viewers:  # exact, case-sensitive
            raise _Rejected(500, f"{consumer} is not authorized to get results for job with id {job_id}")
        return job

    def compute_result(self, query: dict[str, Any], authorization: str | None) -> NodeResponse:
        for name in ("consumerAddress", "jobId", "index"):
            if query.get(name) in (None, ""):
                return text(400, f"Missing {name}")
        index = parse_int(query.get("index"))
        if index is None:
            return text(400, "Invalid index")
        try:
            self._authenticate(query, "getComputeResult", authorization)
            job = self._job_for_owner(query)
        except _Rejected as exc:
            return text(exc.status, exc.message)
        found = self.engine.result_file(job["engine_job_id"], index)
        if found is None:
            return NodeResponse(200, raw=b"", headers={"Content-Type": "application/octet-stream"})
        path, filename = found
        content_type = "application/octet-stream" if filename.endswith(".tar") else "text/plain"
        return NodeResponse(200, file=path, headers={"Content-Type": content_type})

    def streamable_logs(self, query: dict[str, Any], authorization: str | None) -> NodeResponse:
        """Live logs: only ``jobId`` is required and, as on the node, any authenticated caller may follow."""
        if query.get("jobId") in (None, ""):
            return text(400, "Missing jobId")
        try:
            self._authenticate(query, "getComputeStreamableLogs", authorization)
        except _Rejected as exc:
            return text(exc.status, exc.message)
        job_id = str(query["jobId"])
        bare = _bare_job_id(job_id)
        jobs = self.store.jobs("job_id = ?", (bare,))
        if not jobs or not self.engine.is_running(jobs[0]["engine_job_id"]):
            return text(404, "Job not found or not running")
        engine_id = jobs[0]["engine_job_id"]
        return NodeResponse(200, headers={"Content-Type": "text/plain"}, stream=self._follow(engine_id))

    def _follow(self, engine_id: str) -> Iterator[bytes]:
        """``docker logs --follow``: the log's bytes as they are written, until the algorithm stops."""
        path = self.engine.log_path(engine_id)
        with open(path, "rb") as handle:
            while True:
                chunk = handle.read(65536)
                if chunk:
                    yield chunk
                    continue
                if not self.engine.is_running(engine_id):
                    rest = handle.read()
                    if rest:
                        yield rest
                    return
                time.sleep(0.1)

    # -- auth tokens -----------------------------------------------------------------------------------
    def create_auth_token(self, body: dict[str, Any]) -> NodeResponse:
        for name in ("address", "nonce", "signature"):
            if not body.get(name):
                return NodeResponse(400, {"error": f"Missing required parameter: {name}"})
        if not ADDRESS_RE.match(str(body["address"])):
            return NodeResponse(400, {"error": "Invalid address"})
        try:
            self._check_signature(
                str(body["address"]), body["nonce"], str(body["signature"]), "createAuthToken"
            )
        except _Rejected as exc:
            return NodeResponse(exc.status, {"error": exc.message})
        valid_until = _float(body.get("validUntil"), 0)
        if valid_until > 1e12:
            valid_until /= 1000  # milliseconds
        expiration = int(valid_until) if valid_until > time.time() else int(time.time() + 86400)
        return NodeResponse(200, {"token": self.tokens.create(str(body["address"]), expiration)})

    def invalidate_auth_token(self, body: dict[str, Any]) -> NodeResponse:
        for name in ("address", "nonce", "signature", "token"):
            if not body.get(name):
                return NodeResponse(400, {"error": f"Missing required parameter: {name}"})
        try:
            self._check_signature(
                str(body["address"]), body["nonce"], str(body["signature"]), "invalidateAuthToken"
            )
        except _Rejected as exc:
            return NodeResponse(exc.status, {"error": exc.message})
        self.tokens.revoke(str(body["token"]))
        return NodeResponse(200, {"success": True})

    # -- payment cron ----------------------------------------------------------------------------------
    def start_cron(self) -> None:
        if self._cron is None:
            self._cron = threading.Thread(target=self._cron_loop, name="node-payment-cron", daemon=True)
            self._cron.start()

    def stop_cron(self) -> None:
        self._cron_stop.set()
        self._cron_wake.set()

    def wake_cron(self) -> None:
        self._cron_wake.set()

    def _cron_loop(self) -> None:
        while not self._cron_stop.is_set():
            self._cron_wake.wait(max(0.1, float(self.config.claim_interval)))
            self._cron_wake.clear()
            if self._cron_stop.is_set():
                return
            try:
                self.settle()
            except Exception:
                log.exception("payment cron failed")

    def settle(self) -> None:
        """One cron pass, as the node's ``claimPayments``: settle the locks of ended jobs, move them to 70.

        The node's locks are read once (``getLocks(0x0, 0x0, node)``). A job whose lock has not expired pays
        for the time its algorithm ran, capped at ``maxJobDuration`` and raised to the environment's
        ``minJobDuration``; all such claims go in one ``claimLocksAndWithdraw`` (one
        ``claimLockAndWithdraw`` per job when the batch fails). Jobs with an expired lock or nothing to pay,
        and expired locks of no known job (``cleanUpUnknownLocks``), are released by one
        ``cancelExpiredLocks`` (one ``cancelExpiredLock`` each when that fails); the contract releases only
        expired locks, so an unexpired one stays until it expires, as on a real node. A paid job without a
        lock gets ``nolock``. A job whose transaction failed keeps its status for the next pass. The calls
        are those of ``NODE_ESCROW_CALLS`` (``airflow_provider_ocean.chain.escrow_abi``). Unlike a real node,
        a pass with no paid job to settle reads no locks (so cancels no lock of an unknown job).
        """
        with self._settle_lock:
            due = []
            for job in self.store.jobs("settled = 0"):
                facts = self.engine.run_facts(job["engine_job_id"])
                status = int(facts.get("status") or 0)
                if facts.get("date_finished") and status in SETTLE_STATUSES:
                    due.append((job, facts, json.loads(job["payment"]) if job["payment"] else None))
            paid = any(payment for _job, _facts, payment in due)  # else no lock to read (free jobs)
            locks = {lock[0]: lock for lock in self._node_locks()} if paid else {}
            now = time.time()
            claims: list[tuple[dict[str, Any], dict[str, Any], int]] = []
            cancels: list[tuple[dict[str, Any] | None, tuple[Any, ...]]] = []
            for job, facts, payment in due:
                lock = locks.get(int(job["job_id_hash"], 16)) if payment else None
                if payment is None:
                    self._finish(job, None)
                elif lock is None:
                    self._finish(job, {**payment, "claimTx": "nolock", "cancelTx": "nolock"})
                elif now > lock[3]:
                    cancels.append((job, lock))
                else:
                    cost = self._claim_amount(job, facts, payment)
                    if cost > 0:
                        claims.append((job, payment, cost))
                    else:
                        cancels.append((job, lock))
            known = {int(job["job_id_hash"], 16) for job in self.store.jobs()}
            cancels += [(None, lock) for lock in locks.values() if lock[0] not in known and now > lock[3]]
            self._claim(claims)
            self._cancel(cancels)

    def _finish(self, job: dict[str, Any], payment: dict[str, Any] | None) -> None:
        if payment is not None:
            self.store.update_job(job["job_id"], payment=json.dumps(payment))
        self.engine.set_status(job["engine_job_id"], 70)
        self.store.update_job(job["job_id"], settled=1)
        log.info("payment cron: job %s -> 70", job["job_id"])

    def _node_locks(self) -> list[tuple[Any, ...]]:
        """``getLocks(0x0, 0x0, node)``: ``(jobId, payer, amount, expiry, token, startTime)`` per lock."""
        from airflow_provider_ocean.chain import abi
        from airflow_provider_ocean.chain.escrow_abi import ESCROW_GET_LOCKS, decode_locks

        zero = "0x" + "00" * 20
        call = abi.encode_call(ESCROW_GET_LOCKS, zero, zero, self.config.node_address)
        return decode_locks(self.rpc.call(self.config.escrow, call))

    def _claim_amount(self, job: dict[str, Any], facts: dict[str, Any], payment: dict[str, Any]) -> int:
        env = self.environment(job["environment"]) or {"minJobDuration": 0}
        start, stop = facts.get("algo_start"), facts.get("algo_stop")
        billed = min(abs(stop - start) if start and stop else 0.0, float(job["max_job_duration"]))
        billed = max(billed, float(env.get("minJobDuration") or 0))
        if billed <= 0:
            return 0
        token = str(payment["token"])
        prices = self._prices(env, payment["chainId"], token) or {}
        cost = self._cost_wei(env, prices, json.loads(job["resources"]), billed, token)
        return min(cost, int(payment["amount"]))  # the lock's amount: a claim above it reverts

    def _escrow_tx(self, signature: str, *args: Any) -> str:
        from airflow_provider_ocean.chain import abi

        what = "Escrow." + signature[: signature.index("(")]
        with self._chain_lock:
            receipt = self.sender.transact(self.config.escrow, abi.encode_call(signature, *args), what=what)
        return str(receipt["transactionHash"])

    def _claim(self, claims: list[tuple[dict[str, Any], dict[str, Any], int]]) -> None:
        """``claimLocksAndWithdraw`` over all claims; ``claimLockAndWithdraw`` per job if that fails."""
        from airflow_provider_ocean.chain.escrow_abi import (
            ESCROW_CLAIM_LOCK_AND_WITHDRAW,
            ESCROW_CLAIM_LOCKS_AND_WITHDRAW,
        )

        if not claims:
            return
        rows = [
            (
                int(job["job_id_hash"], 16),
                str(payment["token"]),
                job["owner"],
                cost,
                json.dumps(self.status_object(job), separators=(",", ":")).encode(),
            )
            for job, payment, cost in claims
        ]
        try:
            batch: str | None = self._escrow_tx(
                ESCROW_CLAIM_LOCKS_AND_WITHDRAW, *map(list, zip(*rows, strict=True))
            )
        except Exception:
            log.exception("batch claim of %d locks failed; claiming one by one", len(rows))
            batch = None
        for (job, payment, cost), row in zip(claims, rows, strict=True):
            try:
                tx = batch or self._escrow_tx(ESCROW_CLAIM_LOCK_AND_WITHDRAW, *row)
            except Exception:
                log.exception("claiming the lock of job %s failed; retrying at the next run", job["job_id"])
                continue
            decimals = self._token_decimals(str(payment["token"]))
            self._finish(
                job, {**payment, "claimTx": tx, "cost": float(Decimal(cost) / (Decimal(10) ** decimals))}
            )

    def _cancel(self, cancels: list[tuple[dict[str, Any] | None, tuple[Any, ...]]]) -> None:
        """``cancelExpiredLocks`` over all; ``cancelExpiredLock`` per lock if that fails (payee: the node)."""
        from airflow_provider_ocean.chain.escrow_abi import (
            ESCROW_CANCEL_EXPIRED_LOCK,
            ESCROW_CANCEL_EXPIRED_LOCKS,
        )

        if not cancels:
            return
        node = self.config.node_address
        rows = [(lock[0], lock[4], lock[1], node) for _job, lock in cancels]
        try:
            batch: str | None = self._escrow_tx(
                ESCROW_CANCEL_EXPIRED_LOCKS, *map(list, zip(*rows, strict=True))
            )
        except Exception:
            log.exception("batch cancel of %d locks failed; cancelling one by one", len(rows))
            batch = None
        for (job, _lock), row in zip(cancels, rows, strict=True):
            try:
                tx = batch or self._escrow_tx(ESCROW_CANCEL_EXPIRED_LOCK, *row)
            except Exception:
                log.exception("cancelling lock %#x failed; retrying at the next run", row[0])
                continue
            if job is not None:
                self._finish(job, {**json.loads(job["payment"]), "cancelTx": tx})


def _num(value: float) -> int | float:
    value = float(value)
    return int(value) if value.is_integer() else value


def _float(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _signature_matches(message: str, signature: str, address: str) -> bool:
    """EIP-191 over the 32-byte keccak of ``message``, or over the 66-char hex text of that hash."""
    from eth_account import Account
    from eth_account.messages import encode_defunct
    from eth_utils import keccak

    try:
        raw = bytes.fromhex(signature[2:] if signature.startswith("0x") else signature)
    except ValueError:
        return False
    if len(raw) != 65:
        return False
    if raw[64] in (0, 1):
        raw = raw[:64] + bytes([raw[64] + 27])
    digest = keccak(text=message)
    for signable in (encode_defunct(primitive=digest), encode_defunct(text="0x" + digest.hex())):
        try:
            if Account.recover_message(signable, signature=raw).lower() == address.lower():
                return True
        except Exception:
            continue
    return False


# -- HTTP framing -------------------------------------------------------------------------------------
class NodeHandler(BaseHTTPRequestHandler):
    """One request; ``server.app`` is the :class:`NodeApp`."""

    server_version = "ocean-sandbox-node"
    sys_version = ""
    protocol_version = "HTTP/1.1"  # chunked streaming of live logs (every answer still closes)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.info("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        app: NodeApp = self.server.app  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        try:
            if not path.startswith("/sandbox/"):
                wait = app.limiter.check(self.client_address[0])
                if wait is not None:
                    self._send(text(429, f"Rate limit exceeded. Try again in {wait} seconds."))
                    return
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body: dict[str, Any] = {}
            if raw:
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    self._send(text(400, "Bad Request"))
                    return
                body = parsed if isinstance(parsed, dict) else {}
            response = self._route(app, method, path, query, body, self.headers.get("Authorization"))
        except Exception:
            log.exception("uncaught error on %s %s", method, path)
            response = internal_error()
        self._send(response)

    def _route(
        self,
        app: NodeApp,
        method: str,
        path: str,
        query: dict[str, Any],
        body: dict[str, Any],
        auth: str | None,
    ) -> NodeResponse:
        if path == "/" and method == "GET":
            return app.root()
        match = node_aquarius.DDO_PATH.match(path)
        if match and method == "GET":
            return app.ddo(unquote(match["did"]))
        match = FILE_ROUTE.match(path)
        if match and method == "GET":
            file = app.config.files_dir / match["name"]
            if not file.is_file():
                return text(404, f"Cannot GET {path}")
            return NodeResponse(200, file=file, headers={"Content-Type": "application/octet-stream"})
        if path == "/sandbox/admin/node":
            if method == "POST":
                if "rate_limit" in body:
                    app.limiter.per_minute = int(body["rate_limit"])
                    app.limiter.reset()
                if "claim_interval" in body:
                    app.config.claim_interval = float(body["claim_interval"])
                    app.wake_cron()
                if body.get("settle_now"):
                    app.settle()
            return NodeResponse(
                200, {"rate_limit": app.limiter.per_minute, "claim_interval": app.config.claim_interval}
            )
        routes = {
            ("GET", "/api/services/nonce"): lambda: app.nonce(query),
            ("GET", "/api/services/computeEnvironments"): lambda: app.compute_environments(query),
            ("POST", "/api/services/initializeCompute"): lambda: app.initialize_compute(body),
            ("POST", "/api/services/compute"): lambda: app.start(body, auth, free=False),
            ("POST", "/api/services/freeCompute"): lambda: app.start(body, auth, free=True),
            ("GET", "/api/services/compute"): lambda: app.compute_status(query),
            ("PUT", "/api/services/compute"): lambda: app.compute_stop(query, auth),
            ("DELETE", "/api/services/compute"): lambda: text(404, "Not yet implemented!"),
            ("GET", "/api/services/computeResult"): lambda: app.compute_result(query, auth),
            ("GET", "/api/services/computeStreamableLogs"): lambda: app.streamable_logs(query, auth),
            ("POST", "/api/services/auth/token"): lambda: app.create_auth_token(body),
            ("POST", "/api/services/auth/token/invalidate"): lambda: app.invalidate_auth_token(body),
            ("POST", node_aquarius.METADATA_QUERY_PATH): lambda: app.query_metadata(body),
            ("POST", node_aquarius.VALIDATE_PATH): lambda: app.validate_ddo(body, auth),
        }
        handler = routes.get((method, path))
        if handler is not None:
            return handler()
        return text(404, f"Cannot {method} {path}", "text/html; charset=utf-8")

    def _send(self, response: NodeResponse) -> None:
        headers = {"Connection": "close", "Access-Control-Allow-Origin": "*", **response.headers}
        try:
            if response.stream is not None:
                self.send_response(response.status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for chunk in response.stream:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                return
            if response.file is not None:
                size = response.file.stat().st_size
                self.send_response(response.status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                with open(response.file, "rb") as handle:
                    while chunk := handle.read(1024 * 1024):
                        self.wfile.write(chunk)
                return
            if response.raw is not None:
                payload = response.raw
                headers.setdefault("Content-Type", "text/plain")
            else:
                payload = json.dumps(response.body).encode()
                headers.setdefault("Content-Type", "application/json")
            self.send_response(response.status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            log.info("client went away during %s", self.path)


class NodeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, port: int, app: NodeApp) -> None:
        super().__init__(("127.0.0.1", port), NodeHandler)
        self.app = app


def build_node_app(state_dir: Path, state: dict[str, Any]) -> tuple[NodeApp, NodeJobEngine]:
    """Build the node app and its job runtime from the sandbox state (``api == "node"``)."""
    from airflow_provider_ocean.chain.rpc import JsonRpcClient
    from airflow_provider_ocean.chain.tx import TransactionSender
    from ocean_sandbox.access import AuthTokens
    from ocean_sandbox.node_engine import NodeJobEngine, url_basename
    from ocean_sandbox.orders import OrderValidator
    from ocean_sandbox.provider import ProviderApp, ProviderConfig

    node = state["node"]
    config = NodeConfig(
        base_url=state["provider_url"],
        chain_id=state["chain_id"],
        node_key=state["provider"]["key"],
        node_address=state["provider"]["address"],
        escrow=state["addresses"]["Escrow"],
        ocean=state["addresses"]["Ocean"],
        environments=node["environments"],
        ddo_dir=state_dir / "ddos",
        files_dir=state_dir / "files",
        rate_limit=int(node.get("rate_limit", DEFAULT_RATE_LIMIT)),
        claim_interval=float(node.get("claim_interval", 60.0)),
        claim_timeout=int(node.get("claim_timeout", CLAIM_TIMEOUT)),
    )
    rpc = JsonRpcClient(state["rpc_url"])
    helper = ProviderApp(
        ProviderConfig(
            base_url=config.base_url,
            chain_id=config.chain_id,
            provider_key=config.node_key,
            provider_address=config.node_address,
            fee_token=config.ocean,
            environments=[],
            ddo_dir=config.ddo_dir,
            files_dir=config.files_dir,
        ),
        rpc,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
    )
    tmp = state_dir / "tmp"

    def fetch_input(entry: dict[str, Any]) -> list[Path]:
        target = tmp / uuid.uuid4().hex
        target.mkdir(parents=True)
        if entry.get("id"):
            ddo = helper.get_ddo(entry["id"])
            remote = entry.get("remote") or {}
            service = next(
                (
                    s
                    for s in (ddo or {}).get("services", [])
                    if str(s.get("id")) == str(remote.get("serviceId"))
                ),
                None,
            )
            files = helper.decrypt_files(ddo, service) if ddo and service else None
            if not files:
                raise ValueError(f"no decryptable files for {entry['id']}")
            userdata = remote.get("userdata")
        else:
            file_object = entry.get("fileObject")
            if not isinstance(file_object, dict):
                raise ValueError("the dataset has neither a documentId nor a fileObject")
            files, userdata = [file_object], None
        paths = []
        for file_object in files:
            if file_object.get("type") != "url":
                raise ValueError(f"unsupported file type {file_object.get('type')!r}")
            path = target / url_basename(str(file_object.get("url", "")))
            path.write_bytes(helper.fetch_file(file_object, userdata))
            paths.append(path)
        return paths

    def fetch_algorithm(algorithm: dict[str, Any]) -> bytes:
        if algorithm.get("id"):
            return helper.download_algorithm(algorithm)
        file_object = algorithm.get("fileObject") or {
            "type": "url",
            "url": algorithm.get("url"),
            "method": "GET",
        }
        return helper.fetch_file(file_object)

    engine = NodeJobEngine(
        state_dir / "node-engine",
        tick=state.get("engine_tick", 0.2),
        fetch_input=fetch_input,
        fetch_algorithm=fetch_algorithm,
    )
    orders = OrderValidator(rpc, config.node_address, receipt_timeout=state.get("receipt_timeout", 120.0))
    sender = TransactionSender(rpc, config.node_key)
    tokens = AuthTokens(state_dir / "node.db", state_dir / "node-auth-token.secret")
    app = NodeApp(config, rpc, sender, engine, NodeStore(state_dir / "node.db"), orders, helper, tokens)
    return app, engine


def serve_node(state_dir: Path, state: dict[str, Any]) -> None:
    """Run the Ocean Node personality in the foreground until SIGTERM/SIGINT."""
    from ocean_sandbox.aquarius import indexer_for

    app, engine = build_node_app(state_dir, state)
    server = NodeHTTPServer(int(state["provider_port"]), app)
    engine.start()
    app.start_cron()
    indexer = indexer_for(state_dir, state)  # DDOs published on chain, as the node's own indexer
    indexer.start()

    def _stop(*_: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("sandbox Ocean Node listening on %s", state["provider_url"])
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        indexer.stop()
        app.stop_cron()
        engine.close()
        server.server_close()


__all__ = ["NodeApp", "NodeConfig", "build_node_app", "node_environments", "serve_node"]


def _bare_job_id(job_id: str) -> str:
    """The node's DB id: a full ``<engineHash>-<hash>`` id without its engine prefix."""
    return job_id.split("-", 1)[1] if "-" in job_id else job_id
