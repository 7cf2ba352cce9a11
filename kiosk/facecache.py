"""Detect-and-crop many image files once, through THE preprocessing, and keep the crops on disk.

Evaluation and training read thousands of photos; each is detected and cropped once per input spec and
the uint8 crops are cached (re-created at will) in the platformdirs cache folder.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .detection import Box, HaarFaceDetector
from .errors import KioskError
from .imageio import read_image
from .paths import cache_dir
from .preprocess import InputSpec, crop_face
from .storage.files import atomic_writer, private_dir

log = logging.getLogger(__name__)

# LFW deep-funneled (and the CelebA subset framed like it) centre the face: the median Haar box on a
# 250x250 LFW image. Used when the detector misses, for every model compared alike.
LFW_FRAMING_BOX: Box = (67, 67, 115, 115)


@dataclass
class FaceCache:
    paths: list[Path]
    crops: np.ndarray        # (N, S, S, C) uint8, THE preprocessing's crop
    detected: np.ndarray     # (N,) bool: False = detector missed, fallback box used
    readable: np.ndarray     # (N,) bool: False = file unreadable (crop is zeros)

    def index(self) -> dict[Path, int]:
        return {p: i for i, p in enumerate(self.paths)}


def box_or_fallback(image: np.ndarray, detector: HaarFaceDetector, fallback: Box | None) -> tuple[Box | None, bool]:
    """The primary detected face, else the fallback box (scaled to the image); second value: detected?"""
    detection = detector.detect(image)
    if detection.primary is not None:
        return detection.primary, True
    if fallback is None:
        return None, False
    h, w = image.shape[:2]
    sx, sy = w / 250.0, h / 250.0
    x, y, bw, bh = fallback
    return (int(x * sx), int(y * sy), int(bw * sx), int(bh * sy)), False


def _cache_file(paths: list[Path], spec: InputSpec, fallback: Box | None, detector: HaarFaceDetector) -> Path:
    key = hashlib.sha256(repr((spec.to_dict(), fallback, detector.settings(), [str(p) for p in paths])).encode()).hexdigest()[:20]
    return cache_dir() / "faces" / f"{key}.npz"


def build_face_cache(paths: list[Path], spec: InputSpec, fallback: Box | None = LFW_FRAMING_BOX,
                     detector: HaarFaceDetector | None = None, desc: str = "faces", use_disk: bool = True) -> FaceCache:
    """Crops for every path (cached on disk by spec and file list)."""
    paths = [Path(p) for p in paths]
    detector = detector or HaarFaceDetector()
    target = _cache_file(paths, spec, fallback, detector)
    if use_disk and target.is_file():
        try:
            with np.load(target) as data:
                return FaceCache(paths, data["crops"], data["detected"], data["readable"])
        except (OSError, ValueError, KeyError):
            log.warning("face cache %s unreadable; rebuilding", target)
    crops = np.zeros((len(paths), spec.size, spec.size, spec.channels), np.uint8)
    detected = np.zeros(len(paths), bool)
    readable = np.zeros(len(paths), bool)
    for i, path in enumerate(tqdm(paths, desc=desc, unit="img", leave=False)):
        try:
            image = read_image(path)
        except KioskError as exc:
            log.warning("%s", exc)
            continue
        box, detected[i] = box_or_fallback(image, detector, fallback)
        if box is not None:
            crops[i] = crop_face(image, box, spec)
            readable[i] = True
    if use_disk:  # owner-only: crops of people's faces (folders 0700, file 0600)
        private_dir(target.parent)
        with atomic_writer(target) as handle:
            np.savez(handle, crops=crops, detected=detected, readable=readable)
    return FaceCache(paths, crops, detected, readable)
