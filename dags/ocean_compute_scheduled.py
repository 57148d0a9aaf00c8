"""A daily compute-to-data job that reuses still-valid orders instead of paying again.

Each run hands the previous run's order transactions (its ``ocean_payment`` XCom) to the Provider. While
an order is still valid - younger than the dataset service's ``timeout`` and with a provider fee that
covers the job - the Provider answers ``validOrder`` and no transaction is sent; otherwise it asks for a
new order (or a ``reuseOrder`` with a new fee) and the operator pays exactly that. The chain decides, not
memory. Publishers choose the service timeout: with the sandbox's one-hour timeout a daily run buys new
orders, while retries and reruns within the hour reuse them. Results are partitioned by the logical date.

Variables as for ``ocean_compute_example``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_ocean.operators.compute import OceanComputeStartOperator
from airflow_provider_ocean.operators.results import OceanComputeResultsOperator

with DAG(
    dag_id="ocean_compute_scheduled",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["ocean", "compute-to-data", "example"],
    doc_md=__doc__,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
) as dag:
    compute = OceanComputeStartOperator(
        task_id="daily_statistics",
        datasets=["{{ var.value.ocean_dataset_did }}"],
        algorithm={
            "did": "{{ var.value.ocean_algorithm_did }}",
            "algocustomdata": {"column": "rain_mm", "group_by": "station"},
        },
        order_validity=timedelta(days=2),
        reuse_orders=True,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=2,
        wait_timeout=timedelta(hours=2),
    )
    collect = OceanComputeResultsOperator(
        task_id="collect",
        job_id=compute.output,
        destination="{{ var.value.get('ocean_results_dir', '/tmp/ocean-results') }}/daily/ds={{ ds }}",
        result_types=["output"],
        asset="file:///ocean-results/daily-statistics",
    )
    compute >> collect
