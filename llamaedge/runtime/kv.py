"""The key-value store apps get through the `llamaedge_kv` import, after Spin's key-value
factor: one SQLite file under the data directory (`LLAMAEDGE_HOME`), a namespace per app
(an app sees only its own keys), and a quota per app on the bytes of its keys and values.

    KeyValueStore   the SQLite file; get / set / delete / used_bytes within a namespace
    QuotaExceeded   a set that would take a namespace over its quota (nothing is written)

Host functions (imports.py) translate the ABI and check the run's grant, then call this.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from llamaedge.settings import data_dir


class QuotaExceeded(Exception):
    """A set would take the namespace over its quota."""


def default_path() -> Path:
    return data_dir() / "kv.sqlite3"


class KeyValueStore:
    """Namespaced keys and values in one SQLite file, safe to share between threads (one
    connection behind a lock: each operation is one short transaction)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS kv (namespace TEXT NOT NULL, key TEXT NOT NULL, "
                         "value BLOB NOT NULL, PRIMARY KEY (namespace, key)) WITHOUT ROWID")

    def get(self, namespace: str, key: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key)).fetchone()
        return bytes(row[0]) if row else None

    def used_bytes(self, namespace: str) -> int:
        """What the namespace's keys and values take, as the quota counts it."""
        with self._lock:
            return self._used(namespace)

    def _used(self, namespace: str) -> int:
        row = self._db.execute("SELECT COALESCE(SUM(LENGTH(CAST(key AS BLOB)) + LENGTH(value)), 0) FROM kv "
                               "WHERE namespace = ?", (namespace,)).fetchone()
        return int(row[0])

    def set(self, namespace: str, key: str, value: bytes, quota_bytes: int) -> None:
        """Set `key` to `value`; QuotaExceeded (and nothing written) when the namespace would
        then hold more than `quota_bytes`."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                old = self._db.execute("SELECT LENGTH(CAST(key AS BLOB)) + LENGTH(value) FROM kv "
                                       "WHERE namespace = ? AND key = ?", (namespace, key)).fetchone()
                after = self._used(namespace) - (int(old[0]) if old else 0) + len(key.encode()) + len(value)
                if after > quota_bytes:
                    raise QuotaExceeded(f"{after} bytes would exceed the quota of {quota_bytes}")
                self._db.execute("INSERT OR REPLACE INTO kv (namespace, key, value) VALUES (?, ?, ?)",
                                 (namespace, key, value))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def delete(self, namespace: str, key: str) -> bool:
        """Delete `key`; False when there was none."""
        with self._lock:
            return self._db.execute("DELETE FROM kv WHERE namespace = ? AND key = ?", (namespace, key)).rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._db.close()
