"""The one translation of chain errors into Ocean errors (``airflow_provider_ocean.payment.errors``).

Every chain error is the one the real chain client raises: from a JSON-RPC node stub on 127.0.0.1 that
answers scripted results and error objects (a reverted receipt, a missing receipt, an error object), or
from a closed port.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from eth_abi import encode
from eth_account import Account

from airflow_provider_ocean.chain.errors import (
    ChainError,
    ReceiptTimeoutError,
    RpcError,
    RpcUnavailableError,
    TransactionRevertedError,
)
from airflow_provider_ocean.chain.rpc import JsonRpcClient
from airflow_provider_ocean.chain.tx import SentTransaction, TransactionSender, contract_address_of
from airflow_provider_ocean.exceptions import OceanConnectionError, OceanPaymentError
from airflow_provider_ocean.payment.errors import (
    MAY_STILL_BE_MINED,
    NO_GAS_FUNDS,
    chain_errors,
    translate,
)
from airflow_provider_ocean.payment.escrow import EscrowPayer
from airflow_provider_ocean.payment.orders import OrderPayer, PaymentPlan
from tests.payment.fakes import DT1, OCEAN, PAYER, FakeChain

TX = "0x" + "ab" * 32
WHAT = "startOrder on 0xD1 for did:op:1"
PAID = [("did:op:1", "0x" + "01" * 32), ("did:op:2", "0x" + "02" * 32)]
ALREADY = (
    " Orders already sent (reuse them as transfer tx ids): "
    f"did:op:1={'0x' + '01' * 32}, did:op:2={'0x' + '02' * 32}"
)
NO_FUNDS = "insufficient funds for gas * price + value"


class _Node(BaseHTTPRequestHandler):
    """Answers each JSON-RPC method from the server's ``answers`` (``{"result": …}`` or ``{"error": …}``)."""

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = self.server.answers.get(request["method"], {"error": {"code": -32601, "message": "no"}})
        body = json.dumps({"jsonrpc": "2.0", "id": request["id"], **answer}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        return None


@pytest.fixture
def node() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Node)
    server.answers = {}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def client(server: ThreadingHTTPServer) -> JsonRpcClient:
    return JsonRpcClient(f"http://127.0.0.1:{server.server_address[1]}", timeout=5, retries=1)


def closed_port_client() -> JsonRpcClient:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return JsonRpcClient(f"http://127.0.0.1:{port}", timeout=2, retries=1)


def raised(call: Callable[[], Any]) -> ChainError:
    with pytest.raises(ChainError) as info:
        call()
    return info.value


def sender(rpc: JsonRpcClient, **kwargs: Any) -> TransactionSender:
    return TransactionSender(rpc, "0x" + bytes(Account.create().key).hex(), lock_dir=None, **kwargs)


def sent_order() -> SentTransaction:
    return SentTransaction(TX, {"from": PAYER, "to": DT1, "data": b"\x01", "value": 0, "gas": 100_000}, WHAT)


def reverted(node: ThreadingHTTPServer, reason: str | None) -> TransactionRevertedError:
    """A mined receipt with status 0, the reason replayed by ``eth_call`` (or not)."""
    node.answers["eth_getTransactionReceipt"] = {
        "result": {"status": "0x0", "transactionHash": TX, "blockNumber": "0x5", "logs": []}
    }
    if reason:  # the replay reverts with the reason
        data = "0x08c379a0" + encode(["string"], [reason]).hex()
        node.answers["eth_call"] = {"error": {"code": 3, "message": "execution reverted", "data": data}}
    else:  # the replay no longer reverts (the state moved on): no reason known
        node.answers["eth_call"] = {"result": "0x"}
    error = raised(lambda: sender(client(node)).wait(sent_order()))
    assert isinstance(error, TransactionRevertedError)
    return error


def timed_out(node: ThreadingHTTPServer) -> ReceiptTimeoutError:
    node.answers["eth_getTransactionReceipt"] = {"result": None}
    error = raised(lambda: sender(client(node), receipt_timeout=0.3).wait(sent_order()))
    assert isinstance(error, ReceiptTimeoutError)
    return error


def rpc_error(node: ThreadingHTTPServer, message: str) -> RpcError:
    node.answers["eth_sendRawTransaction"] = {"error": {"code": -32000, "message": message}}
    error = raised(lambda: client(node).send_raw_transaction(b"\x02"))
    assert isinstance(error, RpcError)
    return error


def unreachable() -> RpcUnavailableError:
    error = raised(lambda: closed_port_client().chain_id())
    assert isinstance(error, RpcUnavailableError)
    return error


def other_chain_error() -> ChainError:
    error = raised(lambda: contract_address_of({"transactionHash": TX}))
    assert type(error) is ChainError
    return error


def through(manager: Any, error: BaseException) -> BaseException:
    """What the block raises when ``error`` is raised inside it."""
    with pytest.raises(BaseException) as info, manager:
        raise error
    return info.value


# -- the order payer's wording (default) -------------------------------------------------------------
class TestOrderWording:
    def test_revert_names_the_reason_and_the_tx_and_counts_as_spent(self, node):
        error = translate(reverted(node, "Invalid provider fee"), WHAT)
        assert type(error) is OceanPaymentError
        assert str(error) == f"{WHAT} reverted: Invalid provider fee (tx {TX})."
        assert (error.tx_hash, error.spent, error.hint) == (TX, True, None)

    def test_revert_without_a_reason(self, node):
        error = translate(reverted(node, None), WHAT)
        assert str(error) == f"{WHAT} reverted: no reason (tx {TX})."

    def test_revert_lists_the_orders_already_sent(self, node):
        error = translate(reverted(node, "Invalid provider fee"), WHAT, paid=PAID)
        assert str(error) == f"{WHAT} reverted: Invalid provider fee (tx {TX}).{ALREADY}"

    def test_receipt_timeout_may_still_be_mined(self, node):
        error = translate(timed_out(node), WHAT, paid=PAID)
        assert type(error) is OceanPaymentError
        assert error.message == f"{WHAT}: transaction {TX} was not mined within 0 s.{ALREADY}"
        assert (error.tx_hash, error.spent, error.hint) == (TX, True, MAY_STILL_BE_MINED)
        assert str(error).endswith(f" Hint: {MAY_STILL_BE_MINED}")

    def test_unreachable_node_is_a_connection_error(self):
        chain_error = unreachable()
        error = translate(chain_error, WHAT)
        assert type(error) is OceanConnectionError
        assert str(error) == f"{WHAT}: {chain_error}."
        assert "unreachable for eth_chainId" in str(error)
        assert str(translate(chain_error, WHAT, paid=PAID)) == f"{WHAT}: {chain_error}.{ALREADY}"

    def test_node_error_uses_the_node_message(self, node):
        error = translate(rpc_error(node, "nonce too low"), WHAT)
        assert type(error) is OceanPaymentError
        assert str(error) == f"{WHAT} failed: nonce too low."
        assert (error.tx_hash, error.spent, error.hint) == (None, False, None)

    def test_missing_gas_funds_get_a_hint_and_sent_orders_count_as_spent(self, node):
        error = translate(rpc_error(node, NO_FUNDS), WHAT, paid=PAID)
        assert error.message == f"{WHAT} failed: {NO_FUNDS}.{ALREADY}"
        assert (error.spent, error.hint) == (True, NO_GAS_FUNDS)

    def test_other_chain_errors(self):
        chain_error = other_chain_error()
        error = translate(chain_error, WHAT)
        assert type(error) is OceanPaymentError
        assert str(error) == f"{WHAT} failed: {chain_error}."
        assert error.spent is False


# -- the Escrow calls' wording (plain=True) -----------------------------------------------------------
class TestPlainWording:
    @pytest.mark.parametrize("spent", [False, True])
    def test_revert_reports_spent_as_given(self, node, spent):
        chain_error = reverted(node, "Invalid provider fee")
        error = translate(chain_error, "deposit into the Escrow", spent=spent, plain=True)
        assert type(error) is OceanPaymentError
        assert str(error) == f"deposit into the Escrow: {WHAT} {TX} reverted: Invalid provider fee"
        assert (error.tx_hash, error.spent, error.hint) == (TX, spent, None)

    def test_receipt_timeout(self, node):
        error = translate(timed_out(node), "deposit into the Escrow", spent=True, plain=True)
        assert type(error) is OceanPaymentError
        assert str(error) == f"deposit into the Escrow: transaction {TX} was not mined within 0 s"
        assert (error.tx_hash, error.spent, error.hint) == (None, True, None)

    def test_unreachable_node_is_a_connection_error(self):
        chain_error = unreachable()
        error = translate(chain_error, "read gas price and balance", plain=True)
        assert type(error) is OceanConnectionError
        assert str(error) == f"read gas price and balance: {chain_error}"

    @pytest.mark.parametrize("spent", [False, True])
    def test_node_and_other_errors(self, node, spent):
        chain_error = rpc_error(node, NO_FUNDS)
        error = translate(chain_error, "approve the Escrow contract", spent=spent, plain=True)
        assert type(error) is OceanPaymentError
        assert (
            str(error)
            == f"approve the Escrow contract: eth_sendRawTransaction failed: {NO_FUNDS} (code -32000)"
        )
        assert (error.tx_hash, error.spent, error.hint) == (None, spent, None)
        other = translate(other_chain_error(), "withdraw from the Escrow", plain=True)
        assert str(other) == f"withdraw from the Escrow: receipt {TX} created no contract"

    def test_orders_already_sent_are_named_here_too(self):
        error = translate(other_chain_error(), "x", plain=True, paid=PAID)
        assert str(error) == f"x: receipt {TX} created no contract.{ALREADY}"
        assert error.spent is True


# -- the context manager -----------------------------------------------------------------------------
class TestChainErrors:
    def test_raises_the_translation_without_chaining(self, node):
        chain_error = rpc_error(node, "nonce too low")
        error = through(chain_errors(WHAT, paid=PAID), chain_error)
        assert str(error) == str(translate(chain_error, WHAT, paid=PAID))
        assert error.__cause__ is None
        assert error.__suppress_context__

    def test_other_exceptions_pass_through(self):
        original = ValueError("not a chain error")
        assert through(chain_errors(WHAT), original) is original
        ocean = OceanPaymentError("already translated")
        assert through(chain_errors(WHAT, plain=True), ocean) is ocean

    def test_a_value_returned_in_the_block(self):
        def read() -> int:
            with chain_errors(WHAT):
                return 7

        assert read() == 7


# -- the payers use it -------------------------------------------------------------------------------
class TestPayers:
    def test_order_payer_read(self):
        rpc = closed_port_client()
        with pytest.raises(
            OceanConnectionError, match=f"^balanceOf on {OCEAN}: RPC .* unreachable for eth_call"
        ):
            OrderPayer(rpc, FakeChain()).balance_of(OCEAN, PAYER)  # type: ignore[arg-type]

    def test_order_payer_batch_that_cannot_read_the_chain_id(self):
        rpc = closed_port_client()
        plan = PaymentPlan(orders=[], approvals=[(OCEAN, DT1, 1)])
        with pytest.raises(OceanConnectionError, match="^approve the fee tokens: RPC .* for eth_chainId"):
            OrderPayer(rpc, sender(rpc)).execute(plan)

    def test_escrow_payer_read(self):
        rpc = closed_port_client()
        payer = EscrowPayer(rpc, "0x" + "e5" * 20)
        with pytest.raises(OceanConnectionError, match=r"^eth_call getUserFunds\(address,address\): RPC .*"):
            payer.funds(PAYER, OCEAN)
