"""Small typed models of the compute-to-data objects; all JSON-serialisable (XCom, trigger kwargs)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from airflow_provider_ocean.exceptions import OceanValidationError
from airflow_provider_ocean.status import V4Status

# ``stopreq`` of a job status: none, stop requested, killed at the maximum duration.
STOPREQ_NONE = 0
STOPREQ_STOPPED = 1
STOPREQ_TIMED_OUT = 2


def _as_dict(value: Any, what: str) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise OceanValidationError(f"{what} must be a JSON object, got unparsable text") from None
    if not isinstance(value, dict):
        raise OceanValidationError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _int(value: Any, default: int = 0) -> int:
    if value is None or value == "":
        return default
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


_Coercible = TypeVar("_Coercible", "ComputeInput", "ComputeAlgorithm")


def _coerce(cls: type[_Coercible], value: Any, what: str) -> _Coercible:
    """``value`` as ``cls``: itself, a DID string or a dict (through ``cls.from_dict``).

    :param cls: :class:`ComputeInput` or :class:`ComputeAlgorithm`.
    :param value: the input as given.
    :param what: the input's name in the error message (``A dataset``, ``An algorithm``).
    """
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        return cls(did=value)
    if isinstance(value, dict):
        return cls.from_dict(value)
    raise OceanValidationError(
        f"{what} must be a DID, a dict or a {cls.__name__}, not {type(value).__name__}"
    )


def _order_ref(did: str | None, service_id: str | None, transfer_tx_id: str | None) -> dict[str, Any]:
    """The request form of an ordered input: ``documentId``, ``serviceId`` and, if paid, ``transferTxId``.

    :param did: the input's DID.
    :param service_id: the ordered service.
    :param transfer_tx_id: the order transaction, if any.
    """
    body: dict[str, Any] = {"documentId": did, "serviceId": service_id}
    if transfer_tx_id:
        body["transferTxId"] = transfer_tx_id
    return body


@dataclass
class ComputeInput:
    """One dataset of a compute job.

    :param did: the dataset DID (``did:op:...``).
    :param service_id: the DDO service id to order; ``None`` = the hook picks the compute service.
    :param transfer_tx_id: a previous order (``startOrder``/``reuseOrder`` tx) to reuse, if any.
    :param userdata: per-dataset user data passed to the job (must match the service's consumer parameters).
    """

    did: str
    service_id: str | None = None
    transfer_tx_id: str | None = None
    userdata: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.did, str) or not self.did.startswith("did:"):
            raise OceanValidationError(f"A dataset DID must look like 'did:op:...', got {self.did!r}")
        if self.service_id is not None:
            self.service_id = str(self.service_id)
        self.userdata = _as_dict(self.userdata, f"userdata of {self.did}")

    @classmethod
    def coerce(cls, value: ComputeInput | dict[str, Any] | str) -> ComputeInput:
        """Build a :class:`ComputeInput` from itself, a DID string or a dict.

        :param value: the dataset; dicts accept ``did``/``documentId``, ``service_id``/``serviceId``,
            ``transfer_tx_id``/``transferTxId``, ``userdata``.
        """
        return _coerce(cls, value, "A dataset")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (``from_dict`` round-trips it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComputeInput:
        """Build from :meth:`to_dict` output or the Provider's camelCase form.

        :param data: the dict.
        """
        return cls(
            did=data.get("did") or data.get("documentId") or "",
            service_id=data.get("service_id", data.get("serviceId")),
            transfer_tx_id=data.get("transfer_tx_id", data.get("transferTxId")),
            userdata=data.get("userdata"),
        )

    def to_request(self, *, transfer_tx_id: str | None = None) -> dict[str, Any]:
        """Return the Provider request form (``documentId``, ``serviceId``, ``transferTxId``, ``userdata``).

        :param transfer_tx_id: overrides :attr:`transfer_tx_id`.
        """
        body = _order_ref(self.did, self.service_id, transfer_tx_id or self.transfer_tx_id)
        if self.userdata:
            body["userdata"] = self.userdata
        return body


@dataclass
class ComputeAlgorithm:
    """The algorithm of a compute job: a published algorithm (DID) or raw code/URL with a container.

    :param did: DID of a published algorithm asset (DID form).
    :param service_id: the algorithm service to order (DID form); ``None`` = the hook picks it.
    :param transfer_tx_id: a previous order of the algorithm to reuse (DID form).
    :param algocustomdata: custom data handed to the algorithm (``algocustomdata``).
    :param algouserdata: user data for the algorithm service (``algouserdata``).
    :param rawcode: the algorithm source (raw form).
    :param url: a URL the algorithm is downloaded from (raw form).
    :param entrypoint: container entrypoint, e.g. ``python $ALGO`` (raw form).
    :param image: container image (raw form).
    :param tag: container image tag (raw form).
    :param checksum: container image digest ``sha256:...`` (raw form).
    """

    did: str | None = None
    service_id: str | None = None
    transfer_tx_id: str | None = None
    algocustomdata: dict[str, Any] | None = None
    algouserdata: dict[str, Any] | None = None
    rawcode: str | None = None
    url: str | None = None
    entrypoint: str | None = None
    image: str | None = None
    tag: str | None = None
    checksum: str | None = None

    def __post_init__(self) -> None:
        if self.service_id is not None:
            self.service_id = str(self.service_id)
        self.algocustomdata = _as_dict(self.algocustomdata, "algocustomdata")
        self.algouserdata = _as_dict(self.algouserdata, "algouserdata")
        self.validate()

    @property
    def is_raw(self) -> bool:
        """True for raw code/URL algorithms (no DID, no order)."""
        return self.did is None

    def validate(self) -> None:
        """Check the algorithm is complete; raises :class:`OceanValidationError` otherwise."""
        if self.did is not None:
            if not isinstance(self.did, str) or not self.did.startswith("did:"):
                raise OceanValidationError(f"An algorithm DID must look like 'did:op:...', got {self.did!r}")
            if self.rawcode or self.url:
                raise OceanValidationError("Give an algorithm either as a DID or as rawcode/url, not both")
            return
        if bool(self.rawcode) == bool(self.url):
            raise OceanValidationError("A raw algorithm needs exactly one of rawcode or url")
        missing = [name for name in ("entrypoint", "image", "checksum") if not getattr(self, name)]
        if missing:
            raise OceanValidationError(
                "A raw algorithm needs container " + ", ".join(missing) + " (entrypoint, image and checksum)"
            )
        if not str(self.checksum).startswith("sha256:"):
            raise OceanValidationError("The container checksum must start with 'sha256:'")

    @classmethod
    def coerce(cls, value: ComputeAlgorithm | dict[str, Any] | str) -> ComputeAlgorithm:
        """Build from itself, a DID string or a dict (see :meth:`from_dict`).

        :param value: the algorithm.
        """
        return _coerce(cls, value, "An algorithm")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (``from_dict`` round-trips it)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComputeAlgorithm:
        """Build from :meth:`to_dict` output, or the Provider form with ``documentId``/``meta``.

        :param data: the dict; ``meta`` may be ``{"rawcode"|"url", "container": {...}}``.
        """
        meta = data.get("meta")
        if isinstance(meta, str):
            meta = _as_dict(meta, "algorithm meta")
        flat = dict(data)
        if isinstance(meta, dict):
            flat.update({k: v for k, v in meta.items() if k in ("rawcode", "url")})
            container = meta.get("container") or {}
            flat.update({k: container.get(k) for k in ("entrypoint", "image", "tag", "checksum")})
        container = data.get("container")
        if isinstance(container, dict):
            flat.update({k: container.get(k) for k in ("entrypoint", "image", "tag", "checksum")})
        return cls(
            did=flat.get("did") or flat.get("documentId"),
            service_id=flat.get("service_id", flat.get("serviceId")),
            transfer_tx_id=flat.get("transfer_tx_id", flat.get("transferTxId")),
            algocustomdata=flat.get("algocustomdata"),
            algouserdata=flat.get("algouserdata", flat.get("userdata")),
            rawcode=flat.get("rawcode"),
            url=flat.get("url"),
            entrypoint=flat.get("entrypoint"),
            image=flat.get("image"),
            tag=flat.get("tag"),
            checksum=flat.get("checksum"),
        )

    def meta(self) -> dict[str, Any]:
        """Return the raw algorithm's ``meta`` object for the Provider."""
        body: dict[str, Any] = {"rawcode": self.rawcode} if self.rawcode else {"url": self.url}
        body["container"] = {
            "entrypoint": self.entrypoint,
            "image": self.image,
            "tag": self.tag or "latest",
            "checksum": self.checksum,
        }
        return body

    def to_initialize_request(self, *, transfer_tx_id: str | None = None) -> dict[str, Any]:
        """Return the ``algorithm`` member of ``initializeCompute``.

        :param transfer_tx_id: overrides :attr:`transfer_tx_id`.
        """
        if self.is_raw:
            return {"meta": self.meta()}
        return _order_ref(self.did, self.service_id, transfer_tx_id or self.transfer_tx_id)

    def to_start_request(self, *, transfer_tx_id: str | None = None) -> dict[str, Any]:
        """Return the ``algorithm`` member of ``POST /compute``.

        :param transfer_tx_id: overrides :attr:`transfer_tx_id` (required for DID algorithms).
        """
        body = self.to_initialize_request(transfer_tx_id=transfer_tx_id)
        if self.algocustomdata is not None:
            body["algocustomdata"] = self.algocustomdata
        if self.algouserdata is not None:
            body["algouserdata"] = self.algouserdata
        return body


@dataclass
class ComputeEnvironment:
    """A C2D environment as announced by ``GET /api/services/computeEnvironments``.

    :param id: environment id (the engine's namespace).
    :param chain_id: the chain it serves.
    :param consumer_address: the engine's wallet; the ``consumer`` of every order.
    :param price_min: price per minute in fee-token units (0 = free).
    :param fee_token: token the provider fee is paid in.
    :param max_job_duration: seconds a job may run.
    :param raw: the announcement as received.
    """

    id: str
    chain_id: int
    consumer_address: str
    price_min: float = 0.0
    fee_token: str = "0x0000000000000000000000000000000000000000"
    max_job_duration: int = 0
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def is_free(self) -> bool:
        """True when the environment charges nothing (``priceMin == 0``)."""
        return self.price_min == 0

    @classmethod
    def from_api(cls, chain_id: int, data: dict[str, Any]) -> ComputeEnvironment:
        """Parse one announcement; numbers may arrive as strings.

        :param chain_id: the chain-id key the entry was listed under.
        :param data: the environment object.
        """
        if not isinstance(data, dict) or not data.get("id") or not data.get("consumerAddress"):
            raise OceanValidationError(f"Malformed compute environment on chain {chain_id}: {data!r}"[:500])
        try:
            price = float(data.get("priceMin") or 0)
        except (TypeError, ValueError):
            raise OceanValidationError(
                f"Environment {data['id']} has a non-numeric priceMin {data.get('priceMin')!r}"
            ) from None
        return cls(
            id=str(data["id"]),
            chain_id=int(chain_id),
            consumer_address=str(data["consumerAddress"]),
            price_min=price,
            fee_token=str(data.get("feeToken") or "0x0000000000000000000000000000000000000000"),
            max_job_duration=_int(data.get("maxJobDuration")),
            raw=dict(data),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComputeEnvironment:
        """Inverse of :meth:`to_dict`.

        :param data: the dict.
        """
        return cls(**data)


@dataclass
class ResultFile:
    """One entry of a finished job's ``results`` list.

    :param index: position in the list; the ``index`` to pass to ``computeResult``.
    :param filename: file name.
    :param filesize: size in bytes (as announced).
    :param type: ``output``, ``algorithmLog``, ``configrationLog`` (sic), ``filteringLog``, ``publishLog``.
    """

    index: int
    filename: str
    filesize: int | None = None
    type: str = "output"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultFile:
        """Inverse of :meth:`to_dict`.

        :param data: the dict.
        """
        return cls(
            index=int(data["index"]),
            filename=str(data.get("filename", "")),
            filesize=None if data.get("filesize") is None else _int(data.get("filesize")),
            type=str(data.get("type") or "output"),
        )


def parse_results(results: Any) -> list[ResultFile]:
    """Parse a status object's ``results`` (``""`` until published, then a list).

    :param results: the ``results`` member.
    """
    if not isinstance(results, list):
        return []
    out = []
    for position, item in enumerate(results):
        if isinstance(item, dict):
            out.append(
                ResultFile(
                    index=position,
                    filename=str(item.get("filename", "")),
                    filesize=None if item.get("filesize") is None else _int(item.get("filesize")),
                    type=str(item.get("type") or "output"),
                )
            )
    return out


@dataclass
class JobStatus:
    """A compute job's status object.

    :param job_id: the job id (32 hex chars).
    :param status: numeric status code (compare numbers, not texts).
    :param status_text: the engine's text for it.
    :param owner: the owner address string the job was started with.
    :param agreement_id: the order tx used as agreement id.
    :param date_created: creation time (epoch seconds as text).
    :param date_finished: finish time (epoch seconds as text), ``None`` while running.
    :param stopreq: 0 none, 1 stop requested, 2 killed at max duration.
    :param removed: 1 when deleted.
    :param algo_did: algorithm DID or ``"raw"``.
    :param input_dids: input DIDs.
    :param results: published result files (empty until published).
    """

    job_id: str
    status: int
    status_text: str = ""
    owner: str = ""
    agreement_id: str | None = None
    date_created: str | None = None
    date_finished: str | None = None
    stopreq: int = 0
    removed: int = 0
    algo_did: str | None = None
    input_dids: list[str] = field(default_factory=list)
    results: list[ResultFile] = field(default_factory=list)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> JobStatus:
        """Parse a Provider/operator status object.

        :param data: one element of the status list.
        """
        if not isinstance(data, dict) or not data.get("jobId"):
            raise OceanValidationError(f"Malformed job status object: {data!r}"[:500])
        finished = data.get("dateFinished")
        inputs = data.get("inputDID")
        return cls(
            job_id=str(data["jobId"]),
            status=_int(data.get("status")),
            status_text=str(data.get("statusText") or ""),
            owner=str(data.get("owner") or ""),
            agreement_id=data.get("agreementId"),
            date_created=None if data.get("dateCreated") is None else str(data["dateCreated"]),
            date_finished=None if finished in (None, "", "null") else str(finished),
            stopreq=_int(data.get("stopreq")),
            removed=_int(data.get("removed")),
            algo_did=data.get("algoDID"),
            input_dids=[str(d) for d in inputs] if isinstance(inputs, list) else [],
            results=parse_results(data.get("results")),
        )

    @property
    def is_terminal(self) -> bool:
        """True once the job ended (``dateFinished`` set), whatever the outcome."""
        return self.date_finished is not None

    @property
    def is_succeeded(self) -> bool:
        """True when the pipeline finished (70) and nobody stopped it. The algorithm's exit code is not
        reflected: inspect the algorithm log for that."""
        return self.is_terminal and self.status == V4Status.FINISHED and self.stopreq == STOPREQ_NONE

    @property
    def is_failed(self) -> bool:
        """True for provisioning failures (31/32) and any other terminal state that is neither a success,
        a stop nor a timeout."""
        if self.is_provisioning_failure:
            return True
        return self.is_terminal and not (self.is_succeeded or self.is_stopped or self.is_timed_out)

    @property
    def is_provisioning_failure(self) -> bool:
        """True when the data or the algorithm could not be provisioned (31/32, the same codes on Provider v4
        and Ocean Node): the algorithm never ran."""
        return self.status in (V4Status.DATA_PROVISIONING_FAILED, V4Status.ALGORITHM_PROVISIONING_FAILED)

    @property
    def is_stopped(self) -> bool:
        """True when a stop was requested (``stopreq == 1``)."""
        return self.stopreq == STOPREQ_STOPPED

    @property
    def is_timed_out(self) -> bool:
        """True when the engine killed the job at its maximum duration (``stopreq == 2``)."""
        return self.stopreq == STOPREQ_TIMED_OUT

    @property
    def outcome(self) -> str:
        """One of ``running``, ``succeeded``, ``failed``, ``stopped``, ``timed_out``."""
        if self.is_timed_out and self.is_terminal:
            return "timed_out"
        if self.is_stopped and self.is_terminal:
            return "stopped"
        if self.is_succeeded:
            return "succeeded"
        if self.is_terminal or self.is_provisioning_failure:
            return "failed"
        return "running"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (``from_dict`` round-trips it)."""
        data = asdict(self)
        data["results"] = [r.to_dict() for r in self.results]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobStatus:
        """Inverse of :meth:`to_dict`.

        :param data: the dict.
        """
        values = dict(data)
        values["results"] = [ResultFile.from_dict(r) for r in values.get("results") or []]
        values["input_dids"] = list(values.get("input_dids") or [])
        return cls(**values)


@dataclass
class DownloadedResult:
    """What :meth:`download_result` wrote.

    :param job_id: the job id.
    :param index: the result index.
    :param bytes_written: number of bytes written.
    :param sha256: hex SHA-256 of the bytes written.
    :param filename: file name from ``Content-Disposition`` (or the result list).
    :param content_type: the response's content type.
    :param path: local path written to, when a path was given.
    """

    job_id: str
    index: int
    bytes_written: int
    sha256: str
    filename: str | None = None
    content_type: str | None = None
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict."""
        return asdict(self)
