"""Receipt polling: the pause after a miss follows the time waited (no chain needed)."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_ocean.chain import tx as tx_module
from airflow_provider_ocean.chain.tx import SentTransaction, TransactionSender

KEY = "0x" + "11" * 32


class Clock:
    """``time.monotonic`` / ``time.sleep`` of the tx module, advanced by the sleeps only."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


class ReceiptAfter:
    """An RPC client whose receipt exists ``at`` seconds after the wait started."""

    url = "http://fake-rpc.test"

    def __init__(self, clock: Clock, at: float) -> None:
        self.clock, self.ready = clock, clock.now + at
        self.reads: list[float] = []

    def get_transaction_receipt(self, tx_hash: str) -> dict[str, Any] | None:
        self.reads.append(self.clock.now)
        if self.clock.now < self.ready:
            return None
        return {"status": "0x1", "transactionHash": tx_hash, "blockNumber": "0x5"}


def wait_for(at: float, monkeypatch: pytest.MonkeyPatch) -> tuple[Clock, ReceiptAfter]:
    clock = Clock()
    monkeypatch.setattr(tx_module.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(tx_module.time, "sleep", clock.sleep)
    monkeypatch.setattr(tx_module, "REPLACED_CHECK_INTERVAL", 10**6)  # not what is tested here
    rpc = ReceiptAfter(clock, at)
    sender = TransactionSender(rpc, KEY, lock_dir=None, receipt_timeout=120, rebroadcast_interval=10**6)  # type: ignore[arg-type]
    receipt = sender.wait(SentTransaction("0x" + "ab" * 32, {"nonce": 1}, "test"))
    assert receipt["status"] == "0x1"
    return clock, rpc


def test_a_receipt_is_seen_within_a_tenth_of_a_second_on_a_fast_chain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock, rpc = wait_for(1.45, monkeypatch)  # a 2 s chain: mined 1.45 s after the broadcast
    assert clock.pauses[:10] == pytest.approx([0.1] * 10)  # the first second: every 0.1 s
    assert max(clock.pauses) <= 0.145 + 1e-9  # then a tenth of the time waited
    assert rpc.reads[-1] - 1000.0 - 1.45 <= 0.145 + 1e-9  # seen at most 10 % late


def test_the_pause_grows_with_the_time_waited_up_to_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, rpc = wait_for(30.0, monkeypatch)
    waited = [read - 1000.0 for read in rpc.reads]
    for before, pause in zip(waited, clock.pauses, strict=False):
        assert pause == pytest.approx(min(max(before * 0.1, 0.1), 1.0), abs=1e-9)
    assert max(clock.pauses) == 1.0
    assert waited[-1] - 30.0 <= 1.0 + 1e-9  # at most 10 % (here the 1 s cap) late
    assert len(rpc.reads) < 60  # a 30 s wait: about 50 reads, not 300
