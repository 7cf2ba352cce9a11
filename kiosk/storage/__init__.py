"""Persistent state, Qt-free: employees and reference photos (SQLite + photo files), the audit log,
settings and the admin PIN. Everything holding biometric data is owner-only and encrypted at rest."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..paths import data_dir
from .audit import AuditEntry, AuditLog
from .backup import finish_restore
from .crypto import DamagedDataError
from .db import DB_NAME, RESTORE_ADVICE, SCHEMA_VERSION, Database, StorageError, StoreDamagedError
from .employees import Employee, EmployeeStore, NewPhoto, ReferencePhoto, clean_employee_id, clean_name
from .files import private_dir
from .integrity import IntegrityReport, ReferenceDamage
from .keys import KeyMissingError, unlock
from .lock import StoreInUseError, WriterLock, acquire_writer_lock
from .pin import PinError, PinManager, PinResult
from .sealing import seal_plain_rows
from .settings import Settings, SettingsStore

__all__ = ["AuditEntry", "AuditLog", "DamagedDataError", "Database", "Employee", "EmployeeStore",
           "IntegrityReport", "KeyMissingError", "NewPhoto", "PinError", "PinManager", "PinResult",
           "ReferenceDamage", "ReferencePhoto", "Settings", "SettingsStore", "Storage", "StorageError",
           "StoreDamagedError", "StoreInUseError", "clean_employee_id", "clean_name"]

log = logging.getLogger(__name__)


@dataclass
class Storage:
    """The database with its two views; ``Storage.open()`` uses data_dir().

    ``health`` is what the self-check found at open (damaged references are reported there, and never used
    to verify); ``lock`` is the writer lock (None when opened read-only)."""

    db: Database
    employees: EmployeeStore
    audit: AuditLog
    lock: WriterLock | None = None
    health: IntegrityReport = field(default_factory=IntegrityReport)
    folder: Path | None = None

    @classmethod
    def open(cls, folder: str | Path | None = None, readonly: bool = False) -> "Storage":
        """Open the store for writing (the one writer: StoreInUseError if another process writes) or, with
        ``readonly``, for looking only (no lock, nothing changed). Refuses a damaged database
        (StoreDamagedError) and sealed data without its key (KeyMissingError); finishes an interrupted
        restore, migrates the schema, encrypts an old plain store, removes orphaned photos, checks every
        reference."""
        folder = Path(folder) if folder else data_dir()
        lock = None if readonly else acquire_writer_lock(private_dir(folder))
        db = None
        try:
            if lock is not None:
                finish_restore(folder)
            db = Database(folder / DB_NAME, migrate=False, readonly=readonly)
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
            employees = EmployeeStore(db, folder / "photos", unlock(db, create=not readonly), lock)
            if not readonly:
                seal_plain_rows(employees)
                employees.cleanup_orphans()
            health = employees.check()
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
        return cls(db, employees, AuditLog(db), lock, health, folder)

    def close(self) -> None:
        self.db.close()
        if self.lock is not None:
            self.lock.release()
