"""The face-verification engine: detector + THE preprocessing (aligned chips) + the Siamese network, Qt-free.

Used by the command line, the kiosk's worker thread and the tests alike. It measures (faces, quality, P(live),
features, P(same)); it gives no verdict: ACCEPT or REJECT is a kiosk.rules.decision.Decision, made by the
kiosk's attempts (kiosk.app.attempt, and kiosk.api for programs) with the liveness rule and the site's rules.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from kiosk.errors import FaceNotUsableError, WeightsError
from kiosk.io.imageio import read_image
from kiosk.paths import DEFAULT_WEIGHTS, LIVENESS_WEIGHTS
from kiosk.vision.detection import Box, Detection, HaarFaceDetector
from kiosk.vision.liveness import LivenessModel
from kiosk.vision.preprocess import FacePreprocessor, to_network_input
from kiosk.vision.quality import QualityLimits, QualityReport, assess_quality
from kiosk.vision.weights import load_weights

log = logging.getLogger(__name__)


def embed_crops(model, crops: np.ndarray, flip_average: bool = False, batch_size: int = 64) -> np.ndarray:
    """uint8 aligned chips (N,H,W,C) -> float32 features (N,D). With flip_average, the features of each chip
    and its mirror image are averaged (the same for enrolment, live frames, evaluation and calibration)."""
    crops = np.asarray(crops)
    out = []
    with torch.inference_mode():
        for start in range(0, len(crops), batch_size):
            batch = torch.from_numpy(to_network_input(crops[start:start + batch_size]))
            if flip_average:  # one pass over the chips and their mirror images
                batch = torch.cat([batch, torch.flip(batch, dims=[3])])
            features = model.embed(batch.contiguous(memory_format=torch.channels_last))
            if flip_average:
                features = (features[:len(features) // 2] + features[len(features) // 2:]) / 2
            out.append(features.numpy())
    return np.concatenate(out) if out else np.zeros((0, model.encoder.feature_dim), np.float32)


@dataclass
class FaceAnalysis:
    """One image seen by the engine: what was detected, how good it is, and the network crop."""

    detection: Detection
    quality: QualityReport
    box: Box | None
    crop: np.ndarray | None  # the aligned chip, uint8 HxWx3 RGB; None without a face
    liveness: float | None = None  # P(live) of the face (kiosk.vision.liveness); None without a face or a liveness model


class FaceEngine:
    """Loads trained weights once; thread-safe inference (one lock around the network)."""

    def __init__(self, weights_path: str | Path = DEFAULT_WEIGHTS, detector: HaarFaceDetector | None = None,
                 limits: QualityLimits = QualityLimits(), threads: int | None = None,
                 loaded: tuple | None = None, liveness_weights: str | Path | None = LIVENESS_WEIGHTS):
        """``loaded``: a (model, input spec, metadata) already in memory, e.g. while training the head.
        ``liveness_weights``: the presentation-attack detector; a missing or damaged file leaves ``liveness``
        None and says why in ``liveness_problem`` (attempts that need liveness are then refused)."""
        self.weights_path = Path(weights_path)
        self.model, self.spec, self.metadata = loaded or load_weights(self.weights_path)
        if self.spec.channels != 3:
            raise WeightsError(f"{self.weights_path}: not a face model (it takes {self.spec.channels}-channel "
                               f"{self.spec.size}-pixel images, e.g. the Omniglot character model)")
        self.model.to(memory_format=torch.channels_last)
        self.detector = detector or HaarFaceDetector()
        self.preprocessor = FacePreprocessor(self.spec)
        self.limits = limits
        self.default_threshold = float(self.metadata.get("threshold", 0.5))
        self.flip_average = bool(self.metadata.get("flip_average", False))
        self.liveness: LivenessModel | None = None
        self.liveness_problem = "no liveness model configured"
        if liveness_weights is not None:
            try:
                self.liveness = LivenessModel.load(liveness_weights)
            except WeightsError as exc:
                log.error("liveness unavailable: %s", exc)
                self.liveness_problem = str(exc)
        self._lock = threading.Lock()
        if threads:
            torch.set_num_threads(threads)

    @cached_property
    def model_id(self) -> str:
        """What made a feature vector: the encoder, its input, detection and alignment, flip averaging (not the
        head, which only compares features). Stored features carry it; features of another model_id are never compared."""
        described = {"encoder": self.model.encoder_name, "options": self.model.encoder_options,
                     "input": self.spec.to_dict(), "preprocessing": self.preprocessor.settings(),
                     "detector": self.detector.settings(), "flip_average": self.flip_average}
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()

    @property
    def feature_dim(self) -> int:
        return self.model.encoder.feature_dim

    def analyse(self, image_bgr: np.ndarray) -> FaceAnalysis:
        detection = self.detector.detect(image_bgr)
        quality = assess_quality(image_bgr, detection, self.limits)
        box = detection.primary
        crop = self.preprocessor.chip(image_bgr, box) if box is not None else None
        liveness = self.liveness.p_live(image_bgr, box) if box is not None and self.liveness is not None else None
        return FaceAnalysis(detection, quality, box, crop, liveness)

    def embed_crops(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """uint8 aligned chips (N,H,W,C) -> float32 features (N,D)."""
        with self._lock:
            return embed_crops(self.model, crops, self.flip_average, batch_size)

    def embed_image(self, image_bgr: np.ndarray, name: str = "image", check_quality: bool = True) -> np.ndarray:
        """Features of the one usable face in an image; FaceNotUsableError (with reasons) otherwise."""
        analysis = self.analyse(image_bgr)
        if analysis.crop is None or (check_quality and not analysis.quality.ok):
            raise FaceNotUsableError(f"{name}: {analysis.quality.describe()}", analysis.quality.reasons)
        return self.embed_crops(analysis.crop[None])[0]

    def embed_file(self, path: str | Path, check_quality: bool = True) -> np.ndarray:
        return self.embed_image(read_image(path), str(path), check_quality)

    def similarity(self, features_a: np.ndarray, features_b: np.ndarray) -> np.ndarray:
        """P(same) for feature vectors (D,) or batches (N,D) against (D,) or (N,D)."""
        a = torch.as_tensor(np.atleast_2d(features_a), dtype=torch.float32)
        b = torch.as_tensor(np.atleast_2d(features_b), dtype=torch.float32)
        with self._lock, torch.inference_mode():
            p = self.model.similarity(a, b).numpy()
        return p if p.size > 1 else p.reshape(())
