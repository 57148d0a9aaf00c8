"""Obtaining missing datatokens (``airflow_provider_ocean.payment.acquire``): through the order payer
against the fake chain of tests/payment/fakes.py, and the acquirer's planning on its own."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi import decode
from eth_utils import to_checksum_address

from airflow_provider_ocean.chain import abi
from airflow_provider_ocean.exceptions import OceanInsufficientFundsError, OceanValidationError
from airflow_provider_ocean.payment.acquire import Acquisition, DatatokenAcquirer
from tests.payment.fakes import (
    DISPENSER,
    DT1,
    ENGINE,
    FRE,
    OCEAN,
    ONE,
    PAYER,
    ZERO,
    FakeChain,
    funded,
    payer_for,
    start_request,
)


class TestThroughThePayer:
    def test_bad_acquire_mode(self):
        with pytest.raises(OceanValidationError):
            payer_for(funded(), acquire="steal")

    def test_dispenser_fills_the_gap(self):
        chain = funded()
        chain.balances[(DT1, PAYER)] = 0
        chain.dispensers[DT1] = [DISPENSER]
        [paid] = payer_for(chain, acquire="dispenser").pay([start_request()], consumer=ENGINE)
        assert [FakeChain._kind(s.tx["data"]) for s in chain.sent] == ["dispense", "start"]
        datatoken, amount, destination = decode(
            ["address", "uint256", "address"], chain.sent[0].tx["data"][4:]
        )
        assert (to_checksum_address(datatoken), amount, to_checksum_address(destination)) == (DT1, ONE, PAYER)
        assert paid.action == "start"

    def test_no_dispenser(self):
        chain = funded()
        chain.balances[(DT1, PAYER)] = 0
        with pytest.raises(OceanInsufficientFundsError, match="no dispenser"):
            payer_for(chain, acquire="dispenser").pay([start_request()], consumer=ENGINE)
        assert chain.sent == []

    def test_fixed_rate_purchase_under_the_price_cap(self):
        chain = funded()
        chain.balances[(DT1, PAYER)] = 0
        chain.fixed_rates[DT1] = [(FRE, b"\x07" * 32)]
        payer_for(chain, acquire="fixed_rate", max_datatoken_price=3 * ONE).pay(
            [start_request()], consumer=ENGINE
        )
        assert [FakeChain._kind(s.tx["data"]) for s in chain.sent] == ["approve", "buy", "start"]
        spender, amount = decode(["address", "uint256"], chain.sent[0].tx["data"][4:])
        assert (chain.sent[0].tx["to"], to_checksum_address(spender), amount) == (OCEAN, FRE, 2 * ONE)
        _ex, dt_amount, max_base, _a, _f = decode(
            ["bytes32", "uint256", "uint256", "address", "uint256"], chain.sent[1].tx["data"][4:]
        )
        assert (dt_amount, max_base) == (ONE, 2 * ONE)

    @pytest.mark.parametrize(("cap", "match"), [(None, "no max_datatoken_price"), (ONE, "above the limit")])
    def test_fixed_rate_refused(self, cap, match):
        chain = funded()
        chain.balances[(DT1, PAYER)] = 0
        chain.fixed_rates[DT1] = [(FRE, b"\x07" * 32)]
        with pytest.raises(OceanInsufficientFundsError, match=match):
            payer_for(chain, acquire="any", max_datatoken_price=cap).pay([start_request()], consumer=ENGINE)
        assert chain.sent == []


def status(active=True, minter=True, max_tokens=10 * ONE, max_balance=10 * ONE, balance=0, allowed=ZERO):
    """A dispenser's ``status(datatoken)`` as the payer's read decodes it."""
    return (active, PAYER, minter, max_tokens, max_balance, balance, allowed)


def exchange(active=True):
    """A fixed-rate exchange's ``getExchange(id)`` as decoded: base token at [3], active at [6]."""
    return (PAYER, DT1, 18, OCEAN, 18, 2 * ONE, active, 0, 0, 0, 0, True)


def acquirer(mode: str | None, answers: dict[str, Any], max_price: int | None = None) -> DatatokenAcquirer:
    """An acquirer whose reads answer from ``answers`` (by function signature); it must not send."""

    def read(to: str, signature: str, args: tuple[Any, ...], out: list[str]) -> tuple[Any, ...]:
        return answers[signature]

    def transact(*_: Any) -> dict[str, Any]:
        raise AssertionError("planning sends nothing")

    return DatatokenAcquirer(PAYER, mode, max_price, read=read, transact=transact)


class TestPlanning:
    @pytest.mark.parametrize(
        ("dispenser", "reason"),
        [
            (status(active=False), "is inactive"),
            (status(allowed=ENGINE), f"only serves {ENGINE}"),
            (status(max_tokens=ONE // 2), f"gives at most {ONE // 2} per call"),
            (status(max_balance=0), "refuses holders of 0 or more"),
            (status(minter=False, balance=ONE // 2), f"holds only {ONE // 2}"),
        ],
    )
    def test_every_unusable_dispenser_is_explained(self, dispenser, reason):
        answers = {abi.DT_GET_DISPENSERS: ([DISPENSER],), abi.DISPENSER_STATUS: dispenser}
        with pytest.raises(OceanInsufficientFundsError, match=f"dispenser {DISPENSER} {reason}") as info:
            acquirer("dispenser", answers).plan(DT1, ONE, 0)
        assert "nothing was sent" in str(info.value)
        assert info.value.spent is False

    def test_a_usable_dispenser(self):
        answers = {abi.DT_GET_DISPENSERS: ([DISPENSER.lower()],), abi.DISPENSER_STATUS: status()}
        assert acquirer("any", answers).plan(DT1, ONE, 0) == Acquisition("dispense", DT1, ONE, DISPENSER)

    def test_any_falls_back_to_a_fixed_rate_exchange(self):
        answers = {
            abi.DT_GET_DISPENSERS: ([],),
            abi.DT_GET_FIXED_RATES: ([(FRE, b"\x07" * 32)],),
            abi.FRE_GET_EXCHANGE: exchange(),
            abi.FRE_CALC_BASE_IN: (2 * ONE, 0, 0, 0),
        }
        found = acquirer("any", answers, max_price=2 * ONE).plan(DT1, ONE, 0)
        assert (found.kind, found.contract, found.base_token, found.base_cost) == ("buy", FRE, OCEAN, 2 * ONE)
        assert found.exchange_id == b"\x07" * 32

    def test_inactive_exchange_and_no_exchange(self):
        answers = {abi.DT_GET_FIXED_RATES: ([(FRE, b"\x07" * 32)],), abi.FRE_GET_EXCHANGE: exchange(False)}
        with pytest.raises(OceanInsufficientFundsError, match="exchange 0707.* is inactive"):
            acquirer("fixed_rate", answers, max_price=ONE).plan(DT1, ONE, 0)
        with pytest.raises(OceanInsufficientFundsError, match="no fixed-rate exchange"):
            acquirer("fixed_rate", {abi.DT_GET_FIXED_RATES: ([],)}).plan(DT1, ONE, 0)

    def test_off_reads_nothing(self):
        with pytest.raises(
            OceanInsufficientFundsError, match=r"needs 3 .*acquisition is off \(acquire=None\)"
        ):
            acquirer(None, {}).plan(DT1, 2, 1)

    def test_unknown_mode(self):
        with pytest.raises(OceanValidationError, match="acquire must be one of"):
            acquirer("steal", {})
