"""``ocean-sandbox up --hardfork``: the chain rules each choice gives, and the project's transactions on them.

``london`` is the default because the reference client's local setup runs it (ocean.py
``READMEs/setup-local.md``: ``export GANACHE_FORK=london`` "for support of type 2 transactions" before barge's
``start_ocean.sh``); ``istanbul`` is barge's own default (``start_ocean.sh``:
``GANACHE_FORK=${GANACHE_FORK:-"istanbul"}``). The session sandbox (``tests/conftest.py``) is started
without a choice, so it shows the default; one istanbul sandbox is started for this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ocean.chain import abi
from airflow_provider_ocean.chain.rpc import JsonRpcClient
from airflow_provider_ocean.chain.tx import TransactionSender, call_function
from ocean_sandbox import cli
from ocean_sandbox.runtime import HardforkMismatchError, Sandbox

pytestmark = pytest.mark.chain


@pytest.fixture(scope="module")
def istanbul(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A second sandbox, on istanbul, for this module only."""
    state_dir = tmp_path_factory.mktemp("ocean-sandbox-istanbul")
    box = Sandbox(state_dir, rpc_port=0, provider_port=0, receipt_timeout=5.0, hardfork="istanbul")
    try:
        yield {**box.up(), "sandbox": box}
    finally:
        box.down()


def approve_with_the_project_client(info: dict[str, Any]) -> dict[str, Any]:
    """An ``approve`` sent with the project's chain client (``chain/tx.py``); returns the receipt."""
    rpc = JsonRpcClient(info["rpc_url"])
    sender = TransactionSender(rpc, info["other"]["key"])
    receipt = sender.transact(
        info["addresses"]["Ocean"],
        abi.encode_call(abi.ERC20_APPROVE, info["assets"]["dataset"]["datatoken"], 321),
        what="approve",
    )
    assert int(receipt["status"], 16) == 1
    (allowance,) = call_function(
        rpc,
        info["addresses"]["Ocean"],
        abi.ERC20_ALLOWANCE,
        (info["other"]["address"], info["assets"]["dataset"]["datatoken"]),
        ["uint256"],
    )
    assert allowance == 321
    return receipt


def test_the_default_is_london_with_a_base_fee_and_type_2_transactions(sandbox: dict[str, Any]) -> None:
    assert sandbox["hardfork"] == "london"
    rpc = JsonRpcClient(sandbox["rpc_url"])
    latest = rpc.get_block("latest")
    assert int(latest["baseFeePerGas"], 16) > 0
    fees = TransactionSender(rpc, sandbox["other"]["key"]).fee_fields()
    assert set(fees) == {"maxFeePerGas", "maxPriorityFeePerGas"}
    assert fees["maxFeePerGas"] >= int(latest["baseFeePerGas"], 16)
    receipt = approve_with_the_project_client(sandbox)
    assert receipt["type"] == "0x2"
    assert int(receipt["effectiveGasPrice"], 16) >= int(
        rpc.get_block(receipt["blockNumber"])["baseFeePerGas"], 16
    )


def test_istanbul_has_no_base_fee_and_legacy_transactions(istanbul: dict[str, Any]) -> None:
    assert istanbul["hardfork"] == "istanbul"
    rpc = JsonRpcClient(istanbul["rpc_url"])
    assert "baseFeePerGas" not in rpc.get_block("latest")
    assert TransactionSender(rpc, istanbul["other"]["key"]).fee_fields() == {"gasPrice": 1}
    receipt = approve_with_the_project_client(istanbul)
    assert receipt.get("type", "0x0") == "0x0"


def test_the_hardfork_stays_with_the_chain(istanbul: dict[str, Any]) -> None:
    state_dir = Path(istanbul["state_dir"])
    with pytest.raises(HardforkMismatchError, match="runs istanbul; `ocean-sandbox down --purge` first"):
        Sandbox(state_dir, hardfork="london").up()
    assert Sandbox(state_dir).up()["hardfork"] == "istanbul"  # no choice: the chain's own


def test_the_cli_offers_the_two_choices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--state-dir", str(tmp_path), "up", "--hardfork", "shanghai"])
    assert exited.value.code == 2
    assert "invalid choice: 'shanghai' (choose from 'london', 'istanbul')" in capsys.readouterr().err
