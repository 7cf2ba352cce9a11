"""Where one store lives: its data folder, its config folder and its data key, decided once when it is opened.

``Storage.open`` resolves a ``StoragePaths`` (the defaults from kiosk.paths, and ``KIOSK_KEY_FILE`` for the
key, only where a place is not given) and everything the store reads or writes afterwards (the database, the
photos, the PIN guard, settings.json, the data key, a fleet kiosk's fleet.sqlite3) comes from it, never from
the environment again: two stores opened on two folders in one process share nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kiosk.paths import config_dir, data_dir
from kiosk.storage.audit import ANCHOR_NAME
from kiosk.storage.db import DB_NAME
from kiosk.storage.keys import key_path
from kiosk.storage.pin import GUARD_NAME
from kiosk.storage.settings import SETTINGS_NAME

PHOTOS_NAME = "photos"


@dataclass(frozen=True)
class StoragePaths:
    data: Path       # kiosk.sqlite3, photos/, pin_guard.json, the writer lock; a fleet kiosk's fleet.sqlite3
    config: Path     # settings.json, the audit log's anchor (and data.key, unless the key lives elsewhere)
    key_file: Path   # the data key

    @classmethod
    def resolve(cls, data: str | Path | None = None, config: str | Path | None = None,
                key_file: str | Path | None = None) -> "StoragePaths":
        """The places given, the defaults for the others: kiosk.paths.data_dir() and config_dir(); the key
        ``KIOSK_KEY_FILE``, else data.key in the config folder."""
        config = Path(config) if config else config_dir()
        return cls(Path(data) if data else data_dir(), config,
                   Path(key_file).expanduser() if key_file else key_path(config))

    @property
    def database(self) -> Path:
        return self.data / DB_NAME

    @property
    def photos(self) -> Path:
        return self.data / PHOTOS_NAME

    @property
    def pin_guard(self) -> Path:
        return self.data / GUARD_NAME

    @property
    def audit_anchor(self) -> Path:
        """The audit chain's head, sealed with the data key, outside the database (kiosk.storage.audit)."""
        return self.config / ANCHOR_NAME

    @property
    def settings_file(self) -> Path:
        return self.config / SETTINGS_NAME
