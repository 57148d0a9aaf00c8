"""The sandbox Provider's refusals, each in the exact shape and status of docs/reference/provider-v4-api.md
(§n).

Three error shapes (§1.1): flask-sieve ``{"errors": ..., "message": "Validation error", "success": false}``,
handled ``{"error": str | {key: code}}`` and uncaught ``{"error": str, "context": ...}``.
"""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
import requests

from tests.sandbox import ocean_client as oc

pytestmark = pytest.mark.chain

CONTAINER = {
    "entrypoint": "python $ALGO",
    "image": "python",
    "tag": "3.11-slim",
    "checksum": "sha256:" + "cd" * 32,
}
SLEEPER = {"rawcode": "import time\nprint('sleeping', flush=True)\ntime.sleep(30)\n", "container": CONTAINER}
FAKE_TX = "0x" + "ee" * 32


@pytest.fixture(scope="module")
def lab(sandbox: dict[str, Any]) -> oc.Lab:
    return oc.Lab(sandbox)


def validation(errors: dict[str, Any]) -> dict[str, Any]:
    return {"errors": errors, "message": "Validation error", "success": False}


def order_invalid(resource: str = "dataset") -> dict[str, Any]:
    return {"error": {f"{resource}.serviceId": "order_invalid"}}


def random_tx() -> str:
    return "0x" + uuid.uuid4().hex + uuid.uuid4().hex


# -- signatures and nonces (§3, §6) --------------------------------------------------------------------
def test_signature_of_another_account_is_rejected(lab: oc.Lab, sandbox: dict[str, Any]) -> None:
    """§3.2: signed by ``other`` while consumerAddress is ``consumer`` → the plain-string signature error."""
    consumer, other = oc.Wallet.of(sandbox["consumer"]), oc.Wallet.of(sandbox["other"])
    did = sandbox["assets"]["dataset"]["did"]
    # the consumer account is shared with other suites: stay above whatever nonce they stored
    stored = int(Decimal(lab.provider.nonce(consumer.address).json()["nonce"]))
    body = lab.provider.start_body(
        consumer,
        lab.ref("dataset", FAKE_TX),
        lab.ref("algorithm", FAKE_TX),
        lab.free_env,
        nonce=str(max(int(oc.next_nonce()), stored + 1)),
        signer=other,
    )
    started = time.monotonic()
    response = lab.provider.start(body)
    assert time.monotonic() - started < 3  # refused before any order lookup
    assert response.status_code == 400
    assert response.json() == validation(
        {
            "signature": f"Invalid signature {body['signature']} for ethereum address {consumer.address}, "
            f"message {consumer.address}{did} and nonce {body['nonce']}. Got {other.address}"
        }
    )


def test_missing_signature(lab: oc.Lab) -> None:
    """§1.1: signature simply missing → a list, unlike the verification failure."""
    user = oc.Wallet.create()
    body = lab.provider.start_body(user, lab.ref("dataset", FAKE_TX), lab.ref("algorithm", FAKE_TX), "x")
    del body["signature"]
    response = lab.provider.start(body)
    assert response.status_code == 400
    assert response.json() == validation(
        {"signature": ["Invalid signature provided. Please check the nonce or documentId."]}
    )


def test_stale_nonce(lab: oc.Lab, sandbox: dict[str, Any]) -> None:
    """§6: the nonce of a signed operation is stored; a lower one is refused with both values."""
    user = oc.Wallet.create()
    did = sandbox["assets"]["dataset"]["did"]
    nonce = oc.next_nonce()
    first = lab.provider.stop(lab.provider.stop_params(user, uuid.uuid4().hex, did, nonce))
    assert first.status_code == 200, first.text
    assert lab.provider.nonce(user.address).json() == {"nonce": nonce}
    lower = str(int(nonce) - 1)
    response = lab.provider.stop(lab.provider.stop_params(user, uuid.uuid4().hex, did, lower))
    assert response.status_code == 400
    assert response.json() == validation(
        {"signature": f"Invalid signature expected nonce ({nonce}) > current nonce ({lower})."}
    )
    # the nonce store is keyed by the exact address string: the lower-case form is another counter
    assert lab.provider.nonce(user.address.lower()).json() == {"nonce": "1"}


def test_duplicate_nonce_on_stop_is_a_503_after_the_stop(lab: oc.Lab, sandbox: dict[str, Any]) -> None:
    """§6 duplicate-nonce pitfall: equal nonce passes the check, the stop runs, then saving it fails (503)."""
    user = lab.new_user({"dataset_raw": 1})
    did = sandbox["assets"]["dataset_raw"]["did"]
    quote = lab.initialize([lab.ref("dataset_raw")], {"meta": SLEEPER}, lab.free_env, int(time.time()) + 600)
    tx = lab.order(user, quote.json()["datasets"][0], "dataset_raw", lab.free_env)
    nonce = oc.next_nonce()
    start = lab.provider.start(
        lab.provider.start_body(
            user, lab.ref("dataset_raw", tx), {"meta": SLEEPER}, lab.free_env, nonce=nonce
        )
    )
    assert start.status_code == 200, start.text
    job_id = start.json()[0]["jobId"]
    params = lab.provider.stop_params(user, job_id, did, nonce)  # same nonce string as the start
    response = lab.provider.stop(params)
    assert response.status_code == 503
    assert response.json() == {
        "error": f"Cannot create duplicates in the database. Existing nonce: {nonce} vs. new nonce: {nonce}",
        "context": params,
    }
    # ... but the operator call already happened: the job is stopped
    finished, _ = lab.provider.wait_finished(user.address, job_id, timeout=10)
    assert finished["stopreq"] == 1
    assert finished["status"] == 70


# -- on-chain order checks (§7) ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def orders(lab: oc.Lab) -> dict[str, Any]:
    """One valid free-env order pair (dataset + algorithm) and a dataset_raw order, all by one fresh user.

    The refused starts below never consume them; the last test proves they were valid all along.
    """
    user = lab.new_user({"dataset": 1, "dataset_raw": 1, "algorithm": 1})
    valid_until = int(time.time()) + 1800
    (dataset, raw), algo = lab.quote_and_order(
        user, ["dataset", "dataset_raw"], "algorithm", lab.free_env, valid_until
    )
    return {"user": user, "dataset": dataset, "raw": raw, "algorithm": algo}


def _variant(lab: oc.Lab, orders: dict[str, Any], variant: str) -> dict[str, Any]:
    user, dataset, algo = orders["user"], dict(orders["dataset"]), dict(orders["algorithm"])
    env: str | None = lab.free_env
    signer = user
    extra: dict[str, Any] = {}
    if variant == "paid-environment":
        env = lab.paid_env
    elif variant == "no-environment":
        env = None
    elif variant == "unknown-environment":
        env = "no-such-environment"
    elif variant == "not-consumer-nor-payer":
        signer = oc.Wallet.create()
    elif variant == "algorithm-tx-as-dataset-tx":
        dataset["transferTxId"] = algo["transferTxId"]
    elif variant == "dataset-tx-as-algorithm-tx":
        algo["transferTxId"] = dataset["transferTxId"]
    elif variant == "dataset-tx-for-additional-input":
        extra["additionalDatasets"] = [lab.ref("dataset_raw", dataset["transferTxId"])]
    elif variant == "invalid-output":
        extra["output"] = "{not json"
    body = lab.provider.start_body(signer, dataset, algo, env or "")
    if env is None:
        del body["environment"]
    body.update(extra)
    return body


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("paid-environment", order_invalid()),  # §7 rule 5
        ("unknown-environment", order_invalid()),  # §5: a wrong value fails the env match
        ("no-environment", order_invalid()),  # §5: a missing value fails the env match too
        ("not-consumer-nor-payer", order_invalid()),  # §7 rule 10
        ("algorithm-tx-as-dataset-tx", order_invalid()),  # §7 rule 4: no ProviderFee for this dt + id
        ("dataset-tx-as-algorithm-tx", {"error": {"algorithm": "in_use_or_not_on_chain"}}),  # §7
        ("dataset-tx-for-additional-input", order_invalid("datasets[1]")),  # §4 naming of inputs
        ("invalid-output", {"error": {"output": "invalid"}}),  # §5
    ],
)
def test_start_refuses_orders_that_do_not_match(
    lab: oc.Lab, orders: dict[str, Any], variant: str, expected: dict[str, Any]
) -> None:
    response = lab.provider.start(_variant(lab, orders, variant))
    assert response.status_code == 400
    assert response.json() == expected


@pytest.mark.parametrize(
    ("meta_change", "expected"),
    [
        (
            {"container": {**CONTAINER, "image": ""}},
            {"algorithm.container": "missing_entrypoint_image_checksum"},
        ),
        ({"container": {**CONTAINER, "checksum": "md5:abc"}}, {"algorithm.container": "checksum_prefix"}),
        ({"rawcode": ""}, {"algorithm": "meta_oneof_url_rawcode_remote"}),
    ],
)
def test_start_refuses_malformed_raw_algorithms(
    lab: oc.Lab, orders: dict[str, Any], meta_change: dict[str, Any], expected: dict[str, Any]
) -> None:
    """§5: entrypoint, image and a sha256: checksum are mandatory even for raw code; one of url/rawcode."""
    meta = {**SLEEPER, **meta_change}
    body = lab.provider.start_body(orders["user"], orders["raw"], {"meta": meta}, lab.free_env)
    response = lab.provider.start(body)
    assert response.status_code == 400
    assert response.json() == {"error": expected}


def test_the_orders_used_above_were_valid(lab: oc.Lab, orders: dict[str, Any]) -> None:
    """Control: the same orders start jobs, so the refusals above came from the variations only."""
    user = orders["user"]
    body = lab.provider.start_body(
        user,
        orders["dataset"],
        orders["algorithm"],
        lab.free_env,
        additional=[orders["raw"]],
    )
    response = lab.provider.start(body)
    assert response.status_code == 200, response.text
    quick = {"rawcode": "print('control job on the raw dataset')", "container": CONTAINER}
    response = lab.provider.start(
        lab.provider.start_body(user, orders["raw"], {"meta": json.dumps(quick)}, lab.free_env)
    )
    assert response.status_code == 200, response.text  # §5: meta may be a JSON string
    assert response.json()[0]["algoDID"] == "raw"


def test_order_with_the_wrong_service_index(lab: oc.Lab) -> None:
    """§7 rule 9 / §9: serviceIndex is the service's position (1 for dataset's compute "1"), not 0."""
    user = lab.new_user({"dataset": 1, "algorithm": 1})
    assert lab.assets["dataset"]["service_index"] == 1
    (dataset,), algo = lab.quote_and_order(
        user, ["dataset"], "algorithm", lab.free_env, int(time.time()) + 600, service_index=0
    )
    response = lab.provider.start(lab.provider.start_body(user, dataset, algo, lab.free_env))
    assert response.status_code == 400
    assert response.json() == order_invalid()


@pytest.mark.parametrize(
    ("valid_for", "clock_shift", "accepted"),
    [
        pytest.param(60, 400, False, id="fee-expired-beyond-grace"),
        pytest.param(60, 100, True, id="fee-expired-within-grace"),
        pytest.param(10_000, 3700, False, id="order-older-than-service-timeout"),
        pytest.param(10_000, 3500, True, id="order-within-service-timeout"),
    ],
)
def test_fee_expiry_and_order_timeout(
    lab: oc.Lab, provider_clock: Any, valid_for: int, clock_shift: int, accepted: bool
) -> None:
    """§7 rule 7 (validUntil + block.timestamp − providerData.timestamp + 90 s) and rule 9 (timeout 3600)."""
    user = lab.new_user({"dataset": 1, "algorithm": 1})
    (dataset,), algo = lab.quote_and_order(
        user, ["dataset"], "algorithm", lab.free_env, int(time.time()) + valid_for
    )
    provider_clock(clock_shift)
    response = lab.provider.start(lab.provider.start_body(user, dataset, algo, lab.free_env))
    if accepted:
        assert response.status_code == 200, response.text
        assert response.json()[0]["status"] == 1
    else:
        assert response.status_code == 400
        assert response.json() == order_invalid()


def test_unknown_transfer_tx_waits_for_the_receipt(lab: oc.Lab) -> None:
    """§7 rule 3 + §10: an unmined tx is waited for (sandbox: 5 s instead of 120 s), then order_invalid."""
    user = oc.Wallet.create()
    body = lab.provider.start_body(
        user, lab.ref("dataset", random_tx()), lab.ref("algorithm", random_tx()), lab.free_env
    )
    started = time.monotonic()
    response = lab.provider.start(body)
    elapsed = time.monotonic() - started
    assert response.status_code == 400
    assert response.json() == order_invalid()
    assert elapsed >= 4, elapsed
    # §6: refused before forwarding → the nonce is not stored
    assert lab.provider.nonce(user.address).json() == {"nonce": "1"}


def test_fees_not_paid(lab: oc.Lab, sandbox: dict[str, Any]) -> None:
    """§7 rule 11: the job's validUntil is the max over inputs; no input paid the fee for it."""
    user = lab.new_user({"dataset": 1, "algorithm": 1}, ocean=100)
    now = int(time.time())
    short = lab.initialize([lab.ref("dataset")], lab.ref("algorithm"), lab.paid_env, now + 120)
    assert short.status_code == 200, short.text
    dataset_answer = short.json()["datasets"][0]
    small_fee = int(dataset_answer["providerFee"]["providerFeeAmount"])
    assert 0 < small_fee <= 10**18  # 120 s at 0.5 OCEAN/min
    oc.ok(oc.approve(lab.chain, user.key, lab.ocean, dataset_answer["datatoken"], small_fee))
    dataset_tx = lab.order(user, dataset_answer, "dataset", lab.paid_env)

    long = lab.initialize([lab.ref("dataset")], lab.ref("algorithm"), lab.paid_env, now + 3600)
    assert long.status_code == 200, long.text
    algo_answer = long.json()["algorithm"]
    assert algo_answer["providerFee"]["providerFeeAmount"] == "0"  # dataset 0 carries the fee
    algo_tx = lab.order(user, algo_answer, "algorithm", lab.paid_env)

    response = lab.provider.start(
        lab.provider.start_body(
            user, lab.ref("dataset", dataset_tx), lab.ref("algorithm", algo_tx), lab.paid_env
        )
    )
    assert response.status_code == 400
    assert response.json() == {"error": {"order": "fees_not_paid"}}


# -- input and algorithm checks (§4, §5) ---------------------------------------------------------------
@pytest.mark.parametrize("route", ["initializeCompute", "start"])
def test_raw_algorithm_not_allowed(lab: oc.Lab, route: str) -> None:
    """§4 trusted algorithms: ``dataset`` does not allow raw algorithms; no transaction is needed."""
    meta = {"rawcode": "print('a raw algorithm')", "container": CONTAINER}
    if route == "initializeCompute":
        response = lab.initialize([lab.ref("dataset")], {"meta": meta}, lab.free_env, int(time.time()) + 600)
    else:
        user = oc.Wallet.create()
        body = lab.provider.start_body(user, lab.ref("dataset", FAKE_TX), {"meta": meta}, lab.free_env)
        response = lab.provider.start(body)
    assert response.status_code == 400
    assert response.json() == {"error": {"dataset": "no_raw_algo_allowed"}}


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("algorithm_untrusted", {"error": {"dataset": "not_trusted_algo"}}),
        ("algorithm", None),
    ],
)
def test_trusted_algorithms(lab: oc.Lab, algorithm: str, expected: dict[str, Any] | None) -> None:
    """§4: dataset_trusted trusts only ``algorithm`` (did + filesChecksum + containerSectionChecksum)."""
    response = lab.initialize(
        [lab.ref("dataset_trusted")], lab.ref(algorithm), lab.free_env, int(time.time()) + 600
    )
    if expected is None:
        assert response.status_code == 200, response.text
        assert set(response.json()) == {"datasets", "algorithm"}
    else:
        assert response.status_code == 400
        assert response.json() == expected


@pytest.mark.parametrize(
    ("env", "valid_until", "expected"),
    [
        pytest.param("ocean-compute", -10, "The validUntil value is not correct.", id="valid-until-past"),
        pytest.param("no-such-env", 600, "Compute environment does not exist", id="unknown-env"),
    ],
)
def test_initialize_compute_handled_errors(lab: oc.Lab, env: str, valid_until: int, expected: str) -> None:
    """§4 errors, handled shape with a plain string."""
    response = lab.initialize([lab.ref("dataset")], lab.ref("algorithm"), env, int(time.time()) + valid_until)
    assert response.status_code == 400
    assert response.json() == {"error": expected}


def test_start_without_dataset_document_id(lab: oc.Lab) -> None:
    """§5 required fields, flask-sieve shape."""
    user = oc.Wallet.create()
    dataset = {"serviceId": "1", "transferTxId": FAKE_TX}
    body = lab.provider.start_body(user, dataset, lab.ref("algorithm", FAKE_TX), lab.free_env)
    response = lab.provider.start(body)
    assert response.status_code == 400
    assert response.json() == validation(
        {"dataset.documentId": ["The dataset.documentId field is required."]}
    )


def test_additional_datasets_must_be_a_list(lab: oc.Lab) -> None:
    """§4 error codes: ``additional_input: invalid``."""
    user = oc.Wallet.create()
    body = lab.provider.start_body(
        user,
        lab.ref("dataset", FAKE_TX),
        lab.ref("algorithm", FAKE_TX),
        lab.free_env,
        additional=lab.ref("dataset_raw", FAKE_TX),
    )
    response = lab.provider.start(body)
    assert response.status_code == 400
    assert response.json() == {"error": {"additional_input": "invalid"}}


@pytest.mark.parametrize(
    ("datasets", "algorithm", "expected"),
    [
        pytest.param(
            [{"documentId": "did:op:" + "0" * 64, "serviceId": "1"}],
            "algorithm",
            {"error": {"dataset.documentId": "did_not_found"}},
            id="unknown-dataset-did",
        ),
        pytest.param(
            ["dataset", {"documentId": "did:op:" + "0" * 64, "serviceId": "1"}],
            "algorithm",
            {"error": {"datasets[1].documentId": "did_not_found"}},
            id="unknown-second-dataset-did",
        ),
        pytest.param(
            [{"service_id": "9"}],
            "algorithm",
            {"error": {"dataset.serviceId": "not_found"}},
            id="unknown-service-id",
        ),
        pytest.param(
            [{"service_id": "0"}],
            "algorithm",
            {"error": {"dataset.serviceId": "main_service_compute"}},
            id="access-service-as-main-input",
        ),
        pytest.param(
            ["dataset"], "dataset", {"error": "DID is not a valid algorithm"}, id="dataset-as-algorithm"
        ),
    ],
)
def test_initialize_compute_input_errors(
    lab: oc.Lab, datasets: list[Any], algorithm: str, expected: dict[str, Any]
) -> None:
    """§4 error codes for inputs, named ``dataset`` for index 0 and ``datasets[i]`` after."""
    refs = []
    for item in datasets:
        if isinstance(item, str):
            refs.append(lab.ref(item))
        elif "service_id" in item:
            refs.append(lab.ref("dataset", service_id=item["service_id"]))
        else:
            refs.append(item)
    response = lab.initialize(refs, lab.ref(algorithm), lab.free_env, int(time.time()) + 600)
    assert response.status_code == 400
    assert response.json() == expected


@pytest.mark.parametrize("missing", ["consumerAddress", "compute.env", "datasets"])
def test_initialize_compute_required_fields(lab: oc.Lab, missing: str) -> None:
    """§4 required fields → flask-sieve shape naming the (dotted) field."""
    body: dict[str, Any] = {
        "datasets": [lab.ref("dataset")],
        "algorithm": lab.ref("algorithm"),
        "compute": {"env": lab.free_env, "validUntil": int(time.time()) + 600},
        "consumerAddress": lab.env_consumer[lab.free_env],
    }
    if missing == "compute.env":
        del body["compute"]["env"]
    else:
        del body[missing]
    response = requests.post(lab.provider.base_url + "/api/services/initializeCompute", json=body, timeout=30)
    assert response.status_code == 400
    assert response.json() == validation({missing: [f"The {missing} field is required."]})


def test_query_parameters_on_post_replace_the_body(lab: oc.Lab) -> None:
    """§1: request data = the query args when the query string is non-empty, never a merge."""
    body = {
        "datasets": [lab.ref("dataset")],
        "algorithm": lab.ref("algorithm"),
        "compute": {"env": lab.free_env, "validUntil": int(time.time()) + 600},
        "consumerAddress": lab.env_consumer[lab.free_env],
    }
    url = lab.provider.base_url + "/api/services/initializeCompute"
    assert requests.post(url, json=body, timeout=30).status_code == 200
    response = requests.post(url, params={"chainId": "8996"}, json=body, timeout=30)
    assert response.status_code == 400
    answer = response.json()
    assert answer["message"] == "Validation error"
    assert answer["success"] is False
    assert answer["errors"]["datasets"] == ["The datasets field is required."]


def test_algorithm_fee_expiry_is_not_checked(lab: oc.Lab, provider_clock: Any) -> None:
    """§7 rule 7: only dataset fees expire; an algorithm order with an expired fee still starts a job."""
    user = lab.new_user({"dataset": 1, "algorithm": 1})
    now = int(time.time())
    short = lab.initialize([lab.ref("dataset")], lab.ref("algorithm"), lab.free_env, now + 60).json()
    algo_tx = lab.order(user, short["algorithm"], "algorithm", lab.free_env)
    long = lab.initialize([lab.ref("dataset")], lab.ref("algorithm"), lab.free_env, now + 2000).json()
    dataset_tx = lab.order(user, long["datasets"][0], "dataset", lab.free_env)
    provider_clock(600)
    body = lab.provider.start_body(
        user, lab.ref("dataset", dataset_tx), lab.ref("algorithm", algo_tx), lab.free_env
    )
    response = lab.provider.start(body)
    assert response.status_code == 200, response.text
    assert response.json()[0]["agreementId"] == algo_tx


def test_signature_with_v_0_or_1_is_accepted(lab: oc.Lab, sandbox: dict[str, Any]) -> None:
    """§3.2 point 3: v 27/28 or 0/1 both accepted."""
    user = oc.Wallet.create()
    params = lab.provider.stop_params(user, uuid.uuid4().hex, sandbox["assets"]["dataset"]["did"])
    v = int(params["signature"][-2:], 16)
    params["signature"] = params["signature"][:-2] + f"{v - 27:02x}"
    response = lab.provider.stop(params)
    assert response.status_code == 200, response.text
    assert lab.provider.nonce(user.address).json() == {"nonce": params["nonce"]}


def test_json_number_nonce_equal_to_the_stored_one_is_accepted_on_start(
    lab: oc.Lab, sandbox: dict[str, Any]
) -> None:
    """§6: a JSON-number nonce in the start body never equals the stored text: no duplicate error."""
    user = lab.new_user({"dataset_raw": 1})
    quick = {"rawcode": "print('json number nonce')", "container": CONTAINER}
    quote = lab.initialize([lab.ref("dataset_raw")], {"meta": quick}, lab.free_env, int(time.time()) + 600)
    tx = lab.order(user, quote.json()["datasets"][0], "dataset_raw", lab.free_env)
    nonce = oc.next_nonce()
    did = sandbox["assets"]["dataset_raw"]["did"]
    assert lab.provider.stop(lab.provider.stop_params(user, uuid.uuid4().hex, did, nonce)).status_code == 200
    body = lab.provider.start_body(
        user, lab.ref("dataset_raw", tx), {"meta": quick}, lab.free_env, nonce=nonce
    )
    body["nonce"] = int(nonce)
    response = lab.provider.start(body)
    assert response.status_code == 200, response.text
