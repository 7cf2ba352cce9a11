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
(``AuditLog(db)`` alone, as in some tests) the chain is plain SHA-256.

The chain's end is anchored outside the database (``ChainAnchor``): a small file in the config folder, beside
the data key, that records the chain's head (last ID, last hash, number of entries), sealed with an HMAC under
another key derived from the data key, and rewritten atomically after every append. ``verify_chain()`` checks
that the database still reaches that head, so removing the newest entries (also with the AUTOINCREMENT counter
reset), deleting everything, re-creating the table or putting back an older copy of the database are reported
as breaks naming what is missing. Once the database no longer matches the anchor, the anchor is never moved
again (the break stays reported). A missing anchor is reported too, except before the store's first anchoring
(an upgrade from a version without one: anchored then, and recorded as an EVENT_AUDIT_ANCHOR). A store
without a data key (a read-only look) has no anchor.

Nothing is chained "as found" at a start, except the rows of the one upgrade that introduced the chain (schema
3): only while no row has a hash yet and the store was never anchored, and recorded as an EVENT_AUDIT_CHAINED.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
import re
import sqlite3
from dataclasses import dataclass, fields, replace
from pathlib import Path

from kiosk.io.files import PRIVATE_FILE, atomic_write_text, atomic_writer
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
EVENT_DOOR_CONFIG = "door_config"  # Admin > Door: the door's settings changed (never a secret)
EVENT_AUDIT_CHAINED = "audit_chained"  # entries from before the hash chain (schema 3) chained at the upgrade
EVENT_AUDIT_ANCHOR = "audit_anchor"    # the chain's head first kept outside the database (ChainAnchor)

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
    EVENT_DOOR_CONFIG: "Door settings",
    EVENT_AUDIT_CHAINED: "Old entries chained (upgrade)",
    EVENT_AUDIT_ANCHOR: "Audit log anchored",
}
EVENT_KINDS = tuple(EVENT_LABELS)

_TEXT_LIMIT = 500  # characters kept of a detail or reason (a claimed ID: 200)
CHAIN_START = "0" * 64  # the "previous hash" of a chain's first row: every chain's (a kiosk's, the fleet registry's)
_CHAIN_LABEL = b"siamese-kiosk audit chain/1"
_ANCHOR_LABEL = b"siamese-kiosk audit anchor/1"
ANCHOR_NAME = "audit_anchor.json"  # in the store's config folder (kiosk.storage.places)
_ANCHORED = "audit_anchor"  # meta: the store's chain has been anchored once (a missing anchor is then a break)
_UNCHAINED = "audit_unchained_upto"  # meta: written by the schema-3 migration only
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
        if not self.id:  # the anchor itself (kiosk.storage.audit.ChainAnchor), not one entry
            return self.problem
        return f"entry {self.id} ({', '.join(part for part in (self.time, self.kind) if part)}): {self.problem}"

    def __str__(self) -> str:
        return self.describe()


def chain_key(data_key: bytes) -> bytes:
    """The audit chain's own key, derived from the data key (never the AES key itself)."""
    return hmac.new(data_key, _CHAIN_LABEL, hashlib.sha256).digest()


def anchor_key(data_key: bytes) -> bytes:
    """The anchor file's MAC key, derived from the data key (apart from the chain's own key)."""
    return hmac.new(data_key, _ANCHOR_LABEL, hashlib.sha256).digest()


@dataclass(frozen=True)
class ChainHead:
    """Where a chain ends: the last entry's ID and hash, and how many entries it has (0, CHAIN_START: empty)."""

    last_id: int = 0
    last_hash: str = CHAIN_START
    count: int = 0


class AnchorError(StorageError):
    """The anchor file is damaged, or was not written under this store's data key."""


class ChainAnchor:
    """The chain's head, kept outside the database in a file sealed with a key derived from the data key:
    whoever can write the database (or the file) without the key cannot make them agree again."""

    def __init__(self, path: str | Path, data_key: bytes):
        self.path = Path(path)
        self._key = anchor_key(data_key)

    def _mac(self, body: dict) -> str:
        data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def read(self) -> ChainHead | None:
        """The anchored head; None when there is no anchor file; AnchorError when it does not check out."""
        found = self.read_all()
        return None if found is None else found[0]

    def read_all(self) -> tuple[ChainHead, ChainHead | None] | None:
        """The anchored head and the head of a restore staged by ``kiosk restore`` (None: none), or None
        when there is no anchor file; AnchorError when it does not check out."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise AnchorError(f"the audit log's anchor {self.path} cannot be read ({exc})") from None
        body: dict = {}
        try:
            data = json.loads(text)
            body = {k: data[k] for k in ("version", "last_id", "last_hash", "count")}
            if "restore" in data:
                body["restore"] = data["restore"]
            good = hmac.compare_digest(str(data["mac"]), self._mac(body))
            head = ChainHead(int(body["last_id"]), str(body["last_hash"]), int(body["count"]))
            staged = body.get("restore")
            restored = None if staged is None else ChainHead(int(staged[0]), str(staged[1]), int(staged[2]))
        except (ValueError, KeyError, TypeError, IndexError):
            good = False
        if not good or body.get("version") != 1:
            raise AnchorError(f"the audit log's anchor {self.path} was altered or is damaged (its seal under the "
                              f"data key does not check out)")
        return head, restored

    def write(self, head: ChainHead, restored: ChainHead | None = None) -> None:
        """Replace the anchor with ``head`` (and the head of a staged restore), whole or not at all."""
        body = {"version": 1, "last_id": int(head.last_id), "last_hash": str(head.last_hash), "count": int(head.count)}
        if restored is not None:
            body["restore"] = [int(restored.last_id), str(restored.last_hash), int(restored.count)]
        text = json.dumps({**body, "mac": self._mac(body)}, sort_keys=True) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(self.path, PRIVATE_FILE) as handle:
            handle.write(text.encode("utf-8"))


def anchor_restore(anchor_path: str | Path, data_key: bytes | None, database: str | Path) -> None:
    """``kiosk restore``, before it marks the staged ``database`` ready: the anchor accepts the restored log's
    head too (an admin's explicit rollback, sealed with the key); the next start keeps the one the database
    reaches and records the restore as an EVENT_AUDIT_ANCHOR. Nothing without a key or an anchor."""
    if data_key is None:
        return
    anchor = ChainAnchor(anchor_path, data_key)
    found = anchor.read_all()
    if found is None:
        return
    conn = sqlite3.connect(f"{Path(database).resolve().as_uri()}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
        count = int(conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0])
    except sqlite3.Error as exc:  # an older schema: its log is checked as it is at the next start
        log.warning("restore: the backup's audit log head cannot be read (%s); the anchor is left as it is", exc)
        return
    finally:
        conn.close()
    anchor.write(found[0], _head_of(row, count))


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


# Where a spreadsheet may start a cell inside a text: after a field separator of some locale (, ; tab |), any
# blanks and quotes between (a parser that splits on ';' reads ;"=1" as the cell =1), and before a character
# that starts a formula (OWASP, CSV injection: = + - @).
_CELL_FORMULA = re.compile(r"""(^|[,;\t|])([\s"]*)(?=[=+\-@])""")


def _csv_safe(value) -> str:
    """Neutralise spreadsheet formulas (the claimed ID is typed by anyone at the kiosk), as OWASP's rules for
    CSV injection say: every line break (CR, LF and the rest) becomes a space, so a text never starts a row;
    a cell beginning with = + - @ (after blanks or quotes), a tab or a NUL gets a leading single quote; and
    every place inside the text where a spreadsheet that splits on another separator would start a cell gets
    one before the formula's first character (``x;=1+1`` -> ``x;'=1+1``). Quoting the field (export_csv
    quotes every one) keeps it one cell for a reader that splits on commas, but not for one that splits on
    ';' (a German Excel), which meets the field's quotes half-way."""
    text = "" if value is None else " ".join(str(value).splitlines())
    if text[:1] in ("\t", "\x00"):
        text = "'" + text
    return _CELL_FORMULA.sub(lambda m: f"'{m.group(2)}" if m.start() == 0 and not m.group(1)
                             else f"{m.group(1)}{m.group(2)}'", text)


def _head_of(row: tuple | None, count: int) -> ChainHead:
    """The head at the row (id, hash), or the empty chain's (None)."""
    return ChainHead() if row is None else ChainHead(int(row[0]), str(row[1] or ""), count)


class AuditLog:
    """``key``: the data key; the chain is HMAC-SHA-256 under a key derived from it (plain SHA-256 without).
    ``anchor``: the file that anchors the chain's head outside the database (kiosk.storage.places; used only
    with a key; None: no anchor, as for a fleet kiosk's mirror)."""

    def __init__(self, db: Database, key: bytes | None = None, anchor: str | Path | None = None):
        self.db = db
        self._mac_key = chain_key(key) if key is not None else None
        self._anchor = ChainAnchor(anchor, key) if anchor is not None and key is not None else None
        self._anchor_stuck = False  # the anchor was found not to match: it is never moved again

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
        with self.db.exclusive():  # the anchor moves with the row, before any other thread appends
            with self.db.transaction() as conn:
                marks = ", ".join("?" * len(CONTENT_FIELDS))
                cursor = conn.execute(f"INSERT INTO audit_log ({columns(CONTENT_FIELDS)}) VALUES ({marks})",
                                      entry.content())
                rid = cursor.lastrowid
                row = conn.execute(f"SELECT {columns(FIELDS)} FROM audit_log WHERE id = ?", (rid,)).fetchone()
                prev = conn.execute("SELECT id, hash FROM audit_log WHERE id < ? ORDER BY id DESC LIMIT 1",
                                    (rid,)).fetchone()
                digest = self.chain_hash(None if prev is None else prev[1], row)
                conn.execute("UPDATE audit_log SET hash = ? WHERE id = ?", (digest, rid))
            if self._anchor is not None:  # after the commit: a crash in between leaves the anchor one behind
                self._advance_anchor(_head_of(prev, 0), ChainHead(rid, digest))

    # -- the anchor ----------------------------------------------------------------------------------------

    def _advance_anchor(self, previous: ChainHead, new: ChainHead) -> None:
        """Move the anchor to ``new``, appended after ``previous``, if the anchor is where this log was."""
        if self._anchor_stuck:
            return
        try:
            head = self._anchor.read()
            if head is None:
                self._stuck(f"the audit log's anchor {self._anchor.path} is missing; it is not recreated")
                return
            if (head.last_id, head.last_hash) == (previous.last_id, previous.last_hash):
                self._anchor.write(ChainHead(new.last_id, new.last_hash, head.count + 1))
            elif self._reaches(head):  # the anchor was behind (a write of it failed): catch up
                self._anchor.write(self._db_head())
            else:
                self._stuck(f"the audit log no longer reaches its anchor {self._anchor.path}")
        except AnchorError as exc:
            self._stuck(str(exc))
        except OSError as exc:  # the entry is written; the next append or start moves the anchor on
            log.error("audit log: the anchor %s could not be written (%s)", self._anchor.path, exc)

    def _stuck(self, why: str) -> None:
        self._anchor_stuck = True
        log.error("%s; the anchor is left as it is and 'kiosk audit verify' reports the break", why)

    def _reaches(self, head: ChainHead) -> bool:
        """Whether this database still holds the anchored head (the entry, its hash, every entry before it)."""
        if head.last_id == 0:
            return True
        row = self.db.query_one("SELECT hash FROM audit_log WHERE id = ?", (head.last_id,))
        if row is None or not hmac.compare_digest(str(row[0] or ""), head.last_hash):
            return False
        return int(self.db.query_one("SELECT COUNT(*) FROM audit_log WHERE id <= ?",
                                     (head.last_id,))[0]) == head.count

    def _db_head(self) -> ChainHead:
        row = self.db.query_one("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
        return _head_of(row, int(self.db.query_one("SELECT COUNT(*) FROM audit_log")[0]))

    def _start_anchor(self) -> None:
        """At a writable open: check the database against the anchor and bring the anchor up to the end of
        the log; anchor a store the first time (an upgrade), recorded as an event. Never moves an anchor
        the database does not reach, and never recreates a missing one."""
        anchor = self._anchor
        try:
            found = anchor.read_all()
        except AnchorError as exc:
            self._stuck(str(exc))
            return
        head, restored = found if found is not None else (None, None)
        try:
            if head is not None and restored is not None:  # a restore was staged: keep what the database reaches
                if not self._reaches(head) and self._reaches(restored):
                    current = self._db_head()
                    anchor.write(current)
                    self.record_event(EVENT_AUDIT_ANCHOR, f"restore: the log now ends at entry {current.last_id} "
                                      f"({current.count} entries), it ended at entry {head.last_id} ({head.count})",
                                      "a backup was restored ('kiosk restore')")
                    return
                anchor.write(head)  # the restore was not swapped in: the log is the one anchored
            if head is None:
                if self.db.meta(_ANCHORED):
                    self._stuck(f"the audit log's anchor {anchor.path} is missing; it is not recreated")
                    return
                current = self._db_head()
                anchor.write(current)
                self.db.set_meta(_ANCHORED, "1")
                if current.count:
                    self.record_event(EVENT_AUDIT_ANCHOR, f"entry {current.last_id}, {current.count} entries",
                                      "the end of the log is now kept outside the database (first anchoring)")
                return
            if not self._reaches(head):
                self._stuck(f"the audit log (now ending at entry {self._db_head().last_id}) does not reach its "
                            f"anchor {anchor.path} (entry {head.last_id}, {head.count} entries)")
                return
            if not self.db.meta(_ANCHORED):
                self.db.set_meta(_ANCHORED, "1")
            current = self._db_head()
            if current != head:  # entries committed after the anchor's last write (a crash in between)
                anchor.write(current)
        except OSError as exc:
            log.error("audit log: the anchor %s could not be written (%s)", anchor.path, exc)

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
        writer = csv.writer(buffer, quoting=csv.QUOTE_ALL)  # OWASP: every cell quoted (with _csv_safe's quotes)
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
        """None when every entry's hash checks out and the log reaches its anchored end, else the first broken
        entry (or what is missing). StorageError when the chain is keyed and this log has no key to check it
        with."""
        mode = self._chain_mode() or ""
        if mode.startswith("hmac") and self._mac_key is None:
            raise StorageError("the audit log's chain is keyed with the data key, which is not available here: "
                               "put the key file back (KIOSK_KEY_FILE if it lives elsewhere) to check it")
        anchored, anchor_problem = self._anchored_head()
        previous, last_id, upto, at_anchor = CHAIN_START, 0, 0, None
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
                if anchored is not None and last_id <= anchored.last_id:
                    upto += 1
                    if last_id == anchored.last_id:
                        at_anchor = (str(stored), row[1], row[6])
            if len(rows) < batch:
                break
        # SQLite remembers the highest ID it gave (AUTOINCREMENT): a plain DELETE of the newest entries leaves
        # that behind
        issued = self._highest_issued()
        if issued is not None and issued > last_id:
            return ChainBreak(last_id + 1, "", "missing",
                              f"entries {last_id + 1} to {issued}, the newest, were removed")
        if anchor_problem:
            return ChainBreak(0, "", "anchor", anchor_problem)
        if anchored is None or anchored.last_id == 0:
            return None
        return self._check_anchor(anchored, last_id, upto, at_anchor)

    def _anchored_head(self) -> tuple[ChainHead | None, str]:
        """The anchored head (None: no anchor to check) and what is wrong with the anchor ('': nothing)."""
        if self._anchor is None:
            return None, ""
        try:
            found = self._anchor.read_all()
        except AnchorError as exc:
            return None, str(exc)
        head, restored = found if found is not None else (None, None)
        if head is not None and restored is not None and not self._reaches(head) and self._reaches(restored):
            head = restored  # restored by 'kiosk restore', not yet started on
        if head is None and self.db.meta(_ANCHORED):
            return None, (f"the audit log's anchor {self._anchor.path}, which records where the log ends, is "
                          f"missing (deleted, or the config folder replaced): the newest entries cannot be vouched for")
        return head, ""

    @staticmethod
    def _check_anchor(anchored: ChainHead, last_id: int, upto: int, at_anchor: tuple | None) -> ChainBreak | None:
        written = f"entry {anchored.last_id} was written ({anchored.count} entries)"
        if at_anchor is None:
            if last_id < anchored.last_id:
                return ChainBreak(last_id + 1, "", "missing",
                                  f"the log ends at entry {last_id} but {written}: entries {last_id + 1} to "
                                  f"{anchored.last_id} were removed, or an older copy of the database was put back")
            return ChainBreak(anchored.last_id, "", "missing",
                              f"the log has no entry {anchored.last_id} but {written}: the log was rewritten "
                              f"(the table re-created, or an older copy of the database put back)")
        stored, time, kind = at_anchor
        if not hmac.compare_digest(stored, anchored.last_hash):
            return ChainBreak(anchored.last_id, time, kind,
                              f"it is not the entry {anchored.last_id} that was written: the log was replaced "
                              f"(the table re-created, or an older copy of the database put back)")
        if upto != anchored.count:
            return ChainBreak(anchored.last_id, time, kind,
                              f"the log holds {upto} entries up to it but {anchored.count} were written")
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
        """At a writable open: record how the chain is made, chain the rows of the schema-3 upgrade (the only
        rows ever chained as found, recorded as an event), then check the database against the anchor and
        move the anchor to the log's end. Returns how many rows were chained."""
        mode = "hmac-sha256" if self.keyed else "sha256"
        chained = self._chain_upgrade()
        if self.db.meta("audit_chain") != mode:
            self.db.set_meta("audit_chain", mode)
        if self._anchor is not None and self.db.schema_version >= 3:  # before 3 (an older kiosk's): no chain
            self._start_anchor()
        if chained:
            self.record_event(EVENT_AUDIT_CHAINED, f"entries 1 to {chained}",
                              "written before the hash chain existed; chained as found at the upgrade")
        return chained

    def _chain_upgrade(self) -> int:
        """Chain the rows the schema-3 migration left unchained, only while the chain has never started (no row
        has a hash, the store was never anchored); anything else is refused and left as found."""
        upto = self.db.meta(_UNCHAINED)
        if upto is None:
            return 0
        hashed = int(self.db.query_one("SELECT COUNT(*) FROM audit_log WHERE hash IS NOT NULL")[0])
        anchored = self._anchor is not None and (self._anchor.path.exists() or self.db.meta(_ANCHORED))
        if hashed or anchored:
            log.error("audit log: %r is set but the chain has already started; nothing is chained as found "
                      "('kiosk audit verify' names what does not check out)", _UNCHAINED)
            return 0
        with self.db.transaction() as conn:
            rows = conn.execute(f"SELECT {columns(FIELDS)} FROM audit_log WHERE id <= ? ORDER BY id",
                                (int(upto),)).fetchall()
            previous, updates = CHAIN_START, []
            for row in rows:
                previous = self._digest(previous, row)
                updates.append((previous, row[0]))
            conn.executemany("UPDATE audit_log SET hash = ? WHERE id = ?", updates)
            conn.execute("DELETE FROM meta WHERE key = ?", (_UNCHAINED,))
        if updates:
            log.warning("audit log: %d entries written before the hash chain existed are now chained as found "
                        "(the upgrade to schema 3)", len(updates))
        return len(updates)
