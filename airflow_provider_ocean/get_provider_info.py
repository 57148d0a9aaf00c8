"""Provider metadata read by Airflow's ``ProvidersManager`` through the entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_ocean import __version__

#: the choices of the enumerated extras, the first one the default
SCHEMES = ("https", "http")
BACKENDS = ("auto", "provider_v4", "ocean_node")

#: the extras of the connection form, as JSON schemas (Airflow 3's form: ``enum`` -> a select preset to
#: ``default``, ``minimum``/``maximum`` -> bounds of a number input, ``examples`` -> suggestions)
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "rpc_url": {
        "label": "RPC URL",
        "description": "JSON-RPC endpoint of the chain the assets live on (used to pay for orders).",
        "schema": {"type": ["string", "null"], "format": "uri", "examples": ["http://127.0.0.1:8545"]},
    },
    "chain_id": {
        "label": "Chain ID",
        "description": "Decimal chain id (8996 for the local sandbox); checked against the RPC and Provider.",
        "schema": {"type": ["integer", "null"], "minimum": 1},
    },
    "aquarius_url": {
        "label": "Aquarius URL",
        "description": "Metadata cache serving /api/aquarius/assets/ddo/{did}; defaults to the Provider URL.",
        "schema": {
            "type": ["string", "null"],
            "format": "uri",
            "examples": ["https://v4.aquarius.oceanprotocol.com"],
        },
    },
    "scheme": {
        "label": "Scheme",
        "description": "https or http, used when Provider URL has no scheme.",
        "schema": {"type": ["string", "null"], "enum": list(SCHEMES), "default": "https"},
    },
    "backend": {
        "label": "Backend",
        "description": "auto detects the server from GET /; provider_v4 or ocean_node fix it.",
        "schema": {"type": ["string", "null"], "enum": list(BACKENDS), "default": "auto"},
    },
    "timeout": {
        "label": "Request timeout (s)",
        "description": "Read timeout for ordinary requests, 1-600 s (start and initializeCompute use at "
        "least 180 s).",
        "schema": {"type": ["number", "null"], "minimum": 1, "maximum": 600, "default": 30},
    },
    "verify_ssl": {
        "label": "Verify TLS",
        "description": "Verify TLS certificates (on by default).",
        "schema": {"type": ["boolean", "null"], "default": True},
    },
    "wallet_lock_url": {
        "label": "Wallet lock (Redis URL)",
        "description": "Optional: a Redis URL whose lock serialises the wallet's nonces across all worker "
        "hosts (e.g. the Celery broker's Redis). Empty: each host locks on its own.",
        "schema": {"type": ["string", "null"], "examples": ["redis://redis:6379/0"]},
    },
}


INTEGRATION = "Ocean Protocol"


def _modules(*names: str) -> list[dict[str, Any]]:
    """One entry of the integration listing its ``python-modules``."""
    return [
        {"integration-name": INTEGRATION, "python-modules": [f"airflow_provider_ocean.{n}" for n in names]}
    ]


def get_provider_info() -> dict[str, Any]:
    """Return the provider description Airflow validates against ``provider_info.schema.json``."""
    return {
        "package-name": "airflow-provider-ocean",
        "name": "Ocean Protocol",
        "description": "Pay for, launch, wait on, stop and collect Ocean Protocol compute-to-data jobs.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://docs.oceanprotocol.com/developers/compute-to-data",
                "tags": ["service"],
            }
        ],
        "operators": _modules("operators.compute", "operators.results"),
        "sensors": _modules("sensors.ocean"),
        "triggers": _modules("triggers.ocean"),
        "hooks": _modules("hooks.ocean"),
        "extra-links": [
            "airflow_provider_ocean.links.OceanJobStatusLink",
            "airflow_provider_ocean.links.OceanDatasetLink",
        ],
        "config": {
            "ocean": {
                "description": "Settings of the Ocean Protocol provider that belong to a worker host, not a "
                "connection.",
                "options": {
                    "download_write_path": {
                        "description": "How result files are written to a path: 'cache' (through the page "
                        "cache) or 'direct' (results of 64 MiB or more with O_DIRECT, past the page cache). "
                        "Which is faster depends on the machine: benchmarks/stream_results.py measures both.",
                        "version_added": None,
                        "type": "string",
                        "example": "direct",
                        "default": "cache",
                    }
                },
            }
        },
        "connection-types": [
            {
                "connection-type": "ocean",
                "hook-class-name": "airflow_provider_ocean.hooks.ocean.OceanComputeHook",
                "hook-name": "Ocean Protocol",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"host": "Provider URL", "password": "Wallet private key"},
                    "placeholders": {
                        "host": "https://v4.provider.oceanprotocol.com",
                        "password": "0x… (64 hex digits; never logged)",
                        "rpc_url": "http://127.0.0.1:8545",
                        "chain_id": "8996",
                        "aquarius_url": "https://v4.aquarius.oceanprotocol.com",
                    },
                },
            }
        ],
    }
