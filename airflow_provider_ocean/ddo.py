"""Checks of DDOs, services and trust lists, done before anything is spent.

They refuse, with a message naming the asset and the field, what the Provider or Ocean Node would refuse
only after the orders were paid: a service of the wrong type, an asset on another chain or not
consumable, a raw algorithm a dataset does not allow, an algorithm (or its publisher) a dataset does not
trust, an algorithm DDO without a container.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import TYPE_CHECKING, Any

from airflow_provider_ocean.exceptions import OceanValidationError
from airflow_provider_ocean.records import Orderable

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_ocean.models import ComputeAlgorithm, ComputeInput


def find_service(ddo: dict[str, Any], service_id: str | None, *, role: str) -> tuple[dict[str, Any], int]:
    """Return ``(service, position in services[])`` of a DDO.

    Without ``service_id`` the first ``compute`` service is taken for datasets, the first ``access``
    (else ``compute``) service for algorithms.

    :param ddo: the DDO.
    :param service_id: the wanted service id, or ``None``.
    :param role: ``dataset``, ``additional dataset`` or ``algorithm``.
    """
    services = ddo.get("services") or []
    did = ddo.get("id", "?")
    if service_id is not None:
        for position, service in enumerate(services):
            if isinstance(service, dict) and str(service.get("id")) == str(service_id):
                return service, position
        known = ", ".join(f"{s.get('id')} ({s.get('type')})" for s in services if isinstance(s, dict))
        raise OceanValidationError(
            f"The {role} {did} has no service {service_id!r} (services: {known or 'none'})"
        )
    wanted: tuple[str, ...] = ("access", "compute") if role == "algorithm" else ("compute", "access")
    if role == "dataset":
        wanted = ("compute",)
    for kind in wanted:
        for position, service in enumerate(services):
            if isinstance(service, dict) and service.get("type") == kind:
                return service, position
    raise OceanValidationError(f"The {role} {did} has no {' or '.join(wanted)} service")


def container_section_checksum(container: dict[str, Any]) -> str:
    """``sha256_hex(entrypoint + checksum)`` of an algorithm container, as the Provider computes it.

    :param container: the DDO's ``metadata.algorithm.container``.
    """
    return hashlib.sha256(
        f"{container.get('entrypoint', '')}{container.get('checksum', '')}".encode()
    ).hexdigest()


def check_dataset_service(
    ddo: dict[str, Any], service: dict[str, Any], *, role: str, chain_id: int | None
) -> None:
    """Check a dataset's DDO and service can be ordered for compute.

    :param ddo: the dataset DDO.
    :param service: the chosen service.
    :param role: ``dataset`` (must be a compute service) or ``additional dataset``.
    :param chain_id: the chain the hook pays on; the DDO must live there.
    """
    did = ddo.get("id", "?")
    if chain_id is not None and ddo.get("chainId") is not None and int(ddo["chainId"]) != int(chain_id):
        raise OceanValidationError(
            f"The {role} {did} lives on chain {ddo['chainId']}, the connection on {chain_id}"
        )
    kind = service.get("type")
    if kind not in ("access", "compute"):
        raise OceanValidationError(
            f"Service {service.get('id')} of {did} is of type {kind!r}, not access/compute"
        )
    if role == "dataset" and kind != "compute":
        raise OceanValidationError(
            f"The first dataset must be ordered through a compute service; service {service.get('id')} of "
            f"{did} is {kind!r}"
        )
    if not service.get("datatokenAddress"):
        raise OceanValidationError(f"Service {service.get('id')} of {did} has no datatokenAddress")
    nft_state = (ddo.get("nft") or {}).get("state")
    if nft_state is not None and int(nft_state) not in (0, 5):
        raise OceanValidationError(f"The {role} {did} is not consumable (NFT state {nft_state})")


def check_algorithm_allowed(
    dataset_ddo: dict[str, Any],
    service: dict[str, Any],
    algorithm: ComputeAlgorithm,
    algorithm_ddo: dict[str, Any] | None,
) -> None:
    """Check the dataset's compute service accepts the algorithm, as the Provider will.

    Raw algorithms need ``compute.allowRawAlgorithm``. A DID algorithm is accepted when both
    ``publisherTrustedAlgorithms`` and ``publisherTrustedAlgorithmPublishers`` are empty; otherwise its
    publisher (``nft.owner``) must be listed when publishers are given, and its DID must be listed with a
    matching ``containerSectionChecksum`` when trusted algorithms are given. (``filesChecksum`` needs the
    decrypted files; only the Provider can check it.)

    :param dataset_ddo: the dataset's DDO.
    :param service: the dataset's compute service.
    :param algorithm: the algorithm.
    :param algorithm_ddo: the algorithm's DDO (DID algorithms).
    """
    if service.get("type") != "compute":
        return
    did = dataset_ddo.get("id", "?")
    compute = service.get("compute") or {}
    if algorithm.is_raw:
        if compute.get("allowRawAlgorithm") is not True:
            raise OceanValidationError(
                f"The compute service {service.get('id')} of {did} does not allow raw algorithms "
                "(compute.allowRawAlgorithm is false); use a published algorithm DID"
            )
        return
    trusted = compute.get("publisherTrustedAlgorithms") or []
    publishers = compute.get("publisherTrustedAlgorithmPublishers") or []
    if not trusted and not publishers:
        return
    algorithm_ddo = algorithm_ddo or {}
    if publishers:
        owner = str((algorithm_ddo.get("nft") or {}).get("owner") or "")
        if owner.lower() not in {str(p).lower() for p in publishers}:
            raise OceanValidationError(
                f"The algorithm {algorithm.did} is published by {owner or 'an unknown owner'}, "
                f"which {did} does not trust (publisherTrustedAlgorithmPublishers)"
            )
    if trusted:
        entries = [t for t in trusted if isinstance(t, dict) and t.get("did") == algorithm.did]
        if not entries:
            raise OceanValidationError(
                f"The algorithm {algorithm.did} is not in the publisherTrustedAlgorithms of {did}"
            )
        expected = entries[0].get("containerSectionChecksum")
        container = ((algorithm_ddo.get("metadata") or {}).get("algorithm") or {}).get("container") or {}
        if expected and container and container_section_checksum(container) != str(expected).lower():
            raise OceanValidationError(
                f"The container of algorithm {algorithm.did} changed since {did} trusted it "
                "(containerSectionChecksum mismatch)"
            )


def check_algorithm_ddo(ddo: dict[str, Any], service: dict[str, Any], *, chain_id: int | None) -> None:
    """Check an algorithm's DDO: an algorithm asset with a container and an orderable service.

    :param ddo: the algorithm DDO.
    :param service: the chosen service.
    :param chain_id: the chain the hook pays on.
    """
    did = ddo.get("id", "?")
    if chain_id is not None and ddo.get("chainId") is not None and int(ddo["chainId"]) != int(chain_id):
        raise OceanValidationError(
            f"The algorithm {did} lives on chain {ddo['chainId']}, the connection on {chain_id}"
        )
    metadata = ddo.get("metadata") or {}
    if metadata.get("type") != "algorithm":
        raise OceanValidationError(
            f"{did} is not an algorithm asset (metadata.type is {metadata.get('type')!r})"
        )
    container = (metadata.get("algorithm") or {}).get("container") or {}
    missing = [k for k in ("entrypoint", "image", "checksum") if not container.get(k)]
    if missing:
        raise OceanValidationError(f"The algorithm {did} has no container {', '.join(missing)}")
    if service.get("type") not in ("access", "compute"):
        raise OceanValidationError(f"Service {service.get('id')} of algorithm {did} is not access/compute")
    if not service.get("datatokenAddress"):
        raise OceanValidationError(f"Service {service.get('id')} of {did} has no datatokenAddress")


__all__ = [
    "check_algorithm_allowed",
    "check_algorithm_ddo",
    "check_dataset_service",
    "container_section_checksum",
    "find_service",
]


@dataclasses.dataclass
class ResolvedInputs:
    """The inputs of a Provider v4 job with their services resolved and checked.

    :param datasets: the datasets, each with its ``service_id``.
    :param algorithm: the algorithm (a DID algorithm with its ``service_id``).
    :param orderables: what must be ordered: the datasets, then a DID algorithm.
    """

    datasets: list[ComputeInput]
    algorithm: ComputeAlgorithm
    orderables: list[Orderable]


def resolve_inputs(
    get_ddo: Callable[[str], dict[str, Any]],
    datasets: list[ComputeInput],
    algorithm: ComputeAlgorithm,
    *,
    chain_id: int | None,
) -> ResolvedInputs:
    """Read every input's DDO and check it as a Provider v4 would, before anything is spent.

    :param get_ddo: reads a DDO by DID.
    :param datasets: the datasets (at least one).
    :param algorithm: the algorithm (raw or DID).
    :param chain_id: the connection's chain.
    :raises OceanValidationError: no dataset, or a check failed (the message names the asset and field).
    """
    if not datasets:
        raise OceanValidationError("A compute job needs at least one dataset")
    algorithm_ddo = None
    algo_entry = None
    if not algorithm.is_raw:
        algorithm_ddo = get_ddo(str(algorithm.did))
        service, index = find_service(algorithm_ddo, algorithm.service_id, role="algorithm")
        check_algorithm_ddo(algorithm_ddo, service, chain_id=chain_id)
        algorithm = dataclasses.replace(algorithm, service_id=str(service["id"]))
        algo_entry = Orderable(
            "algorithm", str(algorithm.did), str(service["id"]), index, str(service["datatokenAddress"])
        )
    resolved: list[ComputeInput] = []
    orderables: list[Orderable] = []
    for position, item in enumerate(datasets):
        role = "dataset" if position == 0 else "additional dataset"
        ddo = get_ddo(item.did)
        service, index = find_service(ddo, item.service_id, role=role)
        check_dataset_service(ddo, service, role=role, chain_id=chain_id)
        check_algorithm_allowed(ddo, service, algorithm, algorithm_ddo)
        resolved.append(dataclasses.replace(item, service_id=str(service["id"])))
        orderables.append(
            Orderable("dataset", item.did, str(service["id"]), index, str(service["datatokenAddress"]))
        )
    if algo_entry is not None:
        orderables.append(algo_entry)
    return ResolvedInputs(resolved, algorithm, orderables)
