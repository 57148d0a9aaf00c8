"""Pay for and start an Ocean compute-to-data job, wait for it in the triggerer, collect its results.

Configuration (Airflow Variables, e.g. ``AIRFLOW_VAR_OCEAN_DATASET_DID``; ``ocean-sandbox info`` prints
the sandbox's values):

- ``ocean_dataset_did``: the dataset to compute on;
- ``ocean_algorithm_did``: a published algorithm the dataset trusts;
- ``ocean_results_dir``: where results go (a path or any ``ObjectStoragePath`` URI), default
  ``/tmp/ocean-results``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_ocean.operators.compute import OceanComputeStartOperator
from airflow_provider_ocean.operators.results import OceanComputeResultsOperator
from airflow_provider_ocean.sensors.ocean import OceanComputeJobStatusSensor

with DAG(
    dag_id="ocean_compute_example",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["ocean", "compute-to-data", "example"],
    doc_md=__doc__,
) as dag:
    # [START howto_ocean_compute_start]
    start = OceanComputeStartOperator(
        task_id="pay_and_start",
        datasets=["{{ var.value.ocean_dataset_did }}"],
        algorithm={
            "did": "{{ var.value.ocean_algorithm_did }}",
            "algocustomdata": {"column": "temperature_c", "group_by": "station"},
        },
        max_fee=0,  # the free environment: refuse any fee
        wait_for_completion=False,
    )
    # [END howto_ocean_compute_start]

    # [START howto_ocean_compute_sensor]
    wait = OceanComputeJobStatusSensor(
        task_id="wait_for_job",
        job_id=start.output,
        deferrable=True,
        poke_interval=2,
        timeout=timedelta(minutes=30),
    )
    # [END howto_ocean_compute_sensor]

    # [START howto_ocean_compute_results]
    results = OceanComputeResultsOperator(
        task_id="collect_results",
        job_id=start.output,
        destination=(
            "{{ var.value.get('ocean_results_dir', '/tmp/ocean-results') }}/{{ run_id | replace(':', '_') }}"
        ),
        result_types=["output", "algorithmLog"],
    )
    # [END howto_ocean_compute_results]

    start >> wait >> results
