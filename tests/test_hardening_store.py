"""Reliability of the store (issue #16, items 3, 4 and 8): one writer per data folder, a store that checks
itself, biometric data encrypted at rest, backup and restore, and the migration of old plain stores.

Each failure the issue found is a test here that failed before and passes now:
- a second process opening the folder ran the orphan clean-up and deleted the first one's in-flight photos;
- a database with 4 KB overwritten in the middle opened without a word (and the audit page then raised a
  raw sqlite3.DatabaseError); a changed feature BLOB went unnoticed;
- photos were plain JPEG and features plain float32: a copy of the data folder gave away every face.
Processes are real (subprocesses, ``kill -9``); feature vectors are small synthetic ones.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from kiosk import cli
from kiosk.paths import PROJECT_ROOT, data_dir
from kiosk.storage import (
    AuditLog,
    DamagedDataError,
    Database,
    KeyMissingError,
    NewPhoto,
    Storage,
    StorageError,
    StoreDamagedError,
    StoreInUseError,
)
from kiosk.storage import backup as backup_module
from kiosk.storage import db as db_module
from kiosk.storage import sealing as sealing_module
from kiosk.storage.crypto import FORMAT
from kiosk.storage.keys import create_key, key_path

pytestmark = pytest.mark.reliability

MODEL = "model-a"
DIM = 16


def features_of(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def image_of(seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 10_000).integers(0, 255, (40, 30, 3), dtype=np.uint8)


def photo(seed: int) -> NewPhoto:
    return NewPhoto(image_of(seed), features_of(seed))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def db_path() -> Path:
    return data_dir() / db_module.DB_NAME


def db_bytes() -> bytes:
    return b"".join(p.read_bytes() for p in data_dir().glob(db_module.DB_NAME + "*"))


def corrupt_middle(path: Path, seed: int = 0) -> None:
    """Overwrite 4 KB in the middle of the file, as a failing disk or a stray write would."""
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.seek(size // 2)
        handle.write(np.random.default_rng(seed).bytes(4096))


def make_store(employees: int = 3, audit_rows: int = 0) -> None:
    storage = Storage.open()
    try:
        for i in range(employees):
            storage.employees.enrol(f"E{i}", f"Person {i}", [photo(i)], MODEL)
        with storage.db.transaction() as conn:  # many attempts at once (one transaction, not one each)
            conn.executemany("INSERT INTO audit_log (time, claimed_id, score, verdict, reason) VALUES (?, ?, ?, ?, ?)",
                             [("2024-01-01T00:00:00+00:00", f"E{i % 50}", 0.1 + i % 7 / 10,
                               "REJECT" if i % 3 else "ACCEPT", "face does not match") for i in range(audit_rows)])
    finally:
        storage.close()


def run_child(code: str, *args: str, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=PROJECT_ROOT, env=os.environ.copy(),
                            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(proc: subprocess.Popen, expected: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == expected:
            return
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"the child did not say {expected!r}: {proc.stderr.read()}")


ENROLLER = """
    import sys
    import numpy as np
    from kiosk.storage import NewPhoto, Storage

    first, count, hold = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "hold"
    storage = Storage.open()
    print("ready", flush=True)
    for i in range(first, first + count):
        photos = [NewPhoto(np.random.default_rng(i * 10 + k + 10_000).integers(0, 255, (40, 30, 3), dtype=np.uint8),
                           np.random.default_rng(i * 10 + k).standard_normal(16).astype(np.float32)) for k in range(2)]
        storage.employees.enrol(f"P{i}", f"Person {i}", photos, "model-a")
        print(f"committed P{i}", flush=True)
    if hold:
        sys.stdin.read()  # keep the store (and its writer lock) until the parent closes stdin
    storage.close()
    print("done", flush=True)
"""


def assert_enrolled_intact(storage: Storage, number: int) -> None:
    """P<number> as the ENROLLER child made it: two photos, both features and both photos readable and equal."""
    refs = storage.employees.references(f"P{number}")
    assert len(refs) == 2
    for k, ref in enumerate(refs):
        assert not ref.features_damage
        np.testing.assert_array_equal(ref.features, np.random.default_rng(number * 10 + k).standard_normal(16)
                                      .astype(np.float32))
        assert storage.employees.load_photo(ref).shape == (40, 30, 3)


def assert_no_stray_files(storage: Storage) -> None:
    known = {f for (f,) in storage.db.query("SELECT file FROM reference_photos")}
    assert {p.name for p in storage.employees.photos_dir.iterdir()} == known


# -- item 3: one writer per data folder ----------------------------------------------------------------------
@pytest.mark.slow
def test_kill_9_during_enrolment_20_times_loses_nothing_committed():
    rng = random.Random(16)
    committed: set[int] = set()
    for run in range(20):
        child = run_child(ENROLLER, str(run * 1000), "100000", "no")
        wait_for_line(child, "ready")
        time.sleep(rng.uniform(0.02, 0.25))
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        out = child.stdout.read()
        child.stdout.close()
        child.stderr.close()
        committed |= {int(line.split()[1][1:]) for line in out.splitlines() if line.startswith("committed")}
        storage = Storage.open()  # the lock died with the child; orphans of the killed enrolment are removed
        try:
            assert storage.db.quick_check() == []
            assert storage.health.ok, storage.health.summary
            for number in committed:
                assert_enrolled_intact(storage, number)
            for employee in storage.employees.search(limit=100_000):  # committed but killed before it said so
                assert employee.photo_count == 2
                assert_enrolled_intact(storage, int(employee.id[1:]))
            assert_no_stray_files(storage)
        finally:
            storage.close()
    assert len(committed) >= 20  # the kills did land during enrolment, not before it


@pytest.mark.slow
def test_second_writer_is_refused_with_the_holders_pid_and_the_first_loses_nothing(capsys, tmp_path):
    make_store(employees=1)
    child = run_child(ENROLLER, "0", "40", "hold", stdin=subprocess.PIPE)
    try:
        wait_for_line(child, "ready")
        refusals = 0
        while True:  # while the child enrols: before, opening the store here deleted its in-flight photos
            with pytest.raises(StoreInUseError, match=f"data folder .* is in use by process {child.pid}"):
                Storage.open()
            refusals += 1
            line = child.stdout.readline().strip()
            if line == "committed P39":
                break
            assert line.startswith("committed"), child.stderr.read()
        assert refusals >= 10
        assert cli.main(["backup", str(tmp_path / "backup")]) == cli.EXIT_BAD_INPUT  # a writing command: refused
        assert f"in use by process {child.pid}" in capsys.readouterr().err
        reader = Storage.open(readonly=True)  # reading may share the folder with the writer
        try:
            assert reader.employees.count() == 41 and reader.health.ok
            with pytest.raises(StorageError, match="read-only"):
                reader.employees.enrol("X", "X", [photo(1)], MODEL)
        finally:
            reader.close()
        assert cli.main(["check"]) == 0
    finally:
        child.stdin.close()
        child.wait(30)
    assert child.returncode == 0 and child.stdout.read().strip() == "done", child.stderr.read()
    storage = Storage.open()  # the writer has gone: the lock is free again
    try:
        for number in range(40):
            assert_enrolled_intact(storage, number)
        assert storage.employees.get("E0").photo_count == 1
        assert_no_stray_files(storage)
    finally:
        storage.close()


@pytest.mark.slow
def test_orphan_cleanup_only_touches_files_no_live_writer_can_own():
    storage = Storage.open()
    try:
        storage.employees.enrol("E1", "Ann", [photo(1)], MODEL)
        photos = storage.employees.photos_dir
        old = photos / "dead-writer.enc"
        old.write_bytes(b"left by a writer that died")
        past = time.time() - 3600
        os.utime(old, (past, past))
        new = photos / "in-flight.enc"  # written after this process took the lock: could be ours, in flight
        new.write_bytes(b"being written")
        with storage.employees.in_flight(["marked.enc"]):
            marked = photos / "marked.enc"
            marked.write_bytes(b"marked in flight")
            os.utime(marked, (past, past))
            assert storage.employees.cleanup_orphans() == 1
            assert not old.exists() and new.exists() and marked.exists()
        second = Storage.open()  # the same process may open the folder again: it shares the lock
        try:
            assert second.lock.acquired_ns == storage.lock.acquired_ns
            assert new.exists()  # and its clean-up spares what this process writes
        finally:
            second.close()
        child = run_child("""
            from kiosk.storage import Storage, StoreInUseError
            try:
                Storage.open()
            except StoreInUseError as exc:
                print(exc)
        """)
        out, err = child.communicate(timeout=60)
        assert f"is in use by process {os.getpid()}" in out, err  # held while `storage` is open
    finally:
        storage.close()
    reopened = Storage.open()  # a later writer: both files are from a writer that has ended
    try:
        assert not new.exists() and not marked.exists()
    finally:
        reopened.close()
    reader = Storage.open(readonly=True)
    try:
        with pytest.raises(StorageError, match="read-only"):
            reader.employees.cleanup_orphans()
    finally:
        reader.close()


# -- item 4: the store checks itself --------------------------------------------------------------------------
def test_page_corruption_is_refused_at_open_and_nothing_is_changed():
    make_store(employees=30, audit_rows=3000)
    corrupt_middle(db_path())
    conn = sqlite3.connect(db_path())
    try:  # as the issue found: SQLite itself calls it malformed (raised or listed, as the damaged page falls)
        try:
            found = " ".join(str(row[0]) for row in conn.execute("PRAGMA integrity_check").fetchall())
        except sqlite3.DatabaseError as exc:
            found = str(exc)
        assert "malformed" in found
    finally:
        conn.close()
    before = db_path().read_bytes()
    with pytest.raises(StoreDamagedError, match=r"the database is damaged .*kiosk restore"):
        Storage.open()
    assert db_path().read_bytes() == before  # no enrolment or audit write went into the damaged file
    with pytest.raises(StoreDamagedError):
        Storage.open(readonly=True)
    Storage.open(data_dir().parent / "elsewhere").close()  # the lock was released after the refusal


@pytest.mark.parametrize("damage", ["page corruption", "key file missing"])
def test_the_kiosk_refuses_to_start_and_says_why(damage, qapp, monkeypatch):
    from kiosk.qt import app as app_module

    make_store(employees=30, audit_rows=3000)
    if damage == "page corruption":
        corrupt_middle(db_path())
    else:
        key_path().unlink()
    shown = []
    monkeypatch.setattr(app_module.QMessageBox, "critical", lambda parent, title, text: shown.append(text))
    handlers = list(logging.getLogger().handlers)
    try:
        code = app_module.main(["--source", "0", "--weights", str(data_dir() / "none.pt")])
    finally:
        for handler in [h for h in logging.getLogger().handlers if h not in handlers]:
            logging.getLogger().removeHandler(handler)
            handler.close()
    assert code == 2 and len(shown) == 1
    text = shown[0]
    assert text.startswith("The kiosk cannot start")
    if damage == "page corruption":
        assert "database is damaged" in text and "kiosk restore" in text
    else:
        assert str(key_path()) in text and "cannot be read" in text and "No new key" in text
        assert not key_path().exists()


@pytest.mark.slow
def test_audit_page_on_a_damaged_database_shows_the_problem_not_a_traceback(qtbot):
    from kiosk.qt.audit_page import AuditPage

    make_store(employees=1, audit_rows=3000)
    corrupt_middle(db_path(), seed=3)
    db = Database(db_path(), migrate=False)  # as if it was damaged while the kiosk ran
    try:
        with pytest.raises(StoreDamagedError):
            AuditLog(db).entries()
        page = AuditPage(AuditLog(db))
        qtbot.addWidget(page)
        page.show()  # showEvent -> refresh: a raw sqlite3.DatabaseError escaped here before
        qtbot.waitUntil(lambda: "The audit log cannot be read" in page.status.text(), timeout=5000)
        assert "damaged" in page.status.text()
        assert page.table.rowCount() == 0
    finally:
        db.close()


def flip_feature_blob(employee_id: str) -> None:
    with sqlite3.connect(db_path()) as conn:
        ref_id, blob = conn.execute("SELECT id, features FROM reference_photos WHERE employee_id = ?",
                                    (employee_id,)).fetchone()
        blob = bytearray(blob)
        blob[len(blob) // 2] ^= 0x01
        conn.execute("UPDATE reference_photos SET features = ? WHERE id = ?", (bytes(blob), ref_id))


def test_a_flipped_feature_blob_is_detected_never_used_and_re_embedded_from_the_photo(capsys):
    make_store(employees=3)
    flip_feature_blob("E1")
    storage = Storage.open()
    try:
        health = storage.health
        assert not health.ok and [d.employee_id for d in health.damage] == ["E1"]
        damage = health.damage[0]
        assert damage.features and not damage.photo and damage in health.repairable
        assert "E1" in health.summary and "re-embed from the photo" in health.summary
        assert storage.employees.reference_features("E1").size == 0  # nobody is verified against it
        np.testing.assert_array_equal(storage.employees.reference_features("E2")[0], features_of(2))
        stale = storage.employees.stale_references(MODEL)  # the model is current: stale because damaged
        assert [r.employee_id for r in stale] == ["E1"]
        ref = stale[0]
        image = storage.employees.load_photo(ref)  # the photo is fine: re-embed it (the engine's job)
        assert image.shape == image_of(1).shape
        storage.employees.update_features(ref.id, features_of(1), MODEL)
        assert storage.employees.check().ok
        np.testing.assert_array_equal(storage.employees.reference_features("E1")[0], features_of(1))
    finally:
        storage.close()
    flip_feature_blob("E2")
    assert cli.main(["check"]) == cli.EXIT_BAD_INPUT
    assert "E2: features damaged" in capsys.readouterr().out


@pytest.mark.slow
def test_the_kiosk_says_at_start_what_is_damaged_and_re_embeds_it_from_the_photo(qtbot, untrained_weights,
                                                                                  untrained_engine, good_photos):
    from kiosk.app.enrolment import enrol_files
    from kiosk.errors import SourceError
    from kiosk.qt.main_window import AppConfig, MainWindow

    storage = Storage.open()
    try:
        enrol_files(untrained_engine, storage.employees, "E1", "George W. Bush", good_photos("George_W_Bush", 1))
        enrol_files(untrained_engine, storage.employees, "E2", "Tony Blair", good_photos("Tony_Blair", 1))
    finally:
        storage.close()
    flip_feature_blob("E1")

    def no_camera():
        raise SourceError("no camera here")

    window = MainWindow(AppConfig(weights=untrained_weights, opener=no_camera, source_retry=(0.1, 0.5)))
    qtbot.addWidget(window)
    try:
        text = window.store_status.text()  # at start, before the model has loaded
        assert not window.store_status.isHidden() and "E1" in text and "re-embed from the photo" in text
        assert window.storage.employees.reference_features("E1").size == 0  # not verified against damaged data
        qtbot.waitUntil(lambda: getattr(window, "engine_info", None) is not None, timeout=30000)
        assert window.store_health.ok and window.store_status.isHidden()  # re-embedded from the photo
        store = window.storage.employees
        stored_photo = store.load_photo(store.references("E1")[0])
        np.testing.assert_allclose(store.reference_features("E1")[0],
                                   untrained_engine.embed_image(stored_photo, check_quality=False), atol=1e-5)
    finally:
        window.shutdown()


def test_blobs_and_photos_moved_between_employees_do_not_open():
    make_store(employees=2)
    with sqlite3.connect(db_path()) as conn:  # swap the two employees' feature BLOBs
        (a, blob_a), (b, blob_b) = conn.execute("SELECT id, features FROM reference_photos ORDER BY id").fetchall()
        conn.execute("UPDATE reference_photos SET features = ? WHERE id = ?", (blob_b, a))
        conn.execute("UPDATE reference_photos SET features = ? WHERE id = ?", (blob_a, b))
    storage = Storage.open()
    try:
        assert {d.employee_id for d in storage.health.damage if d.features} == {"E0", "E1"}
        refs = [storage.employees.references(e)[0] for e in ("E0", "E1")]
        shutil.copyfile(refs[1].path, refs[0].path)  # E1's sealed photo put in the place of E0's
        with pytest.raises(DamagedDataError, match="E0.*damaged or was altered"):
            storage.employees.load_photo(refs[0])
    finally:
        storage.close()


def test_an_altered_photo_file_is_detected_and_its_features_are_not_used_either():
    make_store(employees=2)
    storage = Storage.open()
    ref = storage.employees.references("E0")[0]
    storage.close()
    data = bytearray(ref.path.read_bytes())
    data[len(data) // 2] ^= 0x40
    ref.path.write_bytes(bytes(data))
    storage = Storage.open()
    try:
        [damage] = storage.health.damage
        assert damage.employee_id == "E0" and damage.photo and not damage.features
        assert "re-enrol E0 or restore a backup" in storage.health.summary
        with pytest.raises(DamagedDataError, match="damaged or was altered"):
            storage.employees.load_photo(storage.employees.references("E0")[0])
        assert storage.employees.reference_features("E0").size == 0  # "not used for verification" (#25 item 9)
        np.testing.assert_array_equal(storage.employees.reference_features("E1")[0], features_of(1))
    finally:
        storage.close()
    ref.path.unlink()
    storage = Storage.open()
    try:
        assert "missing" in storage.health.damage[0].photo
    finally:
        storage.close()


# -- item 8: encrypted at rest ----------------------------------------------------------------------------------
def test_photos_and_features_are_encrypted_at_rest_with_a_private_key_file():
    make_store(employees=2)
    assert mode(key_path()) == 0o600 and key_path().parent != data_dir()
    storage = Storage.open()
    try:
        refs = [r for e in ("E0", "E1") for r in storage.employees.references(e)]
        for ref in refs:
            raw = ref.path.read_bytes()
            assert raw.startswith(FORMAT) and b"\xff\xd8\xff" not in raw[:64] and mode(ref.path) == 0o600
            assert cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR) is None
    finally:
        storage.close()
    raw = db_bytes()
    for i in range(2):
        assert features_of(i).astype("<f4").tobytes() not in raw


def test_a_missing_or_wrong_key_file_is_a_clear_error_and_no_new_key_is_made(capsys):
    make_store(employees=2)
    key = key_path().read_bytes()
    key_path().unlink()
    for readonly in (False, True):
        with pytest.raises(KeyMissingError, match=r"data key .* is missing: the 2 reference photo\(s\) .*cannot be "
                                                  r"read without it.*No new key"):
            Storage.open(readonly=readonly)
    assert not key_path().exists()
    assert cli.main(["check"]) == cli.EXIT_BAD_INPUT and "is missing" in capsys.readouterr().err
    create_key(key_path())  # another key
    with pytest.raises(KeyMissingError, match="is not the key of"):
        Storage.open()
    key_path().write_text("garbage\n")
    with pytest.raises(KeyMissingError, match="damaged"):
        Storage.open()
    key_path().write_bytes(key)
    Storage.open().close()


# -- migration of an old plain store ------------------------------------------------------------------------
def make_plain_store(count: int) -> dict[str, tuple[np.ndarray, bytes]]:
    """A data folder as the kiosk wrote it before encryption (schema 1): plain JPEG files, float32 BLOBs."""
    folder = data_dir()
    (folder / "photos").mkdir(parents=True, mode=0o700)
    conn = sqlite3.connect(folder / db_module.DB_NAME, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (1)")
    for statement in db_module.MIGRATIONS[1]:
        conn.execute(statement)
    expected = {}
    for i in range(count):
        file = f"{uuid.uuid4().hex}.jpg"
        jpeg = cv2.imencode(".jpg", image_of(i), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        (folder / "photos" / file).write_bytes(jpeg)
        conn.execute("INSERT INTO employees VALUES (?, ?, ?)", (f"E{i}", f"Person {i}", "2024-01-01T00:00:00+00:00"))
        conn.execute("INSERT INTO reference_photos (employee_id, file, features, feature_dim, model_sha, created) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (f"E{i}", file, features_of(i).astype("<f4").tobytes(), DIM, MODEL,
                                                   "2024-01-01T00:00:00+00:00"))
        expected[f"E{i}"] = (features_of(i), jpeg)
    conn.execute("INSERT INTO audit_log (time, claimed_id, score, verdict, reason) VALUES "
                 "('2024-01-01T00:00:00+00:00', 'E0', 0.9, 'ACCEPT', 'face matches')")
    conn.execute("COMMIT")
    conn.close()
    return expected


def assert_migrated(expected: dict[str, tuple[np.ndarray, bytes]]) -> None:
    storage = Storage.open()
    try:
        assert storage.db.schema_version == db_module.SCHEMA_VERSION and storage.health.ok, storage.health.summary
        assert storage.db.query_one("SELECT COUNT(*) FROM reference_photos WHERE encrypted = 0")[0] == 0
        for employee_id, (features, jpeg) in expected.items():
            [ref] = storage.employees.references(employee_id)
            np.testing.assert_array_equal(ref.features, features)
            np.testing.assert_array_equal(storage.employees.load_photo(ref),
                                          cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
            assert ref.path.read_bytes().startswith(FORMAT)
        assert_no_stray_files(storage)
        assert [e.claimed_id for e in storage.audit.entries(kind="decision")] == ["E0"]  # + the upgrade's events
    finally:
        storage.close()
    raw = db_bytes()
    assert not any(features.astype("<f4").tobytes() in raw for features, _ in expected.values())
    assert not list((data_dir() / "photos").glob("*.jpg")) and mode(key_path()) == 0o600


def test_an_old_plain_store_is_encrypted_in_place():
    expected = make_plain_store(12)
    assert not key_path().exists()
    assert_migrated(expected)


class Crash(Exception):
    """Stands for the power going off."""


def test_an_interrupted_migration_resumes_and_loses_nothing(monkeypatch):
    expected = make_plain_store(8)
    real_update, real_remove = sealing_module._update_row, sealing_module._remove_plain
    calls = {"update": 0, "remove": 0}

    def update_then_crash(*args):  # 3rd row: its sealed file is written, the row not yet changed
        calls["update"] += 1
        if calls["update"] == 3:
            raise Crash()
        return real_update(*args)

    monkeypatch.setattr(sealing_module, "_update_row", update_then_crash)
    with pytest.raises(Crash):
        Storage.open()
    assert len(list((data_dir() / "photos").glob("*.enc"))) == 3  # 2 rows done + 1 orphan

    def remove_then_crash(path):  # next row: committed, its plain file not yet deleted
        calls["remove"] += 1
        if calls["remove"] == 1:
            raise Crash()
        return real_remove(path)

    monkeypatch.setattr(sealing_module, "_update_row", real_update)
    monkeypatch.setattr(sealing_module, "_remove_plain", remove_then_crash)
    with pytest.raises(Crash):
        Storage.open()
    monkeypatch.setattr(sealing_module, "_remove_plain", real_remove)
    assert_migrated(expected)  # the third open finishes, and removes both orphans


@pytest.mark.slow
def test_kill_9_during_migration_resumes_and_loses_nothing():
    expected = make_plain_store(300)
    rng = random.Random(8)
    for _ in range(5):
        child = run_child("""
            print("start", flush=True)
            from kiosk.storage import Storage
            Storage.open().close()
            print("done", flush=True)
        """)
        wait_for_line(child, "start")
        time.sleep(rng.uniform(0.3, 1.2))
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
    assert_migrated(expected)


# -- backup and restore -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_backup_and_restore_bring_back_a_corrupted_store(tmp_path, capsys):
    make_store(employees=20, audit_rows=2000)
    dest = tmp_path / "backup"
    assert cli.main(["backup", str(dest)]) == 0
    assert "backup written" in capsys.readouterr().out
    assert {p.name for p in dest.iterdir()} == {"MANIFEST.json", db_module.DB_NAME, "photos"}
    assert mode(dest) == 0o700 and mode(dest / db_module.DB_NAME) == 0o600
    assert len(list((dest / "photos").iterdir())) == 20
    storage = Storage.open()
    storage.employees.enrol("LATE", "After the backup", [photo(99)], MODEL)
    storage.close()
    corrupt_middle(db_path())
    with pytest.raises(StoreDamagedError):
        Storage.open()
    assert cli.main(["restore", str(dest)]) == 0
    out = capsys.readouterr().out
    assert "restored from" in out and "replaced-" in out
    storage = Storage.open()
    try:
        assert storage.health.ok and storage.employees.count() == 20 and storage.employees.get("LATE") is None
        for i in range(20):
            np.testing.assert_array_equal(storage.employees.reference_features(f"E{i}")[0], features_of(i))
            storage.employees.load_photo(storage.employees.references(f"E{i}")[0])
        assert len(storage.audit.entries(limit=10_000)) == 2000
        assert_no_stray_files(storage)
    finally:
        storage.close()
    [aside] = list(data_dir().glob("replaced-*"))
    assert (aside / db_module.DB_NAME).is_file() and (aside / "photos").is_dir()  # the damaged data, kept
    assert cli.main(["backup", str(dest)]) == cli.EXIT_BAD_INPUT  # never over an existing backup


def test_restore_refuses_a_changed_backup_or_the_wrong_key(tmp_path, capsys):
    make_store(employees=2)
    dest = tmp_path / "backup"
    assert cli.main(["backup", str(dest)]) == 0
    before = hashlib.sha256(db_path().read_bytes()).hexdigest()
    some_photo = next((dest / "photos").iterdir())
    original = some_photo.read_bytes()
    some_photo.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    assert cli.main(["restore", str(dest)]) == cli.EXIT_BAD_INPUT
    assert "was changed" in capsys.readouterr().err
    some_photo.write_bytes(original)
    key = key_path().read_bytes()
    key_path().unlink()
    create_key(key_path())
    assert cli.main(["restore", str(dest)]) == cli.EXIT_BAD_INPUT
    assert "not the key this backup was made with" in capsys.readouterr().err
    key_path().write_bytes(key)
    assert cli.main(["restore", str(tmp_path)]) == cli.EXIT_BAD_INPUT
    assert "not a kiosk backup" in capsys.readouterr().err
    assert hashlib.sha256(db_path().read_bytes()).hexdigest() == before


class FailingRename:
    """os, except that rename fails on call number ``fail_at`` (the power goes off mid-swap)."""

    def __init__(self, fail_at: int):
        self.fail_at, self.calls = fail_at, 0

    def rename(self, *args):
        self.calls += 1
        if self.calls == self.fail_at:
            raise Crash()
        return os.rename(*args)

    def __getattr__(self, name):
        return getattr(os, name)


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4])
def test_an_interrupted_restore_is_finished_by_the_next_writer(tmp_path, monkeypatch, fail_at):
    make_store(employees=3)
    dest = tmp_path / "backup"
    assert cli.main(["backup", str(dest)]) == 0
    storage = Storage.open()
    storage.employees.enrol("LATE", "After the backup", [photo(99)], MODEL)
    storage.close()
    monkeypatch.setattr(backup_module, "os", FailingRename(fail_at))
    with pytest.raises(Crash):
        backup_module.restore(dest)
    monkeypatch.setattr(backup_module, "os", os)
    storage = Storage.open()  # finishes the staged restore before anything else
    try:
        assert storage.employees.get("LATE") is None and storage.employees.count() == 3 and storage.health.ok
    finally:
        storage.close()
    assert not (data_dir() / ".restore").exists()


def test_a_tampered_photo_file_name_never_reads_or_deletes_outside_the_photos_folder(tmp_path):
    import numpy as np

    from kiosk.storage import NewPhoto, Storage, StorageError

    storage = Storage.open(tmp_path / "data")
    outside = tmp_path / "data.key.copy"
    outside.write_bytes(b"precious")
    try:
        storage.employees.enrol("E1", "Ann", [NewPhoto(np.full((60, 60, 3), 120, np.uint8), np.ones(4))], "m")
        with storage.db.transaction() as conn:
            conn.execute("UPDATE reference_photos SET file = ? WHERE employee_id = 'E1'", ("../../data.key.copy",))
        ref = None
        with pytest.raises(StorageError, match="not a plain name"):
            ref = storage.employees.references("E1")
        assert ref is None
        storage.employees.delete("E1")  # the row goes; the file it names stays where it is
        assert outside.read_bytes() == b"precious" and storage.employees.get("E1") is None
    finally:
        storage.close()
