"""Enrolment and reference features: the engine computes features, the store keeps them. Qt-free.

Features are tagged with the model that made them (``FaceEngine.model_id``: encoder, input, flip
averaging); when that changes, stale features are recomputed from the stored photos (``refresh_features``)
and features of another model are never compared.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kiosk.errors import FaceNotUsableError, KioskError
from kiosk.io.imageio import read_image
from kiosk.storage import Employee, EmployeeStore, NewPhoto
from kiosk.vision.detection import Box, HaarFaceDetector
from kiosk.vision.quality import NO_FACE, SEVERAL_FACES, QualityReport, assess_quality

if TYPE_CHECKING:  # the engine (torch) is the caller's: the application layer imports no torch
    from kiosk.vision.engine import FaceEngine

log = logging.getLogger(__name__)


# Problems that refuse a photo as soon as it is added (the operator must choose another photo); the others
# (small, blurred, dark, bright) are shown with it and refuse it at saving.
REFUSED_AT_ADDING = (SEVERAL_FACES, NO_FACE)


@dataclass
class PhotoCheck:
    """What the enrolment checks see in a photo before it is added: the face that would be used and why not."""

    box: Box | None
    quality: QualityReport

    @property
    def refusal(self) -> list[str]:
        return [r for r in self.quality.reasons if r in REFUSED_AT_ADDING]


def check_photo(image: np.ndarray, detector: HaarFaceDetector | None = None) -> PhotoCheck:
    """The same detection and quality checks as enrolment (the engine's default detector and limits)."""
    detection = (detector or HaarFaceDetector()).detect(image)
    return PhotoCheck(detection.primary, assess_quality(image, detection))


@dataclass
class FrameBurst:
    """Several camera frames for one enrolment, taken in one action: the next ``count`` good frames captured
    after ``started_at``, each at most ``fresh_s`` old when offered and at least ``gap_s`` after the previous
    one taken (never the same frame twice, nor near copies), all within ``timeout_s`` of the start. Qt-free:
    the caller brings the clock (``now``) and the quality verdict (the enrolment checks, ``check_photo``'s)."""

    started_at: float
    count: int
    gap_s: float
    timeout_s: float
    fresh_s: float
    taken: list = field(default_factory=list)  # (item, captured_at), oldest first

    @property
    def done(self) -> bool:
        return len(self.taken) >= self.count

    def expired(self, now: float) -> bool:
        """Time is up and frames are still missing."""
        return not self.done and now - self.started_at >= self.timeout_s

    def remaining(self, now: float) -> float:
        return max(0.0, self.started_at + self.timeout_s - now)

    def offer(self, item, ok: bool, captured_at: float, now: float) -> bool:
        """Take ``item`` (a frame that passed the checks when ``ok``) if it is wanted; True when taken."""
        if self.done or self.expired(now) or not ok:
            return False
        if captured_at < self.started_at or now - captured_at > self.fresh_s:
            return False
        if self.taken and captured_at - self.taken[-1][1] < self.gap_s:
            return False
        self.taken.append((item, captured_at))
        return True


def enrol_images(engine: FaceEngine, store: EmployeeStore, employee_id: str, name: str,
                 images: list[tuple[np.ndarray, str]], replace: bool = True) -> Employee:
    """All photos must pass the quality checks, else nothing is stored (FaceNotUsableError lists them)."""
    photos, problems = [], []
    for image, label in images:
        try:
            photos.append(NewPhoto(image, engine.embed_image(image, label, check_quality=True)))
        except FaceNotUsableError as exc:
            problems.append(str(exc))
    if problems:
        raise FaceNotUsableError("not enrolled: " + "; ".join(problems))
    return store.enrol(employee_id, name, photos, engine.model_id, replace=replace)


def enrol_files(engine: FaceEngine, store: EmployeeStore, employee_id: str, name: str,
                paths: list[str | Path], replace: bool = True) -> Employee:
    return enrol_images(engine, store, employee_id, name, [(read_image(p), Path(p).name) for p in paths], replace)


@dataclass
class RefreshReport:
    """What re-embedding the stored photos for a new model did."""

    updated: int = 0
    unusable: list[tuple[str, str]] = field(default_factory=list)  # (employee ID, why), to re-enrol

    def describe(self) -> str:
        people = ", ".join(sorted({employee for employee, _ in self.unusable}))
        return (f"{self.updated} reference photo(s) re-embedded for the current model"
                + (f"; {len(self.unusable)} no longer give a usable face (re-enrol: {people})" if self.unusable else ""))


def refresh_features(engine: FaceEngine, store: EmployeeStore,
                     progress: Callable[[int, int], None] | None = None) -> RefreshReport:
    """Recompute features made by another model from the stored photos. ``progress(done, total)`` is called
    after each photo. A photo that is missing or no longer yields a face keeps its old features, which are
    never compared (they belong to the other model), and is reported so the employee can be re-enrolled."""
    current = engine.model_id
    stale = store.stale_references(current)
    report = RefreshReport()
    for done, ref in enumerate(stale, start=1):
        try:
            features = engine.embed_image(store.load_photo(ref), str(ref.path.name), check_quality=False)
        except KioskError as exc:
            log.warning("cannot recompute the features of %s's photo %s: %s; re-enrol them",
                        ref.employee_id, ref.path.name, exc)
            report.unusable.append((ref.employee_id, str(exc)))
        else:
            store.update_features(ref.id, features, current)
            report.updated += 1
        if progress is not None:
            progress(done, len(stale))
    if stale:
        log.info("%s", report.describe())
    return report


def unusable_references(engine: FaceEngine, store: EmployeeStore) -> list[str]:
    """Employees with a photo whose features belong to another model (it gave no usable face)."""
    return sorted({ref.employee_id for ref in store.stale_references(engine.model_id)})


def current_references(engine: FaceEngine, store: EmployeeStore, employee_id: str) -> np.ndarray:
    """(N, D) features of the employee's photos that match the engine's weights (empty if none)."""
    return store.reference_features(employee_id, engine.model_id)
