"""The data key: 32 random bytes, kept apart from the data it protects; its key file says where.

A copy of the data folder (a stolen disk image, a backup) is useless without the key. The key's ID is
recorded in the database; a missing key is never replaced by a new one while sealed data exists (that
would make nothing readable and hide the real problem), a wrong key is named as such, and a key is
recorded only when it opens the store's sealed data (a wrong key put in place of a lost one, in a store that
had lost its record of the key's ID, was recorded, after which the right key was refused).

The key file (``data.key`` in the config folder; ``KIOSK_KEY_FILE`` puts it elsewhere, a removable medium, a
secrets mount) holds the key itself (the ``file`` provider) or names where it is: the OS keyring, a
passphrase-wrapped key, a systemd credential (kiosk.storage.keyproviders; a new key goes to
``KIOSK_KEY_PROVIDER``, ``kiosk key migrate`` moves one). A key file its group or others may read is refused,
naming the chmod that fixes it (kiosk.storage.secretfile, the rule of every secret file).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from kiosk.io.files import PRIVATE_FILE, atomic_writer, private_dir
from kiosk.paths import config_dir
from kiosk.storage import keyproviders
from kiosk.storage.crypto import KEY_BYTES, DamagedDataError, KeyMissingError, Sealer, features_aad, key_id
from kiosk.storage.db import Database
from kiosk.storage.secretfile import read_secret_file

__all__ = ["KEY_NAME", "KeyMissingError", "create_key", "key_path", "read_key", "sealed_count", "unlock"]

log = logging.getLogger(__name__)

KEY_NAME = "data.key"


def key_path(config: str | Path | None = None) -> Path:
    """Where the data key is: KIOSK_KEY_FILE, else data.key in ``config`` (default: config_dir())."""
    value = os.environ.get("KIOSK_KEY_FILE")
    if value:
        return Path(value).expanduser()
    return (Path(config) if config else config_dir()) / KEY_NAME


def read_key(path: Path) -> bytes | None:
    """The key, or None if there is no key file; KeyMissingError if it cannot be read, is damaged or may be
    read by others (kiosk.storage.secretfile), or if the place it names does not give the key (the keyring
    unreachable or without the entry, a wrong passphrase, no such systemd credential: the error names the
    provider and the way back)."""
    path = Path(path)
    text = read_secret_file(path, "the data key", KeyMissingError, encoding="ascii", missing_ok=True)
    if text is None:
        return None
    return keyproviders.load(path, text)


def new_key_provider() -> str:
    """Where a new key goes: KIOSK_KEY_PROVIDER (file, keyring, passphrase, systemd), default file."""
    wanted = os.environ.get(keyproviders.PROVIDER_ENV, "").strip().lower() or keyproviders.FILE
    if wanted not in keyproviders.PROVIDERS:
        raise KeyMissingError(f"{keyproviders.PROVIDER_ENV}={wanted!r} is no key provider; one of: "
                              f"{', '.join(keyproviders.PROVIDERS)}")
    return wanted


def create_key(path: Path, provider: str | None = None, passphrase: str | None = None) -> bytes:
    """A new random key, written complete or not at all, never over an existing key file. It goes to
    ``provider`` (default: KIOSK_KEY_PROVIDER, else the plain file); ``systemd`` adopts the key of the
    credential this process was given (a read-only provider makes no key)."""
    path = Path(path)
    provider = provider or new_key_provider()
    private_dir(path.parent)
    if provider == keyproviders.SYSTEMD:
        key = keyproviders.systemd_credential_key()
        if key is None:
            raise KeyMissingError(f"{keyproviders.PROVIDER_ENV}=systemd, and this process was given no systemd "
                                  f"credential '{keyproviders.CREDENTIAL}' (a read-only provider: it makes no key). "
                                  f"Make one: head -c 32 /dev/urandom | base64 | systemd-creds encrypt --with-key=tpm2 "
                                  f"--name={keyproviders.CREDENTIAL} - /etc/credstore.encrypted/"
                                  f"{keyproviders.CREDENTIAL}, and pass it with LoadCredentialEncrypted=")
    else:
        key = os.urandom(KEY_BYTES)
    if provider == keyproviders.PASSPHRASE and passphrase is None:
        passphrase = keyproviders.get_passphrase(path, new=True)  # asked once (twice at a terminal), used twice
    text = keyproviders.store(provider, key, path, passphrase)
    if provider != keyproviders.FILE and keyproviders.load(path, text, passphrase, remembered=False) != key:
        raise KeyMissingError(f"the new data key did not read back from {keyproviders.LABELS[provider]}; nothing "
                              f"was written to {path}")
    try:
        with atomic_writer(path, PRIVATE_FILE, replace=False) as handle:
            handle.write(text.encode("ascii"))
    except FileExistsError:
        if provider == keyproviders.KEYRING:  # another process made its key first: ours is no one's
            keyproviders.discard(keyproviders.parse(text, path)[1])
        return read_key(path)
    log.info("created the data key %s in %s, %s (keep a copy of it apart from the data folder: kiosk key export)",
             key_id(key), keyproviders.LABELS[provider], path)
    return key


def sealed_count(db: Database) -> int:
    return int(db.query_one("SELECT COUNT(*) FROM reference_photos WHERE encrypted = 1")[0])


def opens_sealed(db: Database, sealer: Sealer) -> bool:
    """Whether ``sealer``'s key opens the store's sealed data: the first sealed feature vector that opens says
    yes (an AES-GCM tag does not open under another key); none opening says no."""
    for employee_id, file, blob in db.query("SELECT employee_id, file, features FROM reference_photos "
                                            "WHERE encrypted = 1 ORDER BY id"):
        try:
            sealer.open(bytes(blob), features_aad(employee_id, file))
            return True
        except DamagedDataError:
            continue
    return False


def unlock(db: Database, create: bool, path: Path | None = None) -> Sealer | None:
    """The Sealer for this store, with the key at ``path`` (default: key_path()). Makes a key only when
    ``create`` and the store has no sealed data yet. None only for a read-only look at a store that holds no
    sealed data and has no key. A store without a record of its key's ID records it only for a key that opens
    its sealed data."""
    path = key_path() if path is None else Path(path)
    key = read_key(path)
    expected = db.meta("key_id")
    sealed = sealed_count(db)
    if key is None:
        if expected or sealed:
            raise KeyMissingError(
                f"the data key {path} is missing: the {sealed} reference photo(s) and feature vector(s) in "
                f"{db.path.parent} are encrypted with it and cannot be read without it. Put the key file back "
                f"(from the copy you kept; KIOSK_KEY_FILE if it lives elsewhere; where the key was kept in the OS "
                f"keyring, a passphrase or a systemd credential, this file said where: put back a copy of it, or the "
                f"key itself with {keyproviders.IMPORT_HINT}) and start again. No new key was made: it could not "
                f"read the existing data")
        if not create:
            return None
        key = create_key(path)
    sealer = Sealer(key)
    if expected and expected != sealer.key_id:
        raise KeyMissingError(f"the data key {path} (ID {sealer.key_id}) is not the key of {db.path.parent} "
                              f"(ID {expected}): put back the right key file")
    if not expected and sealed and not opens_sealed(db, sealer):
        raise KeyMissingError(f"the data key {path} (ID {sealer.key_id}) does not open the {sealed} sealed reference "
                              f"photo(s) and feature vector(s) in {db.path.parent}: it is not their key (or every one "
                              f"of them is damaged). It was not recorded as the store's key; put back the right key "
                              f"file")
    if not expected and create:
        db.set_meta("key_id", sealer.key_id)
    return sealer
