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


def _shrunk_region(image: np.ndarray, cx: float, cy: float, side: float, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """The part of the image a crop of ``side`` around (cx, cy) reads, shrunk ``factor`` times by area
    averaging (only that part: a whole 640x480 frame costs about 1 ms), and the 3x3 map from its pixels
    to image pixels. Clipped to the image, so border replication still copies the image's own edges."""
    height, width = image.shape[:2]
    reach = side / 2.0 + 2.0 * factor  # the crop window plus the interpolation's neighbours
    x0, y0 = max(0, int(cx - reach)), max(0, int(cy - reach))
    x1, y1 = min(width, int(np.ceil(cx + reach))), min(height, int(np.ceil(cy + reach)))
    if x1 - x0 < factor or y1 - y0 < factor:  # a window (nearly) outside the image: use all of it
        x0, y0, x1, y1 = 0, 0, width, height
    region = image[y0:y1, x0:x1]
    shrunk = cv2.resize(region, (max(1, round((x1 - x0) / factor)), max(1, round((y1 - y0) / factor))),
                        interpolation=cv2.INTER_AREA)
    fx, fy = (x1 - x0) / shrunk.shape[1], (y1 - y0) / shrunk.shape[0]
    return shrunk, np.array([[fx, 0.0, x0], [0.0, fy, y0], [0.0, 0.0, 1.0]])


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
        source, to_image = _shrunk_region(image_bgr, cx, cy, side, 0.5 / scale)
        matrix = matrix @ to_image
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
