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

from kiosk.storage.db import Database
from kiosk.storage.migrations import LOCAL_FLEET_MIGRATIONS

FLEET_DB_NAME = "fleet.sqlite3"
_FIELDS = "entry_uuid, time, kind, claimed_id, score, verdict, detail, reason, liveness, mode"


@dataclass(frozen=True)
class OutboxEntry:
    seq: int
    entry_uuid: str
    time: str
    kind: str
    claimed_id: str
    score: float | None
    verdict: str
    detail: str
    reason: str
    liveness: float | None
    mode: str


def open_local_fleet_db(folder: Path) -> Database:
    """fleet.sqlite3 in the data folder: the outbox and the mirror's bookkeeping (its own migrations)."""
    return Database(Path(folder) / FLEET_DB_NAME, migrations=LOCAL_FLEET_MIGRATIONS)


class Outbox:
    def __init__(self, db: Database):
        self.db = db

    def append(self, time: str, kind: str, claimed_id: str, score: float | None, verdict: str, detail: str,
               reason: str, liveness: float | None, mode: str) -> str:
        """Queue one entry (committed on return); returns its UUID."""
        entry_uuid = str(uuid.uuid4())
        with self.db.transaction() as conn:
            conn.execute(f"INSERT INTO outbox ({_FIELDS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (entry_uuid, time, kind, claimed_id, score, verdict, detail, reason, liveness, mode))
        return entry_uuid

    def pending(self) -> int:
        return int(self.db.query_one("SELECT COUNT(*) FROM outbox")[0])

    def oldest(self, limit: int = 500) -> list[OutboxEntry]:
        return [OutboxEntry(*row) for row in self.db.query(f"SELECT seq, {_FIELDS} FROM outbox ORDER BY seq LIMIT ?",
                                                           (limit,))]

    def remove_upto(self, seq: int) -> None:
        """After the registry committed every entry up to ``seq``."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM outbox WHERE seq <= ?", (seq,))
