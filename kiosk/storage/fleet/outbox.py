"""A fleet kiosk's audit outbox: entries are written here first (local SQLite, synchronous=FULL, so a
kill -9 loses nothing committed), then moved to the registry in order, exactly once.

Each entry gets a UUID when it happens. Draining writes a batch to the registry in one transaction
(kiosk.storage.fleet.registry skips UUIDs it already holds), commits, and only then deletes the batch here:
a crash between the two leaves entries that the next drain finds already written and skips, so none is
written twice and none is lost.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from kiosk.storage.audit import CONTENT_FIELDS, AuditEntry, columns
from kiosk.storage.db import Database
from kiosk.storage.migrations import LOCAL_FLEET_MIGRATIONS

FLEET_DB_NAME = "fleet.sqlite3"
_FIELDS = ("entry_uuid", *CONTENT_FIELDS)  # the outbox's columns: the entry's UUID, then the audit row layout's


@dataclass(frozen=True)
class OutboxEntry:
    seq: int
    entry_uuid: str
    entry: AuditEntry  # its content (ID 0: the registry gives it one)


def open_local_fleet_db(folder: Path) -> Database:
    """fleet.sqlite3 in the data folder: the outbox and the mirror's bookkeeping (its own migrations)."""
    return Database(Path(folder) / FLEET_DB_NAME, migrations=LOCAL_FLEET_MIGRATIONS)


class Outbox:
    def __init__(self, db: Database):
        self.db = db

    def append(self, entry: AuditEntry) -> str:
        """Queue one entry (kiosk.storage.audit.new_entry; committed on return); returns its UUID."""
        entry_uuid = str(uuid.uuid4())
        with self.db.transaction() as conn:
            conn.execute(f"INSERT INTO outbox ({columns(_FIELDS)}) VALUES ({', '.join('?' * len(_FIELDS))})",
                         (entry_uuid, *entry.content()))
        return entry_uuid

    def pending(self) -> int:
        return int(self.db.query_one("SELECT COUNT(*) FROM outbox")[0])

    def oldest(self, limit: int = 500) -> list[OutboxEntry]:
        rows = self.db.query(f"SELECT seq, {columns(_FIELDS)} FROM outbox ORDER BY seq LIMIT ?", (limit,))
        return [OutboxEntry(seq, entry_uuid, AuditEntry.from_row((0, *content))) for seq, entry_uuid, *content in rows]

    def remove_upto(self, seq: int) -> None:
        """After the registry committed every entry up to ``seq``."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM outbox WHERE seq <= ?", (seq,))
