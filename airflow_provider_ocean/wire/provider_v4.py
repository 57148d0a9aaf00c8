"""Provider v4 (and Aquarius) routes and payloads (see docs/reference/provider-v4-api.md).

The transport (session, timeouts, retries of reads, rate limits, signing with nonce reservation, error
bodies) is :class:`~airflow_provider_ocean.wire.http.WireClient`; downloads are
:func:`~airflow_provider_ocean.wire.download.save_result`. Only idempotent reads (``GET /``, environments,
DDO, nonce, status) are retried, on connection errors, timeouts and 5xx. Start, stop, delete and result
downloads consume a nonce and may have side effects: they are sent once (start is re-signed and sent a
second time only when the Provider refused the nonce itself, which happens before anything runs; a
rate-limit answer is waited out and the command signed again).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_provider_ocean.exceptions import (
    OceanJobNotFoundError,
    OceanProviderError,
    OceanValidationError,
)
from airflow_provider_ocean.models import ComputeEnvironment, JobStatus, ResultFile
from airflow_provider_ocean.signing import NONCES, NonceAllocator, job_message, result_message, start_message
from airflow_provider_ocean.wire.errors import parse_error
from airflow_provider_ocean.wire.http import COMPUTE_ENDPOINTS, WireClient

if TYPE_CHECKING:
    import requests

    from airflow_provider_ocean.signing import Signer

DEFAULT_ENDPOINTS: dict[str, tuple[str, str]] = {
    **COMPUTE_ENDPOINTS,
    "computeDelete": ("DELETE", "/api/services/compute"),
}


class ProviderV4Client(WireClient):
    """Talks to one Ocean Provider v4 over a ``requests.Session``.

    :param base_url: the Provider's base URL (``https://provider.example.com``).
    :param aquarius_url: base URL of the Aquarius serving DDOs; defaults to ``base_url``.
    :param settings: ``timeout``, ``long_timeout``, ``verify``, ``retry_*``, ``max_rate_limit_wait``,
        ``session``, ``nonces``, ``sleep`` (see :class:`~airflow_provider_ocean.wire.http.WireClient`).
    """

    service = "Provider"
    default_endpoints = DEFAULT_ENDPOINTS
    #: The Provider answers 5xx for uncaught exceptions and operator-service trouble: all worth a retry.
    transient_statuses = frozenset(range(500, 600))
    #: It accepts a nonce equal to the stored one (then fails after running the command): salted
    #: decimal nonces keep hosts without a shared lock from ever sending equal ones (signing.py).
    salted_nonces = True

    def __init__(self, base_url: str, *, aquarius_url: str | None = None, **settings: Any) -> None:
        super().__init__(base_url, **settings)
        self.aquarius_url = (aquarius_url or base_url).rstrip("/")

    @staticmethod
    def _process_nonces() -> NonceAllocator:
        return NONCES

    def _root_problem(self, body: Any) -> str | None:
        if not isinstance(body, dict) or not isinstance(body.get("serviceEndpoints"), dict):
            return "GET / did not return a Provider description with serviceEndpoints"
        return None

    # -- discovery -----------------------------------------------------------------------------------
    @property
    def software(self) -> str | None:
        """The ``software`` member of ``GET /`` (``"Provider"`` for the Python Provider)."""
        return self.root().get("software")

    @property
    def version(self) -> str | None:
        """The Provider's version."""
        return self.root().get("version")

    def provider_address(self, chain_id: int) -> str | None:
        """The Provider's signing address on ``chain_id``, if it serves that chain.

        :param chain_id: the chain id.
        """
        addresses = self.root().get("providerAddresses") or {}
        if not isinstance(addresses, dict):
            return None
        return addresses.get(str(chain_id)) or addresses.get(chain_id)

    # -- environments and DDOs -----------------------------------------------------------------------
    def compute_environments(self) -> dict[int, list[ComputeEnvironment]]:
        """``GET computeEnvironments``: the environments per chain id (validated)."""
        operation = "list compute environments"
        method, url = self.endpoint("computeEnvironments")
        response = self._read(method, url, operation=operation)
        body = self._json(response, operation)
        if isinstance(body, dict) and "error" in body and not isinstance(body.get("error"), list):
            raise parse_error(response.status_code, response.text, operation=operation)
        if not isinstance(body, dict):
            raise self._unexpected(response, "expected an object keyed by chain id", operation)
        out: dict[int, list[ComputeEnvironment]] = {}
        for key, envs in body.items():
            try:
                chain_id = int(key)
            except (TypeError, ValueError):
                raise self._unexpected(
                    response, f"unexpected key {key!r} (expected chain ids)", operation
                ) from None
            if not isinstance(envs, list):
                raise self._unexpected(
                    response, f"environments of chain {chain_id} are not a list", operation
                )
            out[chain_id] = [ComputeEnvironment.from_api(chain_id, env) for env in envs]
        return out

    def environments(self, chain_id: int) -> list[ComputeEnvironment]:
        """The environments of one chain (empty list if none).

        :param chain_id: the chain id.
        """
        return self.compute_environments().get(int(chain_id), [])

    def choose_free_environment(self, chain_id: int) -> ComputeEnvironment:
        """Return the first free environment (``priceMin == 0``) of the chain.

        :param chain_id: the chain id.
        """
        envs = self.environments(chain_id)
        for env in envs:
            if env.is_free:
                return env
        if not envs:
            raise OceanValidationError(
                f"The Provider at {self.base_url} has no compute environment on chain {chain_id}"
            )
        listed = ", ".join(f"{e.id} (priceMin {e.price_min:g})" for e in envs)
        raise OceanValidationError(
            f"No free compute environment on chain {chain_id}: {listed}. Pass an environment id explicitly "
            "(and a max_fee) to use a paid one."
        )

    def get_ddo(self, did: str) -> dict[str, Any]:
        """Fetch a DDO from Aquarius: ``GET {aquarius}/api/aquarius/assets/ddo/{did}``.

        :param did: the asset DID.
        """
        operation = f"resolve DDO {did}"
        url = f"{self.aquarius_url}/api/aquarius/assets/ddo/{quote(did, safe=':')}"
        try:
            response = self._read("GET", url, operation=operation)
        except OceanProviderError as exc:
            if exc.status in (400, 404):
                raise OceanValidationError(
                    f"DID {did} was not found in Aquarius at {self.aquarius_url} (HTTP {exc.status})",
                    hint="check the DID, the chain and the connection's aquarius_url",
                ) from None
            raise
        body = self._json(response, operation)
        if not isinstance(body, dict) or not isinstance(body.get("services"), list):
            raise OceanValidationError(f"The DDO of {did} is malformed (no services list)")
        return body

    # -- nonces --------------------------------------------------------------------------------------
    def get_nonce(self, address: str) -> Any:
        """The Provider's stored nonce for the exact address string (a Decimal as text).

        :param address: the address string, exactly as it will be sent as ``consumerAddress``.
        """
        return self._read_nonce(address)

    # -- compute -------------------------------------------------------------------------------------
    def initialize_compute(
        self,
        *,
        datasets: list[dict[str, Any]],
        algorithm: dict[str, Any],
        environment: str,
        valid_until: int,
        consumer_address: str,
    ) -> dict[str, Any]:
        """``POST initializeCompute``: quote the provider fees and the order state of every input.

        Not retried (the Provider may wait ~120 s per unknown tx); uses :attr:`long_timeout`.

        :param datasets: dataset request objects (``documentId``, ``serviceId``, ``transferTxId``...).
        :param algorithm: the algorithm object (``documentId``/``serviceId``/``transferTxId`` or ``meta``).
        :param environment: the environment id.
        :param valid_until: unix seconds the provider fee must cover.
        :param consumer_address: the environment's ``consumerAddress`` (the orders' consumer).
        """
        operation = "initializeCompute"
        method, url = self.endpoint("initializeCompute")
        body = {
            "datasets": datasets,
            "algorithm": algorithm,
            "compute": {"env": environment, "validUntil": int(valid_until)},
            "consumerAddress": consumer_address,
        }
        response = self._command(method, url, json_body=body, operation=operation, timeout=self.long_timeout)
        answer = self._json(response, operation)
        if not isinstance(answer, dict) or not isinstance(answer.get("datasets"), list):
            raise self._unexpected(response, "expected {'datasets': [...]}", operation)
        if len(answer["datasets"]) != len(datasets):
            raise self._unexpected(
                response,
                f"answered for {len(answer['datasets'])} datasets, asked for {len(datasets)}",
                operation,
            )
        if algorithm.get("documentId") and not isinstance(answer.get("algorithm"), dict):
            raise self._unexpected(response, "no algorithm entry for a DID algorithm", operation)
        return answer

    def start_compute(
        self,
        signer: Signer,
        *,
        datasets: list[dict[str, Any]],
        algorithm: dict[str, Any],
        environment: str,
    ) -> JobStatus:
        """``POST compute`` (signed): start a job. Sent once, with a JSON body and a long timeout.

        :param signer: the user's signer; its address is sent as ``consumerAddress``.
        :param datasets: dataset request objects; the first is ``dataset``, the rest ``additionalDatasets``.
        :param algorithm: the algorithm object (with ``algocustomdata``/``algouserdata`` if any).
        :param environment: the environment id.
        """
        if not datasets:
            raise OceanValidationError("A compute job needs at least one dataset")
        operation = "start compute"
        consumer = signer.address
        did = datasets[0]["documentId"]

        def build(nonce: str) -> tuple[str, dict[str, Any]]:
            payload: dict[str, Any] = {
                "dataset": datasets[0],
                "algorithm": algorithm,
                "environment": environment,
                "consumerAddress": consumer,
                "nonce": nonce,
            }
            if len(datasets) > 1:
                payload["additionalDatasets"] = datasets[1:]
            return start_message(consumer, did, nonce), payload

        response = self._signed(
            signer, "computeStart", build, operation=operation, timeout=self.long_timeout, retry_nonce=True
        )
        return JobStatus.from_api(self._new_job(response, operation))

    def get_status(self, consumer_address: str, job_id: str | None = None) -> list[JobStatus]:
        """``GET compute`` (unsigned): status objects of the owner's jobs, or of one job.

        An empty list is a valid answer (no such job for this exact owner string).

        :param consumer_address: the owner, exactly as sent at start.
        :param job_id: restrict to one job.
        """
        operation = f"job status {job_id}" if job_id else "list jobs"
        method, url = self.endpoint("computeStatus")
        params = {"consumerAddress": consumer_address}
        if job_id:
            params["jobId"] = job_id
        response = self._read(method, url, params=params, operation=operation)
        jobs = [JobStatus.from_api(item) for item in self._job_list(response, operation)]
        for job in jobs:
            self._listed.remember(job.job_id, job.results)
        return jobs

    def stop_job(self, signer: Signer, job_id: str, *, document_id: str | None = None) -> list[JobStatus]:
        """``PUT compute`` (signed): request a stop. Returns the status list read back after the stop.

        operator-service sets ``stopreq`` 1 on the matching jobs (finished ones too, for good) and then reads
        them back (``routes.py`` ``stop_compute_job``), so the answer shows ``stopreq`` 1 and the status as it
        was.

        :param signer: the job owner's signer.
        :param job_id: the job id.
        :param document_id: optional DID (part of the signed message when given).
        """
        return self._job_command(signer, "computeStop", "stop job", job_id, document_id)

    def delete_job(self, signer: Signer, job_id: str, *, document_id: str | None = None) -> list[JobStatus]:
        """``DELETE compute`` (signed). The current operator-service treats it as a no-op.

        :param signer: the job owner's signer.
        :param job_id: the job id.
        :param document_id: optional DID (part of the signed message when given).
        """
        return self._job_command(signer, "computeDelete", "delete job", job_id, document_id)

    def _job_command(
        self, signer: Signer, name: str, operation: str, job_id: str, document_id: str | None
    ) -> list[JobStatus]:
        consumer = signer.address

        def build(nonce: str) -> tuple[str, dict[str, Any]]:
            payload: dict[str, Any] = {
                "consumerAddress": consumer,
                "jobId": job_id,
                "nonce": nonce,
            }
            if document_id:
                payload["documentId"] = document_id
            return job_message(consumer, job_id, document_id, nonce), payload

        # A refused nonce is refused before anything runs: re-signing once is safe.
        response = self._signed(signer, name, build, operation=f"{operation} {job_id}", retry_nonce=True)
        return [JobStatus.from_api(item) for item in self._jobs_if_any(response)]

    def list_results(self, consumer_address: str, job_id: str) -> list[ResultFile]:
        """The job's result files (index = position), from its status object.

        :param consumer_address: the owner, exactly as sent at start.
        :param job_id: the job id.
        """
        jobs = [j for j in self.get_status(consumer_address, job_id) if j.job_id == job_id]
        if not jobs:
            raise OceanJobNotFoundError(
                f"No job {job_id} for owner {consumer_address} at {self.base_url}", job_id=job_id
            )
        return jobs[0].results

    def _result_response(self, signer: Signer, job_id: str, index: int, operation: str) -> requests.Response:
        """``GET computeResult`` (signed ``consumerAddress + jobId + index + nonce``), query parameters."""
        consumer = signer.address

        def build(nonce: str) -> tuple[str, dict[str, Any]]:
            payload: dict[str, Any] = {
                "jobId": job_id,
                "index": str(index),
                "consumerAddress": consumer,
                "nonce": nonce,
            }
            return result_message(consumer, job_id, index, nonce), payload

        return self._signed(
            signer, "computeResult", build, operation=operation, in_query=True, stream=True, retry_nonce=True
        )
