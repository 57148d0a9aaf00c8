"""The ``Escrow`` contract's ABI: function signatures, tuple types and events of both interfaces in use.

Pure constants and one decoder, no Airflow: used by the payer side
(:mod:`airflow_provider_ocean.payment.escrow`) and by the sandbox's Ocean Node personality, which locks,
claims and cancels on the same contract.

Which Escrow a chain has depends on who deployed it, and the client takes the address from the node's quote
(``payment.escrowAddress``), so it works with both interfaces that exist:

- **npm ``@oceanprotocol/contracts`` 2.x** (2.3.0 … 2.6.0, the latest on npm; the sandbox deploys 2.6.0).
  Every released Ocean Node imports its Escrow ABI from this package and makes the calls of
  :data:`NODE_ESCROW_CALLS`. Claims take ``(jobId, token, payer, amount, proof)``; ``getLocks`` returns
  ``(jobId, payer, amount, expiry, token)`` (:data:`LOCK_TYPE_2X`); ``Auth`` has no token
  (:data:`AUTH_EVENT`).
- **PyPI ``ocean-contracts`` 3.1.0**: claims add ``uint256 jobType, address[] subsidyProviders``
  (:data:`ESCROW_CLAIM_LOCK_AND_WITHDRAW_3X`), a lock adds ``startTime`` (:data:`LOCK_TYPE_3X`), ``Auth``
  adds an unindexed ``token`` after the payee (:data:`AUTH_EVENT_3X`); it also adds ``reLock``, ``bundle``
  and the ``ReLock``/``Subsidized`` events. A released node's 5-argument claim has no function on it, so
  its claims revert and the payer's funds stay locked until the lock expires.

The same in both (selectors and tuple layouts): ``deposit``, ``withdraw``, ``authorize``, ``getUserFunds``,
``getAuthorizations``, ``createLock``, ``cancelExpiredLock(s)`` and the ``Deposit``, ``Lock``, ``Claimed``,
``Canceled`` events.

How the payer side handles both without probing the contract: it calls only functions both have; it
decodes ``getLocks`` answers with :func:`decode_locks`, which reads the element width from the answer's
length (5 words: 2.x, 6 words: 3.1.0); it accepts either ``Auth`` event in an ``authorize`` receipt. It
never claims or cancels: that is the node's side, with exactly the calls of :data:`NODE_ESCROW_CALLS`.

Not modelled: the ocean-node source also holds later work ("Escrow v2", subsidy providers) whose
``createLock`` and claims take ``jobType`` and ``subsidyProviders`` and whose authorizations carry an
``expiryTimestamp``; it needs an Escrow that no published contracts package (npm or PyPI) ships. An
intermediate state of that work passed the two arguments to the claims only: the PyPI 3.1.0 interface.
"""

from __future__ import annotations

from typing import Any

from eth_utils import to_checksum_address

from airflow_provider_ocean.chain import abi

# Canonical signatures (checked against the deployed artifact's ABI in the tests).
ESCROW_DEPOSIT = "deposit(address,uint256)"
ESCROW_WITHDRAW = "withdraw(address[],uint256[])"
ESCROW_AUTHORIZE = "authorize(address,address,uint256,uint256,uint256)"
ESCROW_GET_USER_FUNDS = "getUserFunds(address,address)"
ESCROW_GET_AUTHORIZATIONS = "getAuthorizations(address,address,address)"
ESCROW_GET_LOCKS = "getLocks(address,address,address)"
ESCROW_CREATE_LOCK = "createLock(uint256,address,address,uint256,uint256)"
ESCROW_CLAIM_LOCK_AND_WITHDRAW = "claimLockAndWithdraw(uint256,address,address,uint256,bytes)"
ESCROW_CLAIM_LOCKS_AND_WITHDRAW = "claimLocksAndWithdraw(uint256[],address[],address[],uint256[],bytes[])"
ESCROW_CANCEL_EXPIRED_LOCK = "cancelExpiredLock(uint256,address,address,address)"
ESCROW_CANCEL_EXPIRED_LOCKS = "cancelExpiredLocks(uint256[],address[],address[],address[])"
#: The PyPI ocean-contracts 3.1.0 claim (``jobType``, ``subsidyProviders`` added); no released node calls it.
ESCROW_CLAIM_LOCK_AND_WITHDRAW_3X = (
    "claimLockAndWithdraw(uint256,address,address,uint256,bytes,uint256,address[])"
)

#: Every Escrow function a released Ocean Node calls, with its 4-byte selector (one place; the tests
#: recompute the selectors and find each one in the deployed sandbox Escrow). Read from
#: oceanprotocol/ocean-node ``src/components/core/utils/escrow.ts`` (class ``Escrow``:
#: ``getUserAvailableFunds``, ``getAuthorizations``, ``getLocks``, ``createLock``, ``claimLock``,
#: ``claimLocks``, ``cancelExpiredLock``, ``cancelExpiredLocks``; the ABI imported from
#: ``@oceanprotocol/contracts/artifacts/contracts/escrow/Escrow.sol/Escrow.json``) and
#: ``src/components/c2d/compute_engine_docker.ts`` (``claimPayments``: ``getLocks(0x0, 0x0, node)``, one
#: batch claim per chain with a per-job fallback, one batch cancel of expired or unpaid locks with a per-job
#: fallback; ``cleanUpUnknownLocks``).
NODE_ESCROW_CALLS: tuple[tuple[str, str], ...] = (
    (ESCROW_GET_USER_FUNDS, "0x3a8ae44f"),  # paid start: available funds
    (ESCROW_GET_AUTHORIZATIONS, "0xdc697a5a"),  # paid start: exactly one authorization of the node
    (ESCROW_CREATE_LOCK, "0x842d2c20"),  # paid start, from the node's key
    (ESCROW_GET_LOCKS, "0x7d3d2336"),  # payment cron: the node's locks
    (ESCROW_CLAIM_LOCKS_AND_WITHDRAW, "0x78a90e19"),  # payment cron: batch claim
    (ESCROW_CLAIM_LOCK_AND_WITHDRAW, "0xe46c3b29"),  # payment cron: one claim (batch failed)
    (ESCROW_CANCEL_EXPIRED_LOCKS, "0x89464ccf"),  # payment cron: batch cancel (expired or nothing to pay)
    (ESCROW_CANCEL_EXPIRED_LOCK, "0x3f918c03"),  # payment cron: one cancel (batch failed)
)

FUNDS_TYPE = "(uint256,uint256)"
AUTH_TYPE = "(address,uint256,uint256,uint256,uint256,uint256)[]"
#: ``getLocks`` element of @oceanprotocol/contracts 2.x: jobId, payer, amount, expiry, token.
LOCK_TYPE_2X = "(uint256,address,uint256,uint256,address)[]"
#: ``getLocks`` element of ocean-contracts 3.1.0: jobId, payer, amount, expiry, token, startTime.
LOCK_TYPE_3X = "(uint256,address,uint256,uint256,address,uint256)[]"


def decode_locks(data: bytes) -> list[tuple[Any, ...]]:
    """Decode a ``getLocks`` answer of either interface.

    The answer is a dynamic array of static tuples (offset, count, then ``count`` elements of 5 or 6 words),
    so its length says which layout it is.

    :param data: the raw ``eth_call`` return data.
    :return: ``(jobId, payer, amount, expiry, token, startTime)`` per lock (addresses checksummed);
        ``startTime`` is ``None`` on the 2.x Escrow, which does not record it.
    :raises ValueError: the answer fits neither layout.
    """
    if len(data) < 64:
        raise ValueError(f"getLocks answered {len(data)} bytes, not an array")
    offset = int.from_bytes(data[:32], "big")
    if offset + 32 > len(data):
        raise ValueError(f"getLocks answered {len(data)} bytes, not an array")
    count = int.from_bytes(data[offset : offset + 32], "big")
    if count == 0:
        return []
    words, rest = divmod(len(data) - offset - 32, 32 * count)
    if rest or words not in (5, 6):
        raise ValueError(f"getLocks answered {len(data)} bytes for {count} locks: neither Escrow layout")
    (entries,) = abi.decode_output([LOCK_TYPE_2X if words == 5 else LOCK_TYPE_3X], data)
    return [
        (job, to_checksum_address(payer), amount, expiry, to_checksum_address(token), *(rest or (None,)))
        for job, payer, amount, expiry, token, *rest in entries
    ]


# Events. ``Deposit``, ``Lock``, ``Claimed`` and ``Canceled`` are the same in both interfaces.
DEPOSIT_EVENT = abi.EventAbi(
    "Deposit(address,address,uint256)", ("payer", "token", "amount"), (True, False, False)
)
#: ``Auth`` of @oceanprotocol/contracts 2.x (the deployed sandbox Escrow).
AUTH_EVENT = abi.EventAbi(
    "Auth(address,address,uint256,uint256,uint256)",
    ("payer", "payee", "maxLockedAmount", "maxLockSeconds", "maxLockCounts"),
    (True, True, False, False, False),
)
#: ``Auth`` of ocean-contracts 3.1.0: an unindexed ``token`` after the payee.
AUTH_EVENT_3X = abi.EventAbi(
    "Auth(address,address,address,uint256,uint256,uint256)",
    ("payer", "payee", "token", "maxLockedAmount", "maxLockSeconds", "maxLockCounts"),
    (True, True, False, False, False, False),
)
LOCK_EVENT = abi.EventAbi(
    "Lock(address,address,uint256,uint256,uint256,address)",
    ("payer", "payee", "jobId", "amount", "expiry", "token"),
    (False, False, False, False, False, False),
)
CLAIMED_EVENT = abi.EventAbi(
    "Claimed(address,uint256,address,address,uint256,bytes)",
    ("payee", "jobId", "token", "payer", "amount", "proof"),
    (True, False, False, True, False, False),
)
CANCELED_EVENT = abi.EventAbi(
    "Canceled(address,uint256,address,address,uint256)",
    ("payee", "jobId", "token", "payer", "amount"),
    (True, False, False, True, False),
)
