"""The DAG of tests/test_lineage.py: a job started and waited for, its results collected, and a results task
on a job id that does not exist (a cheap failure). Variables as in ``dags/ocean_compute_example.py``."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_ocean.operators.compute import OceanComputeStartOperator
from airflow_provider_ocean.operators.results import OceanComputeResultsOperator

with DAG(dag_id="ocean_lineage", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
    start = OceanComputeStartOperator(
        task_id="start",
        datasets=["{{ var.value.ocean_dataset_did }}"],
        algorithm={"did": "{{ var.value.ocean_algorithm_did }}", "algocustomdata": {"column": "rain_mm"}},
        max_fee=0,
        poll_interval=1,
    )
    results = OceanComputeResultsOperator(
        task_id="results",
        job_id=start.output,
        destination="{{ var.value.ocean_results_dir }}/{{ run_id | replace(':', '_') }}",
        result_types=["output"],
    )
    missing = OceanComputeResultsOperator(
        task_id="missing_job",
        job_id="0" * 32,
        destination="{{ var.value.ocean_results_dir }}/missing",
        retries=0,
    )
    start >> results
