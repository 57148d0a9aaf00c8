"""Signing and nonces: fixed vectors of docs/reference/provider-v4-api.md §3.3, checked by independent
recovery."""

from __future__ import annotations

import copy
import pickle
import threading
import time

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak

from airflow_provider_ocean.exceptions import OceanConfigError, OceanValidationError, redact
from airflow_provider_ocean.signing import (
    NonceAllocator,
    Signer,
    is_private_key,
    job_message,
    parse_stored_nonce,
    result_message,
    start_message,
)

KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
DID = "did:op:62b18537305dacbec82ee60d3dedf67e0e3b353990336314c07e53d17af119ae"
JOB_ID = "a1b2c3d4e5f60718293a4b5c6d7e8f90"

VECTORS = [
    pytest.param(
        start_message(ADDRESS, DID, "1700000000000"),
        "0xbc2ed8bc0cdd156cd2facc2dd2edaa25678714c6ef42f60f47ba8ad043154aa9",
        "0x2b9e1dba93fd969420c3e90543734a5ab59b5bae501077782e8f3c50a5c8ee9f"
        "6adfef1e5c5f402def61548f1b8f4221fd7665798d7d9fb7a406d4728e5e00df1c",
        id="start",
    ),
    pytest.param(
        result_message(ADDRESS, JOB_ID, 0, "1700000000001"),
        "0x2c44ab23c03049c9cf543014857940338b6108d42615c0a0981d49057463178d",
        "0xafb85629e2882cf5f6ddfc2b616fe1eaa38bde3df0ff394f521b127b5205187d"
        "35dd28526b1f43f5af0d2c42b87f3a8f0463fab7e03af6c0d0c4444fbd01e0291b",
        id="result",
    ),
    pytest.param(
        job_message(ADDRESS, JOB_ID, DID, "1700000000002"),
        "0x9d7bafea12239b097bd378e969741625f22e14fe5b6abfca2a5468b15313023d",
        "0x298fd3657d97b59571713da303a2df99a7a47f1d90a333c87c336a6e3bec77fa"
        "220580e36366ba6aedf66a6982a916ef65020679f2ea0822a23a860df57aa5431b",
        id="stop",
    ),
]


class TestMessages:
    def test_start_message_is_address_did_nonce(self):
        assert start_message(ADDRESS, DID, "5") == f"{ADDRESS}{DID}5"

    def test_job_message_without_document_id(self):
        assert job_message(ADDRESS, JOB_ID, None, "7") == f"{ADDRESS}{JOB_ID}7"

    def test_job_message_with_document_id(self):
        assert job_message(ADDRESS, JOB_ID, DID, "7") == f"{ADDRESS}{JOB_ID}{DID}7"

    def test_result_message_uses_index_not_did(self):
        assert result_message(ADDRESS, JOB_ID, 3, "9") == f"{ADDRESS}{JOB_ID}39"


class TestSigner:
    def test_address_is_checksummed(self):
        assert Signer(KEY).address == ADDRESS

    def test_key_without_prefix(self):
        assert Signer(KEY[2:]).address == ADDRESS

    @pytest.mark.parametrize(("message", "message_hash", "signature"), VECTORS)
    def test_vectors(self, message, message_hash, signature):
        assert "0x" + keccak(text=message).hex() == message_hash
        produced = Signer(KEY).sign(message)
        assert produced == signature
        recovered = Account.recover_message(
            encode_defunct(primitive=keccak(text=message)), signature=produced
        )
        assert recovered == ADDRESS

    def test_start_vector_eip191_digest(self):
        message = start_message(ADDRESS, DID, "1700000000000")
        digest = keccak(b"\x19Ethereum Signed Message:\n32" + keccak(text=message))
        assert "0x" + digest.hex() == "0x4faac5b0461b28a3ad2a24429c4b4a79c055a9215b83ff169218b66e97daca60"

    def test_signature_is_not_over_the_text(self):
        message = start_message(ADDRESS, DID, "1")
        signature = Signer(KEY).sign(message)
        over_text = Account.recover_message(encode_defunct(text=message), signature=signature)
        assert over_text != ADDRESS

    def test_repr_and_str_hide_the_key(self):
        signer = Signer(KEY)
        for text in (repr(signer), str(signer), f"{signer}"):
            assert KEY[2:] not in text.lower()
            assert ADDRESS in text

    def test_refuses_pickle_and_copy(self):
        signer = Signer(KEY)
        with pytest.raises(TypeError):
            pickle.dumps(signer)
        with pytest.raises(TypeError):
            copy.deepcopy(signer)

    @pytest.mark.parametrize(
        "bad",
        [
            "",
            "0x1234",
            KEY + "00",
            "0x" + "g" * 64,
            "not a key at all, 64 chars long...............................",
        ],
    )
    def test_malformed_key_is_not_echoed(self, bad):
        with pytest.raises(OceanConfigError) as info:
            Signer(bad)
        if bad:
            assert bad not in str(info.value)
        assert "64 hex digits" in str(info.value)

    def test_key_is_redacted_from_messages_once_registered(self):
        Signer(KEY)
        assert KEY[2:] not in redact(f"oops {KEY} and {KEY[2:].upper()}").lower()

    def test_is_private_key(self):
        assert is_private_key(KEY)
        assert is_private_key(KEY[2:])
        assert not is_private_key(KEY[:-1])
        assert not is_private_key(None)

    def test_transaction_sender_uses_the_same_account(self):
        class _Rpc:
            url = "http://rpc.invalid"

        sender = Signer(KEY).transaction_sender(_Rpc())  # type: ignore[arg-type]
        assert sender.address == ADDRESS
        assert KEY[2:] not in repr(sender).lower()


class TestParseStoredNonce:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("1", 1),
            (1, 1),
            ("1700000000000", 1700000000000),
            ("1700000000000.0", 1700000000000),
            (" 42 ", 42),
        ],
    )
    def test_values(self, raw, expected):
        assert parse_stored_nonce(raw) == expected

    @pytest.mark.parametrize("raw", ["abc", "", None, "NaN", "Infinity"])
    def test_rejects_garbage(self, raw):
        with pytest.raises(OceanValidationError):
            parse_stored_nonce(raw)


class TestNonceAllocator:
    URL = "http://provider.test"

    def test_uses_clock_when_stored_is_small(self):
        allocator = NonceAllocator(clock=lambda: 1_700_000_000_000)
        assert allocator.next_nonce(self.URL, ADDRESS, "1") == "1700000000000"

    def test_uses_stored_plus_one_when_ahead_of_clock(self):
        allocator = NonceAllocator(clock=lambda: 1_700_000_000_000)
        assert allocator.next_nonce(self.URL, ADDRESS, "1800000000000") == "1800000000001"

    def test_nanosecond_nonce_stored_by_another_client(self):
        allocator = NonceAllocator(clock=lambda: 1_700_000_000_000)
        stored = "1700000000000000000"
        assert int(allocator.next_nonce(self.URL, ADDRESS, stored)) == int(stored) + 1

    def test_strictly_increasing_with_a_frozen_clock_and_stale_store(self):
        allocator = NonceAllocator(clock=lambda: 1_000)
        values = [int(allocator.next_nonce(self.URL, ADDRESS, "5")) for _ in range(5)]
        assert values == [1000, 1001, 1002, 1003, 1004]
        assert allocator.last_sent(self.URL, ADDRESS) == 1004

    def test_digit_string(self):
        allocator = NonceAllocator()
        value = allocator.next_nonce(self.URL, ADDRESS, "1")
        assert value.isdigit()
        assert abs(int(value) - time.time() * 1000) < 60_000

    def test_separate_counters_per_address_string_and_provider(self):
        allocator = NonceAllocator(clock=lambda: 10)
        assert allocator.next_nonce(self.URL, ADDRESS, "0") == "10"
        assert allocator.next_nonce(self.URL, ADDRESS.lower(), "0") == "10"
        assert allocator.next_nonce(self.URL + "/", ADDRESS, "0") == "11"  # trailing slash: same Provider
        assert allocator.next_nonce("http://other.test", ADDRESS, "0") == "10"

    def test_threads_never_share_a_nonce(self):
        allocator = NonceAllocator(clock=lambda: 100)
        results: list[int] = []
        lock = threading.Lock()

        def work():
            for _ in range(200):
                value = int(allocator.next_nonce(self.URL, ADDRESS, "1"))
                with lock:
                    results.append(value)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 1600
        assert len(set(results)) == 1600

    def test_reserve_reads_the_stored_nonce_only_when_nothing_bounds_it(self, tmp_path):
        reads: list[str] = []

        def fetch() -> str:
            reads.append("read")
            return "5000"

        allocator = NonceAllocator(clock=lambda: 100, lock_dir=str(tmp_path))
        values = []
        for refresh in (False, False, True, False):
            with allocator.reserve(self.URL, ADDRESS, fetch, refresh=refresh) as nonce:
                values.append(int(nonce))
        assert values == [5001, 5002, 5003, 5004]
        assert len(reads) == 2  # the first reservation, and the refresh
        # another process of this host: the lock file's counter bounds the stored nonce, no read
        other = NonceAllocator(clock=lambda: 100, lock_dir=str(tmp_path))
        with other.reserve(self.URL, ADDRESS, fetch) as nonce:
            assert int(nonce) == 5005
        assert len(reads) == 2
        # a process on a host that never signed for this wallet reads it
        with NonceAllocator(clock=lambda: 100).reserve(self.URL, ADDRESS, fetch) as nonce:
            assert int(nonce) == 5001
        assert len(reads) == 3

    def test_reserve_holds_the_wallet_lock_during_the_request(self):
        allocator = NonceAllocator(clock=lambda: 100)
        inside = threading.Event()
        release = threading.Event()
        order: list[str] = []

        def first():
            with allocator.reserve(self.URL, ADDRESS, lambda: "1") as nonce:
                order.append(f"first:{nonce}")
                inside.set()
                release.wait(5)
                order.append("first-done")

        def second():
            with allocator.reserve(self.URL, ADDRESS, lambda: "1") as nonce:
                order.append(f"second:{nonce}")

        t1 = threading.Thread(target=first)
        t1.start()
        assert inside.wait(5)
        t2 = threading.Thread(target=second)
        t2.start()
        time.sleep(0.2)
        assert order == ["first:100"]  # second is blocked behind the lock
        release.set()
        t1.join(5)
        t2.join(5)
        assert order == ["first:100", "first-done", "second:101"]
