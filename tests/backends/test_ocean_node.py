"""The Ocean Node backend's pre-spend checks that need no server (the rest runs against the sandbox's
node personality: tests/hooks/test_ocean_node_sandbox.py and the operator tests' ``[ocean_node]`` runs).

The connection points at a closed 127.0.0.1 port: any request would fail with a connection error, so an
:class:`OceanValidationError` proves that the input was refused before anything was sent.
"""

from __future__ import annotations

import json
import socket
from datetime import timedelta

import pytest

from airflow_provider_ocean.exceptions import OceanValidationError
from airflow_provider_ocean.hooks.ocean import OceanComputeHook

KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"  # public test vector
DID = "did:op:" + "ab" * 32


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def hook_for(monkeypatch):
    def make(backend: str) -> OceanComputeHook:
        conn = {
            "conn_type": "ocean",
            "host": f"http://127.0.0.1:{closed_port()}",
            "password": KEY,
            "extra": {"chain_id": 8996, "backend": backend, "rpc_url": f"http://127.0.0.1:{closed_port()}"},
        }
        monkeypatch.setenv("AIRFLOW_CONN_OCEAN_OFFLINE", json.dumps(conn))
        return OceanComputeHook("ocean_offline", retry_delay=0.0)

    return make


def test_valid_until_is_refused_on_an_ocean_node_before_anything_is_sent(hook_for):
    """It used to be dropped silently: a node sets its fees' validity from the job's duration."""
    hook = hook_for("ocean_node")
    with pytest.raises(OceanValidationError, match="valid_until .* only applies to Provider v4"):
        hook.pay_for_compute([DID], {"did": DID}, "env-1", timedelta(hours=1), max_fee=10)
    with pytest.raises(OceanValidationError, match="valid_until"):
        hook.run_compute([DID], {"did": DID}, "env-1", valid_until=timedelta(hours=1))


def test_node_options_are_refused_on_a_provider_v4_before_anything_is_sent(hook_for):
    """The mirror check: what only an Ocean Node understands is refused by the Provider v4 backend."""
    hook = hook_for("provider_v4")
    with pytest.raises(OceanValidationError, match="only apply to Ocean Node"):
        hook.pay_for_compute([DID], {"did": DID}, "env-1", resources={"cpu": 1})


def test_unknown_node_option_is_refused(hook_for):
    hook = hook_for("ocean_node")
    with pytest.raises(OceanValidationError, match="Unknown Ocean Node option"):
        hook.pay_for_compute([DID], {"did": DID}, "env-1", gpu=1)
