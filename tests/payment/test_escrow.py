"""Payer-side Escrow calls (``airflow_provider_ocean.payment.escrow``) against the real Escrow on the
sandbox chain.

Every test works with fresh wallets funded from ``other`` (ETH + OCEAN), so balances and authorizations of
different tests never interact. A fresh "node" wallet plays the payee when a test needs existing locks.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
from eth_abi import encode

from airflow_provider_ocean.chain import abi
from airflow_provider_ocean.chain import escrow_abi as ea
from airflow_provider_ocean.chain.errors import RpcError
from airflow_provider_ocean.chain.rpc import JsonRpcClient
from airflow_provider_ocean.chain.tx import TransactionSender
from airflow_provider_ocean.exceptions import OceanFeeCapError, OceanInsufficientFundsError
from airflow_provider_ocean.payment import escrow as esc
from ocean_sandbox import contracts
from tests.sandbox import ocean_client as oc

pytestmark = pytest.mark.chain

ONE = 10**18
# docs/reference/ocean-node-api.md §7 (selectors and topics recomputed by the reference)
REFERENCE_SELECTORS = {
    ea.ESCROW_DEPOSIT: "0x47e7ef24",
    ea.ESCROW_AUTHORIZE: "0x15fac1cc",
    ea.ESCROW_GET_USER_FUNDS: "0x3a8ae44f",
    ea.ESCROW_GET_AUTHORIZATIONS: "0xdc697a5a",
    ea.ESCROW_GET_LOCKS: "0x7d3d2336",
    ea.ESCROW_WITHDRAW: "0xde6d6d96",
}
REFERENCE_TOPICS = {
    "Deposit": "0x5548c837ab068cf56a2c2479df0882a4922fd203edb7517321831d95078c5f62",
    "Auth": "0x118cb6c6a02e26bfdb39cab8d70573499942c4ee3f0d7616d3c4100fe9163d9d",
    "Lock": "0xb746b0421b0b98debe76bb312ec9fb701603af22ddb107f7e639b0187e4ff880",
    "Claimed": "0x77aeb72af8b0efaf7fd8c746d2fb78653ae489dd88dea7a851cb354e4cdc4eed",
    "Canceled": "0x5bcb66e310a3be233290f5d61fba34fe58a0e8045b4678714af2c7986f3a5e50",
}


def _canonical(param: dict[str, Any]) -> str:
    kind = param["type"]
    if kind.startswith("tuple"):
        return "(" + ",".join(_canonical(c) for c in param["components"]) + ")" + kind[5:]
    return kind


def signatures_of(artifact: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for entry in artifact["abi"]:
        if entry["type"] in ("function", "event"):
            signature = f"{entry['name']}({','.join(_canonical(p) for p in entry['inputs'])})"
            out[signature] = entry
    return out


def npm_escrow() -> dict[str, dict[str, Any]]:
    """The deployed sandbox Escrow's ABI: npm @oceanprotocol/contracts 2.6.0."""
    return signatures_of(contracts.escrow_artifact())


def pypi_escrow() -> dict[str, dict[str, Any]]:
    """The PyPI ocean-contracts 3.1.0 Escrow's ABI (deployed on some chains, not in the sandbox)."""
    return signatures_of(json.loads((resources.files("artifacts") / "Escrow.json").read_text()))


def test_selectors_and_topics_match_the_escrow_artifact() -> None:
    signatures = npm_escrow()
    for signature, selector in REFERENCE_SELECTORS.items():
        assert signature in signatures, signature
        assert "0x" + abi.selector(signature).hex() == selector
    for call, selector in ea.NODE_ESCROW_CALLS:
        assert call in signatures, call
        assert "0x" + abi.selector(call).hex() == selector
    # outputs decoded by the module
    outputs = {name: signatures[name]["outputs"] for name in (ea.ESCROW_GET_USER_FUNDS, ea.ESCROW_GET_LOCKS)}
    assert _canonical(outputs[ea.ESCROW_GET_USER_FUNDS][0]) == ea.FUNDS_TYPE
    assert _canonical(outputs[ea.ESCROW_GET_LOCKS][0]) == ea.LOCK_TYPE_2X
    auth_out = signatures[ea.ESCROW_GET_AUTHORIZATIONS]["outputs"][0]
    assert _canonical(auth_out) == ea.AUTH_TYPE
    for event in (ea.DEPOSIT_EVENT, ea.LOCK_EVENT, ea.CLAIMED_EVENT, ea.CANCELED_EVENT, ea.AUTH_EVENT):
        entry = signatures[event.signature]
        assert tuple(p["indexed"] for p in entry["inputs"]) == event.indexed
        assert tuple(p["name"] for p in entry["inputs"]) == event.names
        assert event.topic0 == REFERENCE_TOPICS[event.name]
    # the PyPI 3.1.0 claim is not a function of the deployed Escrow
    assert ea.ESCROW_CLAIM_LOCK_AND_WITHDRAW_3X not in signatures
    assert ea.AUTH_EVENT_3X.signature not in signatures


def test_both_escrow_interfaces_share_what_the_payer_calls() -> None:
    """What escrow_abi's docstring says of npm 2.6.0 vs PyPI 3.1.0, checked on both artifacts."""
    npm, pypi = npm_escrow(), pypi_escrow()
    shared = (
        ea.ESCROW_DEPOSIT,
        ea.ESCROW_WITHDRAW,
        ea.ESCROW_AUTHORIZE,
        ea.ESCROW_GET_USER_FUNDS,
        ea.ESCROW_GET_AUTHORIZATIONS,
        ea.ESCROW_GET_LOCKS,
        ea.ESCROW_CREATE_LOCK,
        ea.ESCROW_CANCEL_EXPIRED_LOCK,
        ea.ESCROW_CANCEL_EXPIRED_LOCKS,
    )
    for call in shared:
        assert call in npm, call
        assert call in pypi, call
    for name in (ea.ESCROW_GET_USER_FUNDS, ea.ESCROW_GET_AUTHORIZATIONS):
        assert npm[name]["outputs"] == pypi[name]["outputs"]
    assert _canonical(pypi[ea.ESCROW_GET_LOCKS]["outputs"][0]) == ea.LOCK_TYPE_3X
    for event in (ea.DEPOSIT_EVENT, ea.LOCK_EVENT, ea.CLAIMED_EVENT, ea.CANCELED_EVENT):
        assert event.signature in npm
        assert event.signature in pypi
    assert ea.AUTH_EVENT_3X.signature in pypi
    assert ea.AUTH_EVENT.signature not in pypi
    # the claims differ: a released node's 5-argument claim has no function on the 3.1.0 Escrow
    assert ea.ESCROW_CLAIM_LOCK_AND_WITHDRAW not in pypi
    assert ea.ESCROW_CLAIM_LOCKS_AND_WITHDRAW not in pypi
    assert ea.ESCROW_CLAIM_LOCK_AND_WITHDRAW_3X in pypi


def _lock_words(*locks: tuple[Any, ...]) -> bytes:
    return b"".join(w.to_bytes(32, "big") for w in (32, len(locks))) + b"".join(
        encode(["uint256", "address", "uint256", "uint256", "address", "uint256"][: len(lk)], list(lk))
        for lk in locks
    )


def test_decode_locks_reads_both_layouts() -> None:
    payer, token = oc.Wallet.create().address, oc.Wallet.create().address
    two = [(7, payer, 5, 100, token), (8, payer, 6, 200, token)]
    assert ea.decode_locks(_lock_words(*two)) == [(*lk, None) for lk in two]
    three = [(7, payer, 5, 100, token, 40)]
    assert ea.decode_locks(_lock_words(*three)) == three
    assert ea.decode_locks(_lock_words()) == []
    # the answers a real chain gives are the same bytes eth_abi makes
    assert _lock_words(*two) == encode([ea.LOCK_TYPE_2X], [two])
    assert _lock_words(*three) == encode([ea.LOCK_TYPE_3X], [three])
    for bad in (b"", _lock_words(*two)[:-32], _lock_words(*two) + b"\0" * 32):
        with pytest.raises(ValueError):
            ea.decode_locks(bad)


def dispatched_selectors(runtime: bytes) -> set[bytes]:
    """The 4-byte selectors a dispatcher compares with (``PUSH4 <selector> EQ``, opcode-aligned)."""
    found, pc = set(), 0
    while pc < len(runtime):
        op = runtime[pc]
        if op == 0x63 and runtime[pc + 5 : pc + 6] == b"\x14":  # PUSH4 … EQ
            found.add(runtime[pc + 1 : pc + 5])
        pc += 1 + (op - 0x5F if 0x60 <= op <= 0x7F else 0)
    return found


def test_deployed_escrow_answers_every_call_a_node_makes(sandbox: dict[str, Any]) -> None:
    rpc = JsonRpcClient(sandbox["rpc_url"])
    escrow, ocean = sandbox["addresses"]["Escrow"], sandbox["addresses"]["Ocean"]
    dispatched = dispatched_selectors(rpc.get_code(escrow))
    for call, selector in ea.NODE_ESCROW_CALLS:
        assert bytes.fromhex(selector[2:]) in dispatched, call
    assert abi.selector(ea.ESCROW_CLAIM_LOCK_AND_WITHDRAW_3X) not in dispatched
    # a node's claim of a lock that does not exist reaches the claim and fails with the contract's reason
    payee, payer = sandbox["provider_address"], oc.Wallet.create().address
    claim = abi.encode_call(ea.ESCROW_CLAIM_LOCK_AND_WITHDRAW, 12345, ocean, payer, 1, b"{}")
    with pytest.raises(RpcError) as refused:
        rpc.call(escrow, claim, sender=payee)
    assert abi.decode_revert_reason(refused.value.data) == "Lock not found"
    # the 3.1.0 claim has no function here: a bare revert, no reason
    claim_3x = abi.encode_call(ea.ESCROW_CLAIM_LOCK_AND_WITHDRAW_3X, 12345, ocean, payer, 1, b"{}", 0, [])
    with pytest.raises(RpcError) as missing:
        rpc.call(escrow, claim_3x, sender=payee)
    assert abi.decode_revert_reason(missing.value.data) is None


@pytest.fixture(scope="module")
def lab(sandbox: dict[str, Any]) -> oc.Lab:
    return oc.Lab(sandbox)


@pytest.fixture
def user(lab: oc.Lab) -> oc.Wallet:
    return lab.new_user(ocean=100)


def payer_for(sandbox: dict[str, Any], wallet: oc.Wallet) -> tuple[esc.EscrowPayer, JsonRpcClient]:
    rpc = JsonRpcClient(sandbox["rpc_url"])
    return esc.EscrowPayer(rpc, sandbox["addresses"]["Escrow"], TransactionSender(rpc, wallet.key)), rpc


def test_first_job_deposits_approves_and_authorizes(
    sandbox: dict[str, Any], lab: oc.Lab, user: oc.Wallet
) -> None:
    payer, _rpc = payer_for(sandbox, user)
    node = oc.Wallet.create().address
    ocean = lab.ocean
    plan = payer.prepare(token=ocean, payee=node, amount=3 * ONE, min_lock_seconds=4200, max_fee=5 * ONE)
    assert plan.deposit == 3 * ONE
    assert plan.approve == 3 * ONE
    assert plan.authorize == (3 * ONE, 4200, 1)
    assert set(plan.transactions) == {"approve", "deposit", "authorize"}
    assert payer.funds(user.address, ocean) == esc.EscrowFunds(3 * ONE, 0)
    (auth,) = payer.authorizations(user.address, ocean, node)
    assert (auth.max_locked_amount, auth.max_lock_seconds, auth.max_lock_counts) == (3 * ONE, 4200, 1)
    assert auth.fits(3 * ONE, 4200)
    assert oc.balance_of(lab.chain, ocean, user.address) == 97 * ONE
    # the Auth event of the deployed (npm 2.x) contract has no token
    receipt = lab.chain.receipt(plan.transactions["authorize"])
    (event,) = abi.decode_events(ea.AUTH_EVENT, receipt)
    assert (event["payer"], event["payee"], event["maxLockedAmount"]) == (user.address, node, 3 * ONE)
    assert abi.decode_events(ea.AUTH_EVENT_3X, receipt) == []

    again = payer.prepare(token=ocean, payee=node, amount=3 * ONE, min_lock_seconds=4200)
    assert not again.needs_transactions
    assert again.transactions == {}


def test_top_up_only_the_shortfall_and_keep_larger_limits(
    sandbox: dict[str, Any], lab: oc.Lab, user: oc.Wallet
) -> None:
    payer, _rpc = payer_for(sandbox, user)
    node = oc.Wallet.create().address
    ocean = lab.ocean
    payer.prepare(token=ocean, payee=node, amount=2 * ONE, min_lock_seconds=9000, lock_counts=5)
    plan = payer.plan(payer=user.address, token=ocean, payee=node, amount=5 * ONE, min_lock_seconds=4000)
    assert plan.deposit == 3 * ONE  # available 2, needs 5
    # maxLockedAmount raised to fit, the larger maxLockSeconds and maxLockCounts are kept
    assert plan.authorize == (5 * ONE, 9000, 5)
    payer.execute(plan)
    assert payer.funds(user.address, ocean).available == 5 * ONE
    smaller = payer.plan(payer=user.address, token=ocean, payee=node, amount=1 * ONE, min_lock_seconds=100)
    assert smaller.deposit == 0
    assert smaller.authorize is None


def test_limits_account_for_existing_locks(sandbox: dict[str, Any], lab: oc.Lab, user: oc.Wallet) -> None:
    payer, rpc = payer_for(sandbox, user)
    node = lab.new_user()  # the payee that holds locks
    ocean = lab.ocean
    payer.prepare(token=ocean, payee=node.address, amount=4 * ONE, min_lock_seconds=3600)
    # the node locks 4 OCEAN for a job, exactly as Ocean Node does at start
    receipt = oc.ok(
        lab.chain.send(
            node.key,
            sandbox["addresses"]["Escrow"],
            abi.encode_call(
                ea.ESCROW_CREATE_LOCK, esc.job_id_hash("job-1"), ocean, user.address, 4 * ONE, 3600
            ),
        )
    )
    assert receipt
    (auth,) = payer.authorizations(user.address, ocean, node.address)
    assert (auth.current_locked_amount, auth.current_locks) == (4 * ONE, 1)
    assert not auth.fits(1 * ONE, 3600)
    (lock,) = [
        lk for lk in payer.locks(node.address, payer=user.address) if lk.job_id == esc.job_id_hash("job-1")
    ]
    assert (lock.amount, lock.payer, lock.token) == (4 * ONE, user.address, ocean)
    assert lock.start_time is None  # the npm 2.x Escrow does not record it
    # cancelling a lock that has not expired is a no-op, not a revert (a node sends it for unpaid jobs)
    cancel = abi.encode_call(ea.ESCROW_CANCEL_EXPIRED_LOCK, lock.job_id, ocean, user.address, node.address)
    oc.ok(lab.chain.send(node.key, sandbox["addresses"]["Escrow"], cancel))
    assert [lk.job_id for lk in payer.locks(node.address, payer=user.address)].count(lock.job_id) == 1
    plan = payer.plan(
        payer=user.address, token=ocean, payee=node.address, amount=2 * ONE, min_lock_seconds=3600
    )
    assert plan.deposit == 2 * ONE  # the 4 locked are not available
    assert plan.authorize == (6 * ONE, 3600, 2)  # currentLocked + amount, currentLocks + 1
    payer.execute(plan)
    assert payer.authorizations(user.address, ocean, node.address)[0].fits(2 * ONE, 3600)


def test_fee_cap_refuses_before_spending(sandbox: dict[str, Any], lab: oc.Lab, user: oc.Wallet) -> None:
    payer, rpc = payer_for(sandbox, user)
    node = oc.Wallet.create().address
    nonce_before = rpc.get_transaction_count(user.address, "latest")
    balance_before = oc.balance_of(lab.chain, lab.ocean, user.address)
    with pytest.raises(OceanFeeCapError, match="above max_fee"):
        payer.prepare(token=lab.ocean, payee=node, amount=10 * ONE, min_lock_seconds=60, max_fee=9 * ONE)
    assert rpc.get_transaction_count(user.address, "latest") == nonce_before
    assert oc.balance_of(lab.chain, lab.ocean, user.address) == balance_before
    assert payer.authorizations(user.address, lab.ocean, node) == []


def test_missing_tokens_are_refused_before_spending(sandbox: dict[str, Any], lab: oc.Lab) -> None:
    poor = lab.new_user(ocean=1)
    payer, rpc = payer_for(sandbox, poor)
    with pytest.raises(OceanInsufficientFundsError, match="holds"):
        payer.prepare(token=lab.ocean, payee=oc.Wallet.create().address, amount=2 * ONE, min_lock_seconds=60)
    assert rpc.get_transaction_count(poor.address, "latest") == 0


def test_withdraw_returns_unlocked_funds(sandbox: dict[str, Any], lab: oc.Lab, user: oc.Wallet) -> None:
    payer, _rpc = payer_for(sandbox, user)
    payer.prepare(token=lab.ocean, payee=oc.Wallet.create().address, amount=2 * ONE, min_lock_seconds=60)
    payer.withdraw(lab.ocean, 2 * ONE)
    assert payer.funds(user.address, lab.ocean) == esc.EscrowFunds(0, 0)
    assert oc.balance_of(lab.chain, lab.ocean, user.address) == 100 * ONE


def test_a_node_claims_with_the_five_argument_claim(
    sandbox: dict[str, Any], lab: oc.Lab, user: oc.Wallet
) -> None:
    """The single claim a real node falls back to (escrow.ts ``claimLock``), on the deployed Escrow."""
    payer, rpc = payer_for(sandbox, user)
    node = lab.new_user()
    ocean, escrow = lab.ocean, sandbox["addresses"]["Escrow"]
    payer.prepare(token=ocean, payee=node.address, amount=4 * ONE, min_lock_seconds=3600)
    job = esc.job_id_hash("job-claimed")
    lock = abi.encode_call(ea.ESCROW_CREATE_LOCK, job, ocean, user.address, 4 * ONE, 3600)
    oc.ok(lab.chain.send(node.key, escrow, lock))
    claim = abi.encode_call(ea.ESCROW_CLAIM_LOCK_AND_WITHDRAW, job, ocean, user.address, 3 * ONE, b'{"a":1}')
    receipt = lab.chain.receipt(oc.ok(lab.chain.send(node.key, escrow, claim)))
    (claimed,) = abi.decode_events(ea.CLAIMED_EVENT, receipt, emitter=escrow)
    assert (claimed["payee"], claimed["jobId"], claimed["payer"]) == (node.address, job, user.address)
    assert (claimed["amount"], claimed["proof"]) == (3 * ONE, b'{"a":1}')
    # the payer keeps what was not claimed; the payee is paid (minus the router's OPC fee) and withdraws
    assert payer.funds(user.address, ocean) == esc.EscrowFunds(1 * ONE, 0)
    router = sandbox["addresses"]["Router"]
    (fee_rate,) = abi.decode_output(
        ["uint256"], rpc.call(router, abi.encode_call("getOPCFee(address)", ocean))
    )
    assert oc.balance_of(lab.chain, ocean, node.address) == 3 * ONE - 3 * ONE * fee_rate // ONE
    assert payer.funds(node.address, ocean) == esc.EscrowFunds(0, 0)
    assert not [lk for lk in payer.locks(node.address, payer=user.address) if lk.job_id == job]
