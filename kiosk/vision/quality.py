"""Is this face good enough to verify or enrol? Returns reasons a person can act on."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from kiosk.vision.detection import OTHER_FACE_AREA_RATIO, Box, Detection

NO_FACE = "no face"
SEVERAL_FACES = "several faces"
TOO_SMALL = "face too small"
TOO_BLURRED = "too blurred"
TOO_DARK = "too dark"
TOO_BRIGHT = "too bright"

# What a person should do about each problem (shown on the kiosk screen).
ADVICE = {
    NO_FACE: "Look at the camera",
    SEVERAL_FACES: "One person at a time, please",
    TOO_SMALL: "Please come closer",
    TOO_BLURRED: "Hold still",
    TOO_DARK: "Too dark: face the light",
    TOO_BRIGHT: "Too bright: avoid backlight",
}


@dataclass(frozen=True)
class QualityLimits:
    min_face_px: int = 80            # side of the detected box (80 px in a 640x480 frame: about 1.5 m away)
    min_sharpness: float = 20.0      # variance of the Laplacian on the 96x96 grey face crop
    min_brightness: float = 45.0     # mean grey level of the face
    max_brightness: float = 215.0


@dataclass
class QualityReport:
    reasons: list[str] = field(default_factory=list)
    face_px: int = 0
    sharpness: float = 0.0
    brightness: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.reasons

    def describe(self) -> str:
        return ", ".join(self.reasons) if self.reasons else "ok"


def _overlap_of_smaller(a: Box, b: Box) -> float:
    """Intersection area over the smaller box's area."""
    iw = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return iw * ih / max(1, min(a[2] * a[3], b[2] * b[3]))


def _face_patch(image_bgr: np.ndarray, box: Box) -> np.ndarray:
    x, y, w, h = box
    H, W = image_bgr.shape[:2]
    patch = image_bgr[max(0, y):min(H, y + h), max(0, x):min(W, x + w)]
    grey = patch if patch.ndim == 2 else cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (96, 96), interpolation=cv2.INTER_AREA)


def assess_quality(image_bgr: np.ndarray, detection: Detection, limits: QualityLimits = QualityLimits()) -> QualityReport:
    if detection.primary is None:
        return QualityReport([NO_FACE])
    report = QualityReport()
    x, y, w, h = detection.primary
    # Another face: at least OTHER_FACE_AREA_RATIO of the primary's area (the detector relies on smaller ones
    # not counting) and apart from the primary (a Haar false hit on the chin overlaps it).
    others = [b for b in detection.boxes if b != detection.primary and b[2] * b[3] >= OTHER_FACE_AREA_RATIO * w * h
              and _overlap_of_smaller(b, detection.primary) < 0.3]
    if others:
        report.reasons.append(SEVERAL_FACES)
    report.face_px = min(w, h)
    if report.face_px < limits.min_face_px:
        report.reasons.append(TOO_SMALL)
    patch = _face_patch(image_bgr, detection.primary)
    report.brightness = float(patch.mean())
    report.sharpness = float(cv2.Laplacian(patch, cv2.CV_64F).var())
    if report.brightness < limits.min_brightness:
        report.reasons.append(TOO_DARK)
    elif report.brightness > limits.max_brightness:
        report.reasons.append(TOO_BRIGHT)
    if report.sharpness < limits.min_sharpness and TOO_DARK not in report.reasons:
        report.reasons.append(TOO_BLURRED)
    return report
