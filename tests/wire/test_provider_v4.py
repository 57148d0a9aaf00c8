"""The Provider v4 wire client.

Most tests talk to a small real HTTP server on 127.0.0.1 that records what it receives; requests_mock
is used only for what a real server cannot be made to do easily (connection resets, 5xx bursts, slow
answers) and to feed the three error shapes through the client.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import sys
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import requests_mock
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak

from airflow_provider_ocean import __version__
from airflow_provider_ocean.exceptions import (
    OceanConnectionError,
    OceanJobNotFoundError,
    OceanProviderError,
    OceanValidationError,
)
from airflow_provider_ocean.models import ComputeAlgorithm, ComputeInput, JobStatus
from airflow_provider_ocean.signing import NonceAllocator, Signer, process_salt
from airflow_provider_ocean.wire.download import content_disposition_filename
from airflow_provider_ocean.wire.errors import parse_error
from airflow_provider_ocean.wire.http import NONCE_RESIGNS
from airflow_provider_ocean.wire.provider_v4 import DEFAULT_ENDPOINTS, ProviderV4Client

KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
ENGINE = "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1"
DID = "did:op:62b18537305dacbec82ee60d3dedf67e0e3b353990336314c07e53d17af119ae"
DID2 = "did:op:" + "a" * 64
ALGO_DID = "did:op:" + "b" * 64
JOB_ID = "3f0c9a5e0d2b4d8e9f00112233445566"
TX = "0x" + "ab" * 32
SIGNATURE_RE = r"0x[0-9a-f]{130}"


def recover(message: str, signature: str) -> str:
    return Account.recover_message(encode_defunct(primitive=keccak(text=message)), signature=signature)


def root_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "software": "Provider",
        "version": "2.1.6",
        "chainIds": [8996],
        "providerAddresses": {"8996": "0x00bd138abd70e2f00903268f3db08f2d25677c9e"},
        "serviceEndpoints": {name: [m, p] for name, (m, p) in DEFAULT_ENDPOINTS.items()},
    }
    body.update(overrides)
    return body


def status_object(**overrides: Any) -> dict[str, Any]:
    body = {
        "agreementId": TX,
        "jobId": JOB_ID,
        "owner": ADDRESS,
        "status": 1,
        "statusText": "Warming up",
        "dateCreated": "1700000000.123456",
        "dateFinished": None,
        "results": "",
        "stopreq": 0,
        "removed": 0,
        "algoDID": ALGO_DID,
        "inputDID": [DID],
    }
    body.update(overrides)
    return body


# -- a tiny recording HTTP server -----------------------------------------------------------------
@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    chunks: Callable[[], Iterator[bytes]] | None = None
    length: int | None = None  # announce a Content-Length (may lie, to break a stream)


class RecordingServer:
    """Answers from ``routes[(method, path)]`` (a Reply, or a callable taking the Recorded request)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.routes: dict[tuple[str, str], Any] = {("GET", "/"): Reply(body=root_body())}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                record = Recorded(
                    self.command,
                    parts.path,
                    dict(parse_qsl(parts.query, keep_blank_values=True)),
                    {k: v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                )
                server.requests.append(record)
                reply = server.routes.get((self.command, parts.path))
                if callable(reply):
                    reply = reply(record)
                if reply is None:
                    reply = Reply(404, {"context": None, "error": "404 Not Found: nope"})
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                if reply.chunks is not None:
                    if reply.length is not None:
                        self.send_header("Content-Length", str(reply.length))
                    self.end_headers()
                    try:
                        for chunk in reply.chunks():
                            self.wfile.write(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return
                payload = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
                self.send_header("Content-Type", reply.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def calls(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    srv = RecordingServer()
    yield srv
    srv.close()


@pytest.fixture
def signer() -> Signer:
    return Signer(KEY)


def make_client(url: str, **kwargs: Any) -> ProviderV4Client:
    kwargs.setdefault("retry_delay", 0.0)
    kwargs.setdefault("sleep", lambda _seconds: None)
    kwargs.setdefault("nonces", NonceAllocator())
    return ProviderV4Client(url, **kwargs)


def nonce_route(server: RecordingServer, stored: str = "1") -> None:
    server.routes[("GET", "/api/services/nonce")] = Reply(body={"nonce": stored})


# -- parse_error: the three shapes ------------------------------------------------------------------
class TestParseError:
    def test_flask_sieve_list(self):
        body = {
            "errors": {"nonce": ["The nonce field is required."]},
            "message": "Validation error",
            "success": False,
        }
        exc = parse_error(400, json.dumps(body), operation="start compute")
        assert (exc.status, exc.field, exc.code) == (400, "nonce", None)
        assert exc.detail == "The nonce field is required."
        assert "start compute failed: HTTP 400: nonce: The nonce field is required." in str(exc)

    def test_flask_sieve_signature_string_is_a_nonce_error(self):
        body = {
            "errors": {"signature": "Invalid signature expected nonce (5) > current nonce (4)."},
            "message": "Validation error",
            "success": False,
        }
        exc = parse_error(400, json.dumps(body))
        assert exc.field == "signature"
        assert exc.is_nonce_error
        assert "fresh nonce" in (exc.hint or "")

    def test_bad_signature_message_never_carries_the_signature(self):
        sig = "0x" + "1f" * 65
        text = f"Invalid signature {sig} for ethereum address {ADDRESS}, message x and nonce 5. Got 0x00"
        exc = parse_error(400, json.dumps({"errors": {"signature": text}, "message": "Validation error"}))
        assert sig not in str(exc)
        assert sig[2:] not in (exc.body or "")
        assert "<signature>" in str(exc)
        assert not exc.is_nonce_error

    def test_handled_string(self):
        exc = parse_error(400, json.dumps({"error": "Compute environment does not exist"}))
        assert exc.field is None
        assert exc.detail == "Compute environment does not exist"
        assert "list the environments" in (exc.hint or "")

    def test_handled_object_with_code(self):
        exc = parse_error(400, json.dumps({"error": {"dataset.serviceId": "order_invalid"}}))
        assert (exc.field, exc.code) == ("dataset.serviceId", "order_invalid")
        assert "re-initialize and pay again" in str(exc)
        assert exc.errors == {"dataset.serviceId": "order_invalid"}

    def test_handled_object_with_sentence(self):
        exc = parse_error(400, json.dumps({"error": {"dataset": "Asset is not consumable."}}))
        assert exc.code is None
        assert exc.field == "dataset"
        assert "Asset is not consumable." in str(exc)

    @pytest.mark.parametrize(
        ("code", "needle"),
        [("no_raw_algo_allowed", "allowRawAlgorithm"), ("not_trusted_algo", "publisherTrustedAlgorithms")],
    )
    def test_known_codes_have_hints(self, code, needle):
        exc = parse_error(400, json.dumps({"error": {"dataset": code}}))
        assert exc.code == code
        assert needle in (exc.hint or "")

    def test_uncaught_drops_the_context(self):
        sig = "0x" + "2e" * 65
        body = {
            "error": "Cannot create duplicates in the database. Existing nonce: 5 vs. new nonce: 5",
            "context": {"signature": sig, "nonce": "5"},
        }
        exc = parse_error(503, json.dumps(body))
        assert exc.status == 503
        assert exc.retryable
        assert "Cannot create duplicates" in str(exc)
        assert sig[2:] not in str(exc)
        assert sig[2:] not in (exc.body or "")
        assert "list the jobs" in (exc.hint or "")

    def test_unknown_route(self):
        exc = parse_error(404, json.dumps({"context": None, "error": "404 Not Found: The requested URL"}))
        assert exc.status == 404
        assert "404 Not Found" in str(exc)

    def test_html_body_despite_json_content_type(self):
        exc = parse_error(502, "<html><body><h1>502 Bad Gateway</h1></body></html>")
        assert exc.detail == "502 Bad Gateway"
        assert exc.retryable

    def test_empty_body(self):
        exc = parse_error(500, b"")
        assert exc.detail == "empty response body"

    def test_json_string_body(self):
        assert parse_error(400, '"boom"').detail == "boom"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("attachment;filename=out.txt", "out.txt"),
        ('attachment; filename="my file.csv"', "my file.csv"),
        ("attachment; filename*=UTF-8''r%C3%A9sultat.txt", "résultat.txt"),
        (None, None),
        ("inline", None),
    ],
)
def test_content_disposition(header, expected):
    assert content_disposition_filename(header) == expected


# -- discovery --------------------------------------------------------------------------------------
class TestDiscovery:
    def test_root_is_cached_and_user_agent_is_set(self, server):
        client = make_client(server.url)
        client.endpoint("computeStart")
        client.endpoint("nonce")
        assert client.software == "Provider"
        assert client.chain_ids == [8996]
        assert client.provider_address(8996) == "0x00bd138abd70e2f00903268f3db08f2d25677c9e"
        assert client.provider_address(1) is None
        assert len(server.calls("GET", "/")) == 1
        assert server.requests[0].headers["User-Agent"] == f"airflow-provider-ocean/{__version__}"

    def test_endpoints_come_from_service_endpoints(self, server):
        endpoints = dict(root_body()["serviceEndpoints"])
        endpoints["computeEnvironments"] = ["GET", "/v2/envs"]
        server.routes[("GET", "/")] = Reply(body=root_body(serviceEndpoints=endpoints))
        server.routes[("GET", "/v2/envs")] = Reply(body={"8996": []})
        client = make_client(server.url + "/")
        assert client.endpoint("computeEnvironments") == ("GET", server.url + "/v2/envs")
        assert client.environments(8996) == []
        assert server.calls("GET", "/v2/envs")

    def test_not_a_provider(self, server):
        server.routes[("GET", "/")] = Reply(body={"hello": "world"})
        with pytest.raises(OceanProviderError, match="serviceEndpoints"):
            make_client(server.url).root()

    def test_rejects_url_without_scheme(self):
        with pytest.raises(OceanValidationError):
            ProviderV4Client("provider.example.com")

    def test_timeouts(self):
        assert make_client("http://x.test").long_timeout >= 180
        assert make_client("http://x.test").timeout == 30
        assert make_client("http://x.test", timeout=300).long_timeout == 300
        assert make_client("http://x.test", long_timeout=200).long_timeout == 200


class TestEnvironments:
    ENVS = {
        "8996": [
            {
                "id": "ocean-compute-paid",
                "consumerAddress": ENGINE,
                "priceMin": "0.5",
                "maxJobDuration": "60",
                "feeToken": "0x2473f4F7bf40ed9310838edFCA6262C17A59DF64",
            },
            {"id": "ocean-compute", "consumerAddress": ENGINE, "priceMin": "0", "maxJobDuration": 3600},
        ],
        "1": [{"id": "mainnet-env", "consumerAddress": ENGINE, "priceMin": 0}],
    }

    def test_parse_and_choose_free(self, server):
        server.routes[("GET", "/api/services/computeEnvironments")] = Reply(body=self.ENVS)
        client = make_client(server.url)
        envs = client.compute_environments()
        assert sorted(envs) == [1, 8996]
        paid, free = envs[8996]
        assert (paid.price_min, paid.max_job_duration, paid.is_free) == (0.5, 60, False)
        assert free.is_free
        assert free.fee_token == "0x" + "0" * 40
        assert client.choose_free_environment(8996).id == "ocean-compute"
        assert client.get_environment(8996, "ocean-compute-paid").consumer_address == ENGINE

    def test_no_free_environment(self, server):
        server.routes[("GET", "/api/services/computeEnvironments")] = Reply(
            body={"8996": self.ENVS["8996"][:1]}
        )
        with pytest.raises(OceanValidationError, match=r"No free compute environment.*ocean-compute-paid"):
            make_client(server.url).choose_free_environment(8996)

    def test_no_environment_at_all(self, server):
        server.routes[("GET", "/api/services/computeEnvironments")] = Reply(body={})
        with pytest.raises(OceanValidationError, match="no compute environment"):
            make_client(server.url).choose_free_environment(8996)

    def test_unknown_environment_lists_known_ones(self, server):
        server.routes[("GET", "/api/services/computeEnvironments")] = Reply(body=self.ENVS)
        with pytest.raises(OceanValidationError, match=r"'nope'.*ocean-compute-paid, ocean-compute"):
            make_client(server.url).get_environment(8996, "nope")

    @pytest.mark.parametrize(
        "body",
        [
            [{"id": "x", "consumerAddress": ENGINE}],
            {"8996": {"id": "x"}},
            {"mainnet": []},
            {"8996": [{"id": "x"}]},
            {"8996": [{"id": "x", "consumerAddress": ENGINE, "priceMin": "cheap"}]},
        ],
    )
    def test_malformed_shapes(self, server, body):
        server.routes[("GET", "/api/services/computeEnvironments")] = Reply(body=body)
        with pytest.raises((OceanProviderError, OceanValidationError)):
            make_client(server.url).compute_environments()

    def test_error_object_instead_of_map(self, server):
        server.routes[("GET", "/api/services/computeEnvironments")] = Reply(body={"error": "operator down"})
        with pytest.raises(OceanProviderError, match="operator down"):
            make_client(server.url).compute_environments()


class TestDdoAndNonce:
    def test_ddo_route_on_the_provider_by_default(self, server):
        server.routes[("GET", f"/api/aquarius/assets/ddo/{DID}")] = Reply(body={"id": DID, "services": []})
        assert make_client(server.url).get_ddo(DID)["id"] == DID

    def test_ddo_on_a_separate_aquarius(self, server):
        aquarius = RecordingServer()
        try:
            aquarius.routes[("GET", f"/api/aquarius/assets/ddo/{DID}")] = Reply(
                body={"id": DID, "services": []}
            )
            assert make_client(server.url, aquarius_url=aquarius.url).get_ddo(DID)["id"] == DID
            assert not server.calls("GET", f"/api/aquarius/assets/ddo/{DID}")
        finally:
            aquarius.close()

    def test_unknown_did(self, server):
        with pytest.raises(OceanValidationError, match="not found in Aquarius"):
            make_client(server.url).get_ddo(DID)

    def test_malformed_ddo(self, server):
        server.routes[("GET", f"/api/aquarius/assets/ddo/{DID}")] = Reply(body={"id": DID})
        with pytest.raises(OceanValidationError, match="malformed"):
            make_client(server.url).get_ddo(DID)

    def test_nonce_is_returned_as_sent(self, server):
        nonce_route(server, "1700000000000")
        assert make_client(server.url).get_nonce(ADDRESS) == "1700000000000"
        assert server.calls("GET", "/api/services/nonce")[0].query == {"userAddress": ADDRESS}


# -- compute ----------------------------------------------------------------------------------------
class TestInitializeCompute:
    def test_body(self, server):
        answer = {"datasets": [{"validOrder": TX}], "algorithm": {"validOrder": TX}}
        server.routes[("POST", "/api/services/initializeCompute")] = Reply(body=answer)
        client = make_client(server.url)
        datasets = [{"documentId": DID, "serviceId": "1", "transferTxId": TX}]
        algorithm = {"documentId": ALGO_DID, "serviceId": "0"}
        result = client.initialize_compute(
            datasets=datasets,
            algorithm=algorithm,
            environment="ocean-compute",
            valid_until=1795319364,
            consumer_address=ENGINE,
        )
        assert result == answer
        call = server.calls("POST", "/api/services/initializeCompute")[0]
        assert call.query == {}
        assert call.headers["Content-Type"] == "application/json"
        assert call.json == {
            "datasets": datasets,
            "algorithm": algorithm,
            "compute": {"env": "ocean-compute", "validUntil": 1795319364},
            "consumerAddress": ENGINE,
        }

    def test_wrong_number_of_answers(self, server):
        server.routes[("POST", "/api/services/initializeCompute")] = Reply(body={"datasets": []})
        with pytest.raises(OceanProviderError, match="answered for 0 datasets"):
            make_client(server.url).initialize_compute(
                datasets=[{"documentId": DID, "serviceId": "1"}],
                algorithm={"meta": {}},
                environment="e",
                valid_until=1,
                consumer_address=ENGINE,
            )

    def test_missing_algorithm_entry(self, server):
        server.routes[("POST", "/api/services/initializeCompute")] = Reply(
            body={"datasets": [{"validOrder": TX}]}
        )
        with pytest.raises(OceanProviderError, match="no algorithm entry"):
            make_client(server.url).initialize_compute(
                datasets=[{"documentId": DID, "serviceId": "1"}],
                algorithm={"documentId": ALGO_DID},
                environment="e",
                valid_until=1,
                consumer_address=ENGINE,
            )


class TestStartCompute:
    DATASETS = [
        {"documentId": DID, "serviceId": "1", "transferTxId": TX, "userdata": {"rows": 10}},
        {"documentId": DID2, "serviceId": "0", "transferTxId": TX},
    ]
    ALGORITHM = {
        "documentId": ALGO_DID,
        "serviceId": "0",
        "transferTxId": TX,
        "algocustomdata": {"epochs": 3},
    }

    def test_body_and_signature(self, server, signer):
        nonce_route(server, "1")
        server.routes[("POST", "/api/services/compute")] = Reply(body=[status_object()])
        job = make_client(server.url).start_compute(
            signer, datasets=self.DATASETS, algorithm=self.ALGORITHM, environment="ocean-compute"
        )
        assert (job.job_id, job.status, job.is_terminal) == (JOB_ID, 1, False)
        call = server.calls("POST", "/api/services/compute")[0]
        assert call.query == {}
        assert call.headers["Content-Type"] == "application/json"
        body = call.json
        assert set(body) == {
            "dataset",
            "algorithm",
            "additionalDatasets",
            "environment",
            "consumerAddress",
            "nonce",
            "signature",
        }
        assert body["dataset"] == self.DATASETS[0]
        assert body["additionalDatasets"] == self.DATASETS[1:]
        assert body["algorithm"] == self.ALGORITHM
        assert body["environment"] == "ocean-compute"
        assert body["consumerAddress"] == ADDRESS
        assert isinstance(body["nonce"], str)
        # the millisecond nonce with this process's salt as a decimal fraction (no equal nonces across hosts)
        assert re.fullmatch(r"\d{13,}\.\d{9}", body["nonce"])
        assert body["nonce"].endswith(f".{process_salt():09d}")
        assert recover(f"{ADDRESS}{DID}{body['nonce']}", body["signature"]) == ADDRESS

    def test_single_dataset_sends_no_additional_datasets(self, server, signer):
        nonce_route(server)
        server.routes[("POST", "/api/services/compute")] = Reply(body=[status_object()])
        make_client(server.url).start_compute(
            signer, datasets=self.DATASETS[:1], algorithm=self.ALGORITHM, environment="ocean-compute"
        )
        assert "additionalDatasets" not in server.calls("POST", "/api/services/compute")[0].json

    def test_nonce_above_a_stored_nanosecond_nonce(self, server, signer):
        nonce_route(server, "1900000000000000000")
        server.routes[("POST", "/api/services/compute")] = Reply(body=[status_object()])
        make_client(server.url).start_compute(
            signer, datasets=self.DATASETS, algorithm=self.ALGORITHM, environment="e"
        )
        sent = server.calls("POST", "/api/services/compute")[0].json["nonce"]
        assert sent == f"1900000000000000001.{process_salt():09d}"

    def test_refused_nonce_is_resigned_once(self, server, signer):
        nonce_route(server)
        answers = iter(
            [
                Reply(
                    400,
                    {"errors": {"signature": "Invalid signature expected nonce (9) > current nonce (8)."}},
                ),
                Reply(body=[status_object()]),
            ]
        )
        server.routes[("POST", "/api/services/compute")] = lambda _request: next(answers)
        job = make_client(server.url).start_compute(
            signer, datasets=self.DATASETS, algorithm=self.ALGORITHM, environment="e"
        )
        assert job.job_id == JOB_ID
        first, second = server.calls("POST", "/api/services/compute")
        assert Decimal(second.json["nonce"]) > Decimal(first.json["nonce"])
        assert recover(f"{ADDRESS}{DID}{second.json['nonce']}", second.json["signature"]) == ADDRESS

    def test_a_nonce_refused_every_time_raises_after_the_resigns(self, server, signer):
        nonce_route(server)
        server.routes[("POST", "/api/services/compute")] = Reply(
            400, {"errors": {"signature": "Invalid signature expected nonce (9) > current nonce (8)."}}
        )
        with pytest.raises(OceanProviderError) as info:
            make_client(server.url).start_compute(
                signer, datasets=self.DATASETS, algorithm=self.ALGORITHM, environment="e"
            )
        assert info.value.is_nonce_error
        assert len(server.calls("POST", "/api/services/compute")) == 1 + NONCE_RESIGNS

    def test_order_invalid(self, server, signer):
        nonce_route(server)
        server.routes[("POST", "/api/services/compute")] = Reply(
            400, {"error": {"dataset.serviceId": "order_invalid"}}
        )
        with pytest.raises(OceanProviderError) as info:
            make_client(server.url).start_compute(
                signer, datasets=self.DATASETS, algorithm=self.ALGORITHM, environment="e"
            )
        assert info.value.code == "order_invalid"
        assert "re-initialize and pay again" in str(info.value)
        assert len(server.calls("POST", "/api/services/compute")) == 1

    def test_html_answer(self, server, signer):
        nonce_route(server)
        server.routes[("POST", "/api/services/compute")] = Reply(
            200, raw=b"<html>oops</html>", headers={"Content-Type": "application/json"}
        )
        with pytest.raises(OceanProviderError, match="not JSON"):
            make_client(server.url).start_compute(
                signer, datasets=self.DATASETS, algorithm=self.ALGORITHM, environment="e"
            )

    def test_empty_list_answer(self, server, signer):
        nonce_route(server)
        server.routes[("POST", "/api/services/compute")] = Reply(body=[])
        with pytest.raises(OceanProviderError, match="expected a list"):
            make_client(server.url).start_compute(
                signer, datasets=self.DATASETS, algorithm=self.ALGORITHM, environment="e"
            )

    def test_needs_a_dataset(self, server, signer):
        with pytest.raises(OceanValidationError):
            make_client(server.url).start_compute(
                signer, datasets=[], algorithm=self.ALGORITHM, environment="e"
            )


class TestStatusStopDelete:
    def test_status_is_unsigned(self, server):
        server.routes[("GET", "/api/services/compute")] = Reply(body=[status_object()])
        jobs = make_client(server.url).get_status(ADDRESS, JOB_ID)
        assert [j.job_id for j in jobs] == [JOB_ID]
        call = server.calls("GET", "/api/services/compute")[0]
        assert call.query == {"consumerAddress": ADDRESS, "jobId": JOB_ID}
        assert not server.calls("GET", "/api/services/nonce")

    def test_empty_list_is_valid(self, server):
        server.routes[("GET", "/api/services/compute")] = Reply(body=[])
        assert make_client(server.url).get_status(ADDRESS) == []

    def test_html_status_is_an_error(self, server):
        server.routes[("GET", "/api/services/compute")] = Reply(raw=b"<html></html>")
        with pytest.raises(OceanProviderError):
            make_client(server.url).get_status(ADDRESS)

    def test_results_of_an_unknown_job(self, server):
        server.routes[("GET", "/api/services/compute")] = Reply(body=[])
        with pytest.raises(OceanJobNotFoundError):
            make_client(server.url).list_results(ADDRESS, JOB_ID)

    def test_list_results(self, server):
        results = [
            {"filename": "out.csv", "filesize": 4, "type": "output"},
            {"filename": "algorithm.log", "filesize": 9, "type": "algorithmLog"},
        ]
        server.routes[("GET", "/api/services/compute")] = Reply(
            body=[status_object(status=70, dateFinished="1700000093.5", results=results)]
        )
        files = make_client(server.url).list_results(ADDRESS, JOB_ID)
        assert [(f.index, f.filename, f.type) for f in files] == [
            (0, "out.csv", "output"),
            (1, "algorithm.log", "algorithmLog"),
        ]

    def test_stop_is_signed_with_a_json_body(self, server, signer):
        nonce_route(server, "5")
        server.routes[("PUT", "/api/services/compute")] = Reply(body=[status_object(status=40)])
        jobs = make_client(server.url).stop_job(signer, JOB_ID)
        assert jobs[0].status == 40
        call = server.calls("PUT", "/api/services/compute")[0]
        assert call.query == {}
        body = call.json
        assert (body["consumerAddress"], body["jobId"]) == (ADDRESS, JOB_ID)
        assert "documentId" not in body
        assert recover(f"{ADDRESS}{JOB_ID}{body['nonce']}", body["signature"]) == ADDRESS

    def test_stop_with_document_id(self, server, signer):
        nonce_route(server)
        server.routes[("PUT", "/api/services/compute")] = Reply(body=[])
        make_client(server.url).stop_job(signer, JOB_ID, document_id=DID)
        body = server.calls("PUT", "/api/services/compute")[0].json
        assert recover(f"{ADDRESS}{JOB_ID}{DID}{body['nonce']}", body["signature"]) == ADDRESS

    def test_delete_empty_string_body(self, server, signer):
        nonce_route(server)
        server.routes[("DELETE", "/api/services/compute")] = Reply(body="")
        assert make_client(server.url).delete_job(signer, JOB_ID) == []
        assert server.calls("DELETE", "/api/services/compute")

    def test_successive_signed_calls_use_increasing_nonces(self, server, signer):
        nonce_route(server, "1")
        server.routes[("PUT", "/api/services/compute")] = Reply(body=[])
        client = make_client(server.url)
        for _ in range(3):
            client.stop_job(signer, JOB_ID)
        nonces = [Decimal(c.json["nonce"]) for c in server.calls("PUT", "/api/services/compute")]
        assert nonces == sorted(set(nonces))
        # the stored nonce is read once: after that the nonces handed out bound it
        assert len(server.calls("GET", "/api/services/nonce")) == 1

    def test_a_refusal_reads_the_stored_nonce_again_and_signs_above_it(self, server, signer):
        """Another client raised the stored nonce past ours: the refused call is re-signed above it."""
        client = make_client(server.url)
        nonce_route(server, "1")
        server.routes[("PUT", "/api/services/compute")] = Reply(body=[])
        client.stop_job(signer, JOB_ID)
        ahead = "1900000000000000000"
        nonce_route(server, ahead)
        refusal = Reply(
            400, {"errors": {"signature": f"Invalid signature expected nonce ({ahead}) > current."}}
        )
        answers = iter([refusal, Reply(body=[])])
        server.routes[("PUT", "/api/services/compute")] = lambda _request: next(answers)
        client.stop_job(signer, JOB_ID)
        calls = server.calls("PUT", "/api/services/compute")
        assert len(calls) == 3
        assert Decimal(calls[1].json["nonce"]) < Decimal(ahead) < Decimal(calls[2].json["nonce"])
        assert len(server.calls("GET", "/api/services/nonce")) == 2


class TestDownload:
    SIZE = 24 * 1024 * 1024

    @classmethod
    def _chunks(cls) -> Iterator[bytes]:
        block = bytes(range(256)) * 256  # 64 KiB
        sent = 0
        while sent < cls.SIZE:
            piece = block[: min(len(block), cls.SIZE - sent)]
            sent += len(piece)
            yield piece

    @classmethod
    def _expected_sha(cls) -> str:
        digest = hashlib.sha256()
        for chunk in cls._chunks():
            digest.update(chunk)
        return digest.hexdigest()

    def _route(self, server: RecordingServer) -> None:
        nonce_route(server)
        server.routes[("GET", "/api/services/computeResult")] = Reply(
            headers={"Content-Type": "text/plain", "Content-Disposition": "attachment;filename=result.csv"},
            chunks=self._chunks,
            length=self.SIZE,
        )

    def test_streams_to_a_path_in_constant_memory(self, server, signer, tmp_path):
        self._route(server)
        client = make_client(server.url)
        target = tmp_path / "out.bin"
        tracemalloc.start()
        try:
            result = client.download_result(signer, JOB_ID, 1, target, chunk_size=256 * 1024)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 8 * 1024 * 1024
        assert result.bytes_written == self.SIZE == target.stat().st_size
        assert result.sha256 == self._expected_sha()
        assert (result.filename, result.content_type, result.path) == (
            "result.csv",
            "text/plain",
            str(target),
        )
        assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
        call = server.calls("GET", "/api/services/computeResult")[0]
        assert (call.query["index"], call.query["jobId"], call.query["consumerAddress"]) == (
            "1",
            JOB_ID,
            ADDRESS,
        )
        assert recover(f"{ADDRESS}{JOB_ID}1{call.query['nonce']}", call.query["signature"]) == ADDRESS

    def test_directory_destination_uses_the_header_name(self, server, signer, tmp_path):
        self._route(server)
        result = make_client(server.url).download_result(signer, JOB_ID, 0, tmp_path)
        assert result.path == str(tmp_path / "result.csv")
        assert (tmp_path / "result.csv").stat().st_size == self.SIZE

    def test_file_object_destination(self, server, signer):
        nonce_route(server)
        server.routes[("GET", "/api/services/computeResult")] = Reply(
            raw=b"hi\n",
            headers={"Content-Type": "text/plain", "Content-Disposition": "attachment;filename=../../x"},
        )
        buffer = io.BytesIO()
        result = make_client(server.url).download_result(signer, JOB_ID, 0, buffer)
        assert buffer.getvalue() == b"hi\n"
        assert result.sha256 == hashlib.sha256(b"hi\n").hexdigest()
        assert result.path is None

    def test_header_name_cannot_escape_the_directory(self, server, signer, tmp_path):
        nonce_route(server)
        server.routes[("GET", "/api/services/computeResult")] = Reply(
            raw=b"x", headers={"Content-Disposition": "attachment;filename=../../evil.txt"}
        )
        result = make_client(server.url).download_result(signer, JOB_ID, 0, tmp_path / "sub")
        assert result.path == str(tmp_path / "sub")  # not a directory: taken as the file path
        (tmp_path / "dir").mkdir()
        result = make_client(server.url).download_result(signer, JOB_ID, 0, tmp_path / "dir")
        assert result.path == str(tmp_path / "dir" / "evil.txt")

    def test_operator_error(self, server, signer, tmp_path):
        nonce_route(server)
        server.routes[("GET", "/api/services/computeResult")] = Reply(
            404, {"error": f"No such index 7 in this compute job {JOB_ID}"}
        )
        with pytest.raises(OceanProviderError, match="No such index 7"):
            make_client(server.url).download_result(signer, JOB_ID, 7, tmp_path / "x")
        assert not list(tmp_path.iterdir())
        assert len(server.calls("GET", "/api/services/computeResult")) == 1

    def test_broken_stream_leaves_no_partial_file(self, server, signer, tmp_path):
        nonce_route(server)
        server.routes[("GET", "/api/services/computeResult")] = Reply(
            chunks=lambda: iter([b"x" * 1000]), length=100_000
        )
        with pytest.raises(OceanConnectionError, match="stream broke"):
            make_client(server.url).download_result(signer, JOB_ID, 0, tmp_path / "out")
        assert not list(tmp_path.iterdir())

    def test_negative_index(self, server, signer, tmp_path):
        with pytest.raises(OceanValidationError):
            make_client(server.url).download_result(signer, JOB_ID, -1, tmp_path)


class TestDirectDownload(TestDownload):
    """With the ``direct`` write path, large results go to disk with O_DIRECT (threshold lowered so that
    24 MiB + a partial block counts)."""

    SIZE = 24 * 1024 * 1024 + 12_345  # not a multiple of the block size: the tail is written buffered

    @pytest.fixture(autouse=True)
    def _small_threshold(self, monkeypatch, tmp_path):
        from airflow_provider_ocean.wire import direct_io, download

        if not hasattr(os, "O_DIRECT"):
            pytest.skip("no O_DIRECT on this platform")
        probe = tmp_path / "probe"
        probe.write_bytes(b"")
        fd = direct_io.open_direct(str(probe))
        if fd is None:
            pytest.skip("the temporary directory's file system refuses O_DIRECT")
        os.close(fd)
        probe.unlink()
        opened: list[str] = []
        original = direct_io.open_direct

        def spy(path: str) -> int | None:
            opened.append(path)
            return original(path)

        monkeypatch.setattr(download, "DIRECT_IO_MIN_BYTES", 1024 * 1024)
        monkeypatch.setattr(download, "open_direct", spy)
        plain = make_client
        monkeypatch.setattr(
            sys.modules[__name__], "make_client", lambda url, **kw: plain(url, write_path="direct", **kw)
        )
        self.opened = opened

    def test_streams_to_a_path_in_constant_memory(self, server, signer, tmp_path):
        super().test_streams_to_a_path_in_constant_memory(server, signer, tmp_path)
        assert len(self.opened) == 1  # the direct path was taken

    def test_broken_stream_leaves_no_partial_file(self, server, signer, tmp_path):
        nonce_route(server)
        server.routes[("GET", "/api/services/computeResult")] = Reply(
            chunks=lambda: iter([b"x" * (3 * 1024 * 1024)]), length=5 * 1024 * 1024
        )
        with pytest.raises(OceanConnectionError, match="stream broke"):
            make_client(server.url).download_result(signer, JOB_ID, 0, tmp_path / "out")
        assert len(self.opened) == 1
        assert not list(tmp_path.iterdir())

    def test_a_file_system_without_o_direct_is_written_through_the_cache(
        self, server, signer, tmp_path, monkeypatch
    ):
        from airflow_provider_ocean.wire import download

        self._route(server)
        monkeypatch.setattr(download, "open_direct", lambda path: self.opened.append(path))  # refused
        result = make_client(server.url).download_result(signer, JOB_ID, 0, tmp_path / "out.bin")
        assert len(self.opened) == 1
        assert result.bytes_written == self.SIZE == (tmp_path / "out.bin").stat().st_size
        assert result.sha256 == self._expected_sha()

    def test_a_file_system_refusing_direct_writes_gets_the_rest_through_the_cache(
        self, server, signer, tmp_path, monkeypatch
    ):
        """Some file systems take the O_DIRECT flag at open and refuse the writes (EINVAL)."""
        import errno

        from airflow_provider_ocean.wire import direct_io

        self._route(server)
        real_write = os.write
        refused: list[int] = []

        def write(fd: int, data: Any) -> int:
            if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
                refused.append(len(data))
                raise OSError(errno.EINVAL, "Invalid argument")
            return real_write(fd, data)

        monkeypatch.setattr(direct_io.os, "write", write)
        result = make_client(server.url).download_result(signer, JOB_ID, 0, tmp_path / "out.bin")
        monkeypatch.undo()
        assert len(refused) == 1
        assert result.bytes_written == self.SIZE == (tmp_path / "out.bin").stat().st_size
        assert result.sha256 == self._expected_sha()
        assert hashlib.sha256((tmp_path / "out.bin").read_bytes()).hexdigest() == result.sha256


# -- transport failures (requests_mock) -------------------------------------------------------------
BASE = "http://provider.mock"


@pytest.fixture
def mocked() -> Iterator[requests_mock.Mocker]:
    with requests_mock.Mocker() as mocker:
        mocker.get(BASE + "/", json=root_body())
        mocker.get(BASE + "/api/services/nonce", json={"nonce": "1"})
        yield mocker


def _count(mocker: requests_mock.Mocker, method: str, path: str) -> int:
    return sum(1 for r in mocker.request_history if r.method == method and urlsplit(r.url).path == path)


class TestRetries:
    def test_5xx_burst_is_retried(self, mocked):
        mocked.get(
            BASE + "/api/services/compute",
            [
                {"status_code": 503, "json": {"error": "x", "context": None}},
                {"status_code": 502, "text": "<html/>"},
                {"status_code": 200, "json": [status_object()]},
            ],
        )
        jobs = make_client(BASE, retry_limit=3).get_status(ADDRESS, JOB_ID)
        assert jobs[0].job_id == JOB_ID
        assert _count(mocked, "GET", "/api/services/compute") == 3

    def test_gives_up_after_retry_limit(self, mocked):
        mocked.get(BASE + "/api/services/compute", status_code=500, json={"error": "boom", "context": None})
        with pytest.raises(OceanProviderError) as info:
            make_client(BASE, retry_limit=4).get_status(ADDRESS)
        assert info.value.status == 500
        assert _count(mocked, "GET", "/api/services/compute") == 4

    def test_429_is_retried(self, mocked):
        mocked.get(
            BASE + "/api/services/computeEnvironments",
            [{"status_code": 429, "text": ""}, {"status_code": 200, "json": {"8996": []}}],
        )
        assert make_client(BASE).environments(8996) == []
        assert _count(mocked, "GET", "/api/services/computeEnvironments") == 2

    def test_4xx_is_not_retried(self, mocked):
        mocked.get(
            BASE + "/api/services/compute",
            status_code=400,
            json={"errors": {"consumerAddress": ["The consumerAddress field is required."]}},
        )
        with pytest.raises(OceanProviderError) as info:
            make_client(BASE, retry_limit=5).get_status(ADDRESS)
        assert info.value.field == "consumerAddress"
        assert _count(mocked, "GET", "/api/services/compute") == 1

    def test_start_is_never_retried_on_5xx(self, mocked, signer):
        mocked.post(
            BASE + "/api/services/compute", status_code=503, json={"error": "operator down", "context": None}
        )
        with pytest.raises(OceanProviderError) as info:
            make_client(BASE, retry_limit=5).start_compute(
                signer,
                datasets=[{"documentId": DID, "serviceId": "1", "transferTxId": TX}],
                algorithm={"documentId": ALGO_DID, "serviceId": "0", "transferTxId": TX},
                environment="e",
            )
        assert info.value.status == 503
        assert _count(mocked, "POST", "/api/services/compute") == 1

    def test_start_is_never_retried_on_connection_reset(self, mocked, signer):
        mocked.post(
            BASE + "/api/services/compute",
            exc=requests.exceptions.ConnectionError("Connection reset by peer"),
        )
        with pytest.raises(OceanConnectionError, match="cannot reach"):
            make_client(BASE, retry_limit=5).start_compute(
                signer,
                datasets=[{"documentId": DID, "serviceId": "1", "transferTxId": TX}],
                algorithm={"meta": {}},
                environment="e",
            )
        assert _count(mocked, "POST", "/api/services/compute") == 1

    def test_stop_and_result_are_not_retried(self, mocked, signer, tmp_path):
        mocked.put(BASE + "/api/services/compute", status_code=502, text="bad gateway")
        mocked.get(
            BASE + "/api/services/computeResult", status_code=503, json={"error": "x", "context": None}
        )
        client = make_client(BASE, retry_limit=5)
        with pytest.raises(OceanProviderError):
            client.stop_job(signer, JOB_ID)
        with pytest.raises(OceanProviderError):
            client.download_result(signer, JOB_ID, 0, tmp_path / "r")
        assert _count(mocked, "PUT", "/api/services/compute") == 1
        assert _count(mocked, "GET", "/api/services/computeResult") == 1

    def test_connection_reset_on_a_read_is_retried(self, mocked):
        mocked.get(
            BASE + "/api/services/compute",
            [
                {"exc": requests.exceptions.ConnectionError("Connection reset by peer")},
                {"status_code": 200, "json": []},
            ],
        )
        assert make_client(BASE).get_status(ADDRESS) == []
        assert _count(mocked, "GET", "/api/services/compute") == 2

    def test_slow_answer(self, mocked):
        mocked.get(BASE + "/api/services/compute", exc=requests.exceptions.ReadTimeout("read timed out"))
        with pytest.raises(OceanConnectionError, match="within 30 s"):
            make_client(BASE, retry_limit=2).get_status(ADDRESS)
        assert _count(mocked, "GET", "/api/services/compute") == 2

    def test_timeouts_sent(self, mocked, signer):
        mocked.get(BASE + "/api/services/compute", json=[])
        mocked.post(BASE + "/api/services/compute", json=[status_object()])
        mocked.post(BASE + "/api/services/initializeCompute", json={"datasets": [{"validOrder": TX}]})
        client = make_client(BASE)
        client.get_status(ADDRESS)
        client.initialize_compute(
            datasets=[{"documentId": DID, "serviceId": "1"}],
            algorithm={"meta": {}},
            environment="e",
            valid_until=1,
            consumer_address=ENGINE,
        )
        client.start_compute(
            signer,
            datasets=[{"documentId": DID, "serviceId": "1", "transferTxId": TX}],
            algorithm={"meta": {}},
            environment="e",
        )
        by_call = {(r.method, urlsplit(r.url).path): r.timeout for r in mocked.request_history}
        assert by_call[("GET", "/api/services/compute")][1] == 30
        assert by_call[("POST", "/api/services/initializeCompute")][1] >= 180
        assert by_call[("POST", "/api/services/compute")][1] >= 180

    def test_tls_verification_is_on_by_default(self, mocked):
        mocked.get(BASE + "/api/services/compute", json=[])
        make_client(BASE).get_status(ADDRESS)
        make_client(BASE, verify=False).get_status(ADDRESS)
        verifies = [
            r.verify for r in mocked.request_history if urlsplit(r.url).path == "/api/services/compute"
        ]
        assert verifies[0]  # True, or the CA bundle path requests substitutes for True
        assert verifies[1] is False

    @pytest.mark.parametrize(
        ("body", "field", "code"),
        [
            (
                {
                    "errors": {"nonce": ["The nonce field is required."]},
                    "message": "Validation error",
                    "success": False,
                },
                "nonce",
                None,
            ),
            ({"error": {"dataset.serviceId": "order_invalid"}}, "dataset.serviceId", "order_invalid"),
            ({"error": "Aquarius unreachable", "context": {"a": 1}}, None, None),
        ],
    )
    def test_three_error_shapes_through_the_client(self, mocked, signer, body, field, code):
        status = 503 if "context" in body else 400
        mocked.post(BASE + "/api/services/compute", status_code=status, json=body)
        with pytest.raises(OceanProviderError) as info:
            make_client(BASE).start_compute(
                signer,
                datasets=[{"documentId": DID, "serviceId": "1", "transferTxId": TX}],
                algorithm={"meta": {}},
                environment="e",
            )
        assert (info.value.status, info.value.field, info.value.code) == (status, field, code)
        assert info.value.body is not None


# -- the models parsed from the wire ----------------------------------------------------------------
class TestJobStatusModel:
    @pytest.mark.parametrize(
        ("status", "finished", "stopreq", "outcome", "flags"),
        [
            (1, None, 0, "running", (False, False, False, False, False)),
            (40, None, 1, "running", (False, False, False, True, False)),
            (70, "1700000093.51", 0, "succeeded", (True, True, False, False, False)),
            (70, "1700000093.51", 1, "stopped", (True, False, False, True, False)),
            (70, "1700000093.51", 2, "timed_out", (True, False, False, False, True)),
            (31, None, 0, "failed", (False, False, True, False, False)),
            (32, "1700000093.51", 0, "failed", (True, False, True, False, False)),
            (40, "1700000093.51", 0, "failed", (True, False, True, False, False)),
        ],
    )
    def test_classification(self, status, finished, stopreq, outcome, flags):
        job = JobStatus.from_api(status_object(status=status, dateFinished=finished, stopreq=stopreq))
        assert (job.is_terminal, job.is_succeeded, job.is_failed, job.is_stopped, job.is_timed_out) == flags
        assert job.outcome == outcome

    def test_numbers_as_strings_and_round_trip(self):
        results = [{"filename": "a.csv", "filesize": "10", "type": "output"}, {"filename": "algorithm.log"}]
        job = JobStatus.from_api(
            status_object(status="70", stopreq="0", dateFinished="1700000093.51", results=results)
        )
        assert (job.status, job.results[1].index, job.results[1].type) == (70, 1, "output")
        data = json.loads(json.dumps(job.to_dict()))
        assert JobStatus.from_dict(data) == job

    def test_malformed(self):
        with pytest.raises(OceanValidationError):
            JobStatus.from_api({"status": 1})


class TestInputModels:
    def test_compute_input_forms(self):
        assert ComputeInput.coerce(DID) == ComputeInput(did=DID)
        item = ComputeInput.coerce(
            {"documentId": DID, "serviceId": 1, "transferTxId": TX, "userdata": '{"a": 1}'}
        )
        assert (item.service_id, item.userdata) == ("1", {"a": 1})
        assert ComputeInput.from_dict(item.to_dict()) == item
        assert item.to_request() == {
            "documentId": DID,
            "serviceId": "1",
            "transferTxId": TX,
            "userdata": {"a": 1},
        }
        with pytest.raises(OceanValidationError):
            ComputeInput.coerce("not-a-did")
        with pytest.raises(OceanValidationError):
            ComputeInput(did=DID, userdata="[1]")  # type: ignore[arg-type]

    def test_algorithm_did_form(self):
        algo = ComputeAlgorithm.coerce(
            {"did": ALGO_DID, "service_id": "0", "algocustomdata": {"k": 1}, "userdata": {"u": 2}}
        )
        assert not algo.is_raw
        assert algo.to_start_request(transfer_tx_id=TX) == {
            "documentId": ALGO_DID,
            "serviceId": "0",
            "transferTxId": TX,
            "algocustomdata": {"k": 1},
            "algouserdata": {"u": 2},
        }
        assert ComputeAlgorithm.from_dict(algo.to_dict()) == algo

    def test_algorithm_raw_form_from_provider_meta(self):
        meta = {
            "rawcode": "print(1)",
            "container": {"entrypoint": "python $ALGO", "image": "py", "checksum": "sha256:1"},
        }
        algo = ComputeAlgorithm.from_dict({"meta": json.dumps(meta)})
        assert algo.is_raw
        assert algo.to_initialize_request() == {
            "meta": {**meta, "container": {**meta["container"], "tag": "latest"}}
        }

    @pytest.mark.parametrize(
        ("data", "match"),
        [
            (
                {"rawcode": "x", "url": "http://a", "entrypoint": "e", "image": "i", "checksum": "sha256:1"},
                "exactly one",
            ),
            ({"rawcode": "x", "image": "i", "checksum": "sha256:1"}, "entrypoint"),
            ({"rawcode": "x", "entrypoint": "e", "image": "i", "checksum": "md5:1"}, "sha256:"),
            ({"did": ALGO_DID, "rawcode": "x"}, "not both"),
            ({}, "exactly one"),
        ],
    )
    def test_algorithm_validation(self, data, match):
        with pytest.raises(OceanValidationError, match=match):
            ComputeAlgorithm.from_dict(data)
