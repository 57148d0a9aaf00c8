"""OpenLineage metadata of the operators (the optional ``[openlineage]`` extra).

The operators' ``get_openlineage_facets_on_start`` / ``_on_complete`` / ``_on_failure`` delegate here; the
OpenLineage provider calls them from its listener (in a forked child of the task process, or a thread).
Nothing of ``apache-airflow-providers-openlineage`` is imported before one of these functions runs.
They read only what the operators kept on themselves while running (never XCom: the child may not reach
the supervisor), plus the DDOs and the job's status over HTTP, and never fail a task.

Naming (stable across runs, so that a lineage catalogue joins the same asset seen by several jobs):

- an Ocean asset: namespace ``ocean://<chainId>``, name = its DID;
- a raw URL input of an Ocean Node job: namespace ``<scheme>://<host[:port]>``, name = the URL's path
  (no credentials, no query string, no fragment);
- a result file: its storage URI split as OpenLineage does for files (``file`` + path) and object stores
  (``s3://bucket`` + key, likewise for other schemes).

No facet carries a private key, a signature, a nonce, a signed URL, request headers or the algorithm's
custom data: only DIDs, service ids, URLs without query strings, order transaction ids, fees and hashes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_ocean.records import as_list

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import InputDataset

    from airflow_provider_ocean.hooks.ocean import OceanComputeHook

log = logging.getLogger(__name__)


def public_url(url: str | None) -> str | None:
    """``url`` without credentials, query string or fragment (a signed URL keeps none of its signature).

    :param url: a URL, or ``None``.
    """
    if not url:
        return None
    parts = urlsplit(str(url))
    if not parts.scheme or not parts.hostname:
        return None
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return f"{parts.scheme}://{host}{parts.path}".rstrip("/") or None


def uri_namespace_name(uri: str) -> tuple[str, str]:
    """Split a storage URI into an OpenLineage ``(namespace, name)``.

    ``file:///a/b`` gives ``("file", "/a/b")`` (``file://host`` with a host), as Airflow's common-io
    provider converts file Assets; ``s3://bucket/key`` gives ``("s3://bucket", "key")`` and every other
    scheme likewise; ``http(s)`` keeps the path's leading slash. Credentials and query strings are dropped.

    :param uri: the URI (a plain path counts as ``file``).
    """
    parts = urlsplit(str(uri))
    if not parts.scheme or len(parts.scheme) == 1:  # a path (or a Windows drive letter)
        return "file", str(uri)
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    if parts.scheme == "file":
        return (f"file://{host}" if host else "file"), parts.path or "/"
    if parts.scheme in ("http", "https"):
        return f"{parts.scheme}://{host}", parts.path or "/"
    return f"{parts.scheme}://{host}", parts.path.lstrip("/") or "/"


#: Seconds a lineage read (a DDO, a job status) may take: one attempt, no retry (the listener waits for it).
READ_TIMEOUT = 5.0


def _reader(operator: Any) -> OceanComputeHook:
    """A hook for the lineage's reads: the operator's connection (reused when the task already read it),
    a short timeout and a single attempt, so that an unreachable server costs seconds, not a retry policy.

    :param operator: the start operator.
    """
    from airflow_provider_ocean.hooks.ocean import OceanComputeHook

    reader = OceanComputeHook(operator.ocean_conn_id, timeout=READ_TIMEOUT, retry_limit=1)
    hook = operator.__dict__.get("hook")  # a cached_property: only when the task built it
    if hook is not None and "_connection" in hook.__dict__:
        reader.__dict__["_connection"] = hook.__dict__["_connection"]
    return reader


#: Seconds the listener may wait for the connection when the task has not read it yet (its START).
CONNECTION_WAIT = 3.0


def _connection_ready(reader: OceanComputeHook) -> bool:
    """Read the connection in a daemon thread, waiting at most :data:`CONNECTION_WAIT` seconds.

    Under ``airflow dags test`` the listener's forked child cannot reach the in-process supervisor, so a
    connection stored in the metadata DB never arrives there; the START event then goes without the reads
    that need it rather than holding the task until the listener's ``execution_timeout``.

    :param reader: the lineage's hook.
    """
    import threading

    if "_connection" in reader.__dict__:
        return True
    outcome: list[bool] = []

    def read() -> None:
        try:
            outcome.append(reader._connection is not None)
        except Exception as exc:
            log.debug("OpenLineage: no connection %s (%s)", reader.ocean_conn_id, exc)
            outcome.append(False)

    thread = threading.Thread(target=read, name="ocean-lineage-connection", daemon=True)
    thread.start()
    thread.join(CONNECTION_WAIT)
    if not outcome:
        log.info("OpenLineage: connection %s not readable from the listener in time", reader.ocean_conn_id)
    return bool(outcome and outcome[0])


def _chain_id(hook: OceanComputeHook, payment: dict[str, Any] | None) -> int | None:
    if payment and payment.get("chain_id"):
        return int(payment["chain_id"])
    if hook.settings.chain_id is not None:
        return hook.settings.chain_id
    try:
        return hook.chain_id
    except Exception as exc:  # lineage never fails a task
        log.debug("OpenLineage: no chain id (%s)", exc)
        return None


def _ddo(hook: OceanComputeHook, did: str) -> dict[str, Any]:
    try:
        return hook.get_ddo(did)
    except Exception as exc:
        log.debug("OpenLineage: could not read the DDO of %s (%s)", did, exc)
        return {}


def _service_id(ddo: dict[str, Any], wanted: str | None, role: str) -> str | None:
    if wanted:
        return str(wanted)
    if not ddo:
        return None
    from airflow_provider_ocean.ddo import find_service

    try:
        return str(find_service(ddo, None, role=role)[0].get("id"))
    except Exception:
        return None


def _raw_url(item: Any) -> str | None:
    """The URL of a raw (non-DID) dataset of an Ocean Node job, or ``None``."""
    if isinstance(item, str) and item.startswith(("http://", "https://")):
        return item
    if isinstance(item, dict) and not (item.get("did") or item.get("documentId")):
        file_object = item.get("fileObject")
        if isinstance(file_object, dict):
            return str(file_object.get("url") or "") or None
        return str(item.get("url") or "") or None
    return None


def _inputs(
    hook: OceanComputeHook, datasets: Any, chain_id: int | None, payment: dict[str, Any] | None
) -> list[InputDataset]:
    from openlineage.client.event_v2 import InputDataset

    from airflow_provider_ocean.lineage_facets import OceanAssetDatasetFacet
    from airflow_provider_ocean.models import ComputeInput

    paid = {o.get("did"): o for o in (payment or {}).get("datasets") or [] if isinstance(o, dict)}
    provider_url = public_url(hook.settings.provider_url)
    inputs: list[InputDataset] = []
    for item in as_list(datasets):
        url = _raw_url(item)
        if url is not None:
            public = public_url(url)
            if public:
                namespace, name = uri_namespace_name(public)
                inputs.append(InputDataset(namespace=namespace, name=name))
            continue
        try:
            wanted = ComputeInput.coerce(item)
        except Exception as exc:
            log.debug("OpenLineage: skipping dataset %r (%s)", item, exc)
            continue
        ddo = _ddo(hook, wanted.did)
        order = paid.get(wanted.did) or {}
        facet = OceanAssetDatasetFacet(
            did=wanted.did,
            name=(ddo.get("metadata") or {}).get("name"),
            serviceId=_service_id(ddo, wanted.service_id or order.get("service_id"), "dataset"),
            providerUrl=provider_url,
            chainId=chain_id,
        )
        inputs.append(
            InputDataset(namespace=f"ocean://{chain_id}", name=wanted.did, facets={"ocean_asset": facet})
        )
    return inputs


def _algorithm_facet(hook: OceanComputeHook, algorithm: Any, payment: dict[str, Any] | None) -> Any:
    from airflow_provider_ocean.lineage_facets import OceanAlgorithmJobFacet
    from airflow_provider_ocean.models import ComputeAlgorithm

    if isinstance(algorithm, dict) and not (algorithm.get("did") or algorithm.get("documentId")):
        # a raw algorithm: read as given (Ocean Node accepts one without a container checksum)
        given = algorithm.get("container")
        container: dict[str, Any] = given if isinstance(given, dict) else {}
        image = container.get("image") or algorithm.get("image")
        tag = container.get("tag") or algorithm.get("tag")
        checksum = container.get("checksum") or algorithm.get("checksum")
        return OceanAlgorithmJobFacet(
            kind="raw",
            image=f"{image}:{tag}" if image and tag else image,
            imageChecksum=checksum or None,
            url=public_url(algorithm.get("url")),
        )
    try:
        algo = ComputeAlgorithm.coerce(algorithm)
    except Exception as exc:
        log.debug("OpenLineage: no algorithm facet (%s)", exc)
        return None
    did = str(algo.did)
    ddo = _ddo(hook, did)
    order = (payment or {}).get("algorithm") or {}
    return OceanAlgorithmJobFacet(
        kind="published",
        did=did,
        name=(ddo.get("metadata") or {}).get("name"),
        serviceId=_service_id(ddo, algo.service_id or order.get("service_id"), "algorithm"),
    )


def _fees(payment: dict[str, Any]) -> list[dict[str, Any]]:
    """The fees a payment paid: provider fees per order (Provider v4), the escrowed amount (Ocean Node)."""
    fees: list[dict[str, Any]] = []
    for order in [*(payment.get("datasets") or []), payment.get("algorithm")]:
        if isinstance(order, dict) and order.get("action") != "valid":
            fees.append(
                {
                    "role": order.get("role"),
                    "did": order.get("did"),
                    "kind": "provider_fee",
                    "currency": order.get("provider_fee_token"),
                    "amount": str(order.get("provider_fee_amount") or "0"),
                }
            )
    node = payment.get("ocean_node") if payment.get("backend") == "ocean_node" else None
    if isinstance(node, dict) and not node.get("free") and node.get("amount") is not None:
        fees.append(
            {"role": "job", "kind": "escrow", "currency": node.get("token"), "amount": str(node["amount"])}
        )
    return fees


def _orders(payment: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "role": o.get("role"),
            "did": o.get("did"),
            "serviceId": o.get("service_id"),
            "orderTx": o.get("transfer_tx_id"),
            "action": o.get("action"),
        }
        for o in [*(payment.get("datasets") or []), payment.get("algorithm")]
        if isinstance(o, dict)
    ]


def start_operator_lineage(operator: Any, task_instance: Any = None) -> OperatorLineage:
    """The lineage of an ``OceanComputeStartOperator``: its inputs, the algorithm (job facet
    ``ocean_algorithm``) and, once known, the job (run facet ``ocean_compute``: job id, environment,
    agreement and order ids, fees), from what the operator recorded on itself while running (the payment
    it also pushes to XCom, the job id): the listener calls this in a forked child of the task process,
    where reading XCom back through the supervisor may block.

    :param operator: the start operator (its templates rendered).
    :param task_instance: the task instance (``None`` on start: nothing is known of the job yet).
    """
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_ocean.lineage_facets import OceanComputeRunFacet

    hook = _reader(operator)
    if not _connection_ready(hook):
        return OperatorLineage(
            run_facets={"ocean_compute": OceanComputeRunFacet(environment=operator.environment)}
        )
    payment = getattr(operator, "payment", None) if task_instance is not None else None
    payment = payment if isinstance(payment, dict) else None
    chain_id = _chain_id(hook, payment)
    job_facets: dict[str, Any] = {}
    algorithm = _algorithm_facet(hook, operator.algorithm, payment)
    if algorithm is not None:
        job_facets["ocean_algorithm"] = algorithm
    job_id = getattr(operator, "job_id", None) if task_instance is not None else None
    run = OceanComputeRunFacet(
        jobId=job_id,
        environment=(payment or {}).get("environment") or operator.environment,
        agreementId=_agreement_id(hook, job_id) if job_id else None,
        orders=_orders(payment) if payment else [],
        fees=_fees(payment) if payment else [],
        backend=(payment or {}).get("backend") or ("provider_v4" if payment else None),
        chainId=chain_id,
        providerUrl=public_url(hook.settings.provider_url),
    )
    return OperatorLineage(
        inputs=_inputs(hook, operator.datasets, chain_id, payment),
        job_facets=job_facets,
        run_facets={"ocean_compute": run},
    )


def _agreement_id(hook: OceanComputeHook, job_id: str) -> str | None:
    try:
        return hook.get_job_status(job_id).agreement_id
    except Exception as exc:
        log.debug("OpenLineage: could not read job %s (%s)", job_id, exc)
        return None


def results_operator_lineage(operator: Any, task_instance: Any = None) -> OperatorLineage:
    """The lineage of an ``OceanComputeResultsOperator``: one output per file written, at its storage URI,
    with the standard ``outputStatistics`` (size) and ``version`` (``sha256:<hex>``) facets and
    ``ocean_result`` (job id, type, size, SHA-256); the job id as run facet ``ocean_compute``.

    :param operator: the results operator.
    :param task_instance: the task instance (``None`` on start: nothing written yet).
    """
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import OutputDataset
    from openlineage.client.facet_v2 import dataset_version_dataset
    from openlineage.client.facet_v2 import output_statistics_output_dataset as stats

    from airflow_provider_ocean.lineage_facets import OceanComputeRunFacet, OceanResultDatasetFacet

    manifest = getattr(operator, "manifest", None) if task_instance is not None else None
    outputs = []
    for entry in manifest if isinstance(manifest, list) else []:
        if not isinstance(entry, dict) or not entry.get("uri"):
            continue
        namespace, name = uri_namespace_name(str(entry["uri"]))
        result = OceanResultDatasetFacet(
            jobId=str(operator.job_id),
            type=entry.get("type"),
            index=entry.get("index"),
            size=entry.get("size"),
            sha256=entry.get("sha256"),
            archive=entry.get("archive"),
        )
        facets: dict[str, Any] = {"ocean_result": result}
        if entry.get("sha256"):
            facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=f"sha256:{entry['sha256']}"
            )
        outputs.append(
            OutputDataset(
                namespace=namespace,
                name=name,
                facets=facets,
                outputFacets={
                    "outputStatistics": stats.OutputStatisticsOutputDatasetFacet(
                        size=entry.get("size"), fileCount=1
                    )
                },
            )
        )
    return OperatorLineage(
        outputs=outputs, run_facets={"ocean_compute": OceanComputeRunFacet(jobId=str(operator.job_id))}
    )


class _OperatorLineageMixin:
    """The three ``get_openlineage_facets_on_*`` methods OpenLineage calls, each answered by
    :meth:`_ocean_lineage` (without a task instance at start: nothing has run yet)."""

    def _ocean_lineage(self, task_instance: Any = None) -> OperatorLineage:
        raise NotImplementedError

    def get_openlineage_facets_on_start(self) -> OperatorLineage:
        """What is known before the task runs."""
        return self._ocean_lineage()

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """What the finished task did.

        :param task_instance: the finished task instance.
        """
        return self._ocean_lineage(task_instance)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> OperatorLineage:
        """What is known of a failed try.

        :param task_instance: the failed task instance.
        """
        return self._ocean_lineage(task_instance)


class StartOperatorLineageMixin(_OperatorLineageMixin):
    """Lineage of ``OceanComputeStartOperator``: at start the inputs and the algorithm; then also the
    payment and the job, if any (see :func:`start_operator_lineage`)."""

    task_id: str
    payment: dict[str, Any] | None

    def keep_payment_for_lineage(self, context: Any, key: str) -> None:
        """Read this task instance's payment back from XCom (a task resumed after a deferral did not pay in
        this process); called in the task, not in the listener.

        :param context: the task's context.
        :param key: the payment's XCom key.
        """
        ti = context["ti"]
        found = ti.xcom_pull(task_ids=self.task_id, key=key, map_indexes=getattr(ti, "map_index", -1))
        self.payment = found if isinstance(found, dict) else None

    def _ocean_lineage(self, task_instance: Any = None) -> OperatorLineage:
        return start_operator_lineage(self, task_instance)


class ResultsOperatorLineageMixin(_OperatorLineageMixin):
    """Lineage of ``OceanComputeResultsOperator``: the job; once done, the files written (see
    :func:`results_operator_lineage`)."""

    def _ocean_lineage(self, task_instance: Any = None) -> OperatorLineage:
        return results_operator_lineage(self, task_instance)
