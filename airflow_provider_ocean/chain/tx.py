"""Building, signing and sending transactions, and checking their receipts."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_account import Account
from eth_utils import keccak, to_checksum_address

from airflow_provider_ocean.chain.abi import decode_output, encode_call
from airflow_provider_ocean.chain.errors import ChainError, RpcError, TransactionRevertedError
from airflow_provider_ocean.chain.rpc import from_hex

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from airflow_provider_ocean.chain.rpc import JsonRpcClient

log = logging.getLogger(__name__)

_NONCE_ERRORS = ("nonce too low", "replacement transaction underpriced", "replacement fee too low")
_KNOWN_ERRORS = ("already known", "known transaction", "already imported")


@dataclass(frozen=True)
class SentTransaction:
    """A transaction that was accepted by the node.

    :param tx_hash: 0x-prefixed transaction hash.
    :param tx: the unsigned transaction fields (no secrets), kept to replay a revert.
    :param what: a short description used in messages (``"startOrder on 0x…"``).
    """

    tx_hash: str
    tx: dict[str, Any]
    what: str


def call_function(
    rpc: JsonRpcClient, to: str, signature: str, args: tuple[Any, ...], out_types: list[str], **kw: Any
) -> tuple[Any, ...]:
    """``eth_call`` a contract function and decode its outputs.

    :param rpc: the JSON-RPC client.
    :param to: contract address.
    :param signature: canonical function signature.
    :param args: function arguments.
    :param out_types: ABI output types.
    """
    return decode_output(out_types, rpc.call(to, encode_call(signature, *args), **kw))


class TransactionSender:
    """Signs and sends transactions for one account, keeping nonces in order.

    The private key stays inside the eth-account object; it is never part of ``repr``, messages or logs.

    :param rpc: the JSON-RPC client.
    :param private_key: hex private key of the sender.
    :param gas_multiplier: safety factor applied to ``eth_estimateGas``.
    :param receipt_timeout: seconds to wait for a receipt.
    """

    def __init__(
        self,
        rpc: JsonRpcClient,
        private_key: str,
        *,
        gas_multiplier: float = 1.3,
        receipt_timeout: float = 120.0,
    ) -> None:
        self.rpc = rpc
        self._account: LocalAccount = Account.from_key(private_key)
        self.address: str = self._account.address
        self.gas_multiplier = gas_multiplier
        self.receipt_timeout = receipt_timeout
        self._lock = threading.Lock()
        self._next_nonce: int | None = None
        self._chain_id: int | None = None

    def __repr__(self) -> str:
        return f"TransactionSender(address={self.address!r}, rpc={self.rpc.url!r})"

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = self.rpc.chain_id()
        return self._chain_id

    def fee_fields(self) -> dict[str, int]:
        """Pick the fee fields the chain supports: EIP-1559 when blocks carry a base fee, else legacy."""
        latest = self.rpc.get_block("latest")
        gas_price = self.rpc.gas_price()
        base_fee = latest.get("baseFeePerGas")
        if base_fee is None:
            return {"gasPrice": gas_price}
        base = from_hex(base_fee)
        tip = self.rpc.max_priority_fee()
        if tip is None:
            tip = max(gas_price - base, 1)
        return {"maxPriorityFeePerGas": tip, "maxFeePerGas": max(2 * base + tip, gas_price)}

    def build(
        self,
        to: str | None,
        data: bytes,
        *,
        value: int = 0,
        gas: int | None = None,
        fees: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        """Build an unsigned transaction (without nonce); estimates gas unless ``gas`` is given."""
        tx: dict[str, Any] = {"from": self.address, "data": data, "value": value, "chainId": self.chain_id}
        if to is not None:
            tx["to"] = to_checksum_address(to)
        tx.update(fees or self.fee_fields())
        if gas is None:
            estimate = self.rpc.estimate_gas({k: v for k, v in tx.items() if k != "chainId"})
            gas = int(estimate * self.gas_multiplier) + 10_000
        tx["gas"] = gas
        return tx

    def _reserve_nonce(self) -> int:
        pending = self.rpc.get_transaction_count(self.address, "pending")
        nonce = pending if self._next_nonce is None else max(pending, self._next_nonce)
        self._next_nonce = nonce + 1
        return nonce

    def send(
        self,
        to: str | None,
        data: bytes,
        *,
        value: int = 0,
        gas: int | None = None,
        what: str = "transaction",
        fees: dict[str, int] | None = None,
    ) -> SentTransaction:
        """Sign and broadcast a transaction, without waiting for it to be mined.

        A stale nonce (another sender used it) is refetched and the transaction re-signed, up to three
        times; a transaction the node already knows is not sent twice.
        """
        tx = self.build(to, data, value=value, gas=gas, fees=fees)
        with self._lock:
            for attempt in range(4):
                tx["nonce"] = self._reserve_nonce()
                signable = {k: v for k, v in tx.items() if k != "from"}
                signed = self._account.sign_transaction(signable)
                tx_hash = "0x" + keccak(signed.raw_transaction).hex()
                try:
                    self.rpc.send_raw_transaction(signed.raw_transaction)
                except RpcError as exc:
                    message = exc.rpc_message.lower()
                    if any(m in message for m in _KNOWN_ERRORS):
                        break
                    if attempt < 3 and any(m in message for m in _NONCE_ERRORS):
                        log.info("Nonce %s was taken, refetching (%s)", tx["nonce"], exc.rpc_message)
                        self._next_nonce = None
                        continue
                    self._next_nonce = None
                    raise
                break
        log.debug("Sent %s as %s (nonce %s)", what, tx_hash, tx["nonce"])
        return SentTransaction(tx_hash=tx_hash, tx=tx, what=what)

    def wait(self, sent: SentTransaction) -> dict[str, Any]:
        """Wait for a sent transaction's receipt and check its status.

        :raises TransactionRevertedError: the transaction reverted (with the reason when available).
        """
        receipt = self.rpc.wait_for_receipt(sent.tx_hash, timeout=self.receipt_timeout)
        check_receipt(self.rpc, receipt, sent)
        return receipt

    def transact(self, to: str | None, data: bytes, **kwargs: Any) -> dict[str, Any]:
        """Send a transaction and wait for its successful receipt."""
        return self.wait(self.send(to, data, **kwargs))


def check_receipt(rpc: JsonRpcClient, receipt: dict[str, Any], sent: SentTransaction | None = None) -> None:
    """Raise :class:`TransactionRevertedError` unless ``receipt`` has ``status == 1``."""
    if from_hex(receipt.get("status")) == 1:
        return
    tx_hash = receipt.get("transactionHash", sent.tx_hash if sent else "?")
    reason = None
    if sent is not None:
        block = from_hex(receipt.get("blockNumber"))
        reason = rpc.revert_reason(sent.tx, max(block - 1, 0))
    raise TransactionRevertedError(tx_hash, reason, sent.what if sent else "transaction")


def contract_address_of(receipt: dict[str, Any]) -> str:
    """Return the address of a contract created by a deployment receipt."""
    address = receipt.get("contractAddress")
    if not address:
        raise ChainError(f"receipt {receipt.get('transactionHash')} created no contract")
    return to_checksum_address(address)
