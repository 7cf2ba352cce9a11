"""Kiosk settings (threshold, fusion parameters, admin PIN hash) in one JSON file in config_dir(), written
atomically and owner-only (it holds the PIN hash). The PIN's lock state and the guard that notices a
deleted or replaced PIN record live in the data folder (kiosk.storage.pin). A fleet kiosk shares the
threshold, liveness and the PIN with the other kiosks through the registry (kiosk.storage.fleet.settings)."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from kiosk.io.files import atomic_write_text, private_dir
from kiosk.paths import config_dir
from kiosk.rules.decision import KIOSK_MODES, FusionParams, LivenessPolicy, valid_liveness_threshold, valid_threshold
from kiosk.storage.db import StorageError

log = logging.getLogger(__name__)

SETTINGS_NAME = "settings.json"
_FUSION = FusionParams()  # the fusion defaults and limits live in kiosk.rules.decision; they are not repeated here


@dataclass(frozen=True)
class Settings:
    threshold: float | None = None      # None: the model's own threshold
    fusion_frames: int = _FUSION.frames             # good frames fused into one decision
    fusion_window_s: float = _FUSION.window_s       # ... collected within this time after the ID is entered
    fusion_aggregate: str = _FUSION.aggregate       # "mean" or "median" of the frame scores
    verdict_display_s: float = 4.0      # the verdict stays on screen this long
    admin_idle_s: float = 300.0         # the admin tab locks itself after this much inactivity (5 min)
    sounds: bool = True                 # accept/reject sounds at the kiosk
    liveness: bool = True               # refuse faces that look like a printed photo (kiosk.vision.liveness)
    liveness_threshold: float | None = None  # None: the liveness model's own threshold
    kiosk_mode: str = "id"              # kiosk.rules.decision.KIOSK_MODES: "id", "walk-up" or "both"
    pin: object = None                  # scrypt record, kept as found: kiosk.storage.pin judges it
    extra: dict = field(default_factory=dict)  # unknown keys from newer versions, kept as they were

    @property
    def fusion(self) -> FusionParams:
        return FusionParams(self.fusion_frames, self.fusion_window_s, self.fusion_aggregate)

    @property
    def liveness_policy(self) -> LivenessPolicy:
        return LivenessPolicy(self.liveness, self.liveness_threshold)

    def validated(self) -> "Settings":
        """Out-of-range values fall back to the defaults (with a warning), never crash the kiosk. Not the
        PIN record: a damaged one must stay damaged (and keep administration locked), not become 'no PIN'."""
        default = Settings()
        checks = {
            "threshold": lambda v: v is None or valid_threshold(v),
            "fusion_frames": lambda v: FusionParams.valid("frames", v),
            "fusion_window_s": lambda v: FusionParams.valid("window_s", v),
            "fusion_aggregate": lambda v: FusionParams.valid("aggregate", v),
            "verdict_display_s": lambda v: isinstance(v, (int, float)) and 0.5 <= v <= 60,
            "admin_idle_s": lambda v: isinstance(v, (int, float)) and 5 <= v <= 3600,
            "sounds": lambda v: isinstance(v, bool),
            "liveness": lambda v: isinstance(v, bool),
            "liveness_threshold": lambda v: v is None or valid_liveness_threshold(v),
            "kiosk_mode": lambda v: v in KIOSK_MODES,
        }
        flags = {"sounds", "liveness"}  # the only fields where a bool is the right type
        changes = {}
        for name, ok in checks.items():
            value = getattr(self, name)
            if (isinstance(value, bool) and name not in flags) or not ok(value):
                log.warning("setting %s=%r is invalid; using %r", name, value, getattr(default, name))
                changes[name] = getattr(default, name)
        return replace(self, **changes) if changes else self


class SettingsStore:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else config_dir() / SETTINGS_NAME
        self._lock = threading.RLock()

    def load(self) -> Settings:
        """The saved settings (defaults if there is no file). StorageError if the file is damaged: the
        kiosk must not silently forget the admin PIN."""
        with self._lock:
            try:
                text = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                return Settings()
            except OSError as exc:
                raise StorageError(f"{self.path}: cannot read the settings ({exc.strerror or exc})") from None
            try:
                data = json.loads(text)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                raise StorageError(f"{self.path}: the settings file is damaged ({exc}); fix it, or delete it to "
                                   f"start from the defaults (then set the admin PIN again with "
                                   f"'kiosk admin reset-pin')") from None
            known = {f.name for f in fields(Settings)} - {"extra"}
            values = {k: v for k, v in data.items() if k in known}
            return Settings(**values, extra={k: v for k, v in data.items() if k not in known}).validated()

    def save(self, settings: Settings) -> Settings:
        with self._lock:
            private_dir(self.path.parent)
            data = asdict(settings)
            extra = data.pop("extra")
            atomic_write_text(self.path, json.dumps({**extra, **data}, indent=2, sort_keys=True) + "\n")
            return settings

    def update(self, **changes) -> Settings:
        """Load, change some fields, save: one step under the lock."""
        with self._lock:
            return self.save(replace(self.load(), **changes).validated())
