"""Knowledge-distillation targets from the face_recognition peer (dlib's CC0 ResNet), training images only.

Run at training time on images of training people; never imported by the kiosk at run time.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..detection import HaarFaceDetector
from ..errors import KioskError
from ..facecache import LFW_FRAMING_BOX, box_or_fallback
from ..imageio import read_image
from ..paths import cache_dir
from ..peer import import_face_recognition

log = logging.getLogger(__name__)


def teacher_embeddings(paths: list[Path], desc: str = "teacher") -> np.ndarray:
    """128-d dlib embeddings (NaN rows for unreadable files), with the face box from OUR detector."""
    fr = import_face_recognition()
    detector = HaarFaceDetector()
    out = np.full((len(paths), 128), np.nan, np.float32)
    for i, path in enumerate(tqdm(paths, desc=desc, unit="img")):
        try:
            image = read_image(path)
        except KioskError as exc:
            log.warning("%s", exc)
            continue
        (x, y, w, h), _ = box_or_fallback(image, detector, LFW_FRAMING_BOX)
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        out[i] = fr.face_encodings(rgb, [(y, x + w, y + h, x)])[0]
    return out


def teacher_cache_file(paths: list[Path]) -> Path:
    key = hashlib.sha256("\n".join(map(str, paths)).encode()).hexdigest()[:20]
    return cache_dir() / "teacher" / f"{key}.npy"


def cached_teacher_embeddings(paths: list[Path]) -> np.ndarray:
    """Teacher embeddings for these training images, computed once and kept in the cache folder."""
    target = teacher_cache_file(paths)
    if target.is_file():
        data = np.load(target)
        if len(data) == len(paths):
            return data
    data = teacher_embeddings(paths)
    target.parent.mkdir(parents=True, exist_ok=True)
    np.save(target.with_suffix(".tmp.npy"), data)
    target.with_suffix(".tmp.npy").replace(target)
    return data
