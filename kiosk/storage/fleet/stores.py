"""A fleet kiosk's store: the same Storage API, with the registry (PostgreSQL) as the shared truth.

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

from kiosk.storage.audit import AuditEntry, AuditLog, entries_query
from kiosk.storage.connection import ConnectionState, ConnectionStatus
from kiosk.storage.crypto import features_aad, photo_aad
from kiosk.storage.db import StorageError
from kiosk.storage.employees import (
    Employee,
    EmployeeStore,
    NewPhoto,
    _blob,
    _encode,
    new_photo_file,
    now_iso,
)
from kiosk.storage.fleet import registry
from kiosk.storage.fleet.mirror import Mirror
from kiosk.storage.fleet.outbox import Outbox, open_local_fleet_db
from kiosk.storage.fleet.pgconn import ConnectionConfig, RegistryUnavailableError
from kiosk.storage.fleet.settings import FleetSettings
from kiosk.storage.fleet.sync import FleetLink
from kiosk.storage.keys import KeyMissingError
from kiosk.storage.settings import SettingsStore

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
        sealer = self._sealer()
        refs = []
        for photo in photos:
            file = new_photo_file()
            refs.append(registry.NewReference(file, sealer.seal(_encode(photo.image), photo_aad(employee_id, file)),
                                              sealer.seal(_blob(photo.features), features_aad(employee_id, file)),
                                              int(np.asarray(photo.features).size)))
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
        sealed = self._sealer().seal(_blob(features), features_aad(row[0], row[1]))
        try:
            self.link.call(lambda conn: registry.update_features(conn, reference_id, model_sha, sealed,
                                                                 int(np.asarray(features).size)))
        except StorageError as exc:
            log.warning("re-embedded features of reference %d kept on this kiosk only: %s", reference_id, exc)

    def delete(self, employee_id: str) -> bool:
        self._require_writer()
        employee_id = employee_id.strip()
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
        self.outbox.append(time or now_iso(), kind, claimed_id, None if score is None else float(score), verdict,
                           detail, reason, None if liveness is None else float(liveness), mode)
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
        sql, params = entries_query(registry.AUDIT_COLUMNS, text, verdict, limit, kind, "%s", "ILIKE")
        return [AuditEntry(*row) for row in self._read(lambda conn: conn.execute(sql, params).fetchall())]

    def count(self) -> int:
        return int(self._read(lambda conn: conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]))

    def _chain_mode(self) -> str | None:
        return self._read(lambda conn: registry.meta(conn, "audit_chain"))

    def _chain_rows(self, after_id: int, batch: int) -> list[tuple]:
        return self._read(lambda conn: conn.execute(
            f"SELECT {registry.AUDIT_COLUMNS}, hash FROM audit_log WHERE id > %s ORDER BY id LIMIT %s",
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


def attach(storage, url: str, data_key: bytes | None, readonly: bool = False, poll_s: float = 0.5,
           retry_s: float = 1.0) -> None:
    """Turn an opened local Storage into a fleet kiosk's store on the registry at ``url`` (in place)."""
    config = ConnectionConfig.from_url(url)
    local = open_local_fleet_db(storage.folder) if not readonly else None
    try:
        _attach(storage, config, local, data_key, readonly, poll_s, retry_s)
    except BaseException:
        if local is not None:
            local.close()
        raise


def _attach(storage, config, local, data_key, readonly, poll_s, retry_s) -> None:
    sealer = storage.employees.sealer
    status = ConnectionStatus(ConnectionState.OFFLINE, f"connecting to {config.safe_url}")
    if readonly:  # kiosk audit verify / check: read the registry's audit log, no mirror, no thread
        storage.audit = FleetAuditLog(Outbox(storage.db), None, config, data_key, "")
        storage.connection = status
        return
    if local.meta("registry_id") is None and storage.employees.count():
        raise StorageError(f"{storage.folder} holds a single kiosk's employees; a fleet kiosk keeps its copy of the "
                           f"registry in a data folder of its own (set KIOSK_DATA_DIR to a new folder)")
    kiosk_id = _kiosk_id(local)
    outbox = Outbox(local)
    employees = FleetEmployeeStore(storage.db, storage.employees.photos_dir, sealer, storage.employees.lock)
    mirror = Mirror(employees, local)
    audit = FleetAuditLog(outbox, None, config, data_key, kiosk_id)
    link = FleetLink(config, mirror, outbox, status, kiosk_id, audit._digest, poll_s, retry_s)
    link.settings = FleetSettings(local, SettingsStore())
    employees.link, audit.link, link.settings.link = link, link, link
    try:
        with config.connect(autocommit=True) as conn:
            _check_registry(conn, config, local, sealer)
            mirror.pull(conn)
            link.settings.pull(conn)
            link.drain(conn)
        status.update(ConnectionState.ONLINE, f"connected to {config.safe_url}", synced=True)
    except RegistryUnavailableError as exc:
        log.warning("%s: verifying with this kiosk's last copy (generation %d)", exc, mirror.generation)
        status.update(ConnectionState.OFFLINE, str(exc))
    status.update(pending=outbox.pending())
    storage.employees, storage.audit, storage.connection, storage.link = employees, audit, status, link
    storage.local = local
    link.start()


def _check_registry(conn, config, local, sealer) -> None:
    registry.check_schema(conn, config.safe_url)
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
