"""Hints for the answers of a misconfigured Provider v4, with the real texts, through the client's parse path.

Each body is what the Provider (oceanprotocol/provider, v2 series) answers when its operator left a setting
out; where the text comes from is cited per case. Uncaught exceptions become 503 ``{"error": str(exc),
"context": <request data>}`` (``run.py`` ``handle_error`` / ``utils/error_responses.py``), so a ``KeyError``
shows as its ``repr``: ``'checksum'``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_ocean.exceptions import OceanProviderError, hint_for
from airflow_provider_ocean.wire.errors import parse_error
from tests.wire.test_provider_v4 import ALGO_DID, DID, ENGINE, RecordingServer, Reply, make_client

NOT_FOUND = (
    "404 Not Found: The requested URL was not found on the server. If you entered the URL manually please "
    "check your spelling and try again."
)
CONTEXT = {"consumerAddress": ENGINE, "compute": {"env": "ocean-compute", "validUntil": 1795319364}}

#: (id, status, error text, words the hint must hold)
MISCONFIGURED: list[tuple[str, int, str, tuple[str, ...]]] = [
    # file_types/definitions.py _get_result_from_url: int(os.getenv("MAX_CHECKSUM_LENGTH", "0")); a file
    # longer than that gets no "checksum" key; validation/algo.py get_algo_checksums reads
    # check_details(with_checksum=True)[1]["checksum"] outside any try in routes/compute.py initializeCompute.
    # The same KeyError comes from utils/url.py validate_dns_record refusing a private/loopback address
    # without ALLOW_NON_PUBLIC_IP (check_details answers (False, {})).
    ("checksum", 503, "'checksum'", ("MAX_CHECKSUM_LENGTH", "ALLOW_NON_PUBLIC_IP", "operator")),
    # utils/basics.py get_value_from_decoded_env: JSON-keyed NETWORK_URL/PROVIDER_PRIVATE_KEY lacking the
    # chain
    ("unconfigured_chain", 503, "Unconfigured chain_id", ("NETWORK_URL", "PROVIDER_PRIVATE_KEY", "chain")),
    # utils/basics.py get_configured_chains: neither JSON nor single NETWORK_URL
    ("no_chains", 503, "No chains configured", ("NETWORK_URL",)),
    # utils/address.py get_provider_fee_token -> get_ocean_address ->
    # get_address_json(os.getenv("ADDRESS_FILE")) with neither PROVIDER_FEE_TOKEN nor ADDRESS_FILE:
    # None.expanduser()
    (
        "no_fee_token",
        503,
        "'NoneType' object has no attribute 'expanduser'",
        ("PROVIDER_FEE_TOKEN", "ADDRESS_FILE"),
    ),
    # utils/provider_fees.py get_provider_fee_amount: dt.caller.decimals() on a PROVIDER_FEE_TOKEN that is no
    # contract on that chain; web3's BadFunctionCallOutput text
    (
        "fee_token_not_a_contract",
        503,
        "Could not transact with/call contract function, is contract deployed correctly and chain synced?",
        ("PROVIDER_FEE_TOKEN", "NETWORK_URL"),
    ),
    # utils/compute_environments.py check_environment_exists over get_c2d_environments(), which is [] without
    # OPERATOR_SERVICE_URL: routes/compute.py initializeCompute error_response(..., 400)
    ("no_environments", 400, "Compute environment does not exist", ("OPERATOR_SERVICE_URL",)),
    # the operator-service unreachable (provider-v4-api.md §2.2, observed on Provider v2.1.6)
    (
        "operator_unreachable",
        503,
        "Compute envs could not be retrieved for chainId 8996, check configuration.",
        ("OPERATOR_SERVICE_URL",),
    ),
    # Aquarius (or the chain) unreachable: requests' ConnectionError text, URLs stripped (observed on v2.1.6)
    (
        "aquarius_unreachable",
        503,
        (
            "HTTPConnectionPool(host='aquarius', port=5000): Max retries exceeded with url: /api/aquarius/"
            "assets/ddo/did:op:0 (Caused by NewConnectionError('<urllib3.connection.HTTPConnection object at "
            "0x7f>: Failed to establish a new connection: [Errno 111] Connection refused'))"
        ),
        ("AQUARIUS_URL", "NETWORK_URL"),
    ),
]


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    srv = RecordingServer()
    yield srv
    srv.close()


def initialize(server: RecordingServer) -> None:
    make_client(server.url).initialize_compute(
        datasets=[{"documentId": DID, "serviceId": "1"}],
        algorithm={"documentId": ALGO_DID, "serviceId": "0"},
        environment="ocean-compute",
        valid_until=1795319364,
        consumer_address=ENGINE,
    )


@pytest.mark.parametrize(
    ("status", "text", "needles"), [case[1:] for case in MISCONFIGURED], ids=[c[0] for c in MISCONFIGURED]
)
def test_initialize_compute_of_a_misconfigured_provider_says_what_to_change(
    server: RecordingServer, status: int, text: str, needles: tuple[str, ...]
) -> None:
    body: dict[str, Any] = {"error": text, "context": CONTEXT} if status == 503 else {"error": text}
    server.routes[("POST", "/api/services/initializeCompute")] = Reply(status=status, body=body)
    with pytest.raises(OceanProviderError) as raised:
        initialize(server)
    error = raised.value
    assert (error.status, error.detail) == (status, text)
    assert f"initializeCompute failed: HTTP {status}: {text}" in str(error)
    assert error.hint, "no hint"
    assert all(needle in error.hint for needle in needles), error.hint
    assert f" Hint: {error.hint}" in str(error)


def test_the_checksum_503_as_the_issue_shows_it(server: RecordingServer) -> None:
    """Before the hint the client showed only ``initializeCompute failed: HTTP 503: 'checksum'``."""
    server.routes[("POST", "/api/services/initializeCompute")] = Reply(
        status=503, raw=b'{"error":"\'checksum\'","context":{}}', headers={"Content-Type": "application/json"}
    )
    with pytest.raises(OceanProviderError) as raised:
        initialize(server)
    message = str(raised.value)
    assert message.startswith("initializeCompute failed: HTTP 503: 'checksum' Hint: ")
    assert "MAX_CHECKSUM_LENGTH" in message


def test_a_download_only_provider_answers_404_to_compute_routes(server: RecordingServer) -> None:
    """routes/compute.py ``validate_compute_request``: without ``OPERATOR_SERVICE_URL``, ``flask.abort(404)``
    on computeEnvironments, compute and computeResult; ``handle_error`` answers ``{"error", "context"}``."""
    server.routes[("GET", "/api/services/computeEnvironments")] = Reply(
        status=404, body={"context": None, "error": NOT_FOUND}
    )
    with pytest.raises(OceanProviderError) as raised:
        make_client(server.url).compute_environments()
    assert raised.value.status == 404
    assert "OPERATOR_SERVICE_URL" in (raised.value.hint or "")
    assert "is a Provider v4" in (raised.value.hint or "")


@pytest.mark.parametrize(
    "text",
    [
        "Checksum doesn't match.",  # decrypt route: a real mismatch, not the configuration
        "algorithm_file_checksum_mismatch",
        "checksum_prefix",
    ],
)
def test_other_checksum_texts_do_not_get_the_configuration_hint(text: str) -> None:
    error = parse_error(400, json.dumps({"error": text}))
    assert "MAX_CHECKSUM_LENGTH" not in (error.hint or "")
    assert "MAX_CHECKSUM_LENGTH" not in (hint_for(None, text) or "")
