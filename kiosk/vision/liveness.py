"""Presentation-attack detection for one frame: is the face in front of the camera live, or a printed photo?

Colour texture: a printed and re-photographed face loses and shifts fine texture and colour differently from
skin. Uniform LBP histograms (8 neighbours, radius 1: 58 uniform patterns + 1 for the rest) of each channel of
the face crop in YCrCb and HSV, and 16-bin chroma histograms of Cr, Cb, H and S (the print's colour gamut,
as in Boulkenafet et al.'s colour-texture work), all square-rooted (Hellinger), then a linear classifier:
P(live) = sigmoid(w.x + b). Numpy and OpenCV only; under a millisecond a frame. The parameters live in
``weights/liveness.npz``; issue #22 and ``research/liveness_features.py`` for what else was tried.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from kiosk.errors import WeightsError
from kiosk.io.pins import read_model_file
from kiosk.rules.decision import valid_liveness_threshold
from kiosk.vision.detection import Box

CROP_PX = 64           # the face crop is resized to this square before the texture is measured
CHANNEL_SPACES = (cv2.COLOR_BGR2YCrCb, cv2.COLOR_BGR2HSV)
CHROMA_BINS = 16       # per chroma channel (Cr, Cb, H, S)
FEATURE_DIM = 6 * 59 + 4 * CHROMA_BINS
LIVENESS_FORMAT = "siamese-kiosk-liveness"


def _uniform_lookup() -> np.ndarray:
    """LBP code (0-255) -> histogram bin: the 58 uniform codes (at most 2 bit changes round the circle) get
    their own bins, every other code bin 58."""
    table = np.full(256, 58, np.int64)
    uniform = [code for code in range(256)
               if bin(code ^ ((code >> 1) | ((code & 1) << 7))).count("1") <= 2]
    table[uniform] = np.arange(len(uniform))
    return table


_BINS = _uniform_lookup()
_NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]


def lbp_histogram(channel: np.ndarray) -> np.ndarray:
    """Normalised 59-bin uniform LBP histogram (P=8, R=1) of a 2-D uint8 channel (border pixels excluded)."""
    c = channel.astype(np.int16)
    centre = c[1:-1, 1:-1]
    code = np.zeros(centre.shape, np.int64)
    height, width = c.shape
    for bit, (dy, dx) in enumerate(_NEIGHBOURS):
        code |= (c[1 + dy:height - 1 + dy, 1 + dx:width - 1 + dx] >= centre).astype(np.int64) << bit
    histogram = np.bincount(_BINS[code].ravel(), minlength=59).astype(np.float32)
    return histogram / max(1.0, histogram.sum())


def face_crop(frame_bgr: np.ndarray, box: Box, scale: float = 1.0) -> np.ndarray:
    """The face box (``scale`` times its size, same centre) cut and resized to CROP_PX x CROP_PX (BGR)."""
    x, y, w, h = box
    side = max(w, h) * scale
    cx, cy = x + w / 2.0, y + h / 2.0
    to_crop = CROP_PX / side
    matrix = np.array([[to_crop, 0, CROP_PX / 2 - to_crop * cx], [0, to_crop, CROP_PX / 2 - to_crop * cy]])
    image = frame_bgr if frame_bgr.ndim == 3 else cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2BGR)
    flags = cv2.INTER_AREA if to_crop < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(image, matrix, (CROP_PX, CROP_PX), flags=flags, borderMode=cv2.BORDER_REPLICATE)


def chroma_histogram(channel: np.ndarray, top: int) -> np.ndarray:
    """Normalised CHROMA_BINS-bin histogram of a 2-D uint8 channel whose values lie in [0, top)."""
    bins = np.minimum(channel.astype(np.int32) * CHROMA_BINS // top, CHROMA_BINS - 1)
    histogram = np.bincount(bins.ravel(), minlength=CHROMA_BINS).astype(np.float32)
    return histogram / max(1.0, histogram.sum())


def texture_features(frame_bgr: np.ndarray, box: Box, scale: float = 1.0) -> np.ndarray:
    """(FEATURE_DIM,) float32: Hellinger-normalised LBP histograms of Y, Cr, Cb, H, S, V of the face crop, then
    chroma histograms of Cr, Cb, H (OpenCV's 0-179) and S."""
    crop = face_crop(frame_bgr, box, scale)
    ycrcb, hsv = (cv2.cvtColor(crop, space) for space in CHANNEL_SPACES)
    histograms = [lbp_histogram(converted[:, :, k]) for converted in (ycrcb, hsv) for k in range(3)]
    histograms += [chroma_histogram(ycrcb[:, :, 1], 256), chroma_histogram(ycrcb[:, :, 2], 256),
                   chroma_histogram(hsv[:, :, 0], 180), chroma_histogram(hsv[:, :, 1], 256)]
    return np.sqrt(np.concatenate(histograms))


@dataclass(frozen=True)
class LivenessModel:
    """Standardise, then a linear score; ``threshold`` on P(live) was fitted on held-out people's scores."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    threshold: float
    crop_scale: float = 1.0
    metadata: dict | None = None

    def probability(self, features: np.ndarray) -> np.ndarray:
        z = (np.atleast_2d(features) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-(z @ self.weights + self.bias)))

    def p_live(self, frame_bgr: np.ndarray, box: Box) -> float:
        return float(self.probability(texture_features(frame_bgr, box, self.crop_scale))[0])

    # -- the file: plain arrays and JSON, never pickle; a SHA-256 over all of it ------------------------------
    def _arrays(self) -> dict:
        return {"mean": self.mean.astype(np.float32), "scale": self.scale.astype(np.float32),
                "weights": self.weights.astype(np.float32)}

    def _header(self) -> dict:
        return {"format": LIVENESS_FORMAT, "bias": float(self.bias), "threshold": float(self.threshold),
                "crop_scale": float(self.crop_scale), "crop_px": CROP_PX, "metadata": self.metadata or {}}

    @staticmethod
    def _digest(arrays: dict, header: dict) -> str:
        sha = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
        for key in sorted(arrays):
            sha.update(key.encode() + np.ascontiguousarray(arrays[key], "<f4").tobytes())
        return sha.hexdigest()

    def save(self, path: str | Path) -> Path:
        from kiosk.io.files import atomic_write_bytes  # noqa: PLC0415 (the one atomic write)
        arrays, header = self._arrays(), self._header()
        buffer = io.BytesIO()
        np.savez(buffer, header=np.array(json.dumps(header)), sha256=np.array(self._digest(arrays, header)), **arrays)
        return atomic_write_bytes(path, buffer.getvalue(), mode=0o644)

    @classmethod
    def load(cls, path: str | Path) -> "LivenessModel":
        path = Path(path)
        try:
            with np.load(io.BytesIO(read_model_file(path)), allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                arrays = {key: data[key].astype(np.float32) for key in ("mean", "scale", "weights")}
                digest = str(data["sha256"])
        except FileNotFoundError:
            raise WeightsError(f"{path}: no liveness model installed") from None
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise WeightsError(f"{path}: damaged or not a liveness model ({type(exc).__name__})") from None
        if header.get("format") != LIVENESS_FORMAT or digest != cls._digest(arrays, header):
            raise WeightsError(f"{path}: integrity check failed (the liveness model is damaged or was modified)")
        dims = {arrays[k].shape for k in arrays}
        threshold = header.get("threshold")
        if len(dims) != 1 or dims.pop() != (FEATURE_DIM,) or header.get("crop_px") != CROP_PX:
            raise WeightsError(f"{path}: the liveness model does not match this code's features")
        if not isinstance(threshold, float) or not valid_liveness_threshold(threshold) or not np.all(arrays["scale"] > 0):
            raise WeightsError(f"{path}: liveness threshold or scales out of range")
        return cls(arrays["mean"], arrays["scale"], arrays["weights"], float(header["bias"]), threshold,
                   float(header.get("crop_scale", 1.0)), header.get("metadata"))
