"""Recent orders read from the chain (payment/history.py); finding real orders after a lost payment record
runs against the sandbox in tests/operators/test_reattach.py."""

from __future__ import annotations

import socket

import pytest

from airflow_provider_ocean.chain.rpc import JsonRpcClient
from airflow_provider_ocean.exceptions import OceanConnectionError
from airflow_provider_ocean.payment.history import recent_orders
from airflow_provider_ocean.records import Orderable


def test_an_unreachable_chain_is_an_ocean_connection_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    rpc = JsonRpcClient(f"http://127.0.0.1:{closed}", timeout=2, retries=1, retry_delay=0.0)
    orderable = Orderable("dataset", "did:op:x", "0", 0, "0x" + "d1" * 20)
    with pytest.raises(OceanConnectionError, match="recent orders"):
        recent_orders(rpc, [orderable], consumer="0x" + "e1" * 20, payer="0x" + "aa" * 20, lookback_blocks=10)
