"""The views a Storage is built with: its employee store and its audit log, with what the open found.

``Storage.open`` decides which ones a store gets and builds it with them, once: a single kiosk's
(``open_local_stores``: both in its SQLite database) or a fleet kiosk's (kiosk.storage.fleet.stores: the
mirror, the outbox and the registry, with the link that keeps them current). Either way the local SQLite
store is prepared first, the same way (``prepare_local``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kiosk.storage.audit import AuditLog
from kiosk.storage.connection import ConnectionStatus
from kiosk.storage.crypto import Sealer
from kiosk.storage.db import Database
from kiosk.storage.employees import EmployeeStore
from kiosk.storage.integrity import IntegrityReport
from kiosk.storage.lock import WriterLock
from kiosk.storage.places import StoragePaths
from kiosk.storage.sealing import seal_plain_rows


@dataclass
class Stores:
    employees: EmployeeStore
    audit: AuditLog
    health: IntegrityReport  # what the self-check found (kiosk.storage.integrity)
    connection: ConnectionStatus = field(default_factory=ConnectionStatus)  # EMBEDDED, or the registry's state
    link: object = None            # a fleet kiosk's kiosk.storage.fleet.sync.FleetLink (None: the embedded store)
    local: Database | None = None  # a fleet kiosk's fleet.sqlite3 (outbox, mirror bookkeeping)


def prepare_local(db: Database, employees: EmployeeStore, data_key: bytes | None, readonly: bool,
                  audit: AuditLog | None = None) -> IntegrityReport:
    """What an open does to the local SQLite store before using it: for a writer, start the audit chain
    (``audit``, default one without an anchor: the upgrade's rows chained, the anchor checked and moved on),
    encrypt an old plain store and remove orphaned photos; then check every reference."""
    if not readonly:
        (audit or AuditLog(db, data_key)).start_chain()
        seal_plain_rows(employees)
        employees.cleanup_orphans()
    return employees.check()


def open_local_stores(db: Database, paths: StoragePaths, sealer: Sealer | None, lock: WriterLock | None,
                      data_key: bytes | None, readonly: bool) -> Stores:
    """A single kiosk's: employees and audit log in its own database."""
    employees = EmployeeStore(db, paths.photos, sealer, lock)
    audit = AuditLog(db, data_key, paths.audit_anchor)  # its head anchored beside the key (kiosk.storage.audit)
    health = prepare_local(db, employees, data_key, readonly, audit)
    return Stores(employees, audit, health)
