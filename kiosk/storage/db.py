"""The SQLite database in data_dir(): owner-only, WAL mode, explicit transactions, versioned schema.

One connection shared by the GUI and worker threads, serialised by a lock (the kiosk's load is tiny).
``secure_delete`` overwrites deleted rows, so deleting a person really removes their features.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import KioskError
from .files import PRIVATE_FILE, make_private, private_dir

log = logging.getLogger(__name__)

DB_NAME = "kiosk.sqlite3"


class StorageError(KioskError):
    """The database, a reference photo or the settings file cannot be used."""


# MIGRATIONS[n] takes the schema from version n-1 to n; append, never edit, once released.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE employees (
               id      TEXT PRIMARY KEY,
               name    TEXT NOT NULL,
               created TEXT NOT NULL)""",
        """CREATE TABLE reference_photos (
               id          INTEGER PRIMARY KEY AUTOINCREMENT,
               employee_id TEXT NOT NULL REFERENCES employees(id) ON DELETE CASCADE,
               file        TEXT NOT NULL UNIQUE,   -- name inside data_dir()/photos
               features    BLOB NOT NULL,          -- float32 little-endian
               feature_dim INTEGER NOT NULL,
               model_sha   TEXT NOT NULL,          -- weights the features were computed with
               created     TEXT NOT NULL)""",
        "CREATE INDEX reference_photos_employee ON reference_photos(employee_id)",
        """CREATE TABLE audit_log (
               id         INTEGER PRIMARY KEY AUTOINCREMENT,
               time       TEXT NOT NULL,           -- ISO 8601, UTC
               claimed_id TEXT NOT NULL,
               score      REAL,                    -- NULL when no face was compared
               verdict    TEXT NOT NULL CHECK (verdict IN ('ACCEPT', 'REJECT')),
               reason     TEXT NOT NULL)""",
        "CREATE INDEX audit_log_time ON audit_log(time)",
    ],
}
SCHEMA_VERSION = max(MIGRATIONS)


class Database:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        private_dir(self.path.parent)
        if not self.path.exists():  # create owner-only before SQLite does (its side files copy the mode)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE))
        make_private(self.path)
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA secure_delete=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path}: cannot use the database ({exc}); restore it from a backup "
                               f"or move it away to start empty") from None
        for suffix in ("-wal", "-shm"):
            make_private(f"{self.path}{suffix}")

    @property
    def schema_version(self) -> int:
        row = self.query_one("SELECT version FROM schema_version")
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        with self.transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            current = int(row[0]) if row else 0
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        if current > SCHEMA_VERSION:
            raise StorageError(f"{self.path}: made by a newer version of the kiosk (schema {current}, "
                               f"this version knows up to {SCHEMA_VERSION})")
        for version in range(current + 1, SCHEMA_VERSION + 1):
            with self.transaction() as conn:  # each step all or nothing
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute("UPDATE schema_version SET version = ?", (version,))
            log.info("database %s migrated to schema %d", self.path, version)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple | dict = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: tuple | dict = ()) -> tuple | None:
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    def checkpoint(self) -> None:
        """Fold the WAL into the main file and truncate it (after deletions: no copy left in the WAL)."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
