"""What the deployment test observes from outside Airflow: orders on chain, task-log lines about nonces,
the results each run wrote. Nothing here uses the code under test."""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import to_checksum_address

from tests.faults.harness import ORDER_REUSED_TOPIC, ORDER_STARTED_TOPIC, rpc_call

#: Texts of a nonce clash: the Provider's refused nonce and duplicate nonce, the chain's taken nonce.
NONCE_PATTERNS = (
    "Invalid signature expected nonce",
    "expected nonce",
    "nonce too low",
    "can't be replaced",
    "cannot be replaced",
    "Cannot create duplicates",
    "replacement transaction underpriced",
    "can never be mined",
)
_NONCE_RE = re.compile("|".join(re.escape(p) for p in NONCE_PATTERNS), re.IGNORECASE)
_ERROR_LEVELS = {"error", "critical", "fatal", "exception"}


def order_transactions(rpc_url: str, datatoken: str, payer: str, from_block: int) -> dict[str, str]:
    """``{tx hash: "started" | "reused"}`` of the orders ``payer`` made on ``datatoken`` after
    ``from_block`` (``OrderStarted`` with payer = ``payer``, ``OrderReused`` with caller = ``payer``)."""
    logs = rpc_call(
        rpc_url,
        "eth_getLogs",
        [
            {
                "fromBlock": hex(from_block + 1),
                "toBlock": "latest",
                "address": datatoken,
                "topics": [[ORDER_STARTED_TOPIC, ORDER_REUSED_TOPIC]],
            }
        ],
    )
    out: dict[str, str] = {}
    for log in logs:
        data = bytes.fromhex(log["data"][2:])
        if log["topics"][0].lower() == ORDER_STARTED_TOPIC:
            who, kind = (
                abi_decode(["address", "uint256", "uint256", "uint256", "uint256"], data)[0],
                "started",
            )
        else:
            who, kind = abi_decode(["bytes32", "address", "uint256", "uint256"], data)[1], "reused"
        if to_checksum_address(who) == to_checksum_address(payer):
            out[log["transactionHash"].lower()] = kind
    return out


@dataclass
class NonceLines:
    """Task-log lines that mention a nonce clash: ``errors`` (logged as errors or carrying an exception)
    and ``handled`` (info/warning lines of a clash the client absorbed, e.g. a re-signed request)."""

    errors: list[str] = field(default_factory=list)
    handled: list[str] = field(default_factory=list)


def _line_level(line: str) -> tuple[str, bool]:
    """(level, carries an exception) of a task-log line (JSON lines in Airflow 3; plain text otherwise)."""
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if isinstance(record, dict):
        level = str(record.get("level") or "").lower()
        return level, bool(record.get("error_detail") or record.get("exc_info") or record.get("exception"))
    match = re.search(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b", line)
    return (match.group(1).lower() if match else ""), "Traceback" in line


def _readable(line: str) -> str:
    """``time level event | exception type: message`` of a JSON task-log line (else the line)."""
    try:
        record = json.loads(line)
    except ValueError:
        return line.strip()
    if not isinstance(record, dict):
        return line.strip()
    text = f"{str(record.get('timestamp', ''))[11:23]} {record.get('level', '')} {record.get('event', '')}"
    for detail in record.get("error_detail") or []:
        if isinstance(detail, dict):
            text += f" | {detail.get('exc_type')}: {detail.get('exc_value')}"
    return text


def mined_at(rpc_url: str, tx_hash: str) -> str:
    """When a transaction was mined (UTC, from its block's timestamp), for failure messages."""
    receipt = rpc_call(rpc_url, "eth_getTransactionReceipt", [tx_hash])
    if not receipt:
        return "not mined"
    block = rpc_call(rpc_url, "eth_getBlockByNumber", [receipt["blockNumber"], False])
    stamp = datetime.datetime.fromtimestamp(int(block["timestamp"], 16), datetime.timezone.utc)
    return stamp.strftime("%H:%M:%S UTC")


def scan_nonce_lines(files: list[Path]) -> NonceLines:
    """Every line of ``files`` that mentions a nonce clash, split into errors and handled ones."""
    found = NonceLines()
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if not _NONCE_RE.search(line):
                continue
            level, has_exception = _line_level(line)
            where = f"{path.parent.parent.name}/{path.parent.name}/{path.name}: {_readable(line)[:700]}"
            (found.errors if level in _ERROR_LEVELS or has_exception else found.handled).append(where)
    return found


def result_folders(results_dir: Path, run_ids: list[str]) -> dict[str, list[str]]:
    """The files each run's ``collect_results`` wrote (``{run id: [names]}``)."""
    out: dict[str, list[str]] = {}
    for run_id in run_ids:
        folder = results_dir / run_id.replace(":", "_")
        out[run_id] = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    return out


def summary_line(figures: dict[str, Any]) -> str:
    """One line of the main figures for the terminal."""
    keys = ("runs", "succeeded", "workers_killed", "triggerer_restarts", "jobs", "orders", "wall_seconds")
    return ", ".join(f"{k}={figures.get(k)}" for k in keys)
