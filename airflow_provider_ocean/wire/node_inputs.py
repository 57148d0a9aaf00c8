"""What a DAG may give for an Ocean Node job, as the node's request objects.

Datasets may be DIDs or raw URLs (``"https://…"``, ``{"url": …}``, ``{"fileObject": {…}}``); algorithms
DIDs or inline ``rawcode`` with a container (checksum optional), ``algocustomdata`` and ``envs``; the
node-only options are ``resources``, ``max_job_duration``, ``queue_max_wait_time`` and ``free``
(docs/reference/ocean-node-api.md §2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_ocean.exceptions import OceanValidationError
from airflow_provider_ocean.models import ComputeInput
from airflow_provider_ocean.records import PaidOrder

if TYPE_CHECKING:
    from airflow_provider_ocean.records import Orderable

NODE_OPTION_NAMES = ("resources", "max_job_duration", "queue_max_wait_time", "free")
_DEFAULT_CONTAINER = {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11-slim", "checksum": ""}


def node_options(options: dict[str, Any]) -> dict[str, Any]:
    """Validate the node-only options (``None`` values are dropped).

    :param options: ``resources``, ``max_job_duration``, ``queue_max_wait_time``, ``free``.
    """
    unknown = sorted(set(options) - set(NODE_OPTION_NAMES))
    if unknown:
        raise OceanValidationError(f"Unknown Ocean Node option(s): {', '.join(unknown)}")
    out = {k: v for k, v in options.items() if v is not None}
    resources = out.get("resources")
    if resources is not None:
        if isinstance(resources, dict):
            resources = [{"id": str(k), "amount": v} for k, v in resources.items()]
        if not isinstance(resources, list) or not all(isinstance(r, dict) and r.get("id") for r in resources):
            raise OceanValidationError("resources must be {id: amount} or [{'id', 'amount'}]")
        out["resources"] = [{"id": str(r["id"]), "amount": r.get("amount")} for r in resources]
    for name in ("max_job_duration", "queue_max_wait_time"):
        if name in out:
            try:
                out[name] = int(float(out[name]))
            except (TypeError, ValueError):
                raise OceanValidationError(f"{name} must be a number of seconds") from None
            if out[name] < 0 or (name == "max_job_duration" and out[name] == 0):
                raise OceanValidationError(f"{name} must be positive")
    return out


def node_dataset(item: Any) -> tuple[dict[str, Any], ComputeInput | None]:
    """``(request object, ComputeInput for DID inputs)`` of one dataset given in any accepted form.

    :param item: a DID, a URL, ``{"url", "method"?, "headers"?}``, ``{"fileObject": {...}}`` or a DID dict.
    """
    if isinstance(item, ComputeInput):
        return item.to_request(), item
    if isinstance(item, str):
        if item.startswith(("http://", "https://")):
            return {"fileObject": {"type": "url", "url": item, "method": "get"}}, None
        return node_dataset(ComputeInput.coerce(item))
    if isinstance(item, dict):
        if isinstance(item.get("fileObject"), dict):
            body = {"fileObject": dict(item["fileObject"])}
            if item.get("userdata"):
                body["userdata"] = item["userdata"]
            return body, None
        if item.get("url") and not (item.get("did") or item.get("documentId")):
            file_object = {"type": "url", "url": str(item["url"]), "method": str(item.get("method") or "get")}
            if item.get("headers"):
                file_object["headers"] = item["headers"]
            return {"fileObject": file_object}, None
        return node_dataset(ComputeInput.coerce(item))
    raise OceanValidationError(f"A dataset must be a DID, a URL or a dict, not {type(item).__name__}")


def node_algorithm(value: Any) -> tuple[dict[str, Any], str | None, str | None, str | None]:
    """``(request object, did, service_id, transfer_tx_id)`` of an algorithm given in any accepted form.

    :param value: a DID, ``{"did"|"documentId", "service_id", "algocustomdata", "envs"}``, or a raw
        algorithm ``{"rawcode"|"url", "container": {"entrypoint", "image", "tag", "checksum"?},
        "algocustomdata", "envs"}`` (``meta`` form accepted too).
    """
    if isinstance(value, str):
        value = {"did": value}
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if not isinstance(value, dict):
        raise OceanValidationError(f"An algorithm must be a DID or a dict, not {type(value).__name__}")
    extra = {k: value[k] for k in ("algocustomdata", "envs", "userdata") if value.get(k) is not None}
    if "algouserdata" in value and value["algouserdata"] is not None:
        extra.setdefault("userdata", value["algouserdata"])
    did = value.get("did") or value.get("documentId")
    if did:
        service_id = value.get("service_id", value.get("serviceId"))
        tx = value.get("transfer_tx_id", value.get("transferTxId"))
        return {"documentId": did, **extra}, str(did), None if service_id is None else str(service_id), tx
    meta = dict(value.get("meta") or {})
    for key in ("rawcode", "url"):
        if value.get(key):
            meta[key] = value[key]
    container = dict(_DEFAULT_CONTAINER)
    container.update({k: v for k, v in (value.get("container") or meta.get("container") or {}).items() if v})
    for key in ("entrypoint", "image", "tag", "checksum"):
        if value.get(key):
            container[key] = value[key]
    meta["container"] = container
    if not meta.get("rawcode") and not meta.get("url"):
        raise OceanValidationError("A raw algorithm needs rawcode (or a url)")
    body: dict[str, Any] = {"meta": {k: v for k, v in meta.items() if k != "url"}, **extra}
    if meta.get("url"):
        body["fileObject"] = {"type": "url", "url": meta["url"], "method": "get"}
    return body, None, None, None


def free_entry(orderable: Orderable) -> PaidOrder:
    """The payment entry of a DID input of a free job: nothing is ordered."""
    return PaidOrder(
        role=orderable.role,
        did=orderable.did,
        service_id=orderable.service_id,
        transfer_tx_id="",
        action="free",
    )


def raw_entry(body: dict[str, Any]) -> PaidOrder:
    """The payment entry of a raw (URL) dataset: nothing to order; ``did`` holds the URL for display."""
    return PaidOrder(
        role="dataset",
        did=str((body.get("fileObject") or {}).get("url") or ""),
        service_id="",
        transfer_tx_id="",
        action="raw",
    )


def previous_orders(previous: Any) -> dict[tuple[str, int, str], str]:
    """``(role, position, did) → tx`` of an earlier payment's orders."""
    out: dict[tuple[str, int, str], str] = {}
    if not isinstance(previous, dict):
        return out
    for position, order in enumerate(previous.get("datasets") or []):
        if isinstance(order, dict) and order.get("transfer_tx_id") and order.get("did"):
            out[("dataset", position, str(order["did"]))] = str(order["transfer_tx_id"])
    algorithm = previous.get("algorithm")
    if isinstance(algorithm, dict) and algorithm.get("transfer_tx_id") and algorithm.get("did"):
        out[("algorithm", 0, str(algorithm["did"]))] = str(algorithm["transfer_tx_id"])
    return out
