"""Auth tokens (docs/reference/provider-v4-api.md §2.9) and the access flow, driven by the independent
client."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.sandbox import ocean_client as oc

pytestmark = pytest.mark.chain

WEATHER = Path(__file__).resolve().parents[2] / "sandbox" / "ocean_sandbox" / "data" / "weather.csv"


@pytest.fixture
def lab(sandbox: dict[str, Any]) -> oc.Lab:
    return oc.Lab(sandbox)


def _token(lab: oc.Lab, wallet: oc.Wallet, expiration: int | None = None) -> requests.Response:
    nonce = oc.next_nonce()
    return lab.provider.get(
        "/api/services/createAuthToken",
        address=wallet.address,
        expiration=expiration or int(time.time()) + 600,
        nonce=nonce,
        signature=oc.sign_request(wallet.key, wallet.address + nonce),
    )


def test_auth_token_lifecycle_and_use_on_stop(lab: oc.Lab) -> None:
    user = lab.new_user(datatokens={"dataset_raw": 1})
    before = lab.provider.nonce(user.address).json()["nonce"]
    response = _token(lab, user)
    assert response.status_code == 200, response.text
    token = response.json()["token"]
    assert token.count(".") == 2  # a JWT
    # createAuthToken does not advance the stored nonce (§2.9)
    assert lab.provider.nonce(user.address).json()["nonce"] == before

    # a signed call with no signature but the AuthToken header passes (stop of a job id that isn't there)
    nonce = oc.next_nonce()
    params = {"consumerAddress": user.address, "jobId": "0" * 32, "documentId": "", "nonce": nonce}
    stop = requests.put(
        lab.provider.base_url + "/api/services/compute",
        params=params,
        headers={"AuthToken": token},
        timeout=30,
    )
    assert stop.status_code == 200, stop.text
    assert stop.json() == []
    # someone else's token does not pass for this owner
    other = lab.new_user()
    foreign = _token(lab, other).json()["token"]
    params["nonce"] = oc.next_nonce()
    refused = requests.put(
        lab.provider.base_url + "/api/services/compute",
        params=params,
        headers={"AuthToken": foreign},
        timeout=30,
    )
    assert refused.status_code == 400
    assert refused.json()["errors"] == {
        "signature": ["Invalid signature provided. Please check the nonce or documentId."]
    }

    # revoke, then it no longer passes and a second revoke says it is deleted
    nonce = oc.next_nonce()
    delete_params = {
        "address": user.address,
        "token": token,
        "nonce": nonce,
        "signature": oc.sign_request(user.key, user.address + nonce),
    }
    deleted = requests.delete(
        lab.provider.base_url + "/api/services/deleteAuthToken", params=delete_params, timeout=30
    )
    assert deleted.json() == {"success": "Token has been deactivated."}
    params["nonce"] = oc.next_nonce()
    after = requests.put(
        lab.provider.base_url + "/api/services/compute",
        params=params,
        headers={"AuthToken": token},
        timeout=30,
    )
    assert after.status_code == 400
    delete_params["nonce"] = oc.next_nonce()
    delete_params["signature"] = oc.sign_request(user.key, user.address + delete_params["nonce"])
    again = requests.delete(
        lab.provider.base_url + "/api/services/deleteAuthToken", params=delete_params, timeout=30
    )
    assert (again.status_code, again.json()) == (400, {"error": "Token is deleted."})


def test_auth_token_needs_a_future_expiration_and_a_valid_signature(lab: oc.Lab) -> None:
    user = lab.new_user()
    past = _token(lab, user, expiration=int(time.time()) - 10)
    assert past.status_code == 400
    assert "expiration" in past.json()["errors"]
    nonce = oc.next_nonce()
    forged = lab.provider.get(
        "/api/services/createAuthToken",
        address=user.address,
        expiration=int(time.time()) + 600,
        nonce=nonce,
        signature=oc.sign_request(lab.funder.key, user.address + nonce),
    )
    assert forged.status_code == 400
    assert forged.json()["errors"]["signature"].startswith("Invalid signature")


def test_access_flow_initialize_order_download(lab: oc.Lab, sandbox: dict[str, Any]) -> None:
    user = lab.new_user(datatokens={"dataset": 1})
    asset = lab.assets["dataset"]
    quote = lab.provider.get(
        "/api/services/initialize", documentId=asset["did"], serviceId="0", consumerAddress=user.address
    )
    assert quote.status_code == 200, quote.text
    body = quote.json()
    assert body["datatoken"].lower() == asset["datatoken"].lower()
    assert oc.provider_fee_signer(body["providerFee"]).lower() == lab.provider_address.lower()
    # the access service is at index 0; the consumer of an access order is the user
    receipt = oc.start_order(lab.chain, user.key, body["datatoken"], user.address, 0, body["providerFee"])
    tx = oc.ok(receipt)
    nonce = oc.next_nonce()
    download = lab.provider.get(
        "/api/services/download",
        documentId=asset["did"],
        serviceId="0",
        transferTxId=tx,
        fileIndex=0,
        consumerAddress=user.address,
        nonce=nonce,
        signature=oc.sign_request(user.key, asset["did"] + nonce),
    )
    assert download.status_code == 200, download.text
    shipped = (WEATHER).read_bytes()
    assert hashlib.sha256(download.content).hexdigest() == hashlib.sha256(shipped).hexdigest()
    # initialize on a compute service points to initializeCompute
    wrong = lab.provider.get(
        "/api/services/initialize", documentId=asset["did"], serviceId="1", consumerAddress=user.address
    )
    assert wrong.status_code == 400


def test_fileinfo_reports_the_files_of_a_service(lab: oc.Lab) -> None:
    asset = lab.assets["dataset"]
    response = requests.post(
        lab.provider.base_url + "/api/services/fileinfo",
        json={"did": asset["did"], "serviceId": "1", "checksum": True},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    (info,) = response.json()
    shipped = (WEATHER).read_bytes()
    assert info["valid"] is True
    assert int(info["contentLength"]) == len(shipped)
    assert info["checksum"] == hashlib.sha256(shipped).hexdigest()
