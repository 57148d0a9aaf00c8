"""An in-memory fake of the chain client for the payment tests, and the inputs they pay for.

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

from eth_abi import decode, encode
from eth_utils import keccak, to_checksum_address

from airflow_provider_ocean.chain import abi
from airflow_provider_ocean.chain.errors import RpcError, TransactionRevertedError
from airflow_provider_ocean.payment.fees import OrderRequest
from airflow_provider_ocean.payment.orders import OrderPayer

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
    revert_estimate: str | None = None  # the reason an order's dry run (eth_call) or estimate reverts with
    order_gas: int = 100_000  # gas an order uses: a dry run with a lower limit runs out of gas
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

    def dry_run(self, tx: dict[str, Any]) -> str:
        """``eth_call`` of an order transaction with its gas limit (OrderPayer's dry run)."""
        self.events.append(f"dry-run:{tx['to']}")
        if self.revert_estimate:
            reason = encode(["string"], [self.revert_estimate])
            raise RpcError("eth_call", -32000, "execution reverted", "0x08c379a0" + reason.hex())
        if int(tx["gas"], 16) < self.order_gas:
            raise RpcError("eth_call", -32000, "out of gas")
        return "0x"

    def get_balance(self, _address: str, _block: str = "latest") -> int:
        return self.native

    url = "http://fake-rpc.test"

    def request_batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """A JSON-RPC batch as JsonRpcClient.batch answers it: results, or the RpcError of an item."""
        self.events.append(f"read-batch:{len(calls)}")
        out: list[Any] = []
        for method, params in calls:
            try:
                if method == "eth_call" and "from" in params[0]:
                    out.append(self.dry_run(params[0]))
                elif method == "eth_call":
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
