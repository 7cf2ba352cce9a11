"""Persistent state, Qt-free: employees and reference photos (SQLite + photo files), the audit log,
settings and the admin PIN. Everything holding biometric data is owner-only and encrypted at rest."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from kiosk.io.files import private_dir
from kiosk.storage.audit import (
    EVENT_AUDIT_ANCHOR,
    EVENT_AUDIT_CHAINED,
    EVENT_DELETE,
    EVENT_ENROL,
    EVENT_EXPORT,
    EVENT_KINDS,
    EVENT_LABELS,
    EVENT_LIVENESS,
    EVENT_LOCKOUT,
    EVENT_MODE,
    EVENT_MODEL,
    EVENT_PIN_CHANGED,
    EVENT_PIN_SET,
    EVENT_PIN_WRONG,
    EVENT_RE_ENROL,
    EVENT_SITE,
    EVENT_START,
    EVENT_STOP,
    EVENT_THRESHOLD,
    EVENT_UNLOCK,
    KIND_DECISION,
    AuditEntry,
    AuditLog,
    ChainBreak,
)
from kiosk.storage.backup import finish_restore
from kiosk.storage.connection import ConnectionInfo, ConnectionState, ConnectionStatus
from kiosk.storage.crypto import DamagedDataError, key_id
from kiosk.storage.db import RESTORE_ADVICE, SCHEMA_VERSION, Database, StorageError, StoreDamagedError
from kiosk.storage.employees import Employee, EmployeeStore, NewPhoto, ReferencePhoto, clean_employee_id, clean_name
from kiosk.storage.fleet.pgconn import database_url
from kiosk.storage.integrity import IntegrityReport, ReferenceDamage
from kiosk.storage.keys import KeyMissingError, read_key, unlock
from kiosk.storage.lock import StoreInUseError, WriterLock, acquire_writer_lock
from kiosk.storage.pin import PinError, PinManager, PinResult
from kiosk.storage.places import StoragePaths
from kiosk.storage.settings import Settings, SettingsStore
from kiosk.storage.stores import open_local_stores

__all__ = ["EVENT_AUDIT_ANCHOR", "EVENT_AUDIT_CHAINED", "EVENT_DELETE", "EVENT_ENROL", "EVENT_EXPORT", "EVENT_KINDS", "EVENT_LABELS", "EVENT_LOCKOUT",
           "EVENT_MODEL", "EVENT_SITE", "EVENT_PIN_CHANGED", "EVENT_PIN_SET", "EVENT_PIN_WRONG", "EVENT_RE_ENROL", "EVENT_START",
           "EVENT_STOP", "EVENT_THRESHOLD", "EVENT_LIVENESS", "EVENT_MODE", "EVENT_UNLOCK", "KIND_DECISION", "AuditEntry", "AuditLog", "ChainBreak", "ConnectionInfo", "ConnectionState", "ConnectionStatus",
           "DamagedDataError", "Database", "Employee", "EmployeeStore", "IntegrityReport", "KeyMissingError", "NewPhoto", "PinError", "PinManager", "PinResult",
           "ReferenceDamage", "ReferencePhoto", "Settings", "SettingsStore", "Storage", "StorageError",
           "StoragePaths", "StoreDamagedError", "StoreInUseError", "clean_employee_id", "clean_name"]

log = logging.getLogger(__name__)


def _data_key(sealer, path: Path) -> bytes | None:
    """The data key's bytes for the audit chain (the key the sealer was made from), or None without one."""
    if sealer is None:
        return None
    key = read_key(path)
    if key is None or key_id(key) != sealer.key_id:
        raise KeyMissingError(f"the data key {path} changed while the store was being opened; start again")
    return key


@dataclass
class Storage:
    """The database with its two views; ``Storage.open()`` uses data_dir() and config_dir() unless told
    other places (``paths``: where this store lives, and the only places it uses).

    ``health`` is what the self-check found at open (damaged references are reported there, and never used
    to verify); ``lock`` is the writer lock (None when opened read-only)."""

    db: Database
    employees: EmployeeStore
    audit: AuditLog
    lock: WriterLock | None = None
    health: IntegrityReport = field(default_factory=IntegrityReport)
    folder: Path | None = None
    connection: ConnectionStatus = field(default_factory=ConnectionStatus)  # EMBEDDED, or the registry's state
    link: object = None    # a fleet kiosk's kiosk.storage.fleet.sync.FleetLink (None: the embedded store)
    local: Database | None = None  # a fleet kiosk's fleet.sqlite3 (outbox, mirror bookkeeping)
    paths: StoragePaths | None = None  # None: the defaults (a Storage made by hand)
    data_key: bytes | None = field(default=None, repr=False)  # the key it was opened with (None: no key, read-only)

    @classmethod
    def open(cls, folder: str | Path | None = None, readonly: bool = False, url: str | None = None,
             config: str | Path | None = None, key_file: str | Path | None = None, **fleet_options) -> "Storage":
        """Open the store for writing (the one writer: StoreInUseError if another process writes) or, with
        ``readonly``, for looking only (no lock, nothing changed). Refuses a damaged database
        (StoreDamagedError) and sealed data without its key (KeyMissingError); finishes an interrupted
        restore, migrates the schema, encrypts an old plain store, removes orphaned photos, checks every
        reference.

        ``url`` (``--database``; default KIOSK_DATABASE_URL): a postgresql:// registry shared by a fleet of
        kiosks (kiosk.storage.fleet.stores); this folder then holds the kiosk's local copy and its audit outbox.

        ``folder`` (data), ``config`` (settings.json) and ``key_file`` (the data key): the places this store
        uses, and the only ones (kiosk.storage.places; defaults: data_dir(), config_dir(), KIOSK_KEY_FILE or
        data.key in the config folder)."""
        url = database_url(url)
        paths = StoragePaths.resolve(folder, config, key_file)
        folder = paths.data
        lock = None if readonly else acquire_writer_lock(private_dir(folder))
        db = None
        try:
            if lock is not None:
                finish_restore(folder)
            db = Database(paths.database, migrate=False, readonly=readonly)
            problems = db.quick_check()
            if problems:
                raise StoreDamagedError(f"{db.path}: the database is damaged (SQLite's check: "
                                        f"{'; '.join(problems[:3])}). The kiosk will not verify anyone with it and "
                                        f"has changed nothing; {RESTORE_ADVICE}")
            if readonly:
                if db.schema_version != SCHEMA_VERSION:
                    raise StorageError(f"{db.path}: schema {db.schema_version}, not {SCHEMA_VERSION}; open it "
                                       f"once with the kiosk (which upgrades it) first")
            else:
                db.migrate()
            sealer = unlock(db, create=not readonly, path=paths.key_file)
            data_key = _data_key(sealer, paths.key_file)
            if url is None:
                stores = open_local_stores(db, paths, sealer, lock, data_key, readonly)
            else:
                from kiosk.storage.fleet.stores import open_fleet_stores  # noqa: PLC0415 -- psycopg: fleet kiosks only
                stores = open_fleet_stores(url, db, paths, sealer, lock, data_key, readonly, **fleet_options)
            health = stores.health
            storage = cls(db, stores.employees, stores.audit, lock, health, folder, stores.connection, stores.link,
                          stores.local, paths, data_key)
        except BaseException:
            if db is not None:
                db.close()
            if lock is not None:
                lock.release()
            raise
        if not health.ok:
            log.error("%s", health.summary)
            for line in health.lines():
                log.error("store check: %s", line)
        return storage

    @property
    def is_fleet(self) -> bool:
        return self.link is not None

    def outbox_pending(self) -> int:
        """Audit entries of a fleet kiosk not yet in the registry (0 for the embedded store)."""
        return self.link.outbox.pending() if self.link is not None else 0

    def settings_store(self) -> SettingsStore:
        """This kiosk's settings: its settings.json; a fleet kiosk's with the fleet-wide ones (threshold,
        liveness, admin PIN) from the registry (kiosk.storage.fleet.settings)."""
        own = SettingsStore(self.paths.settings_file if self.paths else None)
        if self.link is None:
            return own
        from kiosk.storage.fleet.settings import FleetSettingsStore  # noqa: PLC0415
        return FleetSettingsStore(own, self.link.settings)

    def pin_manager(self, settings: SettingsStore, **options) -> PinManager:
        """The admin PIN: this kiosk's (kiosk.storage.pin; its guard in this store's data folder, the guard's MAC
        and the PIN's pepper from the data key this store was opened with), or the fleet's
        (kiosk.storage.fleet.pin: the registry's, without the local key)."""
        if self.paths is not None:
            options.setdefault("guard_path", self.paths.pin_guard)
        if self.link is None:
            if self.paths is not None:
                options.setdefault("key_file", self.paths.key_file)  # only where the store has no key (read-only)
            return PinManager(settings, data_key=self.data_key, **options)
        from kiosk.storage.fleet.pin import FleetPinManager  # noqa: PLC0415
        return FleetPinManager(settings, self.link.settings, **options)

    def on_settings_change(self, callback) -> None:
        """Call ``callback()`` (from the sync thread) after the fleet's settings changed elsewhere (threshold,
        liveness, the admin PIN or its lockout). Nothing happens for the embedded store."""
        if self.link is not None:
            self.link.on_settings_change.append(callback)

    def on_registry_change(self, callback) -> None:
        """Call ``callback()`` (from the sync thread) after a change made elsewhere reached this kiosk's copy:
        an employee enrolled, re-enrolled or deleted at another kiosk. Nothing happens for the embedded store."""
        if self.link is not None:
            self.link.on_change.append(callback)

    def close(self) -> None:
        if self.link is not None:
            self.link.stop()
        if self.local is not None:
            self.local.close()
        self.db.close()
        if self.lock is not None:
            self.lock.release()
