"""Backups are authenticated (#25 item 2): the manifest carries an HMAC under a key derived from the data key,
and a restore refuses a backup whose manifest, photos or database were changed with recomputed sums, an old
unauthenticated one, one with the MAC or key ID taken away, and another kiosk's backup relabelled as ours.
Each time the kiosk's own data stays as it was."""

from __future__ import annotations

import hashlib
import json

import pytest

from kiosk import cli
from kiosk.storage import Storage, StorageError
from kiosk.storage import backup as backup_module
from kiosk.storage.db import DB_NAME
from kiosk.storage.keys import read_key
from tests.test_hardening_store import db_path, make_store, photo


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest(dest):
    return json.loads((dest / backup_module.MANIFEST).read_text())


def _write_manifest(dest, manifest) -> None:
    (dest / backup_module.MANIFEST).write_text(json.dumps(manifest))


def _refused(dest, capsys, words: str) -> None:
    before = _digest(db_path())
    assert cli.main(["restore", str(dest)]) == cli.EXIT_BAD_INPUT
    assert words in capsys.readouterr().err
    assert _digest(db_path()) == before


@pytest.fixture
def genuine(tmp_path, capsys):
    make_store(employees=2)
    dest = tmp_path / "backup"
    assert cli.main(["backup", str(dest)]) == 0
    capsys.readouterr()
    manifest = _manifest(dest)
    assert manifest["format"] == 2 and len(manifest["mac"]) == 64
    return dest


def test_a_photo_swapped_with_its_sum_recomputed_is_refused(genuine, capsys):
    manifest = _manifest(genuine)
    [first, second] = sorted(manifest["photos"])
    (genuine / "photos" / first).write_bytes((genuine / "photos" / second).read_bytes())  # one face as another
    manifest["photos"][first] = _digest(genuine / "photos" / first)
    _write_manifest(genuine, manifest)
    _refused(genuine, capsys, "does not authenticate")


def test_a_database_swapped_with_its_sum_recomputed_is_refused(genuine, tmp_path, capsys):
    storage = Storage.open()
    storage.employees.enrol("INTRUDER", "Not an employee", [photo(77)], "m")
    storage.close()
    other = tmp_path / "later"
    assert cli.main(["backup", str(other)]) == 0
    manifest = _manifest(genuine)
    (genuine / DB_NAME).unlink()
    (genuine / DB_NAME).write_bytes((other / DB_NAME).read_bytes())
    manifest["database_sha256"] = _digest(genuine / DB_NAME)
    _write_manifest(genuine, manifest)
    capsys.readouterr()
    _refused(genuine, capsys, "does not authenticate")


@pytest.mark.parametrize("change", ["no mac", "old format", "no key id", "mac of another key"])
def test_an_unauthenticated_manifest_is_refused(genuine, capsys, change):
    manifest = _manifest(genuine)
    if change == "no mac":
        del manifest["mac"]
        words = "does not authenticate"
    elif change == "old format":
        manifest["format"] = 1
        del manifest["mac"]
        words = "before backups were authenticated"
    elif change == "no key id":
        manifest["key_id"] = None
        manifest["mac"] = backup_module.manifest_mac(b"k" * 32, manifest)
        words = "not the key this backup was made with"
    else:
        manifest["mac"] = backup_module.manifest_mac(b"k" * 32, manifest)
        words = "does not authenticate"
    _write_manifest(genuine, manifest)
    _refused(genuine, capsys, words)


def test_another_kiosks_backup_relabelled_as_ours_is_refused(tmp_path, capsys):
    make_store(employees=2)
    ours = Storage.open()
    our_key_id = ours.db.meta("key_id")
    ours.close()
    theirs = Storage.open(tmp_path / "attacker-data", config=tmp_path / "attacker-config")
    try:
        theirs.employees.enrol("E1", "The attacker", [photo(55)], "m")
        dest = tmp_path / "crafted"
        backup_module.backup(theirs, dest)
        key = read_key(theirs.paths.key_file)
    finally:
        theirs.close()
    manifest = _manifest(dest)
    manifest["key_id"] = our_key_id  # public: it is in our database in clear
    manifest["mac"] = backup_module.manifest_mac(key, manifest)
    _write_manifest(dest, manifest)
    _refused(dest, capsys, "does not authenticate")


def test_verify_backup_needs_the_key(genuine):
    with pytest.raises(StorageError, match="put the key file back"):
        backup_module.verify_backup(genuine, None)
