"""Exactly once under faults, against the real sandbox (ganache + Ocean v4 contracts + Provider v4 server).

A start whose answer is lost must not lead to a second job, and a start that did not happen must not
be mistaken for an older job that used the same orders. Faults a real server cannot be asked to produce
(an answer lost after the request was processed, a gateway 502) are injected in the client's HTTP
session; everything else (jobs, orders, nonces, the duplicate-nonce 503) is the sandbox's real behaviour.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests

from airflow_provider_ocean.backends import recovery
from airflow_provider_ocean.chain import abi
from airflow_provider_ocean.chain.tx import call_function
from airflow_provider_ocean.exceptions import (
    OceanConnectionError,
    OceanOrderInUseError,
    OceanProviderError,
    OceanStartOutcomeUnknownError,
)
from airflow_provider_ocean.hooks.ocean import OceanComputeHook
from airflow_provider_ocean.models import JobStatus
from airflow_provider_ocean.signing import NonceAllocator, Signer, parse_stored_nonce
from tests import exactly_once_support as support

pytestmark = pytest.mark.chain

START = ("POST", "/api/services/compute")
STATUS = ("GET", "/api/services/compute")


@pytest.fixture(scope="module", autouse=True)
def datatokens(sandbox: dict[str, Any]) -> None:
    support.top_up(sandbox, ("dataset", "algorithm", "dataset_raw"), 30)


@pytest.fixture
def hook(ocean_conn: str, monkeypatch: pytest.MonkeyPatch) -> OceanComputeHook:
    monkeypatch.setattr(recovery, "START_LOOKUP_DELAY", 0.1)
    return OceanComputeHook(ocean_conn, retry_delay=0.1)


def inputs(sandbox: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    return [sandbox["assets"]["dataset"]["did"]], {"did": sandbox["assets"]["algorithm"]["did"]}


def job_ids(hook: OceanComputeHook) -> set[str]:
    return {j.job_id for j in hook.list_jobs()}


def orders_of(payment: dict[str, Any]) -> list[str]:
    orders = payment["datasets"] + ([payment["algorithm"]] if payment.get("algorithm") else [])
    return [o["transfer_tx_id"] for o in orders]


def logged(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> str:
    """Everything logged so far: stdlib records and what structlog (the hook's logger) printed."""
    out, err = capfd.readouterr()
    return "\n".join([caplog.text, out, err])


def wait_terminal(hook: OceanComputeHook, job_id: str, timeout: float = 60) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        job = hook.get_job_status(job_id)
        if job.is_terminal:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still at {job.status}"
        time.sleep(0.2)


def fault(
    monkeypatch: pytest.MonkeyPatch,
    hook: OceanComputeHook,
    route: tuple[str, str],
    *,
    send: bool,
    error: Exception | None = None,
    response: tuple[int, str] | None = None,
    times: int = 1,
) -> list[requests.Response | None]:
    """Make the next ``times`` requests to ``route`` fail: after really sending them (``send``: the server
    processed them, the answer is lost) or without sending them; with ``error`` or a fake ``response``."""
    session = hook.provider.session
    real = session.request
    seen: list[requests.Response | None] = []

    def request(method: str, url: str, **kwargs: Any) -> requests.Response:
        if (method, requests.utils.urlparse(url).path) != route or len(seen) >= times:
            return real(method, url, **kwargs)
        seen.append(real(method, url, **kwargs) if send else None)
        if error is not None:
            raise error
        assert response is not None
        fake = requests.Response()  # as a real answer: the body is read from the connection
        fake.status_code, fake.raw, fake.url = response[0], io.BytesIO(response[1].encode()), url
        fake.headers["Content-Type"] = "application/json"
        return fake

    monkeypatch.setattr(session, "request", request)
    return seen


class TestUnknownStartOutcome:
    @pytest.mark.parametrize(
        "error",
        [
            requests.ReadTimeout("read timed out"),
            requests.ConnectionError("('Connection aborted.', RemoteDisconnected('closed'))"),
        ],
        ids=["read-timeout", "connection-reset"],
    )
    def test_answer_lost_after_the_job_started_returns_that_job(self, hook, sandbox, monkeypatch, error):
        datasets, algorithm = inputs(sandbox)
        payment = hook.pay_for_compute(datasets, algorithm)
        before = job_ids(hook)
        seen = fault(monkeypatch, hook, START, send=True, error=error)
        job = hook.start_compute(datasets, algorithm, payment=payment)
        assert seen[0] is not None
        assert seen[0].status_code == 200  # the Provider did start it
        created = job_ids(hook) - before
        assert created == {job.job_id}  # exactly one job, and it is the one returned
        assert job.agreement_id in orders_of(payment)

    def test_duplicate_nonce_503_comes_after_the_job_started_and_that_job_is_returned(
        self, hook, sandbox, caplog, capfd
    ):
        datasets, algorithm = inputs(sandbox)
        payment = hook.pay_for_compute(datasets, algorithm)
        before = job_ids(hook)
        hook.provider.nonces = _ReusesStoredNonce()  # a client that sends the stored nonce again
        with caplog.at_level(logging.WARNING):
            job = hook.start_compute(datasets, algorithm, payment=payment)
        assert "Cannot create duplicates in the database" in logged(caplog, capfd)
        assert job_ids(hook) - before == {job.job_id}
        assert job.agreement_id in orders_of(payment)

    def test_a_start_that_never_reached_the_provider_is_not_taken_for_an_older_job(
        self, hook, sandbox, monkeypatch
    ):
        datasets, algorithm = inputs(sandbox)
        payment = hook.pay_for_compute(datasets, algorithm)
        older = hook.start_compute(datasets, algorithm, payment=payment)
        wait_terminal(hook, older.job_id)  # the same orders may now start another job
        before = job_ids(hook)
        fault(monkeypatch, hook, START, send=False, error=requests.ReadTimeout("read timed out"))
        with pytest.raises(OceanConnectionError, match="no answer"):
            hook.start_compute(datasets, algorithm, payment=payment)
        assert job_ids(hook) == before
        # what the snapshot of older jobs prevents: by its orders alone the older job would match
        assert hook.find_started_job(orders_of(payment)).job_id == older.job_id
        assert hook.find_started_job(orders_of(payment), known_job_ids=[older.job_id]) is None

    def test_a_gateway_error_without_a_job_raises_the_original_error(
        self, hook, sandbox, monkeypatch, caplog, capfd
    ):
        datasets, algorithm = inputs(sandbox)
        payment = hook.pay_for_compute(datasets, algorithm)
        before = job_ids(hook)
        fault(monkeypatch, hook, START, send=False, response=(502, '{"error": "bad gateway"}'))
        with caplog.at_level(logging.WARNING), pytest.raises(OceanProviderError) as info:
            hook.start_compute(datasets, algorithm, payment=payment)
        assert info.value.status == 502
        assert "No job was created by this start attempt" in logged(caplog, capfd)
        assert job_ids(hook) == before

    def test_provider_unreachable_after_the_start_raises_outcome_unknown_then_the_job_is_found(
        self, hook, sandbox, monkeypatch
    ):
        datasets, algorithm = inputs(sandbox)
        payment = hook.pay_for_compute(datasets, algorithm)
        before = job_ids(hook)
        session = hook.provider.session
        real = session.request
        fault(monkeypatch, hook, START, send=True, error=requests.ReadTimeout("read timed out"))
        lossy = session.request

        def down_after_start(method: str, url: str, **kwargs: Any) -> requests.Response:
            path = requests.utils.urlparse(url).path
            if (method, path) == STATUS and started:
                raise requests.ConnectionError("connection refused")
            if (method, path) == START:
                started.append(True)
            return lossy(method, url, **kwargs)

        started: list[bool] = []
        monkeypatch.setattr(session, "request", down_after_start)
        with pytest.raises(OceanStartOutcomeUnknownError) as info:
            hook.start_compute(datasets, algorithm, payment=payment)
        error = info.value
        assert set(error.transfer_tx_ids) == set(orders_of(payment))
        assert error.started_at <= time.time()
        monkeypatch.setattr(session, "request", real)  # the Provider is back (the next try)
        [created] = job_ids(hook) - before
        found = hook.find_started_job(
            error.transfer_tx_ids, known_job_ids=error.known_job_ids, started_at=error.started_at
        )
        assert found is not None
        assert found.job_id == created

    def test_a_refused_start_is_final_and_not_looked_up(self, hook, sandbox, caplog, capfd):
        datasets, algorithm = inputs(sandbox)
        payment = hook.pay_for_compute(datasets, algorithm)
        before = job_ids(hook)
        with caplog.at_level(logging.WARNING), pytest.raises(OceanProviderError) as info:
            # the dataset does not allow raw algorithms: a 400, before anything starts
            hook.start_compute(datasets, support.QUICK_RAW, payment=payment)
        assert info.value.status == 400
        assert "outcome of the start is unknown" not in logged(caplog, capfd)
        assert job_ids(hook) == before


class _ReusesStoredNonce(NonceAllocator):
    """A broken client: sends the Provider's stored nonce text again (equal passes the check, then 503)."""

    @contextmanager
    def reserve(self, provider_url: str, address: str, fetch_stored: Any, **_: Any) -> Iterator[str]:
        yield str(fetch_stored())


class _FakeTaskInstance:
    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}
        self.task_id = "start"

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = json.loads(json.dumps(value))  # XCom values must be JSON


def test_order_in_use_is_a_clear_error_and_the_operator_pays_one_new_order(hook, sandbox, ocean_conn):
    from airflow_provider_ocean.operators.compute import OceanComputeStartOperator

    raw = sandbox["assets"]["dataset_raw"]
    payment = hook.pay_for_compute([raw["did"]], support.SLOW_RAW)
    running = hook.start_compute([raw["did"]], support.SLOW_RAW, payment=payment)
    [order] = orders_of(payment)
    assert running.agreement_id == order

    with pytest.raises(OceanOrderInUseError) as info:  # what an overlapping run reusing the orders hits
        hook.start_compute([raw["did"]], support.SLOW_RAW, payment=payment)
    assert info.value.in_use_by == [running.job_id]
    assert info.value.transfer_tx_ids == [order]
    assert running.job_id in str(info.value)
    assert "pay a new order" in str(info.value)

    operator = OceanComputeStartOperator(
        task_id="start", datasets=[raw["did"]], algorithm=support.SLOW_RAW, ocean_conn_id=ocean_conn
    )
    context: dict[str, Any] = {"ti": _FakeTaskInstance()}
    held = _balance(hook, raw["datatoken"])
    job, sent, _environment = operator._start(context, [raw["did"]], payment)
    assert job.job_id != running.job_id
    assert job.agreement_id != order
    assert sent == [job.agreement_id]
    assert _balance(hook, raw["datatoken"]) == held - support.ONE  # exactly one new order
    assert context["ti"].xcoms["ocean_payment"]["datasets"][0]["transfer_tx_id"] == job.agreement_id
    for job_id in (running.job_id, job.job_id):
        hook.stop_job(job_id)


def _balance(hook: OceanComputeHook, token: str) -> int:
    return int(call_function(hook.rpc, token, abi.ERC20_BALANCE_OF, (hook.consumer_address,), ["uint256"])[0])


def test_secrets_never_reach_logs_exceptions_xcom_or_trigger_kwargs(
    hook, sandbox, monkeypatch, caplog, capfd, ocean_conn
):
    """Run the paths that handle faults and audit everything they produce for the key and signatures."""
    from airflow_provider_ocean.operators.compute import OceanComputeStartOperator
    from airflow_provider_ocean.triggers.ocean import OceanComputeJobTrigger

    signatures: list[str] = []
    real_sign = Signer.sign

    def recording_sign(self: Signer, message: str) -> str:
        signature = real_sign(self, message)
        signatures.append(signature)
        return signature

    monkeypatch.setattr(Signer, "sign", recording_sign)
    produced: list[str] = []
    datasets, algorithm = inputs(sandbox)
    caplog.set_level(logging.DEBUG)

    payment = hook.pay_for_compute(datasets, algorithm)
    produced.append(json.dumps(payment))
    attempts: list[dict[str, Any]] = []
    # 1. answer lost after the start (lookup path)
    real_request = hook.provider.session.request
    fault(monkeypatch, hook, START, send=True, error=requests.ReadTimeout("read timed out"))
    job = hook.start_compute(datasets, algorithm, payment=payment, on_attempt=attempts.append)
    monkeypatch.setattr(hook.provider.session, "request", real_request)
    wait_terminal(hook, job.job_id)
    # 2. a refused (stale) nonce, re-signed once; then the duplicate-nonce 503
    hook.provider.nonces = _StaleOnce()
    job2 = hook.start_compute(datasets, algorithm, payment=payment, on_attempt=attempts.append)
    wait_terminal(hook, job2.job_id)
    hook.provider.nonces = _ReusesStoredNonce()
    job3 = hook.start_compute(datasets, algorithm, payment=payment, on_attempt=attempts.append)
    hook.provider.nonces = NonceAllocator()
    # 3. a signature the Provider rejects (it echoes the signature in its error)
    monkeypatch.setattr(Signer, "sign", lambda self, message: _foreign_signature(message, signatures))
    with pytest.raises(OceanProviderError) as rejected:
        hook.stop_job(job3.job_id)
    produced.append(str(rejected.value) + repr(rejected.value.body) + repr(rejected.value.errors))
    monkeypatch.setattr(Signer, "sign", recording_sign)
    # 4. the outcome-unknown error, a stop, a result download
    error = OceanStartOutcomeUnknownError(
        "x", transfer_tx_ids=orders_of(payment), started_at=time.time(), known_job_ids=[job.job_id]
    )
    produced.append(str(error))
    wait_terminal(hook, job3.job_id)
    hook.stop_job(job3.job_id)
    finished = hook.get_job_status(job.job_id)
    if finished.results:
        hook.download_result(job.job_id, 0, sandbox_tmp(sandbox))
    # 5. what the operator stores and pushes, and what the trigger carries
    operator = OceanComputeStartOperator(
        task_id="start", datasets=datasets, algorithm=algorithm, ocean_conn_id=ocean_conn
    )
    produced.append(json.dumps(operator._job_ref(job, orders_of(payment), payment["environment"])))
    produced.append(json.dumps(attempts))
    produced.append(
        json.dumps(OceanComputeJobTrigger(job_id=job.job_id, ocean_conn_id=ocean_conn).serialize())
    )
    produced.append(repr(hook) + repr(hook.signer) + repr(hook.sender) + repr(hook.provider))

    out, err = capfd.readouterr()
    produced += [caplog.text, out, err]
    key = sandbox["consumer"]["key"].lower().removeprefix("0x")
    assert len(signatures) >= 5
    text = "\n".join(produced).lower()
    assert key not in text
    leaked = [s for s in signatures if s.lower().removeprefix("0x") in text]
    for signature in leaked:  # say where, to fix it
        bare = signature.lower().removeprefix("0x")
        where = next(t for t in produced if bare in t.lower())
        index = where.lower().index(bare)
        print("LEAK:", where[max(0, index - 300) : index + 200])
    assert leaked == []
    assert "cannot create duplicates" in text  # the audit did see the fault paths' messages
    assert "refused nonce" in text


class _StaleOnce(NonceAllocator):
    """Sends one nonce below the stored one (another client got ahead), then behaves."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def next_nonce(self, provider_url: str, address: str, stored: Any, **kwargs: Any) -> str:
        self.calls += 1
        if self.calls == 1:
            return str(parse_stored_nonce(stored) - 1)
        return super().next_nonce(provider_url, address, stored, **kwargs)


def _foreign_signature(message: str, record: list[str]) -> str:
    from eth_account import Account
    from eth_account.messages import encode_defunct
    from eth_utils import keccak

    signature = Account.from_key("0x" + "42" * 32).sign_message(
        encode_defunct(primitive=keccak(text=message))
    )
    value = "0x" + signature.signature.hex().removeprefix("0x")
    record.append(value)
    return value


def sandbox_tmp(sandbox: dict[str, Any]) -> Any:
    import tempfile

    return tempfile.mkdtemp(prefix="ocean-result-")
