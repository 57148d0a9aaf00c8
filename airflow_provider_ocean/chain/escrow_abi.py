"""The ``Escrow`` contract's ABI (ocean-contracts 3.1.0): function signatures, tuple types and events.

Pure constants, no Airflow: used by the payer side (:mod:`airflow_provider_ocean.escrow`) and by the
sandbox's Ocean Node personality, which locks and claims on the same contract.
"""

from __future__ import annotations

from airflow_provider_ocean.chain import abi

# Canonical signatures (checked against the ocean-contracts artifact ABI in the tests).
ESCROW_DEPOSIT = "deposit(address,uint256)"
ESCROW_WITHDRAW = "withdraw(address[],uint256[])"
ESCROW_AUTHORIZE = "authorize(address,address,uint256,uint256,uint256)"
ESCROW_GET_USER_FUNDS = "getUserFunds(address,address)"
ESCROW_GET_AUTHORIZATIONS = "getAuthorizations(address,address,address)"
ESCROW_GET_LOCKS = "getLocks(address,address,address)"
ESCROW_CREATE_LOCK = "createLock(uint256,address,address,uint256,uint256)"
#: ocean-contracts 3.1.0 (the deployed artifact) adds ``jobType`` and ``subsidyProviders`` to claims.
ESCROW_CLAIM_LOCK_AND_WITHDRAW = (
    "claimLockAndWithdraw(uint256,address,address,uint256,bytes,uint256,address[])"
)
ESCROW_CANCEL_EXPIRED_LOCK = "cancelExpiredLock(uint256,address,address,address)"
FUNDS_TYPE = "(uint256,uint256)"
AUTH_TYPE = "(address,uint256,uint256,uint256,uint256,uint256)[]"
#: ``lock`` struct of ocean-contracts 3.1.0: jobId, payer, amount, expiry, token, startTime.
LOCK_TYPE = "(uint256,address,uint256,uint256,address,uint256)[]"

# Events. ``Auth`` gained an unindexed ``token`` in ocean-contracts 3.1.0; the reference's 5-argument
# signature is that of earlier releases. Both are decoded.
DEPOSIT_EVENT = abi.EventAbi(
    "Deposit(address,address,uint256)", ("payer", "token", "amount"), (True, False, False)
)
AUTH_EVENT = abi.EventAbi(
    "Auth(address,address,address,uint256,uint256,uint256)",
    ("payer", "payee", "token", "maxLockedAmount", "maxLockSeconds", "maxLockCounts"),
    (True, True, False, False, False, False),
)
AUTH_EVENT_V2 = abi.EventAbi(
    "Auth(address,address,uint256,uint256,uint256)",
    ("payer", "payee", "maxLockedAmount", "maxLockSeconds", "maxLockCounts"),
    (True, True, False, False, False),
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
