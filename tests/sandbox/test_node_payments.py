"""The node personality's payment cron (``NodeApp.settle``) against a recording chain: which Escrow calls it
makes for each kind of ended job, and its fallbacks when a batch transaction fails.

The happy path runs on the real chain in ``test_node_api.py::test_paid_job_with_escrow`` (batch claim);
expired locks and failing batches cannot be brought about there (a lock lives an hour past the job), so
they are driven here: the calls must be exactly those a released Ocean Node makes (``NODE_ESCROW_CALLS``).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from eth_abi import decode, encode
from eth_account import Account

from airflow_provider_ocean.chain import abi
from airflow_provider_ocean.chain import escrow_abi as ea
from ocean_sandbox.node_api import NodeApp, NodeConfig, NodeStore, node_environments

ONE = 10**18
NODE = Account.create().address
OCEAN = Account.create().address
ESCROW = Account.create().address
SELECTORS = {abi.selector(signature): signature for signature, _ in ea.NODE_ESCROW_CALLS}


class Chain:
    """``eth_call`` answers (the node's locks, token decimals) and a transaction log; chosen calls revert."""

    def __init__(self) -> None:
        self.locks: list[tuple[int, str, int, int, str]] = []
        self.sent: list[tuple[str, tuple[Any, ...]]] = []
        self.failing: set[str] = set()
        self.failing_jobs: set[int] = set()

    # JsonRpcClient.call
    def call(self, to: str, data: bytes, **_: Any) -> bytes:
        if data[:4] == abi.selector(ea.ESCROW_GET_LOCKS):
            assert to == ESCROW
            assert decode(["address", "address", "address"], data[4:])[2].lower() == NODE.lower()
            return encode([ea.LOCK_TYPE_2X], [self.locks])
        assert data[:4] == abi.selector(abi.ERC20_DECIMALS)
        return encode(["uint8"], [18])

    # TransactionSender.transact
    def transact(self, to: str, data: bytes, **_: Any) -> dict[str, Any]:
        assert to == ESCROW
        signature = SELECTORS[data[:4]]  # a call a released node makes, or KeyError
        args = decode(list(abi.arg_types(signature)), data[4:])
        self.sent.append((signature, args))
        if signature in self.failing or (not isinstance(args[0], tuple) and args[0] in self.failing_jobs):
            raise RuntimeError(f"{signature} reverted")
        return {"transactionHash": f"0x{len(self.sent):064x}"}


class Engine:
    def __init__(self) -> None:
        self.facts: dict[str, dict[str, Any]] = {}
        self.statuses: dict[str, int] = {}

    def run_facts(self, job_id: str) -> dict[str, Any]:
        return self.facts[job_id]

    def set_status(self, job_id: str, status: int) -> None:
        self.statuses[job_id] = status


@pytest.fixture
def node(tmp_path: Path) -> tuple[NodeApp, Chain, Engine]:
    envs = node_environments(NODE, OCEAN, 8996, 60)
    config = NodeConfig(
        base_url="http://127.0.0.1:1",
        chain_id=8996,
        node_key="0x" + "11" * 32,
        node_address=NODE,
        escrow=ESCROW,
        ocean=OCEAN,
        environments=envs,
        ddo_dir=tmp_path,
        files_dir=tmp_path,
    )
    chain, engine = Chain(), Engine()
    app = NodeApp(config, chain, chain, engine, NodeStore(tmp_path / "node.db"), None, None, None)  # type: ignore[arg-type]
    return app, chain, engine


def add_job(app: NodeApp, engine: Engine, name: str, *, paid: bool = True, ran: float = 30.0) -> int:
    """An ended job (status 71) whose algorithm ran ``ran`` seconds; returns its lock's jobId."""
    job_hash = "0x" + hashlib.sha256(name.encode()).hexdigest()
    now = time.time()
    engine.facts[name] = {
        "status": 71,
        "date_finished": f"{now:.3f}",
        "algo_start": now - ran if ran else None,
        "algo_stop": now if ran else None,
        "exit_code": 0,
    }
    payment = {"chainId": 8996, "token": OCEAN, "lockTx": "0x" + "ab" * 32, "amount": str(10 * ONE)}
    app.store.add_job(
        job_id=name,
        engine_job_id=name,
        owner=Account.create().address,
        environment=app.config.environments[1]["id"],
        job_id_hash=job_hash,
        is_free=0 if paid else 1,
        max_job_duration=60,
        resources=json.dumps([{"id": "cpu", "amount": 1, "price": 2}]),
        payment=json.dumps(payment) if paid else None,
        date_created=f"{now:.3f}",
    )
    return int(job_hash, 16)


def lock_of(app: NodeApp, job_id: int, *, expired: bool = False) -> tuple[int, str, int, int, str]:
    owner = next(j["owner"] for j in app.store.jobs() if int(j["job_id_hash"], 16) == job_id)
    return (job_id, owner, 10 * ONE, int(time.time()) + (-10 if expired else 3600), OCEAN)


def payment_of(app: NodeApp, name: str) -> dict[str, Any]:
    return json.loads(app.store.jobs("job_id = ?", (name,))[0]["payment"])


def test_one_batch_claim_for_all_ended_jobs(node: tuple[NodeApp, Chain, Engine]) -> None:
    app, chain, engine = node
    ids = [add_job(app, engine, name) for name in ("a", "b")]
    chain.locks = [lock_of(app, job_id) for job_id in ids]
    app.settle()
    ((signature, (jobs, tokens, payers, amounts, proofs)),) = chain.sent
    assert signature == ea.ESCROW_CLAIM_LOCKS_AND_WITHDRAW
    assert list(jobs) == ids
    # 1 cpu at 2 per minute; the 30 s run is billed as the environment's minJobDuration (60 s)
    assert list(amounts) == [2 * ONE] * 2
    assert [json.loads(p)["jobId"] for p in proofs] == ["a", "b"]
    assert engine.statuses == {"a": 70, "b": 70}
    assert payment_of(app, "a")["claimTx"] == payment_of(app, "b")["claimTx"] == "0x" + f"{1:064x}"
    assert payment_of(app, "a")["cost"] == pytest.approx(2.0)


def test_failed_batch_falls_back_to_one_claim_per_job(node: tuple[NodeApp, Chain, Engine]) -> None:
    app, chain, engine = node
    ids = [add_job(app, engine, name) for name in ("a", "b")]
    chain.locks = [lock_of(app, job_id) for job_id in ids]
    chain.failing = {ea.ESCROW_CLAIM_LOCKS_AND_WITHDRAW}
    chain.failing_jobs = {ids[1]}
    app.settle()
    assert [s for s, _ in chain.sent] == [
        ea.ESCROW_CLAIM_LOCKS_AND_WITHDRAW,
        ea.ESCROW_CLAIM_LOCK_AND_WITHDRAW,
        ea.ESCROW_CLAIM_LOCK_AND_WITHDRAW,
    ]
    job, token, payer, amount, proof = chain.sent[1][1]
    assert (job, token.lower(), amount) == (ids[0], OCEAN.lower(), 2 * ONE)
    assert json.loads(proof)["jobId"] == "a"
    # the job whose claim failed keeps its status for the next pass
    assert engine.statuses == {"a": 70}
    assert app.store.jobs("job_id = 'b'")[0]["settled"] == 0


def test_expired_and_unknown_locks_are_cancelled_missing_ones_marked_nolock(
    node: tuple[NodeApp, Chain, Engine],
) -> None:
    app, chain, engine = node
    expired = add_job(app, engine, "expired")
    add_job(app, engine, "no-lock")
    add_job(app, engine, "free", paid=False)
    stranger = (int(hashlib.sha256(b"gone").hexdigest(), 16), Account.create().address, ONE, 1, OCEAN)
    chain.locks = [lock_of(app, expired, expired=True), stranger]
    app.settle()
    ((signature, (jobs, tokens, payers, payees)),) = chain.sent
    assert signature == ea.ESCROW_CANCEL_EXPIRED_LOCKS
    assert list(jobs) == [expired, stranger[0]]
    assert [p.lower() for p in payees] == [NODE.lower()] * 2
    assert engine.statuses == {"expired": 70, "no-lock": 70, "free": 70}
    assert payment_of(app, "expired")["cancelTx"] == "0x" + f"{1:064x}"
    assert (payment_of(app, "no-lock")["claimTx"], payment_of(app, "no-lock")["cancelTx"]) == ("nolock",) * 2


def test_failed_batch_cancel_falls_back_to_one_cancel_per_lock(node: tuple[NodeApp, Chain, Engine]) -> None:
    app, chain, engine = node
    expired = add_job(app, engine, "expired")
    chain.locks = [lock_of(app, expired, expired=True)]
    chain.failing = {ea.ESCROW_CANCEL_EXPIRED_LOCKS}
    app.settle()
    assert [s for s, _ in chain.sent] == [ea.ESCROW_CANCEL_EXPIRED_LOCKS, ea.ESCROW_CANCEL_EXPIRED_LOCK]
    assert chain.sent[1][1][0] == expired
    assert chain.sent[1][1][3].lower() == NODE.lower()
    assert engine.statuses == {"expired": 70}


def test_free_jobs_settle_without_reading_the_chain(node: tuple[NodeApp, Chain, Engine]) -> None:
    app, chain, engine = node
    add_job(app, engine, "free", paid=False)
    chain.call = None  # type: ignore[assignment,method-assign]  # any chain read would fail
    app.settle()
    assert chain.sent == []
    assert engine.statuses == {"free": 70}
