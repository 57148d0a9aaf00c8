"""Two hosts signing for one wallet at the sandbox Provider in the same millisecond, without a shared lock.

Provider v4 accepts a nonce equal to the stored one, runs the command, and only then fails to save it
(503 ``Cannot create duplicates``). Each host here is a :class:`ProviderV4Client` with its own
process-only nonce allocator and the same frozen clock, as two machines are.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from eth_account import Account

from airflow_provider_ocean.exceptions import OceanProviderError
from airflow_provider_ocean.locks import ProcessLocks
from airflow_provider_ocean.signing import NonceAllocator, Signer
from airflow_provider_ocean.wire.provider_v4 import ProviderV4Client

FROZEN_MS = 1_900_000_000_000
JOB_ID = "f" * 32


def _host(provider_url: str, salt: int) -> ProviderV4Client:
    """One host: its own allocator and lock, the shared frozen clock, its process's salt."""
    allocator = NonceAllocator(clock=lambda: FROZEN_MS, locks=ProcessLocks(), salt=lambda: salt)
    return ProviderV4Client(provider_url, nonces=allocator, retry_limit=1)


def _interleave(provider_url: str) -> tuple[Signer, ProviderV4Client, ProviderV4Client]:
    """Host A signs, host B signs above A's stored nonce, then host A signs again from what it knows:
    both hosts now count the same next integer."""
    signer = Signer(Account.create().key.hex())
    host_a, host_b = _host(provider_url, 111_111_111), _host(provider_url, 222_222_222)
    host_a.stop_job(signer, JOB_ID)
    host_b.stop_job(signer, JOB_ID)
    return signer, host_a, host_b


def test_equal_millisecond_nonces_from_two_hosts_never_reach_the_provider(sandbox):
    signer, host_a, host_b = _interleave(sandbox["provider_url"])
    host_a.stop_job(signer, JOB_ID)  # same integer as B's last one; the salts differ
    stored = Decimal(host_a.get_nonce(signer.address))
    assert FROZEN_MS + 1 <= stored < FROZEN_MS + 3


def test_control_unsalted_nonces_from_two_hosts_collide_after_the_command_ran(sandbox, monkeypatch):
    """What the salt prevents: the third stop is accepted, runs, and then answers 503."""
    monkeypatch.setattr(ProviderV4Client, "salted_nonces", False)
    signer, host_a, _ = _interleave(sandbox["provider_url"])
    with pytest.raises(OceanProviderError, match="Cannot create duplicates") as info:
        host_a.stop_job(signer, JOB_ID)
    assert info.value.status == 503
