"""Storage: enrolment and deletion, crash consistency, permissions, migrations, settings, PIN, audit log."""

from __future__ import annotations

import csv
import json
import sqlite3
import stat

import numpy as np
import pytest

from kiosk.paths import config_dir, data_dir
from kiosk.storage import Database, NewPhoto, PinError, PinManager, Settings, SettingsStore, Storage, StorageError
from kiosk.storage import db as db_module
from kiosk.storage import employees as employees_module

MODEL = "model-a"


def _photo(seed: int, dim: int = 16) -> NewPhoto:
    rng = np.random.default_rng(seed)
    return NewPhoto(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8), rng.standard_normal(dim).astype(np.float32))


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def storage():
    store = Storage.open()
    yield store
    store.close()


def test_enrol_several_photos_owner_only_files_and_wal(storage):
    photos = [_photo(1), _photo(2), _photo(3)]
    employee = storage.employees.enrol(" E100 ", "Ada  Lovelace", photos, MODEL)
    assert (employee.id, employee.name, employee.photo_count) == ("E100", "Ada Lovelace", 3)
    refs = storage.employees.references("E100")
    assert [r.model_sha for r in refs] == [MODEL] * 3
    np.testing.assert_array_equal(storage.employees.reference_features("E100"), np.stack([p.features for p in photos]))
    assert storage.employees.reference_features("E100", "other-model").size == 0
    root = data_dir()
    assert _mode(root) == 0o700 and _mode(root / "photos") == 0o700
    assert _mode(root / db_module.DB_NAME) == 0o600
    assert all(_mode(r.path) == 0o600 and r.path.parent == root / "photos" for r in refs)
    assert storage.db.query_one("PRAGMA journal_mode")[0] == "wal"
    assert storage.db.schema_version == db_module.SCHEMA_VERSION


def test_re_enrol_replaces_photos_and_keeps_created(storage):
    first = storage.employees.enrol("E1", "Ann", [_photo(1), _photo(2)], MODEL)
    old_files = storage.employees.photo_files("E1")
    again = storage.employees.enrol("E1", "Ann B", [_photo(3)], MODEL)
    assert (again.name, again.photo_count, again.created) == ("Ann B", 1, first.created)
    assert not any(f.exists() for f in old_files)
    assert len(list((data_dir() / "photos").iterdir())) == 1
    added = storage.employees.enrol("E1", "Ann B", [_photo(4)], MODEL, replace=False)
    assert added.photo_count == 2


def test_search_by_id_and_name(storage):
    storage.employees.enrol("E1", "Grace Hopper", [_photo(1)], MODEL)
    storage.employees.enrol("X_9", "Alan Turing", [_photo(2)], MODEL)
    assert [e.id for e in storage.employees.search("hopper")] == ["E1"]
    assert [e.id for e in storage.employees.search("x_")] == ["X_9"]
    assert [e.id for e in storage.employees.search("TURING")] == ["X_9"]
    assert storage.employees.search("%") == []  # wildcards are literal
    assert [e.id for e in storage.employees.search("")] == ["E1", "X_9"]


def test_invalid_ids_and_empty_enrolment_are_refused(storage):
    with pytest.raises(StorageError, match="ID is empty"):
        storage.employees.enrol("  ", "Name", [_photo(1)], MODEL)
    with pytest.raises(StorageError, match="printable"):
        storage.employees.enrol("a\nb", "Name", [_photo(1)], MODEL)
    with pytest.raises(StorageError, match="at least one"):
        storage.employees.enrol("E1", "Name", [], MODEL)
    assert storage.employees.count() == 0 and not list((data_dir() / "photos").iterdir())


def test_delete_removes_rows_files_and_feature_bytes(storage):
    victim = _photo(7, dim=64)
    storage.employees.enrol("GONE", "To Delete", [victim, _photo(8, dim=64)], MODEL)
    storage.employees.enrol("STAY", "Stays", [_photo(9, dim=64)], MODEL)
    files = storage.employees.photo_files("GONE")
    storage.audit.record("GONE", "ACCEPT", "face matches", 0.9)
    assert storage.employees.delete("GONE") is True
    assert storage.employees.get("GONE") is None and storage.employees.references("GONE") == []
    assert not any(f.exists() for f in files)
    assert storage.db.query_one("SELECT COUNT(*) FROM reference_photos WHERE employee_id='GONE'")[0] == 0
    # secure_delete + checkpoint: the feature bytes are gone from the database files, not just unlinked
    raw = b"".join(p.read_bytes() for p in data_dir().glob(db_module.DB_NAME + "*"))
    assert victim.features.astype("<f4").tobytes() not in raw
    assert storage.employees.get("STAY").photo_count == 1
    assert storage.employees.delete("GONE") is False


def test_failure_inside_the_transaction_leaves_no_files_and_no_change(storage, monkeypatch):
    storage.employees.enrol("E1", "Old", [_photo(1)], MODEL)
    before = sorted((data_dir() / "photos").iterdir())
    calls = []
    real_blob = employees_module._blob

    def failing_blob(features):  # the 2nd INSERT fails, after the old rows were already deleted
        calls.append(1)
        if len(calls) == 2:
            raise sqlite3.OperationalError("disk I/O error")
        return real_blob(features)

    monkeypatch.setattr(employees_module, "_blob", failing_blob)
    with pytest.raises(StorageError, match="disk I/O error"):  # sqlite3 errors leave the store wrapped
        storage.employees.enrol("E1", "New", [_photo(2), _photo(3)], MODEL)
    assert sorted((data_dir() / "photos").iterdir()) == before
    employee = storage.employees.get("E1")
    assert (employee.name, employee.photo_count) == ("Old", 1)
    assert storage.employees.references("E1")[0].path.is_file()


def test_crash_between_file_and_commit_leaves_orphans_that_are_cleaned(storage):
    storage.employees.enrol("E1", "Ann", [_photo(1)], MODEL)
    photos = data_dir() / "photos"
    (photos / "0123abcd.jpg").write_bytes(b"photo written, process died before commit")
    (photos / ".x.jpg.123.tmp").write_bytes(b"half-written temp file")
    storage.close()
    reopened = Storage.open()
    try:
        assert [p.name for p in photos.iterdir()] == [reopened.employees.references("E1")[0].path.name]
        assert reopened.employees.get("E1").photo_count == 1
    finally:
        reopened.close()


def test_migration_from_empty_schema_and_refusal_of_newer(tmp_path):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (0)")
    conn.commit()
    conn.close()
    db = Database(path)
    assert db.schema_version == db_module.SCHEMA_VERSION
    assert {r[0] for r in db.query("SELECT name FROM sqlite_master WHERE type='table'")} >= {
        "employees", "reference_photos", "audit_log", "schema_version"}
    db.query("UPDATE schema_version SET version = 99")
    db.close()
    with pytest.raises(StorageError, match="newer version"):
        Database(path)
    (tmp_path / "junk.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match="cannot use the database"):
        Database(tmp_path / "junk.sqlite3")


def test_settings_round_trip_atomic_owner_only_and_validated():
    store = SettingsStore()
    assert store.load() == Settings()
    store.update(threshold=0.7, fusion_frames=5)
    path = config_dir() / "settings.json"
    assert _mode(path) == 0o600 and [p.name for p in config_dir().iterdir()] == ["settings.json"]
    assert SettingsStore().load().threshold == 0.7 and SettingsStore().load().fusion_frames == 5
    data = json.loads(path.read_text())
    data.update(threshold=7, fusion_aggregate="mode", future_option={"x": 1})
    path.write_text(json.dumps(data))
    loaded = SettingsStore().load()
    assert loaded.threshold is None and loaded.fusion_aggregate == "mean" and loaded.fusion_frames == 5
    SettingsStore().update(threshold=0.4)
    assert json.loads(path.read_text())["future_option"] == {"x": 1}  # unknown keys survive a save
    path.write_text("{ broken")
    with pytest.raises(StorageError, match="damaged"):
        SettingsStore().load()


@pytest.mark.slow
def test_pin_first_run_accept_and_hash_is_salted():
    pins = PinManager(SettingsStore())
    assert not pins.is_set
    with pytest.raises(PinError, match="6 to 12 digits"):
        pins.set_pin("12a456")
    with pytest.raises(PinError, match="differ"):
        pins.set_pin("123456", repeat="124356")
    pins.set_pin("246810", repeat="246810")
    assert pins.is_set and pins.check("246810").ok and not pins.check("135790").ok
    text = (config_dir() / "settings.json").read_text()
    assert "246810" not in text
    record = SettingsStore().load().pin
    assert record["algorithm"] == "scrypt" and len(bytes.fromhex(record["salt"])) == 16
    with pytest.raises(PinError, match="already set"):
        pins.set_pin("111111")
    with pytest.raises(PinError, match="not right"):
        pins.set_pin("111111", current="000000")
    pins.set_pin("111111", current="246810")
    assert pins.check("111111").ok and SettingsStore().load().pin["salt"] != record["salt"]


@pytest.mark.slow
def test_pin_lockout_after_five_wrong_is_persisted_and_expires():
    now = [1000.0]
    pins = PinManager(SettingsStore(), max_attempts=5, lockout_s=300, clock=lambda: now[0])
    pins.set_pin("987654")
    results = [pins.check("000000") for _ in range(5)]
    assert [r.attempts_left for r in results[:4]] == [4, 3, 2, 1]
    assert results[4].locked_for == 300 and "locked" in results[4].message
    restarted = PinManager(SettingsStore(), clock=lambda: now[0])  # a restart does not unlock
    locked = restarted.check("987654")
    assert not locked.ok and locked.locked_for == 300
    now[0] += 299
    assert not restarted.check("987654").ok
    now[0] += 2
    assert restarted.check("987654").ok
    assert pins.check("000000").attempts_left == 4  # counting starts afresh after the lock


@pytest.mark.slow
def test_pin_lock_survives_clock_turned_back_only_for_one_lock_period():
    now = [10_000.0]
    pins = PinManager(SettingsStore(), lockout_s=300, clock=lambda: now[0])
    pins.set_pin("123456")
    for _ in range(5):
        pins.check("000000")
    now[0] -= 5000  # clock turned back: still locked, but not for 5300 s
    assert pins.locked_for() == 300
    now[0] += 301
    assert pins.check("123456").ok


def test_audit_log_filter_and_csv_export_neutralises_formulas(storage, tmp_path):
    storage.audit.record("E1", "ACCEPT", "face matches", 0.91)
    storage.audit.record("=HYPERLINK(\"http://x\")", "REJECT", "unknown ID")
    storage.audit.record("E2", "REJECT", "no usable face in time")
    assert [e.claimed_id for e in storage.audit.entries()] == ["E2", "=HYPERLINK(\"http://x\")", "E1"]
    assert [e.claimed_id for e in storage.audit.entries(verdict="ACCEPT")] == ["E1"]
    assert [e.claimed_id for e in storage.audit.entries("unknown")] == ["=HYPERLINK(\"http://x\")"]
    out = tmp_path / "audit.csv"
    assert storage.audit.export_csv(out) == 3
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["time", "kind", "detail", "claimed_id", "score", "verdict", "reason", "liveness", "mode"]
    assert rows[2][3].startswith("'=") and rows[3][4] == "0.9100" and rows[1][4] == ""
    assert _mode(out) == 0o600


def test_two_stores_on_their_own_folders_share_nothing(tmp_path, monkeypatch):
    """Issue #23: Storage.open uses the places it is given (data, config), never the global ones."""
    monkeypatch.delenv("KIOSK_KEY_FILE", raising=False)
    stores = [Storage.open(tmp_path / f"data-{n}", config=tmp_path / f"config-{n}") for n in "ab"]
    try:
        for n, store in zip("ab", stores):
            store.employees.enrol(f"E-{n}", "Ann", [_photo(1)], MODEL)
            store.settings_store().update(threshold=0.7 if n == "a" else 0.6)
            store.pin_manager(store.settings_store()).set_pin("123456" if n == "a" else "654321")
        for n, store in zip("ab", stores):
            assert {p.name for p in (tmp_path / f"config-{n}").iterdir()} == {"data.key", "settings.json",
                                                                                "audit_anchor.json"}
            assert (tmp_path / f"data-{n}" / "pin_guard.json").is_file()
            assert [e.id for e in store.employees.search()] == [f"E-{n}"]
        assert stores[0].settings_store().load().threshold == 0.7 and stores[1].settings_store().load().threshold == 0.6
        assert stores[0].pin_manager(stores[0].settings_store()).check("123456").ok
        assert stores[0].db.meta("key_id") != stores[1].db.meta("key_id")  # a key each
        assert not data_dir().exists() and not config_dir().exists()  # the default places were never touched
    finally:
        for store in stores:
            store.close()


def test_a_data_key_others_may_read_is_refused_naming_the_chmod(monkeypatch):
    """Issue #23: one rule for secret files (the data key as the registry's password file): owner-only."""
    from kiosk.storage.keys import KeyMissingError, key_path

    monkeypatch.delenv("KIOSK_KEY_FILE", raising=False)
    Storage.open().close()
    key_path().chmod(0o640)
    with pytest.raises(KeyMissingError, match=rf"data key {key_path()} may be read by others .*'chmod 600 "):
        Storage.open()
    key_path().chmod(0o600)
    Storage.open().close()
