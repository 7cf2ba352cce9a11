"""Frame capture in its own thread: reads the source as fast as it delivers, keeps only the latest frame.

Each frame goes straight to the sinks (the inference worker's ``offer_frame``, thread-safe) from this thread;
the GUI, which only draws, is told "a frame is ready" at most once until it takes it, so a slow GUI never
builds a queue and never holds up inference.
Opening problems and mid-stream failures are reported as signals and retried with backoff (the source is
reopened); a webcam drop-out is handled inside CameraSource.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import numpy as np
from PySide6.QtCore import QObject, QThread, Signal, Slot

from kiosk.errors import SourceError
from kiosk.io.sources import FrameSource

log = logging.getLogger(__name__)

# States reported with ``state_changed``
LIVE, FAILED, LOST, ENDED = "live", "failed", "lost", "ended"


class CaptureWorker(QObject):
    frame_ready = Signal()
    state_changed = Signal(str, str)  # state, message for people
    stopped = Signal()

    def __init__(self, opener: Callable[[], FrameSource], retry: tuple[float, float] = (1.0, 10.0)):
        super().__init__()
        self._opener = opener
        self._retry_min, self._retry_max = retry
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._latest: tuple[np.ndarray, float] | None = None
        self._announced = False
        self._source: FrameSource | None = None
        self._state, self._message = "", ""
        self.description = ""
        self.sinks: list[Callable[[np.ndarray, float], None]] = []  # called in this thread with every frame

    # -- called from the GUI thread ---------------------------------------------------------------------
    def take_latest(self) -> tuple[np.ndarray, float] | None:
        """(frame, capture time on time.monotonic()) or None; re-arms the frame_ready notification."""
        with self._lock:
            item, self._latest, self._announced = self._latest, None, False
        return item

    def stop(self) -> None:
        self._stop.set()
        source = self._source
        if source is not None:
            source.interrupt()

    # -- the capture loop (runs in the capture thread) ---------------------------------------------------
    def _set_state(self, state: str, message: str) -> None:
        if (state, message) != (self._state, self._message):
            self._state, self._message = state, message
            self.state_changed.emit(state, message)

    def _log_failure(self, text: str, exc: BaseException) -> None:
        """One log message per failure: the retries of the same failure go to debug only."""
        repeated = (FAILED, str(exc)) == (self._state, self._message)
        log.log(logging.DEBUG if repeated else logging.WARNING, text, exc)

    def _open(self, delay: float) -> float:
        """Try to open the source; returns the next retry delay."""
        try:
            self._source = self._opener()
        except SourceError as exc:
            self._log_failure("frame source: %s", exc)
            self._set_state(FAILED, str(exc))
            self._stop.wait(delay)
            return min(delay * 2, self._retry_max)
        except Exception as exc:  # never let the thread die
            message = f"cannot open the video source ({type(exc).__name__}: {exc})"
            if (FAILED, message) != (self._state, self._message):  # once per failure, not once per retry
                log.exception("opening the frame source failed")
            self._set_state(FAILED, message)
            self._stop.wait(delay)
            return min(delay * 2, self._retry_max)
        self.description = self._source.description
        log.info("frame source %s open", self.description)
        self._set_state(LIVE, "")
        return self._retry_min

    def _close_source(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            try:
                source.close()
            except Exception:
                log.exception("closing the frame source failed")

    @Slot()
    def run(self) -> None:
        delay = self._retry_min
        while not self._stop.is_set():
            if self._source is None:
                delay = self._open(delay)
                continue
            try:
                frame = self._source.read()
            except Exception as exc:  # SourceError mid-stream, or anything unexpected: report, reopen later
                message = str(exc) if isinstance(exc, SourceError) else f"{type(exc).__name__}: {exc}"
                log.warning("frame source failed: %s; reopening", message)
                self._set_state(FAILED, f"{message} (retrying)")
                self._close_source()
                self._stop.wait(delay)
                delay = min(delay * 2, self._retry_max)
                continue
            if frame is None:
                if self._source.finished:
                    self._set_state(ENDED, f"{self.description}: end of the video")
                    self._stop.wait()
                elif getattr(self._source, "lost", False):
                    self._set_state(LOST, f"{self.description} lost: reconnecting...")
                continue
            delay = self._retry_min
            self._set_state(LIVE, "")
            captured_at = time.monotonic()
            for sink in self.sinks:
                try:
                    sink(frame, captured_at)
                except Exception:  # never let the thread die
                    log.exception("a frame sink failed")
            with self._lock:
                self._latest = (frame, captured_at)
                announce, self._announced = not self._announced, True
            if announce:
                self.frame_ready.emit()
        self._close_source()
        self.stopped.emit()


class FrameCapture(QObject):
    """Owns the capture thread (GUI side)."""

    def __init__(self, opener: Callable[[], FrameSource], retry: tuple[float, float] = (1.0, 10.0), parent=None):
        super().__init__(parent)
        self.worker = CaptureWorker(opener, retry)
        self.thread = QThread()
        self.thread.setObjectName("capture")
        self.worker.moveToThread(self.thread)
        self.thread.started.connect(self.worker.run)
        self.worker.stopped.connect(self.thread.quit)
        self.frame_ready = self.worker.frame_ready
        self.state_changed = self.worker.state_changed

    def add_sink(self, sink: Callable[[np.ndarray, float], None]) -> None:
        """``sink(frame, captured_at)`` is called in the capture thread with every frame (before start)."""
        self.worker.sinks.append(sink)

    def start(self) -> None:
        self.thread.start()

    def take_latest(self):
        return self.worker.take_latest()

    def stop(self, timeout_ms: int = 5000) -> bool:
        self.worker.stop()
        self.thread.quit()
        return self.thread.wait(timeout_ms)
