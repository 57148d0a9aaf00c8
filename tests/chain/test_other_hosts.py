"""One key used by several hosts that share no lock: chain nonces taken by the other hosts.

Each host is a :class:`TransactionSender` with its own (process-only) lock, as on separate machines.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest
from eth_account import Account
from eth_utils import keccak

from airflow_provider_ocean.chain import tx as tx_module
from airflow_provider_ocean.chain.errors import ReceiptTimeoutError, RpcError, TransactionReplacedError
from airflow_provider_ocean.chain.rpc import JsonRpcClient
from airflow_provider_ocean.chain.tx import TransactionSender, is_nonce_taken

KEY = "0x" + "22" * 32
FEES = {"gasPrice": 1}

# What nodes answer when another transaction holds the nonce (lower-case or not, as they send it).
TAKEN_ANSWERS = {
    "geth": "nonce too low: next nonce 6, tx nonce 5",
    "geth-pool": "replacement transaction underpriced",
    "erigon": "replacement fee too low",
    "besu": "NONCE_TOO_LOW",
    "besu-pool": "TRANSACTION_REPLACEMENT_UNDERPRICED",
    "nethermind": "OldNonce",
    "anvil": "nonce too low",
    "ganache": "the tx doesn't have the correct nonce. account has nonce of: 6 tx has nonce of: 5",
    "ganache-mining": "transaction can't be replaced, mining has already started. (please open an issue)",
    "ganache-replaced": "transaction replaced by better transaction",
}


class _HostsRpc:
    """A node where other hosts took nonce 5 already; the pending count still says 5 once."""

    url = "fake"

    def __init__(self, answer: str, taken: int = 1) -> None:
        self.answer = answer
        self.taken = taken  # how many first broadcasts get the answer
        self.raw_sent: list[bytes] = []
        self.counts = itertools.chain([5], itertools.count(7))  # the first read, then the others' progress

    def chain_id(self) -> int:
        return 8996

    def get_transaction_count(self, address: str, block: str = "pending") -> int:
        return next(self.counts)

    def send_raw_transaction(self, raw: bytes) -> str:
        self.raw_sent.append(raw)
        if len(self.raw_sent) <= self.taken:
            raise RpcError("eth_sendRawTransaction", -32000, self.answer)
        return "0x" + keccak(raw).hex()


def _nonce_of(raw: bytes) -> int:
    import rlp

    return int.from_bytes(rlp.decode(raw)[0], "big")  # legacy transaction: [nonce, gasPrice, gas, ...]


@pytest.mark.parametrize("answer", list(TAKEN_ANSWERS.values()), ids=list(TAKEN_ANSWERS))
def test_every_nonce_taken_answer_re_reads_the_pending_count_and_re_signs(answer: str) -> None:
    rpc = _HostsRpc(answer)
    sender = TransactionSender(rpc, KEY, lock_dir=None)  # type: ignore[arg-type]
    sent = sender.send(sender.address, b"", gas=21_000, fees=FEES)
    assert [_nonce_of(raw) for raw in rpc.raw_sent] == [5, 7]
    assert sent.tx["nonce"] == 7
    assert sent.tx_hash == "0x" + keccak(rpc.raw_sent[-1]).hex()


def test_ganache_underpriced_is_a_taken_nonce_only_when_the_pending_count_moved_past_it() -> None:
    """ganache answers ``transaction underpriced`` when its pool holds another host's transaction with our
    nonce (seen on the london hardfork); geth answers the same for a price under its floor, where nothing
    holds the nonce: re-signing with a higher nonce would leave a gap, so the same nonce is tried again
    (a bounded number of times) until the pending count moves past it, and raised if it never does."""
    taken = _HostsRpc("transaction underpriced")
    sender = TransactionSender(taken, KEY, lock_dir=None)  # type: ignore[arg-type]
    assert sender.send(sender.address, b"", gas=21_000, fees=FEES).tx["nonce"] == 7
    assert [_nonce_of(raw) for raw in taken.raw_sent] == [5, 7]
    # the other host's transaction is counted only at the second re-read (it was being mined)
    late = _HostsRpc("transaction underpriced", taken=2)
    late.counts = iter([5, 5, 6])
    sender = TransactionSender(late, KEY, lock_dir=None)  # type: ignore[arg-type]
    assert sender.send(sender.address, b"", gas=21_000, fees=FEES).tx["nonce"] == 6
    assert [_nonce_of(raw) for raw in late.raw_sent] == [5, 5, 6]
    floor = _HostsRpc("transaction underpriced", taken=100)
    floor.counts = iter([5] * 20)
    sender = TransactionSender(floor, KEY, lock_dir=None)  # type: ignore[arg-type]
    with pytest.raises(RpcError, match="transaction underpriced"):
        sender.send(sender.address, b"", gas=21_000, fees=FEES)
    assert [_nonce_of(raw) for raw in floor.raw_sent] == [5] * tx_module.UNDERPRICED_ATTEMPTS


def test_a_nonce_other_hosts_keep_taking_is_tried_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tx_module, "NONCE_PAUSE_MAX", 0.001)
    rpc = _HostsRpc(TAKEN_ANSWERS["ganache-mining"], taken=100)
    sender = TransactionSender(rpc, KEY, lock_dir=None)  # type: ignore[arg-type]
    with pytest.raises(RpcError, match="mining has already started"):
        sender.send(sender.address, b"", gas=21_000, fees=FEES)
    assert len(rpc.raw_sent) == tx_module.NONCE_ATTEMPTS
    nonces = [_nonce_of(raw) for raw in rpc.raw_sent]
    assert nonces == sorted(set(nonces))  # each attempt a higher nonce: no nonce signed twice
    assert tx_module.NONCE_ATTEMPTS > tx_module.UNDERPRICED_ATTEMPTS  # a burst of other hosts' sends


def test_nonce_contention_is_bounded_in_time_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tx_module, "NONCE_RETRY_SECONDS", 0.0)
    rpc = _HostsRpc(TAKEN_ANSWERS["ganache-mining"], taken=100)
    sender = TransactionSender(rpc, KEY, lock_dir=None)  # type: ignore[arg-type]
    with pytest.raises(RpcError, match="mining has already started"):
        sender.send(sender.address, b"", gas=21_000, fees=FEES)
    assert len(rpc.raw_sent) == 1


@pytest.mark.parametrize("answer", ["already known", "AlreadyKnown", "Known transaction"])
def test_already_known_is_this_very_transaction_and_is_not_re_signed(answer: str) -> None:
    rpc = _HostsRpc(answer)
    sender = TransactionSender(rpc, KEY, lock_dir=None)  # type: ignore[arg-type]
    sent = sender.send(sender.address, b"", gas=21_000, fees=FEES)
    assert len(rpc.raw_sent) == 1
    assert sent.tx["nonce"] == 5
    assert not is_nonce_taken(RpcError("eth_sendRawTransaction", -32000, answer))


def test_the_same_call_signed_on_two_hosts_with_the_same_nonce_gives_two_transactions() -> None:
    """So that "already known" can only ever mean our own bytes, never another host's identical call."""
    first, second = _HostsRpc("", taken=0), _HostsRpc("", taken=0)
    hashes = set()
    for rpc in (first, second):
        sender = TransactionSender(rpc, KEY, lock_dir=None)  # type: ignore[arg-type]
        hashes.add(sender.send(sender.address, b"\x01", gas=50_000, fees=FEES).tx_hash)
    assert _nonce_of(first.raw_sent[0]) == _nonce_of(second.raw_sent[0]) == 5
    assert len(hashes) == 2


class _LostFirstBroadcast(JsonRpcClient):
    """The node never gets this host's first broadcast (answered as accepted), as when a load-balanced
    RPC drops it; meanwhile another host's transaction takes its nonce."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.raw_sent: list[bytes] = []

    def send_raw_transaction(self, raw: bytes) -> str:
        self.raw_sent.append(raw)
        if len(self.raw_sent) == 1:
            return "0x" + keccak(raw).hex()
        return super().send_raw_transaction(raw)


def _mine_until(rpc: JsonRpcClient, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        rpc.request("evm_mine", [])


#: The quiet spell after which the idle-chain tests count a replaced transaction as dead (the product's
#: :data:`~airflow_provider_ocean.chain.tx.REPLACED_IDLE_CHAIN` is 10 s; the logic is the same at 3 s).
TEST_IDLE_CHAIN = 3.0


def _race(sandbox: dict[str, Any], **sender_args: Any) -> tuple[TransactionSender, Any, str, int]:
    """Host A sends a payment that never lands; host B's transaction then takes its nonce."""
    url, key = sandbox["rpc_url"], sandbox["other"]["key"]
    host_a = TransactionSender(_LostFirstBroadcast(url), key, lock_dir=None, **sender_args)
    host_b = TransactionSender(JsonRpcClient(url), key, lock_dir=None)
    recipient = Account.create().address
    sent = host_a.send(recipient, b"", value=12_345, gas=21_000, what="pay the recipient")
    host_b.transact(host_b.address, b"", gas=21_000, what="host B's own transaction")
    return host_a, sent, recipient, sent.tx["nonce"]


@pytest.mark.chain
class TestATransactionWhoseNonceAnotherHostUsed:
    @pytest.mark.parametrize("chain", ["busy", "idle"])
    def test_is_noticed_within_seconds_and_sent_again_once(
        self, sandbox: dict[str, Any], chain: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On a busy chain once two blocks stand on the other transaction (no shallow reorganisation can
        bring ours back), on an idle development chain after a quiet spell; either way long before the
        receipt timeout, and the recipient is paid once."""
        if chain == "idle":
            monkeypatch.setattr(tx_module, "REPLACED_IDLE_CHAIN", TEST_IDLE_CHAIN)
        rpc = JsonRpcClient(sandbox["rpc_url"])
        host_a, sent, recipient, nonce = _race(sandbox, receipt_timeout=60, rebroadcast_interval=600)
        assert rpc.get_transaction_count(host_a.address, "latest") == nonce + 1  # B's took it
        stop = threading.Event()
        if chain == "busy":  # a block every half second, as a public chain makes them
            miner = threading.Thread(
                target=lambda: [rpc.request("evm_mine", []) for _ in iter(lambda: stop.wait(0.5), True)]
            )
            miner.start()
        started = time.monotonic()
        try:
            receipt = host_a.wait(sent)
        finally:
            stop.set()
        waited = time.monotonic() - started
        assert receipt["transactionHash"] != sent.tx_hash
        assert int(receipt["status"], 16) == 1
        assert rpc.get_transaction_receipt(sent.tx_hash) is None  # the first one never lands ...
        assert rpc.get_balance(recipient) == 12_345  # ... and the recipient is paid exactly once
        assert rpc.get_transaction_count(host_a.address, "latest") == nonce + 2
        limit = 8 if chain == "busy" else tx_module.REPLACED_IDLE_CHAIN + 8
        assert waited < limit, f"noticed after {waited:.1f} s"
        if chain == "idle":  # not before the quiet spell
            assert waited >= tx_module.REPLACED_IDLE_CHAIN, f"noticed after {waited:.1f} s"
        print(f"\nreplaced transaction on a {chain} chain noticed and re-sent in {waited:.1f} s")

    def test_control_without_the_check_it_waits_for_the_receipt_timeout(
        self, sandbox: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """What the check replaces: a transaction whose nonce is gone is waited on until the timeout."""
        monkeypatch.setattr(TransactionSender, "replaced_by_another", lambda self, sent: False)
        host_a, sent, recipient, _ = _race(sandbox, receipt_timeout=4, rebroadcast_interval=600)
        with pytest.raises(ReceiptTimeoutError):
            host_a.wait(sent)
        assert JsonRpcClient(sandbox["rpc_url"]).get_balance(recipient) == 0

    def test_a_nonce_that_keeps_going_to_others_gives_up_without_paying(
        self, sandbox: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(tx_module, "MAX_RESENDS", 0)
        monkeypatch.setattr(tx_module, "REPLACED_IDLE_CHAIN", TEST_IDLE_CHAIN)  # no miner: an idle chain
        host_a, sent, recipient, nonce = _race(sandbox, receipt_timeout=60, rebroadcast_interval=600)
        with pytest.raises(TransactionReplacedError, match=f"nonce {nonce} was used by another"):
            host_a.wait(sent)
        assert JsonRpcClient(sandbox["rpc_url"]).get_balance(recipient) == 0
