"""Knowledge-distillation targets from the face_recognition peer (dlib's CC0 ResNet), training images only.

Run at training time on images of training people; never imported by the kiosk at run time.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ProcessPoolExecutor
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
from ..preprocess import InputSpec

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


# The teacher on the kiosk's own crops (scripts/teacher_on_our_crops.py): what our input allows.
TEACHER_SIDE = 192  # crops are enlarged to this before the teacher's own 150 px face alignment


def face_box_in_crop(spec: InputSpec, side: int) -> tuple[int, int, int, int]:
    """Where crop_face put the detected (square) face box, in a crop enlarged to ``side``: (top, right,
    bottom, left), dlib's order."""
    box = side / (1 + 2 * spec.margin)
    left, top = (side - box) / 2, (side - box) / 2 - spec.shift_y * box
    return int(top), int(left + box), int(top + box), int(left)


def _teacher_chunk(args) -> np.ndarray:
    crops, spec = args
    fr = import_face_recognition()
    location = [face_box_in_crop(spec, TEACHER_SIDE)]
    out = np.zeros((len(crops), 128), np.float32)
    for i, crop in enumerate(crops):
        big = cv2.resize(crop, (TEACHER_SIDE, TEACHER_SIDE), interpolation=cv2.INTER_CUBIC)
        out[i] = fr.face_encodings(cv2.cvtColor(big, cv2.COLOR_BGR2RGB), location)[0]
    return out


def teacher_on_crops(crops: np.ndarray, spec: InputSpec, workers: int = 1, desc: str = "teacher on crops") -> np.ndarray:
    """The teacher's 128-d embedding of each (N, H, W, 3) crop, at the face box the crop was framed on."""
    chunks = [(crops[s:s + 256], spec) for s in range(0, len(crops), 256)]
    with ProcessPoolExecutor(max(1, workers)) as pool:
        parts = list(tqdm(pool.map(_teacher_chunk, chunks), total=len(chunks), desc=desc, unit="chunk"))
    return np.concatenate(parts) if parts else np.zeros((0, 128), np.float32)
