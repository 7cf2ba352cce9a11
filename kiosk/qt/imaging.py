"""numpy BGR frames -> Qt images."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap


def to_qimage(frame: np.ndarray) -> QImage:
    """A deep copy, so the QImage does not depend on the array's memory."""
    if frame.ndim == 2:
        frame = np.ascontiguousarray(frame)
        h, w = frame.shape
        return QImage(frame.data, w, h, frame.strides[0], QImage.Format.Format_Grayscale8).copy()
    frame = np.ascontiguousarray(frame[:, :, :3])
    h, w = frame.shape[:2]
    return QImage(frame.data, w, h, frame.strides[0], QImage.Format.Format_BGR888).copy()


def thumbnail(frame: np.ndarray, side: int = 96) -> QPixmap:
    return QPixmap.fromImage(to_qimage(frame)).scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio,
                                                      Qt.TransformationMode.SmoothTransformation)
