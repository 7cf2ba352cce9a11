"""Accept and reject sounds (assets/accept.wav, assets/reject.wav) through Qt Multimedia's QSoundEffect.

Without Qt Multimedia (a missing system library), without an audio device (a headless box, the tests) or
without the files, the kiosk stays silent and says so once in the log, and ``check()`` gives the reason in plain
words for the Admin tab ("no audio device"); playing never raises.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QUrl

from kiosk.paths import ASSETS_DIR

log = logging.getLogger(__name__)

SOUND_FILES = {"ACCEPT": "accept.wav", "REJECT": "reject.wav"}


class SoundPlayer:
    """``play("ACCEPT")`` / ``play("REJECT")``; the effects are loaded on first use."""

    def __init__(self, folder: Path = ASSETS_DIR):
        self.folder = Path(folder)
        self._effects: dict[str, object] | None = None
        self.available = True
        self.problem = ""  # why the sounds cannot play (empty: they can, as far as is known)

    def _load(self) -> dict[str, object]:
        effects: dict[str, object] = {}
        try:
            try:
                from PySide6.QtMultimedia import QMediaDevices, QSoundEffect
            except ImportError as exc:
                raise RuntimeError(f"Qt Multimedia cannot be loaded ({exc}; on Debian/Ubuntu: "
                                   f"apt install libpulse0)") from exc

            if not QMediaDevices.audioOutputs():
                raise RuntimeError("no audio device")
            for verdict, name in SOUND_FILES.items():
                path = self.folder / name
                if not path.is_file():
                    raise FileNotFoundError(f"{path} is missing")
                effect = QSoundEffect()
                effect.setSource(QUrl.fromLocalFile(str(path)))
                effect.setVolume(0.8)
                effects[verdict] = effect
        except Exception as exc:  # ImportError (e.g. libpulse missing), no device, missing file: stay silent
            log.info("sounds are off: %s", exc)
            self.available = False
            self.problem = str(exc)
            return {}
        return effects

    def check(self) -> str:
        """Load the sounds now if not yet done: "" if they can play, else why not (for the Admin tab)."""
        if self._effects is None and self.available:
            self._effects = self._load()
        return self.problem

    def play(self, verdict: str) -> None:
        if not self.available:
            return
        if self._effects is None:
            self._effects = self._load()
        effect = self._effects.get(verdict)
        if effect is None:
            return
        try:
            effect.play()
        except Exception as exc:  # never let a sound take the kiosk down
            log.info("sounds are off: %s", exc)
            self.available = False
            self.problem = str(exc)
