"""ABI encoding and decoding for the handful of contract functions and events the provider uses."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from eth_abi import decode, encode
from eth_utils import keccak, to_checksum_address

ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")
PANIC_SELECTOR = bytes.fromhex("4e487b71")

# Canonical signatures of the contract functions used by the product code.
ERC20_BALANCE_OF = "balanceOf(address)"
ERC20_ALLOWANCE = "allowance(address,address)"
ERC20_APPROVE = "approve(address,uint256)"
ERC20_DECIMALS = "decimals()"
ERC20_SYMBOL = "symbol()"
_PROVIDER_FEE_TUPLE = "(address,address,uint256,uint8,bytes32,bytes32,uint256,bytes)"
_CONSUME_FEE_TUPLE = "(address,address,uint256)"
DT_START_ORDER = f"startOrder(address,uint256,{_PROVIDER_FEE_TUPLE},{_CONSUME_FEE_TUPLE})"
DT_REUSE_ORDER = f"reuseOrder(bytes32,{_PROVIDER_FEE_TUPLE})"
DT_GET_PUBLISHING_MARKET_FEE = "getPublishingMarketFee()"
DT_GET_DISPENSERS = "getDispensers()"
DT_GET_FIXED_RATES = "getFixedRates()"
DT_GET_ERC721_ADDRESS = "getERC721Address()"
DT_IS_MINTER = "isMinter(address)"
NFT_GET_METADATA = "getMetaData()"
NFT_IS_DEPLOYED = "isDeployed(address)"
DISPENSER_STATUS = "status(address)"
DISPENSER_DISPENSE = "dispense(address,uint256,address)"
FRE_CALC_BASE_IN = "calcBaseInGivenOutDT(bytes32,uint256,uint256)"
FRE_BUY_DT = "buyDT(bytes32,uint256,uint256,address,uint256)"
FRE_GET_EXCHANGE = "getExchange(bytes32)"  # returns a 12-field tuple; only the fields the hook needs are read


def split_types(type_list: str) -> list[str]:
    """Split a comma-separated ABI type list at depth 0 (tuples stay whole).

    :param type_list: e.g. ``"address,(uint256,bytes),bool"``.
    :return: e.g. ``["address", "(uint256,bytes)", "bool"]``.
    """
    out: list[str] = []
    depth = 0
    current = ""
    for char in type_list:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            out.append(current)
            current = ""
        else:
            current += char
    if current:
        out.append(current)
    return out


@cache
def arg_types(signature: str) -> tuple[str, ...]:
    """Return the argument types of a canonical signature ``name(type,...)``."""
    inner = signature[signature.index("(") + 1 : signature.rindex(")")]
    return tuple(split_types(inner))


@cache
def selector(signature: str) -> bytes:
    """Return the 4-byte function selector of a canonical signature."""
    return keccak(text=signature)[:4]


def encode_call(signature: str, *args: Any) -> bytes:
    """ABI-encode a function call: selector followed by the encoded arguments.

    :param signature: canonical signature, e.g. ``"approve(address,uint256)"``.
    :param args: the arguments, tuples for tuple types.
    """
    return selector(signature) + encode(list(arg_types(signature)), list(args))


def decode_output(types: list[str] | tuple[str, ...], data: bytes) -> tuple[Any, ...]:
    """Decode the return data of a call.

    :param types: the output types, e.g. ``["uint256"]``.
    :param data: raw return bytes.
    """
    return decode(list(types), data)


def decode_revert_reason(data: bytes | str | None) -> str | None:
    """Decode ``Error(string)`` or ``Panic(uint256)`` revert data into text, if it is one of those."""
    if data is None:
        return None
    if isinstance(data, str):
        text = data[2:] if data.startswith("0x") else data
        try:
            data = bytes.fromhex(text)
        except ValueError:
            return None
    if data[:4] == ERROR_STRING_SELECTOR:
        try:
            return str(decode(["string"], data[4:])[0])
        except Exception:
            return None
    if data[:4] == PANIC_SELECTOR:
        try:
            return f"panic code {decode(['uint256'], data[4:])[0]:#x}"
        except Exception:
            return None
    return None


@dataclass(frozen=True)
class EventAbi:
    """One event: its canonical signature, parameter names and which parameters are indexed.

    :param signature: canonical signature, e.g. ``"Transfer(address,address,uint256)"``.
    :param names: parameter names in declaration order.
    :param indexed: for each parameter whether it is indexed.
    """

    signature: str
    names: tuple[str, ...]
    indexed: tuple[bool, ...]

    @property
    def name(self) -> str:
        return self.signature[: self.signature.index("(")]

    @property
    def topic0(self) -> str:
        return "0x" + keccak(text=self.signature).hex()

    def decode_log(self, log: dict[str, Any]) -> dict[str, Any] | None:
        """Decode a receipt log of this event; ``None`` if the log is another event.

        :param log: a log object as returned by ``eth_getTransactionReceipt``.
        :return: the arguments by name, plus ``_address`` (emitter, checksummed) and ``_logIndex``.
        """
        topics = [t.lower() for t in log.get("topics", [])]
        if not topics or topics[0] != self.topic0:
            return None
        types = arg_types(self.signature)
        indexed_types = [t for t, i in zip(types, self.indexed, strict=False) if i]
        data_types = [t for t, i in zip(types, self.indexed, strict=False) if not i]
        if len(topics) - 1 != len(indexed_types):
            return None
        indexed_values = [
            decode([t], bytes.fromhex(topic[2:]))[0]
            for t, topic in zip(indexed_types, topics[1:], strict=False)
        ]
        data_hex = log.get("data") or "0x"
        data_values = list(decode(data_types, bytes.fromhex(data_hex[2:]))) if data_types else []
        result: dict[str, Any] = {}
        for name, is_indexed in zip(self.names, self.indexed, strict=False):
            value = indexed_values.pop(0) if is_indexed else data_values.pop(0)
            result[name] = _normalise(value)
        result["_address"] = to_checksum_address(log["address"])
        result["_logIndex"] = (
            int(log.get("logIndex", "0x0"), 16) if isinstance(log.get("logIndex"), str) else 0
        )
        return result


def _normalise(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return to_checksum_address(value)
    if isinstance(value, tuple):
        return tuple(_normalise(v) for v in value)
    return value


def decode_events(
    event: EventAbi, receipt: dict[str, Any], emitter: str | None = None
) -> list[dict[str, Any]]:
    """Decode every log of ``event`` in a receipt, optionally only those emitted by ``emitter``."""
    out = []
    for log in receipt.get("logs", []):
        if emitter is not None and log.get("address", "").lower() != emitter.lower():
            continue
        decoded = event.decode_log(log)
        if decoded is not None:
            out.append(decoded)
    return out


ORDER_STARTED = EventAbi(
    "OrderStarted(address,address,uint256,uint256,uint256,address,uint256)",
    ("consumer", "payer", "amount", "serviceIndex", "timestamp", "publishMarketAddress", "blockNumber"),
    (True, False, False, False, False, True, False),
)
ORDER_REUSED = EventAbi(
    "OrderReused(bytes32,address,uint256,uint256)",
    ("orderTxId", "caller", "timestamp", "number"),
    (False, False, False, False),
)
PROVIDER_FEE = EventAbi(
    "ProviderFee(address,address,uint256,bytes,uint8,bytes32,bytes32,uint256)",
    (
        "providerFeeAddress",
        "providerFeeToken",
        "providerFeeAmount",
        "providerData",
        "v",
        "r",
        "s",
        "validUntil",
    ),
    (True, True, False, False, False, False, False, False),
)
TRANSFER = EventAbi(
    "Transfer(address,address,uint256)",
    ("from", "to", "value"),
    (True, True, False),
)
NFT_CREATED = EventAbi(
    "NFTCreated(address,address,string,address,string,string,bool,address)",
    (
        "newTokenAddress",
        "templateAddress",
        "tokenName",
        "admin",
        "symbol",
        "tokenURI",
        "transferable",
        "creator",
    ),
    (False, True, False, True, False, False, False, True),
)
TOKEN_CREATED = EventAbi(
    "TokenCreated(address,address,string,string,uint256,address)",
    ("newTokenAddress", "templateAddress", "name", "symbol", "cap", "creator"),
    (True, True, False, False, False, False),
)
TOKENS_DISPENSED = EventAbi(
    "TokensDispensed(address,address,uint256)",
    ("datatokenAddress", "userAddress", "amount"),
    (True, True, False),
)
