"""Extra links: the Provider's status URL of a job, and the DDO of the job's first dataset."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


def job_status_url(provider_url: str, consumer_address: str, job_id: str) -> str:
    """``GET /api/services/compute`` for one job of one consumer (the status endpoint is unsigned)."""
    query = urlencode({"consumerAddress": consumer_address, "jobId": job_id})
    return f"{provider_url.rstrip('/')}/api/services/compute?{query}"


def ddo_url(aquarius_url: str, did: str) -> str:
    """Aquarius' DDO route for ``did``."""
    return f"{aquarius_url.rstrip('/')}/api/aquarius/assets/ddo/{did}"


class _XComLink(BaseOperatorLink):
    """A link whose URL the task pushed to XCom under :attr:`xcom_key` while it ran."""

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        value: Any = XCom.get_value(ti_key=ti_key, key=self.xcom_key)
        return value if isinstance(value, str) else ""

    @classmethod
    def persist(cls, context: Any, url: str) -> None:
        """Store the URL for the current task instance."""
        context["ti"].xcom_push(key=cls().xcom_key, value=url)


class OceanJobStatusLink(_XComLink):
    """The Provider's status answer for the task's compute job."""

    name = "Ocean job status"

    @property
    def xcom_key(self) -> str:
        return "ocean_job_status_url"


class OceanDatasetLink(_XComLink):
    """The DDO (asset document) of the task's first dataset."""

    name = "Ocean dataset DDO"

    @property
    def xcom_key(self) -> str:
        return "ocean_dataset_ddo_url"
