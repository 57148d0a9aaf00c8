"""Hook for Ocean Protocol compute-to-data against an Ocean Provider v4.

The connection (type ``ocean``):

- ``host``: the Provider base URL (``https://provider.example.com``; without a scheme ``https`` is
  assumed unless the extra ``scheme`` says ``http``), ``port`` optional;
- ``password``: the consumer wallet's private key (64 hex digits; masked, never logged);
- extras (plain keys or ``extra__ocean__<field>``): ``rpc_url``, ``chain_id``, ``aquarius_url``,
  ``backend`` (``auto``/``provider_v4``/``ocean_node``), ``auth_token``, ``timeout``, ``verify_ssl``.

Importing this module is cheap: eth-account, eth-abi, the chain client and the wire client are imported
when first used.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timedelta
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_provider_ocean.exceptions import (
    OceanConfigError,
    OceanConnectionError,
    OceanError,
    OceanJobNotFoundError,
    OceanOrderInUseError,
    OceanProviderError,
    OceanStartOutcomeUnknownError,
    OceanValidationError,
    redact,
)
from airflow_provider_ocean.models import (
    ComputeAlgorithm,
    ComputeEnvironment,
    ComputeInput,
    JobStatus,
    PaidOrder,
)

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterable

    from airflow.sdk import Connection

    from airflow_provider_ocean.chain.rpc import JsonRpcClient
    from airflow_provider_ocean.chain.tx import TransactionSender
    from airflow_provider_ocean.hooks.node_backend import OceanNodeBackend
    from airflow_provider_ocean.models import DownloadedResult, ResultFile
    from airflow_provider_ocean.provider_v4 import ProviderV4Client
    from airflow_provider_ocean.signing import Signer

CONN_FIELDS = ("rpc_url", "chain_id", "aquarius_url", "backend", "timeout", "verify_ssl")
SUPPORTED_BACKENDS = (None, "", "auto", "provider_v4", "ocean_node")
DEFAULT_TIMEOUT = 30.0
#: Looks for the job of a start whose outcome is unknown (a timed-out request may still be processed).
START_LOOKUP_ATTEMPTS = 4
#: Seconds between those looks.
START_LOOKUP_DELAY = 2.0
#: Tolerated difference between the Provider's clock (``dateCreated``) and ours.
START_CLOCK_SKEW = 300.0
#: How many blocks back :meth:`OceanComputeHook.recent_orders` looks for orders paid by this wallet.
ORDER_LOOKBACK_BLOCKS = 5000
_IN_USE = "already in use for other job"


def _outcome_unknown(exc: OceanError) -> bool:
    """Whether a failed start may nevertheless have created a job.

    Transport errors after the request may have been sent, 5xx (the duplicate-nonce 503 comes *after*
    the operator created the job; gateways answer 502/504 while the Provider keeps working) and a 2xx
    whose body could not be read. A 4xx is a refusal: nothing was started.
    """
    if isinstance(exc, OceanConnectionError):
        return exc.request_sent is not False
    if isinstance(exc, OceanProviderError):
        return exc.status is None or exc.status >= 500 or exc.status < 400
    return False


def _epoch(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _unique(values: Iterable[str | None]) -> list[str]:
    out: list[str] = []
    for value in values:
        if value and value not in out:
            out.append(value)
    return out


def _extra(extras: dict[str, Any], name: str) -> Any:
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
    """

    provider_url: str
    aquarius_url: str
    rpc_url: str | None
    chain_id: int | None
    backend: str
    timeout: float
    verify_ssl: bool

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
            scheme = str(_extra(extras, "scheme") or "https").lower()
            if scheme not in ("http", "https"):
                raise OceanConfigError(f"The extra 'scheme' must be http or https, got {scheme!r}")
            url = f"{scheme}://{host.rstrip('/')}" + (f":{conn.port}" if conn.port else "")
        chain_id = _extra(extras, "chain_id")
        try:
            chain_id = int(chain_id) if chain_id is not None else None
        except (TypeError, ValueError):
            raise OceanConfigError(f"chain_id must be an integer, got {chain_id!r}") from None
        backend = str(_extra(extras, "backend") or "auto").lower()
        if backend not in SUPPORTED_BACKENDS:
            raise OceanConfigError(
                f"backend {backend!r} is not supported by OceanComputeHook "
                "(supported: auto, provider_v4, ocean_node)"
            )
        raw_timeout = timeout if timeout is not None else _extra(extras, "timeout")
        try:
            read_timeout = float(raw_timeout) if raw_timeout is not None else DEFAULT_TIMEOUT
        except (TypeError, ValueError):
            raise OceanConfigError(f"timeout must be a number of seconds, got {raw_timeout!r}") from None
        if read_timeout <= 0:
            raise OceanConfigError("timeout must be positive")
        aquarius = _extra(extras, "aquarius_url")
        rpc_url = _extra(extras, "rpc_url")
        return cls(
            provider_url=url,
            aquarius_url=str(aquarius).rstrip("/") if aquarius else url,
            rpc_url=str(rpc_url) if rpc_url else None,
            chain_id=chain_id,
            backend=backend,
            timeout=read_timeout,
            verify_ssl=_as_bool(_extra(extras, "verify_ssl"), True),
        )


def _mask(secret: str) -> None:
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - Airflow 2
        try:
            from airflow.utils.log.secrets_masker import mask_secret  # type: ignore[no-redef]
        except ImportError:
            return
    bare = secret[2:] if secret.lower().startswith("0x") else secret
    for value in {secret, bare, "0x" + bare}:
        mask_secret(value)


def _tx_ids(transfer_tx_ids: Any, count: int) -> tuple[list[str | None], str | None]:
    """Normalise the accepted forms of previously paid orders into (dataset txs, algorithm tx).

    Accepted: the dict returned by :meth:`OceanComputeHook.pay_for_compute`; ``{"datasets": [tx|None],
    "algorithm": tx|None}``; a list of dataset txs; ``None``.
    """
    if transfer_tx_ids is None:
        return [None] * count, None
    if isinstance(transfer_tx_ids, list | tuple):
        datasets_part: Any = list(transfer_tx_ids)
        algorithm_part: Any = None
    elif isinstance(transfer_tx_ids, dict):
        datasets_part = transfer_tx_ids.get("datasets") or []
        algorithm_part = transfer_tx_ids.get("algorithm")
    else:
        raise OceanValidationError("transfer_tx_ids must be a dict, a list or None")

    def one(value: Any) -> str | None:
        if value is None or value == "":
            return None
        if isinstance(value, dict):
            value = value.get("transfer_tx_id") or value.get("transferTxId")
            return str(value) if value else None
        return str(value)

    txs = [one(v) for v in datasets_part]
    if len(txs) > count:
        raise OceanValidationError(f"{len(txs)} dataset transfer tx ids given for {count} datasets")
    txs += [None] * (count - len(txs))
    return txs, one(algorithm_part)


@dataclasses.dataclass
class _Prepared:
    datasets: list[ComputeInput]
    algorithm: ComputeAlgorithm
    # (role, did, service_id, service_index, datatoken) per input (datasets, then a DID algorithm)
    orderables: list[tuple[str, str, str, int, str]]


class OceanComputeHook(BaseHook):
    """Pay for, start, watch, stop and collect Ocean compute-to-data jobs through a Provider v4.

    No I/O happens in the constructor; the connection is read on first use.

    :param ocean_conn_id: the ``ocean`` connection to use.
    :param timeout: read timeout in seconds for ordinary requests (overrides the connection's
        ``timeout`` extra; start and initializeCompute always allow at least 180 s).
    :param retry_limit: attempts for idempotent reads (status, environments, DDO, nonce).
    :param retry_delay: initial backoff between those attempts, in seconds.
    """

    conn_name_attr = "ocean_conn_id"
    default_conn_name = "ocean_default"
    conn_type = "ocean"
    hook_name = "Ocean Protocol"

    def __init__(
        self,
        ocean_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        retry_limit: int = 3,
        retry_delay: float = 1.0,
    ) -> None:
        super().__init__()
        if retry_limit < 1:
            raise OceanConfigError("retry_limit must be at least 1")
        self.ocean_conn_id = ocean_conn_id
        self.timeout = timeout
        self.retry_limit = retry_limit
        self.retry_delay = retry_delay
        # Order txs this hook sent (startOrder/reuseOrder) and has not used in a start yet: no job can
        # carry them as agreementId, so a start on them needs no look at the existing jobs first.
        self._unstarted_orders: set[str] = set()

    def __repr__(self) -> str:
        return f"OceanComputeHook(ocean_conn_id={self.ocean_conn_id!r})"

    # -- UI ------------------------------------------------------------------------------------------
    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Hidden/relabelled fields and placeholders of the connection form (same as the provider info)."""
        from airflow_provider_ocean.get_provider_info import get_provider_info

        for conn_type in get_provider_info()["connection-types"]:
            if conn_type["connection-type"] == cls.conn_type:
                return dict(conn_type["ui-field-behaviour"])
        return {}  # pragma: no cover

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra connection form fields for Airflow versions without declarative ``conn-fields``."""
        try:
            from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
            from flask_babel import lazy_gettext
            from wtforms import BooleanField, StringField
        except ImportError:
            return {}
        from airflow_provider_ocean.get_provider_info import CONN_FIELDS as FIELDS

        widgets: dict[str, Any] = {}
        for name, spec in FIELDS.items():
            label = lazy_gettext(spec["label"])
            if "boolean" in spec["schema"].get("type", []):
                widgets[name] = BooleanField(label, default=spec["schema"].get("default", True))
            else:
                widgets[name] = StringField(
                    label, widget=BS3TextFieldWidget(), description=spec["description"]
                )
        return widgets

    # -- lazy connection pieces ----------------------------------------------------------------------
    @cached_property
    def _connection(self) -> Connection:
        return self.get_connection(self.ocean_conn_id)

    @cached_property
    def settings(self) -> OceanConnectionSettings:
        """The parsed (non-secret) connection settings."""
        return OceanConnectionSettings.from_connection(self._connection, timeout=self.timeout)

    @cached_property
    def signer(self) -> Signer:
        """The consumer wallet's signer, built from the connection password (masked right away)."""
        from airflow_provider_ocean.signing import Signer, is_private_key

        password = self._connection.password
        if not password:
            raise OceanConfigError(
                f"Connection {self.ocean_conn_id!r} has no password: "
                "set it to the consumer wallet's private key"
            )
        password = password.strip()
        _mask(password)
        if not is_private_key(password):
            raise OceanConfigError(
                f"The password of connection {self.ocean_conn_id!r} is not a private key: expected 64 hex "
                "digits (32 bytes), optionally prefixed with 0x"
            )
        return Signer(password)

    @property
    def consumer_address(self) -> str:
        """The consumer wallet's checksummed address (the job owner string used everywhere)."""
        return self.signer.address

    @cached_property
    def provider(self) -> ProviderV4Client:
        """The Provider v4 wire client."""
        from airflow_provider_ocean.provider_v4 import ProviderV4Client

        settings = self.settings
        return ProviderV4Client(
            settings.provider_url,
            aquarius_url=settings.aquarius_url,
            timeout=settings.timeout,
            verify=settings.verify_ssl,
            retry_limit=self.retry_limit,
            retry_delay=self.retry_delay,
        )

    @cached_property
    def chain_id(self) -> int:
        """The chain id: the connection's ``chain_id``, else the Provider's only chain."""
        if self.settings.chain_id is not None:
            return self.settings.chain_id
        chains = self.provider.chain_ids
        if len(chains) == 1:
            return chains[0]
        raise OceanConfigError(
            f"Set the connection extra chain_id: the Provider serves chains {chains or 'none'}"
        )

    @cached_property
    def rpc(self) -> JsonRpcClient:
        """JSON-RPC client of the chain (needs the ``rpc_url`` extra)."""
        from airflow_provider_ocean.chain.rpc import JsonRpcClient

        if not self.settings.rpc_url:
            raise OceanConfigError(
                f"Connection {self.ocean_conn_id!r} has no rpc_url extra: it is needed to pay for orders"
            )
        return JsonRpcClient(
            self.settings.rpc_url, timeout=self.settings.timeout, verify=self.settings.verify_ssl
        )

    @cached_property
    def sender(self) -> TransactionSender:
        """Transaction sender of the consumer wallet."""
        return self.signer.transaction_sender(self.rpc)

    # -- backend dispatch (Ocean Node) ---------------------------------------------------------------
    @cached_property
    def backend(self) -> str:
        """``provider_v4`` or ``ocean_node``: the connection's ``backend`` extra, or (``auto``) ``GET /``."""
        if self.settings.backend in ("provider_v4", "ocean_node"):
            return self.settings.backend
        from airflow_provider_ocean.ocean_node import detect_backend

        return detect_backend(self.provider.root()) or "provider_v4"

    @property
    def is_ocean_node(self) -> bool:
        """Whether the connection points at an Ocean Node (then the job methods delegate to :attr:`node`)."""
        return self.backend == "ocean_node"

    @cached_property
    def node(self) -> OceanNodeBackend:
        """The Ocean Node implementation of the job methods."""
        from airflow_provider_ocean.hooks.node_backend import OceanNodeBackend

        return OceanNodeBackend(self)

    # -- discovery -----------------------------------------------------------------------------------
    def test_connection(self) -> tuple[bool, str]:
        """Check the Provider, the chain and the key without spending anything.

        :return: ``(ok, message)``.
        """
        try:
            if self.is_ocean_node:
                return self.node.test_connection()
            root = self.provider.root(refresh=True)
            software = root.get("software")
            if software != "Provider":
                return (
                    False,
                    f"{self.settings.provider_url} is not an Ocean Provider v4 (software={software!r})",
                )
            chain_id = self.chain_id
            if chain_id not in self.provider.chain_ids:
                return False, (
                    f"The Provider does not serve chain {chain_id} (it serves {self.provider.chain_ids})"
                )
            provider_address = self.provider.provider_address(chain_id)
            if not provider_address:
                return False, f"The Provider announces no providerAddresses entry for chain {chain_id}"
            if self.settings.rpc_url:
                rpc_chain = self.rpc.chain_id()
                if rpc_chain != chain_id:
                    return False, f"The RPC node serves chain {rpc_chain}, the connection says {chain_id}"
            address = self.consumer_address
        except OceanError as exc:
            return False, str(exc)
        except Exception as exc:
            return False, redact(f"{type(exc).__name__}: {exc}", 500)
        return True, (
            f"Connected to Ocean Provider {root.get('version')} at {self.settings.provider_url} on chain "
            f"{chain_id}; consumer {address}"
        )

    def get_environments(self) -> list[ComputeEnvironment]:
        """The compute environments the Provider offers on the connection's chain."""
        if self.is_ocean_node:
            return self.node.get_environments()
        return self.provider.environments(self.chain_id)

    def resolve_environment(self, environment: str | ComputeEnvironment | None = None) -> ComputeEnvironment:
        """Return the named environment, or the first free one when ``environment`` is ``None``.

        :param environment: an environment id, an environment, or ``None``.
        """
        if isinstance(environment, ComputeEnvironment):
            return environment
        if self.is_ocean_node:
            return self.node.resolve_environment(environment)
        if environment is None:
            return self.provider.choose_free_environment(self.chain_id)
        return self.provider.get_environment(self.chain_id, environment)

    def get_ddo(self, did: str) -> dict[str, Any]:
        """Fetch an asset's DDO from Aquarius.

        :param did: the asset DID.
        """
        return self.provider.get_ddo(did)

    # -- pre-spend validation ------------------------------------------------------------------------
    def _prepare(self, datasets: list[ComputeInput], algorithm: ComputeAlgorithm) -> _Prepared:
        from airflow_provider_ocean.ddo import (
            check_algorithm_allowed,
            check_algorithm_ddo,
            check_dataset_service,
            find_service,
        )

        if not datasets:
            raise OceanValidationError("A compute job needs at least one dataset")
        algorithm_ddo = None
        algo_entry = None
        if not algorithm.is_raw:
            assert algorithm.did is not None
            algorithm_ddo = self.get_ddo(algorithm.did)
            service, index = find_service(algorithm_ddo, algorithm.service_id, role="algorithm")
            check_algorithm_ddo(algorithm_ddo, service, chain_id=self.chain_id)
            algorithm = dataclasses.replace(algorithm, service_id=str(service["id"]))
            algo_entry = (
                "algorithm",
                algorithm.did,
                str(service["id"]),
                index,
                str(service["datatokenAddress"]),
            )
        resolved: list[ComputeInput] = []
        orderables: list[tuple[str, str, str, int, str]] = []
        for position, item in enumerate(datasets):
            role = "dataset" if position == 0 else "additional dataset"
            ddo = self.get_ddo(item.did)
            service, index = find_service(ddo, item.service_id, role=role)
            check_dataset_service(ddo, service, role=role, chain_id=self.chain_id)
            check_algorithm_allowed(ddo, service, algorithm, algorithm_ddo)
            resolved.append(dataclasses.replace(item, service_id=str(service["id"])))
            orderables.append(
                ("dataset", item.did, str(service["id"]), index, str(service["datatokenAddress"]))
            )
        if algo_entry is not None:
            orderables.append(algo_entry)
        return _Prepared(resolved, algorithm, orderables)

    @staticmethod
    def _valid_until(valid_until: int | float | datetime | timedelta | None, env: ComputeEnvironment) -> int:
        now = time.time()
        if valid_until is None:
            value = now + (env.max_job_duration or 3600)
        elif isinstance(valid_until, timedelta):
            value = now + valid_until.total_seconds()
        elif isinstance(valid_until, datetime):
            value = valid_until.timestamp()
        else:
            value = float(valid_until)
        if value <= now:
            raise OceanValidationError(
                f"valid_until must be in the future (got {int(value)}, now {int(now)})"
            )
        return int(value)

    # -- paying and starting -------------------------------------------------------------------------
    def pay_for_compute(
        self,
        datasets: list[ComputeInput | dict[str, Any] | str],
        algorithm: ComputeAlgorithm | dict[str, Any] | str,
        environment: str | ComputeEnvironment | None = None,
        valid_until: int | float | datetime | timedelta | None = None,
        max_fee: int | None = None,
        transfer_tx_ids: Any = None,
        *,
        acquire_datatokens: str | None = None,
        max_datatoken_price: int | None = None,
        **node_options: Any,
    ) -> dict[str, Any]:
        """Validate, quote (``initializeCompute``) and pay for every input of a job.

        Everything that can fail without spending is checked first (DDOs, services, environment,
        algorithm trust, fee cap, balances, gas); then only the needed transactions are sent.

        :param datasets: the datasets (DIDs, dicts or :class:`ComputeInput`); the first must be ordered
            through a compute service.
        :param algorithm: a published algorithm (DID) or a raw algorithm (dict / :class:`ComputeAlgorithm`).
        :param environment: environment id; ``None`` picks the first free environment.
        :param valid_until: until when the provider fee must cover the job: epoch seconds, a datetime,
            or a timedelta from now; default now + the environment's maxJobDuration.
        :param max_fee: refuse (before sending anything) when the fees exceed this many base units of
            the fee token.
        :param transfer_tx_ids: orders paid earlier, to reuse: the dict this method returned, or
            ``{"datasets": [tx, ...], "algorithm": tx}``.
        :param acquire_datatokens: obtain missing datatokens: ``None`` (default, off), ``"dispenser"``,
            ``"fixed_rate"`` or ``"any"``.
        :param max_datatoken_price: highest base-token amount (base units) per datatoken bought.
        :param node_options: Ocean Node only: ``resources``, ``max_job_duration``,
            ``queue_max_wait_time``, ``free`` (see :mod:`airflow_provider_ocean.hooks.node_backend`).
        :return: JSON-safe ``{"environment", "consumer_address", "chain_id", "valid_until",
            "datasets": [PaidOrder dict, ...], "algorithm": PaidOrder dict | None}``.
        """
        from airflow_provider_ocean.payment.fees import make_requests
        from airflow_provider_ocean.payment.orders import OrderPayer

        if self.is_ocean_node:
            return self.node.pay_for_compute(
                datasets,
                algorithm,
                environment,
                max_fee,
                transfer_tx_ids,
                acquire_datatokens=acquire_datatokens,
                max_datatoken_price=max_datatoken_price,
                **node_options,
            )
        if any(value is not None for value in node_options.values()):
            raise OceanValidationError(
                f"{', '.join(sorted(node_options))} only apply to Ocean Node connections"
            )

        inputs = [ComputeInput.coerce(d) for d in datasets]
        algo = ComputeAlgorithm.coerce(algorithm)
        if environment is None and isinstance(transfer_tx_ids, dict) and transfer_tx_ids.get("environment"):
            environment = str(transfer_tx_ids["environment"])  # orders are valid for their environment only
        env = self.resolve_environment(environment)
        passed_datasets, passed_algorithm = _tx_ids(transfer_tx_ids, len(inputs))
        passed_datasets = [
            tx or item.transfer_tx_id for tx, item in zip(passed_datasets, inputs, strict=True)
        ]
        passed_algorithm = passed_algorithm or algo.transfer_tx_id
        prepared = self._prepare(inputs, algo)
        if isinstance(transfer_tx_ids, dict):
            # Reusing an earlier payment: ask for no more than it covers while that still fits a whole job,
            # so a still-valid fee needs no transaction (asking for more would make the Provider want a
            # reuseOrder with a new fee).
            previous = transfer_tx_ids.get("valid_until")
            if isinstance(previous, int | float) and not isinstance(previous, bool):
                now = time.time()
                if (valid_until is None and previous > now + 10) or (
                    valid_until is not None and previous >= now + max(env.max_job_duration, 60)
                ):
                    valid_until = int(previous)
        until = self._valid_until(valid_until, env)
        try:
            rpc_chain_id = self.sender.chain_id
        except OceanError:
            raise
        except Exception as exc:
            from airflow_provider_ocean.exceptions import OceanConnectionError

            raise OceanConnectionError(
                f"The RPC node at {self.settings.rpc_url} cannot be reached: {redact(str(exc))}",
                url=self.settings.rpc_url,
            ) from exc
        if rpc_chain_id != self.chain_id:
            raise OceanConfigError(
                f"The RPC node at {self.settings.rpc_url} serves chain {self.sender.chain_id}, "
                f"the connection says {self.chain_id}"
            )

        dataset_requests = []
        for item, tx in zip(prepared.datasets, passed_datasets, strict=True):
            body = item.to_request(transfer_tx_id=tx)
            # Lets the Provider find an already-paid fee on any input, not only dataset 0.
            body["consumerAddress"] = env.consumer_address
            dataset_requests.append(body)
        algorithm_request = prepared.algorithm.to_initialize_request(transfer_tx_id=passed_algorithm)
        self.log.info(
            "Quoting %s dataset(s) + %s algorithm on environment %s until %s",
            len(dataset_requests),
            "raw" if prepared.algorithm.is_raw else prepared.algorithm.did,
            env.id,
            until,
        )
        quote = self.provider.initialize_compute(
            datasets=dataset_requests,
            algorithm=algorithm_request,
            environment=env.id,
            valid_until=until,
            consumer_address=env.consumer_address,
        )
        quotes = list(quote["datasets"])
        passed = list(passed_datasets)
        if not prepared.algorithm.is_raw:
            quotes.append(quote["algorithm"])
            passed.append(passed_algorithm)
        requests = make_requests(
            [(*entry, tx) for entry, tx in zip(prepared.orderables, passed, strict=True)],
            quotes,
        )
        payer = OrderPayer(
            self.rpc, self.sender, acquire=acquire_datatokens, max_datatoken_price=max_datatoken_price
        )
        paid = payer.pay(requests, consumer=env.consumer_address, environment=env.id, max_fee=max_fee)
        dataset_orders = [p for p in paid if p.role == "dataset"]
        algorithm_orders = [p for p in paid if p.role == "algorithm"]
        for order in paid:
            self.log.info("%s %s: %s via %s", order.role, order.did, order.action, order.transfer_tx_id)
            if order.action in ("start", "reuse"):
                self._unstarted_orders.add(order.transfer_tx_id.lower())
        return {
            "environment": env.id,
            "consumer_address": env.consumer_address,
            "chain_id": self.chain_id,
            "valid_until": until,
            "datasets": [p.to_dict() for p in dataset_orders],
            "algorithm": algorithm_orders[0].to_dict() if algorithm_orders else None,
        }

    def start_compute(
        self,
        datasets: list[ComputeInput | dict[str, Any] | str],
        algorithm: ComputeAlgorithm | dict[str, Any] | str,
        payment: dict[str, Any] | None = None,
        environment: str | None = None,
        *,
        on_attempt: Callable[[dict[str, Any]], None] | None = None,
    ) -> JobStatus:
        """Start a job whose inputs are paid (signed request; never retried blindly).

        When the outcome is unknown (timeout or connection reset after sending, 5xx - including the
        Provider's duplicate-nonce 503, which comes after the job was created - or an unreadable 2xx),
        the owner's jobs are searched for one created by this attempt (its agreementId is one of the
        request's orders, it did not exist before); that job is returned. If the Provider answers and
        there is none, the original error is raised (nothing started); if it cannot be asked,
        :class:`~airflow_provider_ocean.exceptions.OceanStartOutcomeUnknownError`.

        :param datasets: the datasets, as given to :meth:`pay_for_compute`.
        :param algorithm: the algorithm, with ``algocustomdata``/``algouserdata`` if any.
        :param payment: the dict :meth:`pay_for_compute` returned; without it every dataset (and a DID
            algorithm) must carry its ``transfer_tx_id``.
        :param environment: environment id (taken from ``payment`` when given there).
        :param on_attempt: called just before the request is sent with a JSON-safe record
            ``{"provider_url", "owner", "transfer_tx_ids", "started_at", "known_job_ids"}`` - persist it
            to find the job with :meth:`find_started_job` if the process dies before the answer.
        :return: the new job's status.
        :raises OceanOrderInUseError: a running job already uses the order that would be the agreementId.
        """
        if self.is_ocean_node:
            return self.node.start_compute(datasets, algorithm, payment, environment, on_attempt=on_attempt)
        inputs = [ComputeInput.coerce(d) for d in datasets]
        algo = ComputeAlgorithm.coerce(algorithm)
        payment = payment or {}
        if environment and payment.get("environment") and environment != payment["environment"]:
            raise OceanValidationError(
                f"The payment is for environment {payment['environment']}, not {environment}: "
                "orders only validate for the environment they were paid for"
            )
        env_id = payment.get("environment") or environment
        if not env_id:
            env_id = self.resolve_environment(None).id
        paid_datasets = [PaidOrder.from_dict(p) for p in payment.get("datasets") or []]
        if paid_datasets and len(paid_datasets) != len(inputs):
            raise OceanValidationError(
                f"The payment covers {len(paid_datasets)} datasets, {len(inputs)} given"
            )
        dataset_bodies = []
        for position, item in enumerate(inputs):
            order = paid_datasets[position] if paid_datasets else None
            if order is not None and order.did != item.did:
                raise OceanValidationError(
                    f"Dataset {position} is {item.did} but the payment is for {order.did}"
                )
            tx = order.transfer_tx_id if order else item.transfer_tx_id
            service_id = item.service_id or (order.service_id if order else None)
            if not tx or not service_id:
                raise OceanValidationError(
                    f"Dataset {item.did} has no paid order: call pay_for_compute first "
                    "or give transfer_tx_id "
                    "and service_id"
                )
            dataset_bodies.append(
                dataclasses.replace(item, service_id=service_id).to_request(transfer_tx_id=tx)
            )
        if not algo.is_raw:
            paid_algorithm = payment.get("algorithm")
            order = PaidOrder.from_dict(paid_algorithm) if paid_algorithm else None
            tx = order.transfer_tx_id if order else algo.transfer_tx_id
            service_id = algo.service_id or (order.service_id if order else None)
            if not tx or not service_id:
                raise OceanValidationError(
                    f"Algorithm {algo.did} has no paid order: call pay_for_compute first or give "
                    "transfer_tx_id and service_id"
                )
            algo = dataclasses.replace(algo, service_id=service_id, transfer_tx_id=tx)
        algorithm_body = algo.to_start_request()
        transfer_tx_ids = _unique(
            [b.get("transferTxId") for b in dataset_bodies] + [algorithm_body.get("transferTxId")]
        )
        # Jobs already using these orders (one order may start many jobs one after the other): a job
        # created by this attempt is one that is not among them. Orders this hook has just sent and never
        # started with cannot be in use: no need to ask.
        fresh = bool(transfer_tx_ids) and all(t.lower() in self._unstarted_orders for t in transfer_tx_ids)
        before = [] if fresh else self.jobs_with_agreements(transfer_tx_ids)
        self._unstarted_orders.difference_update(t.lower() for t in transfer_tx_ids)
        attempt = {
            "provider_url": self.settings.provider_url,
            "owner": self.consumer_address,
            "transfer_tx_ids": transfer_tx_ids,
            "started_at": time.time(),
            "known_job_ids": [j.job_id for j in before],
        }
        if on_attempt is not None:
            on_attempt(dict(attempt))
        try:
            job = self.provider.start_compute(
                self.signer,
                datasets=dataset_bodies,
                algorithm=algorithm_body,
                environment=env_id,
            )
        except (OceanProviderError, OceanConnectionError) as exc:
            if isinstance(exc, OceanProviderError) and _IN_USE in exc.detail.lower():
                raise self._order_in_use(exc, transfer_tx_ids) from None
            if not _outcome_unknown(exc):
                raise
            job = self._resolve_unknown_start(exc, attempt)
        self.log.info(
            "Started compute job %s on %s (status %s %s)", job.job_id, env_id, job.status, job.status_text
        )
        return job

    def _order_in_use(self, exc: OceanProviderError, transfer_tx_ids: list[str]) -> OceanOrderInUseError:
        """The operator refused a second running job on one agreementId: name the orders and jobs."""
        try:
            running = [j for j in self.jobs_with_agreements(transfer_tx_ids) if not j.is_terminal]
        except OceanError:
            running = []
        in_use = _unique(j.agreement_id for j in running)
        return OceanOrderInUseError(
            f"{exc.detail} Orders {', '.join(in_use or transfer_tx_ids)} are used by running job(s) "
            f"{', '.join(j.job_id for j in running) or '(unknown)'} of {self.consumer_address}",
            in_use_by=[j.job_id for j in running],
            transfer_tx_ids=in_use or transfer_tx_ids,
            status=exc.status,
            body=exc.body,
            operation=exc.operation,
            hint="another run or task of this wallet is using the same paid orders; pay a new order for "
            "the input in use (OceanComputeStartOperator does this once by itself) or wait for that job",
        )

    def _resolve_unknown_start(self, exc: OceanError, attempt: dict[str, Any]) -> JobStatus:
        """Decide whether a start whose answer was lost created a job: look for it, never start again.

        :return: the job the attempt created.
        :raises OceanStartOutcomeUnknownError: the Provider could not be asked.
        :raises OceanError: ``exc`` again, when the Provider answered and no job was created.
        """
        txs = attempt["transfer_tx_ids"]
        self.log.warning(
            "The outcome of the start is unknown (%s); looking for a job with agreement %s", exc, txs
        )
        tries = START_LOOKUP_ATTEMPTS if isinstance(exc, OceanConnectionError) else 2
        lookup_error: OceanError | None = None
        for number in range(1, tries + 1):
            try:
                job = self.find_started_job(
                    txs, known_job_ids=attempt["known_job_ids"], started_at=attempt["started_at"]
                )
                lookup_error = None
            except OceanError as error:
                job, lookup_error = None, error
            if job is not None:
                self.log.warning(
                    "The start did create job %s (agreement %s) despite the error; using it",
                    job.job_id,
                    job.agreement_id,
                )
                return job
            if number < tries:
                time.sleep(START_LOOKUP_DELAY)
        if lookup_error is not None:
            raise OceanStartOutcomeUnknownError(
                f"The start of a compute job may have succeeded ({exc}), and listing the jobs of "
                f"{self.consumer_address} failed ({lookup_error}). Orders: {', '.join(txs)}.",
                transfer_tx_ids=txs,
                started_at=attempt["started_at"],
                known_job_ids=attempt["known_job_ids"],
                hint="look for a job with one of these agreementIds before starting again "
                "(OceanComputeHook.find_started_job); the start operator does it on its next try",
            ) from None
        self.log.warning("No job was created by this start attempt: it failed (%s)", exc)
        raise exc

    def jobs_with_agreements(self, transfer_tx_ids: Iterable[str]) -> list[JobStatus]:
        """The wallet's jobs whose ``agreementId`` is one of ``transfer_tx_ids`` (oldest first).

        :param transfer_tx_ids: order transaction ids.
        """
        wanted = {t.lower() for t in transfer_tx_ids if t}
        return [j for j in self.list_jobs() if (j.agreement_id or "").lower() in wanted]

    def find_started_job(
        self,
        transfer_tx_ids: Iterable[str],
        *,
        known_job_ids: Iterable[str] = (),
        started_at: float | None = None,
        clock_skew: float = START_CLOCK_SKEW,
        start_id: str | None = None,
    ) -> JobStatus | None:
        """Find the job a start attempt created, by its orders (provider-v4-api.md §7 rule 12).

        The Provider sends the operator the ``transferTxId`` of one input as ``agreementId`` (which one
        depends on the fees), so a job matches when its agreementId is any of the attempt's orders, it
        is not one of the jobs that already used them before the attempt, and it was not created
        (Provider clock) more than ``clock_skew`` seconds before the attempt began.

        On an Ocean Node the start carried a unique tag in the job's ``metadata`` instead (free jobs have
        no order at all): the job is the one carrying ``start_id``.

        :param transfer_tx_ids: every order tx the start request carried.
        :param known_job_ids: jobs with those agreement ids that existed before the attempt.
        :param started_at: when the attempt began (epoch seconds).
        :param clock_skew: tolerated clock difference with the Provider, in seconds.
        :param start_id: Ocean Node: the ``start_id`` of the attempt record (``on_attempt``).
        :return: the job (the oldest if, unexpectedly, several match), or ``None``.
        """
        if self.is_ocean_node:
            return self.node.find_started_job(start_id)
        known = set(known_job_ids)
        matches = []
        for job in self.jobs_with_agreements(transfer_tx_ids):
            if job.job_id in known:
                continue
            created = _epoch(job.date_created)
            if started_at is not None and created is not None and created < started_at - clock_skew:
                continue
            matches.append(job)
        if len(matches) > 1:
            self.log.warning(
                "Several jobs match one start attempt: %s; using the oldest",
                ", ".join(j.job_id for j in matches),
            )
        matches.sort(key=lambda j: _epoch(j.date_created) or 0.0)
        return matches[0] if matches else None

    def recent_orders(
        self,
        datasets: list[ComputeInput | dict[str, Any] | str],
        algorithm: ComputeAlgorithm | dict[str, Any] | str,
        environment: str | ComputeEnvironment | None = None,
        *,
        lookback_blocks: int = ORDER_LOOKBACK_BLOCKS,
    ) -> dict[str, Any] | None:
        """Orders this wallet paid recently for these inputs, read from the chain.

        For each input (datasets, then a DID algorithm): the newest ``OrderStarted`` event of its
        datatoken in the last ``lookback_blocks`` blocks whose consumer is the environment's address, whose
        payer is this wallet and whose service index is the input's. Meant for a retry whose record of
        what it paid was lost (a crash between paying and recording): pass the result as
        ``transfer_tx_ids`` to :meth:`pay_for_compute`, where ``initializeCompute`` decides whether each
        order is still valid; nothing is trusted from here.

        :param datasets: the datasets.
        :param algorithm: the algorithm.
        :param environment: the environment id (default: the first free one).
        :param lookback_blocks: how far back to look (RPC nodes often cap ``eth_getLogs`` ranges).
        :return: ``{"datasets": [tx | None, ...], "algorithm": tx | None, "environment": id,
            "valid_until": what their provider fees cover}``, or ``None`` when no input has such an order.
        """
        from airflow_provider_ocean.chain.abi import ORDER_STARTED, PROVIDER_FEE, decode_events

        if self.is_ocean_node:
            # Not implemented for Ocean Node (free jobs and raw inputs have no orders; the orders of a
            # paid start that was never recorded are paid again).
            return None
        inputs = [ComputeInput.coerce(d) for d in datasets]
        algo = ComputeAlgorithm.coerce(algorithm)
        env = self.resolve_environment(environment)
        prepared = self._prepare(inputs, algo)
        latest = self.rpc.block_number()
        consumer_topic = "0x" + env.consumer_address.lower().removeprefix("0x").rjust(64, "0")
        found: list[str | None] = []
        for _role, _did, _service_id, index, datatoken in prepared.orderables:
            logs = self.rpc.get_logs(
                {
                    "address": datatoken,
                    "fromBlock": hex(max(0, latest - lookback_blocks)),
                    "toBlock": "latest",
                    "topics": [ORDER_STARTED.topic0, consumer_topic],
                }
            )
            newest = None
            for entry in logs:  # in chain order: the last match is the newest
                event = ORDER_STARTED.decode_log(entry)
                if (
                    event is not None
                    and str(event["payer"]).lower() == self.consumer_address.lower()
                    and int(event["serviceIndex"]) == index
                ):
                    newest = entry.get("transactionHash")
            found.append(newest)
        if not any(found):
            return None
        # What the orders' provider fees cover: asking for no more lets still-valid orders need no tx.
        covered = []
        for tx in filter(None, found):
            receipt = self.rpc.get_transaction_receipt(tx) or {}
            covered += [int(fee["validUntil"]) for fee in decode_events(PROVIDER_FEE, receipt)]
        count = len(prepared.datasets)
        return {
            "datasets": found[:count],
            "algorithm": found[count] if len(found) > count else None,
            "environment": env.id,
            "valid_until": min(covered) if covered else None,
        }

    def run_compute(
        self,
        datasets: list[ComputeInput | dict[str, Any] | str],
        algorithm: ComputeAlgorithm | dict[str, Any] | str,
        environment: str | ComputeEnvironment | None = None,
        valid_until: int | float | datetime | timedelta | None = None,
        max_fee: int | None = None,
        transfer_tx_ids: Any = None,
        *,
        acquire_datatokens: str | None = None,
        max_datatoken_price: int | None = None,
    ) -> dict[str, Any]:
        """Pay for and start a job in one call (see :meth:`pay_for_compute` for the parameters).

        :param datasets: the datasets.
        :param algorithm: the algorithm.
        :param environment: environment id; ``None`` = first free one.
        :param valid_until: fee validity (epoch seconds, datetime or timedelta).
        :param max_fee: fee cap in base units of the fee token.
        :param transfer_tx_ids: orders paid earlier to reuse.
        :param acquire_datatokens: obtain missing datatokens (``dispenser``/``fixed_rate``/``any``).
        :param max_datatoken_price: price cap per datatoken bought.
        :return: JSON-safe ``{"job_id", "job": status dict, "payment": payment dict}``.
        """
        payment = self.pay_for_compute(
            datasets,
            algorithm,
            environment,
            valid_until,
            max_fee,
            transfer_tx_ids,
            acquire_datatokens=acquire_datatokens,
            max_datatoken_price=max_datatoken_price,
        )
        job = self.start_compute(datasets, algorithm, payment=payment)
        return {"job_id": job.job_id, "job": job.to_dict(), "payment": payment}

    # -- jobs ----------------------------------------------------------------------------------------
    def list_jobs(self) -> list[JobStatus]:
        """Every job of the consumer wallet on this Provider."""
        if self.is_ocean_node:
            return self.node.list_jobs()
        return self.provider.get_status(self.consumer_address)

    def get_job_status(self, job_id: str) -> JobStatus:
        """The status of one job of the consumer wallet.

        :param job_id: the job id.
        :raises OceanJobNotFoundError: the Provider knows no such job for this owner.
        """
        if self.is_ocean_node:
            return self.node.get_job_status(job_id)
        for job in self.provider.get_status(self.consumer_address, job_id):
            if job.job_id == job_id:
                return job
        raise OceanJobNotFoundError(
            f"No job {job_id} for owner {self.consumer_address} at {self.settings.provider_url}",
            job_id=job_id,
        )

    def stop_job(self, job_id: str) -> JobStatus | None:
        """Request a stop (signed). The job then ends with ``stopreq == 1``.

        :param job_id: the job id.
        :return: the job's status as it was before the stop, if the Provider returned it.
        """
        if self.is_ocean_node:
            return self.node.stop_job(job_id)
        jobs = self.provider.stop_job(self.signer, job_id)
        self.log.info("Requested stop of compute job %s", job_id)
        return next((j for j in jobs if j.job_id == job_id), None)

    def delete_job(self, job_id: str) -> None:
        """Delete a job (signed; the current operator-service treats it as a no-op).

        :param job_id: the job id.
        """
        if self.is_ocean_node:
            return self.node.delete_job(job_id)
        self.provider.delete_job(self.signer, job_id)
        self.log.info("Requested deletion of compute job %s", job_id)

    def get_results(self, job_id: str) -> list[ResultFile]:
        """The job's result files; ``index`` is what :meth:`download_result` takes.

        :param job_id: the job id.
        """
        return self.get_job_status(job_id).results

    def download_result(
        self, job_id: str, index: int, destination: str | os.PathLike[str] | IO[bytes]
    ) -> DownloadedResult:
        """Stream one result file to a file object, a path or a directory (signed; constant memory).

        :param job_id: the job id.
        :param index: position of the file in the job's results.
        :param destination: binary file object, file path, or existing directory.
        """
        if self.is_ocean_node:
            return self.node.download_result(job_id, index, destination)
        return self.provider.download_result(self.signer, job_id, index, destination)
