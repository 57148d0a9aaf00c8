"""The settings of an ``ocean`` connection: parsed once, without I/O, never holding the password.

The connection (type ``ocean``):

- ``host``: the Provider or Ocean Node base URL (``https://provider.example.com``; without a scheme
  ``https`` is assumed unless the extra ``scheme`` says ``http``), ``port`` optional;
- ``password``: the consumer wallet's private key (read by the hook, never here);
- extras (plain keys or ``extra__ocean__<field>``): ``rpc_url``, ``chain_id``, ``aquarius_url``,
  ``backend`` (``auto``/``provider_v4``/``ocean_node``), ``auth_token``, ``timeout``, ``verify_ssl``,
  ``wallet_lock_url`` (a Redis URL: one wallet lock for every host, see docs/deployment.md).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_ocean.exceptions import OceanConfigError, register_secret
from airflow_provider_ocean.locks import LOCK_URL_SCHEMES, redacted_url

if TYPE_CHECKING:
    from airflow.sdk import Connection

SUPPORTED_BACKENDS = (None, "", "auto", "provider_v4", "ocean_node")
DEFAULT_TIMEOUT = 30.0


def extra_value(extras: dict[str, Any], name: str) -> Any:
    """Read an extra by its plain name or its ``extra__ocean__`` form (empty strings count as unset)."""
    for key in (name, f"extra__ocean__{name}"):
        value = extras.get(key)
        if value not in (None, ""):
            return value
    return None


def _as_bool(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise OceanConfigError(f"verify_ssl must be true or false, got {value!r}")


@dataclasses.dataclass(frozen=True)
class OceanConnectionSettings:
    """The non-secret part of an ``ocean`` connection.

    :param provider_url: Provider base URL with scheme, no trailing slash.
    :param aquarius_url: Aquarius base URL (defaults to the Provider URL).
    :param rpc_url: JSON-RPC URL of the chain (needed to pay).
    :param chain_id: the chain id, if configured.
    :param backend: ``auto``, ``provider_v4`` or ``ocean_node``.
    :param timeout: read timeout for ordinary requests.
    :param verify_ssl: verify TLS certificates.
    :param wallet_lock_url: a Redis URL whose lock serialises the wallet's nonces across every host
        (``None``: each host's lock files; see docs/deployment.md). May hold a password: not in ``repr``.
    """

    provider_url: str
    aquarius_url: str
    rpc_url: str | None
    chain_id: int | None
    backend: str
    timeout: float
    verify_ssl: bool
    wallet_lock_url: str | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def from_connection(cls, conn: Connection, *, timeout: float | None = None) -> OceanConnectionSettings:
        """Parse a connection (never reads or returns the password).

        :param conn: the Airflow connection.
        :param timeout: overrides the connection's ``timeout`` extra.
        """
        extras = conn.extra_dejson or {}
        host = (conn.host or "").strip()
        if not host:
            raise OceanConfigError(f"Connection {conn.conn_id!r} has no host: set it to the Provider URL")
        if "://" in host:
            url = host.rstrip("/")
            if conn.port and url.count(":") < 2:
                url = f"{url}:{conn.port}"
        else:
            scheme = str(extra_value(extras, "scheme") or "https").lower()
            if scheme not in ("http", "https"):
                raise OceanConfigError(f"The extra 'scheme' must be http or https, got {scheme!r}")
            url = f"{scheme}://{host.rstrip('/')}" + (f":{conn.port}" if conn.port else "")
        chain_id = extra_value(extras, "chain_id")
        try:
            chain_id = int(chain_id) if chain_id is not None else None
        except (TypeError, ValueError):
            raise OceanConfigError(f"chain_id must be an integer, got {chain_id!r}") from None
        backend = str(extra_value(extras, "backend") or "auto").lower()
        if backend not in SUPPORTED_BACKENDS:
            raise OceanConfigError(
                f"backend {backend!r} is not supported by OceanComputeHook "
                "(supported: auto, provider_v4, ocean_node)"
            )
        raw_timeout = timeout if timeout is not None else extra_value(extras, "timeout")
        try:
            read_timeout = float(raw_timeout) if raw_timeout is not None else DEFAULT_TIMEOUT
        except (TypeError, ValueError):
            raise OceanConfigError(f"timeout must be a number of seconds, got {raw_timeout!r}") from None
        if read_timeout <= 0:
            raise OceanConfigError("timeout must be positive")
        aquarius = extra_value(extras, "aquarius_url")
        rpc_url = extra_value(extras, "rpc_url")
        lock_url = str(extra_value(extras, "wallet_lock_url") or "").strip() or None
        if lock_url is not None:
            if not lock_url.startswith(LOCK_URL_SCHEMES):
                raise OceanConfigError(
                    "wallet_lock_url must be a redis://, rediss:// or unix:// URL of the Redis that holds "
                    f"the wallet lock, got {redacted_url(lock_url)!r}"
                )
            password = urlsplit(lock_url).password
            if password:
                register_secret(password)
        return cls(
            provider_url=url,
            aquarius_url=str(aquarius).rstrip("/") if aquarius else url,
            rpc_url=str(rpc_url) if rpc_url else None,
            chain_id=chain_id,
            backend=backend,
            timeout=read_timeout,
            verify_ssl=_as_bool(extra_value(extras, "verify_ssl"), True),
            wallet_lock_url=lock_url,
        )
