"""Frame sources: a webcam, a video file or a folder of images behind one small interface. Qt-free.

``read()`` returns the next BGR frame, or None when no frame is available right now (a webcam that is
reconnecting) or the stream has ended (``finished``). A file source that breaks mid-stream raises
SourceError; the caller shows it and may call ``reopen()``. A webcam that drops out is reopened here,
with backoff, and is never fatal. ``interrupt()`` (any thread) wakes a paced or backing-off ``read()``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from kiosk.errors import ImageReadError, SourceError
from kiosk.io.imageio import IMAGE_SUFFIXES, is_image_file, read_image

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = IMAGE_SUFFIXES  # kept for existing importers; the one list lives in kiosk.io.imageio


def quiet_opencv() -> None:
    """OpenCV's own logging goes to the terminal: a missing camera alone prints a dozen lines per try (63 in
    10 s). Only fatal messages from now on, unless OPENCV_LOG_LEVEL asks for more; our log says what failed."""
    if os.environ.get("OPENCV_LOG_LEVEL"):
        return
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)
    except AttributeError:  # a build without cv2.utils.logging
        pass


quiet_opencv()


class FrameSource:
    """Base class. Subclasses implement ``_read`` (and ``_open``/``_release`` for reopen/close)."""

    description = "frame source"
    is_camera = False

    def __init__(self, fps: float | None = None):
        self.fps = fps if fps and fps > 0 else None   # pacing for file sources; None = as fast as read
        self.finished = False
        self._wake = threading.Event()
        self._next_due = 0.0

    # -- the interface ---------------------------------------------------------------------------------
    def read(self) -> np.ndarray | None:
        if self.finished:
            return None
        frame = self._read()
        if frame is not None:
            self._pace()
        return frame

    def reopen(self) -> None:
        """Start again after a failure (file sources restart from the beginning)."""
        self._release()
        self.finished = False
        self._open()

    def interrupt(self) -> None:
        """Wake a read() that is waiting (pacing or reconnect backoff). Thread-safe."""
        self._wake.set()

    def close(self) -> None:
        self.interrupt()
        self._release()

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"

    # -- for subclasses --------------------------------------------------------------------------------
    def _read(self) -> np.ndarray | None:
        raise NotImplementedError

    def _open(self) -> None:
        pass

    def _release(self) -> None:
        pass

    def _sleep(self, seconds: float) -> None:
        """Interruptible sleep; an interrupt is consumed so the next wait works again."""
        if seconds > 0 and self._wake.wait(seconds):
            self._wake.clear()

    def _pace(self) -> None:
        if self.fps is None:
            return
        now = time.monotonic()
        if self._next_due > now:
            self._sleep(self._next_due - now)
            now = time.monotonic()
        self._next_due = max(self._next_due, now) + 1.0 / self.fps  # after a stall: no burst to catch up


def _open_camera(index: int):
    return cv2.VideoCapture(index)


class CameraSource(FrameSource):
    """A webcam by index. Opening fails loudly; a drop-out later is retried with exponential backoff."""

    is_camera = True

    def __init__(self, index: int = 0, *, capture_factory: Callable[[int], object] = _open_camera,
                 backoff: tuple[float, float] = (0.5, 8.0), max_failed_reads: int = 5,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(fps=None)  # the camera paces itself
        self.index = index
        self.description = f"camera {index}"
        self._factory = capture_factory
        self._backoff_min, self._backoff_max = backoff
        self._backoff = self._backoff_min
        self._max_failed = max_failed_reads
        self._clock = clock
        self._failed_reads = 0
        self._retry_at = 0.0
        self._cap = None
        self._open()

    @property
    def lost(self) -> bool:
        """True while the camera has dropped out and is being reconnected."""
        return self._cap is None

    def _open(self) -> None:
        cap = self._factory(self.index)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise SourceError(f"camera {self.index}: not found, or in use by another program "
                              f"(check the cable, or use --source with another index, a video or a folder)")
        self._cap = cap
        self._failed_reads = 0

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _read(self) -> np.ndarray | None:
        if self._cap is None:
            return self._try_reconnect()
        ok, frame = self._cap.read()
        if ok and frame is not None:
            self._failed_reads = 0
            return frame
        self._failed_reads += 1
        if self._failed_reads >= self._max_failed:
            log.warning("%s stopped delivering frames; reconnecting", self.description)
            self._release()
            self._backoff = self._backoff_min
            self._retry_at = self._clock() + self._backoff
        else:
            self._sleep(0.02)
        return None

    def _try_reconnect(self) -> np.ndarray | None:
        wait = self._retry_at - self._clock()
        if wait > 0:
            self._sleep(min(wait, 0.25))  # short naps so the caller stays responsive
            return None
        try:
            self._open()
        except SourceError:
            self._backoff = min(self._backoff * 2, self._backoff_max)
            self._retry_at = self._clock() + self._backoff
            log.debug("%s still unavailable; next try in %.1f s", self.description, self._backoff)
            return None
        log.info("%s reconnected", self.description)
        self._backoff = self._backoff_min
        return None  # the next read() delivers the first frame


class VideoFileSource(FrameSource):
    """A video file, paced at ``fps`` (None: the file's own rate, 0: unpaced), optionally looped."""

    def __init__(self, path: str | Path, *, loop: bool = False, fps: float | None = None,
                 capture_factory: Callable[[str], object] = cv2.VideoCapture):
        self.path = Path(path)
        self.description = f"video {self.path.name}"
        self.loop = loop
        self._factory = capture_factory
        self._cap = None
        self._pending: np.ndarray | None = None
        self._position = 0
        self._count = 0
        self._fps_arg = fps
        super().__init__(fps=None)
        self._open()

    def _open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"{self.path}: no such video file")
        cap = self._factory(str(self.path))
        if cap is None or not cap.isOpened():
            raise SourceError(f"{self.path}: cannot be opened as a video (unsupported format or damaged file)")
        ok, frame = cap.read()
        if not ok or frame is None:
            cap.release()
            raise SourceError(f"{self.path}: no frame could be read (empty or damaged video)")
        self._cap, self._pending, self._position = cap, frame, 1
        self._count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if self._fps_arg is None:
            native = float(cap.get(cv2.CAP_PROP_FPS) or 0)
            self.fps = native if 0 < native <= 120 else 25.0
        else:
            self.fps = self._fps_arg or None

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._pending = None

    def _read(self) -> np.ndarray | None:
        if self._cap is None:
            raise SourceError(f"{self.path}: the video is closed (reopen it)")
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        ok, frame = self._cap.read()
        if ok and frame is not None:
            self._position += 1
            return frame
        # End of file, or a failure: a frame count in the header tells them apart.
        if not self.path.is_file():
            raise SourceError(f"{self.path}: the video file disappeared while playing")
        if self._count > 1 and self._position < self._count - 1:
            raise SourceError(f"{self.path}: reading failed at frame {self._position} of {self._count} "
                              f"(file damaged or truncated?)")
        if self.loop:
            self._release()
            self._open()
            return self._read()
        self.finished = True
        return None


class ImageFolderSource(FrameSource):
    """The images of a folder in sorted name order, each one frame; unreadable files are skipped."""

    def __init__(self, folder: str | Path, *, loop: bool = False, fps: float | None = None,
                 files: list[Path] | None = None):
        super().__init__(fps=fps)
        self.folder = Path(folder)
        self.loop = loop
        self._fixed_files = [Path(f) for f in files] if files is not None else None
        self.description = (f"image {self._fixed_files[0].name}" if self._fixed_files and len(self._fixed_files) == 1
                            else f"folder {self.folder.name}")
        self._files: list[Path] = []
        self._index = 0
        self._delivered_this_pass = 0
        self._warned: set[Path] = set()
        self._open()

    @property
    def files(self) -> list[Path]:
        return list(self._files)

    def _scan(self) -> list[Path]:
        if self._fixed_files is not None:
            return list(self._fixed_files)
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder}: no such folder" if not self.folder.exists()
                              else f"{self.folder}: not a folder")
        try:
            return sorted((p for p in self.folder.iterdir() if is_image_file(p) and p.is_file()),
                          key=lambda p: p.name)
        except OSError as exc:
            raise SourceError(f"{self.folder}: cannot be listed ({exc.strerror or exc})") from None

    def _open(self) -> None:
        files = self._scan()
        if not files:
            raise SourceError(f"{self.folder}: no image files in this folder "
                              f"(looked for {', '.join(IMAGE_SUFFIXES)})")
        self._files, self._index, self._delivered_this_pass = files, 0, 0

    def _read(self) -> np.ndarray | None:
        while True:
            if self._index >= len(self._files):
                if self._delivered_this_pass == 0:
                    raise SourceError(f"{self.folder}: none of the {len(self._files)} image files could be read")
                if not self.loop:
                    self.finished = True
                    return None
                self._open()  # rescan: picks up added/removed files, notices a vanished folder
            path = self._files[self._index]
            self._index += 1
            try:
                image = read_image(path)
            except ImageReadError as exc:
                if self._fixed_files is None and not self.folder.is_dir():
                    raise SourceError(f"{self.folder}: the folder disappeared while reading it") from None
                if path not in self._warned:  # warn once per file, not once per loop
                    self._warned.add(path)
                    log.warning("skipping unreadable image: %s", exc)
                continue
            self._delivered_this_pass += 1
            return image


def is_camera_spec(spec: str | int) -> bool:
    return isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit())


def open_source(spec: str | int | Path, *, loop: bool = False, fps: float | None = None) -> FrameSource:
    """A webcam index ("0"), a video file, an image file or a folder of images -> an open FrameSource.

    ``fps`` paces file sources (video default: the file's own rate; folder default: unpaced).
    Raises SourceError with a message naming the problem.
    """
    if is_camera_spec(spec):
        return CameraSource(int(spec))
    text = str(spec).strip()
    if not text:
        raise SourceError("no source given: use a camera index such as 0, a video file or an image folder")
    path = Path(text).expanduser()
    if path.is_dir():
        return ImageFolderSource(path, loop=loop, fps=fps)
    if path.is_file():
        if is_image_file(path):
            return ImageFolderSource(path.parent, loop=loop, fps=fps, files=[path])
        return VideoFileSource(path, loop=loop, fps=fps)
    raise SourceError(f"{text}: no such camera index, video file or image folder")
