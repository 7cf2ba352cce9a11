"""The face_recognition peer (dlib HOG detector + dlib ResNet embeddings), for side-by-side comparison.

Optional: installed with the 'peer' extra. Never used by the kiosk at run time.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np

from kiosk.errors import KioskError

# dlib's detection box on LFW-framed 250x250 images (shared datasets README: centre 121.5,134, width 109).
LFW_FRAMING_DLIB = (80, 176, 189, 67)  # top, right, bottom, left


def import_face_recognition():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import face_recognition  # noqa: PLC0415
    except ImportError as exc:
        raise KioskError("the face_recognition peer is not installed: pip install -e '.[peer]' && "
                         "pip install --no-deps face_recognition") from exc
    return face_recognition


class FaceRecognitionPeer:
    name = "face_recognition (dlib)"

    def __init__(self, upsample: int = 1):
        self.fr = import_face_recognition()
        self.upsample = upsample

    def locate(self, image_bgr: np.ndarray) -> list[tuple[int, int, int, int]]:
        return self.fr.face_locations(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB), self.upsample)

    def embed(self, image_bgr: np.ndarray, fallback: bool = True) -> tuple[np.ndarray | None, bool]:
        """(128-d embedding, detected?) of the largest face; the LFW framing box when none is found."""
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        boxes = self.fr.face_locations(rgb, self.upsample)
        detected = bool(boxes)
        if boxes:
            box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
        elif fallback:
            h, w = image_bgr.shape[:2]
            top, right, bottom, left = LFW_FRAMING_DLIB
            box = (int(top * h / 250), int(right * w / 250), int(bottom * h / 250), int(left * w / 250))
        else:
            return None, False
        return self.fr.face_encodings(rgb, [box])[0], detected

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Higher = more alike: minus the Euclidean distance (face_recognition's own tolerance is 0.6)."""
        return -np.linalg.norm(np.atleast_2d(a) - np.atleast_2d(b), axis=1)
