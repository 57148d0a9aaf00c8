"""On-chain order validation, as the Provider's ``validate_order`` does it
(docs/reference/provider-v4-api.md §7)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_ocean.chain import abi
from airflow_provider_ocean.chain.errors import ChainError
from airflow_provider_ocean.chain.rpc import from_hex
from airflow_provider_ocean.chain.tx import call_function
from ocean_sandbox.crypto import verify_provider_fee

if TYPE_CHECKING:
    from airflow_provider_ocean.chain.rpc import JsonRpcClient

log = logging.getLogger(__name__)

ONE_TOKEN = 10**18
FEE_GRACE_SECONDS = 90


class OrderInvalidError(Exception):
    """The order does not validate; the message is for the server log only (clients see ``order_invalid``)."""


@dataclass
class ValidOrder:
    """What a validated order yields.

    :param tx_id: the transaction that was checked (may be a reuseOrder tx).
    :param start_order_tx_id: the original startOrder tx (differs from ``tx_id`` after a reuse).
    :param fee: the decoded ProviderFee event.
    :param provider_data: the decoded providerData JSON.
    :param fee_expired: the fee's validity ran out (only computed when expiry is not enforced).
    """

    tx_id: str
    start_order_tx_id: str
    fee: dict[str, Any]
    provider_data: dict[str, Any]
    fee_expired: bool

    @property
    def valid_until(self) -> int:
        return int(self.fee["validUntil"])

    @property
    def fee_amount(self) -> int:
        return int(self.fee["providerFeeAmount"])


class OrderValidator:
    """Checks an order transaction against the chain.

    :param rpc: the chain's JSON-RPC client.
    :param provider_address: this Provider's fee signing address.
    :param receipt_timeout: how long to wait for an unknown transaction (the Provider waits 120 s).
    """

    def __init__(self, rpc: JsonRpcClient, provider_address: str, receipt_timeout: float = 120.0) -> None:
        self.rpc = rpc
        self.provider_address = provider_address
        self.receipt_timeout = receipt_timeout

    def _receipt(self, tx_id: str) -> dict[str, Any]:
        try:
            receipt = self.rpc.wait_for_receipt(tx_id, timeout=self.receipt_timeout, poll=0.5)
        except ChainError as exc:
            raise OrderInvalidError(f"no receipt for {tx_id}: {exc}") from exc
        if from_hex(receipt.get("status")) != 1:
            raise OrderInvalidError(f"transaction {tx_id} failed")
        return receipt

    def _block_timestamp(self, receipt: dict[str, Any]) -> int:
        return from_hex(self.rpc.get_block(from_hex(receipt["blockNumber"]))["timestamp"])

    def validate(
        self,
        *,
        sender: str,
        tx_id: str,
        ddo: dict[str, Any],
        service: dict[str, Any],
        now: float,
        environment: str | None = None,
        is_dataset: bool = False,
        enforce_fee_expiry: bool = True,
    ) -> ValidOrder:
        """Validate one input's order.

        :param sender: the request's ``consumerAddress``.
        :param tx_id: the ``transferTxId``.
        :param ddo: the input's DDO.
        :param service: the DDO service the order is for.
        :param now: the Provider's current time (unix seconds).
        :param environment: for datasets, the environment that must match the fee's providerData (a
            missing environment matches nothing).
        :param is_dataset: a dataset input: the environment and the fee expiry are checked (not for
            algorithms).
        :param enforce_fee_expiry: fail when the fee's validity (plus grace) has run out.
        :raises OrderInvalidError: any failed check.
        """
        if not isinstance(tx_id, str) or not tx_id.startswith("0x") or len(tx_id) != 66:
            raise OrderInvalidError(f"malformed transferTxId {tx_id!r}")
        datatoken = service["datatokenAddress"]
        nft = ddo.get("nftAddress") or ddo.get("nft", {}).get("address")
        try:
            (deployed,) = call_function(self.rpc, nft, abi.NFT_IS_DEPLOYED, (datatoken,), ["bool"])
        except Exception as exc:
            raise OrderInvalidError(f"isDeployed failed: {exc}") from exc
        if not deployed:
            raise OrderInvalidError(f"datatoken {datatoken} is not deployed by {nft}")
        receipt = self._receipt(tx_id)
        fees = [
            event
            for event in abi.decode_events(abi.PROVIDER_FEE, receipt)
            if _provider_data(event).get("dt", "").lower() == datatoken.lower()
            and str(_provider_data(event).get("id")) == str(service["id"])
        ]
        if not fees:
            raise OrderInvalidError("no ProviderFee event for this datatoken and service")
        fee = fees[-1]
        provider_data = _provider_data(fee)
        if is_dataset and provider_data.get("environment") != environment:
            raise OrderInvalidError(
                f"order is for environment {provider_data.get('environment')!r}, not {environment!r}"
            )
        if fee["providerFeeAddress"].lower() != self.provider_address.lower() or not verify_provider_fee(
            self.provider_address,
            fee["providerData"],
            fee["providerFeeAddress"],
            fee["providerFeeToken"],
            fee["providerFeeAmount"],
            fee["validUntil"],
            fee["v"] if fee["v"] >= 27 else fee["v"] + 27,
            fee["r"],
            fee["s"],
        ):
            raise OrderInvalidError("provider fee not signed by this provider")
        block_ts = self._block_timestamp(receipt)
        fee_expired = False
        if is_dataset and fee["validUntil"] > 0:
            grace = block_ts - float(provider_data.get("timestamp", 0)) + FEE_GRACE_SECONDS
            fee_expired = now >= fee["validUntil"] + grace
            if fee_expired and enforce_fee_expiry:
                raise OrderInvalidError("Ordered c2d time was exceeded, check validUntil.")
        start_tx = tx_id
        order_receipt = receipt
        order_timestamp: int | None = None
        reused = abi.decode_events(abi.ORDER_REUSED, receipt, emitter=datatoken)
        if reused:
            start_tx = "0x" + reused[-1]["orderTxId"].hex()
            order_timestamp = int(reused[-1]["timestamp"])
            order_receipt = self._receipt(start_tx)
        started = [
            e
            for e in abi.decode_events(abi.ORDER_STARTED, order_receipt, emitter=datatoken)
            if e["serviceIndex"] == _service_index(ddo, service)
        ]
        if not started:
            raise OrderInvalidError("no OrderStarted event with this service's index")
        order = started[-1]
        if order["amount"] < ONE_TOKEN:
            raise OrderInvalidError("order paid less than one datatoken")
        timeout = int(service.get("timeout", 0))
        timestamp = order_timestamp if order_timestamp is not None else int(order["timestamp"])
        if timeout != 0 and now - timestamp > timeout:
            raise OrderInvalidError("The order has expired.")
        if sender.lower() not in (order["consumer"].lower(), order["payer"].lower()):
            raise OrderInvalidError(f"sender {sender} is neither the order's consumer nor its payer")
        return ValidOrder(tx_id, start_tx, fee, provider_data, fee_expired)


def _provider_data(event: dict[str, Any]) -> dict[str, Any]:
    try:
        data = json.loads(event["providerData"].decode())
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _service_index(ddo: dict[str, Any], service: dict[str, Any]) -> int:
    return next(i for i, s in enumerate(ddo.get("services", [])) if s.get("id") == service.get("id"))
