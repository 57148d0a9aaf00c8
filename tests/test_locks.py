"""Wallet locks: the cluster-wide Redis lock against a real ``redis-server`` (``tests/servers.py``).

- it excludes other processes (standing in for other hosts) and keeps its counter;
- a killed holder blocks the others for one lease at most, a live holder keeps it by renewing;
- an unreachable Redis fails clearly before anything is signed or paid, without leaking its password;
- hosts that share it pay and start jobs from one wallet without a single nonce conflict.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ocean.locks import RedisLocks, WalletLockError, redacted_url, wallet_locks
from tests import exactly_once_support as support
from tests.servers import free_port
from tests.test_nonce_concurrency import run_in_processes

FORK = multiprocessing.get_context("fork")


def _count_under_lock(url: str, name: str, rounds: int, locked: bool, barrier: Any) -> int:
    """One "host": ``rounds`` read-modify-write cycles of a counter kept in Redis."""
    import redis

    locks = RedisLocks(url)
    client = redis.Redis.from_url(url)
    barrier.wait(timeout=60)
    for _ in range(rounds):
        if locked:
            with locks.hold(name) as counter:
                value = counter.read()
                time.sleep(0.001)
                counter.write(value + 1)
        else:
            raw = client.get(f"{RedisLocks.prefix}{name}:counter")
            time.sleep(0.001)
            client.set(f"{RedisLocks.prefix}{name}:counter", int(raw or 0) + 1)
    return rounds


def _counter(url: str, name: str) -> int:
    with RedisLocks(url).hold(name) as counter:
        return counter.read()


def test_the_redis_lock_excludes_other_hosts(redis_server: str) -> None:
    _, seconds = run_in_processes(_count_under_lock, 4, lambda i: (redis_server, "excl", 50, True))
    assert _counter(redis_server, "excl") == 200
    print(f"\n200 locked increments from 4 processes through Redis: {seconds:.1f} s")


def test_control_without_the_lock_hosts_lose_updates(redis_server: str) -> None:
    run_in_processes(_count_under_lock, 4, lambda i: (redis_server, "nolock", 50, False))
    assert _counter(redis_server, "nolock") < 200


def _hold_and_report(url: str, name: str, lease: float, ready: Path) -> None:
    with RedisLocks(url, lease=lease).hold(name):
        ready.write_text("held")
        time.sleep(600)


def _take_within(url: str, name: str, wait: float) -> float:
    started = time.monotonic()
    with RedisLocks(url, wait=wait).hold(name):
        return time.monotonic() - started


def _start_holder(url: str, name: str, lease: float, tmp_path: Path) -> Any:
    ready = tmp_path / f"{name}.ready"
    holder = FORK.Process(target=_hold_and_report, args=(url, name, lease, ready))
    holder.start()
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.02)
    return holder


def test_a_killed_holder_blocks_the_others_for_one_lease_at_most(redis_server: str, tmp_path: Path) -> None:
    holder = _start_holder(redis_server, "killed", 2.0, tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    waited = _take_within(redis_server, "killed", wait=30)
    assert waited < 2.0 + 1.5


def test_a_live_holder_keeps_the_lock_past_its_lease(redis_server: str, tmp_path: Path) -> None:
    holder = _start_holder(redis_server, "renewed", 0.6, tmp_path)
    try:
        with pytest.raises(WalletLockError, match="was not free within 2 s"):
            _take_within(redis_server, "renewed", wait=2.0)  # more than three leases
    finally:
        holder.kill()
        holder.join()


def test_an_unreachable_redis_fails_clearly_without_its_password() -> None:
    url = f"redis://:not-a-real-password@127.0.0.1:{free_port()}/0"
    locks = wallet_locks(url)
    started = time.monotonic()
    with pytest.raises(WalletLockError, match="cannot be reached") as info, locks.hold("unreachable"):
        pass
    assert time.monotonic() - started < 10
    assert "not-a-real-password" not in str(info.value)
    assert redacted_url(url) in str(info.value)


def test_a_lock_url_that_is_not_redis_is_refused() -> None:
    with pytest.raises(WalletLockError, match="redis://"):
        wallet_locks("http://127.0.0.1:6379")


@pytest.mark.chain
class TestHostsSharingTheClusterLock:
    def test_an_unreachable_lock_costs_nothing(self, sandbox: dict[str, Any], monkeypatch: Any) -> None:
        from airflow_provider_ocean.exceptions import OceanWalletLockError
        from airflow_provider_ocean.hooks.ocean import OceanComputeHook
        from tests.faults.harness import job_ids, tx_count

        conn = json.loads(sandbox["conn_json"])
        conn["extra"]["wallet_lock_url"] = f"redis://127.0.0.1:{free_port()}/0"
        monkeypatch.setenv("AIRFLOW_CONN_OCEAN_LOCKED", json.dumps(conn))
        hook = OceanComputeHook("ocean_locked")
        consumer = sandbox["consumer"]["address"]
        sent_before = tx_count(sandbox["rpc_url"], consumer)
        nonce_before = hook.provider.get_nonce(consumer)
        jobs_before = job_ids(sandbox["provider_url"], consumer)
        dataset = sandbox["assets"]["dataset_raw"]["did"]
        with pytest.raises(OceanWalletLockError, match="cannot be reached"):
            hook.pay_for_compute([dataset], support.QUICK_RAW)
        with pytest.raises(OceanWalletLockError, match="cannot be reached"):
            hook.stop_job("0" * 32)
        ok, message = hook.test_connection()
        assert not ok
        assert "cannot be reached" in message
        assert tx_count(sandbox["rpc_url"], consumer) == sent_before
        assert hook.provider.get_nonce(consumer) == nonce_before
        assert job_ids(sandbox["provider_url"], consumer) == jobs_before

    def test_three_hosts_pay_and_start_without_a_single_nonce_conflict(
        self, sandbox: dict[str, Any], redis_server: str
    ) -> None:
        """With the cluster lock, nothing is ever refused or re-signed: the hosts take turns."""
        hosts, tasks = 3, 3
        support.top_up(sandbox, ("dataset_raw",), hosts * tasks + 20)
        conn = json.loads(sandbox["conn_json"])
        conn["extra"]["wallet_lock_url"] = redis_server
        conn["extra"]["timeout"] = 60
        dataset = sandbox["assets"]["dataset_raw"]["did"]
        chunks, seconds = run_in_processes(
            support.pay_and_start_tasks,
            hosts,
            lambda i: (json.dumps(conn), i, tasks, dataset, support.QUICK_RAW),
        )
        results = [r for chunk in chunks for r in chunk["results"]]
        assert [r for r in results if "error" in r] == []
        assert len({r["job_id"] for r in results}) == hosts * tasks
        assert sum(c["provider_resigned"] for c in chunks) == 0
        assert sum(c["chain_refetched"] for c in chunks) == 0
        print(f"\n{hosts} hosts x {tasks} pay + start through the Redis wallet lock: {seconds:.1f} s")
