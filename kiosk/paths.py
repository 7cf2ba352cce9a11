"""Where things live: user data, config, logs, caches, bundled weights and the shared datasets."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "siamese-kiosk"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_DIR = PROJECT_ROOT / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "face_siamese.pt"
OMNIGLOT_WEIGHTS = WEIGHTS_DIR / "characters_siamese.pt"  # Koch et al.'s one-shot experiment (docs/OMNIGLOT.md)
MODEL_CARD = WEIGHTS_DIR / "MODEL_CARD.md"


def _env_path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser() if value else default


def data_dir() -> Path:
    """SQLite database and reference photos (override: KIOSK_DATA_DIR)."""
    return _env_path("KIOSK_DATA_DIR", Path(platformdirs.user_data_dir(APP_NAME)))


def config_dir() -> Path:
    """Settings file (override: KIOSK_CONFIG_DIR)."""
    return _env_path("KIOSK_CONFIG_DIR", Path(platformdirs.user_config_dir(APP_NAME)))


def log_dir() -> Path:
    """Log files (override: KIOSK_LOG_DIR)."""
    return _env_path("KIOSK_LOG_DIR", Path(platformdirs.user_log_dir(APP_NAME)))


def cache_dir() -> Path:
    """Derived, re-creatable data such as face-crop caches (override: KIOSK_CACHE_DIR)."""
    return _env_path("KIOSK_CACHE_DIR", Path(platformdirs.user_cache_dir(APP_NAME)))


def datasets_dir() -> Path:
    """The shared datasets folder (override: KIOSK_DATASETS); defaults to ../shared/datasets."""
    return _env_path("KIOSK_DATASETS", PROJECT_ROOT.parent / "shared" / "datasets")
