"""Persistent state, Qt-free: employees and reference photos (SQLite + photo files), the audit log,
settings and the admin PIN. Everything holding biometric data is owner-only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..paths import data_dir
from .audit import AuditEntry, AuditLog
from .db import DB_NAME, Database, StorageError
from .employees import Employee, EmployeeStore, NewPhoto, ReferencePhoto, clean_employee_id, clean_name
from .pin import PinError, PinManager, PinResult
from .settings import Settings, SettingsStore

__all__ = ["AuditEntry", "AuditLog", "Database", "Employee", "EmployeeStore", "NewPhoto", "PinError", "PinManager",
           "PinResult", "ReferencePhoto", "Settings", "SettingsStore", "Storage", "StorageError",
           "clean_employee_id", "clean_name"]


@dataclass
class Storage:
    """The database with its two views; ``Storage.open()`` uses data_dir()."""

    db: Database
    employees: EmployeeStore
    audit: AuditLog

    @classmethod
    def open(cls, folder: str | Path | None = None) -> "Storage":
        folder = Path(folder) if folder else data_dir()
        db = Database(folder / DB_NAME)
        return cls(db, EmployeeStore(db, folder / "photos"), AuditLog(db))

    def close(self) -> None:
        self.db.close()
