"""The kiosk as one object (the role Anki's ``Collection`` plays for ``aqt``). Qt-free.

``Kiosk`` is built from explicit places (a data folder, or a fleet registry's URL) and holds the store, the
settings and every use case: ``kiosk.admin`` (enrol, delete, threshold, liveness, mode, export, start and
stop), ``kiosk.pins`` (the admin PIN), ``kiosk.door_admin`` (Admin > Door: the door's settings, its test and
its connection, kiosk.app.door_admin) and ``kiosk.verification(...)`` (the attempts, 1:1 and walk-up, each
decision audited by kiosk.app.attempt.VerificationService). The Qt window, the command line and the public
API (kiosk.api) are its clients; none of them touches the store directly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from kiosk.app.admin import Admin, Pins
from kiosk.app.attempt import Clock, VerificationService
from kiosk.app.door import DoorControl
from kiosk.app.door_admin import DoorAdmin
from kiosk.paths import config_dir, data_dir
from kiosk.rules.decision import FusionParams, LivenessPolicy, ThresholdPolicy
from kiosk.storage import Settings, Storage, StorageError

log = logging.getLogger(__name__)


class Kiosk:
    """One kiosk's state and use cases. ``settings_problem`` is set (and ``pins`` is None) when the settings
    cannot be read: the kiosk then runs on the defaults and administration stays closed until it is fixed."""

    def __init__(self, storage: Storage, own_storage: bool = False, door=None):
        self.storage = storage
        if not isinstance(door, DoorControl):  # a Door, or None: no door output until Admin > Door sets one
            paths = storage.paths
            door = DoorControl(paths.config if paths else config_dir(), paths.data if paths else data_dir(),
                               storage.audit, door=door)
        self.door = door  # kiosk.app.door.DoorControl: the door configured now (Admin > Door changes it)
        self._own_storage = own_storage
        self.settings_store = storage.settings_store()  # a fleet kiosk's: the shared ones from the registry
        self.settings_problem = ""
        try:
            self.settings_store.load()
        except StorageError as exc:
            log.error("%s", exc)
            self.settings_problem = str(exc)
        self.admin = Admin(storage, self.settings_store, door)
        self.pins = None if self.settings_problem else Pins(storage.pin_manager(self.settings_store), storage.audit)
        self.door_admin = DoorAdmin(door, storage.audit, lambda: self.pins is not None and self.pins.session_open)

    @classmethod
    def open(cls, folder: str | Path | None = None, database: str | None = None, readonly: bool = False,
             config: str | Path | None = None, **options) -> "Kiosk":
        """The kiosk of a data folder and a config folder (defaults: the platform's), or of a fleet registry
        (``database``: a postgresql:// URL; the folder then holds this kiosk's local copy and outbox). These
        are the only places it uses (kiosk.storage.places); the door's settings are the config folder's."""
        storage = Storage.open(folder, readonly=readonly, url=database, config=config, **options)
        door = None
        if not readonly:
            try:
                door = DoorControl.open(storage.paths.config, storage.paths.data, storage.audit,
                                        os.environ.get("KIOSK_ID", "kiosk"))
            except Exception:
                storage.close()
                raise
        return cls(storage, own_storage=True, door=door)

    # -- what the clients read ------------------------------------------------------------------------------
    def settings(self) -> Settings:
        """The settings in force (the defaults when they cannot be read: see ``settings_problem``)."""
        if self.settings_problem:
            return Settings()
        return self.settings_store.load()

    @property
    def employees(self):
        """The employee store, for reading (search, photos); changes go through ``admin``."""
        return self.storage.employees

    @property
    def audit(self):
        """The audit log, for reading (entries, the chain check); entries are written by the use cases."""
        return self.storage.audit

    @property
    def is_fleet(self) -> bool:
        return self.storage.is_fleet

    @property
    def connection(self):
        return self.storage.connection

    @property
    def health(self):
        return self.storage.health

    def on_registry_change(self, callback) -> None:
        self.storage.on_registry_change(callback)

    def on_settings_change(self, callback) -> None:
        self.storage.on_settings_change(callback)

    # -- attempts -------------------------------------------------------------------------------------------
    def verification(self, engine=None, fusion: FusionParams | None = None, threshold: ThresholdPolicy | None = None,
                     liveness: LivenessPolicy | None = None, clock: Clock | None = None,
                     report=None) -> VerificationService:
        """The attempts' service (1:1 and walk-up, each decision audited); the frames, threshold and liveness
        policies not given are the settings'."""
        if fusion is None or threshold is None or liveness is None:
            settings = self.settings()
            fusion = fusion or settings.fusion
            threshold = threshold or ThresholdPolicy(settings.threshold)
            liveness = liveness or settings.liveness_policy
        options = {} if clock is None else {"clock": clock}
        return VerificationService(self.storage, engine, fusion, threshold, report=report, liveness=liveness,
                                   door=self.door, **options)

    def close(self) -> None:
        if self.door is not None:
            self.door.close()
            self.door = None
        if self._own_storage:
            self.storage.close()

    def __enter__(self) -> "Kiosk":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
