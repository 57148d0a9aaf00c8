"""Provider fees and order requests (``airflow_provider_ocean.payment.fees``)."""

from __future__ import annotations

import pytest
from eth_abi import decode
from eth_abi.packed import encode_packed
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak, to_checksum_address

from airflow_provider_ocean.chain import abi
from airflow_provider_ocean.exceptions import OceanValidationError
from airflow_provider_ocean.payment.fees import OrderRequest, ProviderFee, make_requests
from tests.payment.fakes import DID1, DID2, DT1, DT2, ENGINE, OCEAN, PAYER, ZERO


# -- the provider fee tuple -------------------------------------------------------------------------
class TestProviderFee:
    VECTOR = {
        "providerFeeAddress": PAYER,
        "providerFeeToken": ZERO,
        "providerFeeAmount": "0",
        "providerData": "0x"
        + (
            b'{"environment":"ocean-compute","timestamp":1700000000.5,'
            b'"dt":"0x2222222222222222222222222222222222222222","id":"1"}'
        ).hex(),
        "v": 28,
        "r": "0x0fccd13cb9237d6dfa1de5cac63c159e240a24e1b4ee25e7ca03532a1ed83c72",
        "s": "0x6450a3b10f1cfdb7694e05eb776b3e49fac95a93a8bf156958a84ab1d8bdb533",
        "validUntil": 1700003600,
    }

    def test_vector_round_trips_to_a_verifiable_tuple(self):
        fee = ProviderFee.from_json(self.VECTOR)
        address, token, amount, v, r, s, valid_until, data = fee.as_tuple()
        assert isinstance(data, bytes)  # providerData is the LAST field
        packed = keccak(
            encode_packed(
                ["bytes", "address", "address", "uint256", "uint256"],
                [data, address, token, amount, valid_until],
            )
        )
        assert "0x" + packed.hex() == "0xb71fd669b8fc01fa00287618d3ce4962ec03e5b08acdc234926113abcbeec0d2"
        assert Account.recover_message(encode_defunct(primitive=packed), vrs=(v, r, s)) == PAYER
        assert fee.data() == {
            "environment": "ocean-compute",
            "timestamp": 1700000000.5,
            "dt": "0x" + "22" * 20,
            "id": "1",
        }
        assert not fee.is_payable

    def test_start_order_encoding(self):
        fee = ProviderFee.from_json(self.VECTOR)
        call = abi.encode_call(abi.DT_START_ORDER, ENGINE, 3, fee.as_tuple(), (ZERO, ZERO, 0))
        assert call[:4].hex() == "79d9d7f3"
        consumer, index, fee_tuple, consume = decode(
            [
                "address",
                "uint256",
                "(address,address,uint256,uint8,bytes32,bytes32,uint256,bytes)",
                "(address,address,uint256)",
            ],
            call[4:],
        )
        assert (to_checksum_address(consumer), index) == (ENGINE, 3)
        assert fee_tuple[3] == 28
        assert fee_tuple[7] == fee.provider_data
        assert consume == (ZERO, ZERO, 0)

    def test_reuse_order_selector(self):
        fee = ProviderFee.from_json(self.VECTOR)
        assert abi.encode_call(abi.DT_REUSE_ORDER, bytes(32), fee.as_tuple())[:4].hex() == "361fef49"

    def test_amount_is_a_decimal_string_and_v_0_1_is_normalised(self):
        fee = ProviderFee.from_json(
            {**self.VECTOR, "providerFeeAmount": "123456789012345678901", "v": 1, "providerFeeToken": OCEAN}
        )
        assert fee.amount == 123456789012345678901
        assert fee.v == 28
        assert fee.is_payable

    @pytest.mark.parametrize(
        "broken", [{"v": None}, {"r": "0xzz"}, {"providerFeeAmount": "1.5"}, {"providerFeeAddress": "nope"}]
    )
    def test_malformed(self, broken):
        with pytest.raises(OceanValidationError, match="malformed providerFee"):
            ProviderFee.from_json({**self.VECTOR, **broken})


class TestMakeRequests:
    def test_inputs_are_paired_with_their_quotes_in_order(self):
        quotes = [{"validOrder": "0x" + "0a" * 32}, {"datatoken": DT2}]
        requests = make_requests(
            [("dataset", DID1, "1", 1, DT1, "0x" + "0a" * 32), ("algorithm", DID2, "0", 0, DT2, None)], quotes
        )
        assert requests == [
            OrderRequest("dataset", DID1, "1", 1, DT1, quotes[0], "0x" + "0a" * 32),
            OrderRequest("algorithm", DID2, "0", 0, DT2, quotes[1], None),
        ]

    def test_a_missing_quote_is_refused(self):
        with pytest.raises(OceanValidationError, match="1 quotes for 2 inputs"):
            make_requests([("dataset", DID1, "1", 1, DT1, None), ("dataset", DID2, "1", 1, DT2, None)], [{}])
