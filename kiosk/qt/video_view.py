"""The live picture: the latest frame, a framing guide, the detected face outlined, and a message line."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from kiosk.qt.imaging import to_qimage

GOOD = QColor(40, 200, 90)
POOR = QColor(255, 170, 0)


def _mirrored(image: QImage) -> QImage:
    if hasattr(image, "flipped"):  # Qt >= 6.9 (mirrored() is deprecated there)
        return image.flipped(Qt.Orientation.Horizontal)
    return image.mirrored(True, False)


class VideoView(QWidget):
    def __init__(self, parent=None, mirror: bool = False, min_size=(320, 240)):
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(*min_size)
        self.mirror = mirror           # a webcam is shown like a mirror
        self.frames_shown = 0          # for tests and diagnostics
        self._image: QImage | None = None
        self._box = None               # (x, y, w, h) in frame pixels
        self._box_ok = False
        self._message = ""

    def set_frame(self, frame: np.ndarray) -> None:
        self._image = to_qimage(frame)
        self.frames_shown += 1
        if self.isVisible():
            self.update()

    def set_face(self, box, ok: bool) -> None:
        self._box, self._box_ok = box, ok
        self.update()

    def set_message(self, text: str) -> None:
        """A line over the picture (e.g. 'camera not found'); empty to hide it."""
        if text != self._message:
            self._message = text
            self.update()

    @property
    def face_box(self):
        return self._box

    @property
    def message(self) -> str:
        return self._message

    def clear_frame(self) -> None:
        self._image, self._box = None, None
        self.update()

    # -- painting --------------------------------------------------------------------------------------------
    def _image_rect(self) -> QRectF:
        w, h = self._image.width(), self._image.height()
        scale = min(self.width() / w, self.height() / h)
        return QRectF((self.width() - w * scale) / 2, (self.height() - h * scale) / 2, w * scale, h * scale)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor(20, 20, 24))
        if self._image is not None:
            target = self._image_rect()
            image = _mirrored(self._image) if self.mirror else self._image
            painter.drawImage(target, image)
            self._paint_guide(painter, target)
            self._paint_face(painter, target)
        if self._message:
            self._paint_message(painter)
        painter.end()

    def _paint_guide(self, painter: QPainter, target: QRectF) -> None:
        """Where the face should be: a dashed oval in the middle of the picture."""
        pen = QPen(QColor(255, 255, 255, 150), 2, Qt.PenStyle.DashLine)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        w, h = target.width() * 0.42, target.height() * 0.62
        painter.drawEllipse(QPointF(target.center().x(), target.center().y()), w / 2, h / 2)

    def _paint_face(self, painter: QPainter, target: QRectF) -> None:
        if self._box is None:
            return
        x, y, w, h = self._box
        scale = target.width() / self._image.width()
        if self.mirror:
            x = self._image.width() - x - w
        painter.setPen(QPen(GOOD if self._box_ok else POOR, 3))
        painter.drawRoundedRect(QRectF(target.x() + x * scale, target.y() + y * scale, w * scale, h * scale), 8, 8)

    def _paint_message(self, painter: QPainter) -> None:
        font = QFont(self.font())
        font.setPointSize(max(12, min(22, self.height() // 22)))
        painter.setFont(font)
        band = QRectF(0, self.height() * 0.4, self.width(), self.height() * 0.2)
        painter.fillRect(band, QColor(0, 0, 0, 170))
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(band.adjusted(12, 0, -12, 0), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                         self._message)
