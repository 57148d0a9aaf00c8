"""Errors raised by the chain client.

They derive from :class:`Exception` only, so that the chain module stays importable without
Airflow (the sandbox uses it); the hook re-raises them as Airflow exceptions.
"""

from __future__ import annotations


class ChainError(Exception):
    """Base class of every chain client error."""


class RpcError(ChainError):
    """The JSON-RPC node answered with an error object.

    :param method: the JSON-RPC method called.
    :param code: the error code from the node.
    :param message: the node's message.
    :param data: the error's ``data`` member, if any.
    """

    def __init__(self, method: str, code: int | None, message: str, data: object = None) -> None:
        self.method = method
        self.code = code
        self.rpc_message = message
        self.data = data
        super().__init__(f"{method} failed: {message} (code {code})")


class RpcUnavailableError(ChainError):
    """The JSON-RPC node could not be reached or answered something that is not JSON-RPC.

    :param message: what happened.
    :param transient: worth another attempt (no answer, a timeout, a reset, HTTP 429 or 5xx).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        self.transient = transient
        super().__init__(message)


class ReceiptTimeoutError(ChainError):
    """No receipt arrived for a transaction within the allowed time."""

    def __init__(self, tx_hash: str, timeout: float) -> None:
        self.tx_hash = tx_hash
        super().__init__(f"transaction {tx_hash} was not mined within {timeout:.0f} s")


class TransactionRevertedError(ChainError):
    """A transaction was mined with ``status == 0``.

    :param tx_hash: the transaction hash.
    :param reason: the revert reason when the node reports one.
    """

    def __init__(self, tx_hash: str, reason: str | None, what: str = "transaction") -> None:
        self.tx_hash = tx_hash
        self.reason = reason
        detail = f": {reason}" if reason else " (no revert reason)"
        super().__init__(f"{what} {tx_hash} reverted{detail}")


class TransactionReplacedError(ChainError):
    """A sent transaction's nonce was used by another transaction of the same account, so it can never be
    mined (it spent nothing), and re-sending the call gave up after a few attempts.

    :param tx_hash: the replaced transaction's hash.
    :param nonce: its nonce.
    :param what: what it was for (``"startOrder on 0x…"``).
    :param attempts: how many times the call was sent in all.
    """

    def __init__(self, tx_hash: str, nonce: int, what: str = "transaction", attempts: int = 1) -> None:
        self.tx_hash = tx_hash
        self.nonce = nonce
        super().__init__(
            f"{what} {tx_hash} can never be mined: its nonce {nonce} was used by another transaction of "
            f"the same account (sent {attempts} time(s); another host is using this wallet heavily - "
            "configure a shared wallet lock, see docs/deployment.md)"
        )


class WalletLockUnavailableError(ChainError):
    """The configured wallet lock (``wallet_lock_url``) could not be taken; nothing was signed."""
