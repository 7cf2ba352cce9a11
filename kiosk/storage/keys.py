"""The data key: 32 random bytes in a 0600 file in the config folder, apart from the data it protects.

A copy of the data folder (a stolen disk image, a backup) is useless without the key. The key's ID is
recorded in the database; a missing key is never replaced by a new one while sealed data exists (that
would make nothing readable and hide the real problem), a wrong key is named as such.
``KIOSK_KEY_FILE`` puts the key elsewhere (a removable medium, a secrets mount). A key file its group or
others may read is refused, naming the chmod that fixes it (kiosk.storage.secretfile, the rule of every
secret file).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from pathlib import Path

from kiosk.io.files import PRIVATE_FILE, atomic_writer, private_dir
from kiosk.paths import config_dir
from kiosk.storage.crypto import KEY_BYTES, Sealer
from kiosk.storage.db import Database, StorageError
from kiosk.storage.secretfile import read_secret_file

log = logging.getLogger(__name__)

KEY_NAME = "data.key"
_HEADER = "# Siamese Kiosk data key: keep it apart from the data folder and keep a copy of it in a safe place;\n" \
          "# without it the reference photos and features cannot be read.\n"


class KeyMissingError(StorageError):
    """The store holds sealed data but its key file is missing, unreadable or wrong."""


def key_path(config: str | Path | None = None) -> Path:
    """Where the data key is: KIOSK_KEY_FILE, else data.key in ``config`` (default: config_dir())."""
    value = os.environ.get("KIOSK_KEY_FILE")
    if value:
        return Path(value).expanduser()
    return (Path(config) if config else config_dir()) / KEY_NAME


def read_key(path: Path) -> bytes | None:
    """The key, or None if there is no key file; KeyMissingError if it cannot be read, is damaged or may be
    read by others (kiosk.storage.secretfile)."""
    text = read_secret_file(path, "the data key", KeyMissingError, encoding="ascii", missing_ok=True)
    if text is None:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    try:
        key = base64.b64decode(lines[-1], validate=True) if lines else b""
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyMissingError(f"the data key {path} is damaged (not a {KEY_BYTES}-byte key); put back the copy "
                              f"you kept of it")
    return key


def create_key(path: Path) -> bytes:
    """A new random key, written complete or not at all, never over an existing file."""
    private_dir(path.parent)
    key = os.urandom(KEY_BYTES)
    try:
        with atomic_writer(path, PRIVATE_FILE, replace=False) as handle:
            handle.write((_HEADER + base64.b64encode(key).decode("ascii") + "\n").encode("ascii"))
    except FileExistsError:
        return read_key(path)
    log.info("created the data key %s (keep a copy of it apart from the data folder)", path)
    return key


def sealed_count(db: Database) -> int:
    return int(db.query_one("SELECT COUNT(*) FROM reference_photos WHERE encrypted = 1")[0])


def unlock(db: Database, create: bool, path: Path | None = None) -> Sealer | None:
    """The Sealer for this store, with the key at ``path`` (default: key_path()). Makes a key only when
    ``create`` and the store has no sealed data yet. None only for a read-only look at a store that holds no
    sealed data and has no key."""
    path = key_path() if path is None else Path(path)
    key = read_key(path)
    expected = db.meta("key_id")
    sealed = sealed_count(db)
    if key is None:
        if expected or sealed:
            raise KeyMissingError(
                f"the data key {path} is missing: the {sealed} reference photo(s) and feature vector(s) in "
                f"{db.path.parent} are encrypted with it and cannot be read without it. Put the key file back "
                f"(from the copy you kept; KIOSK_KEY_FILE if it lives elsewhere) and start again. No new key was "
                f"made: it could not read the existing data")
        if not create:
            return None
        key = create_key(path)
    sealer = Sealer(key)
    if expected and expected != sealer.key_id:
        raise KeyMissingError(f"the data key {path} (ID {sealer.key_id}) is not the key of {db.path.parent} "
                              f"(ID {expected}): put back the right key file")
    if not expected and create:
        db.set_meta("key_id", sealer.key_id)
    return sealer
