"""A fleet kiosk's store: the same Storage API, with the registry (PostgreSQL) as the shared truth. Storage.open
builds it with these stores from the start (``open_fleet_stores``; a single kiosk's: kiosk.storage.stores).

- ``employees`` is a FleetEmployeeStore: it reads the local mirror (kiosk.storage.fleet.mirror), so verification
  never waits for the network; enrolment and deletion are written to the registry first (refused with a
  clear message while it is away), then pulled into the mirror at once.
- ``audit`` is a FleetAuditLog: entries go to the local outbox (kiosk.storage.fleet.outbox) and from there to the
  registry's one hash chain, with this kiosk's ID; the audit page and ``kiosk audit verify`` read the
  registry (refused while it is away: the outbox's entries are shown there once it is back).
- ``connection`` tells ONLINE / OFFLINE and when the mirror was last synchronised.
- ``settings_store()`` and ``pin_manager()`` give the fleet's shared settings and admin PIN
  (kiosk.storage.fleet.settings, kiosk.storage.fleet.pin), from a copy the sync thread keeps current.

The data key is the fleet's: every kiosk needs the same ``data.key`` (the registry records its ID and
refuses a kiosk with another key). Photos and features travel sealed with it.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

import numpy as np

from kiosk.storage.audit import FLEET_FIELDS, AuditEntry, AuditLog, columns, entries_query, new_entry
from kiosk.storage.connection import ConnectionState, ConnectionStatus
from kiosk.storage.crypto import Sealer
from kiosk.storage.db import Database, StorageError
from kiosk.storage.employees import Employee, EmployeeStore, NewPhoto, normal_id, now_iso
from kiosk.storage.fleet import registry
from kiosk.storage.fleet.mirror import Mirror
from kiosk.storage.fleet.outbox import Outbox, open_local_fleet_db
from kiosk.storage.fleet.pgconn import ConnectionConfig, RegistryUnavailableError, Watchdog
from kiosk.storage.fleet.settings import FleetSettings
from kiosk.storage.fleet.sync import FleetLink
from kiosk.storage.keys import KeyMissingError
from kiosk.storage.lock import WriterLock
from kiosk.storage.places import StoragePaths
from kiosk.storage.settings import SettingsStore
from kiosk.storage.stores import Stores, prepare_local

log = logging.getLogger(__name__)

KIOSK_ID_ENV = "KIOSK_ID"
AUDIT_OFFLINE = ("the fleet registry cannot be reached, and the fleet's audit log is kept there; this kiosk's own "
                 "entries wait in its outbox and are written there when it is back")


class FleetEmployeeStore(EmployeeStore):
    """The mirror's EmployeeStore for reading; writes go through the registry."""

    link: FleetLink

    def _prefer(self, model_sha: str | None) -> None:
        mirror = self.link.mirror
        if model_sha and mirror.preferred_model != model_sha:
            mirror.preferred_model = model_sha
            if self.link.status.online:
                try:
                    self.link.pull_now()  # features of this kiosk's model, where another kiosk made them
                except StorageError as exc:
                    log.warning("%s", exc)

    def stale_references(self, model_sha: str):
        self._prefer(model_sha)
        return super().stale_references(model_sha)

    def enrol(self, employee_id: str, name: str, photos: list[NewPhoto], model_sha: str,
              replace: bool = True) -> Employee:
        employee_id, name = self._checked_enrolment(employee_id, name, photos)
        refs = [self.seal_reference(employee_id, photo) for photo in photos]
        self.link.call(lambda conn: registry.enrol(conn, employee_id, name, now_iso(), refs, model_sha, replace))
        log.info("enrolled %s with %d photo(s) in the registry", employee_id, len(photos))
        self._pull_after_write()
        return self.get(employee_id)

    def update_features(self, reference_id: int, features: np.ndarray, model_sha: str) -> None:
        """Re-embedding: into the registry when it is there (other kiosks of this model use them too), and
        into the mirror in any case, so an offline kiosk verifies with its current model."""
        self._prefer(model_sha)
        super().update_features(reference_id, features, model_sha)
        row = self.db.query_one("SELECT employee_id, file FROM reference_photos WHERE id = ?", (reference_id,))
        if row is None or not self.link.status.online:
            return
        sealed = self.seal_features(row[0], row[1], features)
        try:
            self.link.call(lambda conn: registry.update_features(conn, reference_id, model_sha, sealed,
                                                                 int(np.asarray(features).size)))
        except StorageError as exc:
            log.warning("re-embedded features of reference %d kept on this kiosk only: %s", reference_id, exc)

    def delete(self, employee_id: str) -> bool:
        self._require_writer()
        employee_id = normal_id(employee_id)  # the one form of an ID (kiosk.storage.employees)
        deleted = self.link.call(lambda conn: registry.delete(conn, employee_id))
        if deleted:
            log.info("deleted %s from the registry", employee_id)
        self._pull_after_write()
        return deleted

    def _pull_after_write(self) -> None:
        try:
            self.link.pull_now()
        except StorageError as exc:  # written to the registry; the mirror follows when it is back
            log.warning("the change is in the registry but not yet on this kiosk: %s", exc)


class FleetAuditLog(AuditLog):
    """Appends through the outbox; reads the registry's chain."""

    def __init__(self, outbox: Outbox, link: FleetLink | None, config: ConnectionConfig, key: bytes | None,
                 kiosk_id: str):
        super().__init__(outbox.db, key)
        self.outbox, self.link, self.config, self.kiosk_id = outbox, link, config, kiosk_id

    def _append(self, kind: str, claimed_id: str, score: float | None, verdict: str, detail: str, reason: str,
                time: str | None, liveness: float | None = None, mode: str = "") -> None:
        self.outbox.append(new_entry(kind, claimed_id, score, verdict, detail, reason, time, liveness, mode))
        if self.link is not None:
            self.link.status.update(pending=self.outbox.pending())

    def _read(self, fn):
        if self.link is not None:
            return self.link.call(fn, refuse_offline=False, offline_message=AUDIT_OFFLINE)
        try:
            with self.config.connect(autocommit=True) as conn:
                return fn(conn)
        except RegistryUnavailableError as exc:
            raise StorageError(f"{exc}; {AUDIT_OFFLINE}") from None

    def entries(self, text: str = "", verdict: str | None = None, limit: int = 5000,
                kind: str | None = None) -> list[AuditEntry]:
        sql, params = entries_query(columns(FLEET_FIELDS), text, verdict, limit, kind, "%s", "ILIKE")
        return [AuditEntry.from_row(row) for row in self._read(lambda conn: conn.execute(sql, params).fetchall())]

    def count(self) -> int:
        return int(self._read(lambda conn: conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]))

    def _chain_mode(self) -> str | None:
        return self._read(lambda conn: registry.meta(conn, "audit_chain"))

    def _chain_rows(self, after_id: int, batch: int) -> list[tuple]:
        return self._read(lambda conn: conn.execute(
            f"SELECT {columns(FLEET_FIELDS)}, hash FROM audit_log WHERE id > %s ORDER BY id LIMIT %s",
            (after_id, batch)).fetchall())

    def _highest_issued(self) -> int | None:
        return None  # a sequence also moves for entries whose transaction rolled back: no end check here

    def start_chain(self) -> int:
        return 0


def _kiosk_id(local) -> str:
    """This kiosk's ID: KIOSK_ID, else one made once and kept in fleet.sqlite3 (host name + random)."""
    explicit = os.environ.get(KIOSK_ID_ENV, "").strip()
    if explicit:
        return explicit[:64]
    value = local.meta("kiosk_id")
    if not value:
        value = f"{socket.gethostname()[:40]}-{uuid.uuid4().hex[:8]}"
        local.set_meta("kiosk_id", value)
    return value


def open_fleet_stores(url: str, db: Database, paths: StoragePaths, sealer: Sealer | None, lock: WriterLock | None,
                      data_key: bytes | None, readonly: bool = False, poll_s: float = 0.5,
                      retry_s: float = 1.0) -> Stores:
    """A fleet kiosk's stores on the registry at ``url``, its copy in ``db`` (kiosk.sqlite3 of the data folder):
    the mirror's employees, the outbox's audit log, and the link, connected (or OFFLINE) and started. Read-only
    (``kiosk audit verify`` / ``check``): the local employees and the registry's audit log, no mirror, no thread."""
    employees = (EmployeeStore if readonly else FleetEmployeeStore)(db, paths.photos, sealer, lock)
    health = prepare_local(db, employees, data_key, readonly)
    config = ConnectionConfig.from_url(url)
    status = ConnectionStatus(ConnectionState.OFFLINE, f"connecting to {config.safe_url}")
    if readonly:
        return Stores(employees, FleetAuditLog(Outbox(db), None, config, data_key, ""), health, status)
    local = open_local_fleet_db(paths.data)
    try:
        return _joined(employees, health, config, status, local, paths, data_key, poll_s, retry_s)
    except BaseException:
        local.close()
        raise


def _joined(employees: FleetEmployeeStore, health, config: ConnectionConfig, status: ConnectionStatus,
            local: Database, paths: StoragePaths, data_key: bytes | None, poll_s: float, retry_s: float) -> Stores:
    if local.meta("registry_id") is None and employees.count():
        raise StorageError(f"{paths.data} holds a single kiosk's employees; a fleet kiosk keeps its copy of the "
                           f"registry in a data folder of its own (set KIOSK_DATA_DIR to a new folder)")
    kiosk_id = _kiosk_id(local)
    outbox = Outbox(local)
    mirror = Mirror(employees, local)
    audit = FleetAuditLog(outbox, None, config, data_key, kiosk_id)
    link = FleetLink(config, mirror, outbox, status, kiosk_id, audit.chain_hash, poll_s, retry_s)
    link.settings = FleetSettings(local, SettingsStore(paths.settings_file))
    employees.link, audit.link, link.settings.link = link, link, link
    import psycopg  # noqa: PLC0415 -- a fleet kiosk's driver

    try:
        try:
            with config.connect(autocommit=True) as conn, Watchdog(conn):  # a silent network: cut, not waited on
                _check_registry(conn, config, local, employees.sealer, kiosk_id)
                mirror.pull(conn)
                link.settings.pull(conn)
                link.drain(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RegistryUnavailableError(f"the registry {config.safe_url} stopped answering: {text}") from None
        status.update(ConnectionState.ONLINE, f"connected to {config.safe_url}", synced=True)
    except RegistryUnavailableError as exc:
        log.warning("%s: verifying with this kiosk's last copy (generation %d)", exc, mirror.generation)
        status.update(ConnectionState.OFFLINE, str(exc))
    status.update(pending=outbox.pending())
    link.start()
    return Stores(employees, audit, health, status, link, local)


def _check_registry(conn, config, local, sealer, kiosk_id: str) -> None:
    registry.check_schema(conn, config.safe_url)
    holder = registry.claim_kiosk_id(conn, kiosk_id)
    if holder and holder != conn.info.user and not registry.owns_registry(conn):
        raise StorageError(f"the kiosk ID {kiosk_id!r} belongs to the registry role {holder!r}, not to "
                           f"{conn.info.user!r}: give this kiosk its own KIOSK_ID (or its own role)")
    registry_id = registry.meta(conn, "registry_id")
    known = local.meta("registry_id")
    if known and known != registry_id:
        raise StorageError(f"this kiosk's data folder mirrors another registry ({known}), not {config.safe_url} "
                           f"({registry_id}); give it a data folder of its own (KIOSK_DATA_DIR)")
    if sealer is None:
        raise KeyMissingError("a fleet kiosk needs the fleet's data key (KIOSK_KEY_FILE)")
    fleet_key = registry.claim_key_id(conn, sealer.key_id)
    if fleet_key != sealer.key_id:
        raise KeyMissingError(f"this kiosk's data key (ID {sealer.key_id}) is not the fleet's (ID {fleet_key}): copy "
                              f"the fleet's data.key to this kiosk (KIOSK_KEY_FILE) and start again")
    if not known:
        local.set_meta("registry_id", registry_id)
