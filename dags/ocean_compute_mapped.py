"""One algorithm over N datasets: a mapped fan-out of Ocean compute jobs, waited for deferred, gathered.

Configuration (Airflow Variables, e.g. ``AIRFLOW_VAR_OCEAN_DATASET_DIDS``; ``ocean-sandbox info`` prints
the sandbox's DIDs):

- ``ocean_dataset_dids``: a JSON list of dataset DIDs, one compute job each;
- ``ocean_algorithm_did``: a published algorithm every one of those datasets trusts;
- ``ocean_results_dir``: where results go (a path or any ``ObjectStoragePath`` URI), default
  ``/tmp/ocean-results``; each job writes to ``<run id>/<map index>/``.

``compute`` is mapped over the datasets (one task instance, one paid start, one job per dataset) and
waits for its job deferred: with a triggerer, all N waits share one status request per poll interval
(one per Provider and wallet, see docs/scheduling.md). ``collect`` is mapped over the job ids, and
``gather`` receives every manifest.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Variable, task

from airflow_provider_ocean.operators.compute import OceanComputeStartOperator
from airflow_provider_ocean.operators.results import OceanComputeResultsOperator


@task
def dataset_inputs() -> list[list[str]]:
    """One ``datasets`` list per job: each DID of the JSON Variable ``ocean_dataset_dids``.

    :return: ``[[did_1], [did_2], ...]``, the values ``compute`` is expanded over.
    """
    dids = Variable.get("ocean_dataset_dids", deserialize_json=True)
    if not isinstance(dids, list) or not dids:
        raise ValueError("The Variable ocean_dataset_dids must be a non-empty JSON list of DIDs")
    return [[str(did)] for did in dids]


@task
def gather(manifests: Any) -> dict[str, Any]:
    """Gather the manifests of all mapped ``collect`` tasks into one small summary.

    :param manifests: the ``return_value`` of every ``collect`` task instance, in map-index order.
    :return: the number of jobs, and per job the files written (name, URI, size, sha256).
    """
    jobs = [list(manifest) for manifest in manifests]
    return {
        "jobs": len(jobs),
        "files": sum(len(files) for files in jobs),
        "bytes": sum(entry["size"] for files in jobs for entry in files),
        "results": [
            [{key: entry[key] for key in ("name", "uri", "size", "sha256")} for entry in files]
            for files in jobs
        ],
    }


with DAG(
    dag_id="ocean_compute_mapped",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["ocean", "compute-to-data", "example", "mapped"],
    doc_md=__doc__,
) as dag:
    # [START howto_ocean_compute_mapped]
    compute = OceanComputeStartOperator.partial(
        task_id="compute",
        algorithm={
            "did": "{{ var.value.ocean_algorithm_did }}",
            "algocustomdata": {"column": "temperature_c", "group_by": "station"},
        },
        max_fee=0,  # the free environment: refuse any fee
        wait_for_completion=True,
        deferrable=True,  # N waits in the triggerer, one shared status request per interval
        poll_interval=2,
        wait_timeout=timedelta(minutes=30),
    ).expand(datasets=dataset_inputs())

    collect = OceanComputeResultsOperator.partial(
        task_id="collect",
        destination=(
            "{{ var.value.get('ocean_results_dir', '/tmp/ocean-results') }}"
            "/{{ run_id | replace(':', '_') }}/{{ ti.map_index }}"
        ),
        result_types=["output"],
    ).expand(job_id=compute.output)

    gather(collect.output)
    # [END howto_ocean_compute_mapped]
