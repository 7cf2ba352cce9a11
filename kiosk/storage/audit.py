"""The audit log, in the kiosk's database: one row per verification decision (time, claimed ID, score,
verdict, reason) and one per admin event (time, kind, detail, reason). No images, no features: an event
names an employee by ID only.

Admin events are written with ONE call, from wherever the action happens::

    storage.audit.record_event(EVENT_THRESHOLD, "0.624 -> 0.700", reason="fewer false accepts")

Tamper evidence: every row (decisions and events) stores ``hash = MAC(previous row's hash + the row's
canonical content)``, so changing, inserting or removing a row breaks the chain at that row;
``verify_chain()`` names the first broken entry and ``kiosk audit verify`` checks it from a terminal.

The MAC is HMAC-SHA-256 under a key derived from the data key (kiosk/storage/keys.py), which lives apart
from the data folder: whoever can write the database but not read the key cannot recompute the chain after
an edit (with a plain SHA-256 chain they could, and the chain would prove nothing). Without a key
(``AuditLog(db)`` alone, as in some tests) the chain is plain SHA-256. Limits: the newest entries can be
removed from the end without a break in the chain (it has no end marker; SQLite's AUTOINCREMENT counter
catches a plain DELETE, not someone who also resets the counter); rows that existed before the chain was
introduced (schema 3) are chained as found, at the first start after the upgrade.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path

from kiosk.io.files import atomic_write_text
from kiosk.storage.db import Database, StorageError
from kiosk.storage.employees import now_iso
from kiosk.storage.sql import LIKE_ESCAPE, like_contains

log = logging.getLogger(__name__)

KIND_DECISION = "decision"  # a verification attempt's verdict (ACCEPT / REJECT)

EVENT_PIN_SET = "pin_set"
EVENT_PIN_CHANGED = "pin_changed"
EVENT_PIN_WRONG = "pin_wrong"
EVENT_LOCKOUT = "lockout"
EVENT_UNLOCK = "unlock"
EVENT_ENROL = "enrol"
EVENT_RE_ENROL = "re_enrol"
EVENT_DELETE = "delete"
EVENT_THRESHOLD = "threshold"
EVENT_LIVENESS = "liveness"
EVENT_MODE = "mode"
EVENT_EXPORT = "export"
EVENT_MODEL = "model"
EVENT_SITE = "site"  # the site calibration (kiosk.rules.site) changed: enrolments moved the site threshold
EVENT_START = "start"
EVENT_STOP = "stop"
EVENT_FACE_LOCK = "face_lock"      # an ID locked for face verification after repeated suspected photo attacks
EVENT_FACE_UNLOCK = "face_unlock"  # ... unlocked by the admin
EVENT_DOOR_FAILED = "door_failed"  # an ACCEPT's unlock not delivered within its validity (never sent later)
EVENT_DOOR_TEST = "door_test"      # Admin > Door > Test door

# every admin event kind with the words the audit page shows for it, in the order it lists them
EVENT_LABELS: dict[str, str] = {
    EVENT_PIN_SET: "PIN set",
    EVENT_PIN_CHANGED: "PIN changed",
    EVENT_PIN_WRONG: "Wrong PIN",
    EVENT_LOCKOUT: "Lockout",
    EVENT_UNLOCK: "Unlock",
    EVENT_ENROL: "Enrolment",
    EVENT_RE_ENROL: "Re-enrolment",
    EVENT_DELETE: "Deletion",
    EVENT_THRESHOLD: "Threshold change",
    EVENT_LIVENESS: "Liveness setting",
    EVENT_MODE: "Kiosk mode change",
    EVENT_EXPORT: "Export",
    EVENT_MODEL: "Model change / re-embedding",
    EVENT_SITE: "Site calibration",
    EVENT_START: "Start",
    EVENT_STOP: "Stop",
    EVENT_FACE_LOCK: "Face verification locked",
    EVENT_FACE_UNLOCK: "Face verification unlocked",
    EVENT_DOOR_FAILED: "Door unlock failed",
    EVENT_DOOR_TEST: "Door test",
}
EVENT_KINDS = tuple(EVENT_LABELS)

_TEXT_LIMIT = 500  # characters kept of a detail or reason (a claimed ID: 200)
CHAIN_START = "0" * 64  # the "previous hash" of a chain's first row: every chain's (a kiosk's, the fleet registry's)
_CHAIN_LABEL = b"siamese-kiosk audit chain/1"
CSV_HEADER = ["time", "kind", "detail", "claimed_id", "score", "verdict", "reason", "liveness", "mode"]


@dataclass(frozen=True)
class AuditEntry:
    id: int
    time: str
    claimed_id: str
    score: float | None
    verdict: str            # ACCEPT / REJECT for decisions, "" for events
    reason: str
    kind: str = KIND_DECISION
    detail: str = ""
    liveness: float | None = None  # a decision's fused P(live) (schema 4); None: liveness off or not measured
    mode: str = ""                 # a decision's kiosk mode: 'id' or 'walk-up' ('' for events and older rows)
    kiosk_id: str = ""             # the kiosk that wrote it (fleet registry only; '' in a single kiosk's store)

    @classmethod
    def from_row(cls, row: tuple) -> "AuditEntry":
        """An entry from a row read with ``columns(FIELDS)`` or ``columns(FLEET_FIELDS)``."""
        return cls(*row)

    def row(self, fleet: bool = False) -> tuple:
        """The entry as a row in chain order (FIELDS; FLEET_FIELDS with ``fleet``): what its hash covers."""
        return tuple(getattr(self, name) for name in (FLEET_FIELDS if fleet else FIELDS))

    def content(self) -> tuple:
        """The values a new entry is written with, in CONTENT_FIELDS order (its ID comes from the database)."""
        return tuple(getattr(self, name) for name in CONTENT_FIELDS)

    @property
    def is_event(self) -> bool:
        return self.kind != KIND_DECISION

    @property
    def label(self) -> str:
        """The verdict of a decision, or the name of an admin event."""
        return EVENT_LABELS.get(self.kind, self.kind) if self.is_event else self.verdict


# The audit row layout, its one definition: AuditEntry's fields, in chain order (the order ``_canonical`` hashes).
FLEET_FIELDS = tuple(f.name for f in fields(AuditEntry))  # the fleet registry's audit_log (kiosk.storage.fleet)
FIELDS = tuple(name for name in FLEET_FIELDS if name != "kiosk_id")  # a kiosk's own audit_log
CONTENT_FIELDS = FIELDS[1:]  # what a new entry is written with (a kiosk's table, the fleet's outbox)


def columns(names: tuple[str, ...]) -> str:
    """``names`` as the column list of a SELECT or INSERT."""
    return ", ".join(names)


def new_entry(kind: str, claimed_id: str, score: float | None, verdict: str, detail: str, reason: str,
              time: str | None = None, liveness: float | None = None, mode: str = "") -> AuditEntry:
    """An entry about to be written (ID 0 until the database gives it one), its numbers as floats and its time
    now unless given."""
    return AuditEntry(0, time or now_iso(), claimed_id, None if score is None else float(score), verdict, reason,
                      kind, detail, None if liveness is None else float(liveness), mode)


def with_id(entry: AuditEntry, entry_id: int, kiosk_id: str = "") -> AuditEntry:
    return replace(entry, id=entry_id, kiosk_id=kiosk_id)


@dataclass(frozen=True)
class ChainBreak:
    """The first entry whose stored hash does not check out."""

    id: int
    time: str
    kind: str
    problem: str

    def describe(self) -> str:
        return f"entry {self.id} ({', '.join(part for part in (self.time, self.kind) if part)}): {self.problem}"

    def __str__(self) -> str:
        return self.describe()


def chain_key(data_key: bytes) -> bytes:
    """The audit chain's own key, derived from the data key (never the AES key itself)."""
    return hmac.new(data_key, _CHAIN_LABEL, hashlib.sha256).digest()


def _canonical(row: tuple) -> bytes:
    """A row's content, one way only: (id, time, claimed_id, score, verdict, reason, kind, detail, liveness,
    mode[, kiosk_id]). The schema-4 fields join only when set, so rows chained before them keep their hashes; the
    registry's kiosk ID (kiosk.storage.fleet.registry) joins after them."""
    rid, time, claimed_id, score, verdict, reason, kind, detail, liveness, mode = row[:10]
    kiosk_id = row[10] if len(row) > 10 else ""  # the fleet registry's rows name their kiosk
    content = [int(rid), time, claimed_id, None if score is None else float(score), verdict, reason, kind, detail]
    if liveness is not None or mode or kiosk_id:
        content += [None if liveness is None else float(liveness), mode]
    if kiosk_id:
        content.append(kiosk_id)
    return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def entries_query(columns: str, text: str, verdict: str | None, limit: int, kind: str | None, mark: str = "?",
                  like: str = "LIKE") -> tuple[str, tuple]:
    """The one filter of the audit page, for either back end: ``mark`` is the driver's placeholder, ``like``
    the case-insensitive LIKE (SQLite's LIKE is; PostgreSQL needs ILIKE)."""
    pattern = like_contains(text)
    sql = (f"SELECT {columns} FROM audit_log WHERE (claimed_id {like} {mark} {LIKE_ESCAPE} OR reason {like} {mark} "
           f"{LIKE_ESCAPE} OR detail {like} {mark} {LIKE_ESCAPE})")
    params: list = [pattern, pattern, pattern]
    for column, value in (("verdict", verdict), ("kind", kind)):
        if value:
            sql += f" AND {column} = {mark}"
            params.append(value)
    return sql + f" ORDER BY id DESC LIMIT {mark}", (*params, limit)


_FORMULA = re.compile(r"(^|[\r\n;,\t|])\s*[=+\-@]")  # a formula at the start, or after a line break or a
#                                                        separator some spreadsheet locale splits cells on


def _csv_safe(value) -> str:
    """Neutralise spreadsheet formulas: the claimed ID is typed by anyone at the kiosk. Line breaks become
    spaces, and a text that could start a formula anywhere a spreadsheet starts a cell gets a leading '."""
    text = "" if value is None else str(value).replace("\r", " ").replace("\n", " ")
    return "'" + text if _FORMULA.search(text) or text[:1] in ("\t",) else text


class AuditLog:
    """``key``: the data key; the chain is HMAC-SHA-256 under a key derived from it (plain SHA-256 without)."""

    def __init__(self, db: Database, key: bytes | None = None):
        self.db = db
        self._mac_key = chain_key(key) if key is not None else None

    @property
    def keyed(self) -> bool:
        return self._mac_key is not None

    def _digest(self, previous: str, row: tuple) -> str:
        data = previous.encode("ascii") + b"\n" + _canonical(row)
        if self._mac_key is not None:
            return hmac.new(self._mac_key, data, hashlib.sha256).hexdigest()
        return hashlib.sha256(data).hexdigest()

    def chain_hash(self, previous: str | None, row: tuple) -> str:
        """The hash of ``row`` (chain order) after the row whose hash is ``previous`` (None: the chain's first)."""
        return self._digest(CHAIN_START if previous is None else previous, row)

    def _append(self, kind: str, claimed_id: str, score: float | None, verdict: str, detail: str, reason: str,
                time: str | None, liveness: float | None = None, mode: str = "") -> None:
        self._write(new_entry(kind, claimed_id, score, verdict, detail, reason, time, liveness, mode))

    def _write(self, entry: AuditEntry) -> None:
        with self.db.transaction() as conn:
            marks = ", ".join("?" * len(CONTENT_FIELDS))
            cursor = conn.execute(f"INSERT INTO audit_log ({columns(CONTENT_FIELDS)}) VALUES ({marks})",
                                  entry.content())
            rid = cursor.lastrowid
            row = conn.execute(f"SELECT {columns(FIELDS)} FROM audit_log WHERE id = ?", (rid,)).fetchone()
            prev = conn.execute("SELECT hash FROM audit_log WHERE id < ? ORDER BY id DESC LIMIT 1", (rid,)).fetchone()
            conn.execute("UPDATE audit_log SET hash = ? WHERE id = ?",
                         (self.chain_hash(None if prev is None else prev[0], row), rid))

    def record(self, claimed_id: str, verdict: str, reason: str, score: float | None = None,
               time: str | None = None, liveness: float | None = None, mode: str = "", detail: str = "") -> None:
        """A verification decision (ACCEPT / REJECT), with its fused P(live) and the kiosk mode when known;
        ``detail``: e.g. the closer employee of a claim refused by the insider check (an ID, never biometrics)."""
        self._append(KIND_DECISION, claimed_id[:200], score, verdict, str(detail)[:_TEXT_LIMIT], reason, time,
                     liveness, mode[:20])

    def record_event(self, kind: str, detail: str = "", reason: str = "") -> None:
        """An admin event: ``kind`` one of the EVENT_* constants, ``detail`` what changed (an employee ID, never
        biometric data; "old -> new" for a threshold), ``reason`` why. Written at once, in its own transaction,
        into the chain. ValueError for an unknown kind; StorageError if the database cannot be written."""
        if kind not in EVENT_LABELS:
            raise ValueError(f"unknown audit event kind {kind!r} (one of {', '.join(EVENT_KINDS)})")
        self._append(kind, "", None, "", str(detail)[:_TEXT_LIMIT], str(reason)[:_TEXT_LIMIT], None)
        log.info("audit: %s %s%s", kind, detail, f" ({reason})" if reason else "")

    def entries(self, text: str = "", verdict: str | None = None, limit: int = 5000,
                kind: str | None = None) -> list[AuditEntry]:
        """Newest first; ``text`` filters on claimed ID, detail or reason, ``verdict`` on ACCEPT/REJECT (decisions
        only), ``kind`` on KIND_DECISION or one EVENT_* kind (None: everything)."""
        sql, params = entries_query(columns(FIELDS), text, verdict, limit, kind)
        return [AuditEntry.from_row(row) for row in self.db.query(sql, params)]

    def count(self) -> int:
        return int(self.db.query_one("SELECT COUNT(*) FROM audit_log")[0])

    def export_csv(self, path: str | Path, entries: list[AuditEntry] | None = None) -> int:
        """Write entries (default: all, decisions and events) to a CSV file; returns the number of rows. The
        export itself is recorded as an EVENT_EXPORT."""
        entries = self.entries(limit=10_000_000) if entries is None else entries
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_HEADER)
        for e in entries:
            writer.writerow([e.time, e.kind, _csv_safe(e.detail), _csv_safe(e.claimed_id),
                             "" if e.score is None else f"{e.score:.4f}", e.verdict, _csv_safe(e.reason),
                             "" if e.liveness is None else f"{e.liveness:.4f}", e.mode])
        atomic_write_text(path, buffer.getvalue())
        self.record_event(EVENT_EXPORT, f"{len(entries)} entries to {path}")
        return len(entries)

    # -- the hash chain ------------------------------------------------------------------------------------

    def verify_chain(self, batch: int = 5000) -> ChainBreak | None:
        """None when every entry's hash checks out, else the first broken entry. StorageError when the chain is
        keyed and this log has no key to check it with."""
        mode = self._chain_mode() or ""
        if mode.startswith("hmac") and self._mac_key is None:
            raise StorageError("the audit log's chain is keyed with the data key, which is not available here: "
                               "put the key file back (KIOSK_KEY_FILE if it lives elsewhere) to check it")
        previous, last_id = CHAIN_START, 0
        while True:
            rows = self._chain_rows(last_id, batch)
            for row in rows:
                content, stored = row[:-1], row[-1]
                if stored is None:
                    return ChainBreak(row[0], row[1], row[6], "it has no chain hash (written outside the kiosk)")
                if not hmac.compare_digest(str(stored), self._digest(previous, content)):
                    gap = (f"entry {last_id + 1}" if row[0] == last_id + 2 else f"entries {last_id + 1} to {row[0] - 1}")
                    problem = ("its content or its place was changed, or the entry before it was removed"
                               if row[0] == last_id + 1 else f"{gap} before it {'was' if row[0] == last_id + 2 else 'were'} removed, or it was changed")
                    return ChainBreak(row[0], row[1], row[6], problem)
                previous, last_id = str(stored), row[0]
            if len(rows) < batch:
                break
        # the chain has no end marker, but SQLite remembers the highest ID it gave (AUTOINCREMENT): a plain
        # DELETE of the newest entries leaves that behind
        issued = self._highest_issued()
        if issued is not None and issued > last_id:
            return ChainBreak(last_id + 1, "", "missing",
                              f"entries {last_id + 1} to {issued}, the newest, were removed")
        return None

    def _chain_mode(self) -> str | None:
        return self.db.meta("audit_chain")

    def _chain_rows(self, after_id: int, batch: int) -> list[tuple]:
        """Rows after ``after_id`` in chain order: the canonical content, then the stored hash."""
        return self.db.query(f"SELECT {columns(FIELDS)}, hash FROM audit_log WHERE id > ? ORDER BY id LIMIT ?",
                             (after_id, batch))

    def _highest_issued(self) -> int | None:
        issued = self.db.query_one("SELECT seq FROM sqlite_sequence WHERE name = 'audit_log'")
        return None if issued is None else int(issued[0])

    def start_chain(self) -> int:
        """At a writable open: chain the rows that predate the chain (the schema-3 migration notes how many),
        once, and record how the chain is made. Returns how many rows were chained."""
        upto = self.db.meta("audit_unchained_upto")
        chained = 0
        if upto is not None:
            with self.db.transaction() as conn:
                rows = conn.execute(f"SELECT {columns(FIELDS)} FROM audit_log WHERE id <= ? ORDER BY id",
                                    (int(upto),)).fetchall()
                previous, updates = CHAIN_START, []
                for row in rows:
                    previous = self._digest(previous, row)
                    updates.append((previous, row[0]))
                conn.executemany("UPDATE audit_log SET hash = ? WHERE id = ?", updates)
                conn.execute("DELETE FROM meta WHERE key = 'audit_unchained_upto'")
                chained = len(updates)
            if chained:
                log.warning("audit log: %d entries written before the hash chain existed are now chained as found",
                            chained)
        mode = "hmac-sha256" if self.keyed else "sha256"
        if self.db.meta("audit_chain") != mode:
            self.db.set_meta("audit_chain", mode)
        return chained
