"""Face detection with OpenCV's Haar frontal-face cascade, and the choice of the one face to verify."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from kiosk.errors import KioskError

Box = tuple[int, int, int, int]  # x, y, width, height in image pixels

# Another face smaller than this fraction of the primary face's area does not matter: it is neither the
# face to verify nor a second person in the way (vision/quality.py's "several faces").
OTHER_FACE_AREA_RATIO = 0.5


@dataclass(frozen=True)
class Detection:
    """All faces found in one image, and the primary one (largest, most central) if any."""

    boxes: list[Box] = field(default_factory=list)
    primary: Box | None = None
    image_shape: tuple[int, int] = (0, 0)  # height, width

    @property
    def count(self) -> int:
        return len(self.boxes)


def _score(box: Box, image_shape: tuple[int, int]) -> float:
    """Area discounted by the distance from the image centre."""
    height, width = image_shape[:2]
    x, y, w, h = box
    offset = np.hypot(x + w / 2.0 - width / 2.0, y + h / 2.0 - height / 2.0) / float(np.hypot(width, height))
    return w * h * (1.0 - offset) ** 2


def choose_primary(boxes: list[Box], image_shape: tuple[int, int]) -> Box | None:
    """The face to verify: large and near the centre (area discounted by distance from the centre)."""
    return max(boxes, key=lambda box: _score(box, image_shape)) if boxes else None


class HaarFaceDetector:
    """OpenCV's Haar frontal-face cascade. Large frames are shrunk for speed, boxes mapped back."""

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml", detect_max_side: int = 224,
                 scale_factor: float = 1.1, min_neighbors: int = 5, min_face_fraction: float = 0.1,
                 near_face_fraction: float = 0.2):
        path = Path(cascade)
        if not path.is_file():
            path = Path(cv2.data.haarcascades) / cascade
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise KioskError(f"cannot load the Haar cascade {path} (is opencv-python 4.x installed?)")
        self.cascade_name = path.name
        self.detect_max_side = detect_max_side
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face_fraction = min_face_fraction
        self.near_face_fraction = near_face_fraction

    def settings(self) -> dict:
        return {"cascade": self.cascade_name, "detect_max_side": self.detect_max_side, "scale_factor": self.scale_factor,
                "min_neighbors": self.min_neighbors, "min_face_fraction": self.min_face_fraction,
                "near_face_fraction": self.near_face_fraction}

    def detect(self, image_bgr: np.ndarray) -> Detection:
        grey = image_bgr if image_bgr.ndim == 2 else cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
        height, width = grey.shape
        scale = min(1.0, self.detect_max_side / max(height, width))
        small = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else grey
        small = cv2.equalizeHist(small)
        min_side = max(20, int(self.min_face_fraction * min(small.shape)))
        near_side = int(self.near_face_fraction * min(small.shape))
        boxes = self._find(small, near_side, scale) if near_side > min_side else []
        primary = choose_primary(boxes, (height, width))
        # Small faces cost most of the search. When the near faces alone settle it (no smaller face could be
        # chosen, nor matter beside the chosen one), skip them; otherwise search every size.
        if primary is None or not _settles(primary, (height, width), near_side / scale):
            boxes = self._find(small, min_side, scale)
            primary = choose_primary(boxes, (height, width))
        return Detection(boxes=boxes, primary=primary, image_shape=(height, width))

    def _find(self, small: np.ndarray, min_side: int, scale: float) -> list[Box]:
        found = self._cascade.detectMultiScale(small, scaleFactor=self.scale_factor,
                                               minNeighbors=self.min_neighbors, minSize=(min_side, min_side))
        return [tuple(int(round(v / scale)) for v in box) for box in (found if len(found) else [])]


def _settles(primary: Box, image_shape: tuple[int, int], unsearched_side: float) -> bool:
    """Could no face smaller than ``unsearched_side`` change the outcome? It would have to outscore the
    primary (at best it is centred), or be big enough beside it to count as another face."""
    smaller_best = unsearched_side ** 2
    return min(_score(primary, image_shape), OTHER_FACE_AREA_RATIO * primary[2] * primary[3]) > smaller_best
