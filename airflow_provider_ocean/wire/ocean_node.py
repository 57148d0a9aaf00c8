"""Ocean Node routes and payloads (see docs/reference/ocean-node-api.md).

Ocean Node keeps Provider v4's paths but not its payloads: every signed command signs
``consumerAddress + str(int(nonce)) + commandName`` (same EIP-191 keccak recipe as v4, so
:class:`~airflow_provider_ocean.signing.Signer` is reused), nonces are integers that must be strictly
greater than the stored one and are consumed even when the command then fails (so the stored nonce is read
before every signed command), job ids carry an engine prefix that status answers drop, results come with an
explicit ``index``, and errors are JSON strings, plain text or a bare ``Internal Server Error`` depending on
the route (:func:`~airflow_provider_ocean.wire.errors.parse_node_error`).

The transport is :class:`~airflow_provider_ocean.wire.http.WireClient` (reads retried on connection
errors and 502/503/504; a 429 or a 403 ``Too many active connections``/``Rate limit exceeded`` waited out
on every route, a signed command then re-signed with a fresh nonce; signed commands otherwise sent once,
start re-signed once more only when the node refused the nonce itself). Downloads are
:func:`~airflow_provider_ocean.wire.download.save_result`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import requests

from airflow_provider_ocean.exceptions import OceanJobNotFoundError, OceanValidationError
from airflow_provider_ocean.signing import NONCES, NonceAllocator
from airflow_provider_ocean.wire.errors import OceanNodeError, parse_node_error
from airflow_provider_ocean.wire.http import COMPUTE_ENDPOINTS, WireClient
from airflow_provider_ocean.wire.log_frames import split_lines
from airflow_provider_ocean.wire.node_payloads import (
    environment_from_node,
    full_job_id,
    job_status_from_node,
    node_results,
    split_job_id,
    start_options,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_ocean.models import ComputeEnvironment, JobStatus, ResultFile
    from airflow_provider_ocean.signing import Signer

log = logging.getLogger(__name__)

BACKEND_OCEAN_NODE = "ocean_node"
BACKEND_PROVIDER_V4 = "provider_v4"

# Signature commands (docs/reference/ocean-node-api.md §2).
CMD_START = "startCompute"
CMD_FREE_START = "freeStartCompute"
CMD_STOP = "stopCompute"
CMD_RESULT = "getComputeResult"
CMD_STREAM_LOGS = "getComputeStreamableLogs"
CMD_CREATE_TOKEN = "createAuthToken"
CMD_INVALIDATE_TOKEN = "invalidateAuthToken"

DEFAULT_ENDPOINTS: dict[str, tuple[str, str]] = {
    **COMPUTE_ENDPOINTS,
    "freeCompute": ("POST", "/api/services/freeCompute"),
    "computeStreamableLogs": ("GET", "/api/services/computeStreamableLogs"),
    "generateAuthToken": ("POST", "/api/services/auth/token"),
    "invalidateAuthToken": ("POST", "/api/services/auth/token/invalidate"),
}


def detect_backend(root: dict[str, Any]) -> str | None:
    """Tell Ocean Node from Provider v4 by their ``GET /`` answer (``None`` when neither matches).

    :param root: the JSON object of ``GET /``.
    """
    if not isinstance(root, dict):
        return None
    software = str(root.get("software") or "")
    if software == "Ocean-Node" or "nodeId" in root:
        return BACKEND_OCEAN_NODE
    if software == "Provider" or "providerAddresses" in root:
        return BACKEND_PROVIDER_V4
    return None


def node_message(consumer_address: str, nonce: int | str, command: str) -> str:
    """The text Ocean Node verifies: ``consumerAddress + String(parseInt(nonce)) + command``.

    :param consumer_address: the address string exactly as sent (use the checksummed form).
    :param nonce: an integer nonce (a decimal would be truncated by the node and fail).
    :param command: the command name, e.g. ``startCompute``.
    """
    return f"{consumer_address}{int(str(nonce))}{command}"


class OceanNodeClient(WireClient):
    """Talks to one Ocean Node over a ``requests.Session``.

    :param base_url: the node's base URL (``https://node.example.com:8001``).
    :param auth_token: an auth token (``createAuthToken``) sent as the raw ``Authorization`` header
        instead of signing commands.
    :param settings: ``timeout``, ``long_timeout``, ``verify``, ``retry_*``, ``max_rate_limit_wait``,
        ``session``, ``nonces``, ``sleep`` (see :class:`~airflow_provider_ocean.wire.http.WireClient`).
    """

    service = "Ocean Node"
    default_endpoints = DEFAULT_ENDPOINTS
    error_type = OceanNodeError
    # The node refuses a low nonce on some commands with an indistinct 500 (stop), so a refusal cannot
    # always be recognised and re-signed: read the stored nonce every time.
    refresh_nonce = True

    def __init__(self, base_url: str, *, auth_token: str | None = None, **settings: Any) -> None:
        super().__init__(base_url, **settings)
        self.auth_token = auth_token or None

    @staticmethod
    def _process_nonces() -> NonceAllocator:
        return NONCES

    def _parse_error(self, status: int, body: bytes, operation: str) -> OceanNodeError:
        return parse_node_error(status, body, operation=operation)

    # -- discovery -----------------------------------------------------------------------------------
    @property
    def backend(self) -> str | None:
        """``ocean_node``, ``provider_v4`` or ``None``, from ``GET /``."""
        return detect_backend(self.root())

    @property
    def node_address(self) -> str | None:
        """The node's ``providerAddress`` (escrow payee, order consumer, fee signer)."""
        value = self.root().get("providerAddress")
        return str(value) if value else None

    # -- environments --------------------------------------------------------------------------------
    def environments_raw(self, chain_id: int | None = None) -> list[dict[str, Any]]:
        """``GET computeEnvironments``: the flat list of environments as announced.

        :param chain_id: optional ``chainId`` filter.
        """
        operation = "list compute environments"
        method, url = self.endpoint("computeEnvironments")
        params = {"chainId": str(chain_id)} if chain_id is not None else None
        response = self._read(method, url, params=params, operation=operation)
        body = self._json(response, operation)
        if not isinstance(body, list):
            raise self._unexpected(response, "expected a list of environments", operation)
        return [env for env in body if isinstance(env, dict)]

    def environments(self, chain_id: int) -> list[ComputeEnvironment]:
        """The environments usable on ``chain_id`` as :class:`ComputeEnvironment` (``raw`` keeps the rest).

        :param chain_id: the chain.
        """
        return [environment_from_node(env, chain_id) for env in self.environments_raw(chain_id)]

    # -- nonces and signing --------------------------------------------------------------------------
    def get_nonce(self, address: str) -> int:
        """``GET nonce``: the last nonce the node stored for this exact address string (0 initially).

        :param address: the address string exactly as it will be sent.
        """
        value = self._read_nonce(address)
        try:
            return int(float(str(value))) if value not in (None, "") else 0
        except ValueError:
            raise OceanNodeError(f"non-numeric nonce {value!r}", operation="read nonce") from None

    def _signed_command(
        self,
        signer: Signer,
        command: str,
        name: str,
        payload: dict[str, Any],
        *,
        operation: str,
        in_query: bool = False,
        address_field: str = "consumerAddress",
        timeout: float | None = None,
        stream: bool = False,
        retry_nonce: bool = False,
        allow_token: bool = True,
        hold_until_answer: bool = True,
    ) -> requests.Response:
        """Sign ``payload`` for ``command`` with a fresh nonce (or use the auth token) and send it
        (``hold_until_answer``: :meth:`~airflow_provider_ocean.wire.http.WireClient._signed`)."""
        address = signer.address
        send: dict[str, Any] = dict(operation=operation, in_query=in_query, timeout=timeout, stream=stream)
        if allow_token and self.auth_token:
            body = {**payload, address_field: address}
            return self._unsigned(name, body, headers={"Authorization": self.auth_token}, **send)

        def build(nonce: str) -> tuple[str, dict[str, Any]]:
            body = {**payload, address_field: address, "nonce": str(int(nonce))}
            return node_message(address, nonce, command), body

        return self._signed(
            signer, name, build, retry_nonce=retry_nonce, hold_until_answer=hold_until_answer, **send
        )

    # -- auth tokens ---------------------------------------------------------------------------------
    def create_auth_token(self, signer: Signer, *, valid_until: int | None = None) -> str:
        """``POST auth/token`` (signed ``createAuthToken``): a token to send as the raw ``Authorization``.

        :param signer: the wallet the token is for.
        :param valid_until: optional expiry (unix ms, as the node expects).
        """
        payload: dict[str, Any] = {}
        if valid_until is not None:
            payload["validUntil"] = int(valid_until)
        response = self._signed_command(
            signer,
            CMD_CREATE_TOKEN,
            "generateAuthToken",
            payload,
            operation="create auth token",
            address_field="address",
            allow_token=False,
        )
        body = self._json(response, "create auth token")
        if not isinstance(body, dict) or not body.get("token"):
            raise self._unexpected(response, "expected {'token': ...}", "create auth token")
        return str(body["token"])

    def invalidate_auth_token(self, signer: Signer, token: str) -> None:
        """``POST auth/token/invalidate`` (signed ``invalidateAuthToken``).

        :param signer: the token owner.
        :param token: the token to revoke.
        """
        self._signed_command(
            signer,
            CMD_INVALIDATE_TOKEN,
            "invalidateAuthToken",
            {"token": token},
            operation="invalidate auth token",
            address_field="address",
            allow_token=False,
        )

    # -- paid quote and starts ----------------------------------------------------------------------
    def initialize_compute(
        self,
        *,
        environment: str,
        datasets: list[dict[str, Any]],
        algorithm: dict[str, Any],
        consumer_address: str,
        chain_id: int,
        token: str,
        max_job_duration: int | None = None,
        resources: list[dict[str, Any]] | None = None,
        queue_max_wait_time: int | None = None,
    ) -> dict[str, Any]:
        """``POST initializeCompute`` (unsigned): the paid quote and the order state of DID inputs.

        :param environment: environment id.
        :param datasets: dataset objects (``documentId``/``serviceId``/``transferTxId`` or ``fileObject``).
        :param algorithm: the algorithm object.
        :param consumer_address: the payer (the wallet that will sign the start).
        :param chain_id: chain of the escrow payment.
        :param token: the fee token.
        :param max_job_duration: seconds.
        :param resources: ``[{"id", "amount"}]``.
        :param queue_max_wait_time: seconds the job may wait in the queue.
        :return: ``{"algorithm", "datasets", "payment": {escrowAddress, payee, chainId, minLockSeconds,
            token, amount}}``.
        """
        operation = "initializeCompute"
        method, url = self.endpoint("initializeCompute")
        payment: dict[str, Any] = {"chainId": int(chain_id), "token": token}
        if resources:
            payment["resources"] = resources
        body: dict[str, Any] = {
            "datasets": datasets,
            "algorithm": algorithm,
            "environment": environment,
            "consumerAddress": consumer_address,
            "payment": payment,
            **start_options(max_job_duration, None, None, None, queue_max_wait_time, None),
        }
        response = self._command(method, url, json_body=body, operation=operation, timeout=self.long_timeout)
        answer = self._json(response, operation)
        if not isinstance(answer, dict) or not isinstance(answer.get("payment"), dict):
            raise self._unexpected(response, "expected a quote with a payment object", operation)
        return answer

    def _start(
        self,
        signer: Signer,
        free: bool,
        environment: str,
        algorithm: dict[str, Any],
        datasets: list[dict[str, Any]],
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        operation = "start free compute" if free else "start compute"
        body: dict[str, Any] = {"environment": environment, "algorithm": algorithm, "datasets": datasets}
        response = self._signed_command(
            signer,
            CMD_FREE_START if free else CMD_START,
            "freeCompute" if free else "computeStart",
            {**body, **extra},
            operation=operation,
            timeout=self.long_timeout,
            retry_nonce=True,
        )
        job = dict(self._new_job(response, operation))
        job["jobId"] = full_job_id(str(job.get("jobId") or ""), environment=environment)
        log.info("%s: job %s on %s (status %s)", operation, job["jobId"], environment, job.get("status"))
        return job

    def start_free_compute(
        self,
        signer: Signer,
        *,
        environment: str,
        algorithm: dict[str, Any],
        datasets: list[dict[str, Any]],
        max_job_duration: int | None = None,
        resources: list[dict[str, Any]] | None = None,
        metadata: dict[str, Any] | None = None,
        additional_viewers: list[str] | None = None,
        queue_max_wait_time: int | None = None,
        output: Any = None,
    ) -> dict[str, Any]:
        """``POST freeCompute`` (signed ``freeStartCompute``): start a free job; return the raw job.

        :param signer: the user's signer; its checksummed address is sent as ``consumerAddress``.
        :param environment: an environment with a ``free`` block.
        :param algorithm: ``{"meta": {"rawcode", "container"}}`` or a DID form.
        :param datasets: ``[{"fileObject": {...}}]`` or DID forms; ``[]`` allowed.
        :param max_job_duration: seconds (capped by the node at ``env.free.maxJobDuration``).
        :param resources: ``[{"id", "amount"}]``.
        :param metadata: free-form job metadata.
        :param additional_viewers: other addresses allowed to read the results.
        :param queue_max_wait_time: seconds to wait in the queue (0 = fail instead of queueing).
        :param output: an encrypted remote-storage spec.
        """
        extra = start_options(
            max_job_duration, resources, metadata, additional_viewers, queue_max_wait_time, output
        )
        return self._start(signer, True, environment, algorithm, datasets, extra)

    def start_compute(
        self,
        signer: Signer,
        *,
        environment: str,
        algorithm: dict[str, Any],
        datasets: list[dict[str, Any]],
        max_job_duration: int,
        payment: dict[str, Any],
        resources: list[dict[str, Any]] | None = None,
        metadata: dict[str, Any] | None = None,
        additional_viewers: list[str] | None = None,
        queue_max_wait_time: int | None = None,
        output: Any = None,
    ) -> dict[str, Any]:
        """``POST compute`` (signed ``startCompute``): start a paid job (escrow funded and authorized first).

        :param signer: the payer's signer.
        :param environment: the environment id.
        :param algorithm: the algorithm object.
        :param datasets: dataset objects (DID inputs with ``transferTxId`` of an order to the node).
        :param max_job_duration: seconds (> 0).
        :param payment: ``{"chainId", "token"}``.
        :param resources: ``[{"id", "amount"}]``.
        :param metadata: free-form job metadata.
        :param additional_viewers: other addresses allowed to read the results.
        :param queue_max_wait_time: seconds to wait in the queue.
        :param output: an encrypted remote-storage spec.
        """
        if int(max_job_duration) <= 0:
            raise OceanValidationError("maxJobDuration must be a positive number of seconds")
        if not payment or not payment.get("chainId") or not payment.get("token"):
            raise OceanValidationError("A paid Ocean Node job needs payment={'chainId', 'token'}")
        extra = start_options(
            max_job_duration, resources, metadata, additional_viewers, queue_max_wait_time, output
        )
        extra["payment"] = {"chainId": int(payment["chainId"]), "token": payment["token"]}
        return self._start(signer, False, environment, algorithm, datasets, extra)

    def get_status(
        self,
        *,
        consumer_address: str | None = None,
        job_id: str | None = None,
        agreement_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """``GET compute`` (unsigned): raw status entries; each ``jobId`` is restored to its full form.

        :param consumer_address: the owner string exactly as sent at start.
        :param job_id: the FULL job id (a bare hash would query every engine without a job filter).
        :param agreement_id: filter by agreement id.
        """
        if not (consumer_address or job_id or agreement_id):
            raise OceanValidationError("Give at least one of consumer_address, job_id or agreement_id")
        if job_id and "-" not in job_id:
            raise OceanValidationError(
                f"{job_id!r} is not a full Ocean Node job id (<engineHash>-<hash>): "
                "keep the id the start returned"
            )
        operation = f"job status {job_id}" if job_id else "list jobs"
        method, url = self.endpoint("computeStatus")
        params = {"consumerAddress": consumer_address, "jobId": job_id, "agreementId": agreement_id}
        params = {key: value for key, value in params.items() if value}
        response = self._read(method, url, params=params, operation=operation)
        out = []
        for item in self._job_list(response, operation):
            if not isinstance(item, dict) or not item.get("jobId"):
                continue
            entry = dict(item)
            entry["jobId"] = full_job_id(
                str(item["jobId"]), environment=item.get("environment"), known=job_id
            )
            self._listed.remember(entry["jobId"], node_results(entry.get("results")))
            out.append(entry)
        return out

    def job_status(
        self, consumer_address: str, job_id: str, *, previous: JobStatus | None = None
    ) -> JobStatus:
        """The mapped status of one job (see :func:`.node_payloads.job_status_from_node`).

        :param consumer_address: the owner string exactly as sent at start.
        :param job_id: the full job id.
        :param previous: the status seen at the previous poll.
        :raises OceanJobNotFoundError: the node knows no such job for this owner.
        """
        return job_status_from_node(self._entry(consumer_address, job_id), job_id=job_id, previous=previous)

    def list_jobs(self, consumer_address: str) -> list[JobStatus]:
        """Every job of the owner, mapped (full ids restored from each job's environment).

        :param consumer_address: the owner string exactly as sent at start.
        """
        return [job_status_from_node(entry) for entry in self.get_status(consumer_address=consumer_address)]

    def stop_job(
        self, signer: Signer, job_id: str, *, agreement_id: str | None = None
    ) -> list[dict[str, Any]]:
        """``PUT compute`` with the parameters in the **query string** (signed ``stopCompute``).

        Any validation or auth failure comes back as 500 ``Internal Server Error``.

        :param signer: the job owner's signer.
        :param job_id: the full job id.
        :param agreement_id: optional agreement id.
        """
        payload: dict[str, Any] = {"jobId": job_id}
        if agreement_id:
            payload["agreementId"] = agreement_id
        response = self._signed_command(
            signer, CMD_STOP, "computeStop", payload, operation=f"stop job {job_id}", in_query=True
        )
        return [
            {
                **item,
                "jobId": full_job_id(str(item["jobId"]), environment=item.get("environment"), known=job_id),
            }
            for item in self._jobs_if_any(response)
        ]

    def list_results(self, consumer_address: str, job_id: str) -> list[ResultFile]:
        """The job's result files with the node's explicit indexes.

        :param consumer_address: the owner string exactly as sent at start.
        :param job_id: the full job id.
        """
        return node_results(self._entry(consumer_address, job_id).get("results"))

    def _entry(self, consumer_address: str, job_id: str) -> dict[str, Any]:
        bare = split_job_id(job_id)[1]
        for entry in self.get_status(consumer_address=consumer_address, job_id=job_id):
            if split_job_id(entry["jobId"])[1] == bare:
                return entry
        raise OceanJobNotFoundError(
            f"No job {job_id} for owner {consumer_address} at {self.base_url}", job_id=job_id
        )

    def _result_response(self, signer: Signer, job_id: str, index: int, operation: str) -> requests.Response:
        """``GET computeResult`` (signed ``getComputeResult``), query parameters. An unknown index is
        answered 200 with an empty body: the download checks it against the listed size."""
        payload = {"jobId": job_id, "index": str(index)}
        return self._signed_command(
            signer, CMD_RESULT, "computeResult", payload, operation=operation, in_query=True, stream=True
        )

    def _result_fallback_name(self, job_id: str, index: int) -> str:
        return f"{split_job_id(job_id)[1]}-{index}"

    def stream_logs(self, signer: Signer, job_id: str, *, timeout: float | None = None) -> Iterator[str]:
        """``GET computeStreamableLogs`` (signed): yield the running container's log lines as they come.

        Ends quietly when the job is not running (404 ``Job not found or not running``) or the stream closes.
        A node that passes Docker's multiplexed log frames on (v3.1.0) is decoded: only the printed lines
        are yielded (:mod:`airflow_provider_ocean.wire.log_frames`).

        :param signer: the job owner's signer.
        :param job_id: the full job id.
        :param timeout: read timeout between two chunks (default: the client's timeout).
        """
        operation = f"stream logs of job {job_id}"
        try:
            response = self._signed_command(
                signer,
                CMD_STREAM_LOGS,
                "computeStreamableLogs",
                {"jobId": job_id},
                operation=operation,
                in_query=True,
                stream=True,
                timeout=timeout,
                retry_nonce=True,
                hold_until_answer=False,  # the node answers once the algorithm prints: never block others
            )
        except OceanNodeError as exc:
            if exc.status == 404:
                return
            raise
        try:
            # as the bytes arrive; Docker's log frames (a node without TTY) are taken off
            yield from split_lines(response.iter_content(chunk_size=None))
        except requests.RequestException as exc:
            log.info("%s: the stream ended (%s)", operation, type(exc).__name__)
        finally:
            response.close()
