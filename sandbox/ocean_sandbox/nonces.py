"""The Provider's nonce table: one text nonce per exact address string, in SQLite."""

from __future__ import annotations

import sqlite3
import threading
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


class DuplicateNonceError(Exception):
    """Raised when the stored nonce text equals the new one (the Provider's SQLite quirk)."""


class NonceStore:
    """Nonces keyed by the address string exactly as sent (checksummed and lower-case are separate).

    :param path: SQLite database file.
    """

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("CREATE TABLE IF NOT EXISTS user_nonce (address TEXT PRIMARY KEY, nonce TEXT)")

    def close(self) -> None:
        self._db.close()

    def get(self, address: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT nonce FROM user_nonce WHERE address = ?", (address,)).fetchone()
        return row[0] if row else None

    def get_or_init(self, address: str) -> str:
        """What ``GET /nonce`` does: store 1 when nothing is stored, return the stored text."""
        with self._lock:
            row = self._db.execute("SELECT nonce FROM user_nonce WHERE address = ?", (address,)).fetchone()
            if row:
                return row[0]
            self._db.execute("INSERT INTO user_nonce VALUES (?, ?)", (address, "1"))
            return "1"

    def is_stale(self, address: str, nonce: object) -> tuple[bool, str]:
        """Whether ``nonce`` is below the stored one (equal passes); returns (stale, stored text)."""
        stored = self.get(address)
        if stored is None:
            return False, "0"
        try:
            return Decimal(str(nonce)) < Decimal(stored), stored
        except InvalidOperation:
            return True, stored

    def update(self, address: str, nonce: object) -> None:
        """Store the received nonce after an operation.

        A string equal to the stored text raises :class:`DuplicateNonceError` (the Provider answers 503
        *after* the operation ran); a JSON number never compares equal to the stored text.
        """
        with self._lock:
            row = self._db.execute("SELECT nonce FROM user_nonce WHERE address = ?", (address,)).fetchone()
            if row is not None and isinstance(nonce, str) and row[0] == nonce:
                raise DuplicateNonceError(
                    "Cannot create duplicates in the database. "
                    f"Existing nonce: {row[0]} vs. new nonce: {nonce}"
                )
            value = str(nonce)
            if row is None:
                self._db.execute("INSERT INTO user_nonce VALUES (?, ?)", (address, value))
            else:
                self._db.execute("UPDATE user_nonce SET nonce = ? WHERE address = ?", (value, address))
