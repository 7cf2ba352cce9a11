"""Issue 13 item 2: admin events in the audit log beside the decisions, a hash chain over every entry that
`verify_chain()`, `kiosk audit verify` and the audit page check, the schema-3 migration, the CSV export."""

from __future__ import annotations

import csv
import sqlite3
from datetime import datetime

import pytest

from kiosk import cli
from kiosk.app import Admin, SettingsStore
from kiosk.storage import (
    EVENT_DELETE,
    EVENT_ENROL,
    EVENT_EXPORT,
    EVENT_KINDS,
    EVENT_LOCKOUT,
    EVENT_PIN_WRONG,
    EVENT_THRESHOLD,
    KIND_DECISION,
    AuditLog,
    Storage,
    StorageError,
)
from kiosk.storage import db as db_module
from kiosk.storage.audit import EVENT_AUDIT_ANCHOR, EVENT_AUDIT_CHAINED, _canonical
from kiosk.storage.db import DB_NAME


@pytest.fixture
def storage():
    store = Storage.open()
    yield store
    store.close()


def db_file(storage) -> str:
    return str(storage.folder / DB_NAME)


def tamper(storage, sql: str, params: tuple = ()) -> None:
    """Change the SQLite file directly, as someone with write access to the data folder would."""
    conn = sqlite3.connect(db_file(storage))
    try:
        conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def fill(storage) -> None:
    audit = storage.audit
    audit.record("E1", "ACCEPT", "face matches", 0.91)               # 1
    audit.record_event(EVENT_PIN_WRONG, reason="wrong PIN entered")  # 2
    audit.record_event(EVENT_ENROL, "E7", "new employee")            # 3
    audit.record("E7", "REJECT", "face does not match", 0.12)        # 4
    audit.record_event(EVENT_THRESHOLD, "0.624 -> 0.700", "fewer false accepts")  # 5
    audit.record_event(EVENT_DELETE, "E1", "left the company")       # 6


def run_verify(capsys) -> tuple[int, str]:
    code = cli.main(["audit", "verify"])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_events_are_recorded_with_time_kind_detail_and_reason_beside_decisions(storage):
    fill(storage)
    entries = storage.audit.entries()
    assert [e.kind for e in entries] == [EVENT_DELETE, EVENT_THRESHOLD, KIND_DECISION, EVENT_ENROL, EVENT_PIN_WRONG,
                                         KIND_DECISION]
    threshold = entries[1]
    assert (threshold.detail, threshold.reason, threshold.verdict, threshold.score) == (
        "0.624 -> 0.700", "fewer false accepts", "", None)
    assert threshold.is_event and threshold.label == "Threshold change"
    assert datetime.fromisoformat(threshold.time).utcoffset().total_seconds() == 0  # UTC
    assert [e.detail for e in storage.audit.entries(kind=EVENT_DELETE)] == ["E1"]
    assert [e.claimed_id for e in storage.audit.entries(kind=KIND_DECISION)] == ["E7", "E1"]
    assert [e.kind for e in storage.audit.entries("company")] == [EVENT_DELETE]  # text filter covers reasons
    assert [e.kind for e in storage.audit.entries("E7")] == [KIND_DECISION, EVENT_ENROL]  # ... and details
    for kind in EVENT_KINDS:  # every kind the other pages record is accepted
        storage.audit.record_event(kind, "x")
    with pytest.raises(ValueError, match="unknown audit event kind"):
        storage.audit.record_event("threshold-changed")
    assert storage.audit.verify_chain() is None
    assert storage.db.meta("audit_chain") == "hmac-sha256"


@pytest.mark.parametrize("change, broken_id, problem", [
    ("UPDATE audit_log SET detail = '0.624 -> 0.300' WHERE id = 5", 5, "changed"),   # an event's detail
    ("UPDATE audit_log SET verdict = 'ACCEPT', reason = 'face matches' WHERE id = 4", 4, "changed"),  # a decision
    ("UPDATE audit_log SET time = '2020-01-01T00:00:00+00:00' WHERE id = 2", 2, "changed"),
    ("DELETE FROM audit_log WHERE id = 3", 4, "entry 3 before it was removed"),  # the next one is named
    ("DELETE FROM audit_log WHERE id >= 5", 5, "entries 5 to 6, the newest, were removed"),
    ("DELETE FROM audit_log WHERE id <= 2", 3, "entries 1 to 2 before it were removed"),
    ("INSERT INTO audit_log (time, claimed_id, score, verdict, reason) "
     "VALUES ('2026-01-01T00:00:00+00:00', 'E9', 0.99, 'ACCEPT', 'face matches')", 7, "no chain hash"),  # added
])
def test_an_altered_row_is_detected_and_named_by_verify_chain_and_the_command(storage, capsys, change, broken_id,
                                                                            problem):
    fill(storage)
    assert storage.audit.verify_chain() is None
    code, out = run_verify(capsys)
    assert code == 0 and "intact (6 entries" in out
    tamper(storage, change)
    broken = storage.audit.verify_chain()
    assert broken is not None and broken.id == broken_id
    assert str(broken).startswith(f"entry {broken_id} (") and broken.kind in str(broken) and problem in str(broken)
    code, out = run_verify(capsys)
    assert code == 1 and f"entry {broken_id} (" in out and "altered" in out


def test_the_chain_is_keyed_a_recomputed_plain_chain_is_still_detected(storage):
    """Whoever can write the database but not read the data key cannot hide an edit by recomputing hashes."""
    fill(storage)
    tamper(storage, "UPDATE audit_log SET detail = 'E2' WHERE id = 6")
    forger = AuditLog(storage.db)  # no key: plain SHA-256, all an attacker without the key can compute
    conn = sqlite3.connect(db_file(storage))
    previous = "0" * 64
    for row in conn.execute("SELECT id, time, claimed_id, score, verdict, reason, kind, detail, liveness, mode FROM audit_log "
                            "ORDER BY id").fetchall():
        previous = forger._digest(previous, row)
        conn.execute("UPDATE audit_log SET hash = ? WHERE id = ?", (previous, row[0]))
    conn.commit()
    conn.close()
    assert storage.audit.verify_chain().id == 1  # not under the key
    with pytest.raises(StorageError, match="keyed with the data key"):  # and never checked as a plain chain
        forger.verify_chain()
    assert _canonical((1, "t", "", None, "", "", "start", "", None, "")) != _canonical(
        (1, "t", "", None, "", "", "stop", "", None, ""))


def test_migration_from_schema_2_keeps_and_chains_existing_rows(monkeypatch, capsys):
    monkeypatch.setattr(db_module, "SCHEMA_VERSION", 2)
    old = Storage.open()
    with old.db.transaction() as conn:  # a store as the previous release left it
        conn.executemany("INSERT INTO audit_log (time, claimed_id, score, verdict, reason) VALUES (?, ?, ?, ?, ?)",
                         [("2025-01-01T00:00:0%d+00:00" % i, f"E{i}", 0.5 + i / 10, "ACCEPT" if i % 2 else "REJECT",
                           "face matches" if i % 2 else "face does not match") for i in range(4)])
    columns = [row[1] for row in old.db.query("PRAGMA table_info(audit_log)")]
    assert "hash" not in columns and old.db.schema_version == 2
    old.close()
    monkeypatch.setattr(db_module, "SCHEMA_VERSION", max(db_module.MIGRATIONS))
    storage = Storage.open()
    try:
        assert storage.db.schema_version == max(db_module.MIGRATIONS)
        entries = storage.audit.entries(kind=KIND_DECISION)
        assert [(e.id, e.claimed_id, e.kind, e.verdict) for e in entries] == [
            (4, "E3", KIND_DECISION, "ACCEPT"), (3, "E2", KIND_DECISION, "REJECT"),
            (2, "E1", KIND_DECISION, "ACCEPT"), (1, "E0", KIND_DECISION, "REJECT")]
        # the upgrade's chaining and the first anchoring are themselves recorded (issue 25)
        assert [e.kind for e in storage.audit.entries()[:2]] == [EVENT_AUDIT_CHAINED, EVENT_AUDIT_ANCHOR]
        assert storage.db.query("SELECT COUNT(*) FROM audit_log WHERE hash IS NULL") == [(0,)]
        assert storage.db.meta("audit_unchained_upto") is None  # chained once, never again
        storage.audit.record_event(EVENT_LOCKOUT, "5 minutes", "five wrong PINs")
        assert storage.audit.verify_chain() is None
        assert storage.audit.entries()[0].id == 7
    finally:
        storage.close()
    assert run_verify(capsys)[0] == 0
    reopened = Storage.open()  # a later open changes nothing
    try:
        assert reopened.audit.start_chain() == 0 and reopened.audit.verify_chain() is None
    finally:
        reopened.close()


def test_schema_4_keeps_the_older_chain_and_chains_liveness_and_mode(monkeypatch):
    """Rows chained under schema 3 still verify after the liveness and mode columns arrive; a decision's
    liveness score and mode are then part of its hash."""
    monkeypatch.setattr(db_module, "SCHEMA_VERSION", 3)
    old = Storage.open()
    with old.db.transaction() as conn:  # rows as schema 3 wrote them: 8 columns, chained over those 8
        previous = "0" * 64
        for i, (kind, verdict) in enumerate([("decision", "ACCEPT"), ("enrol", ""), ("decision", "REJECT")], 1):
            row = (i, f"2026-01-01T00:00:0{i}+00:00", "E1" if verdict else "", 0.5 if verdict else None, verdict,
                   "why", kind, "" if verdict else "E1")
            previous = old.audit._digest(previous, row + (None, ""))
            conn.execute("INSERT INTO audit_log (id, time, claimed_id, score, verdict, reason, kind, detail, hash) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row + (previous,))
    old.close()
    monkeypatch.setattr(db_module, "SCHEMA_VERSION", 4)
    storage = Storage.open()
    try:
        assert storage.db.schema_version == 4 and storage.audit.verify_chain() is None
        storage.audit.record("E7", "REJECT", "presentation attack suspected", 0.97, liveness=0.12, mode="id")
        newest = storage.audit.entries()[0]
        assert (newest.liveness, newest.mode, newest.reason) == (pytest.approx(0.12), "id",
                                                                 "presentation attack suspected")
        assert storage.audit.verify_chain() is None
        tamper(storage, "UPDATE audit_log SET liveness = 0.93 WHERE id = 4")  # make the attack look live
        assert storage.audit.verify_chain().id == 4
    finally:
        storage.close()


def test_a_row_written_outside_the_kiosk_after_the_migration_is_not_chained_silently(storage):
    fill(storage)
    storage.db.set_meta("audit_unchained_upto", "3")  # not what a migration would write: rows 1-3 are chained
    tamper(storage, "UPDATE audit_log SET hash = NULL WHERE id = 6")
    storage.audit.start_chain()  # rechains only rows 1-3, from the start, as they are
    assert storage.audit.verify_chain().id == 6  # the row without a hash is named, not chained


def test_csv_export_contains_events_and_is_itself_recorded(storage, tmp_path):
    fill(storage)
    storage.audit.record_event(EVENT_THRESHOLD, "=0.7", "@formula")  # formulas neutralised in events too
    out = tmp_path / "audit.csv"
    assert storage.audit.export_csv(out) == 7
    rows = list(csv.DictReader(out.open()))
    assert [r["kind"] for r in rows] == [EVENT_THRESHOLD, EVENT_DELETE, EVENT_THRESHOLD, KIND_DECISION,
                                         EVENT_ENROL, EVENT_PIN_WRONG, KIND_DECISION]
    assert rows[0]["detail"] == "'=0.7" and rows[0]["reason"] == "'@formula"
    assert rows[2]["detail"] == "0.624 -> 0.700" and rows[3]["score"] == "0.1200" and rows[3]["verdict"] == "REJECT"
    export = storage.audit.entries()[0]
    assert export.kind == EVENT_EXPORT and export.detail == f"7 entries to {out}"
    assert storage.audit.verify_chain() is None


@pytest.mark.slow
def test_audit_page_filters_by_kind_exports_events_and_shows_a_broken_chain(qtbot, storage, tmp_path):
    from kiosk.qt.audit_page import COL_DETAIL, COL_VERDICT, AuditPage
    from kiosk.qt.background import wait_for_background

    fill(storage)
    page = AuditPage(storage.audit, Admin(storage, SettingsStore()))
    qtbot.addWidget(page)
    try:
        page.show()
        shown = lambda: [(page.table.item(r, COL_VERDICT).text(), page.table.item(r, COL_DETAIL).text())  # noqa: E731
                         for r in range(page.table.rowCount())]
        qtbot.waitUntil(lambda: len(shown()) == 6, timeout=5000)
        assert shown()[0] == ("Deletion", "E1") and shown()[1] == ("Threshold change", "0.624 -> 0.700")
        qtbot.waitUntil(lambda: page.chain_break is None and not page.banner.isVisibleTo(page), timeout=5000)
        page.kind.setCurrentText("Threshold change")
        qtbot.waitUntil(lambda: shown() == [("Threshold change", "0.624 -> 0.700")], timeout=5000)
        page.kind.setCurrentText("Decisions")
        qtbot.waitUntil(lambda: shown() == [("REJECT", ""), ("ACCEPT", "")], timeout=5000)
        page.verdict.setCurrentText("ACCEPT")
        qtbot.waitUntil(lambda: shown() == [("ACCEPT", "")], timeout=5000)
        page.verdict.setCurrentText("All")
        page.kind.setCurrentText("All kinds")
        qtbot.waitUntil(lambda: len(shown()) == 6, timeout=5000)

        out = tmp_path / "export.csv"
        page.choose_export_path = lambda: str(out)
        page.export()
        qtbot.waitUntil(lambda: page.status.text().startswith("Exported 6 entries"), timeout=5000)
        kinds = [row["kind"] for row in csv.DictReader(out.open())]
        assert kinds.count(KIND_DECISION) == 2 and EVENT_DELETE in kinds and EVENT_PIN_WRONG in kinds
        qtbot.waitUntil(lambda: shown()[0][0] == "Export", timeout=5000)  # the export is on the page too

        tamper(storage, "UPDATE audit_log SET detail = 'E2' WHERE id = 6")
        page.check_chain()
        qtbot.waitUntil(lambda: page.banner.isVisibleTo(page), timeout=5000)
        assert page.chain_break.id == 6
        text = page.banner.text()
        assert "altered" in text and "entry 6 (" in text and EVENT_DELETE in text
        assert "#b00020" in page.banner.styleSheet()  # red
    finally:
        assert wait_for_background()


def test_the_command_needs_an_existing_store_and_says_so(capsys):
    code, out = run_verify(capsys)
    assert code == 2 and "no kiosk database" in out



@pytest.mark.slow
def test_audit_page_shows_a_reason_whole_beside_an_empty_detail(qtbot, storage):
    from PySide6.QtGui import QFontMetrics

    from kiosk.qt.audit_page import COL_DETAIL, COL_REASON, AuditPage

    reason = "face closer to another employee than to the claimed one (badge sharing?)"
    storage.audit.record("E1", "REJECT", reason, 0.41)
    page = AuditPage(storage.audit, Admin(storage, SettingsStore()))
    qtbot.addWidget(page)
    page.resize(1280, 600)
    page.show()
    qtbot.waitUntil(lambda: page.table.rowCount() == 1, timeout=5000)
    item = page.table.item(0, COL_REASON)
    needed = QFontMetrics(item.font() if item.font() else page.table.font()).horizontalAdvance(reason)
    assert page.table.columnWidth(COL_REASON) >= needed  # not elided
    assert page.table.item(0, COL_DETAIL).text() == "" and item.toolTip() == reason
    page.resize(700, 600)  # too narrow for it all: Reason takes at most half, the rest is in its tooltip
    qtbot.waitUntil(lambda: page.table.columnWidth(COL_REASON) <= page.table.viewport().width() // 2 + 1,
                    timeout=5000)
