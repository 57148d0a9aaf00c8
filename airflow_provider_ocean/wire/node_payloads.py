"""Ocean Node objects mapped onto the project's models (``JobStatus``, ``ResultFile``, environments).

Ocean Node's job statuses (docs/reference/ocean-node-api.md §3) differ from Provider v4's: 0…71, many
failure codes, and 70 ("Job finished") is reached by failed jobs too after the payment cron.
:func:`job_status_from_node` applies the robust rule and encodes the verdict in the v4-shaped
:class:`~airflow_provider_ocean.models.JobStatus` the operators, sensor and trigger already understand,
so that it survives ``to_dict``/``from_dict``:

- a **successful** job (last seen 71/70, ``terminationDetails.exitCode == 0``, not OOM-killed, an ``output``
  result exists, no failure code seen before) is reported with status 70 and ``dateFinished`` set;
- a **failed** terminal job keeps its failure code; a failed job whose node status is 70/71 is reported as
  71 (or as the failure code seen before the cron replaced it), so it never looks like a v4 success;
- ``stopRequested`` becomes ``stopreq = 1``; a job killed at its ``maxJobDuration`` becomes ``stopreq = 2``.

The job id is always the **full** id ``<engineHash>-<hash>``: the node echoes the bare hash in status
objects, and the prefix is restored from the request or from the environment id (which shares it).
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from airflow_provider_ocean.exceptions import OceanValidationError
from airflow_provider_ocean.models import ComputeEnvironment, JobStatus, ResultFile
from airflow_provider_ocean.status import NODE_STATUS_TEXTS, NodeStatus, node_status

#: Result types of a node job, in index order when present (docs/reference/ocean-node-api.md §2.5).
NODE_RESULT_TYPES = ("imageLog", "configurationLog", "algorithmLog", "output", "publishLog")
OUTPUTS_TAR = "outputs.tar"


def _is_failure(code: int) -> bool:
    known = node_status(code)
    return known is not None and known.is_failure


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _float(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def split_job_id(job_id: str) -> tuple[str | None, str]:
    """Split a full Ocean Node job id at the first ``-`` into ``(engine hash, bare id)``.

    :param job_id: ``<engineHash>-<hash>`` (a bare id yields ``(None, job_id)``).
    """
    if "-" in job_id:
        prefix, bare = job_id.split("-", 1)
        return prefix, bare
    return None, job_id


def full_job_id(bare_or_full: str, *, environment: str | None = None, known: str | None = None) -> str:
    """Restore the full ``<engineHash>-<hash>`` id of a status entry.

    :param bare_or_full: the ``jobId`` as the node returned it (bare hash in status answers).
    :param environment: the job's environment id (``<engineHash>-<sha256>``), whose prefix the job shares.
    :param known: the full id the client already holds for this job, if any (wins when it matches).
    """
    if known and split_job_id(known)[1] == split_job_id(bare_or_full)[1]:
        return known
    if "-" in bare_or_full:
        return bare_or_full
    if environment and "-" in environment:
        return f"{environment.split('-', 1)[0]}-{bare_or_full}"
    return bare_or_full


def node_results(results: Any) -> list[ResultFile]:
    """Parse a node job's ``results`` (entries carry an explicit ``index``; look them up by ``type``).

    :param results: the ``results`` member of a status entry.
    """
    if not isinstance(results, list):
        return []
    out = []
    for position, item in enumerate(results):
        if not isinstance(item, dict):
            continue
        index = _int_or_none(item.get("index"))
        out.append(
            ResultFile(
                index=position if index is None else index,
                filename=str(item.get("filename", "")),
                filesize=_int_or_none(item.get("filesize")),
                type=str(item.get("type") or "output"),
            )
        )
    return out


def result_of_type(results: list[ResultFile], kind: str) -> ResultFile | None:
    """The first result of ``kind`` (``output``, ``algorithmLog``...), if any.

    :param results: parsed results.
    :param kind: the result type.
    """
    return next((r for r in results if r.type == kind), None)


def job_status_from_node(
    data: dict[str, Any], *, job_id: str | None = None, previous: JobStatus | None = None
) -> JobStatus:
    """Map one Ocean Node status entry onto a v4-shaped :class:`JobStatus` (see the module docstring).

    :param data: one element of ``GET /api/services/compute`` or of the start answer.
    :param job_id: the full job id the client holds (the node echoes only the bare hash).
    :param previous: the status seen at the previous poll, to remember a failure code that the payment
        cron later replaced with 70.
    """
    if not isinstance(data, dict) or not data.get("jobId"):
        raise OceanValidationError(f"Malformed Ocean Node job status object: {data!r}"[:500])
    code = _int_or_none(data.get("status"))
    code = int(NodeStatus.JOB_STARTED) if code is None else code
    known = node_status(code)
    text = str(data.get("statusText") or NODE_STATUS_TEXTS.get(code, ""))
    finished = data.get("dateFinished")
    finished = None if finished in (None, "", "null", "0") else str(finished)
    results = node_results(data.get("results"))
    termination = data.get("terminationDetails") or {}
    exit_code = _int_or_none(termination.get("exitCode")) if isinstance(termination, dict) else None
    oom = bool(termination.get("OOMKilled")) if isinstance(termination, dict) else False
    stop_requested = bool(data.get("stopRequested"))
    terminal = finished is not None or (known is not None and known.is_terminal)
    earlier_failure = previous.status if previous is not None and _is_failure(previous.status) else None
    stopreq = 1 if stop_requested else 0
    if terminal and not stop_requested and exit_code not in (None, 0):
        max_duration = _float(data.get("maxJobDuration"))
        if max_duration > 0 and _float(data.get("algoDuration")) >= max_duration - 1:
            stopreq = 2
    status = code
    if terminal:
        has_output = result_of_type(results, "output") is not None
        succeeded = (
            known is not None
            and known.is_success
            and earlier_failure is None
            and exit_code == 0
            and not oom
            and has_output
            and not stop_requested
        )
        if succeeded:
            status = NodeStatus.JOB_FINISHED
        elif known is not None and known.is_success:
            status = earlier_failure or NodeStatus.JOB_SETTLING
            reasons = []
            if earlier_failure is not None:
                reasons.append(f"failed earlier with {earlier_failure}")
            if exit_code not in (None, 0):
                reasons.append(f"exit code {exit_code}")
            elif exit_code is None:
                reasons.append("no exit code")
            if oom:
                reasons.append("OOM killed")
            if not has_output:
                reasons.append(f"no {OUTPUTS_TAR}")
            if reasons:
                text = f"{text.strip()} ({', '.join(reasons)})"
        if finished is None:
            finished = str(data.get("algoStopTimestamp") or data.get("dateCreated") or "0")
    full = full_job_id(str(data["jobId"]), environment=data.get("environment"), known=job_id)
    raw_payment = data.get("payment")
    payment = raw_payment if isinstance(raw_payment, dict) else {}
    return JobStatus(
        job_id=full,
        status=int(status),  # a plain int: JSON, XCom and trigger events
        status_text=text,
        owner=str(data.get("owner") or ""),
        agreement_id=data.get("agreementId") or payment.get("lockTx"),
        date_created=None if data.get("dateCreated") is None else str(data["dateCreated"]),
        date_finished=finished,
        stopreq=stopreq,
        removed=0,
        algo_did=None,
        input_dids=[],
        results=results,
    )


def termination_details(data: dict[str, Any]) -> tuple[int | None, bool]:
    """``(exitCode, OOMKilled)`` of a raw node status entry.

    :param data: the status entry.
    """
    details = data.get("terminationDetails") or {}
    if not isinstance(details, dict):
        return None, False
    return _int_or_none(details.get("exitCode")), bool(details.get("OOMKilled"))


# -- environments -------------------------------------------------------------------------------------
def env_fees(env: dict[str, Any], chain_id: int) -> list[dict[str, Any]]:
    """The fee entries of ``env`` for ``chain_id``: ``[{"feeToken", "prices": [{"id", "price"}]}]``.

    :param env: a node environment.
    :param chain_id: the chain.
    """
    fees = env.get("fees") or {}
    if not isinstance(fees, dict):
        return []
    entries = fees.get(str(chain_id)) or fees.get(chain_id) or []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def env_resource(env: dict[str, Any], resource_id: str, *, free: bool = False) -> dict[str, Any] | None:
    """One resource description of ``env`` (the ``free`` block's limits when ``free``).

    :param env: a node environment.
    :param resource_id: ``cpu``, ``ram``, ``disk`` or a GPU id.
    :param free: read the free block.
    """
    base = next((r for r in env.get("resources") or [] if r.get("id") == resource_id), None)
    if not free:
        return base
    block = env.get("free") or {}
    free_entry = next((r for r in block.get("resources") or [] if r.get("id") == resource_id), None)
    if free_entry is None:
        return None
    return {**(base or {}), **free_entry}


def fill_resources(
    env: dict[str, Any], requested: list[dict[str, Any]] | None, *, free: bool = False
) -> list[dict[str, Any]]:
    """The node's resource filling: every env resource, missing ids at their minimum; above max refused.

    :param env: the environment.
    :param requested: ``[{"id", "amount"}]`` asked for.
    :param free: a free job (limits from the ``free`` block).
    :raises OceanValidationError: a request above the maximum (the node answers 400 for it).
    """
    if free and not env.get("free"):
        raise OceanValidationError("This env does not support free jobs")
    wanted = {str(r.get("id")): r.get("amount") for r in requested or [] if isinstance(r, dict)}
    ids: list[str] = []
    if free:
        ids += [str(r.get("id")) for r in (env.get("free") or {}).get("resources") or []]
    ids += [str(r.get("id")) for r in env.get("resources") or [] if str(r.get("id")) not in ids]
    out = []
    for rid in ids:
        limits = env_resource(env, rid, free=free) or {}
        minimum = _float(limits.get("min"), 0)
        maximum = _float(limits.get("max"), 0)
        amount = wanted.get(rid)
        desired = minimum if amount is None else max(_float(amount), minimum)
        if amount is not None and desired > maximum:
            raise OceanValidationError(
                f"Not enough {rid} resources. Requested {desired:g}, but max is {maximum:g}"
            )
        out.append({"id": rid, "amount": int(desired) if float(desired).is_integer() else desired})
    unknown = sorted(set(wanted) - set(ids))
    if unknown:
        raise OceanValidationError(f"Environment {env.get('id')} has no resource(s) {', '.join(unknown)}")
    return out


def job_cost(
    env: dict[str, Any],
    chain_id: int,
    token: str,
    resources: list[dict[str, Any]],
    max_job_duration: float,
) -> Decimal:
    """Cost in whole tokens: Σ price × amount × ceil(max(maxJobDuration, minJobDuration) / 60).

    :param env: the environment.
    :param chain_id: the chain.
    :param token: the fee token.
    :param resources: filled resources (:func:`fill_resources`).
    :param max_job_duration: seconds.
    :raises OceanValidationError: the environment takes no fees in ``token`` on ``chain_id``.
    """
    entry = next(
        (e for e in env_fees(env, chain_id) if str(e.get("feeToken", "")).lower() == token.lower()), None
    )
    if entry is None:
        raise OceanValidationError(
            f"Environment {env.get('id')} takes no fees in {token} on chain {chain_id}"
        )
    prices = {str(p.get("id")): Decimal(str(p.get("price", 0))) for p in entry.get("prices") or []}
    minutes = math.ceil(max(float(max_job_duration), _float(env.get("minJobDuration"), 0)) / 60)
    total = Decimal(0)
    for resource in resources:
        total += prices.get(str(resource["id"]), Decimal(0)) * Decimal(str(resource["amount"])) * minutes
    return total


def start_options(
    max_job_duration: int | None,
    resources: list[dict[str, Any]] | None,
    metadata: dict[str, Any] | None,
    additional_viewers: list[str] | None,
    queue_max_wait_time: int | None,
    output: Any,
) -> dict[str, Any]:
    """The optional members of a start (or quote) body that were given, as the node names them.

    :param max_job_duration: seconds (``maxJobDuration``).
    :param resources: ``[{"id", "amount"}]``.
    :param metadata: free-form job metadata.
    :param additional_viewers: other addresses allowed to read the results.
    :param queue_max_wait_time: seconds the job may wait in the queue (``queueMaxWaitTime``).
    :param output: an encrypted remote-storage spec.
    """
    body: dict[str, Any] = {}
    if max_job_duration is not None:
        body["maxJobDuration"] = int(max_job_duration)
    if resources:
        body["resources"] = resources
    if metadata is not None:
        body["metadata"] = metadata
    if additional_viewers:
        body["additionalViewers"] = list(additional_viewers)
    if queue_max_wait_time is not None:
        body["queueMaxWaitTime"] = int(queue_max_wait_time)
    if output is not None:
        body["output"] = output
    return body


def environment_from_node(data: dict[str, Any], chain_id: int) -> ComputeEnvironment:
    """A node environment as :class:`ComputeEnvironment` (the full announcement stays in ``raw``).

    ``price_min`` is the price per minute at the minimum resources in the first fee token of the chain
    (0 when the environment takes no fees there); ``raw["free"]`` tells whether free jobs are accepted.

    :param data: one element of the environments array.
    :param chain_id: the chain the client works on.
    """
    if not isinstance(data, dict) or not data.get("id") or not data.get("consumerAddress"):
        raise OceanValidationError(f"Malformed Ocean Node compute environment: {data!r}"[:500])
    fees = env_fees(data, chain_id)
    token = str(fees[0].get("feeToken")) if fees else "0x0000000000000000000000000000000000000000"
    price = 0.0
    if fees:
        minimum = [
            {"id": r.get("id"), "amount": _float(r.get("min"), 0)} for r in data.get("resources") or []
        ]
        prices = {str(p.get("id")): _float(p.get("price"), 0) for p in fees[0].get("prices") or []}
        price = sum(prices.get(str(r["id"]), 0.0) * r["amount"] for r in minimum)
    return ComputeEnvironment(
        id=str(data["id"]),
        chain_id=int(chain_id),
        consumer_address=str(data["consumerAddress"]),
        price_min=price,
        fee_token=token,
        max_job_duration=int(_float(data.get("maxJobDuration"), 0)),
        raw=dict(data),
    )


def supports_free(env: ComputeEnvironment | dict[str, Any]) -> bool:
    """Whether the environment accepts ``freeCompute`` (it has a ``free`` block).

    :param env: a parsed or raw environment.
    """
    raw = env.raw if isinstance(env, ComputeEnvironment) else env
    return bool(raw.get("free"))
