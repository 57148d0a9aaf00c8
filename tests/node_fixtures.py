"""Session fixture for a sandbox with the Ocean Node personality (``ocean-sandbox up --api node``).

Import the fixture into a test module (``from tests.node_fixtures import node_sandbox  # noqa: F401``) or
into a conftest. The node runs with a generous rate limit (tests that check the 429 lower it through
``/sandbox/admin/node``) and a 1 s payment cron, so jobs move from 71 to 70 quickly, as they do on a real node
after its ``paymentClaimInterval``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from ocean_sandbox.runtime import Sandbox

NODE_TEST_RATE_LIMIT = 100_000
NODE_TEST_CLAIM_INTERVAL = 1.0


@pytest.fixture(scope="session")
def node_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A running sandbox whose server is the Ocean Node personality, stopped at the end of the session."""
    state_dir = tmp_path_factory.mktemp("ocean-node-sandbox")
    box = Sandbox(
        state_dir,
        rpc_port=0,
        provider_port=0,
        receipt_timeout=5.0,
        max_job_duration=60,
        api="node",
        node_rate_limit=NODE_TEST_RATE_LIMIT,
        node_claim_interval=NODE_TEST_CLAIM_INTERVAL,
    )
    try:
        info = box.up()
        yield {**info, "sandbox": box}
    finally:
        box.down()


def node_admin(info: dict[str, Any], **settings: Any) -> dict[str, Any]:
    """Read or change the node personality's rate limit / cron interval (``settle_now`` runs the cron)."""
    response = requests.post(info["provider_url"] + "/sandbox/admin/node", json=settings, timeout=30)
    response.raise_for_status()
    return response.json()
