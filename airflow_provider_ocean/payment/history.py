"""Orders a wallet paid recently, read from the chain's ``OrderStarted`` events (Provider v4 recovery).

A retry whose record of what it paid was lost (a crash between paying and recording) offers these orders
to ``initializeCompute``, which decides whether each is still valid: nothing is trusted from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_ocean.chain.abi import ORDER_STARTED, PROVIDER_FEE, decode_events
from airflow_provider_ocean.payment.errors import chain_errors

if TYPE_CHECKING:
    from airflow_provider_ocean.chain.rpc import JsonRpcClient
    from airflow_provider_ocean.records import Orderable


def recent_orders(
    rpc: JsonRpcClient, orderables: list[Orderable], *, consumer: str, payer: str, lookback_blocks: int
) -> tuple[list[str | None], int | None]:
    """The newest order of each input paid by ``payer`` for ``consumer``, and what their fees cover.

    For each input: the newest ``OrderStarted`` event of its datatoken in the last ``lookback_blocks``
    blocks whose consumer is ``consumer``, whose payer is ``payer`` and whose service index is the input's.

    :param rpc: the chain client.
    :param orderables: the inputs (datatoken and service index).
    :param consumer: the orders' consumer (the environment's address).
    :param payer: the wallet that paid.
    :param lookback_blocks: how far back to look (RPC nodes often cap ``eth_getLogs`` ranges).
    :return: ``(order tx or None per input, the earliest provider-fee validUntil among them or None)``.
    :raises OceanConnectionError: the chain could not be read.
    """
    with chain_errors("Looking for this wallet's recent orders", plain=True):
        latest = rpc.block_number()
        consumer_topic = "0x" + consumer.lower().removeprefix("0x").rjust(64, "0")
        found: list[str | None] = []
        for orderable in orderables:
            logs = rpc.get_logs(
                {
                    "address": orderable.datatoken,
                    "fromBlock": hex(max(0, latest - lookback_blocks)),
                    "toBlock": "latest",
                    "topics": [ORDER_STARTED.topic0, consumer_topic],
                }
            )
            newest = None
            for entry in logs:  # in chain order: the last match is the newest
                event = ORDER_STARTED.decode_log(entry)
                if (
                    event is not None
                    and str(event["payer"]).lower() == payer.lower()
                    and int(event["serviceIndex"]) == orderable.service_index
                ):
                    newest = entry.get("transactionHash")
            found.append(newest)
        # What the orders' provider fees cover: asking for no more lets still-valid orders need no tx.
        covered: list[int] = []
        for tx in filter(None, found):
            receipt = rpc.get_transaction_receipt(tx) or {}
            covered += [int(fee["validUntil"]) for fee in decode_events(PROVIDER_FEE, receipt)]
    return found, (min(covered) if covered else None)
