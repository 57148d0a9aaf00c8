"""Pre-spend checks of DDOs, services and trust lists (``airflow_provider_ocean.ddo``)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from eth_utils import to_checksum_address

from airflow_provider_ocean.ddo import (
    check_algorithm_allowed,
    check_algorithm_ddo,
    check_dataset_service,
    container_section_checksum,
    find_service,
)
from airflow_provider_ocean.exceptions import OceanValidationError
from airflow_provider_ocean.models import ComputeAlgorithm

PAYER = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
ENGINE = to_checksum_address("0x" + "e1" * 20)
DT1 = to_checksum_address("0x" + "d1" * 20)
DT_ALGO = to_checksum_address("0x" + "da" * 20)
DID1 = "did:op:" + "1" * 64
DID2 = "did:op:" + "2" * 64
ALGO_DID = "did:op:" + "3" * 64

CONTAINER = {
    "entrypoint": "python $ALGO",
    "image": "python",
    "tag": "3.11",
    "checksum": "sha256:" + "ab" * 32,
}


def dataset_ddo(**compute: Any) -> dict[str, Any]:
    return {
        "id": DID1,
        "chainId": 8996,
        "nft": {"address": "0x" + "1" * 40, "owner": PAYER, "state": 0},
        "metadata": {"type": "dataset"},
        "services": [
            {"id": "0", "type": "access", "datatokenAddress": DT1},
            {"id": "1", "type": "compute", "datatokenAddress": DT1, "compute": compute},
        ],
    }


def algorithm_ddo(owner: str = PAYER) -> dict[str, Any]:
    return {
        "id": ALGO_DID,
        "chainId": 8996,
        "nft": {"owner": owner, "state": 0},
        "metadata": {"type": "algorithm", "algorithm": {"container": CONTAINER}},
        "services": [{"id": "0", "type": "access", "datatokenAddress": DT_ALGO}],
    }


RAW = ComputeAlgorithm(
    rawcode="print(1)", entrypoint="python $ALGO", image="python", checksum="sha256:" + "0" * 64
)
BY_DID = ComputeAlgorithm(did=ALGO_DID)


class TestDdoChecks:
    def test_find_service_by_id_and_default(self):
        ddo = dataset_ddo()
        assert find_service(ddo, "0", role="additional dataset")[1] == 0
        assert find_service(ddo, None, role="dataset") == (ddo["services"][1], 1)
        assert find_service(ddo, None, role="additional dataset")[1] == 1
        assert find_service(algorithm_ddo(), None, role="algorithm")[1] == 0

    def test_unknown_service(self):
        with pytest.raises(
            OceanValidationError, match=r"no service '7' \(services: 0 \(access\), 1 \(compute\)\)"
        ):
            find_service(dataset_ddo(), "7", role="dataset")

    def test_first_dataset_needs_a_compute_service(self):
        ddo = dataset_ddo()
        with pytest.raises(OceanValidationError, match="compute service"):
            check_dataset_service(ddo, ddo["services"][0], role="dataset", chain_id=8996)
        check_dataset_service(ddo, ddo["services"][0], role="additional dataset", chain_id=8996)

    def test_wrong_chain_and_unconsumable(self):
        ddo = dataset_ddo()
        with pytest.raises(OceanValidationError, match="chain 8996, the connection on 1"):
            check_dataset_service(ddo, ddo["services"][1], role="dataset", chain_id=1)
        ddo["nft"]["state"] = 2
        with pytest.raises(OceanValidationError, match="not consumable"):
            check_dataset_service(ddo, ddo["services"][1], role="dataset", chain_id=8996)

    def test_raw_algorithm_needs_permission(self):
        ddo = dataset_ddo()
        with pytest.raises(OceanValidationError, match="allowRawAlgorithm"):
            check_algorithm_allowed(ddo, ddo["services"][1], RAW, None)
        allowed = dataset_ddo(allowRawAlgorithm=True)
        check_algorithm_allowed(allowed, allowed["services"][1], RAW, None)

    def test_any_did_algorithm_when_nothing_is_listed(self):
        ddo = dataset_ddo(publisherTrustedAlgorithms=[], publisherTrustedAlgorithmPublishers=[])
        check_algorithm_allowed(ddo, ddo["services"][1], BY_DID, algorithm_ddo())

    def test_trusted_algorithm_list(self):
        entry = {
            "did": ALGO_DID,
            "filesChecksum": "00",
            "containerSectionChecksum": container_section_checksum(CONTAINER),
        }
        ddo = dataset_ddo(publisherTrustedAlgorithms=[entry])
        check_algorithm_allowed(ddo, ddo["services"][1], BY_DID, algorithm_ddo())
        with pytest.raises(OceanValidationError, match="not in the publisherTrustedAlgorithms"):
            check_algorithm_allowed(ddo, ddo["services"][1], ComputeAlgorithm(did=DID2), {})
        changed = algorithm_ddo()
        changed["metadata"]["algorithm"]["container"] = {**CONTAINER, "checksum": "sha256:" + "cd" * 32}
        with pytest.raises(OceanValidationError, match="containerSectionChecksum"):
            check_algorithm_allowed(ddo, ddo["services"][1], BY_DID, changed)

    def test_trusted_publishers(self):
        ddo = dataset_ddo(publisherTrustedAlgorithmPublishers=[PAYER.lower()])
        check_algorithm_allowed(ddo, ddo["services"][1], BY_DID, algorithm_ddo())
        with pytest.raises(OceanValidationError, match="publisherTrustedAlgorithmPublishers"):
            check_algorithm_allowed(ddo, ddo["services"][1], BY_DID, algorithm_ddo(owner=ENGINE))

    def test_container_section_checksum(self):
        assert (
            container_section_checksum(CONTAINER)
            == hashlib.sha256((CONTAINER["entrypoint"] + CONTAINER["checksum"]).encode()).hexdigest()
        )

    def test_algorithm_ddo(self):
        ddo = algorithm_ddo()
        check_algorithm_ddo(ddo, ddo["services"][0], chain_id=8996)
        not_algo = dataset_ddo()
        with pytest.raises(OceanValidationError, match="not an algorithm"):
            check_algorithm_ddo(not_algo, not_algo["services"][0], chain_id=8996)
        ddo["metadata"]["algorithm"]["container"] = {"image": "x"}
        with pytest.raises(OceanValidationError, match="entrypoint, checksum"):
            check_algorithm_ddo(ddo, ddo["services"][0], chain_id=8996)
