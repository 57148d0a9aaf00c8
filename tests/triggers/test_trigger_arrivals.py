"""Triggers that arrive one after the other share the owner's list instead of each fetching a new one.

A batch of scheduled jobs defers over seconds or minutes, one task after the other. Every trigger must
accept any list younger than its poll interval (even one fetched just before it started), so that the
status requests stay at one per interval however the triggers arrive; a job missing from a list fetched
before its trigger started is not counted towards "the Provider does not know this job".
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from airflow_provider_ocean.hooks.ocean import OceanComputeHook
from airflow_provider_ocean.models import JobStatus
from airflow_provider_ocean.triggers import ocean as trigger_module
from airflow_provider_ocean.triggers.ocean import OceanComputeJobTrigger
from airflow_provider_ocean.triggers.polling import OwnerStatusPoller

#: A throw-away key (never used on a chain).
KEY = "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
CONN = json.dumps({"conn_type": "ocean", "host": "http://127.0.0.1:9", "password": KEY})


def running(job_id: str) -> JobStatus:
    return JobStatus(job_id=job_id, status=40, status_text="Running algorithm ")


def finished(job_id: str) -> JobStatus:
    return JobStatus(job_id=job_id, status=70, status_text="Job finished", date_finished="1")


class Owner:
    """The owner's job list as the Provider would answer it, counting the requests."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobStatus] = {}
        self.calls: list[float] = []

    async def fetch(self) -> list[JobStatus]:
        self.calls.append(time.monotonic())
        await asyncio.sleep(0.01)
        return list(self.jobs.values())


@pytest.fixture
def conn_id(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_OCEAN_ARRIVALS", CONN)
    return "ocean_arrivals"


def install(owner: Owner, conn_id: str) -> OwnerStatusPoller:
    hook = OceanComputeHook(conn_id)
    return OwnerStatusPoller.shared((hook.settings.provider_url, hook.consumer_address), owner.fetch)


async def first_event(trigger: OceanComputeJobTrigger) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("no event")


@pytest.mark.asyncio
async def test_triggers_arriving_one_by_one_share_one_request_per_interval(conn_id: str) -> None:
    owner = Owner()
    poller = install(owner, conn_id)  # keep a reference: the registry holds pollers weakly
    interval = 0.5
    jobs = [f"{n:032x}" for n in range(20)]
    tasks = []
    started = time.monotonic()
    for job_id in jobs:  # one new job and its trigger every 50 ms, over two intervals
        owner.jobs[job_id] = running(job_id)
        trigger = OceanComputeJobTrigger(job_id=job_id, ocean_conn_id=conn_id, poll_interval=interval)
        tasks.append(asyncio.create_task(first_event(trigger)))
        await asyncio.sleep(0.05)
    await asyncio.sleep(interval)
    for job_id in jobs:
        owner.jobs[job_id] = finished(job_id)
    payloads = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    elapsed = time.monotonic() - started

    assert [p["status"] for p in payloads] == ["succeeded"] * len(jobs)
    # per-arrival fetching would send ~20 requests; one per interval is ~elapsed / interval
    assert poller.requests == len(owner.calls) <= elapsed / interval + 2


@pytest.mark.asyncio
async def test_a_list_older_than_the_trigger_does_not_count_towards_unknown(conn_id: str) -> None:
    owner = Owner()
    poller = install(owner, conn_id)  # keep a reference: the registry holds pollers weakly
    job_id = "a" * 32
    await poller.get("b" * 32, max_age=60)  # a list fetched before the job exists
    owner.jobs[job_id] = running(job_id)
    trigger = OceanComputeJobTrigger(job_id=job_id, ocean_conn_id=conn_id, poll_interval=0.2)
    task = asyncio.create_task(first_event(trigger))
    await asyncio.sleep(0.1)
    assert len(owner.calls) == 1  # the first poll reused the older list
    owner.jobs[job_id] = finished(job_id)
    payload = await asyncio.wait_for(task, 10)
    assert payload["status"] == "succeeded"


@pytest.mark.asyncio
async def test_an_unknown_job_is_still_reported_after_fresh_lists(conn_id: str) -> None:
    owner = Owner()
    poller = install(owner, conn_id)  # keep a reference: the registry holds pollers weakly
    trigger = OceanComputeJobTrigger(job_id="d" * 32, ocean_conn_id=conn_id, poll_interval=0.05)
    payload = await asyncio.wait_for(first_event(trigger), 10)
    assert payload["status"] == "error"
    assert "not known" in payload["message"]
    assert len(owner.calls) == poller.requests == trigger_module.MAX_NOT_FOUND
