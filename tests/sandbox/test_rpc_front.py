"""The sandbox chain's JSON-RPC front (``ocean_sandbox/rpc_front.py``): its gate, without a chain.

The gate must never let an ``eth_estimateGas`` run while ganache mines (ganache 7.9.2 then never answers the
estimate), must serve estimates first come first served, must not starve mining, and must never hold the
chain longer than its hold limit. ``benchmarks/sandbox_load.py --compare`` measures it against ganache.
"""

from __future__ import annotations

import threading
import time

import pytest
from eth_account import Account

from ocean_sandbox.rpc_front import MiningGate, classify, transaction_nonce

KEY = "0x" + "42" * 32
CONTAINER = {
    "entrypoint": "python $ALGO",
    "image": "python",
    "tag": "3.11-slim",
    "checksum": "sha256:" + "0" * 64,
}


def test_requests_are_classified_by_their_methods():
    assert classify([{"method": "eth_sendRawTransaction"}]) == "mine"
    assert classify([{"method": "eth_estimateGas"}, {"method": "eth_sendRawTransaction"}]) == "mine"
    assert classify([{"method": "eth_estimateGas"}, {"method": "eth_getBalance"}]) == "estimate"
    assert classify([{"method": "eth_call"}, {"method": "eth_getTransactionReceipt"}]) == "free"
    assert classify([{"method": "evm_mine"}]) == "mine"
    assert classify([]) == "free"


@pytest.mark.parametrize("nonce", [0, 1, 127, 128, 255, 256, 70_000])
def test_the_nonce_of_a_legacy_transaction(nonce):
    tx = {"to": "0x" + "11" * 20, "value": 1, "gas": 21_000, "gasPrice": 1, "nonce": nonce, "chainId": 8996}
    assert transaction_nonce(bytes(Account.sign_transaction(tx, KEY).raw_transaction)) == nonce


def test_the_nonce_of_a_typed_transaction():
    tx = {
        "to": "0x" + "11" * 20,
        "value": 1,
        "gas": 21_000,
        "maxFeePerGas": 2,
        "maxPriorityFeePerGas": 1,
        "nonce": 300,
        "chainId": 8996,
        "type": 2,
    }
    assert transaction_nonce(bytes(Account.sign_transaction(tx, KEY).raw_transaction)) == 300


class _Trace:
    """Records what runs at the same time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[str, int] = {"mine": 0, "estimate": 0}
        self.overlaps = 0
        self.order: list[str] = []

    def run(self, gate: MiningGate, kind: str, name: str, seconds: float) -> None:
        with gate.hold(kind):
            with self.lock:
                self.running[kind] += 1
                if self.running["mine"] and (self.running["estimate"] or self.running["mine"] > 1):
                    self.overlaps += 1
                self.order.append(name)
            time.sleep(seconds)
            with self.lock:
                self.running[kind] -= 1


def _start(trace: _Trace, gate: MiningGate, kind: str, name: str, seconds: float) -> threading.Thread:
    thread = threading.Thread(target=trace.run, args=(gate, kind, name, seconds))
    thread.start()
    return thread


def test_mining_never_overlaps_an_estimate_or_another_mining():
    gate, trace = MiningGate(max_estimates=2), _Trace()
    threads = [
        _start(trace, gate, "mine" if i % 3 == 0 else "estimate", f"r{i}", 0.01 * (i % 4)) for i in range(30)
    ]
    for thread in threads:
        thread.join(10)
    assert trace.overlaps == 0
    assert len(trace.order) == 30
    assert gate.snapshot()["estimates_running"] == 0


def test_estimates_are_served_in_arrival_order_and_a_waiting_mining_goes_first():
    gate, trace = MiningGate(max_estimates=1), _Trace()
    first = _start(trace, gate, "estimate", "e0", 0.3)
    time.sleep(0.05)
    waiting = []
    for i in range(1, 4):
        waiting.append(_start(trace, gate, "estimate", f"e{i}", 0.01))
        time.sleep(0.05)
    waiting.append(_start(trace, gate, "mine", "m", 0.01))
    for thread in [first, *waiting]:
        thread.join(10)
    assert trace.order == ["e0", "m", "e1", "e2", "e3"]


def test_a_hold_is_released_after_the_hold_limit():
    gate = MiningGate(hold_limit=0.2)
    stuck = threading.Thread(target=_hold_forever, args=(gate,), daemon=True)
    stuck.start()
    time.sleep(0.05)
    started = time.monotonic()
    with gate.hold("estimate"):
        waited = time.monotonic() - started
    assert 0.1 < waited < 2
    assert gate.expired == 1


def test_release_lets_the_next_in_before_the_block_ends():
    gate = MiningGate()
    entered = threading.Event()

    def estimate() -> None:
        with gate.hold("estimate"):
            entered.set()

    with gate.hold("mine") as release:
        thread = threading.Thread(target=estimate)
        thread.start()
        assert not entered.wait(0.2)
        release()  # a broadcast ganache only queues: nothing is mined
        assert entered.wait(5)
    thread.join(5)


def _hold_forever(gate: MiningGate) -> None:
    with gate.hold("mine"):
        time.sleep(3)


@pytest.mark.chain
@pytest.mark.slow
def test_estimates_while_orders_are_mined_are_all_answered(sandbox):
    """Two clients estimate ``startOrder`` over and over while a third pays orders: every estimate is
    answered (straight to ganache 7.9.2, several of them never are; see ``benchmarks/sandbox_load.py``)."""
    import requests
    from eth_abi import encode

    from tests.faults import harness
    from tests.sandbox import ocean_client as oc

    lab = oc.Lab(sandbox)
    users = [lab.new_user() for _ in range(3)]
    for user in users:  # the publisher mints them datatokens (other tests spend ``other``'s)
        mint = harness.erc20_call_data("mint(address,uint256)", user.address, 1000 * oc.ONE_TOKEN)
        harness.send_transaction(
            sandbox["rpc_url"], sandbox["publisher"]["key"], lab.assets["dataset_raw"]["datatoken"], data=mint
        )
    consumer = lab.env_consumer[lab.free_env]
    meta = {"rawcode": "print('front')\n", "container": CONTAINER}

    def order_data(user: oc.Wallet) -> tuple[str, bytes]:
        response = lab.initialize(
            [lab.ref("dataset_raw")], {"meta": meta}, lab.free_env, int(time.time()) + 3600
        )
        answer = response.json()["datasets"][0]
        data = oc.START_ORDER_SELECTOR + encode(
            ["address", "uint256", oc.PROVIDER_FEE_TYPE, oc.CONSUME_MARKET_FEE_TYPE],
            [
                consumer,
                lab.assets["dataset_raw"]["service_index"],
                oc.fee_tuple(answer["providerFee"]),
                (oc.ZERO_ADDRESS, oc.ZERO_ADDRESS, 0),
            ],
        )
        return answer["datatoken"], data

    stop = threading.Event()
    answered: list[float] = []
    unanswered: list[str] = []
    paid: list[str] = []

    def estimate(user: oc.Wallet) -> None:
        datatoken, data = order_data(user)
        call = {"from": user.address, "to": datatoken, "data": oc.hex0x(data)}
        with requests.Session() as session:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_estimateGas", "params": [call]}
                    assert "result" in session.post(sandbox["rpc_url"], json=body, timeout=30).json()
                    answered.append(time.monotonic() - started)
                except requests.Timeout:
                    unanswered.append(user.address)

    def pay(user: oc.Wallet) -> None:
        while not stop.is_set():
            datatoken, data = order_data(user)
            paid.append(oc.ok(lab.chain.send(user.key, datatoken, data, gas=400_000)))

    threads = [threading.Thread(target=estimate, args=(u,)) for u in users[:2]]
    threads.append(threading.Thread(target=pay, args=(users[2],)))
    for thread in threads:
        thread.start()
    time.sleep(15)
    stop.set()
    for thread in threads:
        thread.join(60)
    worst = max(answered, default=0.0)
    print(f"\n{len(answered)} estimates answered (worst {worst:.2f} s), {len(paid)} orders mined")
    assert unanswered == []
    assert len(answered) >= 4
    assert len(paid) >= 4


def oc_container() -> dict[str, str]:
    return {
        "entrypoint": "python $ALGO",
        "image": "python",
        "tag": "3.11-slim",
        "checksum": "sha256:" + "0" * 64,
    }


@pytest.mark.chain
def test_a_future_nonce_broadcast_is_answered_at_once_and_mined_once_the_gap_is_filled(sandbox):
    """As a real node: the hash at once, the transaction queued until the nonce before it is mined (ganache
    alone, in eager mode, never answers such a broadcast); a refused one gets ganache's refusal."""
    import requests
    from eth_utils import keccak

    from tests.faults import harness

    rpc_url = sandbox["rpc_url"]
    account = Account.create()
    harness.send_transaction(rpc_url, sandbox["other"]["key"], account.address, value=10**18, gas=21_000)
    price = harness.legacy_gas_price(rpc_url)  # 1 wei on istanbul; over the base fee on london

    def broadcast(nonce: int, value: int = 1) -> tuple[dict, float, str]:
        tx = {
            "to": account.address,
            "value": value,
            "gas": 21_000,
            "gasPrice": price,
            "nonce": nonce,
            "chainId": 8996,
        }
        raw = "0x" + bytes(Account.sign_transaction(tx, account.key).raw_transaction).hex()
        started = time.monotonic()
        body = {"jsonrpc": "2.0", "id": 7, "method": "eth_sendRawTransaction", "params": [raw]}
        answer = requests.post(rpc_url, json=body, timeout=30).json()
        return answer, time.monotonic() - started, "0x" + keccak(hexstr=raw).hex()

    queued, seconds, queued_hash = broadcast(1)
    assert queued == {"jsonrpc": "2.0", "id": 7, "result": queued_hash}
    assert seconds < 10
    assert harness.rpc_call(rpc_url, "eth_getTransactionReceipt", [queued_hash]) is None
    refused, _, _ = broadcast(2, value=10**30)  # more than the account holds
    assert "insufficient funds" in refused["error"]["message"]

    filled, _, _ = broadcast(0)
    assert "result" in filled
    deadline = time.monotonic() + 30
    while harness.rpc_call(rpc_url, "eth_getTransactionReceipt", [queued_hash]) is None:
        assert time.monotonic() < deadline, "the queued transaction was not mined after the gap was filled"
        time.sleep(0.2)
    assert harness.tx_count(rpc_url, account.address) == 2
