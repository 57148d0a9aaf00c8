"""What every compute backend offers (:class:`ComputeBackend`) and what it is given (:class:`BackendContext`).

A backend never sees the hook: the hook builds one :class:`BackendContext` from the connection (settings,
the wallet's signer, the chain client, a DDO reader) and hands it to the backend it chose.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from airflow_provider_ocean.exceptions import (
    OceanConfigError,
    OceanConnectionError,
    OceanError,
    OceanWalletLockError,
    redact,
)
from airflow_provider_ocean.signing import nonce_allocator

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from airflow_provider_ocean.chain.rpc import JsonRpcClient
    from airflow_provider_ocean.chain.tx import TransactionSender
    from airflow_provider_ocean.locks import WalletLocks
    from airflow_provider_ocean.models import (
        ComputeEnvironment,
        DownloadedResult,
        JobStatus,
    )
    from airflow_provider_ocean.settings import OceanConnectionSettings
    from airflow_provider_ocean.signing import Signer
    from airflow_provider_ocean.wire.download import Destination
    from airflow_provider_ocean.wire.http import WireClient

_Client = TypeVar("_Client", bound="WireClient")


class Log(Protocol):
    """What the backends log through: a :class:`logging.Logger` or the hook's Airflow logger."""

    def info(self, msg: str, /, *args: Any) -> Any: ...

    def warning(self, msg: str, /, *args: Any) -> Any: ...


def _mask(secret: str) -> None:
    from airflow.sdk.log import mask_secret

    bare = secret[2:] if secret.lower().startswith("0x") else secret
    for value in {secret, bare, "0x" + bare}:
        mask_secret(value)


@dataclass(kw_only=True, eq=False, repr=False)
class BackendContext:
    """The connection as a backend sees it; every piece is built on first use (no I/O before).

    :param settings: the parsed connection settings.
    :param conn_id: the connection id (for error messages).
    :param read_password: returns the connection's password (the wallet's private key); called once.
    :param read_auth_token: returns the ``auth_token`` extra (Ocean Node), if any.
    :param get_ddo: reads an asset's DDO.
    :param log: the hook's logger.
    :param retry_limit: attempts for idempotent reads.
    :param retry_delay: initial backoff between those attempts, in seconds.
    :param write_path: how results are written to a path: ``cache`` or ``direct`` (``wire/download.py``).
    :param order_journal: while set, called with a record of every order transaction right before its
        broadcast (see payment/journal.py); the hook sets it for one payment.
    """

    settings: OceanConnectionSettings
    conn_id: str
    read_password: Callable[[], str | None]
    read_auth_token: Callable[[], str | None]
    get_ddo: Callable[[str], dict[str, Any]]
    log: Log
    retry_limit: int = 3
    retry_delay: float = 1.0
    write_path: str = "cache"
    order_journal: Callable[[dict[str, Any]], None] | None = None

    def __repr__(self) -> str:
        return f"BackendContext(conn_id={self.conn_id!r}, url={self.settings.provider_url!r})"

    @cached_property
    def signer(self) -> Signer:
        """The consumer wallet's signer, built from the connection password (masked right away)."""
        from airflow_provider_ocean.signing import Signer, is_private_key

        password = self.read_password()
        if not password:
            raise OceanConfigError(
                f"Connection {self.conn_id!r} has no password: set it to the consumer wallet's private key"
            )
        password = password.strip()
        _mask(password)
        if not is_private_key(password):
            raise OceanConfigError(
                f"The password of connection {self.conn_id!r} is not a private key: expected 64 hex "
                "digits (32 bytes), optionally prefixed with 0x"
            )
        return Signer(password)

    @property
    def consumer_address(self) -> str:
        """The consumer wallet's checksummed address (the job owner string used everywhere)."""
        return self.signer.address

    @cached_property
    def auth_token(self) -> str | None:
        """The ``auth_token`` extra (sent instead of signatures to an Ocean Node)."""
        return self.read_auth_token() or None

    @cached_property
    def rpc(self) -> JsonRpcClient:
        """JSON-RPC client of the chain (needs the ``rpc_url`` extra)."""
        from airflow_provider_ocean.chain.rpc import JsonRpcClient

        if not self.settings.rpc_url:
            raise OceanConfigError(
                f"Connection {self.conn_id!r} has no rpc_url extra: it is needed to pay for orders"
            )
        return JsonRpcClient(
            self.settings.rpc_url, timeout=self.settings.timeout, verify=self.settings.verify_ssl
        )

    @cached_property
    def sender(self) -> TransactionSender:
        """Transaction sender of the consumer wallet."""
        return self.signer.transaction_sender(self.rpc, locks=self.wallet_locks)

    @cached_property
    def wallet_locks(self) -> WalletLocks:
        """The wallet locks of the connection: a cluster lock (``wallet_lock_url``) or this host's files.

        :raises OceanWalletLockError: the lock URL is not usable (redis-py missing).
        """
        from airflow_provider_ocean.locks import WalletLockError, wallet_locks

        try:
            return wallet_locks(self.settings.wallet_lock_url)
        except WalletLockError as exc:
            raise OceanWalletLockError(str(exc)) from None

    def check_wallet_lock(self) -> None:
        """Check that a configured cluster wallet lock answers (nothing to check without one).

        :raises OceanWalletLockError: it cannot be reached.
        """
        from airflow_provider_ocean.locks import RedisLocks, WalletLockError

        locks = self.wallet_locks
        if isinstance(locks, RedisLocks):
            try:
                locks.ping()
            except WalletLockError as exc:
                raise OceanWalletLockError(str(exc)) from None

    def wire_client(self, client_type: type[_Client], **extra: Any) -> _Client:
        """A wire client of the connection's server, with its timeout, TLS and retry settings.

        :param client_type: the backend's client class.
        :param extra: that class's own arguments (``aquarius_url``, ``auth_token``).
        """
        if self.settings.wallet_lock_url:  # else the backend module's process-wide allocator
            extra.setdefault("nonces", nonce_allocator(self.settings.wallet_lock_url))
        return client_type(
            self.settings.provider_url,
            timeout=self.settings.timeout,
            verify=self.settings.verify_ssl,
            retry_limit=self.retry_limit,
            retry_delay=self.retry_delay,
            write_path=self.write_path,
            **extra,
        )

    def check_rpc_chain(self, chain_id: int) -> None:
        """Check, before anything is paid, that the RPC node answers and serves the connection's chain.

        :param chain_id: the connection's chain.
        :raises OceanConnectionError: the RPC node cannot be reached.
        :raises OceanConfigError: it serves another chain.
        """
        try:
            rpc_chain_id = self.sender.chain_id
        except OceanError:
            raise
        except Exception as exc:  # the chain client's errors (chain/errors.py) and transport errors
            raise OceanConnectionError(
                f"The RPC node at {self.settings.rpc_url} cannot be reached: {redact(str(exc))}",
                url=self.settings.rpc_url,
            ) from exc
        if rpc_chain_id != chain_id:
            raise OceanConfigError(
                f"The RPC node at {self.settings.rpc_url} serves chain {rpc_chain_id}, "
                f"the connection says {chain_id}"
            )

    def chain_id(self, served: Callable[[], list[int]], server: str) -> int:
        """The connection's ``chain_id``, else the server's only chain.

        :param served: returns the chains the server serves (asked only without a configured chain id).
        :param server: what the server is, for the error message (``Provider``, ``node``).
        """
        if self.settings.chain_id is not None:
            return self.settings.chain_id
        chains = served()
        if len(chains) == 1:
            return chains[0]
        raise OceanConfigError(
            f"Set the connection extra chain_id: the {server} serves chains {chains or 'none'}"
        )


class ComputeBackend(Protocol):
    """The job methods of :class:`~airflow_provider_ocean.hooks.ocean.OceanComputeHook`, per protocol.

    The hook's public methods of the same names document the parameters; a backend implements them for
    one server protocol and is built from a :class:`BackendContext`.
    """

    name: str

    @property
    def chain_id(self) -> int: ...

    def test_connection(self) -> tuple[bool, str]: ...

    def get_environments(self) -> list[ComputeEnvironment]: ...

    def resolve_environment(
        self, environment: str | ComputeEnvironment | None = None
    ) -> ComputeEnvironment: ...

    def pay_for_compute(
        self,
        datasets: list[Any],
        algorithm: Any,
        environment: str | ComputeEnvironment | None = None,
        valid_until: Any = None,
        max_fee: int | None = None,
        transfer_tx_ids: Any = None,
        *,
        acquire_datatokens: str | None = None,
        max_datatoken_price: int | None = None,
        **node_options: Any,
    ) -> dict[str, Any]: ...

    def start_compute(
        self,
        datasets: list[Any],
        algorithm: Any,
        payment: dict[str, Any] | None = None,
        environment: str | None = None,
        *,
        on_attempt: Callable[[dict[str, Any]], None] | None = None,
    ) -> JobStatus: ...

    def find_started_job(
        self,
        transfer_tx_ids: Iterable[str],
        *,
        known_job_ids: Iterable[str] = (),
        started_at: float | None = None,
        clock_skew: float = ...,
        start_id: str | None = None,
    ) -> JobStatus | None: ...

    def recent_orders(
        self,
        datasets: list[Any],
        algorithm: Any,
        environment: str | ComputeEnvironment | None = None,
        *,
        lookback_blocks: int = ...,
    ) -> dict[str, Any] | None: ...

    def list_jobs(self) -> list[JobStatus]: ...

    def get_job_status(self, job_id: str) -> JobStatus: ...

    def stop_job(self, job_id: str) -> JobStatus | None: ...

    def delete_job(self, job_id: str) -> None: ...

    def download_result(
        self, job_id: str, index: int, destination: Destination, *, raw_logs: bool = False
    ) -> DownloadedResult: ...
