"""Exactly once on Ocean Node under faults: a real socket proxy between the hook and the sandbox's node.

A node job has no identity the client knows before the answer (a free job carries no order; a paid job's
agreementId is the node's own escrow lock), so each start is tagged with a unique id in the job's
``metadata``. These scenarios cut the start's answer and count the owner's jobs straight from the node
(not through the proxy): the hook must return the job the lost start created, never start a second one,
and must not invent a job when the start never reached the node.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_provider_ocean.backends import recovery
from airflow_provider_ocean.exceptions import OceanConnectionError
from airflow_provider_ocean.hooks.ocean import OceanComputeHook
from tests.faults import harness
from tests.faults.proxy import FaultProxy
from tests.operators.support import raw_algorithm, wait_terminal

pytestmark = pytest.mark.chain

CONN_ID = "ocean_node_faults"
FREE_START = ("POST", "/api/services/freeCompute")
PAID_START = ("POST", "/api/services/compute")
STATUS = ("GET", "/api/services/compute")
ONE = 10**18
QUICK = raw_algorithm("import os\nopen(os.path.join(os.environ['OUTPUTS'], 'done.txt'), 'w').write('ok')\n")


@pytest.fixture
def node_proxy(node_sandbox: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A fault proxy in front of the node; ``CONN_ID`` points at it (the chain RPC is reached directly)."""
    monkeypatch.setattr(recovery, "START_LOOKUP_DELAY", 0.2)
    proxy = FaultProxy(node_sandbox["provider_url"]).start()
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", harness.conn_json(node_sandbox, host=proxy.url))
    try:
        yield proxy
    finally:
        proxy.stop()


def node_jobs(info: dict[str, Any]) -> set[str]:
    """The owner's job ids (bare hashes) as the node itself lists them, bypassing the proxy."""
    response = requests.get(
        info["provider_url"] + "/api/services/compute",
        params={"consumerAddress": info["consumer"]["address"]},
        timeout=30,
    )
    response.raise_for_status()
    return {entry["jobId"] for entry in response.json()}


def weather(info: dict[str, Any]) -> list[str]:
    return [info["provider_url"] + "/sandbox/files/weather.csv"]


def test_reset_after_the_free_start_was_sent_finds_the_job(
    node_proxy: FaultProxy, node_sandbox: dict[str, Any]
) -> None:
    before = node_jobs(node_sandbox)
    node_proxy.add(method=FREE_START[0], path=FREE_START[1], action="reset", times=1)
    hook = OceanComputeHook(CONN_ID, retry_delay=0.1)

    started = hook.run_compute(weather(node_sandbox), QUICK)

    new = node_jobs(node_sandbox) - before
    assert len(new) == 1, new
    assert started["job_id"].split("-", 1)[1] in new  # the job the lost start created ...
    assert node_proxy.count(*FREE_START) == 1  # ... found, not started again
    assert node_proxy.count(*STATUS) >= 1
    assert wait_terminal(hook, started["job_id"]).is_succeeded


def test_gateway_error_after_a_paid_start_finds_the_job_with_one_escrow_lock(
    node_proxy: FaultProxy, node_sandbox: dict[str, Any]
) -> None:
    before = node_jobs(node_sandbox)
    node_proxy.add(method=PAID_START[0], path=PAID_START[1], action="error", status=502, after_forward=True)
    hook = OceanComputeHook(CONN_ID, retry_delay=0.1)

    started = hook.run_compute(
        weather(node_sandbox), QUICK, node_sandbox["environments"]["paid"], max_fee=20 * ONE
    )

    new = node_jobs(node_sandbox) - before
    assert len(new) == 1, new
    assert started["job_id"].split("-", 1)[1] in new
    assert node_proxy.count(*PAID_START) == 1
    job = wait_terminal(hook, started["job_id"])
    assert job.agreement_id  # the one escrow lock the node made for it
    assert started["payment"]["ocean_node"]["free"] is False


def test_start_that_never_reached_the_node_fails_and_starts_nothing(
    node_proxy: FaultProxy, node_sandbox: dict[str, Any]
) -> None:
    """Control: the connection is cut before the node saw the start; the lookup finds no tagged job, so
    the original error is raised (nothing was started, and nothing is started behind the caller's back)."""
    before = node_jobs(node_sandbox)
    node_proxy.add(method=FREE_START[0], path=FREE_START[1], action="reset_before", times=1)
    hook = OceanComputeHook(CONN_ID, retry_delay=0.1)

    with pytest.raises(OceanConnectionError):
        hook.run_compute(weather(node_sandbox), QUICK)

    assert node_jobs(node_sandbox) == before
    assert node_proxy.count(*FREE_START) == 1  # sent once, never again
    assert node_proxy.count(*STATUS) == recovery.START_LOOKUP_ATTEMPTS  # it did look
