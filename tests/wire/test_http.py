"""The one HTTP path (airflow_provider_ocean/wire/http.py), the same for both backends.

Every test runs against real sockets on 127.0.0.1, once per client: whether a failed request can have
reached the server (``request_sent``), reads retried through the one retry policy, rate-limit answers
waited out (429, ``Retry-After``, and Ocean Node's 403 limiters).
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_ocean.exceptions import OceanConnectionError, OceanProviderError
from airflow_provider_ocean.signing import Signer
from airflow_provider_ocean.wire import http
from airflow_provider_ocean.wire.errors import is_rate_limit, parse_node_error
from tests.wire.support import (
    BACKENDS,
    NODE_ROOT,
    ScriptedServer,
    closed_port_url,
    http_answer,
    make,
    serve,
)
from tests.wire.test_ocean_node import ENV_ID, FULL, status_entry
from tests.wire.test_provider_v4 import DID, JOB_ID, KEY, Reply, root_body, status_object

STATUS = ("GET", "/api/services/compute")


@pytest.fixture
def signer() -> Signer:
    return Signer(KEY)


def start(backend: str, client: Any, signer: Signer) -> Any:
    """Start a job the simplest way each backend allows (a free raw job on the node)."""
    if backend == "provider_v4":
        return client.start_compute(
            signer, datasets=[{"documentId": DID, "serviceId": "1"}], algorithm={"meta": {}}, environment="e"
        )
    return client.start_free_compute(signer, environment=ENV_ID, algorithm={"meta": {}}, datasets=[])


def status_read(backend: str, client: Any, signer: Signer) -> Any:
    if backend == "provider_v4":
        return client.get_status(signer.address, JOB_ID)
    return client.job_status(signer.address, FULL)


def status_answer(backend: str) -> Reply:
    return Reply(body=[status_object()] if backend == "provider_v4" else [status_entry()])


def root_answer(backend: str) -> bytes:
    return http_answer(root_body() if backend == "provider_v4" else NODE_ROOT)


# -- request_sent --------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_refused_start_was_not_sent(backend: str, signer: Signer) -> None:
    """Discovery and the nonce are answered, then the server is gone: the start's connection is refused,
    so the start surely never reached it (no job lookup needed, a plain connection error)."""
    server = ScriptedServer([root_answer(backend), http_answer({"nonce": "1"})])
    try:
        client = make(backend, server.url, retry_limit=1)
        with pytest.raises(OceanConnectionError, match="start") as caught:
            start(backend, client, signer)
    finally:
        server.close()
    assert [line.split()[0] for line in server.request_lines] == ["GET", "GET"]
    assert caught.value.request_sent is False


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_start_against_a_dead_server_was_not_sent(backend: str, signer: Signer) -> None:
    client = make(backend, closed_port_url(), retry_limit=2)
    with pytest.raises(OceanConnectionError) as caught:
        start(backend, client, signer)
    assert caught.value.request_sent is False


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_start_whose_nonce_read_timed_out_was_not_sent(backend: str, signer: Signer) -> None:
    """The nonce read got no answer (it may have reached the server), but the start itself never left."""
    server = ScriptedServer([root_answer(backend), None])
    try:
        client = make(backend, server.url, retry_limit=1, timeout=0.5)
        with pytest.raises(OceanConnectionError, match="read nonce") as caught:
            start(backend, client, signer)
    finally:
        server.close()
    assert caught.value.request_sent is False


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_start_without_answer_may_have_been_sent(backend: str, signer: Signer) -> None:
    """Control: the start reached the server and no answer came back: the outcome is unknown."""
    server = ScriptedServer([root_answer(backend), http_answer({"nonce": "1"}), None])
    try:
        client = make(backend, server.url, retry_limit=1, timeout=0.5, long_timeout=0.5)
        with pytest.raises(OceanConnectionError) as caught:
            start(backend, client, signer)
    finally:
        server.close()
    assert server.request_lines[-1].startswith("POST ")
    assert caught.value.request_sent is None


# -- the one retry policy --------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_reads_retry_a_5xx_burst_through_the_one_policy(
    backend: str, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    policies: list[str] = []
    real = http.read_retrying

    def spy(**kwargs: Any) -> Any:
        policies.append(kwargs["what"])
        return real(**kwargs)

    monkeypatch.setattr(http, "read_retrying", spy)
    server = serve(backend)
    answers = iter([Reply(502, raw=b"<html>Bad Gateway</html>"), status_answer(backend)])
    server.routes[STATUS] = lambda _request: next(answers)
    try:
        status_read(backend, make(backend, server.url, retry_limit=3), signer)
    finally:
        server.close()
    assert len(server.calls(*STATUS)) == 2
    assert any(what.startswith("job status") for what in policies)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_retry_policy_sleeps_through_the_client(backend: str, signer: Signer) -> None:
    slept: list[float] = []
    server = serve(backend)
    answers = iter([Reply(503, raw=b"busy"), Reply(504, raw=b"slow"), status_answer(backend)])
    server.routes[STATUS] = lambda _request: next(answers)
    try:
        client = make(backend, server.url, retry_limit=3, retry_delay=0.01, sleep=slept.append)
        status_read(backend, client, signer)
    finally:
        server.close()
    assert len(slept) == 2
    assert all(0.01 <= pause <= 0.05 for pause in slept)


# -- rate limits -----------------------------------------------------------------------------------------
LIMITERS = [
    (429, "Rate limit exceeded. Try again in 3 seconds.", 3.0),
    (403, "Too many active connections (max 30/min)", http.DEFAULT_RATE_LIMIT_WAIT),
    (403, "Rate limit exceeded", http.DEFAULT_RATE_LIMIT_WAIT),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("status", "text", "announced"), LIMITERS)
def test_a_limiter_answer_to_a_read_is_waited_out(
    backend: str, status: int, text: str, announced: float, signer: Signer
) -> None:
    slept: list[float] = []
    server = serve(backend)
    answers = iter([Reply(status, raw=text.encode(), headers={"Content-Type": "text/plain"})])
    server.routes[STATUS] = lambda _request: next(answers, status_answer(backend))
    try:
        status_read(backend, make(backend, server.url, sleep=slept.append), signer)
    finally:
        server.close()
    assert len(server.calls(*STATUS)) == 2
    assert len(slept) == 1
    assert announced <= slept[0] <= announced + 0.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_retry_after_is_honoured(backend: str, signer: Signer) -> None:
    slept: list[float] = []
    server = serve(backend)
    answers = iter([Reply(429, raw=b"", headers={"Retry-After": "7"})])
    server.routes[STATUS] = lambda _request: next(answers, status_answer(backend))
    try:
        status_read(backend, make(backend, server.url, sleep=slept.append), signer)
    finally:
        server.close()
    assert len(slept) == 1
    assert 7 <= slept[0] <= 7.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_limited_signed_command_is_signed_again(backend: str, signer: Signer) -> None:
    server = serve(backend)
    limited = Reply(403, raw=b"Too many active connections", headers={"Content-Type": "text/plain"})
    answers = iter([limited])
    server.routes[("PUT", "/api/services/compute")] = lambda _request: next(answers, Reply(body=[]))
    try:
        client = make(backend, server.url)
        client.stop_job(signer, JOB_ID if backend == "provider_v4" else FULL)
    finally:
        server.close()
    stops = server.calls("PUT", "/api/services/compute")
    nonces = [(call.json or call.query)["nonce"] for call in stops]
    assert len(nonces) == 2
    assert nonces[0] != nonces[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_other_403s_are_not_waited_out(backend: str, signer: Signer) -> None:
    slept: list[float] = []
    server = serve(backend)
    server.routes[STATUS] = Reply(403, raw=b"Unauthorized request", headers={"Content-Type": "text/plain"})
    try:
        with pytest.raises(OceanProviderError) as caught:
            status_read(backend, make(backend, server.url, sleep=slept.append), signer)
    finally:
        server.close()
    assert caught.value.status == 403
    assert slept == []
    assert len(server.calls(*STATUS)) == 1


def test_limiter_answers() -> None:
    assert is_rate_limit(429, "")
    assert is_rate_limit(403, "Too many active connections (...)")
    assert is_rate_limit(403, "Rate limit exceeded")
    assert not is_rate_limit(403, "Unauthorized request")
    assert not is_rate_limit(500, "Rate limit exceeded")
    error = parse_node_error(403, "Too many active connections (max 30)")
    assert error.is_rate_limited
    assert "connections" in (error.hint or "")
