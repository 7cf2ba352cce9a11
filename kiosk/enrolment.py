"""Enrolment and reference features: the engine computes features, the store keeps them. Qt-free.

Features are tagged with the weights' tensor digest (``model_id``); when the weights change, stale
features are recomputed from the stored photos (``refresh_features``).
"""

from __future__ import annotations

import logging
import weakref
from pathlib import Path

import numpy as np

from .engine import FaceEngine
from .errors import FaceNotUsableError, KioskError
from .imageio import read_image
from .storage import Employee, EmployeeStore, NewPhoto
from .weights import read_payload

log = logging.getLogger(__name__)

_model_ids: "weakref.WeakKeyDictionary[FaceEngine, str]" = weakref.WeakKeyDictionary()


def model_id(engine: FaceEngine) -> str:
    """The SHA-256 of the engine's weight tensors (as stored in its weights file)."""
    explicit = getattr(engine, "model_id", None)
    if isinstance(explicit, str):
        return explicit
    if engine not in _model_ids:
        _model_ids[engine] = str(read_payload(engine.weights_path)["sha256"])
    return _model_ids[engine]


def features_for_enrolment(engine: FaceEngine, image: np.ndarray, label: str = "photo") -> np.ndarray:
    """Features of the one good face in ``image``; FaceNotUsableError naming ``label`` and the problems."""
    return engine.embed_image(image, label, check_quality=True)


def enrol_images(engine: FaceEngine, store: EmployeeStore, employee_id: str, name: str,
                 images: list[tuple[np.ndarray, str]], replace: bool = True) -> Employee:
    """All photos must pass the quality checks, else nothing is stored (FaceNotUsableError lists them)."""
    photos, problems = [], []
    for image, label in images:
        try:
            photos.append(NewPhoto(image, features_for_enrolment(engine, image, label)))
        except FaceNotUsableError as exc:
            problems.append(str(exc))
    if problems:
        raise FaceNotUsableError("not enrolled: " + "; ".join(problems))
    return store.enrol(employee_id, name, photos, model_id(engine), replace=replace)


def enrol_files(engine: FaceEngine, store: EmployeeStore, employee_id: str, name: str,
                paths: list[str | Path], replace: bool = True) -> Employee:
    return enrol_images(engine, store, employee_id, name, [(read_image(p), Path(p).name) for p in paths], replace)


def refresh_features(engine: FaceEngine, store: EmployeeStore) -> int:
    """Recompute features made with other weights; returns how many were updated. Photos that are missing
    or no longer pass are logged and left as they are (the employee should be re-enrolled)."""
    current = model_id(engine)
    updated = 0
    for ref in store.stale_references(current):
        try:
            features = engine.embed_image(store.load_photo(ref), str(ref.path), check_quality=False)
        except KioskError as exc:
            log.warning("cannot recompute the features of %s's photo %s: %s; re-enrol them",
                        ref.employee_id, ref.path.name, exc)
            continue
        store.update_features(ref.id, features, current)
        updated += 1
    if updated:
        log.info("recomputed %d reference feature vector(s) for the current weights", updated)
    return updated


def current_references(engine: FaceEngine, store: EmployeeStore, employee_id: str) -> np.ndarray:
    """(N, D) features of the employee's photos that match the engine's weights (empty if none)."""
    return store.reference_features(employee_id, model_id(engine))
