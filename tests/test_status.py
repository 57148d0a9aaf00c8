"""The status vocabularies (status.py): each code's meaning, checked against the reference tables
(docs/reference/provider-v4-api.md §8, docs/reference/ocean-node-api.md §3)."""

from __future__ import annotations

import pytest

from airflow_provider_ocean.models import JobStatus
from airflow_provider_ocean.status import NodeStatus, V4Status

NODE_FAILURES = {2, 11, 13, 14, 21, 22, 31, 32, 33, 41, 42, 61, 62}


class TestV4Status:
    def test_codes(self):
        assert [int(s) for s in V4Status] == [1, 20, 30, 31, 32, 40, 50, 60, 70]

    @pytest.mark.parametrize("status", list(V4Status))
    def test_meaning(self, status):
        assert status.is_failure is (status in (31, 32))
        assert status.is_terminal is (status in (31, 32, 70))
        assert status.is_success is (status == 70)


class TestNodeStatus:
    def test_codes(self):
        expected = [
            0,
            1,
            2,
            10,
            11,
            12,
            13,
            14,
            20,
            21,
            22,
            30,
            31,
            32,
            33,
            40,
            41,
            42,
            50,
            60,
            61,
            62,
            70,
            71,
        ]
        assert [int(s) for s in NodeStatus] == expected

    @pytest.mark.parametrize("status", list(NodeStatus))
    def test_meaning(self, status):
        assert status.is_failure is (status in NODE_FAILURES)
        assert status.is_terminal is (status in NODE_FAILURES or status in (70, 71))
        assert status.is_success is (status in (70, 71))


class TestJobStatusReadsV4Codes:
    @pytest.mark.parametrize(("code", "failed"), [(31, True), (32, True), (40, False), (70, False)])
    def test_provisioning_failure(self, code, failed):
        job = JobStatus(job_id="j", status=code)
        assert job.is_provisioning_failure is failed
        assert (job.outcome == "failed") is failed

    def test_success_needs_the_end_and_no_stop(self):
        assert JobStatus(job_id="j", status=70, date_finished="1").is_succeeded
        assert not JobStatus(job_id="j", status=70).is_succeeded
        assert not JobStatus(job_id="j", status=70, date_finished="1", stopreq=1).is_succeeded
