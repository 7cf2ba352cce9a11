"""A torch-free stand-in for kiosk.vision.engine.FaceEngine, for use-case tests of kiosk.app.

It keeps the engine's contract (model_id, feature_dim, default_threshold, embed_image, embed_crops, analyse,
similarity, liveness) on synthetic pictures: a picture's "face" is its colour layout (8 block means, unit
length), P(same) is (1 + cosine) / 2, and a black picture has no face. Two pictures of one "person" are
``person_picture(seed)`` with a little noise; different seeds give different people."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kiosk.errors import FaceNotUsableError
from kiosk.vision.quality import NO_FACE, QualityReport


@dataclass
class FakeAnalysis:
    box: tuple | None
    quality: QualityReport
    crop: np.ndarray | None
    liveness: float | None = None


def person_picture(seed: int, noise: float = 2.0, size: int = 64) -> np.ndarray:
    """A BGR picture of person ``seed`` (their colour layout) with a little camera noise."""
    layout = np.random.default_rng(seed).integers(40, 215, size=(2, 4, 3)).astype(np.float64)
    picture = np.kron(layout, np.ones((size // 2, size // 4, 1)))
    picture += np.random.default_rng().normal(0, noise, picture.shape)
    return np.clip(picture, 0, 255).astype(np.uint8)


class FakeEngine:
    model_id = "fake-colour-layout-1"
    feature_dim = 24
    default_threshold = 0.9
    liveness = None
    liveness_problem = "the fake engine has no liveness model"
    model = None  # no Euclidean head: kiosk.rules.identification scores with ``similarity``

    def analyse(self, image: np.ndarray) -> FakeAnalysis:
        if float(np.asarray(image).max(initial=0)) < 10:
            return FakeAnalysis(None, QualityReport([NO_FACE]), None)
        return FakeAnalysis((0, 0, image.shape[1], image.shape[0]), QualityReport(), np.asarray(image))

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        out = []
        for crop in np.asarray(crops, np.float64):
            h, w = crop.shape[:2]
            blocks = crop.reshape(2, h // 2, 4, w // 4, 3).mean(axis=(1, 3)).reshape(-1)
            blocks = blocks - blocks.mean()
            out.append(blocks / (np.linalg.norm(blocks) or 1.0))
        return np.asarray(out, np.float32)

    def embed_image(self, image: np.ndarray, name: str = "image", check_quality: bool = True) -> np.ndarray:
        analysis = self.analyse(image)
        if analysis.crop is None:
            raise FaceNotUsableError(f"{name}: {analysis.quality.describe()}", analysis.quality.reasons)
        return self.embed_crops(analysis.crop[None])[0]

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = np.atleast_2d(a), np.atleast_2d(b)
        return ((1.0 + (a @ b.T)) / 2.0).reshape(-1) if min(len(a), len(b)) == 1 else (1.0 + a @ b.T) / 2.0
