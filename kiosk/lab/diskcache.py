"""The one disk cache for derived, re-creatable arrays (face features of datasets, the peer's features):
an ``.npz`` in the platformdirs cache folder, named by a hash of the ``repr`` of what made it, written
atomically and owner-only (features of people's faces)."""

from __future__ import annotations

import hashlib
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kiosk.io.files import atomic_writer, private_dir
from kiosk.paths import cache_dir

log = logging.getLogger(__name__)


def cache_path(kind: str, described: object) -> Path:
    """``<cache folder>/<kind>/<hash>.npz``; ``described`` (its ``repr``) must name everything the arrays
    depend on (the model, the settings, the input files), so that a change gives another file."""
    digest = hashlib.sha256(repr(described).encode()).hexdigest()[:24]
    return cache_dir() / kind / f"{digest}.npz"


def load_arrays(path: Path, names: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The named arrays, or None when the file is missing, damaged or lacks one of them (then rebuild)."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            return {name: data[name] for name in names}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        log.warning("cache %s unreadable; rebuilding", path)
        return None


def save_arrays(path: Path, compressed: bool = False, **arrays: np.ndarray) -> Path:
    """Write the arrays so that readers see the whole file or none (folders 0700, file 0600); ``compressed``
    for arrays that compress well (bit-packed drawings), at some cost in time."""
    private_dir(path.parent)
    with atomic_writer(path) as handle:
        (np.savez_compressed if compressed else np.savez)(handle, **arrays)
    return path
