"""Paying for datatoken orders (``airflow_provider_ocean.payment.orders``) against the in-memory fake of
the chain client in tests/payment/fakes.py."""

from __future__ import annotations

import pytest
from eth_abi import decode
from eth_utils import to_checksum_address

from airflow_provider_ocean.exceptions import (
    OceanFeeCapError,
    OceanInsufficientFundsError,
    OceanPaymentError,
    OceanValidationError,
)
from airflow_provider_ocean.payment.fees import OrderRequest
from airflow_provider_ocean.payment.gas import GAS_LIMIT
from tests.payment.fakes import (
    ALGO_DID,
    DID1,
    DID2,
    DT1,
    DT2,
    DT_ALGO,
    ENGINE,
    MY_REUSE_TX,
    OCEAN,
    OLD_TX,
    ONE,
    PAYER,
    PROVIDER,
    ZERO,
    FakeChain,
    fee_json,
    funded,
    payer_for,
    start_request,
)


# -- decisions --------------------------------------------------------------------------------------
class TestPlanDecisions:
    def test_valid_order_only_sends_nothing_and_keeps_the_passed_tx(self):
        chain = funded()
        request = OrderRequest("dataset", DID1, "1", 1, DT1, {"validOrder": OLD_TX}, MY_REUSE_TX)
        [paid] = payer_for(chain).pay([request], consumer=ENGINE)
        assert (paid.action, paid.transfer_tx_id) == ("valid", MY_REUSE_TX)  # pitfall P4
        assert chain.sent == []

    def test_valid_order_without_a_passed_tx(self):
        chain = funded()
        request = OrderRequest("dataset", DID1, "1", 1, DT1, {"validOrder": OLD_TX[2:]})
        [paid] = payer_for(chain).pay([request], consumer=ENGINE)
        assert paid.transfer_tx_id == OLD_TX
        assert chain.sent == []

    def test_valid_order_with_fee_is_reused(self):
        chain = funded()
        request = OrderRequest(
            "dataset",
            DID1,
            "1",
            1,
            DT1,
            {"datatoken": DT1, "validOrder": OLD_TX, "providerFee": fee_json(DT1, "1")},
            OLD_TX,
        )
        [paid] = payer_for(chain).pay([request], consumer=ENGINE)
        assert paid.action == "reuse"
        [sent] = chain.sent
        assert FakeChain._kind(sent.tx["data"]) == "reuse"
        order_tx, _fee = decode(
            ["bytes32", "(address,address,uint256,uint8,bytes32,bytes32,uint256,bytes)"], sent.tx["data"][4:]
        )
        assert "0x" + order_tx.hex() == OLD_TX
        assert paid.transfer_tx_id == sent.tx_hash
        assert chain.balances[(DT1, PAYER)] == 5 * ONE  # no datatoken needed

    def test_new_order(self):
        chain = funded()
        [paid] = payer_for(chain).pay([start_request(index=4)], consumer=ENGINE, environment="ocean-compute")
        [sent] = chain.sent
        consumer, index, fee, consume = decode(
            [
                "address",
                "uint256",
                "(address,address,uint256,uint8,bytes32,bytes32,uint256,bytes)",
                "(address,address,uint256)",
            ],
            sent.tx["data"][4:],
        )
        assert (to_checksum_address(consumer), index, consume) == (ENGINE, 4, (ZERO, ZERO, 0))
        assert to_checksum_address(fee[0]) == PROVIDER
        assert (paid.action, paid.transfer_tx_id, paid.datatoken) == ("start", sent.tx_hash, DT1)
        assert paid.transfer_tx_id.startswith("0x")

    def test_neither_valid_order_nor_fee(self):
        with pytest.raises(OceanValidationError, match="neither validOrder nor providerFee"):
            payer_for(funded()).pay([OrderRequest("dataset", DID1, "1", 1, DT1, {})], consumer=ENGINE)

    def test_datatoken_mismatch(self):
        request = start_request()
        request.quote["datatoken"] = DT2
        with pytest.raises(OceanValidationError, match="quoted datatoken"):
            payer_for(funded()).pay([request], consumer=ENGINE)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"datatoken": DT2}, "another datatoken"),
            ({"service_id": "9"}, "for service 1"),
            ({"env": "other"}, "environment"),
        ],
    )
    def test_provider_data_must_match_the_input(self, kwargs, match):
        datatoken = kwargs.pop("datatoken", DT1)
        service_id = kwargs.pop("service_id", "1")
        quote = {"providerFee": fee_json(datatoken, "1" if service_id == "9" else service_id, **kwargs)}
        if service_id == "9":
            quote["providerFee"] = fee_json(DT1, "1")
            request = OrderRequest("dataset", DID1, "9", 1, DT1, quote)
        else:
            request = OrderRequest("dataset", DID1, "1", 1, DT1, quote)
        chain = funded()
        with pytest.raises(OceanValidationError, match=match):
            payer_for(chain).pay([request], consumer=ENGINE, environment="ocean-compute")
        assert chain.sent == []


# -- execution --------------------------------------------------------------------------------------
class TestExecution:
    def test_all_orders_are_sent_before_any_wait(self):
        chain = funded()
        algo = OrderRequest(
            "algorithm",
            ALGO_DID,
            "0",
            0,
            DT_ALGO,
            {"datatoken": DT_ALGO, "providerFee": fee_json(DT_ALGO, "0")},
        )
        paid = payer_for(chain).pay(
            [start_request(), start_request(DT2, DID2, "0", 0), algo], consumer=ENGINE
        )
        assert [p.role for p in paid] == ["dataset", "dataset", "algorithm"]
        kinds = [e for e in chain.events if e.startswith(("send", "wait", "batch"))]
        # all three orders in one hold of the nonce lock (one pending-count read), then the receipts
        assert [k.split(":")[0] for k in kinds] == ["batch"] + ["send"] * 3 + ["batch"] + ["wait"] * 3
        assert len({p.transfer_tx_id for p in paid}) == 3
        # before that, every read in two JSON-RPC batches: 3 publishing fees + 3 datatoken balances, then
        # 3 dry runs + latest block, gas price, gas balance and suggested tip
        assert [e for e in chain.events if e.startswith("read-batch")] == ["read-batch:6", "read-batch:7"]

    def test_every_transaction_is_sent_at_the_fee_the_budget_checked(self):
        chain = funded()
        chain.allowances.clear()
        request = start_request(amount=3 * ONE, token=OCEAN)
        payer = payer_for(chain)
        plan = payer.plan([request, start_request(DT2, DID2, "0", 0)], consumer=ENGINE, max_fee=3 * ONE)
        assert plan.fees == {"gasPrice": 1_000}
        assert plan.gas_price == 1_000
        payer.execute(plan)
        assert [FakeChain._kind(s.tx["data"]) for s in chain.sent] == ["approve", "start", "start"]
        assert all(s.tx["fees"] == {"gasPrice": 1_000} for s in chain.sent)

    def test_paid_fee_is_approved_first(self):
        chain = funded()
        request = start_request(amount=3 * ONE, token=OCEAN)
        [paid] = payer_for(chain).pay([request], consumer=ENGINE, max_fee=3 * ONE)
        kinds = [e for e in chain.events if e.startswith(("send", "wait"))]
        assert kinds == [
            f"send:approve:{OCEAN}",
            f"wait:approve:{OCEAN}",
            f"send:start:{DT1}",
            f"wait:start:{DT1}",
        ]
        approve = chain.sent[0]
        spender, amount = decode(["address", "uint256"], approve.tx["data"][4:])
        assert (to_checksum_address(spender), amount) == (DT1, 3 * ONE)  # to the datatoken, not the provider
        assert (paid.provider_fee_amount, paid.provider_fee_token) == (3 * ONE, OCEAN)
        assert chain.sent[1].tx["gas"] is None  # estimated only once the approval is mined

    def test_existing_allowance_is_not_reapproved(self):
        chain = funded()
        chain.allowances[(OCEAN, PAYER, DT1)] = 10 * ONE
        payer_for(chain).pay([start_request(amount=ONE, token=OCEAN)], consumer=ENGINE)
        assert [FakeChain._kind(s.tx["data"]) for s in chain.sent] == ["start"]

    def test_publish_market_fee_counts_towards_the_cap_and_the_approval(self):
        chain = funded()
        chain.publish_fees[DT1] = (PAYER, OCEAN, 2 * ONE)
        with pytest.raises(OceanFeeCapError):
            payer_for(chain).pay([start_request(amount=ONE, token=OCEAN)], consumer=ENGINE, max_fee=2 * ONE)
        assert chain.sent == []
        payer_for(chain).pay([start_request(amount=ONE, token=OCEAN)], consumer=ENGINE, max_fee=3 * ONE)
        _spender, amount = decode(["address", "uint256"], chain.sent[0].tx["data"][4:])
        assert amount == 3 * ONE

    def test_fee_cap_refuses_before_anything_is_sent(self):
        chain = funded()
        with pytest.raises(OceanFeeCapError) as info:
            payer_for(chain).pay([start_request(amount=5 * ONE, token=OCEAN)], consumer=ENGINE, max_fee=ONE)
        assert isinstance(info.value, OceanPaymentError)
        assert isinstance(info.value, OceanValidationError)
        assert info.value.spent is False
        assert "above max_fee" in str(info.value)
        assert chain.sent == []

    def test_missing_datatokens(self):
        chain = funded()
        chain.balances[(DT1, PAYER)] = ONE  # two orders on DT1 need two
        with pytest.raises(OceanInsufficientFundsError, match="needs 2000000000000000000") as info:
            payer_for(chain).pay([start_request(), start_request(did=DID2)], consumer=ENGINE)
        assert "acquisition is off" in str(info.value)
        assert chain.sent == []

    def test_missing_fee_tokens(self):
        chain = funded()
        chain.balances[(OCEAN, PAYER)] = ONE
        with pytest.raises(OceanInsufficientFundsError, match=f"token {OCEAN}"):
            payer_for(chain).pay([start_request(amount=2 * ONE, token=OCEAN)], consumer=ENGINE)
        assert chain.sent == []

    def test_missing_gas(self):
        chain = funded(native=1_000)
        with pytest.raises(OceanInsufficientFundsError, match="wei"):
            payer_for(chain).pay([start_request()], consumer=ENGINE)
        assert chain.sent == []

    def test_dry_run_revert_sends_nothing(self):
        chain = funded(revert_estimate="Invalid provider fee")
        with pytest.raises(OceanPaymentError, match="would revert \\(Invalid provider fee\\)") as info:
            payer_for(chain).pay([start_request()], consumer=ENGINE)
        assert info.value.spent is False
        assert chain.sent == []

    def test_dry_run_runs_each_order_with_the_gas_limit_it_is_sent_with(self):
        chain = funded()
        payer_for(chain).pay([start_request(), start_request(DT2, DID2, "0", 0)], consumer=ENGINE)
        assert [e for e in chain.events if e.startswith(("dry-run", "estimate"))] == [
            f"dry-run:{DT1}",
            f"dry-run:{DT2}",
        ]  # no eth_estimateGas: one eth_call each, in the batch with the fee fields
        assert [s.tx["gas"] for s in chain.sent] == [GAS_LIMIT["start"]] * 2

    def test_order_that_runs_out_of_gas_within_its_limit_sends_nothing(self):
        chain = funded(order_gas=GAS_LIMIT["start"] + 1)
        with pytest.raises(OceanPaymentError, match="would revert \\(out of gas\\)") as info:
            payer_for(chain).pay([start_request()], consumer=ENGINE)
        assert info.value.spent is False
        assert chain.sent == []

    def test_gas_budget_is_the_limits_at_the_price_sent(self):
        plan = payer_for(funded()).plan([start_request(), start_request(DT2, DID2, "0", 0)], consumer=ENGINE)
        assert plan.gas == 2 * GAS_LIMIT["start"]
        chain = funded(native=2 * GAS_LIMIT["start"] * 1_000 - 1)
        with pytest.raises(OceanInsufficientFundsError, match="wei"):
            payer_for(chain).pay([start_request(), start_request(DT2, DID2, "0", 0)], consumer=ENGINE)
        assert chain.sent == []

    def test_reverted_order_names_the_orders_already_sent(self):
        chain = funded()
        chain.revert_receipt.add("start")
        with pytest.raises(OceanPaymentError) as info:
            payer_for(chain).pay([start_request(), start_request(DT2, DID2, "0", 0)], consumer=ENGINE)
        assert info.value.spent is True
        assert info.value.tx_hash == chain.sent[0].tx_hash
        assert "Invalid provider fee" in str(info.value)
        assert chain.sent[1].tx_hash in str(info.value)

    def test_receipt_without_events_is_refused(self):
        chain = funded(drop_events=True)
        with pytest.raises(OceanPaymentError, match="no OrderStarted"):
            payer_for(chain).pay([start_request()], consumer=ENGINE)
