"""Persistence: an SQLite file of JSON records when given a directory, nothing otherwise."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

JSON = dict[str, Any]


class Store:
    """Keeps nothing: the in-memory server's storage."""

    def put(self, kind: str, key: str, record: JSON) -> None:
        """Save or replace a record."""

    def delete(self, kind: str, key: str) -> None:
        """Forget a record."""

    def load(self, kind: str) -> list[JSON]:
        """Every record of a kind, in key order."""
        return []

    def close(self) -> None:
        """Release resources."""


class SqliteStore(Store):
    """Records in `<data_dir>/qstash_dev.sqlite3`, one row per object, written as they change."""

    def __init__(self, data_dir: str | Path) -> None:
        """Open (or create) the database file."""
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            path / "qstash_dev.sqlite3", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS records "
            "(kind TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (kind, key))"
        )

    def put(self, kind: str, key: str, record: JSON) -> None:
        """Save or replace a record."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO records (kind, key, data) VALUES (?, ?, ?)",
                (kind, key, json.dumps(record)),
            )

    def delete(self, kind: str, key: str) -> None:
        """Forget a record."""
        with self._lock:
            self._db.execute("DELETE FROM records WHERE kind = ? AND key = ?", (kind, key))

    def load(self, kind: str) -> list[JSON]:
        """Every record of a kind, in key order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM records WHERE kind = ? ORDER BY key", (kind,)
            ).fetchall()
        return [json.loads(row[0]) for row in rows]

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
