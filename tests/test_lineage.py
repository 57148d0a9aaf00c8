"""OpenLineage events of the operators (airflow_provider_ocean/lineage.py).

One real ``airflow dags test`` run (tests/dags/lineage/ocean_lineage.py) with the OpenLineage listener and
its file transport, against the session's sandbox: START and COMPLETE events of the start and results
tasks with their inputs, outputs and facets, a FAIL event of a results task on a job that does not exist,
and no key, signature or signed URL anywhere. The helpers are checked without a sandbox.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ocean.lineage import public_url, uri_namespace_name
from tests.faults import airflow_cli

REPO = Path(__file__).resolve().parents[1]
DAG_ID = "ocean_lineage"
SIGNATURE = re.compile(r"0x[0-9a-fA-F]{130}(?![0-9a-fA-F])")


class TestNaming:
    @pytest.mark.parametrize(
        ("uri", "expected"),
        [
            ("file:///data/out/summary.csv", ("file", "/data/out/summary.csv")),
            ("file://host/data/x", ("file://host", "/data/x")),
            ("/data/out/a.csv", ("file", "/data/out/a.csv")),
            ("s3://bucket/prefix/a.csv", ("s3://bucket", "prefix/a.csv")),
            ("gs://b/k", ("gs://b", "k")),
            (
                "https://user:pw@data.example:8443/x/y.csv?sig=abc#f",
                ("https://data.example:8443", "/x/y.csv"),
            ),
        ],
    )
    def test_uri_namespace_name(self, uri: str, expected: tuple[str, str]) -> None:
        assert uri_namespace_name(uri) == expected

    def test_public_url_drops_credentials_and_query(self) -> None:
        url = "https://u:secret@host.example/a/b?X-Amz-Signature=abc&token=t#frag"
        assert public_url(url) == "https://host.example/a/b"
        assert public_url("not a url") is None
        assert public_url(None) is None


_WITHOUT_OPENLINEAGE = """
import sys


class Block:
    def find_spec(self, name, path=None, target=None):
        # the OpenLineage client and the provider's code (Airflow reads the installed provider's info)
        ours = name.startswith("airflow.providers.openlineage.") and not name.endswith(".get_provider_info")
        if name == "openlineage" or name.startswith("openlineage.") or ours:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, Block())
from airflow.sdk import DAG
from airflow_provider_ocean.operators.compute import OceanComputeStartOperator
from airflow_provider_ocean.operators.results import OceanComputeResultsOperator
import airflow_provider_ocean.lineage

with DAG("no_lineage", schedule=None):
    OceanComputeStartOperator(task_id="s", datasets=["did:op:1"], algorithm="did:op:2")
    OceanComputeResultsOperator(task_id="r", job_id="j", destination="/tmp/x")
prefixes = ("openlineage", "airflow.providers.openlineage.")
loaded = [m for m in sys.modules if m.startswith(prefixes) and not m.endswith(".get_provider_info")]
assert not loaded, loaded
print("ok")
"""


def test_nothing_of_openlineage_is_imported_by_the_operators() -> None:
    """The operators import and build DAGs with the extra absent (its imports are blocked here) and load
    nothing of it when present."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_OPENLINEAGE], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


class _Settings:
    provider_url = "https://user:pw@provider.example/"
    chain_id = 8996


class _Hook:
    settings = _Settings()
    ocean_conn_id = "ocean_default"

    def __init__(self) -> None:
        self._connection = object()  # already read

    def get_ddo(self, did: str) -> dict[str, Any]:
        return {"id": did, "metadata": {"name": "Data"}, "services": [{"id": "svc", "type": "compute"}]}


class _Operator:
    task_id = "start"
    ocean_conn_id = "ocean_default"
    environment = None
    job_id = None
    datasets = [
        "did:op:" + "a" * 64,
        "https://files.example/data.csv?X-Amz-Signature=" + "f" * 64,
        {
            "fileObject": {
                "type": "url",
                "url": "https://files.example/b.csv",
                "headers": {"Authorization": "x"},
            }
        },
    ]
    algorithm: dict[str, Any] = {
        "rawcode": "print(1)",
        "algocustomdata": {"token": "s3cr3t"},
        "container": {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11-slim", "checksum": ""},
    }


class _TaskInstance:
    """The listener's task instance: the lineage must not read XCom through it (it may block there)."""

    def xcom_pull(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("XCom read from the OpenLineage listener")


PAYMENT: dict[str, Any] = {
    "environment": "env-1",
    "chain_id": 8996,
    "valid_until": None,
    "consumer_address": "0x" + "1" * 40,
    "datasets": [
        {
            "role": "dataset",
            "did": "did:op:" + "a" * 64,
            "service_id": "svc",
            "transfer_tx_id": "0x" + "2" * 64,
            "action": "start",
            "provider_fee_amount": "5",
            "provider_fee_token": "0x" + "3" * 40,
        }
    ],
    "algorithm": None,
    "backend": "ocean_node",
    "ocean_node": {"free": False, "token": "0x" + "4" * 40, "amount": "7"},
}


def test_start_lineage_without_a_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("airflow.providers.openlineage")
    from airflow_provider_ocean import lineage
    from airflow_provider_ocean.lineage import start_operator_lineage

    monkeypatch.setattr(lineage, "_reader", lambda operator: _Hook())

    operator = _Operator()
    assert start_operator_lineage(operator).run_facets["ocean_compute"].orders == []  # on start
    operator.payment = PAYMENT
    lineage = start_operator_lineage(operator, _TaskInstance())
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        ("ocean://8996", "did:op:" + "a" * 64),
        ("https://files.example", "/data.csv"),
        ("https://files.example", "/b.csv"),
    ]
    asset = lineage.inputs[0].facets["ocean_asset"]
    assert (asset.name, asset.serviceId, asset.providerUrl) == ("Data", "svc", "https://provider.example")
    algorithm = lineage.job_facets["ocean_algorithm"]
    assert (algorithm.kind, algorithm.image, algorithm.did) == ("raw", "python:3.11-slim", None)
    run = lineage.run_facets["ocean_compute"]
    assert (run.environment, run.backend, run.chainId) == ("env-1", "ocean_node", 8996)
    assert run.orders == [
        {
            "role": "dataset",
            "did": "did:op:" + "a" * 64,
            "serviceId": "svc",
            "orderTx": "0x" + "2" * 64,
            "action": "start",
        }
    ]
    assert run.fees == [
        {
            "role": "dataset",
            "did": "did:op:" + "a" * 64,
            "kind": "provider_fee",
            "currency": "0x" + "3" * 40,
            "amount": "5",
        },
        {"role": "job", "kind": "escrow", "currency": "0x" + "4" * 40, "amount": "7"},
    ]
    text = repr(lineage)
    for secret in ("s3cr3t", "Authorization", "X-Amz-Signature", "print(1)", "pw@", "1" * 40):
        assert secret not in text


# -- a real run ------------------------------------------------------------------------------------------


@dataclass
class LineageRun:
    returncode: int
    output: str
    seconds: float
    raw: str
    events: list[dict[str, Any]]
    home: Path

    def of(self, task_id: str, event_type: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["job"]["name"] == f"{DAG_ID}.{task_id}" and e.get("eventType") == event_type
        ]

    def one(self, task_id: str, event_type: str) -> dict[str, Any]:
        found = self.of(task_id, event_type)
        assert len(found) == 1, (
            task_id,
            event_type,
            [e["job"]["name"] for e in self.events],
            self.output[-3000:],
        )
        return found[0]

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        import sqlite3

        with sqlite3.connect(self.home / "airflow.db") as conn:
            [(value,)] = conn.execute(
                "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = ?", (DAG_ID, task_id, key)
            ).fetchall()
        return json.loads(value)


def run_lineage_dag(
    sandbox: dict[str, Any], home: Path, *, db_connection: bool = False, **extra_env: str
) -> LineageRun:
    """``airflow dags test`` of the lineage DAG in a pristine Airflow home; the listener writes to a file.

    :param db_connection: store ``ocean_default`` in the metadata DB (``airflow connections add``) instead
        of passing it as ``AIRFLOW_CONN_OCEAN_DEFAULT``.
    :param extra_env: more environment variables (Airflow settings).
    """
    events_file = home / "openlineage.jsonl"
    connection = {} if db_connection else {"AIRFLOW_CONN_OCEAN_DEFAULT": sandbox["conn_json"]}
    # a pristine migrated DB: the session one holds what this worker's earlier tests wrote
    env = airflow_cli.fresh_home(
        home,
        REPO / "tests" / "dags" / "lineage",
        **connection,
        AIRFLOW_VAR_OCEAN_DATASET_DID=sandbox["assets"]["dataset"]["did"],
        AIRFLOW_VAR_OCEAN_ALGORITHM_DID=sandbox["assets"]["algorithm"]["did"],
        AIRFLOW_VAR_OCEAN_RESULTS_DIR=str(home / "results"),
        AIRFLOW__OPENLINEAGE__NAMESPACE="ocean-tests",
        AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        **extra_env,
    )
    if db_connection:
        added = airflow_cli.airflow(
            env, "connections", "add", "ocean_default", "--conn-json", sandbox["conn_json"]
        )
        assert added.returncode == 0, added.stdout + added.stderr
    started = time.monotonic()
    result = airflow_cli.airflow(env, "dags", "test", DAG_ID)
    seconds = time.monotonic() - started
    (home / "dags-test.log").write_text(result.stdout + result.stderr)
    raw = events_file.read_text() if events_file.exists() else ""
    events = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return LineageRun(result.returncode, result.stdout + result.stderr, seconds, raw, events, home)


@pytest.fixture(scope="module")
def lineage_run(
    sandbox: dict[str, Any], airflow_db: str, tmp_path_factory: pytest.TempPathFactory
) -> LineageRun:
    pytest.importorskip("airflow.providers.openlineage")
    return run_lineage_dag(sandbox, tmp_path_factory.mktemp("airflow-home-lineage"))


@pytest.mark.chain
def test_events_parse_as_openlineage(lineage_run: LineageRun) -> None:
    assert lineage_run.events, lineage_run.output[-3000:]
    for event in lineage_run.events:
        assert event["eventType"] in {"START", "RUNNING", "COMPLETE", "FAIL", "ABORT", "OTHER"}
        assert event["eventTime"]
        assert event["producer"]
        assert event["schemaURL"]
        assert event["run"]["runId"]
        assert isinstance(event["run"].get("facets", {}), dict)
        assert event["job"]["namespace"] == "ocean-tests"
        assert event["job"]["name"].startswith(DAG_ID)
        for dataset in [*event.get("inputs", []), *event.get("outputs", [])]:
            assert dataset["namespace"]
            assert dataset["name"]
            for facet in (dataset.get("facets") or {}).values():
                assert facet["_producer"]
                assert facet["_schemaURL"]


@pytest.mark.chain
def test_start_task_events_carry_inputs_algorithm_and_job(
    lineage_run: LineageRun, sandbox: dict[str, Any]
) -> None:
    dataset_did = sandbox["assets"]["dataset"]["did"]
    algorithm_did = sandbox["assets"]["algorithm"]["did"]
    job_id = lineage_run.xcom("start")
    payment = lineage_run.xcom("start", "ocean_payment")
    for event_type in ("START", "COMPLETE"):
        event = lineage_run.one("start", event_type)
        [dataset] = event["inputs"]
        assert (dataset["namespace"], dataset["name"]) == (f"ocean://{sandbox['chain_id']}", dataset_did)
        asset = dataset["facets"]["ocean_asset"]
        assert asset["name"] == "Weather observations"
        assert asset["serviceId"]
        assert asset["providerUrl"] == sandbox["provider_url"].rstrip("/")
        algorithm = event["job"]["facets"]["ocean_algorithm"]
        assert (algorithm["kind"], algorithm["did"], algorithm["name"]) == (
            "published",
            algorithm_did,
            "Station statistics",
        )
    run = lineage_run.one("start", "COMPLETE")["run"]["facets"]["ocean_compute"]
    assert run["jobId"] == job_id
    assert run["environment"] == payment["environment"]
    assert run["agreementId"]
    assert run["agreementId"].startswith("0x")
    assert [(o["role"], o["did"], o["orderTx"]) for o in run["orders"]] == [
        (o["role"], o["did"], o["transfer_tx_id"]) for o in [*payment["datasets"], payment["algorithm"]]
    ]
    assert {f["did"] for f in run["fees"]} <= {dataset_did, algorithm_did}
    assert all(f["amount"] == "0" for f in run["fees"])  # the free environment (max_fee=0)
    assert all(f["currency"].startswith("0x") for f in run["fees"])  # not masked as a "token"
    assert run["chainId"] == sandbox["chain_id"]


@pytest.mark.chain
def test_results_task_events_carry_the_files_written(lineage_run: LineageRun) -> None:
    manifest = lineage_run.xcom("results")
    assert manifest
    lineage_run.one("results", "START")
    event = lineage_run.one("results", "COMPLETE")
    outputs = {(o["namespace"], o["name"]): o for o in event["outputs"]}
    assert set(outputs) == {uri_namespace_name(e["uri"]) for e in manifest}
    for entry in manifest:
        output = outputs[uri_namespace_name(entry["uri"])]
        assert output["namespace"] == "file"
        assert output["name"].endswith("/" + entry["name"])
        assert output["outputFacets"]["outputStatistics"]["size"] == entry["size"]
        assert output["facets"]["version"]["datasetVersion"] == f"sha256:{entry['sha256']}"
        result = output["facets"]["ocean_result"]
        assert (result["sha256"], result["size"], result["type"]) == (
            entry["sha256"],
            entry["size"],
            "output",
        )
        assert result["jobId"] == lineage_run.xcom("start")


@pytest.mark.chain
def test_a_failed_task_emits_a_fail_event(lineage_run: LineageRun) -> None:
    event = lineage_run.one("missing_job", "FAIL")
    assert event["run"]["facets"]["ocean_compute"]["jobId"] == "0" * 32
    assert not lineage_run.of("missing_job", "COMPLETE")


@pytest.mark.chain
def test_no_key_signature_or_signed_url_in_any_event(
    lineage_run: LineageRun, sandbox: dict[str, Any]
) -> None:
    assert len(lineage_run.events) >= 6
    key = sandbox["consumer"]["key"].lower().removeprefix("0x")
    text = lineage_run.raw
    assert key not in text.lower()
    assert not SIGNATURE.search(text)
    assert "signature=" not in text.lower()
    assert "nonce" not in text.lower()
    print(f"lineage run: {lineage_run.seconds:.1f} s, {len(lineage_run.events)} events")


@pytest.mark.chain
def test_a_db_connection_with_execute_in_thread_gives_the_start_event_its_inputs(
    sandbox: dict[str, Any], airflow_db: str, tmp_path: Path
) -> None:
    """The remedy the README gives for a connection stored in the metadata DB under ``airflow dags test``:
    ``[openlineage] execute_in_thread`` runs the listener in the task process, which reads the connection."""
    pytest.importorskip("airflow.providers.openlineage")
    run = run_lineage_dag(
        sandbox, tmp_path / "home", db_connection=True, AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD="True"
    )
    for event_type in ("START", "COMPLETE"):  # (the DAG's missing_job task fails on purpose)
        [dataset] = run.one("start", event_type)["inputs"]
        assert (dataset["namespace"], dataset["name"]) == (
            f"ocean://{sandbox['chain_id']}",
            sandbox["assets"]["dataset"]["did"],
        )
        assert dataset["facets"]["ocean_asset"]["name"] == "Weather observations"
    assert sandbox["consumer"]["key"].lower().removeprefix("0x") not in run.raw.lower()


def test_a_resumed_start_reads_its_payment_back_in_the_task() -> None:
    """After a deferral the payment is read from XCom in the task (the listener never reads XCom)."""
    from airflow_provider_ocean.lineage import StartOperatorLineageMixin

    pulled: list[dict[str, Any]] = []

    class Ti:
        map_index = 3

        def xcom_pull(self, **kwargs: Any) -> Any:
            pulled.append(kwargs)
            return PAYMENT

    mixin = StartOperatorLineageMixin()
    mixin.task_id = "start"
    mixin.keep_payment_for_lineage({"ti": Ti()}, "ocean_payment")
    assert mixin.payment is PAYMENT
    assert pulled == [{"task_ids": "start", "key": "ocean_payment", "map_indexes": 3}]


def test_lineage_reads_reuse_the_tasks_connection_with_one_short_attempt() -> None:
    from airflow_provider_ocean.hooks.ocean import OceanComputeHook
    from airflow_provider_ocean.lineage import READ_TIMEOUT, _reader

    class Operator:
        ocean_conn_id = "some_conn"

    operator = Operator()
    fresh = _reader(operator)
    assert (fresh.ocean_conn_id, fresh.timeout, fresh.retry_limit) == ("some_conn", READ_TIMEOUT, 1)
    assert "_connection" not in fresh.__dict__
    task_hook = OceanComputeHook("some_conn")
    task_hook.__dict__["_connection"] = connection = object()
    operator.__dict__["hook"] = task_hook
    assert _reader(operator).__dict__["_connection"] is connection  # not read again in the listener


def test_a_connection_the_listener_cannot_read_costs_seconds_not_the_start_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under ``airflow dags test`` a DB connection never reaches the listener's forked child."""
    pytest.importorskip("airflow.providers.openlineage")
    import threading

    from airflow_provider_ocean import lineage

    class Blocked:
        ocean_conn_id = "ocean_default"

        @property
        def _connection(self) -> Any:
            threading.Event().wait(30)

    monkeypatch.setattr(lineage, "_reader", lambda operator: Blocked())
    monkeypatch.setattr(lineage, "CONNECTION_WAIT", 0.2)
    started = time.monotonic()
    found = lineage.start_operator_lineage(_Operator())
    assert time.monotonic() - started < 2
    assert found.inputs == []
    assert found.run_facets["ocean_compute"].jobId is None
