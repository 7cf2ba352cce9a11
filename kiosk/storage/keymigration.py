"""Moving the data key between providers (``kiosk key migrate --to PROVIDER``), resumable, never losing the key.

The key file is the one switch: until it is replaced it names the old place, afterwards the new one, and a
reader always finds the key through it (the file is replaced atomically). The steps, each recorded in a
journal beside the key file (``data.key.migration``, owner-only; it holds no more than the key file will):

1. **written**: the key is put in the new provider and read back from it (a keyring entry written and read;
   a passphrase-wrapped text made and opened; a systemd credential checked), then the journal is written with
   the key file's new text;
2. **switched**: the key file is replaced by that text (atomically) and read back through it;
3. **cleaned**: the key is removed from the old place (a keyring entry deleted; a plain file was replaced by
   step 2; a systemd credential is read-only: the admin is told what to remove); then the journal goes.

An interruption anywhere leaves the key readable through the key file: before step 2 from the old place, which
is untouched; after it from the new one, which was verified before. Running the same command again resumes
from the journal (a step already done is checked, not redone blindly); a different target while one move is
unfinished is refused, naming the command that finishes it. The store's recorded key ID is checked first, so a
wrong key is never moved anywhere.

``kiosk key export`` writes the key itself (a plain key file's text) for a copy kept apart, and ``kiosk key
import COPY`` puts such a copy back where the key file says (or ``--to``): the recovery of a lost keyring, a
forgotten passphrase or a lost credential.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from kiosk.io.files import PRIVATE_FILE, atomic_write_text, atomic_writer, private_dir
from kiosk.storage import keyproviders
from kiosk.storage.crypto import KeyMissingError, key_id
from kiosk.storage.db import DB_NAME, Database
from kiosk.storage.keys import create_key
from kiosk.storage.secretfile import read_secret_file

log = logging.getLogger(__name__)

WRITTEN, SWITCHED, CLEANED = "written", "switched", "cleaned"


@dataclass
class MoveResult:
    source: str            # the provider the key was in ("" when there was no key: made in the target)
    target: str
    key_id: str
    notes: list[str] = field(default_factory=list)


def after_step(step: str) -> None:
    """Called after each step with its name; tests replace it to interrupt a migration there."""


def store_key_id(data: Path | None) -> str | None:
    """The key ID the store in ``data`` has recorded (None: no store or no record)."""
    if data is None or not (Path(data) / DB_NAME).is_file():
        return None
    db = Database(Path(data) / DB_NAME, migrate=False, readonly=True)
    try:
        return db.meta("key_id")
    except Exception:  # noqa: BLE001 -- an old schema without meta: nothing recorded
        return None
    finally:
        db.close()


def _read_text(path: Path) -> str | None:
    return read_secret_file(path, "the data key", KeyMissingError, encoding="ascii", missing_ok=True)


def _read_journal(path: Path) -> dict | None:
    text = read_secret_file(path, "the data key's migration record", KeyMissingError, missing_ok=True)
    if text is None:
        return None
    try:
        journal = json.loads(text)
        if not (isinstance(journal, dict) and journal.get("to") in keyproviders.PROVIDERS
                and journal.get("step") in (WRITTEN, SWITCHED, CLEANED) and isinstance(journal.get("text"), str)):
            raise ValueError
    except ValueError:
        raise KeyMissingError(f"the data key's migration record {path} is damaged; the key file still names where "
                              f"the key is: remove the record and run the migration again") from None
    return journal


def _write_journal(path: Path, journal: dict) -> None:
    atomic_write_text(path, json.dumps(journal, sort_keys=True) + "\n", PRIVATE_FILE)


def _locator(text: str, path: Path) -> dict | None:
    provider, value = keyproviders.parse(text, path)
    return None if provider == keyproviders.FILE else value


def _check_store(key: bytes, expected: str | None, where: str) -> None:
    if expected and key_id(key) != expected:
        raise KeyMissingError(f"{where} holds a key (ID {key_id(key)}) that is not this store's (ID {expected}); "
                              f"nothing was moved")


def migrate(key_file: Path, target: str, data: Path | None = None, passphrase: str | None = None,
            credential: str = keyproviders.CREDENTIAL) -> MoveResult:
    """Move the data key named by ``key_file`` to ``target`` (a provider), resuming an interrupted move. The
    store in ``data`` (if any) must have recorded this key. No key yet: a new one is made in ``target``."""
    path = Path(key_file)
    if target not in keyproviders.PROVIDERS:
        raise KeyMissingError(f"unknown key provider {target!r}; one of: {', '.join(keyproviders.PROVIDERS)}")
    record = keyproviders.journal_path(path)
    journal = _read_journal(record)
    if journal is not None and journal["to"] != target:
        raise KeyMissingError(f"a move of the data key to {journal['to']} is unfinished: finish it first with "
                              f"'kiosk key migrate --to {journal['to']}' (the key is safe meanwhile)")
    text = _read_text(path)
    expected = store_key_id(data)
    source = keyproviders.provider_of(text, path) if text is not None else ""
    if target == keyproviders.PASSPHRASE and passphrase is None and source != keyproviders.PASSPHRASE:
        passphrase = keyproviders.get_passphrase(path, new=journal is None)  # asked once, used to wrap and verify
    if text is None:
        if journal is not None or expected:
            raise KeyMissingError(f"the data key {path} is missing, so there is nothing to move: put the key file "
                                  f"back, or the key itself with {keyproviders.IMPORT_HINT}")
        key = create_key(path, target, passphrase)
        return MoveResult("", target, key_id(key), [f"no key yet: a new one was made in "
                                                    f"{keyproviders.LABELS[target]}"])
    key = keyproviders.load(path, text, passphrase if source == keyproviders.PASSPHRASE else None)
    _check_store(key, expected, f"the key file {path}")
    if journal is None:
        if source == target and (target != keyproviders.SYSTEMD
                                 or (_locator(text, path) or {}).get("credential") == credential):
            return MoveResult(source, target, key_id(key), [f"the key is already in {keyproviders.LABELS[target]}"])
        new_text = keyproviders.store(target, key, path, passphrase, credential)
        _verify(path, new_text, key, passphrase, target)
        journal = {"from": source, "from_locator": _locator(text, path), "to": target, "key_id": key_id(key),
                   "text": new_text, "step": WRITTEN}
        private_dir(path.parent)
        _write_journal(record, journal)
        after_step(WRITTEN)
    else:
        source = journal.get("from", source)
        if journal.get("key_id") != key_id(key):
            raise KeyMissingError(f"the migration record {record} is for another key (ID {journal.get('key_id')}); "
                                  f"remove it and run the migration again")
    new_text = journal["text"]
    if journal["step"] == WRITTEN:
        if text != new_text:  # not switched yet: the new place checked again (it may have changed since)
            _verify(path, new_text, key, passphrase, target)
            with atomic_writer(path, PRIVATE_FILE) as handle:
                handle.write(new_text.encode("ascii"))
        if keyproviders.load(path, _read_text(path) or "", passphrase, remembered=False) != key:
            raise KeyMissingError(f"the key file {path} does not give the key after the switch; run the "
                                  f"migration again")
        journal["step"] = SWITCHED
        _write_journal(record, journal)
        after_step(SWITCHED)
    notes = []
    if journal["step"] == SWITCHED:
        old = journal.get("from_locator")
        same_entry = (old is not None and target == keyproviders.KEYRING
                      and old.get("entry") == (_locator(new_text, path) or {}).get("entry"))
        if not same_entry:
            notes.append(keyproviders.discard(old))
        journal["step"] = CLEANED
        journal["notes"] = notes
        _write_journal(record, journal)
        after_step(CLEANED)
    notes = list(journal.get("notes", notes))
    record.unlink(missing_ok=True)
    log.warning("the data key %s moved from %s to %s (%s)", key_id(key), keyproviders.LABELS.get(source, source),
                keyproviders.LABELS[target], "; ".join(notes))
    return MoveResult(source, target, key_id(key), notes)


def _verify(path: Path, text: str, key: bytes, passphrase: str | None, target: str) -> None:
    if keyproviders.load(path, text, passphrase, remembered=False) != key:
        raise KeyMissingError(f"the key did not read back from {keyproviders.LABELS[target]}; the key file was not "
                              f"changed")


def export_key(key_file: Path, data: Path | None = None) -> str:
    """The key itself, as a plain key file's text (for a copy kept apart, or ``systemd-creds encrypt``)."""
    path = Path(key_file)
    text = _read_text(path)
    if text is None:
        raise KeyMissingError(f"there is no data key at {path} to export")
    key = keyproviders.load(path, text)
    _check_store(key, store_key_id(data), f"the key file {path}")
    return keyproviders.key_text(key)


def import_key(key_file: Path, copy: Path, data: Path | None = None, target: str | None = None,
               passphrase: str | None = None, credential: str = keyproviders.CREDENTIAL) -> MoveResult:
    """Put the key of the plain key file ``copy`` (``kiosk key export``) back: into ``target``, else where the key
    file names, else KIOSK_KEY_PROVIDER's provider; the key file is then (re)written to name it. Refused for a key
    that is not the store's, or when the key file already gives another key."""
    path, copy = Path(key_file), Path(copy)
    copied = _read_text(copy)
    if copied is None:
        raise KeyMissingError(f"the copy {copy} does not exist")
    provider, key = keyproviders.parse(copied, copy)
    if provider != keyproviders.FILE:
        raise KeyMissingError(f"{copy} does not hold the key itself (it names {keyproviders.LABELS[provider]}): "
                              f"give the copy written by 'kiosk key export'")
    _check_store(key, store_key_id(data), f"the copy {copy}")
    text = _read_text(path)
    named = None
    if text is not None:
        try:
            named = keyproviders.parse(text, path)
        except KeyMissingError:
            named = None  # a damaged key file: replaced
    if named is not None:
        named_id = key_id(named[1]) if named[0] == keyproviders.FILE else named[1]["key_id"]
        if named_id != key_id(key):
            raise KeyMissingError(f"the key file {path} names another key (ID {named_id}) than the copy's "
                                  f"(ID {key_id(key)}); nothing was changed")
    from kiosk.storage.keys import new_key_provider  # noqa: PLC0415
    target = target or (named[0] if named is not None else new_key_provider())
    if target == keyproviders.PASSPHRASE and passphrase is None:
        passphrase = keyproviders.get_passphrase(path, new=True)
    new_text = keyproviders.store(target, key, path, passphrase, credential)
    _verify(path, new_text, key, passphrase, target)
    private_dir(path.parent)
    with atomic_writer(path, PRIVATE_FILE) as handle:
        handle.write(new_text.encode("ascii"))
    keyproviders.journal_path(path).unlink(missing_ok=True)  # a move that could not finish without the key
    log.warning("the data key %s put back from %s into %s", key_id(key), copy, keyproviders.LABELS[target])
    return MoveResult(named[0] if named else "", target, key_id(key),
                      [f"the key is back in {keyproviders.LABELS[target]}"])
