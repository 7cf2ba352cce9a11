"""Backup and restore of a data folder as one consistent snapshot: the database (SQLite's online backup
API) and the photo files it refers to, with a manifest of SHA-256 sums written last. The manifest is
authenticated: an HMAC-SHA-256 over it under a key derived from the data key, so whoever can write a backup
folder but lacks the key cannot make one (a crafted backup stored an attacker's face as an employee, #25).

A backup is taken with the writer lock held (no other process writes) and the database's thread lock held
(no other thread of this process writes), so the database copy and the photo files belong together. It
is written to a hidden folder beside DEST and renamed into place when complete. The photos and features
stay sealed: a backup is useless without the data key, which it does not contain (keep the key apart).

A restore verifies the backup (the manifest's MAC under this kiosk's data key, every sum, ``quick_check``,
every file name a plain one, every referenced photo present), stages it in ``DATA/.restore`` and marks it READY, then moves the current database
and photos aside into ``DATA/replaced-<time>`` and the staged ones into place. Interrupted after READY,
the next writer to open the folder finishes the swap (``finish_restore``); interrupted before, the
staged copy is discarded and nothing has changed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from kiosk.io.files import atomic_write_text, fsync_path, private_dir
from kiosk.storage.audit import anchor_restore
from kiosk.storage.crypto import key_id
from kiosk.storage.db import DB_NAME, StorageError
from kiosk.storage.employees import photo_file
from kiosk.storage.keys import read_key
from kiosk.storage.lock import acquire_writer_lock
from kiosk.storage.places import StoragePaths

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
FORMAT = 2  # 2: the manifest carries a MAC (1, unauthenticated, is refused)
_MAC_LABEL = b"siamese-kiosk backup manifest 2"
STAGE = ".restore"
READY = "READY"
PHOTOS = "photos"


@dataclass(frozen=True)
class BackupInfo:
    folder: Path
    references: int
    photos: int
    missing: list[str]
    key_id: str | None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_mac(data_key: bytes, manifest: dict) -> str:
    """HMAC-SHA-256 of the manifest (all but its "mac") under a key derived from the data key. The manifest
    holds the SHA-256 of the database and of every photo, so the MAC covers the whole backup."""
    body = {k: v for k, v in manifest.items() if k != "mac"}
    mac_key = hmac.new(data_key, _MAC_LABEL, hashlib.sha256).digest()
    return hmac.new(mac_key, json.dumps(body, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def _backup_key(storage) -> bytes:
    """The data key the store was opened with (a backup is authenticated with it)."""
    key = read_key(storage.paths.key_file) if getattr(storage, "paths", None) is not None else None
    if key is None or key_id(key) != storage.db.meta("key_id"):
        raise StorageError("a backup is authenticated with the data key, and this store's key cannot be read; "
                           "nothing was written")
    return key


def _copy(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    os.chmod(target, 0o600)
    fsync_path(target)


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def _open_readonly(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)


# -- backup ------------------------------------------------------------------------------------------------
def backup(storage, dest: str | Path) -> BackupInfo:
    """Write a backup of ``storage`` (opened for writing: it holds the writer lock) to the new folder DEST."""
    dest = Path(dest)
    if storage.lock is None:
        raise StorageError("a backup needs the store opened for writing (the writer lock)")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise StorageError(f"{dest}: already exists and is not an empty folder; choose a new folder")
    data_key = _backup_key(storage)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    private_dir(staging)  # 0700 itself, not only its photos folder
    private_dir(staging / PHOTOS)
    try:
        photos_dir = storage.employees.photos_dir
        with storage.db.exclusive():
            storage.db.backup_to(staging / DB_NAME)
            conn = _open_readonly(staging / DB_NAME)
            try:
                files = [f for (f,) in conn.execute("SELECT file FROM reference_photos ORDER BY id")]
            finally:
                conn.close()
            copied, missing = {}, []
            for file in files:
                if photo_file(photos_dir, file).is_file():
                    _copy(photo_file(photos_dir, file), staging / PHOTOS / file)
                    copied[file] = _sha256(staging / PHOTOS / file)
                else:
                    missing.append(file)
        os.chmod(staging / DB_NAME, 0o600)
        fsync_path(staging / DB_NAME)
        problems = _quick_check(staging / DB_NAME)
        if problems:
            raise StorageError(f"the backup copy does not check out ({problems[0]}); nothing was written")
        key = storage.db.meta("key_id")
        manifest = {"format": FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "source": str(storage.folder), "schema": storage.db.schema_version, "key_id": key,
                    "database_sha256": _sha256(staging / DB_NAME), "references": len(files),
                    "photos": copied, "missing_photos": missing}
        manifest["mac"] = manifest_mac(data_key, manifest)
        atomic_write_text(staging / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        fsync_path(staging / PHOTOS)
        if dest.exists():
            dest.rmdir()
        os.rename(staging, dest)
        fsync_path(dest.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if missing:
        log.warning("backup %s: %d referenced photo file(s) were already missing", dest, len(missing))
    log.info("backup of %s written to %s (%d reference(s))", storage.folder, dest, len(files))
    return BackupInfo(dest, len(files), len(copied), missing, key)


def _quick_check(path: Path) -> list[str]:
    try:
        conn = _open_readonly(path)
        try:
            rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check(20)").fetchall()]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return [str(exc)]
    return [] if rows == ["ok"] else rows


# -- restore -----------------------------------------------------------------------------------------------
def verify_backup(source: str | Path, data_key: bytes | None) -> dict:
    """The backup's manifest, once everything in the backup checks out, first of all its MAC under
    ``data_key`` (this kiosk's data key); StorageError naming what does not."""
    source = Path(source)
    try:
        manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        raise StorageError(f"{source}: not a kiosk backup (no {MANIFEST}; an interrupted backup has none)") from None
    except (OSError, ValueError) as exc:
        raise StorageError(f"{source}: the backup's {MANIFEST} is damaged ({exc})") from None
    _authenticate(source, manifest, data_key)
    try:
        photos = dict(manifest["photos"])
        db_sum = str(manifest["database_sha256"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"{source}: the backup's {MANIFEST} is damaged ({exc})") from None
    db_path = source / DB_NAME
    if not db_path.is_file() or _sha256(db_path) != db_sum:
        raise StorageError(f"{source}: the backup's database is missing or was changed (checksum mismatch)")
    problems = _quick_check(db_path)
    if problems:
        raise StorageError(f"{source}: the backup's database is damaged ({problems[0]})")
    for file, digest in photos.items():
        path = source / PHOTOS / file
        if Path(file).name != file or not path.is_file() or _sha256(path) != digest:
            raise StorageError(f"{source}: the backup's photo {file} is missing or was changed (checksum mismatch)")
    conn = _open_readonly(db_path)
    try:
        referenced = {f for (f,) in conn.execute("SELECT file FROM reference_photos")}
    finally:
        conn.close()
    for file in referenced | set(photos) | set(manifest.get("missing_photos") or []):
        photo_file(source / PHOTOS, file)  # every name a plain one inside the photos folder, or refused
    unlisted = referenced - set(photos) - set(manifest.get("missing_photos") or [])
    if unlisted:
        raise StorageError(f"{source}: the backup lacks {len(unlisted)} photo file(s) its database refers to")
    return manifest


def _authenticate(source: Path, manifest: dict, data_key: bytes | None) -> None:
    """Refuse a backup this kiosk's data key did not make: an old unauthenticated one, a plain or crafted one,
    or one made with another key."""
    if manifest.get("format") == 1:
        raise StorageError(f"{source}: this backup was made before backups were authenticated, so nothing proves "
                           f"it was not crafted; it is refused. Take a new backup with this version")
    if manifest.get("format") != FORMAT:
        raise StorageError(f"{source}: not a backup format this kiosk knows ({manifest.get('format')!r})")
    if data_key is None:
        raise StorageError(f"{source}: a backup is checked with the data key, and there is none here: put the key "
                           f"file back first")
    wanted = manifest.get("key_id")
    if wanted != key_id(data_key):
        raise StorageError(f"the data key here (ID {key_id(data_key)}) is not the key this backup was made with "
                           f"(ID {wanted}): put back the right key file first")
    if not hmac.compare_digest(str(manifest.get("mac", "")), manifest_mac(data_key, manifest)):
        raise StorageError(f"{source}: the backup's {MANIFEST} does not authenticate under the data key: it was "
                           f"changed or not made by a kiosk with this key; it is refused")


def restore(source: str | Path, folder: str | Path | None = None, config: str | Path | None = None,
            key_file: str | Path | None = None) -> Path:
    """Replace the data folder's database and photos with the backup SOURCE; returns the folder where the
    replaced data was kept. Takes the writer lock (StoreInUseError while a kiosk runs on the folder).
    ``folder``, ``config``, ``key_file``: as for Storage.open (kiosk.storage.places)."""
    source = Path(source)
    paths = StoragePaths.resolve(folder, config, key_file)
    folder = private_dir(paths.data)
    data_key = read_key(paths.key_file)
    manifest = verify_backup(source, data_key)
    lock = acquire_writer_lock(folder)
    try:
        finish_restore(folder)  # an earlier interrupted restore first
        stage = folder / STAGE
        shutil.rmtree(stage, ignore_errors=True)
        private_dir(stage)
        private_dir(stage / PHOTOS)
        target = sqlite3.connect(stage / DB_NAME)
        try:
            conn = _open_readonly(source / DB_NAME)
            try:
                conn.backup(target)
            finally:
                conn.close()
        finally:
            target.close()
        os.chmod(stage / DB_NAME, 0o600)
        fsync_path(stage / DB_NAME)
        for file in manifest["photos"]:
            _copy(source / PHOTOS / file, stage / PHOTOS / file)
        fsync_path(stage / PHOTOS)
        anchor_restore(paths.audit_anchor, data_key, stage / DB_NAME)  # an audited rollback
        aside = f"replaced-{_stamp()}"
        atomic_write_text(stage / READY, aside + "\n")
        fsync_path(stage)
        finish_restore(folder)
    finally:
        lock.release()
    log.info("restored %s from %s; the replaced data is in %s", folder, source, folder / aside)
    return folder / aside


def finish_restore(folder: Path) -> bool:
    """Complete a restore that was staged (READY) but not swapped in; discard one that was not staged
    completely. Call with the writer lock held. True if a staged restore was put in place."""
    stage = folder / STAGE
    if not stage.exists():
        return False
    ready = stage / READY
    if not ready.is_file():
        shutil.rmtree(stage, ignore_errors=True)  # interrupted while staging: the live data was not touched
        return False
    aside = private_dir(folder / ready.read_text(encoding="ascii").strip())
    if (stage / DB_NAME).exists():  # the staged database is not in place yet: move the current one aside
        for suffix in ("", "-wal", "-shm"):  # its WAL too: an old WAL must never meet the new database
            current = folder / f"{DB_NAME}{suffix}"
            if current.exists():
                os.rename(current, aside / current.name)
        os.rename(stage / DB_NAME, folder / DB_NAME)
    if (stage / PHOTOS).exists():
        if (folder / PHOTOS).exists():
            os.rename(folder / PHOTOS, aside / PHOTOS)
        os.rename(stage / PHOTOS, folder / PHOTOS)
    fsync_path(folder)
    shutil.rmtree(stage)
    log.warning("restore of %s completed; the data it replaced is kept in %s (delete it when no longer needed)",
                folder, aside)
    return True
