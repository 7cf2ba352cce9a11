"""Where things live: user data, config, logs, caches, bundled weights and the shared datasets; and
creating the kiosk's folders owner-only."""

from __future__ import annotations

import importlib.util
import logging
import os
import stat
from pathlib import Path

import platformdirs

log = logging.getLogger(__name__)

APP_NAME = "siamese-kiosk"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _package_data(package: str, folder: str, probe: str) -> Path:
    """The folder of shipped data: in an installed wheel, the data package ``package`` (pyproject.toml maps
    the top-level folder ``folder`` onto it); in a checkout, ``folder`` beside kiosk/. ``probe`` is a file
    that folder must hold.

    The data packages have no ``__init__.py`` (they are the plain folders weights/ and assets/), so they are
    namespace packages: their import spec lists every folder that provides them (the wheel's, and in an
    editable install the checkout's, plus setuptools' editable path hook, which makes
    ``importlib.resources.files`` fail on Python 3.11); the first real folder holding ``probe`` is taken.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location)
        if (candidate / probe).is_file():
            return candidate
    return PROJECT_ROOT / folder  # a checkout not installed (python main.py from the source tree)


WEIGHTS_DIR = _package_data("kiosk_data.weights", "weights", "face_siamese.pt")
ASSETS_DIR = _package_data("kiosk_data.assets", "assets", "style.qss")  # icon, style sheet, sounds
DEFAULT_WEIGHTS = WEIGHTS_DIR / "face_siamese.pt"
MODEL_CARD = WEIGHTS_DIR / "MODEL_CARD.md"
LIVENESS_WEIGHTS = WEIGHTS_DIR / "liveness.npz"  # presentation-attack detector (weights/LIVENESS_CARD.md)


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


PRIVATE_DIR = 0o700   # every folder the kiosk creates
PRIVATE_FILE = 0o600  # every file the kiosk writes
_warned_dirs: set[str] = set()


def private_dir(path: str | Path) -> Path:
    """Create ``path`` and any missing parents owner-only (0700, whatever the umask) and return it.

    A folder that already exists is left as it is: if its group or others may use it, a warning is logged
    (once per folder and process), never a silent chmod; the owner may have widened it on purpose, and a
    silent change would hide the problem from them.
    """
    path = Path(path)
    missing = []
    folder = path
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR)
        except FileExistsError:  # made meanwhile by another process: an existing folder
            continue
        os.chmod(folder, PRIVATE_DIR)  # mkdir's mode is masked by the umask
    if not path.is_dir():
        raise NotADirectoryError(f"{path} exists but is not a folder")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077 and str(path) not in _warned_dirs:
        _warned_dirs.add(str(path))
        log.warning("folder %s is accessible to others (mode %03o); the kiosk keeps private data there: "
                    "consider 'chmod 700 %s'", path, mode, path)
    return path
