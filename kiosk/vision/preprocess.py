"""THE face preprocessing: one path turns an image plus a detected face box into the network's input.

Training, evaluation, enrolment and live verification all call :meth:`FacePreprocessor.chip` (then
:func:`to_network_input`), so the network always sees the same kind of chip:

1. the Haar box is refined into the box dlib's landmark model was trained on: dlib's HOG face detector runs
   on the small region around the face only (the whole frame would cost 20 ms), and where it finds nothing
   the Haar box is mapped by its median offset and scale instead;
2. the 5 landmarks (eye corners, base of the nose) are found in that box;
3. one similarity transform maps them onto dlib's 150x150 chip (padding 0.25), the alignment the pretrained
   network was trained on.

Chosen by the numbers on LFW validation folds 6-10 (``research/choose_detector.py``, weights/MODEL_CARD.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from kiosk.vision.alignment import CHIP_PADDING, CHIP_SIZE, LandmarkFinder, align_chip
from kiosk.vision.detection import Box
from kiosk.vision.hog import frontal_face_detector

PREPROCESS_VERSION = 2  # 1: unaligned square crops (the from-scratch model); 2: 5-point aligned chips
# dlib's HOG detector searches the region REFINE_REACH box sides around the mapped box's centre, scaled so the
# face is about REFINE_FACE_PX wide (its window is 80 px), at one scale (no upsampling). 85 px and 0.85
# cost 1.8 ms less a frame than 100 px and 1.0 for 0.1 point of validation accuracy (98.5 against 98.6 %,
# TAR at FAR 1 % equal), within the rule set before measuring (research/choose_detector.py).
REFINE_FACE_PX = 85.0
REFINE_REACH = 0.85

# A Haar box -> the box dlib's HOG detector draws on the same face (the landmark model was trained on those):
# median centre shift (in box widths) and size ratio over 556 CelebA faces (research/choose_detector.py).
HAAR_TO_LANDMARK_BOX = {"dx": -0.008, "dy": 0.070, "scale": 0.893}


@dataclass(frozen=True)
class InputSpec:
    """What the network takes: a square RGB chip of ``size`` pixels, aligned with ``padding``."""

    size: int = CHIP_SIZE
    channels: int = 3
    padding: float = CHIP_PADDING
    version: int = PREPROCESS_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "InputSpec":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def landmark_box(box: Box) -> tuple[float, float, float, float]:
    """The box (x, y, w, h) the landmark model expects for a Haar detection box."""
    x, y, w, h = box
    m = HAAR_TO_LANDMARK_BOX
    side = m["scale"] * w
    cx, cy = x + w / 2 + m["dx"] * w, y + h / 2 + m["dy"] * w
    return cx - side / 2, cy - side / 2, side, side


def haar_box_for(box: tuple[float, float, float, float]) -> Box:
    """The inverse of :func:`landmark_box`: the detector box that maps onto a given landmark box."""
    x, y, w, _ = box
    m = HAAR_TO_LANDMARK_BOX
    side = w / m["scale"]
    cx, cy = x + w / 2 - m["dx"] * side, y + w / 2 - m["dy"] * side
    return (int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(side)), int(round(side)))


class FacePreprocessor:
    """Image + Haar face box -> aligned RGB chip (uint8, size x size x 3)."""

    def __init__(self, spec: InputSpec = InputSpec(), landmarks: LandmarkFinder | None = None):
        self.spec = spec
        self.landmarks = landmarks or LandmarkFinder()
        self._hog = frontal_face_detector()  # after LandmarkFinder, which has checked that dlib is there

    def settings(self) -> dict:
        """Everything that shapes a chip besides the input spec (part of what identifies features)."""
        return {"box_mapping": HAAR_TO_LANDMARK_BOX, "refine": "dlib_hog_in_region", "refine_face_px": REFINE_FACE_PX,
                "refine_reach": REFINE_REACH, "landmarks": self.landmarks.path.name}

    def _region(self, image_bgr: np.ndarray, box: Box) -> tuple[np.ndarray, int, int]:
        """The RGB region REFINE_REACH box sides around the mapped box's centre (clipped), and its origin."""
        x, y, w, _ = landmark_box(box)
        height, width = image_bgr.shape[:2]
        cx, cy, reach = x + w / 2, y + w / 2, REFINE_REACH * w
        x0, y0 = int(max(0, cx - reach)), int(max(0, cy - reach))
        x1, y1 = int(min(width, cx + reach)), int(min(height, cy + reach))
        region = image_bgr[y0:y1, x0:x1]
        code = cv2.COLOR_BGR2RGB if region.ndim == 3 else cv2.COLOR_GRAY2RGB
        return cv2.cvtColor(region, code), x0, y0

    def refined_box(self, region_rgb: np.ndarray, guess: tuple[float, float, float, float]) -> tuple[float, ...]:
        """dlib's HOG box for the face nearest the guess (in region pixels), or the guess when it finds none."""
        gx, gy, gw, _ = guess
        scale = REFINE_FACE_PX / max(gw, 1.0)
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        small = cv2.resize(region_rgb, None, fx=scale, fy=scale, interpolation=interpolation)
        found = [(r.left() / scale, r.top() / scale, r.width() / scale, r.height() / scale) for r in self._hog(small, 0)]
        if not found:
            return guess
        centre = np.array([gx + gw / 2, gy + gw / 2])
        return min(found, key=lambda b: np.hypot(*(np.array([b[0] + b[2] / 2, b[1] + b[3] / 2]) - centre)))

    def find_landmarks(self, image_bgr: np.ndarray, box: Box) -> np.ndarray:
        """(5, 2) landmarks in image pixels (only the face's surroundings are converted and searched)."""
        region, x0, y0 = self._region(image_bgr, box)
        x, y, w, h = landmark_box(box)
        refined = self.refined_box(region, (x - x0, y - y0, w, h))
        return self.landmarks.find(region, refined) + (x0, y0)

    def chip(self, image_bgr: np.ndarray, box: Box) -> np.ndarray:
        return align_chip(image_bgr, self.find_landmarks(image_bgr, box), self.spec.size, self.spec.padding)


def to_network_input(chips: np.ndarray) -> np.ndarray:
    """uint8 chips (N,H,W,C) or (H,W,C) -> float32 (N,C,H,W) pixel values; the encoder normalises them."""
    chips = np.asarray(chips)
    if chips.ndim == 3:
        chips = chips[None]
    return np.ascontiguousarray(chips.transpose(0, 3, 1, 2), dtype=np.float32)
