"""THE face preprocessing: one function turns an image plus a face box into the network's input.

Training, evaluation, enrolment and live verification all call :func:`preprocess_face` (or its two halves,
:func:`crop_face` then :func:`to_network_input`), so the network always sees the same kind of crop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from .detection import Box

PREPROCESS_VERSION = 1


@dataclass(frozen=True)
class InputSpec:
    """What the network takes: a square crop around the detected face box."""

    size: int = 64            # output side in pixels
    channels: int = 3         # 3 = RGB, 1 = grey
    margin: float = 0.15      # extra context on each side, as a fraction of the box side
    shift_y: float = 0.05     # move the crop centre down by this fraction of the box (Haar boxes sit high)
    version: int = PREPROCESS_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "InputSpec":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def crop_face(image_bgr: np.ndarray, box: Box, spec: InputSpec, out_size: int | None = None) -> np.ndarray:
    """Cut the square face crop (uint8, HxWxC, RGB or grey). Outside the image is filled by edge replication."""
    x, y, w, h = box
    side = max(w, h) * (1.0 + 2.0 * spec.margin)
    cx, cy = x + w / 2.0, y + h / 2.0 + spec.shift_y * h
    size = out_size or spec.size
    scale = size / side
    # Affine map: crop centre -> output centre, uniform scale, no rotation.
    matrix = np.array([[scale, 0.0, size / 2.0 - scale * cx], [0.0, scale, size / 2.0 - scale * cy]])
    source = image_bgr
    if scale < 0.5:  # shrinking a lot: pre-blur through area resize to avoid aliasing
        factor = 0.5 / scale
        source = cv2.resize(image_bgr, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)
        matrix = matrix @ np.diag([factor, factor, 1.0])
    crop = cv2.warpAffine(source, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if spec.channels == 1:
        return cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)[:, :, None] if crop.ndim == 3 else crop[:, :, None]
    if crop.ndim == 2:
        crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)


def to_network_input(crops: np.ndarray) -> np.ndarray:
    """uint8 crops (N,H,W,C) or (H,W,C) -> float32 (N,C,H,W) in [-1, 1]."""
    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    return (crops.astype(np.float32).transpose(0, 3, 1, 2) / 127.5) - 1.0


def preprocess_face(image_bgr: np.ndarray, box: Box, spec: InputSpec) -> np.ndarray:
    """Image + face box -> network input (1, C, H, W) float32."""
    return to_network_input(crop_face(image_bgr, box, spec))
