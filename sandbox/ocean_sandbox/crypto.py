"""Provider-side signatures: request signature recovery and provider-fee signing (as the Provider does)."""

from __future__ import annotations

from eth_abi.packed import encode_packed
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak, to_checksum_address


def recover_request_signer(message: str, signature: str) -> str:
    """Recover the checksummed signer of a Provider request signature.

    The signature is EIP-191 over the 32-byte keccak of the UTF-8 message; ``v`` may be 27/28 or 0/1.
    """
    raw = bytes.fromhex(signature[2:] if signature.startswith("0x") else signature)
    if len(raw) != 65:
        raise ValueError("signature must be 65 bytes")
    if raw[64] in (0, 1):
        raw = raw[:64] + bytes([raw[64] + 27])
    digest = keccak(text=message)
    return to_checksum_address(Account.recover_message(encode_defunct(primitive=digest), signature=raw))


def provider_fee_hash(
    provider_data: bytes, fee_address: str, fee_token: str, amount: int, valid_until: int
) -> bytes:
    """``keccak256(abi.encodePacked(providerData, feeAddress, feeToken, amount, validUntil))``."""
    packed = encode_packed(
        ["bytes", "address", "address", "uint256", "uint256"],
        [provider_data, fee_address, fee_token, amount, valid_until],
    )
    return keccak(packed)


def sign_provider_fee(
    provider_key: str, provider_data: bytes, fee_address: str, fee_token: str, amount: int, valid_until: int
) -> dict[str, object]:
    """Sign a provider fee; returns ``v`` (27/28), ``r`` and ``s`` as the Provider puts them in JSON."""
    digest = provider_fee_hash(provider_data, fee_address, fee_token, amount, valid_until)
    signed = Account.sign_message(encode_defunct(primitive=digest), provider_key)
    return {
        "v": signed.v,
        "r": "0x" + signed.r.to_bytes(32, "big").hex(),
        "s": "0x" + signed.s.to_bytes(32, "big").hex(),
    }


def verify_provider_fee(
    provider_address: str,
    provider_data: bytes,
    fee_address: str,
    fee_token: str,
    amount: int,
    valid_until: int,
    v: int,
    r: bytes,
    s: bytes,
) -> bool:
    """Whether ``(v, r, s)`` is the provider's signature over the fee (the on-chain check, done off-chain)."""
    digest = provider_fee_hash(provider_data, fee_address, fee_token, amount, valid_until)
    try:
        signer = Account.recover_message(encode_defunct(primitive=digest), vrs=(v, r, s))
    except Exception:
        return False
    return signer.lower() == provider_address.lower()


def did_for(nft_address: str, chain_id: int) -> str:
    """The v4 DID rule: ``did:op:`` + sha256 hex of the checksummed NFT address and the decimal chain id."""
    import hashlib

    return "did:op:" + hashlib.sha256((to_checksum_address(nft_address) + str(chain_id)).encode()).hexdigest()
