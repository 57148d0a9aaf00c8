"""The deployment test's DAG: pay for and start a short compute job, wait for it in the triggerer, collect it.

Modeled on ``dags/ocean_compute_example.py`` with a raw algorithm on the sandbox's ``dataset_raw`` and with
retries (a killed worker's task instance is retried on another worker). Downstream tasks go first
(``weight_rule="upstream"``), so that started runs finish before new ones start.

The algorithm runs about four seconds once the test has released it: until the release file exists (at
most ``HOLD_SECONDS``) it waits. On a busy machine a four-second job would end before its sensor even
starts, and the sensor would never defer; held jobs make sure the sensors are deferred when the test
restarts the triggerer (the sandbox runs jobs as local processes, so the job sees the test's file).

Configuration (Airflow Variables, set by the test as ``AIRFLOW_VAR_*``):

- ``ocean_deploy_dataset_did``: the dataset (one that allows raw algorithms);
- ``ocean_deploy_results_dir``: the folder of the results, one subfolder per run;
- ``ocean_deploy_release_file``: the file whose existence releases the jobs.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_ocean.operators.compute import OceanComputeStartOperator
from airflow_provider_ocean.operators.results import OceanComputeResultsOperator
from airflow_provider_ocean.sensors.ocean import OceanComputeJobStatusSensor

DAG_ID = "ocean_deployment"
JOB_SECONDS = 4
HOLD_SECONDS = 45  # under the sandbox environments' maxJobDuration (60 s in the test session)

#: A raw algorithm: waits for the release file, sleeps, then writes one output file (templated: the
#: release file's path is rendered in).
ALGORITHM = {
    "rawcode": (
        "import os, time\n"
        "release = '{{ var.value.ocean_deploy_release_file }}'\n"
        f"deadline = time.time() + {HOLD_SECONDS}\n"
        "while not os.path.exists(release) and time.time() < deadline:\n"
        "    time.sleep(0.2)\n"
        f"time.sleep({JOB_SECONDS})\n"
        "out = os.environ.get('OUTPUTS', '/data/outputs')\n"
        "open(os.path.join(out, 'done.txt'), 'w').write('done\\n')\n"
        "print('done')\n"
    ),
    "container": {
        "entrypoint": "python $ALGO",
        "image": "python",
        "tag": "3.11-slim",
        "checksum": "sha256:" + "0" * 64,
    },
}

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=64,
    max_active_tasks=128,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=3), "weight_rule": "upstream"},
    tags=["ocean", "deployment-test"],
    doc_md=__doc__,
) as dag:
    start = OceanComputeStartOperator(
        task_id="pay_and_start",
        datasets=["{{ var.value.ocean_deploy_dataset_did }}"],
        algorithm=ALGORITHM,
        max_fee=0,
        wait_for_completion=False,
    )
    wait = OceanComputeJobStatusSensor(
        task_id="wait_for_job",
        job_id=start.output,
        deferrable=True,
        poke_interval=2,
        timeout=timedelta(minutes=5),
    )
    results = OceanComputeResultsOperator(
        task_id="collect_results",
        job_id=start.output,
        destination="{{ var.value.ocean_deploy_results_dir }}/{{ run_id | replace(':', '_') }}",
        result_types=["output", "algorithmLog"],
    )

    start >> wait >> results
