"""The sandbox's Provider v4: route logic and checks, written to answer like Ocean Provider v2.1.6.

The HTTP framing lives in :mod:`ocean_sandbox.server`; this module turns a parsed
request into a :class:`Response`. See docs/reference/provider-v4-api.md for the behaviour imitated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import ROUND_DOWN, Context, Decimal, localcontext
from typing import TYPE_CHECKING, Any

import requests

from airflow_provider_ocean.chain import abi
from airflow_provider_ocean.chain.tx import call_function
from ocean_sandbox import validation
from ocean_sandbox.crypto import recover_request_signer, sign_provider_fee
from ocean_sandbox.engine import OperatorError
from ocean_sandbox.nonces import DuplicateNonceError
from ocean_sandbox.orders import OrderInvalidError

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_ocean.chain.rpc import JsonRpcClient
    from ocean_sandbox.engine import JobEngine
    from ocean_sandbox.nonces import NonceStore
    from ocean_sandbox.orders import OrderValidator

log = logging.getLogger(__name__)

PROVIDER_VERSION = "2.1.6"
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$")
SERVICE_ENDPOINTS = {
    "computeDelete": ["DELETE", "/api/services/compute"],
    "computeEnvironments": ["GET", "/api/services/computeEnvironments"],
    "computeResult": ["GET", "/api/services/computeResult"],
    "computeStart": ["POST", "/api/services/compute"],
    "computeStatus": ["GET", "/api/services/compute"],
    "computeStop": ["PUT", "/api/services/compute"],
    "create_auth_token": ["GET", "/api/services/createAuthToken"],
    "decrypt": ["POST", "/api/services/decrypt"],
    "delete_auth_token": ["DELETE", "/api/services/deleteAuthToken"],
    "download": ["GET", "/api/services/download"],
    "encrypt": ["POST", "/api/services/encrypt"],
    "fileinfo": ["POST", "/api/services/fileinfo"],
    "initialize": ["GET", "/api/services/initialize"],
    "initializeCompute": ["POST", "/api/services/initializeCompute"],
    "nonce": ["GET", "/api/services/nonce"],
    "validateContainer": ["POST", "/api/services/validateContainer"],
}


@dataclass
class Response:
    """An answer: JSON ``body`` (or raw bytes), or a ``file`` to stream."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None
    raw: bytes | None = None


class Rejected(Exception):
    """A handled validation failure: ``{"error": {resource: message}}`` (or a plain string), status 400."""

    def __init__(self, resource: str | None, message: str, status: int = 400) -> None:
        self.resource = resource
        self.message = message
        self.status = status
        super().__init__(message)


def strip_urls(text: str) -> str:
    """Replace URL-looking tokens and collapse whitespace, as the Provider does in error texts."""
    return " ".join("<URL stripped for security reasons>" if URL_RE.match(t) else t for t in text.split())


def error_response(error: Any, status: int = 400) -> Response:
    if isinstance(error, str):
        error = strip_urls(error)
    elif isinstance(error, dict):
        error = {k: strip_urls(v) if isinstance(v, str) else v for k, v in error.items()}
    return Response(status, {"error": error})


def validation_error(errors: dict[str, Any]) -> Response:
    return Response(400, {"errors": errors, "message": "Validation error", "success": False})


@dataclass
class ProviderConfig:
    """Static facts of the sandbox Provider.

    :param base_url: the URL clients use (also the DDO ``serviceEndpoint``).
    :param chain_id: the chain id served.
    :param provider_key: the Provider's signing key (a public development key).
    :param provider_address: its address.
    :param fee_token: ``PROVIDER_FEE_TOKEN`` (the chain's Ocean token).
    :param environments: the operator-engine environments (dicts as served).
    :param ddo_dir: where DDO JSON files live (``<did>.json``).
    :param files_dir: files served under ``/sandbox/files/``.
    """

    base_url: str
    chain_id: int
    provider_key: str
    provider_address: str
    fee_token: str
    environments: list[dict[str, Any]]
    ddo_dir: Path
    files_dir: Path


class ProviderApp:
    """Route logic of the sandbox Provider (plus the Aquarius DDO route).

    :param config: static configuration.
    :param rpc: chain client.
    :param nonces: the nonce store.
    :param orders: the on-chain order validator.
    :param engine: the local C2D engine (operator-service imitation).
    """

    def __init__(
        self,
        config: ProviderConfig,
        rpc: JsonRpcClient,
        nonces: NonceStore,
        orders: OrderValidator,
        engine: JobEngine,
    ) -> None:
        self.config = config
        self.rpc = rpc
        self.nonces = nonces
        self.orders = orders
        self.engine = engine
        self.clock_offset = 0.0
        self.tokens: Any = None  # AuthTokens, set by the server
        self.request_context = threading.local()  # per-request facts from HTTP headers (AuthToken)
        self._decimals: dict[str, int] = {}
        self._lock = threading.Lock()

    # -- helpers -------------------------------------------------------------------------------------
    def now(self) -> float:
        return time.time() + self.clock_offset

    def get_ddo(self, did: Any) -> dict[str, Any] | None:
        if not isinstance(did, str) or not re.fullmatch(r"did:op:[0-9a-fA-F]{64}", did):
            return None
        path = self.config.ddo_dir / f"{did}.json"
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def environment(self, env_id: Any) -> dict[str, Any] | None:
        return next((e for e in self.config.environments if e["id"] == env_id), None)

    def decrypt_files(self, ddo: dict[str, Any], service: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Decrypt a service's ``files``; ``None`` when this Provider's key cannot (another Provider's)."""
        from ecies import decrypt

        try:
            plain = json.loads(
                decrypt(self.config.provider_key, bytes.fromhex(service["files"].removeprefix("0x")))
            )
        except Exception:
            return None
        if isinstance(plain, list):
            return plain
        if (
            plain.get("datatokenAddress", "").lower() != service["datatokenAddress"].lower()
            or plain.get("nftAddress", "").lower() != ddo["nftAddress"].lower()
        ):
            return None
        return plain.get("files")

    def fetch_file(self, file_object: dict[str, Any], userdata: Any = None) -> bytes:
        """Download one DDO file object (``url`` type) the way pod-configuration gets it via the Provider."""
        if file_object.get("type") != "url":
            raise ValueError(f"unsupported file type {file_object.get('type')!r}")
        method = str(file_object.get("method", "GET")).upper()
        params = userdata if isinstance(userdata, dict) and method == "GET" else None
        body = userdata if isinstance(userdata, dict) and method == "POST" else None
        response = requests.request(
            method,
            file_object["url"],
            params=params,
            json=body,
            headers=file_object.get("headers"),
            timeout=30,
        )
        response.raise_for_status()
        return response.content

    def download_input(self, entry: dict[str, Any], tmp_dir: Path) -> list[Path]:
        """pod-configuration's download of one workflow input: the files of its service, userdata applied."""
        import uuid

        ddo = self.get_ddo(entry["id"])
        if ddo is None:
            raise ValueError(f"DDO {entry['id']} not found")
        remote = entry.get("remote") or {}
        service = _service_by_id(ddo, remote.get("serviceId"))
        files = self.decrypt_files(ddo, service) if service else None
        if not files:
            raise ValueError(f"no decryptable files for {entry['id']}")
        _remove_stale_downloads(tmp_dir)
        target = tmp_dir / uuid.uuid4().hex
        target.mkdir(parents=True)
        paths = []
        for index, file_object in enumerate(files):
            path = target / str(index)
            path.write_bytes(self.fetch_file(file_object, remote.get("userdata")))
            paths.append(path)
        return paths

    def download_algorithm(self, algorithm: dict[str, Any]) -> bytes:
        """pod-configuration's download of a DID algorithm's file #0, or of a raw algorithm's ``url``."""
        if algorithm.get("id"):
            ddo = self.get_ddo(algorithm["id"])
            service = _service_by_id(ddo or {}, (algorithm.get("remote") or {}).get("serviceId"))
            files = self.decrypt_files(ddo, service) if ddo and service else None
            if not files:
                raise ValueError(f"no decryptable algorithm files for {algorithm['id']}")
            return self.fetch_file(files[0])
        if algorithm.get("url"):
            response = requests.get(algorithm["url"], timeout=30)
            response.raise_for_status()
            return response.content
        raise ValueError("algorithm has neither a DID nor a url")

    def _token_decimals(self, token: str) -> int:
        if token not in self._decimals:
            (decimals,) = call_function(self.rpc, token, abi.ERC20_DECIMALS, (), ["uint8"])
            self._decimals[token] = int(decimals)
        return self._decimals[token]

    def fee_amount(self, valid_until: int, env: dict[str, Any]) -> int:
        """The Provider's fee formula, including ``timedelta.seconds`` wrapping every 24 h."""
        token = self.config.fee_token
        if token.lower() == ZERO_ADDRESS:
            return 0
        seconds = seconds_until(valid_until, self.now())
        return fee_units(seconds, env.get("priceMin", 0), self._token_decimals(token))

    def provider_fee(
        self, env: dict[str, Any], datatoken: str, service_id: str, valid_until: int, amount: int
    ):
        provider_data = json.dumps(
            {"environment": env["id"], "timestamp": self.now(), "dt": datatoken, "id": service_id},
            separators=(",", ":"),
        ).encode()
        signature = sign_provider_fee(
            self.config.provider_key,
            provider_data,
            self.config.provider_address,
            self.config.fee_token,
            amount,
            valid_until,
        )
        return {
            "providerFeeAddress": self.config.provider_address,
            "providerFeeToken": self.config.fee_token,
            "providerFeeAmount": str(amount),
            "providerData": "0x" + provider_data.hex(),
            **signature,
            "validUntil": valid_until,
        }

    def check_signature(
        self,
        data: dict[str, Any],
        owner: str,
        did: str,
        job_id: str,
        *,
        allow_token: bool = True,
        message: str | None = None,
    ) -> Response | None:
        """The ``signature`` rule: nonce not below the stored one, then the signer equals ``owner``.

        Without a signature, an ``AuthToken`` header passes when the token is valid, belongs to ``owner``,
        is not revoked and the nonce is not below the stored one; a present signature always wins.
        """
        signature = data.get("signature")
        nonce = data.get("nonce")
        if not signature:
            token = getattr(self.request_context, "auth_token", None)
            if allow_token and token and self.tokens is not None:
                token_owner, _reason = self.tokens.check(token)
                if (
                    token_owner is not None
                    and token_owner == owner
                    and not self.nonces.is_stale(owner, nonce)[0]
                ):
                    return None
            return validation_error(
                {"signature": ["Invalid signature provided. Please check the nonce or documentId."]}
            )
        stale, stored = self.nonces.is_stale(owner, nonce)
        if stale:
            return validation_error(
                {"signature": f"Invalid signature expected nonce ({stored}) > current nonce ({nonce})."}
            )
        if message is None:
            message = f"{owner}{job_id}{did}"
        try:
            recovered = recover_request_signer(message + str(nonce), str(signature))
        except Exception:
            recovered = "0x0000000000000000000000000000000000000000"
        try:
            expected = owner and owner.lower() == recovered.lower()
        except AttributeError:
            expected = False
        if not expected:
            return validation_error(
                {
                    "signature": f"Invalid signature {signature} for ethereum address {owner}, "
                    f"message {message} "
                    f"and nonce {nonce}. Got {recovered}"
                }
            )
        return None

    # -- routes --------------------------------------------------------------------------------------
    def root(self) -> Response:
        return Response(
            200,
            {
                "chainIds": [self.config.chain_id],
                "providerAddresses": {str(self.config.chain_id): self.config.provider_address},
                "serviceEndpoints": SERVICE_ENDPOINTS,
                "software": "Provider",
                "version": PROVIDER_VERSION,
            },
        )

    def nonce(self, data: dict[str, Any]) -> Response:
        errors = validation.validate(data, validation.NONCE_RULES)
        if errors:
            return validation_error(errors)
        return Response(200, {"nonce": self.nonces.get_or_init(str(data["userAddress"]))})

    def compute_environments(self) -> Response:
        envs = []
        for env in self.config.environments:
            running = self.engine.count_running(env["id"]) if hasattr(self.engine, "count_running") else 0
            envs.append({**env, "currentJobs": running, "lastSeen": f"{time.time():.2f}"})
        return Response(200, {str(self.config.chain_id): envs})

    def aquarius_ddo(self, did: str) -> Response:
        ddo = self.get_ddo(did)
        if ddo is None:
            return Response(404, {"error": f"Asset DID {did} not found in Elasticsearch."})
        return Response(200, ddo)

    # -- input validation shared by initializeCompute and start -----------------------------------------
    def _check_consumable(self, ddo: dict[str, Any], sender: str, resource: str) -> None:
        nft = ddo.get("nft") or {}
        if not ddo.get("nftAddress") or not ddo.get("chainId"):
            raise Rejected(resource, "Asset malformed or disabled.")
        try:
            (_, _, state, _) = call_function(
                self.rpc, ddo["nftAddress"], abi.NFT_GET_METADATA, (), ["string", "string", "uint8", "bool"]
            )
        except Exception as exc:
            raise Rejected(resource, "Asset malformed or disabled.") from exc
        if state not in (0, 5):
            raise Rejected(resource, "Asset is not consumable.")
        code = None
        if nft.get("state", 0) not in (0, 5) or not ddo.get("metadata"):
            code = "ASSET_DISABLED"
        credentials = ddo.get("credentials") or {}
        allow = [
            v.lower() for c in credentials.get("allow", []) if c.get("type") == "address" for v in c["values"]
        ]
        deny = [
            v.lower() for c in credentials.get("deny", []) if c.get("type") == "address" for v in c["values"]
        ]
        if code is None and allow and str(sender).lower() not in allow:
            code = "CREDENTIAL_NOT_IN_ALLOW_LIST"
        if code is None and str(sender).lower() in deny:
            code = "CREDENTIAL_IN_DENY_LIST"
        if code:
            raise Rejected(
                resource, f"Error: Access to asset {ddo['id']} was denied with code: ConsumableCodes.{code}."
            )

    def _algo_checksums(self, algo_ddo: dict[str, Any], service: dict[str, Any]) -> tuple[str, str]:
        files = self.decrypt_files(algo_ddo, service)
        if files is None:
            raise ValueError("algorithm files cannot be decrypted")
        files_checksum = "".join(hashlib.sha256(self.fetch_file(f)).hexdigest() for f in files).lower()
        container = algo_ddo["metadata"]["algorithm"]["container"]
        container_checksum = hashlib.sha256(
            (container["entrypoint"] + container["checksum"]).encode()
        ).hexdigest()
        return files_checksum, container_checksum

    def _preliminary_algo(
        self, algo: dict[str, Any]
    ) -> tuple[dict | None, dict | None, tuple[str, str] | None]:
        """Algorithm checks before the inputs: returns (algo DDO, algo service, checksums)."""
        did = algo.get("documentId")
        if did is None and algo.get("meta") is None:
            raise Rejected("algorithm", "missing_meta_documentId")
        if not did:
            return None, None, None
        algo_ddo = self.get_ddo(did)
        if algo_ddo is None:
            raise Rejected("algorithm", "file_unavailable")
        if (algo_ddo.get("metadata") or {}).get("type") != "algorithm":
            raise Rejected("algorithm", "not_algo")
        if not algo.get("serviceId"):
            raise Rejected("algorithm.serviceId", "missing")
        service = _service_by_id(algo_ddo, algo["serviceId"])
        try:
            if service is None:
                raise ValueError("no such service")
            checksums = self._algo_checksums(algo_ddo, service)
        except Exception as exc:
            raise Rejected("algorithm", "file_unavailable") from exc
        return algo_ddo, service, checksums

    def _validate_input(
        self,
        item: dict[str, Any],
        index: int,
        algo: dict[str, Any],
        checksums,
        sender: str,
        check_usage: bool,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """InputItemValidator: returns (ddo, service). Order validation is done by the caller."""
        resource = f"datasets[{index}]" if index else "dataset"
        required = ["documentId", "transferTxId"] if check_usage else ["documentId"]
        for key in required:
            if not item.get(key):
                raise Rejected(f"{resource}.{key}", "missing")
        if not item.get("serviceId") and item.get("serviceId") != 0:
            raise Rejected(f"{resource}.serviceId", "missing")
        ddo = self.get_ddo(item["documentId"])
        if ddo is None:
            raise Rejected(f"{resource}.documentId", "did_not_found")
        service = _service_by_id(ddo, item["serviceId"])
        if service is None:
            raise Rejected(f"{resource}.serviceId", "not_found")
        self._check_consumable(ddo, sender, resource)
        if service.get("type") not in ("access", "compute"):
            raise Rejected(f"{resource}.serviceId", "service_not_access_compute")
        if service.get("type") != "compute" and index == 0:
            raise Rejected(f"{resource}.serviceId", "main_service_compute")
        if service.get("type") == "compute":
            if not self.decrypt_files(ddo, service):
                raise Rejected(f"{resource}.serviceId", "compute_services_not_in_same_provider")
            self._validate_algo_allowed(service, algo, checksums, resource)
        return ddo, service

    def _validate_algo_allowed(
        self, service: dict[str, Any], algo: dict[str, Any], checksums, resource: str
    ) -> None:
        compute = service.get("compute") or {}
        did = algo.get("documentId")
        if did:
            trusted = compute.get("publisherTrustedAlgorithms") or []
            publishers = compute.get("publisherTrustedAlgorithmPublishers") or []
            if not trusted and not publishers:
                return
            if publishers:
                algo_ddo = self.get_ddo(did) or {}
                owner = (algo_ddo.get("nft") or {}).get("owner", "")
                if owner.lower() not in [p.lower() for p in publishers]:
                    raise Rejected(resource, "not_trusted_algo_publisher")
            if trusted:
                try:
                    by_did = {t["did"]: t for t in trusted}
                except (KeyError, TypeError) as exc:
                    raise Rejected(resource, "no_publisherTrustedAlgorithms") from exc
                if did not in by_did:
                    raise Rejected(resource, "not_trusted_algo")
                entry = by_did[did]
                files_checksum, container_checksum = checksums
                if entry.get("filesChecksum") and files_checksum != entry["filesChecksum"].lower():
                    raise Rejected(resource, "algorithm_file_checksum_mismatch")
                if (
                    entry.get("containerSectionChecksum")
                    and container_checksum != entry["containerSectionChecksum"]
                ):
                    raise Rejected(resource, "algorithm_container_checksum_mismatch")
            return
        if compute.get("allowRawAlgorithm", False) is not True:
            raise Rejected(resource, "no_raw_algo_allowed")

    @staticmethod
    def _validate_meta(meta: Any) -> dict[str, Any]:
        if isinstance(meta, str):
            try:
                meta = json.loads(meta)
            except ValueError as exc:
                raise Rejected("algorithm", "meta_oneof_url_rawcode_remote") from exc
        if not isinstance(meta, dict) or not (meta.get("url") or meta.get("rawcode") or meta.get("remote")):
            raise Rejected("algorithm", "meta_oneof_url_rawcode_remote")
        container = meta.get("container") or {}
        if not (container.get("entrypoint") and container.get("image") and container.get("checksum")):
            raise Rejected("algorithm.container", "missing_entrypoint_image_checksum")
        if not str(container["checksum"]).startswith("sha256:"):
            raise Rejected("algorithm.container", "checksum_prefix")
        return meta

    # -- initializeCompute -----------------------------------------------------------------------------
    def initialize_compute(self, data: dict[str, Any], body: dict[str, Any]) -> Response:
        errors = validation.validate(data, validation.INITIALIZE_COMPUTE_RULES)
        if errors:
            return validation_error(errors)
        datasets = body.get("datasets")
        algo = body.get("algorithm") or {}
        compute = body.get("compute") or {}
        sender = body.get("consumerAddress")
        valid_until = compute.get("validUntil")
        if not str(valid_until).isdigit() or int(valid_until) <= self.now():
            return error_response("The validUntil value is not correct.")
        valid_until = int(valid_until)
        env = self.environment(compute.get("env"))
        if env is None:
            return error_response("Compute environment does not exist")
        if not isinstance(datasets, list):
            return error_response({"datasets": "invalid"})
        try:
            algo_ddo, algo_service, checksums = self._preliminary_algo(algo)
        except Rejected as exc:
            if exc.message == "not_algo":
                return error_response("DID is not a valid algorithm")
            return error_response({exc.resource: exc.message})
        if algo.get("meta") is not None and not algo.get("documentId"):
            try:
                self._validate_meta(algo["meta"])
            except Rejected as exc:
                return error_response({exc.resource: exc.message})
        inputs = []
        for index, item in enumerate(datasets):
            if not isinstance(item, dict):
                return error_response({f"datasets[{index}]" if index else "dataset": "invalid"})
            try:
                ddo, service = self._validate_input(item, index, algo, checksums, sender, check_usage=False)
            except Rejected as exc:
                return error_response({exc.resource: exc.message})
            inputs.append((item, ddo, service, env["id"]))
        if algo_ddo is not None:
            inputs.append((algo, algo_ddo, algo_service, None))
        # The real fee is carried by one input: the first whose order validates with an unexpired fee
        # (it reads consumerAddress from each input object, so in practice dataset 0), else dataset 0.
        states = [
            self._order_state(item, ddo, service, env_name, item.get("consumerAddress"))
            for item, ddo, service, env_name in inputs
        ]
        carrier = next(
            (
                i
                for i, s in enumerate(states)
                if s is not None and not s.fee_expired and s.valid_until >= valid_until
            ),
            0,
        )
        answers = []
        for index, ((item, ddo, service, _env_name), _state) in enumerate(zip(inputs, states, strict=False)):
            sender_state = (
                self._order_state(item, ddo, service, _env_name, sender) if item.get("transferTxId") else None
            )
            amount = self.fee_amount(valid_until, env) if index == carrier else 0
            if (
                sender_state is not None
                and not sender_state.fee_expired
                and sender_state.valid_until >= valid_until
            ):
                answers.append({"validOrder": sender_state.start_order_tx_id})
                continue
            answer: dict[str, Any] = {
                "datatoken": service["datatokenAddress"],
                "providerFee": self.provider_fee(
                    env, service["datatokenAddress"], str(service["id"]), valid_until, amount
                ),
            }
            if sender_state is not None:
                answer["validOrder"] = sender_state.start_order_tx_id
            answers.append(answer)
        result: dict[str, Any] = {"datasets": answers[: len(datasets)]}
        if algo_ddo is not None:
            result["algorithm"] = answers[-1]
        return Response(200, result)

    def _order_state(self, item, ddo, service, env_name, sender):
        tx = item.get("transferTxId")
        if not tx or not sender:
            return None
        try:
            return self.orders.validate(
                sender=sender,
                tx_id=tx,
                ddo=ddo,
                service=service,
                now=self.now(),
                environment=env_name,
                is_dataset=env_name is not None,
                enforce_fee_expiry=False,
            )
        except OrderInvalidError as exc:
            log.info("initializeCompute: order %s not valid: %s", tx, exc)
            return None

    # -- compute start ---------------------------------------------------------------------------------
    def compute_start(self, data: dict[str, Any], body: dict[str, Any]) -> Response:
        errors = validation.validate(data, validation.COMPUTE_START_RULES)
        if errors:
            return validation_error(errors)
        owner = str(data.get("consumerAddress"))
        dataset = data.get("dataset") if isinstance(data.get("dataset"), dict) else {}
        rejected = self.check_signature(data, owner, str(dataset.get("documentId") or ""), "")
        if rejected:
            return rejected
        try:
            workflow, agreement_id, env = self._build_workflow(body, owner)
        except Rejected as exc:
            return error_response({exc.resource: exc.message} if exc.resource else exc.message, exc.status)
        # forward to the operator
        if env is None:
            response = Response(400, {"error": "Environment invalid or does not exist"})
        elif self.engine.has_running_job_with_agreement(agreement_id):
            response = Response(400, {"error": "`agreementId` already in use for other job."})
        else:
            job = self.engine.create_job(
                owner=owner,
                agreement_id=agreement_id,
                workflow=workflow,
                environment={**env, "maxJobDuration": float(env["maxJobDuration"])},
                provider_address=self.config.provider_address,
                chain_id=self.config.chain_id,
            )
            response = Response(200, [job])
        try:
            self.nonces.update(owner, body.get("nonce"))
        except DuplicateNonceError as exc:
            return Response(503, {"error": str(exc), "context": data})
        return response

    def _build_workflow(self, body: dict[str, Any], owner: str):
        main = body.get("dataset")
        extra = body.get("additionalDatasets") or []
        if not isinstance(extra, list):
            raise Rejected("additional_input", "invalid")
        algo = body.get("algorithm") or {}
        env_id = body.get("environment")
        now = self.now()
        algo_ddo, algo_service, checksums = self._preliminary_algo(algo)
        inputs = []
        fees: list[tuple[int, int, str]] = []  # (validUntil, amount, tx)
        for index, item in enumerate([main, *extra]):
            if not isinstance(item, dict):
                raise Rejected(f"datasets[{index}]" if index else "dataset", "invalid")
            ddo, service = self._validate_input(item, index, algo, checksums, owner, check_usage=True)
            try:
                order = self.orders.validate(
                    sender=owner,
                    tx_id=item["transferTxId"],
                    ddo=ddo,
                    service=service,
                    now=now,
                    environment=env_id,
                    is_dataset=True,
                )
            except OrderInvalidError as exc:
                log.info("start: input %s order invalid: %s", index, exc)
                raise Rejected(
                    (f"datasets[{index}]" if index else "dataset") + ".serviceId", "order_invalid"
                ) from exc
            fees.append((order.valid_until, order.fee_amount, item["transferTxId"]))
            remote: dict[str, Any] = {"txId": item["transferTxId"], "serviceId": service["id"]}
            if item.get("userdata"):
                remote["userdata"] = item["userdata"]
            inputs.append({"index": index, "id": item["documentId"], "remote": remote})
        if algo_ddo is not None and not algo.get("meta"):
            try:
                order = self.orders.validate(
                    sender=owner,
                    tx_id=str(algo.get("transferTxId")),
                    ddo=algo_ddo,
                    service=algo_service,
                    now=now,
                )
            except OrderInvalidError as exc:
                log.info("start: algorithm order invalid: %s", exc)
                raise Rejected("algorithm", "in_use_or_not_on_chain") from exc
            fees.append((order.valid_until, order.fee_amount, algo["transferTxId"]))
            algorithm = {
                "id": algo["documentId"],
                "rawcode": "",
                "container": algo_ddo["metadata"]["algorithm"]["container"],
                "remote": {
                    "serviceEndpoint": algo_service.get("serviceEndpoint"),
                    "txId": algo["transferTxId"],
                    "serviceId": algo_service["id"],
                    "userData": algo.get("algouserdata"),
                },
                "algouserdata": algo.get("algouserdata"),
                "algocustomdata": algo.get("algocustomdata"),
            }
        else:
            meta = self._validate_meta(algo.get("meta"))
            algorithm = {
                "id": "",
                "url": meta.get("url", ""),
                "rawcode": meta.get("rawcode", ""),
                "container": meta["container"],
            }
        output = body.get("output")
        if isinstance(output, str) and output:
            try:
                json.loads(output)
            except ValueError as exc:
                raise Rejected("output", "invalid") from exc
        env = self.environment(env_id)
        job_valid_until = max(f[0] for f in fees)
        required = self.fee_amount(job_valid_until, env) if env else 0
        payer = None
        for _valid_until, amount, tx in fees:
            if amount >= required:
                payer = tx
        if payer is None:
            raise Rejected("order", "fees_not_paid")
        workflow = {
            "stages": [
                {
                    "index": 0,
                    "input": inputs,
                    "compute": {"Instances": 1, "namespace": env_id, "maxtime": 3600},
                    "algorithm": algorithm,
                    "output": {"metadataUri": self.config.base_url},
                }
            ],
            "chainId": self.config.chain_id,
        }
        return workflow, payer, env

    # -- status / stop / delete / result ---------------------------------------------------------------
    def compute_status(self, data: dict[str, Any]) -> Response:
        errors = validation.validate(data, validation.UNSIGNED_COMPUTE_RULES)
        if errors:
            return validation_error(errors)
        return Response(200, self.engine.list_jobs(str(data["consumerAddress"]), data.get("jobId") or None))

    def compute_stop(self, data: dict[str, Any], delete: bool = False) -> Response:
        errors = validation.validate(data, validation.COMPUTE_RULES)
        if errors:
            return validation_error(errors)
        owner = str(data["consumerAddress"])
        rejected = self.check_signature(
            data, owner, str(data.get("documentId") or ""), str(data.get("jobId") or "")
        )
        if rejected:
            return rejected
        response = (
            Response(200, "")
            if delete
            else Response(200, self.engine.stop_jobs(owner, data.get("jobId") or None))
        )
        try:
            self.nonces.update(owner, data.get("nonce"))
        except DuplicateNonceError as exc:
            return Response(503, {"error": str(exc), "context": data})
        return response

    def compute_result(self, data: dict[str, Any]) -> Response:
        errors = validation.validate(data, validation.COMPUTE_RESULT_RULES)
        if errors:
            return validation_error(errors)
        owner = str(data["consumerAddress"])
        rejected = self.check_signature(data, owner, str(data.get("index")), str(data.get("jobId")))
        if rejected:
            return rejected
        try:
            self.nonces.update(owner, data.get("nonce"))
        except DuplicateNonceError as exc:
            return Response(503, {"error": str(exc), "context": data})
        try:
            index = int(str(data["index"]))
        except ValueError:
            return Response(400, {"error": f"Error getResult: invalid index {data['index']}"})
        try:
            path, filename = self.engine.result_path(owner, str(data["jobId"]), index)
        except OperatorError as exc:
            return Response(exc.status, exc.body)
        content_type = "text/plain" if filename.endswith((".log", ".txt")) else "application/octet-stream"
        return Response(
            200,
            file=path,
            headers={"Content-Type": content_type, "Content-Disposition": f"attachment;filename={filename}"},
        )


def _remove_stale_downloads(tmp_dir: Path, max_age: float = 600.0) -> None:
    """Delete download folders older than ``max_age`` seconds (the engine copies inputs right away)."""
    import shutil

    if not tmp_dir.exists():
        return
    cutoff = time.time() - max_age
    for child in tmp_dir.iterdir():
        try:
            if child.stat().st_mtime < cutoff:
                shutil.rmtree(child, ignore_errors=True)
        except FileNotFoundError:
            continue


def _service_by_id(ddo: dict[str, Any], service_id: Any) -> dict[str, Any] | None:
    return next((s for s in ddo.get("services", []) if str(s.get("id")) == str(service_id)), None)


def fee_units(seconds: int, price_min: Any, decimals: int) -> int:
    """A provider fee in token units, rounded as the Provider does it.

    ``utils/provider_fees.py`` ``get_provider_fee_amount``: ``float(seconds * float(priceMin) / 60)`` in
    floating point, then ``utils/currency.py`` ``parse_units(str(amount), decimals)``: ``Decimal`` of the
    float's shortest text times ``10**decimals``, truncated (context with 78 digits, ``ROUND_DOWN``). So 599 s
    at 0.5 per minute is ``4.991666666666666`` → 4991666666666666000, not the exact 4991666666666666666.

    :param seconds: the whole seconds the fee covers (``timedelta.seconds``).
    :param price_min: the environment's ``priceMin`` (a number or its text).
    :param decimals: the fee token's ``decimals()``.
    """
    amount = float(seconds * float(price_min) / 60)
    with localcontext(Context(prec=78, rounding=ROUND_DOWN)):
        units = Decimal(str(amount))
        return 0 if units == 0 else int(units * Decimal(10) ** decimals)


def seconds_until(valid_until: int, now: float) -> int:
    """``timedelta(validUntil - now).seconds`` as the Provider computes it (wraps every 24 h)."""
    return timedelta(seconds=valid_until - now).seconds
