"""Issue 25 item 1: the audit chain cannot be re-chained, truncated, emptied, re-created or rolled back without
its key. Nothing is chained "as found" at a start, and the chain's head (last ID, hash, count) is anchored
outside the database in a file sealed with a key derived from the data key (kiosk.storage.audit.ChainAnchor).

Every attack is made on a real store in the test's own folders, the way someone with write access to the data
folder (but not the data key) would, and must be reported by ``verify_chain()`` and ``kiosk audit verify``
(exit 1) - also after the kiosk has started again on the altered database and written more entries."""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat

import pytest

from kiosk import cli
from kiosk.storage import EVENT_AUDIT_ANCHOR, EVENT_THRESHOLD, AuditLog, Storage
from kiosk.storage.audit import ANCHOR_NAME, ChainAnchor
from kiosk.storage.db import DB_NAME

pytestmark = pytest.mark.reliability

ENTRIES = 60


def open_store() -> Storage:
    return Storage.open()


def fill(storage: Storage, n: int = ENTRIES, start: int = 0) -> None:
    for i in range(start, start + n):
        if i % 5 == 4:
            storage.audit.record_event(EVENT_THRESHOLD, f"0.6{i % 10} -> 0.70", "tuning")
        else:
            storage.audit.record(f"E{i % 7}", "ACCEPT" if i % 2 else "REJECT", "face matches", 0.5 + (i % 5) / 10)


@pytest.fixture
def filled():
    """A store with ENTRIES entries, closed (as between two runs of the kiosk)."""
    storage = open_store()
    try:
        fill(storage)
        folder, config = storage.folder, storage.paths.config
    finally:
        storage.close()
    return folder, config


def tamper(folder, *statements: str) -> None:
    """Change the SQLite file directly, as someone with write access to the data folder would."""
    conn = sqlite3.connect(str(folder / DB_NAME))
    try:
        for sql in statements:
            conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


def verify_cli(capsys) -> tuple[int, str]:
    code = cli.main(["audit", "verify"])
    out = capsys.readouterr()
    return code, out.out + out.err


def restart_and_write() -> None:
    """The kiosk starts again on the altered database and carries on writing."""
    storage = open_store()
    try:
        storage.audit.record("E1", "ACCEPT", "face matches", 0.9)
    finally:
        storage.close()


def assert_reported(capsys, *words: str) -> None:
    storage = Storage.open(readonly=True)
    try:
        broken = storage.audit.verify_chain()
    finally:
        storage.close()
    assert broken is not None, "the altered log was reported intact"
    for word in words:
        assert word in broken.describe(), broken.describe()
    code, out = verify_cli(capsys)
    assert code == cli.EXIT_AUDIT_BROKEN and "altered" in out, out


def test_a_normal_store_stays_intact_across_many_entries_and_reopens(capsys):
    for run in range(3):
        storage = open_store()
        try:
            fill(storage, 70, run * 70)
            assert storage.audit.verify_chain() is None
        finally:
            storage.close()
    code, out = verify_cli(capsys)
    assert code == 0 and "intact (210 entries" in out, out
    storage = open_store()
    try:
        anchor = storage.paths.audit_anchor
        assert anchor.name == ANCHOR_NAME and anchor.parent == storage.paths.key_file.parent
        assert stat.S_IMODE(anchor.stat().st_mode) == 0o600
        head = ChainAnchor(anchor, _data_key(storage)).read()
        assert (head.last_id, head.count) == (210, 210)
        assert not storage.audit.entries(kind=EVENT_AUDIT_ANCHOR)  # a new store: anchored from its first entry
    finally:
        storage.close()


def _data_key(storage: Storage) -> bytes:
    from kiosk.storage.keys import read_key
    return read_key(storage.paths.key_file)


@pytest.mark.parametrize("clear_hashes", [False, True])
def test_the_unchained_upto_trick_is_refused_and_reported(filled, capsys, clear_hashes):
    """Edit row 31, delete 21 rows, mark everything 'unchained': the start chains nothing as found."""
    folder, _ = filled
    statements = ["UPDATE audit_log SET claimed_id = 'E9', reason = 'let in' WHERE id = 31",
                  "DELETE FROM audit_log WHERE id BETWEEN 35 AND 55",
                  "INSERT INTO meta VALUES ('audit_unchained_upto', (SELECT MAX(id) FROM audit_log))"]
    if clear_hashes:  # made to look exactly like a store the schema-3 upgrade left
        statements.append("UPDATE audit_log SET hash = NULL")
    tamper(folder, *statements)
    restart_and_write()
    conn = sqlite3.connect(str(folder / DB_NAME))
    try:
        unhashed = conn.execute("SELECT COUNT(*) FROM audit_log WHERE hash IS NULL").fetchone()[0]
    finally:
        conn.close()
    assert unhashed == (ENTRIES - 21 if clear_hashes else 0)  # nothing was re-chained
    assert_reported(capsys, "entry 1" if clear_hashes else "entry 31")


def test_a_tail_deletion_with_the_sequence_reset_is_reported(filled, capsys):
    folder, _ = filled
    tamper(folder, "DELETE FROM audit_log WHERE id > 40", "UPDATE sqlite_sequence SET seq = 40 WHERE name = 'audit_log'")
    assert_reported(capsys, "the log ends at entry 40 but entry 60 was written", "entries 41 to 60")
    restart_and_write()  # the kiosk writes entry 41 again: the anchor stays where it was
    assert_reported(capsys, "entry 60")


def test_deleting_everything_with_the_sequence_row_is_reported(filled, capsys):
    folder, _ = filled
    tamper(folder, "DELETE FROM audit_log", "DELETE FROM sqlite_sequence WHERE name = 'audit_log'")
    assert_reported(capsys, "the log ends at entry 0 but entry 60 was written")
    restart_and_write()
    assert_reported(capsys, "entry 60")


def test_drop_and_create_of_the_table_is_reported(filled, capsys):
    folder, _ = filled
    conn = sqlite3.connect(str(folder / DB_NAME))
    try:
        [schema] = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'audit_log'").fetchone()
    finally:
        conn.close()
    tamper(folder, "DROP TABLE audit_log", schema)
    assert_reported(capsys, "the log ends at entry 0 but entry 60 was written")
    storage = open_store()  # the kiosk refills the new table beyond the anchored ID: still a break
    try:
        fill(storage, ENTRIES + 5, start=3)  # other entries than the ones removed
    finally:
        storage.close()
    assert_reported(capsys, "entry 60", "not the entry 60 that was written")


def test_a_rollback_to_an_older_copy_of_the_database_is_reported(filled, capsys, tmp_path):
    folder, _ = filled
    old = tmp_path / "old-copy"
    old.mkdir()
    for name in (DB_NAME, f"{DB_NAME}-wal"):
        if (folder / name).exists():
            shutil.copy2(folder / name, old / name)
    storage = open_store()
    try:
        fill(storage, 25, ENTRIES)
    finally:
        storage.close()
    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"):
        (folder / name).unlink(missing_ok=True)
        if (old / name).exists():
            shutil.copy2(old / name, folder / name)
    assert_reported(capsys, "the log ends at entry 60 but entry 85 was written", "older copy")
    restart_and_write()  # the kiosk starts on the old copy and writes entry 61: not the 61 that was written
    assert_reported(capsys, "entry 85")


def test_a_missing_or_forged_anchor_is_reported_and_not_recreated(filled, capsys):
    _, config = filled
    anchor = config / ANCHOR_NAME
    data = json.loads(anchor.read_text())
    anchor.write_text(json.dumps({**data, "last_id": 40, "count": 40}))  # moved back without the key
    assert_reported(capsys, "altered or is damaged")
    anchor.unlink()
    assert_reported(capsys, "missing")
    restart_and_write()
    assert not anchor.exists()  # never silently recreated
    assert_reported(capsys, "missing")


def test_an_anchor_left_behind_by_a_crash_catches_up_at_the_next_start(filled, capsys):
    """A crash between the entry's commit and the anchor's write leaves the anchor one entry behind: not a break."""
    _, config = filled
    anchor = config / ANCHOR_NAME
    behind = anchor.read_text()
    storage = open_store()
    try:
        storage.audit.record("E2", "REJECT", "face does not match", 0.2)
    finally:
        storage.close()
    anchor.write_text(behind)
    code, out = verify_cli(capsys)
    assert code == 0 and f"intact ({ENTRIES + 1} entries" in out, out
    storage = open_store()
    try:
        storage.audit.record("E2", "REJECT", "face does not match", 0.2)
        assert storage.audit.verify_chain() is None
    finally:
        storage.close()
    assert json.loads(anchor.read_text())["count"] == ENTRIES + 2


def test_a_store_from_before_the_anchor_is_anchored_once_and_that_is_recorded(filled, capsys):
    folder, config = filled
    (config / ANCHOR_NAME).unlink()
    tamper(folder, "DELETE FROM meta WHERE key = 'audit_anchor'")  # as an older kiosk left it
    code, out = verify_cli(capsys)
    assert code == 0, out  # not anchored yet: nothing to hold it to
    storage = open_store()
    try:
        [event] = storage.audit.entries(kind=EVENT_AUDIT_ANCHOR)
        assert event.detail == f"entry {ENTRIES}, {ENTRIES} entries"
        assert storage.audit.verify_chain() is None
    finally:
        storage.close()
    tamper(folder, f"DELETE FROM audit_log WHERE id > {ENTRIES}",
           f"UPDATE sqlite_sequence SET seq = {ENTRIES} WHERE name = 'audit_log'")
    assert_reported(capsys, f"entry {ENTRIES + 1} was written")


def test_a_store_without_a_data_key_keeps_the_plain_chain_and_no_anchor(tmp_path):
    from kiosk.storage import Database

    db = Database(tmp_path / "plain.sqlite3")
    try:
        audit = AuditLog(db, None, tmp_path / ANCHOR_NAME)
        audit.start_chain()
        audit.record("E1", "ACCEPT", "face matches", 0.9)
        assert audit.verify_chain() is None and not (tmp_path / ANCHOR_NAME).exists()
    finally:
        db.close()


def test_kiosk_restore_is_an_audited_rollback_and_a_copy_put_back_by_hand_is_not(filled, capsys, tmp_path):
    folder, _ = filled
    dest = tmp_path / "backup"
    assert cli.main(["backup", str(dest)]) == 0
    storage = open_store()
    try:
        fill(storage, 25, ENTRIES)
    finally:
        storage.close()
    assert cli.main(["restore", str(dest)]) == 0
    capsys.readouterr()
    code, out = verify_cli(capsys)
    assert code == 0 and f"intact ({ENTRIES} entries" in out, out  # the admin's restore, sealed with the key
    storage = open_store()
    try:
        [event] = storage.audit.entries(kind=EVENT_AUDIT_ANCHOR)
        assert event.detail.startswith(f"restore: the log now ends at entry {ENTRIES} ") and "entry 85" in event.detail
        assert storage.audit.verify_chain() is None
        fill(storage, 5, 200)
    finally:
        storage.close()
    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"):  # the backup's copy again, by hand this time
        (folder / name).unlink(missing_ok=True)
    shutil.copy2(dest / DB_NAME, folder / DB_NAME)
    assert_reported(capsys, f"the log ends at entry {ENTRIES} but entry {ENTRIES + 6} was written")


class Crash(Exception):
    pass


@pytest.mark.parametrize("fail_at", ["before-ready", 1, 3])
def test_an_interrupted_restore_leaves_a_log_that_verifies(filled, capsys, tmp_path, fail_at):
    import os

    from kiosk.storage import backup as backup_module

    dest = tmp_path / "backup"
    assert cli.main(["backup", str(dest)]) == 0
    storage = open_store()
    try:
        fill(storage, 10, ENTRIES)
    finally:
        storage.close()
    calls = []

    class FailingRename:
        def __getattr__(self, name):
            return getattr(os, name)

        def rename(self, *args):
            calls.append(args)
            if len(calls) == fail_at:
                raise Crash()
            return os.rename(*args)

    def crash_at_ready(path, *args, **kwargs):
        raise Crash()

    with pytest.MonkeyPatch.context() as patch:  # its own: undoing it keeps the test's folders
        if fail_at == "before-ready":
            patch.setattr(backup_module, "atomic_write_text", crash_at_ready)
        else:
            patch.setattr(backup_module, "os", FailingRename())
        with pytest.raises(Crash):
            backup_module.restore(dest)
    assert str(filled[0]).startswith(str(tmp_path))
    storage = open_store()  # finishes (or discards) the staged restore
    try:
        assert storage.audit.verify_chain() is None
        expected = ENTRIES + 10 if fail_at == "before-ready" else ENTRIES + 1  # + the restore's event
        assert storage.audit.count() == expected
    finally:
        storage.close()
    assert verify_cli(capsys)[0] == 0
