"""The chain client against the sandbox's real ganache and Ocean contracts."""

from __future__ import annotations

import pytest
from eth_account import Account

from airflow_provider_ocean.chain import abi
from airflow_provider_ocean.chain.errors import RpcError, RpcUnavailableError, TransactionRevertedError
from airflow_provider_ocean.chain.rpc import JsonRpcClient
from airflow_provider_ocean.chain.tx import TransactionSender, call_function

pytestmark = pytest.mark.chain


@pytest.fixture
def rpc(sandbox: dict) -> JsonRpcClient:
    return JsonRpcClient(sandbox["rpc_url"])


def test_reads(rpc: JsonRpcClient, sandbox: dict) -> None:
    assert rpc.chain_id() == 8996
    assert rpc.get_balance(sandbox["consumer"]["address"]) > 0
    (balance,) = call_function(
        rpc,
        sandbox["assets"]["dataset"]["datatoken"],
        abi.ERC20_BALANCE_OF,
        (sandbox["consumer"]["address"],),
        ["uint256"],
    )
    assert balance >= 10**18
    block = rpc.get_block("latest")
    assert ("baseFeePerGas" in block) == (sandbox["hardfork"] == "london")  # ocean-sandbox up's default


def test_transactions_and_receipts(rpc: JsonRpcClient, sandbox: dict) -> None:
    """EIP-1559 fields on london (the sandbox's default), a legacy gas price on istanbul
    (``tests/sandbox/test_hardfork.py`` runs the istanbul side)."""
    sender = TransactionSender(rpc, sandbox["other"]["key"])
    fees = sender.fee_fields()
    london = sandbox["hardfork"] == "london"
    assert set(fees) == ({"maxFeePerGas", "maxPriorityFeePerGas"} if london else {"gasPrice"})
    receipt = sender.transact(
        sandbox["addresses"]["Ocean"],
        abi.encode_call(abi.ERC20_APPROVE, sandbox["assets"]["dataset"]["datatoken"], 123),
        what="approve",
    )
    assert int(receipt["status"], 16) == 1
    (allowance,) = call_function(
        rpc,
        sandbox["addresses"]["Ocean"],
        abi.ERC20_ALLOWANCE,
        (sandbox["other"]["address"], sandbox["assets"]["dataset"]["datatoken"]),
        ["uint256"],
    )
    assert allowance == 123


def test_a_revert_is_a_clear_error_with_its_reason(rpc: JsonRpcClient, sandbox: dict) -> None:
    poor = Account.create()
    funder = TransactionSender(rpc, sandbox["other"]["key"])
    funder.transact(poor.address, b"", value=10**18, gas=21_000, what="fund")
    sender = TransactionSender(rpc, "0x" + bytes(poor.key).hex())
    fee = (sandbox["provider_address"], "0x" + "00" * 20, 0, 27, b"\x00" * 32, b"\x00" * 32, 0, b"")
    data = abi.encode_call(
        abi.DT_START_ORDER, sandbox["engine_address"], 1, fee, ("0x" + "00" * 20,) * 2 + (0,)
    )
    with pytest.raises(TransactionRevertedError) as excinfo:
        sender.transact(sandbox["assets"]["dataset"]["datatoken"], data, gas=500_000, what="startOrder")
    assert "Not enough datatokens to start Order" in str(excinfo.value)
    assert excinfo.value.tx_hash.startswith("0x")
    assert bytes(poor.key).hex() not in str(excinfo.value)


def test_a_nonce_taken_by_another_sender_is_refetched(rpc: JsonRpcClient, sandbox: dict) -> None:
    first = TransactionSender(rpc, sandbox["other"]["key"])
    second = TransactionSender(rpc, sandbox["other"]["key"])
    first.transact(sandbox["other"]["address"], b"", gas=21_000, what="self transfer")
    # `second` never saw first's nonce; it reads the pending count and succeeds without a duplicate
    hashes = {first.send(sandbox["other"]["address"], b"", gas=21_000).tx_hash for _ in range(2)}
    hashes.add(second.transact(sandbox["other"]["address"], b"", gas=21_000)["transactionHash"])
    assert len(hashes) == 3


def test_rpc_errors() -> None:
    with pytest.raises(RpcUnavailableError):
        JsonRpcClient("http://127.0.0.1:9", timeout=2).chain_id()


def test_rpc_error_object(rpc: JsonRpcClient) -> None:
    with pytest.raises(RpcError) as excinfo:
        rpc.request("eth_noSuchMethod")
    assert excinfo.value.method == "eth_noSuchMethod"


def test_a_batch_reads_the_pending_count_once_and_uses_consecutive_nonces(
    rpc: JsonRpcClient, sandbox: dict
) -> None:
    counted = JsonRpcClient(sandbox["rpc_url"])
    methods: list[str] = []
    original = counted.request

    def request(method: str, params: list | None = None) -> object:
        methods.append(method)
        return original(method, params)

    counted.request = request  # type: ignore[method-assign]
    sender = TransactionSender(counted, sandbox["other"]["key"])
    fees = sender.fee_fields()
    with sender.batch():
        sent = [sender.send(sender.address, b"", value=i + 1, gas=21_000, fees=fees) for i in range(3)]
    nonces = [s.tx["nonce"] for s in sent]
    assert nonces == list(range(nonces[0], nonces[0] + 3))
    assert methods.count("eth_getTransactionCount") == 1
    assert methods.count("eth_gasPrice") == 1  # the fee fields read once, for the whole batch
    assert all(int(sender.wait(s)["status"], 16) == 1 for s in sent)
    # after the batch, the next send looks at the chain again (another sender may have used nonces)
    TransactionSender(rpc, sandbox["other"]["key"]).transact(sandbox["other"]["address"], b"", gas=21_000)
    after = sender.send(sender.address, b"", gas=21_000, fees=fees)
    assert after.tx["nonce"] == nonces[-1] + 2
    assert methods.count("eth_getTransactionCount") == 2
    sender.wait(after)


def test_a_batch_of_reads_on_ganache(rpc: JsonRpcClient, sandbox: dict) -> None:
    """Ganache answers JSON-RPC batches; a reverting call is that item's RpcError, the others answer."""
    data = abi.encode_call(abi.ERC20_BALANCE_OF, sandbox["consumer"]["address"])
    too_much = abi.encode_call("transfer(address,uint256)", sandbox["other"]["address"], 10**40)
    chain_id, balance, reverted = rpc.request_batch(
        [
            ("eth_chainId", []),
            (
                "eth_call",
                [{"to": sandbox["assets"]["dataset"]["datatoken"], "data": "0x" + data.hex()}, "latest"],
            ),
            (
                "eth_estimateGas",
                [
                    {
                        "from": sandbox["consumer"]["address"],
                        "to": sandbox["assets"]["dataset"]["datatoken"],
                        "data": "0x" + too_much.hex(),
                    }
                ],
            ),
        ]
    )
    assert int(chain_id, 16) == 8996
    (held,) = call_function(
        rpc,
        sandbox["assets"]["dataset"]["datatoken"],
        abi.ERC20_BALANCE_OF,
        (sandbox["consumer"]["address"],),
        ["uint256"],
    )
    assert int(balance, 16) == held
    assert isinstance(reverted, RpcError)
