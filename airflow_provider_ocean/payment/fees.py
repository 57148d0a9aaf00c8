"""Provider fees and order requests: what ``initializeCompute`` answered, ready for the order payer.

:class:`ProviderFee` is the fee a Provider (or Ocean Node) signed for one input, parsed from its JSON and
laid out as the ``startOrder``/``reuseOrder`` tuple; :class:`OrderRequest` is one input to pay for, with
its item of the answer (:func:`make_requests` pairs the inputs with their items).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_utils import to_checksum_address

from airflow_provider_ocean.exceptions import OceanValidationError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow_provider_ocean.records import Orderable

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


@dataclass(frozen=True)
class ProviderFee:
    """A provider fee as signed by the Provider, ready to be passed to ``startOrder``/``reuseOrder``.

    :param address: ``providerFeeAddress``.
    :param token: ``providerFeeToken``.
    :param amount: ``providerFeeAmount`` in base units.
    :param v: signature ``v`` (27/28).
    :param r: signature ``r``.
    :param s: signature ``s``.
    :param valid_until: unix seconds.
    :param provider_data: the raw ``providerData`` bytes (compact JSON).
    """

    address: str
    token: str
    amount: int
    v: int
    r: bytes
    s: bytes
    valid_until: int
    provider_data: bytes

    @classmethod
    def from_json(cls, data: Any) -> ProviderFee:
        """Parse the ``providerFee`` object of ``initializeCompute``.

        :param data: the object (amount as a decimal string, r/s/providerData as 0x-hex).
        """
        if not isinstance(data, dict):
            raise OceanValidationError("initializeCompute returned a providerFee that is not an object")
        try:
            v = int(data["v"])
            return cls(
                address=to_checksum_address(data["providerFeeAddress"]),
                token=to_checksum_address(data["providerFeeToken"]),
                amount=int(str(data["providerFeeAmount"])),
                v=v + 27 if v in (0, 1) else v,
                r=_bytes32(data["r"]),
                s=_bytes32(data["s"]),
                valid_until=int(data["validUntil"]),
                provider_data=_hex_bytes(data["providerData"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise OceanValidationError(
                f"initializeCompute returned a malformed providerFee ({exc})"
            ) from None

    def as_tuple(self) -> tuple[Any, ...]:
        """The ABI tuple ``(address, token, amount, v, r, s, validUntil, providerData)`` — data last."""
        return (
            self.address,
            self.token,
            self.amount,
            self.v,
            self.r,
            self.s,
            self.valid_until,
            self.provider_data,
        )

    def data(self) -> dict[str, Any] | None:
        """The decoded ``providerData`` JSON (``environment``, ``timestamp``, ``dt``, ``id``), if JSON."""
        try:
            value = json.loads(self.provider_data.decode())
        except (UnicodeDecodeError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    @property
    def is_payable(self) -> bool:
        """True when this fee moves tokens (non-zero amount in a real token)."""
        return self.amount > 0 and self.token.lower() != ZERO_ADDRESS


def _hex_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    text = str(value)
    return bytes.fromhex(text[2:] if text.startswith(("0x", "0X")) else text)


def _bytes32(value: Any) -> bytes:
    raw = _hex_bytes(value)
    if len(raw) > 32:
        raise ValueError("signature part longer than 32 bytes")
    return raw.rjust(32, b"\0")


@dataclass
class OrderRequest:
    """One input to pay for.

    :param role: ``dataset`` or ``algorithm``.
    :param did: the asset DID.
    :param service_id: the service id.
    :param service_index: position of the service in the DDO's ``services[]``.
    :param datatoken: the service's datatoken.
    :param quote: this input's item of the ``initializeCompute`` answer.
    :param transfer_tx_id: the order tx that was passed to ``initializeCompute``, if any.
    """

    role: str
    did: str
    service_id: str
    service_index: int
    datatoken: str
    quote: dict[str, Any]
    transfer_tx_id: str | None = None


def make_requests(items: Sequence[Orderable], quotes: list[dict[str, Any]]) -> list[OrderRequest]:
    """Zip the inputs to order with their quotes.

    :param items: the inputs.
    :param quotes: the matching ``initializeCompute`` items.
    """
    if len(items) != len(quotes):
        raise OceanValidationError(f"{len(quotes)} quotes for {len(items)} inputs")
    return [
        OrderRequest(role, did, sid, index, dt, quote, tx)
        for (role, did, sid, index, dt, tx), quote in zip(items, quotes, strict=True)
    ]


__all__ = ["ZERO_ADDRESS", "OrderRequest", "ProviderFee", "make_requests"]
