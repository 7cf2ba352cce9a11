"""Face alignment: dlib's 5-point landmark model, and one similarity transform onto dlib's 150x150 chip.

The pretrained face network was trained on faces aligned this way (dlib's ``get_face_chip_details`` with
padding 0.25): the two corners of each eye and the base of the nose are mapped, in the least-squares sense,
onto fixed points of a mean face. Only the 5-point model is used; the 68-point model that ships in the same
package forbids commercial use and is never loaded.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from kiosk.errors import WeightsError

CHIP_SIZE = 150
CHIP_PADDING = 0.25
LANDMARK_MODEL = "shape_predictor_5_face_landmarks.dat"

# Where the 5 landmarks go, in units of the unpadded face square. dlib derives them from its mean face
# (68-point indices 45, 42, 36, 39: outer and inner eye corners, and 33: base of the nose); these values are
# fitted so that chip_transform reproduces dlib's get_face_chip_details on 120 CelebA faces (corner error
# 0.05 px RMS, against 0.75 px with the textbook mean-face values).
_TEMPLATE = np.array([[0.863174, 0.205076], [0.648751, 0.234178], [0.118424, 0.204593],
                      [0.329461, 0.235772], [0.490202, 0.625712]])


def chip_template(size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """(5, 2) chip coordinates the 5 landmarks are mapped onto."""
    return (padding + _TEMPLATE) / (2 * padding + 1) * size


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """2x3 matrix of the least-squares similarity (scale, rotation, shift) mapping source onto target
    points (Umeyama 1991, as dlib's ``find_similarity_transform``)."""
    src_mean, dst_mean = source.mean(0), target.mean(0)
    src, dst = source - src_mean, target - dst_mean
    covariance = dst.T @ src / len(source)
    u, s, vt = np.linalg.svd(covariance)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1, 1] = -1
    rotation = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / src.var(0).sum()
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def chip_transform(landmarks: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """2x3 map from chip pixels to image pixels, as dlib's ``get_face_chip_details`` + ``extract_image_chip``
    define it: the least-squares similarity gives the angle, the scale and the centre (the template's point
    size/2); the chip's corner pixels 0 and size-1 then span size * scale image pixels."""
    fit = similarity_transform(chip_template(size, padding), np.asarray(landmarks, float))
    linear = fit[:, :2] * size / (size - 1.0)
    centre = fit[:, :2] @ np.array([size / 2.0, size / 2.0]) + fit[:, 2]
    return np.hstack([linear, (centre - linear @ np.array([(size - 1) / 2.0] * 2))[:, None]])


def align_chip(image_bgr: np.ndarray, landmarks: np.ndarray, size: int = CHIP_SIZE,
               padding: float = CHIP_PADDING) -> np.ndarray:
    """The aligned RGB chip (size x size x 3, uint8) for 5 landmarks in image pixels."""
    chip_to_image = chip_transform(landmarks, size, padding)
    scale = float(np.hypot(*chip_to_image[:, 0]))  # image pixels per chip pixel
    source = image_bgr if image_bgr.ndim == 3 else cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
    if scale > 1.5:  # shrinking a lot: average the face region first so the warp does not alias
        source, chip_to_image = _shrunk_face_region(source, chip_to_image, size, scale)
    chip = cv2.warpAffine(source, chip_to_image, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.cvtColor(chip, cv2.COLOR_BGR2RGB)


def _shrunk_face_region(image: np.ndarray, chip_to_image: np.ndarray, size: int, scale: float):
    """The part of the image the chip reads, area-shrunk to about the chip's scale, and the chip's map into
    it (only that part is shrunk: a whole frame would cost a millisecond)."""
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], float) @ chip_to_image.T
    height, width = image.shape[:2]
    x0, y0 = np.clip(np.floor(corners.min(0)) - 2, 0, [width, height]).astype(int)
    x1, y1 = np.clip(np.ceil(corners.max(0)) + 2, 0, [width, height]).astype(int)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return image, chip_to_image
    factor = scale / 1.2  # leave the warp a little to interpolate
    region = image[y0:y1, x0:x1]
    shrunk = cv2.resize(region, (max(1, round((x1 - x0) / factor)), max(1, round((y1 - y0) / factor))),
                        interpolation=cv2.INTER_AREA)
    fx, fy = (x1 - x0) / shrunk.shape[1], (y1 - y0) / shrunk.shape[0]
    # image = region_origin + diag(f) * shrunk  =>  shrunk = diag(1/f) * (image - origin)
    to_shrunk = np.array([[1 / fx, 0, -x0 / fx], [0, 1 / fy, -y0 / fy], [0, 0, 1]])
    return shrunk, (to_shrunk @ np.vstack([chip_to_image, [0, 0, 1]]))[:2]


def landmark_model_path() -> Path:
    """dlib's 5-point landmark model, beside the face network in the installed ``face_recognition_models``."""
    from kiosk.vision.face_resnet import dlib_resnet_path  # noqa: PLC0415 (one home for finding the package)

    path = dlib_resnet_path().with_name(LANDMARK_MODEL)
    if not path.is_file():
        raise WeightsError(f"{path}: dlib's 5-point landmark model is missing from face_recognition_models")
    return path


class LandmarkFinder:
    """dlib's 5-point shape predictor (a regression-tree cascade, ~0.2 ms a face), run through dlib-bin."""

    def __init__(self, path: str | Path | None = None):
        try:
            import dlib  # noqa: PLC0415
        except ImportError:
            raise WeightsError("dlib is not installed: pip install dlib-bin") from None
        self.path = Path(path) if path else landmark_model_path()
        try:
            self._predictor = dlib.shape_predictor(str(self.path))
        except RuntimeError as exc:
            raise WeightsError(f"{self.path}: not a usable dlib landmark model ({str(exc)[:120]})") from None
        self._rectangle = dlib.rectangle
        self.shape_check()

    def shape_check(self) -> None:
        probe = self._predictor(np.zeros((64, 64, 3), np.uint8), self._rectangle(8, 8, 56, 56))
        if probe.num_parts != 5:
            raise WeightsError(f"{self.path}: expected the 5-point landmark model, found {probe.num_parts} points")

    def find(self, image_rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """(5, 2) landmarks for a face box (x, y, w, h) given in dlib's box convention."""
        x, y, w, h = box
        rect = self._rectangle(int(round(x)), int(round(y)), int(round(x + w - 1)), int(round(y + h - 1)))
        shape = self._predictor(image_rgb, rect)
        return np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], float)
