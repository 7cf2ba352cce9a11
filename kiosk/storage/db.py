"""The SQLite database in data_dir(): owner-only, WAL mode, explicit transactions, versioned schema.

Each thread gets its own connection, opened on its first use with the same pragmas, so a slow query on one
thread never waits behind another thread's; changes (transactions, checkpoints, backups) are serialised in
the process by one lock, as SQLite serialises writers anyway. ``close()`` closes every connection.
``secure_delete`` overwrites deleted rows, so deleting a person really removes their features.
Every ``sqlite3`` error leaves this module as a StorageError (StoreDamagedError when the file is damaged),
so callers catch one kind of error and the person reading it learns what to do.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Callable, Iterator

from kiosk.errors import KioskError
from kiosk.io.files import PRIVATE_FILE, make_private, private_dir
from kiosk.storage.migrations import STORE_MIGRATIONS

log = logging.getLogger(__name__)

DB_NAME = "kiosk.sqlite3"


class StorageError(KioskError):
    """The database, a reference photo or the settings file cannot be used."""


class StoreDamagedError(StorageError):
    """The database file is damaged (its structure does not check out); restore a backup."""


RESTORE_ADVICE = ("restore a backup ('kiosk restore BACKUP_FOLDER'), or move the data folder away to start "
                  "empty")


def _is_damage(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.DatabaseError) and ("malformed" in text or "not a database" in text
                                                       or "corrupt" in text)


# MIGRATIONS[n] takes the schema from version n-1 to n (kiosk/storage/migrations.py, with the registry's)
MIGRATIONS = STORE_MIGRATIONS
SCHEMA_VERSION = max(MIGRATIONS)


def run_migrations(transaction: Callable[[], AbstractContextManager], steps: dict[int, list[str]], target: int,
                   where: str, mark: str = "?", lock: str | None = None, kind: str = "database",
                   label: str = "schema") -> int:
    """The one migration runner, for every back end (this module's SQLite databases, the fleet registry in
    PostgreSQL): bring the schema recorded in ``schema_version`` up to ``target``, each step ``steps[n]`` (n-1
    to n) in its own transaction, all or nothing. StorageError for a schema newer than ``target``.

    ``transaction()`` opens one transaction and yields what runs statements (``execute(sql, params)``);
    ``mark`` is the driver's placeholder; ``lock``, a statement run first (one migrator at a time); ``where``,
    ``kind`` and ``label`` name the database in messages. Returns the version it started from."""
    with transaction() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        if lock:
            conn.execute(lock)
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        current = int(row[0]) if row else 0
        if row is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (0)")
    if current > target:
        raise StorageError(f"{where}: made by a newer version of the kiosk ({label} {current}, this version knows "
                           f"up to {target})")
    for version in range(current + 1, target + 1):
        with transaction() as conn:  # each step all or nothing
            for statement in steps[version]:
                conn.execute(statement)
            conn.execute(f"UPDATE schema_version SET version = {mark}", (version,))
        log.info("%s %s migrated to schema %d", kind, where, version)
    return current


class Database:
    """``migrate=False`` leaves the schema as it is (the store checks the file first, then migrates);
    ``readonly`` opens an existing database for reading only (no schema change, no file created)."""

    def __init__(self, path: str | Path, migrate: bool = True, readonly: bool = False,
                 migrations: dict[int, list[str]] | None = None):
        self.path = Path(path)
        self._migrations = migrations  # None: the kiosk store's (MIGRATIONS, up to SCHEMA_VERSION)
        self.readonly = readonly
        self._lock = threading.RLock()  # held by every change: one writer at a time in this process
        self._conns: dict[int, sqlite3.Connection] = {}  # thread ident -> that thread's connection
        self._conns_guard = threading.Lock()
        self._closed = False
        if readonly:
            if not self.path.is_file():
                raise StorageError(f"{self.path}: there is no kiosk database here")
        else:
            private_dir(self.path.parent)
            if not self.path.exists():  # create owner-only before SQLite does (its side files copy the mode)
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE))
            make_private(self.path)
        try:
            conn = self._conns[threading.get_ident()] = self._open_connection()
            if not readonly:
                conn.execute("PRAGMA journal_mode=WAL")  # persistent in the file: every connection uses it
            if migrate and not readonly:
                self.migrate()
        except (sqlite3.DatabaseError, StorageError) as exc:
            self.close()
            if isinstance(exc, StorageError):
                raise
            raise StoreDamagedError(f"{self.path}: cannot use the database ({exc}); {RESTORE_ADVICE}") from None
        if not readonly:
            for suffix in ("-wal", "-shm"):
                make_private(f"{self.path}{suffix}")

    def _open_connection(self) -> sqlite3.Connection:
        # check_same_thread=False only so that close() may close every thread's connection
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        try:
            if self.readonly:
                conn.execute("PRAGMA query_only=ON")
            else:
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute("PRAGMA secure_delete=ON")
        except BaseException:
            conn.close()
            raise
        return conn

    @property
    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use (StorageError once the database is closed)."""
        ident = threading.get_ident()
        with self._conns_guard:
            if self._closed:
                raise StorageError(f"{self.path}: the database is closed")
            conn = self._conns.get(ident)
        if conn is not None:
            return conn
        try:
            conn = self._open_connection()
        except sqlite3.Error as exc:
            raise self._error(exc, "opening it") from exc
        with self._conns_guard:
            if self._closed:
                conn.close()
                raise StorageError(f"{self.path}: the database is closed")
            self._conns[ident] = conn
        return conn

    @property
    def connections(self) -> int:
        """How many connections are open (one per thread that has used the database)."""
        with self._conns_guard:
            return len(self._conns)

    def _error(self, exc: sqlite3.Error, action: str) -> StorageError:
        if _is_damage(exc):
            return StoreDamagedError(f"{self.path}: the database is damaged ({exc}) while {action}; "
                                     f"{RESTORE_ADVICE}")
        return StorageError(f"{self.path}: the database failed while {action} ({exc})")

    @property
    def schema_version(self) -> int:
        row = self.query_one("SELECT version FROM schema_version")
        return int(row[0]) if row else 0

    def quick_check(self) -> list[str]:
        """SQLite's ``PRAGMA quick_check``: [] when the file's structure is sound, else what is wrong."""
        conn = self._conn
        try:
            rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check(20)").fetchall()]
        except sqlite3.DatabaseError as exc:
            return [str(exc)]
        if rows == ["ok"]:
            return []
        return [line.strip() for row in rows for line in row.splitlines()
                if line.strip() and not line.startswith("***")]  # "*** in database main ***" names no problem

    def migrate(self) -> None:
        if self.readonly:
            raise StorageError(f"{self.path}: opened read-only, not migrated")
        steps = MIGRATIONS if self._migrations is None else self._migrations
        target = SCHEMA_VERSION if self._migrations is None else max(steps)
        run_migrations(self.transaction, steps, target, str(self.path))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception; sqlite3 errors become StorageError."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error(exc, "starting a change") from exc
            try:
                yield conn
            except BaseException as exc:
                self._rollback(conn)
                if isinstance(exc, sqlite3.Error):
                    raise self._error(exc, "changing it") from exc
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(conn)
                raise self._error(exc, "saving a change") from exc

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:  # SQLite may have rolled back already (I/O error, full disk, damage)
            pass

    def query(self, sql: str, params: tuple | dict = ()) -> list[tuple]:
        conn = self._conn
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc, "reading it") from exc

    def query_one(self, sql: str, params: tuple | dict = ()) -> tuple | None:
        conn = self._conn
        try:
            return conn.execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc, "reading it") from exc

    def meta(self, key: str) -> str | None:
        row = self.query_one("SELECT value FROM meta WHERE key = ?", (key,))
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                         "value = excluded.value", (key, value))

    def checkpoint(self) -> None:
        """Fold the WAL into the main file and truncate it (after deletions: no copy left in the WAL)."""
        with self._lock:
            try:  # waits (busy timeout) for other connections' reads to finish
                row = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as exc:
                raise self._error(exc, "folding in its log") from exc
            if row and row[0]:
                log.warning("%s: the log could not be folded in completely (still in use)", self.path)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """No other thread of this process changes the database meanwhile (with the writer lock, which keeps
        other processes out: a consistent moment for a backup)."""
        with self._lock:
            self._conn  # noqa: B018 -- StorageError when closed
            yield

    def backup_to(self, target: str | Path) -> None:
        """A consistent copy of the whole database into a new file, with SQLite's online backup API."""
        with self._lock:
            conn = self._conn
            try:
                copy = sqlite3.connect(target)
                try:
                    conn.backup(copy)
                    copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                finally:
                    copy.close()
            except sqlite3.Error as exc:
                raise self._error(exc, "copying it") from exc

    def close(self) -> None:
        """Close every thread's connection; any later use raises StorageError."""
        with self._lock, self._conns_guard:
            self._closed = True
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error as exc:  # pragma: no cover - closing never loses committed data
                log.warning("%s: closing a connection failed: %s", self.path, exc)
