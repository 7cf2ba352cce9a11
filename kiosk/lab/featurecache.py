"""Detect, align and embed many image files once, through THE preprocessing, and keep the features on disk.

Evaluation and training read thousands of photos; each is embedded once per model (``FaceEngine.model_id``)
and detector setting, and the features are cached (re-created at will) in the platformdirs cache folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kiosk.errors import KioskError
from kiosk.io.imageio import read_image
from kiosk.lab.diskcache import cache_path, load_arrays, save_arrays
from kiosk.vision.detection import Box
from kiosk.vision.preprocess import haar_box_for

log = logging.getLogger(__name__)

# LFW deep-funneled (and the CelebA subset framed like it) centre the face: dlib's median box on a 250x250
# image (datasets README: centre 121.5, 134, width 109), as a detector box. Used when the detector misses,
# for every model compared alike (the face_recognition peer uses the same box).
LFW_FRAMING_BOX: Box = haar_box_for((67.0, 79.5, 109.0, 109.0))


@dataclass
class FeatureCache:
    paths: list[Path]
    features: np.ndarray     # (N, D) float32
    detected: np.ndarray     # (N,) bool: False = detector missed, fallback box used
    readable: np.ndarray     # (N,) bool: False = file unreadable (features are zeros)

    def index(self) -> dict[Path, int]:
        return {p: i for i, p in enumerate(self.paths)}


def _scaled(box: Box, image: np.ndarray) -> Box:
    h, w = image.shape[:2]
    x, y, bw, bh = box
    return (int(round(x * w / 250)), int(round(y * h / 250)), int(round(bw * w / 250)), int(round(bh * h / 250)))


def _cache_file(paths: list[Path], engine, fallback: Box | None) -> Path:
    described = (engine.model_id, fallback, [str(p) for p in paths])  # model_id covers detection and alignment
    return cache_path("features", described)


def build_feature_cache(paths: list[Path], engine, fallback: Box | None = LFW_FRAMING_BOX, desc: str = "faces",
                        use_disk: bool = True, batch: int = 64) -> FeatureCache:
    """Features for every path, through the engine's own detect -> align -> embed (cached on disk)."""
    paths = [Path(p) for p in paths]
    target = _cache_file(paths, engine, fallback)
    cached = load_arrays(target, ("features", "detected", "readable")) if use_disk else None
    if cached is not None:
        return FeatureCache(paths, cached["features"], cached["detected"], cached["readable"])
    features = np.zeros((len(paths), engine.feature_dim), np.float32)
    detected = np.zeros(len(paths), bool)
    readable = np.zeros(len(paths), bool)
    chips, where = [], []

    def flush():
        if chips:
            features[where] = engine.embed_crops(np.stack(chips))
            chips.clear()
            where.clear()

    for i, path in enumerate(tqdm(paths, desc=desc, unit="img", leave=False)):
        try:
            image = read_image(path)
        except KioskError as exc:
            log.warning("%s", exc)
            continue
        box = engine.detector.detect(image).primary
        detected[i] = box is not None
        if box is None and fallback is not None:
            box = _scaled(fallback, image)
        if box is None:
            continue
        chips.append(engine.preprocessor.chip(image, box))
        where.append(i)
        readable[i] = True
        if len(chips) == batch:
            flush()
    flush()
    if use_disk:
        save_arrays(target, features=features, detected=detected, readable=readable)
    return FeatureCache(paths, features, detected, readable)
