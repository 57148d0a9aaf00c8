"""Extra links: URL formats, how a link is stored and read, and what the Airflow API returns after a run."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_provider_ocean.links import OceanDatasetLink, OceanJobStatusLink, ddo_url, job_status_url
from airflow_provider_ocean.operators.compute import OceanComputeStartOperator
from airflow_provider_ocean.operators.results import OceanComputeResultsOperator
from airflow_provider_ocean.sensors.ocean import OceanComputeJobStatusSensor

ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
JOB = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
DID = "did:op:62b18537305dacbec82ee60d3dedf67e0e3b353990336314c07e53d17af119ae"


@pytest.mark.parametrize(
    ("provider_url", "base"),
    [
        ("https://provider.example.com", "https://provider.example.com"),
        ("https://provider.example.com/", "https://provider.example.com"),
        ("http://127.0.0.1:8030//", "http://127.0.0.1:8030"),
        ("https://example.com/ocean/provider/", "https://example.com/ocean/provider"),
    ],
)
def test_job_status_url(provider_url: str, base: str) -> None:
    url = job_status_url(provider_url, ADDRESS, JOB)
    assert url == f"{base}/api/services/compute?consumerAddress={ADDRESS}&jobId={JOB}"
    parts = urlsplit(url)
    assert parse_qs(parts.query) == {"consumerAddress": [ADDRESS], "jobId": [JOB]}


def test_job_status_url_escapes_the_query() -> None:
    url = job_status_url("https://p", ADDRESS, "x&jobId=evil y")
    assert parse_qs(urlsplit(url).query) == {"consumerAddress": [ADDRESS], "jobId": ["x&jobId=evil y"]}


@pytest.mark.parametrize("aquarius", ["https://aquarius.example.com", "https://aquarius.example.com/"])
def test_ddo_url(aquarius: str) -> None:
    assert ddo_url(aquarius, DID) == f"https://aquarius.example.com/api/aquarius/assets/ddo/{DID}"


def test_link_names_and_keys() -> None:
    assert (OceanJobStatusLink().name, OceanJobStatusLink().xcom_key) == (
        "Ocean job status",
        "ocean_job_status_url",
    )
    assert (OceanDatasetLink().name, OceanDatasetLink().xcom_key) == (
        "Ocean dataset DDO",
        "ocean_dataset_ddo_url",
    )
    names = {
        cls: [link.name for link in cls.operator_extra_links]
        for cls in (OceanComputeStartOperator, OceanComputeJobStatusSensor, OceanComputeResultsOperator)
    }
    assert names[OceanComputeStartOperator] == ["Ocean job status", "Ocean dataset DDO"]
    assert names[OceanComputeJobStatusSensor] == ["Ocean job status"]
    assert names[OceanComputeResultsOperator] == ["Ocean job status"]


class _RecordingTI:
    def __init__(self) -> None:
        self.pushed: list[tuple[str, Any]] = []

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed.append((key, value))


def test_persist_pushes_the_url_under_the_link_key() -> None:
    ti = _RecordingTI()
    OceanJobStatusLink.persist({"ti": ti}, "https://p/api/services/compute?jobId=1")
    OceanDatasetLink.persist({"ti": ti}, "https://a/api/aquarius/assets/ddo/did:op:1")
    assert ti.pushed == [
        ("ocean_job_status_url", "https://p/api/services/compute?jobId=1"),
        ("ocean_dataset_ddo_url", "https://a/api/aquarius/assets/ddo/did:op:1"),
    ]


@pytest.mark.parametrize(("stored", "expected"), [("https://p/x", "https://p/x"), (None, ""), (42, "")])
def test_get_link_reads_the_stored_url(monkeypatch: pytest.MonkeyPatch, stored: Any, expected: str) -> None:
    from airflow.sdk.execution_time.xcom import XCom

    asked: list[dict[str, Any]] = []

    def get_value(**kwargs: Any) -> Any:
        asked.append(kwargs)
        return stored

    monkeypatch.setattr(XCom, "get_value", staticmethod(get_value))
    ti_key = object()
    assert OceanJobStatusLink().get_link(None, ti_key=ti_key) == expected  # type: ignore[arg-type]
    assert asked == [{"ti_key": ti_key, "key": "ocean_job_status_url"}]


@pytest.mark.chain
def test_links_returned_by_the_airflow_api_after_a_run(
    sandbox: dict[str, Any], ocean_conn: str, airflow_db: str
) -> None:
    """What the UI shows: the extra-links endpoint of the API server, for a task run with ``dag.test()``."""
    from airflow.api_fastapi.core_api.routes.public.extra_links import get_extra_links
    from airflow.models.dagbag import DBDagBag
    from airflow.sdk import DAG
    from airflow.utils.session import create_session

    from tests.operators.support import failure, record_failure, run_dag, unique_dag_id, xcom

    dag_id = unique_dag_id("links")
    dataset = sandbox["assets"]["dataset"]["did"]
    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        start = OceanComputeStartOperator(
            task_id="start",
            datasets=[dataset],
            algorithm=sandbox["assets"]["algorithm"]["did"],
            wait_for_completion=False,
            on_failure_callback=record_failure,
        )
        OceanComputeJobStatusSensor(task_id="sense", job_id=start.output, poke_interval=0.5, timeout=60)
    dr = run_dag(dag)
    assert dr.state == "success", failure(dag_id, "start")
    job_id = xcom(dr, "start")
    status_url = job_status_url(sandbox["provider_url"], sandbox["consumer"]["address"], job_id)
    assert xcom(dr, "start", "ocean_job_status_url") == status_url
    assert xcom(dr, "start", "ocean_dataset_ddo_url") == ddo_url(sandbox["aquarius_url"], dataset)

    with create_session() as session:
        start_links = get_extra_links(
            dag_id=dag_id, dag_run_id=dr.run_id, task_id="start", session=session, dag_bag=DBDagBag()
        )
        sensor_links = get_extra_links(
            dag_id=dag_id, dag_run_id=dr.run_id, task_id="sense", session=session, dag_bag=DBDagBag()
        )
    assert start_links.extra_links == {
        "Ocean dataset DDO": ddo_url(sandbox["aquarius_url"], dataset),
        "Ocean job status": status_url,
    }
    assert sensor_links.extra_links == {"Ocean job status": status_url}
