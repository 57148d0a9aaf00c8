"""Paying for compute inputs: unit tests against an in-memory fake of the chain client.

The fake decodes real ABI calls (the same encode_call the product uses) and answers with real ABI
encodings and real event logs, so the payer's encoding, decoding, ordering and checks are exercised;
the real contracts are exercised by the sandbox tests (tests/hooks/test_ocean_sandbox.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_abi import decode, encode
from eth_abi.packed import encode_packed
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak, to_checksum_address

from airflow_provider_ocean.chain import abi
from airflow_provider_ocean.chain.errors import RpcError, TransactionRevertedError
from airflow_provider_ocean.exceptions import (
    OceanFeeCapError,
    OceanInsufficientFundsError,
    OceanPaymentError,
    OceanValidationError,
)
from airflow_provider_ocean.payment.orders import OrderPayer, OrderRequest, ProviderFee

ZERO = "0x0000000000000000000000000000000000000000"
PAYER = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
ENGINE = to_checksum_address("0x" + "e1" * 20)
PROVIDER = to_checksum_address("0x" + "9a" * 20)
OCEAN = to_checksum_address("0x" + "0c" * 20)
DT1 = to_checksum_address("0x" + "d1" * 20)
DT2 = to_checksum_address("0x" + "d2" * 20)
DT_ALGO = to_checksum_address("0x" + "da" * 20)
DISPENSER = to_checksum_address("0x" + "d5" * 20)
FRE = to_checksum_address("0x" + "f7" * 20)
DID1 = "did:op:" + "1" * 64
DID2 = "did:op:" + "2" * 64
ALGO_DID = "did:op:" + "3" * 64
OLD_TX = "0x" + "0d" * 32
MY_REUSE_TX = "0x" + "0e" * 32
ONE = 10**18


def fee_json(
    datatoken: str, service_id: str, *, amount: int = 0, token: str = ZERO, env: str = "ocean-compute"
):
    data = json.dumps(
        {"environment": env, "timestamp": 1700000000.5, "dt": datatoken.lower(), "id": service_id},
        separators=(",", ":"),
    ).encode()
    return {
        "providerFeeAddress": PROVIDER,
        "providerFeeToken": token,
        "providerFeeAmount": str(amount),
        "providerData": "0x" + data.hex(),
        "v": 27,
        "r": "0x" + "11" * 32,
        "s": "0x" + "22" * 32,
        "validUntil": 1800000000,
    }


def _topic(value: bytes) -> str:
    return "0x" + value.rjust(32, b"\0").hex()


def event_log(event: abi.EventAbi, emitter: str, values: dict[str, Any]) -> dict[str, Any]:
    types = abi.arg_types(event.signature)
    topics = [event.topic0]
    data_types, data_values = [], []
    for name, kind, indexed in zip(event.names, types, event.indexed, strict=True):
        if indexed:
            topics.append("0x" + encode([kind], [values[name]]).hex())
        else:
            data_types.append(kind)
            data_values.append(values[name])
    return {
        "address": emitter.lower(),
        "topics": topics,
        "data": "0x" + encode(data_types, data_values).hex(),
    }


@dataclass
class Sent:
    tx_hash: str
    tx: dict[str, Any]
    what: str


@dataclass
class FakeChain:
    """Just enough of JsonRpcClient + TransactionSender for the payer."""

    address: str = PAYER
    gas_multiplier: float = 1.0
    balances: dict[tuple[str, str], int] = field(default_factory=dict)
    allowances: dict[tuple[str, str, str], int] = field(default_factory=dict)
    publish_fees: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    dispensers: dict[str, list[str]] = field(default_factory=dict)
    fixed_rates: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    fre_price: int = 2 * ONE
    native: int = 10**21
    revert_estimate: str | None = None
    revert_receipt: set[str] = field(default_factory=set)
    drop_events: bool = False
    events: list[str] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)

    # JsonRpcClient ------------------------------------------------------------------------------------
    def call(self, to: str, data: bytes, **_: Any) -> bytes:
        to = to_checksum_address(to)
        selector, args = data[:4], data[4:]

        def is_(signature: str) -> bool:
            return selector == abi.selector(signature)

        if is_(abi.ERC20_BALANCE_OF):
            (owner,) = decode(["address"], args)
            return encode(["uint256"], [self.balances.get((to, to_checksum_address(owner)), 0)])
        if is_(abi.ERC20_ALLOWANCE):
            owner, spender = decode(["address", "address"], args)
            key = (to, to_checksum_address(owner), to_checksum_address(spender))
            return encode(["uint256"], [self.allowances.get(key, 0)])
        if is_(abi.DT_GET_PUBLISHING_MARKET_FEE):
            return encode(["address", "address", "uint256"], list(self.publish_fees.get(to, (ZERO, ZERO, 0))))
        if is_(abi.DT_GET_DISPENSERS):
            return encode(["address[]"], [self.dispensers.get(to, [])])
        if is_(abi.DT_GET_FIXED_RATES):
            return encode(["(address,bytes32)[]"], [self.fixed_rates.get(to, [])])
        if is_(abi.DISPENSER_STATUS):
            return encode(
                ["bool", "address", "bool", "uint256", "uint256", "uint256", "address"],
                [True, PAYER, True, 10 * ONE, 10 * ONE, 0, ZERO],
            )
        if is_(abi.FRE_GET_EXCHANGE):
            return encode(
                ["address", "address", "uint256", "address", "uint256", "uint256", "bool"]
                + ["uint256"] * 4
                + ["bool"],
                [PAYER, DT1, 18, OCEAN, 18, self.fre_price, True, 0, 0, 0, 0, True],
            )
        if is_(abi.FRE_CALC_BASE_IN):
            _exchange, amount, _fee = decode(["bytes32", "uint256", "uint256"], args)
            return encode(["uint256"] * 4, [self.fre_price * amount // ONE, 0, 0, 0])
        raise AssertionError(f"unexpected call {selector.hex()} on {to}")

    def estimate_gas(self, tx: dict[str, Any]) -> int:
        self.events.append(f"estimate:{tx['to']}")
        if self.revert_estimate:
            reason = encode(["string"], [self.revert_estimate])
            raise RpcError("eth_estimateGas", -32000, "execution reverted", "0x08c379a0" + reason.hex())
        return 100_000

    def get_balance(self, _address: str, _block: str = "latest") -> int:
        return self.native

    url = "http://fake-rpc.test"

    def request_batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """A JSON-RPC batch as JsonRpcClient.batch answers it: results, or the RpcError of an item."""
        self.events.append(f"read-batch:{len(calls)}")
        out: list[Any] = []
        for method, params in calls:
            try:
                if method == "eth_call":
                    call = params[0]
                    out.append("0x" + self.call(call["to"], bytes.fromhex(call["data"][2:])).hex())
                elif method == "eth_estimateGas":
                    out.append(hex(self.estimate_gas(params[0])))
                elif method == "eth_getBlockByNumber":
                    out.append({"number": "0x1"})  # no baseFeePerGas: a legacy chain
                elif method == "eth_gasPrice":
                    out.append(hex(self.fee_fields()["gasPrice"]))
                elif method == "eth_getBalance":
                    out.append(hex(self.native))
                elif method == "eth_maxPriorityFeePerGas":
                    out.append(RpcError(method, -32601, "Method not supported"))
                else:
                    raise AssertionError(f"unexpected batched {method}")
            except RpcError as exc:
                out.append(exc)
        return out

    # TransactionSender --------------------------------------------------------------------------------
    def fee_fields(self) -> dict[str, int]:
        return {"gasPrice": 1_000}

    @contextmanager
    def batch(self) -> Iterator[None]:
        self.events.append("batch:begin")
        yield
        self.events.append("batch:end")

    def send(
        self,
        to: str,
        data: bytes,
        *,
        gas: int | None = None,
        what: str = "tx",
        fees: dict[str, int] | None = None,
        **_: Any,
    ) -> Sent:
        tx_hash = "0x" + keccak(len(self.sent).to_bytes(4, "big") + data).hex()
        sent = Sent(tx_hash, {"to": to, "data": data, "gas": gas, "fees": fees}, what)
        self.sent.append(sent)
        self.events.append(f"send:{self._kind(data)}:{to}")
        return sent

    def wait(self, sent: Sent) -> dict[str, Any]:
        data, to = sent.tx["data"], to_checksum_address(sent.tx["to"])
        kind = self._kind(data)
        self.events.append(f"wait:{kind}:{to}")
        if kind in self.revert_receipt:
            raise TransactionRevertedError(sent.tx_hash, "Invalid provider fee", sent.what)
        logs = []
        args = data[4:]
        if kind == "approve":
            spender, amount = decode(["address", "uint256"], args)
            self.allowances[(to, PAYER, to_checksum_address(spender))] = amount
        elif kind == "dispense":
            datatoken, amount, _dest = decode(["address", "uint256", "address"], args)
            key = (to_checksum_address(datatoken), PAYER)
            self.balances[key] = self.balances.get(key, 0) + amount
        elif kind == "buy":
            _ex, amount, _max, _addr, _fee = decode(
                ["bytes32", "uint256", "uint256", "address", "uint256"], args
            )
            self.balances[(DT1, PAYER)] = self.balances.get((DT1, PAYER), 0) + amount
        elif kind in ("start", "reuse") and not self.drop_events:
            fee_type = "(address,address,uint256,uint8,bytes32,bytes32,uint256,bytes)"
            if kind == "start":
                consumer, index, fee, _consume = decode(
                    ["address", "uint256", fee_type, "(address,address,uint256)"], args
                )
                logs.append(
                    event_log(
                        abi.ORDER_STARTED,
                        to,
                        {
                            "consumer": consumer,
                            "payer": PAYER,
                            "amount": ONE,
                            "serviceIndex": index,
                            "timestamp": 1,
                            "publishMarketAddress": ZERO,
                            "blockNumber": 1,
                        },
                    )
                )
            else:
                order_tx, fee = decode(["bytes32", fee_type], args)
                logs.append(
                    event_log(
                        abi.ORDER_REUSED,
                        to,
                        {"orderTxId": order_tx, "caller": PAYER, "timestamp": 1, "number": 1},
                    )
                )
            logs.append(
                event_log(
                    abi.PROVIDER_FEE,
                    to,
                    {
                        "providerFeeAddress": fee[0],
                        "providerFeeToken": fee[1],
                        "providerFeeAmount": fee[2],
                        "providerData": fee[7],
                        "v": fee[3],
                        "r": fee[4],
                        "s": fee[5],
                        "validUntil": fee[6],
                    },
                )
            )
        return {"status": "0x1", "transactionHash": sent.tx_hash, "logs": logs, "blockNumber": "0x1"}

    @staticmethod
    def _kind(data: bytes) -> str:
        names = {
            abi.selector(abi.ERC20_APPROVE): "approve",
            abi.selector(abi.DT_START_ORDER): "start",
            abi.selector(abi.DT_REUSE_ORDER): "reuse",
            abi.selector(abi.DISPENSER_DISPENSE): "dispense",
            abi.selector(abi.FRE_BUY_DT): "buy",
        }
        return names.get(data[:4], data[:4].hex())


def payer_for(chain: FakeChain, **kwargs: Any) -> OrderPayer:
    return OrderPayer(chain, chain, **kwargs)  # type: ignore[arg-type]


def start_request(datatoken: str = DT1, did: str = DID1, service_id: str = "1", index: int = 1, **fee: Any):
    return OrderRequest(
        "dataset",
        did,
        service_id,
        index,
        datatoken,
        {"datatoken": datatoken, "providerFee": fee_json(datatoken, service_id, **fee)},
    )


def funded(**kwargs: Any) -> FakeChain:
    chain = FakeChain(**kwargs)
    for token in (DT1, DT2, DT_ALGO):
        chain.balances[(token, PAYER)] = 5 * ONE
    chain.balances[(OCEAN, PAYER)] = 100 * ONE
    return chain


# -- the provider fee tuple -------------------------------------------------------------------------
class TestProviderFee:
    VECTOR = {
        "providerFeeAddress": PAYER,
        "providerFeeToken": ZERO,
        "providerFeeAmount": "0",
        "providerData": "0x"
        + (
            b'{"environment":"ocean-compute","timestamp":1700000000.5,'
            b'"dt":"0x2222222222222222222222222222222222222222","id":"1"}'
        ).hex(),
        "v": 28,
        "r": "0x0fccd13cb9237d6dfa1de5cac63c159e240a24e1b4ee25e7ca03532a1ed83c72",
        "s": "0x6450a3b10f1cfdb7694e05eb776b3e49fac95a93a8bf156958a84ab1d8bdb533",
        "validUntil": 1700003600,
    }

    def test_vector_round_trips_to_a_verifiable_tuple(self):
        fee = ProviderFee.from_json(self.VECTOR)
        address, token, amount, v, r, s, valid_until, data = fee.as_tuple()
        assert isinstance(data, bytes)  # providerData is the LAST field
        packed = keccak(
            encode_packed(
                ["bytes", "address", "address", "uint256", "uint256"],
                [data, address, token, amount, valid_until],
            )
        )
        assert "0x" + packed.hex() == "0xb71fd669b8fc01fa00287618d3ce4962ec03e5b08acdc234926113abcbeec0d2"
        assert Account.recover_message(encode_defunct(primitive=packed), vrs=(v, r, s)) == PAYER
        assert fee.data() == {
            "environment": "ocean-compute",
            "timestamp": 1700000000.5,
            "dt": "0x" + "22" * 20,
            "id": "1",
        }
        assert not fee.is_payable

    def test_start_order_encoding(self):
        fee = ProviderFee.from_json(self.VECTOR)
        call = abi.encode_call(abi.DT_START_ORDER, ENGINE, 3, fee.as_tuple(), (ZERO, ZERO, 0))
        assert call[:4].hex() == "79d9d7f3"
        consumer, index, fee_tuple, consume = decode(
            [
                "address",
                "uint256",
                "(address,address,uint256,uint8,bytes32,bytes32,uint256,bytes)",
                "(address,address,uint256)",
            ],
            call[4:],
        )
        assert (to_checksum_address(consumer), index) == (ENGINE, 3)
        assert fee_tuple[3] == 28
        assert fee_tuple[7] == fee.provider_data
        assert consume == (ZERO, ZERO, 0)

    def test_reuse_order_selector(self):
        fee = ProviderFee.from_json(self.VECTOR)
        assert abi.encode_call(abi.DT_REUSE_ORDER, bytes(32), fee.as_tuple())[:4].hex() == "361fef49"

    def test_amount_is_a_decimal_string_and_v_0_1_is_normalised(self):
        fee = ProviderFee.from_json(
            {**self.VECTOR, "providerFeeAmount": "123456789012345678901", "v": 1, "providerFeeToken": OCEAN}
        )
        assert fee.amount == 123456789012345678901
        assert fee.v == 28
        assert fee.is_payable

    @pytest.mark.parametrize(
        "broken", [{"v": None}, {"r": "0xzz"}, {"providerFeeAmount": "1.5"}, {"providerFeeAddress": "nope"}]
    )
    def test_malformed(self, broken):
        with pytest.raises(OceanValidationError, match="malformed providerFee"):
            ProviderFee.from_json({**self.VECTOR, **broken})


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

    def test_bad_acquire_mode(self):
        with pytest.raises(OceanValidationError):
            payer_for(funded(), acquire="steal")


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
