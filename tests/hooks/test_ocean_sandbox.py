"""OceanComputeHook against the real sandbox: ganache + Ocean v4 contracts + the Provider-v4 server.

Every payment here is a real transaction on the local chain, checked through its receipt and balances.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_ocean.backends.provider_v4 import ProviderV4Backend
from airflow_provider_ocean.chain import abi
from airflow_provider_ocean.chain.tx import call_function
from airflow_provider_ocean.exceptions import (
    OceanFeeCapError,
    OceanInsufficientFundsError,
    OceanJobNotFoundError,
    OceanPaymentError,
    OceanProviderError,
    OceanValidationError,
)
from airflow_provider_ocean.hooks.ocean import OceanComputeHook
from airflow_provider_ocean.models import JobStatus

pytestmark = pytest.mark.chain

ONE = 10**18
CONTAINER = {
    "entrypoint": "python $ALGO",
    "image": "python",
    "tag": "3.11-slim",
    "checksum": "sha256:" + "0" * 64,
}
RAW_WRITE = {
    "rawcode": (
        "import hashlib, os\n"
        "out = os.environ.get('OUTPUTS', '/data/outputs')\n"
        "data = hashlib.sha256(b'seed').digest() * (5 * 1024 * 1024 // 32)\n"
        "open(os.path.join(out, 'big.bin'), 'wb').write(data)\n"
        "names = sorted(os.listdir(os.environ.get('INPUTS', '/data/inputs')))\n"
        "open(os.path.join(out, 'inputs.txt'), 'w').write('\\n'.join(names))\n"
        "print('raw done')\n"
    ),
    "container": CONTAINER,
}
RAW_SLEEP = {"rawcode": "import time\nfor _ in range(1200):\n    time.sleep(0.1)\n", "container": CONTAINER}


@pytest.fixture
def hook(ocean_conn: str) -> OceanComputeHook:
    return OceanComputeHook(ocean_conn, retry_delay=0.2)


def assets(sandbox: dict[str, Any]) -> dict[str, Any]:
    return sandbox["assets"]


def tx_count(hook: OceanComputeHook) -> int:
    return hook.rpc.get_transaction_count(hook.consumer_address, "latest")


def balance(hook: OceanComputeHook, token: str) -> int:
    return int(call_function(hook.rpc, token, abi.ERC20_BALANCE_OF, (hook.consumer_address,), ["uint256"])[0])


def wait_terminal(hook: OceanComputeHook, job_id: str, timeout: float = 90) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        job = hook.get_job_status(job_id)
        if job.is_terminal:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.status} {job.status_text}"
        time.sleep(0.3)


def actions(payment: dict[str, Any]) -> list[str]:
    orders = payment["datasets"] + ([payment["algorithm"]] if payment["algorithm"] else [])
    return [o["action"] for o in orders]


def tx_ids(payment: dict[str, Any]) -> list[str]:
    orders = payment["datasets"] + ([payment["algorithm"]] if payment["algorithm"] else [])
    return [o["transfer_tx_id"] for o in orders]


def job_file(sandbox: dict[str, Any], job_id: str, filename: str) -> Path:
    matches = [p for p in Path(sandbox["state_dir"]).rglob(filename) if job_id in p.parts]
    assert matches, f"{filename} of job {job_id} not found under the sandbox state dir"
    return matches[0]


def download_all(hook: OceanComputeHook, job: JobStatus, directory: Path) -> dict[str, Path]:
    out = {}
    for result in job.results:
        downloaded = hook.download_result(job.job_id, result.index, directory)
        assert downloaded.filename == result.filename
        out[result.filename] = Path(downloaded.path)
        assert hashlib.sha256(out[result.filename].read_bytes()).hexdigest() == downloaded.sha256
    return out


class TestDiscovery:
    def test_connection(self, hook, sandbox):
        ok, message = hook.test_connection()
        assert ok, message
        assert sandbox["consumer"]["address"] in message

    def test_environments(self, hook, sandbox):
        envs = {e.id: e for e in hook.get_environments()}
        free, paid = envs[sandbox["environments"]["free"]], envs[sandbox["environments"]["paid"]]
        assert free.is_free
        assert paid.price_min > 0
        assert free.consumer_address == sandbox["engine_address"]
        assert hook.resolve_environment(None).id == free.id

    def test_ddo(self, hook, sandbox):
        dataset = assets(sandbox)["dataset"]
        ddo = hook.get_ddo(dataset["did"])
        service = ddo["services"][dataset["service_index"]]
        assert (service["id"], service["type"]) == (dataset["service_id"], "compute")
        with pytest.raises(OceanValidationError, match="not found"):
            hook.get_ddo("did:op:" + "0" * 64)


class TestPayment:
    def test_new_orders_then_valid_order_without_a_transaction(self, hook, sandbox):
        dataset, algorithm = assets(sandbox)["dataset"], assets(sandbox)["algorithm"]
        before = balance(hook, dataset["datatoken"])
        first = hook.pay_for_compute([dataset["did"]], {"did": algorithm["did"]})
        assert actions(first) == ["start", "start"]
        assert balance(hook, dataset["datatoken"]) == before - ONE
        receipt = hook.rpc.get_transaction_receipt(first["datasets"][0]["transfer_tx_id"])
        [started] = abi.decode_events(abi.ORDER_STARTED, receipt, emitter=dataset["datatoken"])
        assert started["consumer"] == sandbox["engine_address"]
        assert started["payer"] == hook.consumer_address
        assert started["serviceIndex"] == dataset["service_index"]

        sent = tx_count(hook)
        again = hook.pay_for_compute([dataset["did"]], {"did": algorithm["did"]}, transfer_tx_ids=first)
        assert actions(again) == ["valid", "valid"]
        assert tx_ids(again) == tx_ids(first)
        assert tx_count(hook) == sent
        job = hook.start_compute([dataset["did"]], {"did": algorithm["did"]}, payment=again)
        assert wait_terminal(hook, job.job_id).is_succeeded

    def test_reuse_order_after_the_fee_expired(self, hook, sandbox, provider_clock):
        dataset, algorithm = assets(sandbox)["dataset"], assets(sandbox)["algorithm"]
        first = hook.pay_for_compute([dataset["did"]], {"did": algorithm["did"]})
        # Past the fee (validUntil = now + maxJobDuration) but within the order's service timeout.
        provider_clock(300)
        before = balance(hook, dataset["datatoken"])
        reused = hook.pay_for_compute(
            [dataset["did"]],
            {"did": algorithm["did"]},
            transfer_tx_ids=first,
            valid_until=int(time.time()) + 420,
        )
        provider_clock(0)
        assert actions(reused) == ["reuse", "reuse"]
        assert set(tx_ids(reused)).isdisjoint(tx_ids(first))
        assert balance(hook, dataset["datatoken"]) == before  # a reuse costs no datatoken
        receipt = hook.rpc.get_transaction_receipt(reused["datasets"][0]["transfer_tx_id"])
        [event] = abi.decode_events(abi.ORDER_REUSED, receipt, emitter=dataset["datatoken"])
        assert "0x" + event["orderTxId"].hex() == first["datasets"][0]["transfer_tx_id"]

        # Pitfall P4: the Provider now reports the original order; we keep sending our reuse tx.
        again = hook.pay_for_compute([dataset["did"]], {"did": algorithm["did"]}, transfer_tx_ids=reused)
        assert actions(again) == ["valid", "valid"]
        assert tx_ids(again) == tx_ids(reused)
        job = hook.start_compute([dataset["did"]], {"did": algorithm["did"]}, payment=again)
        assert wait_terminal(hook, job.job_id).is_succeeded

    def test_paid_environment_fee_cap_then_approval(self, hook, sandbox):
        dataset, algorithm = assets(sandbox)["dataset"], assets(sandbox)["algorithm"]
        paid_env = sandbox["environments"]["paid"]
        ocean = sandbox["addresses"]["Ocean"]
        sent, held = tx_count(hook), balance(hook, ocean)
        with pytest.raises(OceanFeeCapError, match="above max_fee"):
            hook.pay_for_compute([dataset["did"]], {"did": algorithm["did"]}, paid_env, max_fee=10**15)
        assert (tx_count(hook), balance(hook, ocean)) == (sent, held)

        payment = hook.pay_for_compute(
            [dataset["did"]], {"did": algorithm["did"]}, paid_env, max_fee=10 * ONE
        )
        fee = sum(int(o["provider_fee_amount"]) for o in payment["datasets"] + [payment["algorithm"]])
        assert fee > 0
        assert balance(hook, ocean) == held - fee
        job = hook.start_compute([dataset["did"]], {"did": algorithm["did"]}, payment=payment)
        assert job.agreement_id in tx_ids(payment)
        assert wait_terminal(hook, job.job_id).is_succeeded

    def test_raw_algorithm_refused_before_spending(self, hook, sandbox):
        sent = tx_count(hook)
        with pytest.raises(OceanValidationError, match="allowRawAlgorithm"):
            hook.pay_for_compute([assets(sandbox)["dataset"]["did"]], RAW_WRITE)
        assert tx_count(hook) == sent

    def test_untrusted_algorithm_refused_before_spending(self, hook, sandbox):
        sent = tx_count(hook)
        with pytest.raises(OceanValidationError, match="publisherTrustedAlgorithms"):
            hook.pay_for_compute(
                [assets(sandbox)["dataset_trusted"]["did"]],
                {"did": assets(sandbox)["algorithm_untrusted"]["did"]},
            )
        assert tx_count(hook) == sent

    def test_trusted_algorithm_runs(self, hook, sandbox):
        result = hook.run_compute(
            [assets(sandbox)["dataset_trusted"]["did"]], {"did": assets(sandbox)["algorithm"]["did"]}
        )
        assert wait_terminal(hook, result["job_id"]).is_succeeded


class TestJobs:
    def test_registered_algorithm_custom_data_and_results(self, hook, sandbox, tmp_path):
        dataset, algorithm = assets(sandbox)["dataset"], assets(sandbox)["algorithm"]
        custom = {"column": "humidity_pct", "group_by": "station"}
        result = hook.run_compute(
            [{"did": dataset["did"], "service_id": dataset["service_id"]}],
            {"did": algorithm["did"], "algocustomdata": custom},
        )
        json.dumps(result)  # everything crosses XCom
        job = wait_terminal(hook, result["job_id"])
        assert (job.is_succeeded, job.outcome, job.status) == (True, "succeeded", 70)
        assert job.owner == hook.consumer_address
        files = download_all(hook, job, tmp_path)
        summary = json.loads(files["summary.json"].read_text())
        assert summary["column"] == "humidity_pct"
        assert "humidity_pct" in files["algorithm.log"].read_text()
        for name in ("summary.json", "summary.csv", "algorithm.log"):
            assert files[name].read_bytes() == job_file(sandbox, job.job_id, name).read_bytes()
        types = {r.filename: r.type for r in job.results}
        assert types["algorithm.log"] == "algorithmLog"
        assert [r.index for r in job.results] == list(range(len(job.results)))

    def test_raw_algorithm_two_datasets_and_a_streamed_file(self, hook, sandbox, tmp_path):
        raw, dataset = assets(sandbox)["dataset_raw"], assets(sandbox)["dataset"]
        # The extra dataset goes through its access service: raw code is checked only on compute services.
        result = hook.run_compute([raw["did"], {"did": dataset["did"], "service_id": "0"}], RAW_WRITE)
        assert [o["did"] for o in result["payment"]["datasets"]] == [raw["did"], dataset["did"]]
        assert result["payment"]["algorithm"] is None
        job = wait_terminal(hook, result["job_id"])
        assert job.is_succeeded
        assert job.input_dids == [raw["did"], dataset["did"]]
        big = next(r for r in job.results if r.filename == "big.bin")
        buffer = io.BytesIO()
        downloaded = hook.download_result(job.job_id, big.index, buffer)
        expected = job_file(sandbox, job.job_id, "big.bin").read_bytes()
        assert downloaded.bytes_written == len(expected) == 5 * 1024 * 1024
        assert buffer.getvalue() == expected
        assert downloaded.sha256 == hashlib.sha256(expected).hexdigest()
        listing = next(r for r in job.results if r.filename == "inputs.txt")
        path = hook.download_result(job.job_id, listing.index, tmp_path / "inputs.txt").path
        assert Path(path).read_text().split() == sorted(
            [raw["did"].split(":")[-1], dataset["did"].split(":")[-1]]
        )

    def test_stop(self, hook, sandbox):
        result = hook.run_compute([assets(sandbox)["dataset_raw"]["did"]], RAW_SLEEP)
        job_id = result["job_id"]
        deadline = time.monotonic() + 30
        while hook.get_job_status(job_id).status < 40:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        answered = hook.stop_job(job_id)
        assert answered is not None
        assert answered.stopreq == 1  # operator-service reads the status back after setting stopreq=1
        job = wait_terminal(hook, job_id, timeout=60)
        assert (job.is_stopped, job.is_succeeded, job.outcome) == (True, False, "stopped")
        hook.delete_job(job_id)

    def test_two_datasets_with_a_registered_algorithm(self, hook, sandbox, tmp_path):
        raw, dataset = assets(sandbox)["dataset_raw"], assets(sandbox)["dataset"]
        result = hook.run_compute([dataset["did"], raw["did"]], {"did": assets(sandbox)["algorithm"]["did"]})
        assert actions(result["payment"]) == ["start", "start", "start"]
        job = wait_terminal(hook, result["job_id"])
        assert job.is_succeeded
        files = download_all(hook, job, tmp_path)
        assert json.loads(files["summary.json"].read_text())["inputs"] == 2

    def test_a_start_on_orders_just_paid_skips_the_job_list_and_a_later_one_does_not(
        self, hook, sandbox, monkeypatch
    ):
        """No job can carry an order this hook paid a moment ago: the start goes without a job list.

        A start on the same orders from another hook (a retried task reusing the payment it stored) does
        look first, so that a job it started before is recognised.
        """
        looked: list[list[str]] = []
        original = ProviderV4Backend.jobs_with_agreements

        def spy(self: ProviderV4Backend, transfer_tx_ids: Any) -> list[JobStatus]:
            looked.append(list(transfer_tx_ids))
            return original(self, transfer_tx_ids)

        monkeypatch.setattr(ProviderV4Backend, "jobs_with_agreements", spy)
        dataset, algorithm = assets(sandbox)["dataset"], {"did": assets(sandbox)["algorithm"]["did"]}
        payment = hook.pay_for_compute([dataset["did"]], algorithm)
        first = hook.start_compute([dataset["did"]], algorithm, payment=payment)
        assert looked == []
        wait_terminal(hook, first.job_id)
        retried = OceanComputeHook(hook.ocean_conn_id, retry_delay=0.2)
        second = retried.start_compute([dataset["did"]], algorithm, payment=payment)
        assert looked == [tx_ids(payment)]
        assert second.job_id != first.job_id
        wait_terminal(hook, second.job_id)
        # the same hook, the same orders again: no longer fresh, it looks too
        third = hook.start_compute([dataset["did"]], algorithm, payment=payment)
        assert len(looked) == 2
        wait_terminal(hook, third.job_id)

    def test_list_and_unknown_job(self, hook, sandbox):
        result = hook.run_compute(
            [assets(sandbox)["dataset"]["did"]], {"did": assets(sandbox)["algorithm"]["did"]}
        )
        assert result["job_id"] in {j.job_id for j in hook.list_jobs()}
        with pytest.raises(OceanJobNotFoundError):
            hook.get_job_status("0" * 32)
        wait_terminal(hook, result["job_id"])


@pytest.fixture
def fresh_hook(sandbox, monkeypatch) -> OceanComputeHook:
    """A new wallet with gas money but no datatokens (and a Provider nonce nobody else touches)."""
    from eth_account import Account

    from airflow_provider_ocean.chain.rpc import JsonRpcClient
    from airflow_provider_ocean.chain.tx import TransactionSender

    account = Account.create()
    funder = TransactionSender(JsonRpcClient(sandbox["rpc_url"]), sandbox["publisher"]["key"])
    funder.transact(account.address, b"", value=ONE, gas=21_000, what="fund a fresh wallet")
    conn = json.loads(sandbox["conn_json"])
    conn["password"] = "0x" + bytes(account.key).hex()
    monkeypatch.setenv("AIRFLOW_CONN_OCEAN_FRESH", json.dumps(conn))
    return OceanComputeHook("ocean_fresh", retry_delay=0.2)


class TestDatatokenAcquisition:
    def test_without_acquisition_nothing_is_sent(self, fresh_hook, sandbox):
        with pytest.raises(OceanInsufficientFundsError, match="acquisition is off"):
            fresh_hook.pay_for_compute([assets(sandbox)["dataset_raw"]["did"]], RAW_WRITE)
        assert tx_count(fresh_hook) == 0

    def test_fixed_rate_exchange(self, fresh_hook, sandbox):
        from airflow_provider_ocean.chain.rpc import JsonRpcClient
        from airflow_provider_ocean.chain.tx import TransactionSender

        raw = assets(sandbox)["dataset_raw"]
        ocean = sandbox["addresses"]["Ocean"]
        publisher = TransactionSender(JsonRpcClient(sandbox["rpc_url"]), sandbox["publisher"]["key"])
        # The publisher lists the datatoken at 2 OCEAN (FRE may mint) and hands the fresh wallet 5 OCEAN.
        publisher.transact(
            raw["datatoken"],
            abi.encode_call(
                "createFixedRate(address,address[],uint256[])",
                sandbox["addresses"]["FixedPrice"],
                [ocean, publisher.address, publisher.address, "0x" + "0" * 40],
                [18, 18, 2 * ONE, 0, 1],
            ),
            gas=3_000_000,
            what="createFixedRate",
        )
        other = TransactionSender(JsonRpcClient(sandbox["rpc_url"]), sandbox["other"]["key"])
        other.transact(
            ocean, abi.encode_call("transfer(address,uint256)", fresh_hook.consumer_address, 5 * ONE)
        )

        with pytest.raises(OceanInsufficientFundsError, match="above the limit"):
            fresh_hook.pay_for_compute(
                [raw["did"]], RAW_WRITE, acquire_datatokens="fixed_rate", max_datatoken_price=ONE
            )
        assert tx_count(fresh_hook) == 0
        result = fresh_hook.run_compute(
            [raw["did"]], RAW_WRITE, acquire_datatokens="fixed_rate", max_datatoken_price=3 * ONE
        )
        assert actions(result["payment"]) == ["start"]
        spent = 5 * ONE - balance(fresh_hook, ocean)
        assert 2 * ONE <= spent <= 3 * ONE  # price plus the exchange's fees
        assert wait_terminal(fresh_hook, result["job_id"]).is_succeeded

    def test_dispenser(self, fresh_hook, sandbox):
        raw = assets(sandbox)["dataset_raw"]
        result = fresh_hook.run_compute([raw["did"]], RAW_WRITE, acquire_datatokens="dispenser")
        assert actions(result["payment"]) == ["start"]
        assert balance(fresh_hook, raw["datatoken"]) == 0  # dispensed exactly what the order used
        assert wait_terminal(fresh_hook, result["job_id"]).is_succeeded


class TestPublishedPricing:
    """``ocean-sandbox publish --pricing dispenser|fixed`` gives assets a new wallet can buy access to."""

    def test_dispenser_priced_dataset(self, fresh_hook, sandbox, tmp_path):
        from tests.dags.test_publish_own import CSV, publish

        (tmp_path / "dispensed.csv").write_text(CSV)
        asset = publish(
            sandbox,
            "dataset",
            str(tmp_path / "dispensed.csv"),
            "--allow-raw-algorithm",
            "--pricing",
            "dispenser",
        )
        with pytest.raises(OceanInsufficientFundsError, match="acquisition is off"):
            fresh_hook.pay_for_compute([asset["did"]], RAW_WRITE)
        result = fresh_hook.run_compute([asset["did"]], RAW_WRITE, acquire_datatokens="dispenser")
        assert actions(result["payment"]) == ["start"]
        assert wait_terminal(fresh_hook, result["job_id"]).is_succeeded

    def test_fixed_rate_priced_dataset(self, fresh_hook, sandbox, tmp_path):
        from airflow_provider_ocean.chain.rpc import JsonRpcClient
        from airflow_provider_ocean.chain.tx import TransactionSender
        from tests.dags.test_publish_own import CSV, publish

        (tmp_path / "priced.csv").write_text(CSV)
        asset = publish(
            sandbox,
            "dataset",
            str(tmp_path / "priced.csv"),
            "--allow-raw-algorithm",
            "--pricing",
            "fixed",
            "--price",
            "2",
        )
        ocean = sandbox["addresses"]["Ocean"]
        other = TransactionSender(JsonRpcClient(sandbox["rpc_url"]), sandbox["other"]["key"])
        other.transact(
            ocean, abi.encode_call("transfer(address,uint256)", fresh_hook.consumer_address, 5 * ONE)
        )
        with pytest.raises(OceanInsufficientFundsError, match="above the limit"):
            fresh_hook.pay_for_compute(
                [asset["did"]], RAW_WRITE, acquire_datatokens="fixed_rate", max_datatoken_price=ONE
            )
        result = fresh_hook.run_compute(
            [asset["did"]], RAW_WRITE, acquire_datatokens="fixed_rate", max_datatoken_price=3 * ONE
        )
        spent = 5 * ONE - balance(fresh_hook, ocean)
        assert 2 * ONE <= spent <= 3 * ONE  # the published price plus the exchange's fees
        assert wait_terminal(fresh_hook, result["job_id"]).is_succeeded


class TestProviderBehaviour:
    def test_tampered_fee_is_caught_by_the_dry_run(self, hook, sandbox, monkeypatch):
        original = hook.provider.initialize_compute

        def tampered(**kwargs: Any) -> dict[str, Any]:
            answer = original(**kwargs)
            for item in answer["datasets"]:
                item["providerFee"]["validUntil"] += 1  # breaks the Provider's signature
            return answer

        monkeypatch.setattr(hook.provider, "initialize_compute", tampered)
        sent = tx_count(hook)
        with pytest.raises(OceanPaymentError, match="would revert") as info:
            hook.pay_for_compute(
                [assets(sandbox)["dataset"]["did"]], {"did": assets(sandbox)["algorithm"]["did"]}
            )
        assert info.value.spent is False
        assert tx_count(hook) == sent

    def test_unknown_order_is_order_invalid(self, hook, sandbox):
        dataset = assets(sandbox)["dataset_raw"]
        bogus = "0x" + "12" * 32
        with pytest.raises(OceanProviderError) as info:
            hook.start_compute(
                [{"did": dataset["did"], "service_id": dataset["service_id"], "transfer_tx_id": bogus}],
                RAW_WRITE,
                environment=sandbox["environments"]["free"],
            )
        assert (info.value.status, info.value.code) == (400, "order_invalid")
        assert "re-initialize and pay again" in str(info.value)

    def test_nonce_above_a_nanosecond_nonce_stored_by_another_client(self, fresh_hook, sandbox):
        import requests

        from airflow_provider_ocean.signing import job_message

        signer = fresh_hook.signer
        poisoned = str(time.time_ns())
        body = {"consumerAddress": signer.address, "jobId": "0" * 32, "nonce": poisoned}
        body["signature"] = signer.sign(job_message(signer.address, "0" * 32, None, poisoned))
        requests.put(sandbox["provider_url"] + "/api/services/compute", json=body, timeout=30)
        assert fresh_hook.provider.get_nonce(signer.address) == poisoned
        fresh_hook.stop_job("0" * 32)  # signed with stored + 1: accepted
        assert int(Decimal(fresh_hook.provider.get_nonce(signer.address))) == int(poisoned) + 1
        # Known to this process now, the stored nonce is not read again before each request; when
        # another client pushes it further, the Provider refuses ours and the stop is re-signed above.
        later = str(time.time_ns() + 10**12)
        body = {"consumerAddress": signer.address, "jobId": "0" * 32, "nonce": later}
        body["signature"] = signer.sign(job_message(signer.address, "0" * 32, None, later))
        requests.put(sandbox["provider_url"] + "/api/services/compute", json=body, timeout=30)
        fresh_hook.stop_job("0" * 32)
        assert int(Decimal(fresh_hook.provider.get_nonce(signer.address))) == int(later) + 1
