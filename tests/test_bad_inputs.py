"""Bad inputs: each is refused with a specific exception and message, and nothing is spent.

Every case snapshots, for the account it uses, the native balance, the transaction count, the OCEAN
balance and the balance of every sample datatoken, straight from the chain, before and after; all must be
unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from eth_account import Account

from airflow_provider_ocean.exceptions import (
    OceanConfigError,
    OceanConnectionError,
    OceanError,
    OceanFeeCapError,
    OceanInsufficientFundsError,
    OceanJobNotFoundError,
    OceanProviderError,
    OceanValidationError,
)
from airflow_provider_ocean.hooks.ocean import OceanComputeHook
from tests.faults import harness

pytestmark = pytest.mark.chain

CONN_ID = "ocean_bad_inputs"
UNKNOWN_DID = "did:op:" + "0" * 64
ONE = 10**18


def closed_port() -> int:
    """A 127.0.0.1 port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Env:
    """What a case may use: the sandbox, accounts by role, hooks and operators on a connection."""

    def __init__(self, sandbox: dict[str, Any], accounts: dict[str, tuple[str, str]]) -> None:
        self.sandbox = sandbox
        self.assets = sandbox["assets"]
        self.accounts = accounts
        self.account = "consumer"
        self.paid_env = sandbox["environments"]["paid"]
        self.free_env = sandbox["environments"]["free"]

    @property
    def key(self) -> str:
        return self.accounts[self.account][1]

    @property
    def did(self) -> str:
        return self.assets["dataset"]["did"]

    @property
    def algo(self) -> dict[str, Any]:
        return {"did": self.assets["algorithm"]["did"]}

    def connect(self, *, password: str | None = None, **overrides: Any) -> str:
        harness.set_connection(
            CONN_ID,
            harness.conn_json(self.sandbox, password=self.key if password is None else password, **overrides),
        )
        return CONN_ID

    def hook(self, *, password: str | None = None, **overrides: Any) -> OceanComputeHook:
        return OceanComputeHook(self.connect(password=password, **overrides), retry_limit=2, retry_delay=0.05)

    def run(self, datasets: Any = None, algorithm: Any = None, **kwargs: Any) -> Any:
        """``run_compute`` with the consumer defaults for what is not given."""
        return self.hook().run_compute(
            [self.did] if datasets is None else datasets,
            self.algo if algorithm is None else algorithm,
            **kwargs,
        )

    def operator(self, **kwargs: Any) -> Any:
        """``OceanComputeStartOperator.execute`` with already-rendered template values."""
        from airflow_provider_ocean.operators.compute import OceanComputeStartOperator

        kwargs.setdefault("datasets", [self.did])
        kwargs.setdefault("algorithm", self.algo)
        operator = OceanComputeStartOperator(
            task_id="start", ocean_conn_id=self.connect(), wait_for_completion=False, **kwargs
        )
        return operator.execute(harness.task_context("start"))

    def balances(self) -> dict[str, int]:
        address = self.accounts[self.account][0]
        rpc = self.sandbox["rpc_url"]
        tokens = {"OCEAN": self.sandbox["addresses"]["Ocean"]}
        tokens.update({name: asset["datatoken"] for name, asset in self.assets.items()})
        out = {name: harness.token_balance(rpc, token, address) for name, token in tokens.items()}
        out["wei"] = harness.eth_balance(rpc, address)
        out["nonce"] = harness.tx_count(rpc, address)
        return out

    def shift_clock(self, seconds: float) -> None:
        url = self.sandbox["provider_url"] + "/sandbox/admin/clock"
        requests.post(url, json={"offset": seconds}, timeout=10).raise_for_status()


@pytest.fixture(scope="module")
def accounts(sandbox: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The consumer, plus fresh accounts lacking exactly one thing (funded by the publisher)."""
    rpc = sandbox["rpc_url"]
    publisher = sandbox["publisher"]["key"]
    out = {"consumer": (sandbox["consumer"]["address"], sandbox["consumer"]["key"])}
    datatokens = [sandbox["assets"][name]["datatoken"] for name in ("dataset", "algorithm")]
    for role, eth, dt in (("no_datatokens", True, False), ("no_gas", False, True), ("no_ocean", True, True)):
        account = Account.create()
        if eth:
            harness.send_transaction(rpc, publisher, account.address, value=10 * ONE, gas=21_000)
        if dt:
            for token in datatokens:
                harness.send_transaction(
                    rpc,
                    publisher,
                    token,
                    data=harness.erc20_call_data("mint(address,uint256)", account.address, 5 * ONE),
                )
        out[role] = (account.address, "0x" + bytes(account.key).hex())
    return out


@pytest.fixture(scope="module")
def env(sandbox: dict[str, Any], accounts: dict[str, tuple[str, str]]) -> Iterator[Env]:
    import os

    variable = f"AIRFLOW_CONN_{CONN_ID.upper()}"
    saved = os.environ.get(variable)
    yield Env(sandbox, accounts)
    if saved is None:
        os.environ.pop(variable, None)
    else:
        os.environ[variable] = saved


@dataclasses.dataclass
class Case:
    id: str
    call: Callable[[Env], Any]
    exc: type[BaseException]
    match: str
    account: str = "consumer"
    xfail: str | None = None


def raw(**overrides: Any) -> dict[str, Any]:
    algorithm: dict[str, Any] = {"rawcode": "print('hi')", "container": dict(harness.CONTAINER)}
    for key, value in overrides.items():
        if key in harness.CONTAINER:
            if value is None:
                algorithm["container"].pop(key)
            else:
                algorithm["container"][key] = value
        elif value is None:
            algorithm.pop(key, None)
        else:
            algorithm[key] = value
    return algorithm


def expired_order(e: Env) -> Any:
    """Pay (outside the measured window would be better, but the order must be fresh), expire, start."""
    hook = e.hook()
    payment = e._prepaid  # type: ignore[attr-defined]
    e.shift_clock(4000)  # past the service timeout (3600 s) and the fee
    try:
        return hook.start_compute([e.did], e.algo, payment=payment)
    finally:
        e.shift_clock(0)


CASES = [
    # -- DIDs ---------------------------------------------------------------------------------------
    Case("did-malformed", lambda e: e.run(["not-a-did"]), OceanValidationError, "must look like 'did:op:"),
    Case("did-unknown", lambda e: e.run([UNKNOWN_DID]), OceanValidationError, "was not found in Aquarius"),
    Case(
        "did-unknown-algorithm", lambda e: e.run(algorithm=UNKNOWN_DID), OceanValidationError, "was not found"
    ),
    Case(
        "did-algorithm-malformed",
        lambda e: e.run(algorithm="algo:42"),
        OceanValidationError,
        "An algorithm DID",
    ),
    Case(
        "did-unknown-additional-dataset",
        lambda e: e.run([e.did, UNKNOWN_DID]),
        OceanValidationError,
        "was not found",
    ),
    Case(
        "dataset-dict-without-did",
        lambda e: e.run([{"service_id": "1"}]),
        OceanValidationError,
        "A dataset DID must look like 'did:op:...', got ''",
    ),
    Case("dataset-not-a-did-type", lambda e: e.run([42]), OceanValidationError, "must be a DID, a dict"),
    # -- services -----------------------------------------------------------------------------------
    Case(
        "first-dataset-access-service",
        lambda e: e.run([{"did": e.did, "service_id": "0"}]),
        OceanValidationError,
        "must be ordered through a compute service",
    ),
    Case(
        "dataset-without-compute-service",
        lambda e: e.run([e.assets["algorithm"]["did"]]),
        OceanValidationError,
        "has no compute service",
    ),
    Case(
        "unknown-service-id",
        lambda e: e.run([{"did": e.did, "service_id": "99"}]),
        OceanValidationError,
        "has no service '99'",
    ),
    Case(
        "unknown-algorithm-service-id",
        lambda e: e.run(algorithm={"did": e.assets["algorithm"]["did"], "service_id": "7"}),
        OceanValidationError,
        "has no service '7'",
    ),
    Case(
        "algorithm-is-a-dataset",
        lambda e: e.run(algorithm=e.did),
        OceanValidationError,
        "is not an algorithm asset",
    ),
    # -- environments -------------------------------------------------------------------------------
    Case(
        "unknown-environment",
        lambda e: e.run(environment="nope"),
        OceanValidationError,
        "'nope' does not exist",
    ),
    # -- algorithms ---------------------------------------------------------------------------------
    Case(
        "raw-algorithm-refused", lambda e: e.run(algorithm=raw()), OceanValidationError, "allowRawAlgorithm"
    ),
    Case(
        "untrusted-algorithm",
        lambda e: e.run(
            [e.assets["dataset_trusted"]["did"]], {"did": e.assets["algorithm_untrusted"]["did"]}
        ),
        OceanValidationError,
        "is not in the publisherTrustedAlgorithms of",
    ),
    Case(
        "raw-missing-entrypoint",
        lambda e: e.run(algorithm=raw(entrypoint=None)),
        OceanValidationError,
        "entrypoint",
    ),
    Case("raw-missing-image", lambda e: e.run(algorithm=raw(image=None)), OceanValidationError, "image"),
    Case(
        "raw-missing-checksum",
        lambda e: e.run(algorithm=raw(checksum=None)),
        OceanValidationError,
        "checksum",
    ),
    Case(
        "raw-bad-checksum-prefix",
        lambda e: e.run(algorithm=raw(checksum="md5:" + "0" * 32)),
        OceanValidationError,
        "must start with 'sha256:'",
    ),
    Case(
        "raw-rawcode-and-url",
        lambda e: e.run(algorithm=raw(url="http://127.0.0.1:1/a.py")),
        OceanValidationError,
        "exactly one of rawcode or url",
    ),
    Case(
        "raw-neither-rawcode-nor-url",
        lambda e: e.run(algorithm=raw(rawcode=None)),
        OceanValidationError,
        "exactly one of rawcode or url",
    ),
    Case(
        "algorithm-did-and-rawcode",
        lambda e: e.run(algorithm={"did": e.assets["algorithm"]["did"], "rawcode": "x"}),
        OceanValidationError,
        "either as a DID or as rawcode/url",
    ),
    Case(
        "algocustomdata-not-an-object",
        lambda e: e.run(algorithm={**e.algo, "algocustomdata": [1, 2]}),
        OceanValidationError,
        "algocustomdata must be a JSON object",
    ),
    Case(
        "userdata-unparsable",
        lambda e: e.run([{"did": e.did, "userdata": "{not json"}]),
        OceanValidationError,
        "must be a JSON object",
    ),
    # -- keys ---------------------------------------------------------------------------------------
    Case(
        "key-short",
        lambda e: e.hook(password="0x1234").run_compute([e.did], e.algo),
        OceanConfigError,
        "not a private key",
    ),
    Case(
        "key-non-hex",
        lambda e: e.hook(password="0x" + "zz" * 32).run_compute([e.did], e.algo),
        OceanConfigError,
        "not a private key",
    ),
    Case(
        "key-63-digits",
        lambda e: e.hook(password="a" * 63).run_compute([e.did], e.algo),
        OceanConfigError,
        "not a private key",
    ),
    Case(
        "key-empty",
        lambda e: e.hook(password="").run_compute([e.did], e.algo),
        OceanConfigError,
        "has no password",
    ),
    # -- connection ---------------------------------------------------------------------------------
    Case(
        "wrong-chain-id",
        lambda e: e.hook(chain_id=1).run_compute([e.did], e.algo),
        OceanValidationError,
        "has no compute environment on chain 1",
    ),
    Case(
        "chain-id-not-a-number",
        lambda e: e.hook(chain_id="mainnet").run_compute([e.did], e.algo),
        OceanConfigError,
        "chain_id must be an integer",
    ),
    Case(
        "unreachable-provider",
        lambda e: e.hook(
            host=f"http://127.0.0.1:{closed_port()}", aquarius_url=e.sandbox["provider_url"]
        ).run_compute([e.did], e.algo),
        OceanConnectionError,
        "Provider discovery (GET /): cannot reach",
    ),
    Case(
        "unreachable-aquarius",
        lambda e: e.hook(aquarius_url=f"http://127.0.0.1:{closed_port()}").run_compute([e.did], e.algo),
        OceanConnectionError,
        "resolve DDO",
    ),
    Case(
        "unreachable-rpc",
        lambda e: e.hook(rpc_url=f"http://127.0.0.1:{closed_port()}").run_compute([e.did], e.algo),
        OceanConnectionError,
        "unreachable",
    ),
    Case(
        "negative-timeout",
        lambda e: e.hook(timeout=-1).run_compute([e.did], e.algo),
        OceanConfigError,
        "timeout must be positive",
    ),
    Case(
        "verify-ssl-garbage",
        lambda e: e.hook(verify_ssl="maybe").run_compute([e.did], e.algo),
        OceanConfigError,
        "verify_ssl must be true or false",
    ),
    Case(
        "unsupported-backend",
        lambda e: e.hook(backend="carrier-pigeon").run_compute([e.did], e.algo),
        OceanConfigError,
        "not supported",
    ),
    # -- payment ------------------------------------------------------------------------------------
    Case("expired-order-as-transfer-tx", expired_order, OceanProviderError, "order_invalid"),
    Case(
        "insufficient-datatokens",
        lambda e: e.run(),
        OceanInsufficientFundsError,
        "datatoken",
        account="no_datatokens",
    ),
    Case(
        "insufficient-fee-token",
        lambda e: e.run(environment=e.paid_env, max_fee=100 * ONE),
        OceanInsufficientFundsError,
        "holds 0 base units of token",
        account="no_ocean",
    ),
    Case("insufficient-gas", lambda e: e.run(), OceanInsufficientFundsError, "wei", account="no_gas"),
    Case(
        "fee-above-max-fee",
        lambda e: e.run(environment=e.paid_env, max_fee=1),
        OceanFeeCapError,
        "above max_fee",
    ),
    Case(
        "zero-max-fee-on-paid-env",
        lambda e: e.run(environment=e.paid_env, max_fee=0),
        OceanFeeCapError,
        "above max_fee",
    ),
    Case(
        "valid-until-in-the-past",
        lambda e: e.run(valid_until=int(time.time()) - 60),
        OceanValidationError,
        "must be in the future",
    ),
    Case(
        "transfer-tx-ids-wrong-type",
        lambda e: e.run(transfer_tx_ids=42),
        OceanValidationError,
        "transfer_tx_ids must be a dict",
    ),
    Case(
        "transfer-tx-ids-too-many",
        lambda e: e.run(transfer_tx_ids=["0x" + "1" * 64, "0x" + "2" * 64]),
        OceanValidationError,
        "2 dataset transfer tx ids given for 1 datasets",
    ),
    Case(
        "acquire-mode-unknown",
        lambda e: e.run(acquire_datatokens="steal"),
        OceanValidationError,
        "acquire must be one of",
    ),
    # -- bad templated values (operator) ------------------------------------------------------------
    Case(
        "template-datasets-empty-string",
        lambda e: e.operator(datasets=""),
        OceanValidationError,
        "A dataset DID must look like 'did:op:...', got ''",
    ),
    Case(
        "template-datasets-None-string",
        lambda e: e.operator(datasets="None"),
        OceanValidationError,
        "got 'None'",
    ),
    Case(
        "template-datasets-None",
        lambda e: e.operator(datasets=None),
        OceanValidationError,
        "`datasets` is empty",
    ),
    Case(
        "template-datasets-empty-list",
        lambda e: e.operator(datasets=[]),
        OceanValidationError,
        "`datasets` is empty",
    ),
    Case(
        "template-algorithm-plain-string",
        lambda e: e.operator(algorithm="station statistics"),
        OceanValidationError,
        "An algorithm DID must look like",
    ),
    Case(
        "template-algorithm-empty",
        lambda e: e.operator(algorithm=""),
        OceanValidationError,
        "An algorithm DID must look like 'did:op:...', got ''",
    ),
    Case(
        "template-algorithm-None-string",
        lambda e: e.operator(algorithm="None"),
        OceanValidationError,
        "'None'",
    ),
    Case("template-algorithm-number", lambda e: e.operator(algorithm=7), OceanValidationError, "not int"),
    Case(
        "template-negative-order-validity",
        lambda e: e.operator(order_validity=-60),
        OceanValidationError,
        "must be positive",
    ),
    Case(
        "template-order-validity-text",
        lambda e: e.operator(order_validity="soon"),
        OceanValidationError,
        "order_validity",
    ),
    Case(
        "template-max-fee-text",
        lambda e: e.operator(max_fee="cheap"),
        OceanValidationError,
        "max_fee",
    ),
    Case(
        "template-max-fee-negative",
        lambda e: e.operator(max_fee=-1),
        OceanValidationError,
        "max_fee",
        account="no_datatokens",
    ),
    Case(
        "template-order-validity-timedelta-negative",
        lambda e: e.operator(order_validity=timedelta(minutes=-5)),
        OceanValidationError,
        "must be positive",
    ),
    # -- jobs ---------------------------------------------------------------------------------------
    Case("unknown-job-id", lambda e: e.hook().get_job_status("f" * 32), OceanJobNotFoundError, "No job"),
    Case(
        "negative-result-index",
        lambda e: e.hook().download_result("f" * 32, -1, __import__("io").BytesIO()),
        OceanValidationError,
        "cannot be negative",
    ),
]


def _params() -> list[Any]:
    params = []
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


@pytest.fixture
def prepaid(env: Env, request: pytest.FixtureRequest) -> None:
    """For the expired-order case: real orders paid before the measured window."""
    case: Case = request.node.callspec.params["case"]
    if case.id == "expired-order-as-transfer-tx":
        env.account = "consumer"
        env._prepaid = env.hook().pay_for_compute([env.did], env.algo)  # type: ignore[attr-defined]


def test_case_count() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", _params())
def test_bad_input_is_refused_without_spending(env: Env, case: Case, prepaid: None) -> None:
    env.account = case.account
    before = env.balances()
    with pytest.raises(case.exc, match=re.escape(case.match)) as raised:
        case.call(env)
    assert isinstance(raised.value, OceanError), f"{type(raised.value).__name__} is not an OceanError"
    after = env.balances()
    assert after == before, f"spent: { {k: after[k] - before[k] for k in before if after[k] != before[k]} }"
    assert env.key[2:].lower() not in str(raised.value).lower()
    json.dumps(str(raised.value))
