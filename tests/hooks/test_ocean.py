"""OceanComputeHook: connection parsing, secrets, UI metadata, and the façade's pre-spend checks.

HTTP is served by the recording server of tests/wire/test_provider_v4.py (a real socket, no mocks); the
full pay → start → results flow against real contracts is in test_ocean_sandbox.py.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import types
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_ocean.backends.provider_v4 import ProviderV4Backend
from airflow_provider_ocean.exceptions import (
    OceanConfigError,
    OceanJobNotFoundError,
    OceanValidationError,
)
from airflow_provider_ocean.get_provider_info import CONN_FIELDS, get_provider_info
from airflow_provider_ocean.hooks.ocean import OceanComputeHook, OceanConnectionSettings
from airflow_provider_ocean.models import ComputeEnvironment
from airflow_provider_ocean.records import split_transfer_tx_ids as _tx_ids
from airflow_provider_ocean.settings import DEFAULT_TIMEOUT, SUPPORTED_BACKENDS
from tests.wire.test_provider_v4 import (
    ADDRESS,
    ALGO_DID,
    DID,
    DID2,
    ENGINE,
    JOB_ID,
    KEY,
    TX,
    RecordingServer,
    Reply,
    recover,
    root_body,
    status_object,
)

CONN_VAR = "AIRFLOW_CONN_OCEAN_TEST"
DT = "0x" + "d1" * 20
DT_ALGO = "0x" + "da" * 20


def set_conn(monkeypatch: pytest.MonkeyPatch, name: str = CONN_VAR, **fields: Any) -> None:
    conn = {
        "conn_type": "ocean",
        "host": "http://provider.test",
        "password": KEY,
        "extra": {"chain_id": 8996},
    }
    conn.update(fields)
    monkeypatch.setenv(name, json.dumps(conn))


def hook(**kwargs: Any) -> OceanComputeHook:
    kwargs.setdefault("retry_delay", 0.0)
    return OceanComputeHook("ocean_test", **kwargs)


@pytest.fixture
def server():
    srv = RecordingServer()
    yield srv
    srv.close()


class TestBasics:
    def test_class_attributes(self):
        assert OceanComputeHook.conn_name_attr == "ocean_conn_id"
        assert OceanComputeHook.default_conn_name == "ocean_default"
        assert OceanComputeHook.conn_type == "ocean"
        assert OceanComputeHook.hook_name == "Ocean Protocol"
        assert OceanComputeHook().ocean_conn_id == "ocean_default"

    def test_constructor_does_no_io(self, monkeypatch):
        monkeypatch.delenv(CONN_VAR, raising=False)
        created = OceanComputeHook("ocean_test", timeout=5, retry_limit=2, retry_delay=0.5)
        assert (created.timeout, created.retry_limit, created.retry_delay) == (5, 2, 0.5)
        with pytest.raises(Exception, match="ocean_test"):
            created.settings  # noqa: B018 - the connection is only read here

    def test_retry_limit_must_be_positive(self):
        with pytest.raises(OceanConfigError):
            OceanComputeHook(retry_limit=0)

    def test_download_write_path_comes_from_the_airflow_setting(self, monkeypatch):
        monkeypatch.delenv("AIRFLOW__OCEAN__DOWNLOAD_WRITE_PATH", raising=False)
        assert OceanComputeHook().download_write_path == "cache"
        monkeypatch.setenv("AIRFLOW__OCEAN__DOWNLOAD_WRITE_PATH", "Direct")
        assert OceanComputeHook().download_write_path == "direct"
        assert OceanComputeHook(download_write_path="cache").download_write_path == "cache"
        monkeypatch.setenv("AIRFLOW__OCEAN__DOWNLOAD_WRITE_PATH", "o_direct")
        with pytest.raises(OceanConfigError, match="download_write_path"):
            OceanComputeHook()

    def test_the_write_path_reaches_the_wire_client(self, monkeypatch):
        monkeypatch.delenv("AIRFLOW__OCEAN__DOWNLOAD_WRITE_PATH", raising=False)
        set_conn(monkeypatch, extra={"chain_id": 8996, "backend": "provider_v4"})
        for chosen in ("direct", "cache"):
            backend = hook(download_write_path=chosen).compute
            assert backend.client.write_path == chosen  # type: ignore[attr-defined]

    def test_module_import_is_light(self):
        import subprocess

        code = (
            "import sys, airflow_provider_ocean.hooks.ocean as m;"
            "heavy=[n for n in ('eth_account','eth_abi','airflow_provider_ocean.chain.tx',"
            "'airflow_provider_ocean.payment','airflow_provider_ocean.wire.provider_v4')"
            " if n in sys.modules];"
            "print(heavy)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
        )
        assert out.stdout.strip().splitlines()[-1] == "[]"


class TestConnection:
    def test_full_url_host(self, monkeypatch):
        set_conn(
            monkeypatch,
            host="http://127.0.0.1:8030/",
            extra={"chain_id": "8996", "rpc_url": "http://rpc.test"},
        )
        settings = hook().settings
        assert settings == OceanConnectionSettings(
            provider_url="http://127.0.0.1:8030",
            aquarius_url="http://127.0.0.1:8030",
            rpc_url="http://rpc.test",
            chain_id=8996,
            backend="auto",
            timeout=30.0,
            verify_ssl=True,
        )

    def test_host_without_scheme_is_https(self, monkeypatch):
        set_conn(monkeypatch, host="provider.example.com", port=8443)
        assert hook().settings.provider_url == "https://provider.example.com:8443"

    def test_scheme_extra(self, monkeypatch):
        set_conn(monkeypatch, host="provider.example.com", port=8030, extra={"scheme": "http"})
        assert hook().settings.provider_url == "http://provider.example.com:8030"

    def test_port_added_to_a_full_url_without_one(self, monkeypatch):
        set_conn(monkeypatch, host="http://provider.example.com", port=8030)
        assert hook().settings.provider_url == "http://provider.example.com:8030"

    def test_uri_form(self, monkeypatch):
        monkeypatch.setenv(
            CONN_VAR,
            "ocean://:" + KEY + "@provider.example.com:8030/?chain_id=8996&scheme=http&verify_ssl=false",
        )
        created = hook()
        assert created.settings.provider_url == "http://provider.example.com:8030"
        assert created.settings.chain_id == 8996
        assert created.settings.verify_ssl is False
        assert created.consumer_address == ADDRESS

    def test_prefixed_extras(self, monkeypatch):
        extra = {
            "extra__ocean__rpc_url": "http://rpc.test",
            "extra__ocean__chain_id": 8996,
            "extra__ocean__aquarius_url": "https://aquarius.test/",
            "extra__ocean__backend": "provider_v4",
            "extra__ocean__timeout": "12.5",
            "extra__ocean__verify_ssl": "no",
        }
        set_conn(monkeypatch, extra=extra)
        settings = hook().settings
        assert (settings.rpc_url, settings.chain_id, settings.aquarius_url) == (
            "http://rpc.test",
            8996,
            "https://aquarius.test",
        )
        assert (settings.backend, settings.timeout, settings.verify_ssl) == ("provider_v4", 12.5, False)

    def test_hook_timeout_wins(self, monkeypatch):
        set_conn(monkeypatch, extra={"timeout": 99})
        assert hook(timeout=7).settings.timeout == 7

    @pytest.mark.parametrize(
        ("extra", "match"),
        [
            ({"chain_id": "mainnet"}, "chain_id"),
            ({"backend": "aquarius"}, "not supported"),
            ({"timeout": "soon"}, "timeout"),
            ({"timeout": 0}, "positive"),
            ({"verify_ssl": "maybe"}, "verify_ssl"),
            ({"scheme": "ftp"}, "scheme"),
        ],
    )
    def test_bad_extras(self, monkeypatch, extra, match):
        set_conn(monkeypatch, host="provider.example.com", extra=extra)
        with pytest.raises(OceanConfigError, match=match):
            hook().settings  # noqa: B018

    def test_missing_host(self, monkeypatch):
        set_conn(monkeypatch, host="")
        with pytest.raises(OceanConfigError, match="no host"):
            hook().settings  # noqa: B018

    def test_rpc_url_needed_to_pay(self, monkeypatch):
        set_conn(monkeypatch)
        with pytest.raises(OceanConfigError, match="rpc_url"):
            hook().rpc  # noqa: B018


class TestSecrets:
    def test_missing_password(self, monkeypatch):
        set_conn(monkeypatch, password=None)
        with pytest.raises(OceanConfigError, match="no password"):
            hook().signer  # noqa: B018

    @pytest.mark.parametrize("bad", ["0x1234abcd5678", KEY[:-2], "correct horse battery staple"])
    def test_malformed_key_is_never_echoed(self, monkeypatch, bad):
        set_conn(monkeypatch, password=bad)
        with pytest.raises(OceanConfigError, match="not a private key") as info:
            hook().signer  # noqa: B018
        assert bad not in str(info.value)

    def test_key_is_masked_when_read(self, monkeypatch):
        masked: list[str] = []
        import airflow.sdk.log

        monkeypatch.setattr(airflow.sdk.log, "mask_secret", lambda value, *a, **k: masked.append(value))
        set_conn(monkeypatch)
        assert hook().consumer_address == ADDRESS
        assert KEY in masked
        assert KEY[2:] in masked

    def test_nothing_shows_the_key(self, monkeypatch, caplog):
        set_conn(monkeypatch)
        created = hook()
        with caplog.at_level(logging.DEBUG):
            created.signer  # noqa: B018
            texts = [repr(created), str(created), repr(created.signer), repr(created.settings), caplog.text]
        for text in texts:
            assert KEY[2:] not in text.lower()


class TestUi:
    def test_field_behaviour_matches_provider_info(self):
        info = get_provider_info()["connection-types"][0]
        assert OceanComputeHook.get_ui_field_behaviour() == info["ui-field-behaviour"]
        assert "password" not in OceanComputeHook.get_ui_field_behaviour()["hidden-fields"]

    def test_widgets_without_flask_appbuilder(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "flask_appbuilder", None)
        monkeypatch.setitem(sys.modules, "flask_appbuilder.fieldwidgets", None)
        assert OceanComputeHook.get_connection_form_widgets() == {}

    def test_widgets_with_fake_form_libraries(self, monkeypatch):
        class Field:
            def __init__(self, label: Any, **kwargs: Any) -> None:
                self.label, self.kwargs = label, kwargs

        class StringField(Field):
            pass

        class BooleanField(Field):
            pass

        class SelectField(Field):
            pass

        class IntegerField(Field):
            pass

        class DecimalField(Field):
            pass

        class NumberRange:
            def __init__(self, min: Any = None, max: Any = None) -> None:  # noqa: A002
                self.min, self.max = min, max

        monkeypatch.setitem(sys.modules, "flask_appbuilder", types.ModuleType("flask_appbuilder"))
        fieldwidgets = types.ModuleType("flask_appbuilder.fieldwidgets")
        fieldwidgets.BS3TextFieldWidget = lambda: "widget"  # type: ignore[attr-defined]
        fieldwidgets.Select2Widget = lambda: "select"  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "flask_appbuilder.fieldwidgets", fieldwidgets)
        babel = types.ModuleType("flask_babel")
        babel.lazy_gettext = lambda text: text  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "flask_babel", babel)
        wtforms = types.ModuleType("wtforms")
        for cls in (StringField, BooleanField, SelectField, IntegerField, DecimalField):
            setattr(wtforms, cls.__name__, cls)
        monkeypatch.setitem(sys.modules, "wtforms", wtforms)
        validators = types.ModuleType("wtforms.validators")
        validators.NumberRange = NumberRange  # type: ignore[attr-defined]
        validators.Optional = lambda: "optional"  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "wtforms.validators", validators)
        widgets = OceanComputeHook.get_connection_form_widgets()
        assert set(widgets) == set(CONN_FIELDS)
        assert isinstance(widgets["verify_ssl"], BooleanField)
        assert isinstance(widgets["rpc_url"], StringField)
        assert widgets["rpc_url"].label == "RPC URL"
        for name, choices, default in (
            ("scheme", ["https", "http"], "https"),
            ("backend", ["auto", "provider_v4", "ocean_node"], "auto"),
        ):
            assert isinstance(widgets[name], SelectField)
            assert [value for value, _ in widgets[name].kwargs["choices"]] == choices
            assert widgets[name].kwargs["default"] == default
        assert isinstance(widgets["chain_id"], IntegerField)
        assert isinstance(widgets["timeout"], DecimalField)
        timeout_range = widgets["timeout"].kwargs["validators"][1]
        assert (timeout_range.min, timeout_range.max) == (1, 600)
        assert widgets["timeout"].kwargs["default"] == 30

    def test_enumerated_extras_are_choices_with_a_default_the_settings_accept(self, monkeypatch):
        """No enumerated field of the form can read ``null``: each has ``enum`` and a ``default`` in it,
        and every choice (and the default timeout) parses as the settings read it."""
        for name in ("scheme", "backend"):
            schema = CONN_FIELDS[name]["schema"]
            assert schema["default"] in schema["enum"]
            assert "examples" not in schema
        assert set(CONN_FIELDS["backend"]["schema"]["enum"]) <= set(SUPPORTED_BACKENDS)
        timeout = CONN_FIELDS["timeout"]["schema"]
        assert timeout["minimum"] <= timeout["default"] == DEFAULT_TIMEOUT <= timeout["maximum"]
        assert CONN_FIELDS["chain_id"]["schema"]["minimum"] == 1
        for scheme in CONN_FIELDS["scheme"]["schema"]["enum"]:
            for backend in CONN_FIELDS["backend"]["schema"]["enum"]:
                set_conn(
                    monkeypatch, host="provider.example.com", extra={"scheme": scheme, "backend": backend}
                )
                settings = hook().settings
                assert settings.provider_url == f"{scheme}://provider.example.com"
                assert settings.backend == backend


class TestHelpers:
    def test_tx_ids_forms(self):
        payment = {
            "datasets": [{"transfer_tx_id": "0x1"}, {"transfer_tx_id": "0x2"}],
            "algorithm": {"transfer_tx_id": "0x3"},
        }
        assert _tx_ids(payment, 2) == (["0x1", "0x2"], "0x3")
        assert _tx_ids({"datasets": ["0x1"], "algorithm": "0x3"}, 2) == (["0x1", None], "0x3")
        assert _tx_ids(["0x1", ""], 2) == (["0x1", None], None)
        assert _tx_ids(None, 1) == ([None], None)
        with pytest.raises(OceanValidationError):
            _tx_ids(["0x1", "0x2"], 1)
        with pytest.raises(OceanValidationError):
            _tx_ids("0x1", 1)

    def test_valid_until(self):
        env = ComputeEnvironment(id="e", chain_id=8996, consumer_address=ENGINE, max_job_duration=600)
        now = time.time()
        assert abs(ProviderV4Backend._valid_until(None, env) - (now + 600)) < 5
        assert abs(ProviderV4Backend._valid_until(timedelta(hours=1), env) - (now + 3600)) < 5
        moment = datetime.now(timezone.utc) + timedelta(minutes=5)
        assert ProviderV4Backend._valid_until(moment, env) == int(moment.timestamp())
        assert ProviderV4Backend._valid_until(int(now) + 100, env) == int(now) + 100
        with pytest.raises(OceanValidationError, match="future"):
            ProviderV4Backend._valid_until(int(now) - 1, env)


# -- against a recording server ---------------------------------------------------------------------
def rpc_route(server: RecordingServer, chain_id: int = 8996) -> None:
    def answer(request):
        body = request.json
        return Reply(body={"jsonrpc": "2.0", "id": body["id"], "result": hex(chain_id)})

    server.routes[("POST", "/rpc")] = answer


ENVS = {
    "8996": [
        {"id": "ocean-compute", "consumerAddress": ENGINE, "priceMin": 0, "maxJobDuration": 60},
        {"id": "ocean-compute-paid", "consumerAddress": ENGINE, "priceMin": "0.5", "maxJobDuration": "60"},
    ]
}


def ddo(did: str, *, compute: dict[str, Any] | None = None, kind: str = "dataset") -> dict[str, Any]:
    container = {
        "entrypoint": "python $ALGO",
        "image": "python",
        "tag": "3",
        "checksum": "sha256:" + "a" * 64,
    }
    services = (
        [{"id": "0", "type": "access", "datatokenAddress": DT_ALGO}]
        if kind == "algorithm"
        else [{"id": "1", "type": "compute", "datatokenAddress": DT, "compute": compute or {}}]
    )
    return {
        "id": did,
        "chainId": 8996,
        "nft": {"owner": ADDRESS, "state": 0},
        "metadata": {"type": kind, "algorithm": {"container": container}},
        "services": services,
    }


@pytest.fixture
def served(server, monkeypatch) -> RecordingServer:
    set_conn(monkeypatch, host=server.url, extra={"chain_id": 8996, "rpc_url": server.url + "/rpc"})
    rpc_route(server)
    server.routes[("GET", "/api/services/computeEnvironments")] = Reply(body=ENVS)
    server.routes[("GET", "/api/services/nonce")] = Reply(body={"nonce": "1"})
    # start_compute lists the owner's jobs first (to tell a job it created from older ones)
    server.routes[("GET", "/api/services/compute")] = Reply(body=[])
    server.routes[("GET", f"/api/aquarius/assets/ddo/{DID}")] = Reply(body=ddo(DID))
    server.routes[("GET", f"/api/aquarius/assets/ddo/{DID2}")] = Reply(
        body=ddo(DID2, compute={"publisherTrustedAlgorithms": [{"did": DID}]})
    )
    server.routes[("GET", f"/api/aquarius/assets/ddo/{ALGO_DID}")] = Reply(
        body=ddo(ALGO_DID, kind="algorithm")
    )
    return server


RAW = {
    "rawcode": "print(1)",
    "container": {"entrypoint": "python $ALGO", "image": "python", "checksum": "sha256:0"},
}


class TestTestConnection:
    def test_ok(self, served):
        ok, message = hook().test_connection()
        assert ok, message
        assert ADDRESS in message
        assert "2.1.6" in message

    def test_not_a_provider(self, served):
        served.routes[("GET", "/")] = Reply(body=root_body(software="Ocean Node"))
        ok, message = hook().test_connection()
        assert not ok
        assert "not an Ocean Provider v4" in message

    def test_chain_not_served(self, served):
        served.routes[("GET", "/")] = Reply(body=root_body(chainIds=[1], providerAddresses={"1": ENGINE}))
        ok, message = hook().test_connection()
        assert not ok
        assert "does not serve chain 8996" in message

    def test_rpc_on_another_chain(self, served):
        rpc_route(served, chain_id=1)
        ok, message = hook().test_connection()
        assert not ok
        assert "RPC node serves chain 1" in message

    def test_bad_key(self, served, monkeypatch):
        set_conn(monkeypatch, host=served.url, password="0xnope")
        ok, message = hook().test_connection()
        assert not ok
        assert "not a private key" in message
        assert "0xnope" not in message

    def test_unreachable(self, monkeypatch):
        set_conn(monkeypatch, host="http://127.0.0.1:9")
        ok, message = hook(retry_limit=1).test_connection()
        assert not ok
        assert "cannot reach" in message

    def test_chain_id_from_the_provider(self, served, monkeypatch):
        set_conn(monkeypatch, host=served.url, extra={})
        assert hook().chain_id == 8996


class TestFacade:
    def test_environments(self, served):
        created = hook()
        assert [e.id for e in created.get_environments()] == ["ocean-compute", "ocean-compute-paid"]
        assert created.resolve_environment(None).id == "ocean-compute"
        assert created.resolve_environment("ocean-compute-paid").price_min == 0.5
        with pytest.raises(OceanValidationError, match="does not exist"):
            created.resolve_environment("gpu")

    @pytest.mark.parametrize(
        ("datasets", "algorithm", "environment", "match"),
        [
            ([DID], RAW, None, "allowRawAlgorithm"),
            ([DID2], {"did": ALGO_DID}, None, "publisherTrustedAlgorithms"),
            ([DID], {"did": DID}, None, "not an algorithm"),
            (["did:op:" + "9" * 64], {"did": ALGO_DID}, None, "not found in Aquarius"),
            ([{"did": DID, "service_id": "7"}], {"did": ALGO_DID}, None, "no service '7'"),
            ([DID], {"did": ALGO_DID}, "gpu", "does not exist"),
            ([], {"did": ALGO_DID}, None, "at least one dataset"),
        ],
    )
    def test_pre_spend_validation_sends_nothing(self, served, datasets, algorithm, environment, match):
        with pytest.raises(OceanValidationError, match=match):
            hook().pay_for_compute(datasets, algorithm, environment)
        assert not served.calls("POST", "/api/services/initializeCompute")
        assert not served.calls("POST", "/rpc")

    def test_past_valid_until_sends_nothing(self, served):
        with pytest.raises(OceanValidationError, match="future"):
            hook().pay_for_compute([DID], {"did": ALGO_DID}, valid_until=int(time.time()) - 10)
        assert not served.calls("POST", "/api/services/initializeCompute")

    def test_start_from_a_payment(self, served):
        served.routes[("POST", "/api/services/compute")] = Reply(body=[status_object()])
        payment = {
            "environment": "ocean-compute",
            "datasets": [
                {"role": "dataset", "did": DID, "service_id": "1", "transfer_tx_id": TX, "action": "start"},
                {
                    "role": "dataset",
                    "did": DID2,
                    "service_id": "1",
                    "transfer_tx_id": "0x" + "cd" * 32,
                    "action": "valid",
                },
            ],
            "algorithm": {
                "role": "algorithm",
                "did": ALGO_DID,
                "service_id": "0",
                "transfer_tx_id": TX,
                "action": "start",
            },
        }
        job = hook().start_compute(
            [{"did": DID, "userdata": {"rows": 3}}, DID2],
            {"did": ALGO_DID, "algocustomdata": {"column": "rain_mm"}},
            payment=json.loads(json.dumps(payment)),
        )
        assert job.job_id == JOB_ID
        body = served.calls("POST", "/api/services/compute")[0].json
        assert body["dataset"] == {
            "documentId": DID,
            "serviceId": "1",
            "transferTxId": TX,
            "userdata": {"rows": 3},
        }
        assert body["additionalDatasets"] == [
            {"documentId": DID2, "serviceId": "1", "transferTxId": "0x" + "cd" * 32}
        ]
        assert body["algorithm"] == {
            "documentId": ALGO_DID,
            "serviceId": "0",
            "transferTxId": TX,
            "algocustomdata": {"column": "rain_mm"},
        }
        assert body["environment"] == "ocean-compute"
        assert body["consumerAddress"] == ADDRESS
        assert recover(f"{ADDRESS}{DID}{body['nonce']}", body["signature"]) == ADDRESS

    def test_start_raw_algorithm_from_tx_ids_on_the_inputs(self, served):
        served.routes[("POST", "/api/services/compute")] = Reply(body=[status_object(algoDID="raw")])
        hook().start_compute(
            [{"did": DID, "service_id": "1", "transfer_tx_id": TX}], RAW, environment="ocean-compute"
        )
        body = served.calls("POST", "/api/services/compute")[0].json
        assert body["algorithm"] == {
            "meta": {
                "rawcode": "print(1)",
                "container": {
                    "entrypoint": "python $ALGO",
                    "image": "python",
                    "tag": "latest",
                    "checksum": "sha256:0",
                },
            }
        }

    @pytest.mark.parametrize(
        ("datasets", "algorithm", "payment", "match"),
        [
            (
                [DID],
                {"did": ALGO_DID, "service_id": "0", "transfer_tx_id": TX},
                None,
                "Dataset .* no paid order",
            ),
            (
                [{"did": DID, "service_id": "1", "transfer_tx_id": TX}],
                {"did": ALGO_DID},
                None,
                "Algorithm .* no paid",
            ),
            (
                [DID2],
                {"did": ALGO_DID},
                {
                    "datasets": [
                        {
                            "role": "dataset",
                            "did": DID,
                            "service_id": "1",
                            "transfer_tx_id": TX,
                            "action": "start",
                        }
                    ]
                },
                "payment is for",
            ),
        ],
    )
    def test_start_without_a_paid_order_sends_nothing(self, served, datasets, algorithm, payment, match):
        with pytest.raises(OceanValidationError, match=match):
            hook().start_compute(datasets, algorithm, payment=payment, environment="ocean-compute")
        assert not served.calls("POST", "/api/services/compute")

    def test_start_refuses_a_payment_for_another_environment(self, served):
        payment = {
            "environment": "ocean-compute",
            "datasets": [
                {"role": "dataset", "did": DID, "service_id": "1", "transfer_tx_id": TX, "action": "start"}
            ],
        }
        with pytest.raises(OceanValidationError, match="only validate for the environment"):
            hook().start_compute([DID], RAW, payment=payment, environment="ocean-compute-paid")
        assert not served.calls("POST", "/api/services/compute")

    def test_job_status_and_not_found(self, served):
        served.routes[("GET", "/api/services/compute")] = lambda request: Reply(
            body=[status_object()] if request.query.get("jobId") == JOB_ID else []
        )
        created = hook()
        assert created.get_job_status(JOB_ID).job_id == JOB_ID
        with pytest.raises(OceanJobNotFoundError):
            created.get_job_status("f" * 32)
        assert served.calls("GET", "/api/services/compute")[0].query["consumerAddress"] == ADDRESS

    def test_list_stop_delete_results(self, served, tmp_path):
        results = [{"filename": "out.txt", "filesize": 3, "type": "output"}]
        served.routes[("GET", "/api/services/compute")] = Reply(
            body=[status_object(status=70, dateFinished="1700000001.0", results=results)]
        )
        served.routes[("PUT", "/api/services/compute")] = Reply(body=[status_object(status=40, stopreq=1)])
        served.routes[("DELETE", "/api/services/compute")] = Reply(body="")
        served.routes[("GET", "/api/services/computeResult")] = Reply(
            raw=b"hi\n",
            headers={"Content-Type": "text/plain", "Content-Disposition": "attachment;filename=out.txt"},
        )
        created = hook()
        assert [j.job_id for j in created.list_jobs()] == [JOB_ID]
        # an ended job is not sent a stop (operator-service would mark it stopreq 1 for good): its status
        assert created.stop_job(JOB_ID).status == 70
        assert not served.calls("PUT", "/api/services/compute")
        created.delete_job(JOB_ID)
        [result] = created.get_results(JOB_ID)
        downloaded = created.download_result(JOB_ID, result.index, tmp_path)
        assert (tmp_path / "out.txt").read_bytes() == b"hi\n"
        assert downloaded.bytes_written == 3
        assert served.calls("DELETE", "/api/services/compute")
        # a running job is: the answer is operator-service's read-back, stopreq already 1
        served.routes[("GET", "/api/services/compute")] = Reply(body=[status_object(status=40)])
        stopped = created.stop_job(JOB_ID)
        assert (stopped.status, stopped.stopreq) == (40, 1)
        assert served.calls("PUT", "/api/services/compute")
