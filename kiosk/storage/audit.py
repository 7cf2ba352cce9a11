"""The audit log: one row per verification attempt (time, claimed ID, score, verdict, reason); no images."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from .db import Database
from .employees import now_iso
from .files import atomic_write_text
from .sql import LIKE_ESCAPE, like_contains


@dataclass(frozen=True)
class AuditEntry:
    id: int
    time: str
    claimed_id: str
    score: float | None
    verdict: str
    reason: str


def _csv_safe(value) -> str:
    """Neutralise spreadsheet formulas: the claimed ID is typed by anyone at the kiosk."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class AuditLog:
    def __init__(self, db: Database):
        self.db = db

    def record(self, claimed_id: str, verdict: str, reason: str, score: float | None = None,
               time: str | None = None) -> None:
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO audit_log (time, claimed_id, score, verdict, reason) VALUES (?, ?, ?, ?, ?)",
                         (time or now_iso(), claimed_id[:200], None if score is None else float(score),
                          verdict, reason))

    def entries(self, text: str = "", verdict: str | None = None, limit: int = 5000) -> list[AuditEntry]:
        """Newest first; ``text`` filters on claimed ID or reason, ``verdict`` on ACCEPT/REJECT."""
        pattern = like_contains(text)
        sql = ("SELECT id, time, claimed_id, score, verdict, reason FROM audit_log "
               f"WHERE (claimed_id LIKE ? {LIKE_ESCAPE} OR reason LIKE ? {LIKE_ESCAPE})")
        params: list = [pattern, pattern]
        if verdict:
            sql += " AND verdict = ?"
            params.append(verdict)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [AuditEntry(*row) for row in self.db.query(sql, tuple(params))]

    def export_csv(self, path: str | Path, entries: list[AuditEntry] | None = None) -> int:
        """Write entries (default: all) to a CSV file; returns the number of rows."""
        entries = self.entries(limit=10_000_000) if entries is None else entries
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["time", "claimed_id", "score", "verdict", "reason"])
        for e in entries:
            writer.writerow([e.time, _csv_safe(e.claimed_id), "" if e.score is None else f"{e.score:.4f}",
                             e.verdict, _csv_safe(e.reason)])
        atomic_write_text(path, buffer.getvalue())
        return len(entries)
