"""The inference worker: a QObject living in its own QThread that runs detection and the Siamese network.

The capture thread offers every frame (``offer_frame``, straight from that thread: frames never pass through
the GUI thread); the worker only ever takes the latest one (stale frames are dropped) and never blocks the
GUI. Every rule of a verification attempt lives in kiosk.app.attempt.VerificationService; the
worker only moves frames in and decisions out, and keeps the deadline's timer. All requests arrive as
queued signals, all results and problems leave as signals: no exception escapes into Qt. Without trained
weights it still detects faces (for the prompts) and says why it cannot verify or enrol.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal, Slot

from kiosk.app import AuditNotRecorded, Kiosk
from kiosk.app.enrolment import refresh_features
from kiosk.errors import KioskError
from kiosk.rules.decision import Decision, FusionParams, LivenessPolicy, ThresholdPolicy
from kiosk.vision.detection import Box, HaarFaceDetector
from kiosk.vision.engine import FaceEngine
from kiosk.vision.quality import ADVICE, assess_quality
from kiosk.vision.threads import set_threads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameResult:
    """What the worker saw in one frame (for the overlay, the prompts and enrolment photos)."""

    frame: np.ndarray
    captured_at: float
    box: Box | None
    ok: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def advice(self) -> str:
        return ADVICE.get(self.reasons[0], self.reasons[0]) if self.reasons else ""


@dataclass(frozen=True)
class WalkUpInfo:
    """Walk-up identification for the admin: the 1:N rule, and the expected false accepts per walk-up of
    someone not enrolled with the people and reference photos enrolled now (an upper bound)."""

    available: bool
    problem: str = ""
    threshold: float | None = None
    gap: float | None = None
    people: int = 0
    photos: int = 0
    expected_false_accepts: float | None = None
    site: object = None  # kiosk.rules.site.SiteCalibration of the people enrolled now (also without walk-ups)


@dataclass(frozen=True)
class EngineInfo:
    weights_path: str
    default_threshold: float
    roc: list | None
    description: str
    liveness_threshold: float | None = None  # the liveness model's own threshold; None: no liveness model
    liveness_roc: list | None = None         # its held-out {"threshold", "apcer", "bpcer"} points
    liveness_problem: str = ""               # why there is no liveness model


class VerificationWorker(QObject):
    engine_ready = Signal(object)     # EngineInfo
    engine_failed = Signal(str)
    analysed = Signal(object)         # FrameResult
    progress = Signal(int, int)       # good frames so far, frames needed
    decided = Signal(object)          # Decision
    enrolled = Signal(object, str)    # kiosk.app.Employee, and why its audit entry is missing ("" if written)
    enrol_failed = Signal(str)
    error = Signal(str)               # unexpected trouble, shown but never fatal
    refreshing = Signal(int, int)     # stored photos re-embedded for a new model: done, total
    refreshed = Signal(object)        # enrolment.RefreshReport (employees to re-enrol, if any)
    cancelled = Signal(str)           # an attempt ended without a verdict (the source died): claimed ID
    walk_up_info = Signal(object)     # WalkUpInfo: the 1:N rule and what it means for the people enrolled

    _wake = Signal()
    _verify = Signal(str, float)
    _enrol = Signal(str, str, object, bool)
    _threshold = Signal(object)
    _fusion = Signal(object)
    _liveness = Signal(object)
    _walk_up_info = Signal()
    _cancel = Signal()
    _source = Signal(bool)

    def __init__(self, weights_path: str | Path, core: Kiosk, fusion: FusionParams | None = None,
                 threshold: float | None = None, engine_factory: Callable[[Path], FaceEngine] = FaceEngine,
                 idle_rate_hz: float = 10.0, liveness: LivenessPolicy | None = None):
        super().__init__()
        self.weights_path = Path(weights_path)
        self.core = core
        self.engine: FaceEngine | None = None
        self.service = core.verification(None, fusion or FusionParams(), ThresholdPolicy(threshold),
                                         liveness or LivenessPolicy(), report=self.error.emit)
        self._engine_factory = engine_factory
        self._detector: HaarFaceDetector | None = None
        self._idle_interval = 1.0 / idle_rate_hz if idle_rate_hz > 0 else 0.0
        self._lock = threading.Lock()
        self._latest: tuple[np.ndarray, float] | None = None
        self._wake_pending = False
        self._last_analysis = 0.0
        self._stopping = False
        self._last_error = ("", 0.0)
        self._source_ok = True  # False while the frame source delivers nothing: no attempt runs or is recorded
        self._wake.connect(self._process_latest)
        self._verify.connect(self._begin_verification)
        self._enrol.connect(self._do_enrol)
        self._threshold.connect(self._set_threshold)
        self._fusion.connect(self._set_fusion)
        self._liveness.connect(self._set_liveness)
        self._walk_up_info.connect(self._emit_walk_up_info)
        self._cancel.connect(self._cancel_session)
        self._source.connect(self._set_source_ok)

    # -- thread-safe requests (any thread) ----------------------------------------------------------------
    def offer_frame(self, frame: np.ndarray, captured_at: float) -> None:
        """The newest frame; replaces any frame not yet analysed."""
        with self._lock:
            self._latest = (frame, captured_at)
            if self._wake_pending:
                return
            self._wake_pending = True
        self._wake.emit()

    def request_verification(self, claimed_id: str, started_at: float | None = None) -> None:
        self._verify.emit(claimed_id, time.monotonic() if started_at is None else started_at)

    def request_walk_up(self, started_at: float | None = None) -> None:
        """Identify the face in front of the camera among everyone enrolled (no ID typed)."""
        self._verify.emit("", time.monotonic() if started_at is None else started_at)

    def request_walk_up_info(self) -> None:
        """Ask for a fresh WalkUpInfo (e.g. after enrolments changed)."""
        self._walk_up_info.emit()

    def request_enrolment(self, employee_id: str, name: str, images: list[tuple[np.ndarray, str]],
                          replace: bool = True) -> None:
        self._enrol.emit(employee_id, name, list(images), replace)

    def set_threshold(self, threshold: float | None) -> None:
        self._threshold.emit(threshold)

    def set_fusion(self, fusion: FusionParams) -> None:
        self._fusion.emit(fusion)

    def set_liveness(self, policy: LivenessPolicy) -> None:
        self._liveness.emit(policy)

    def cancel(self) -> None:
        self._cancel.emit()

    def set_source_available(self, available: bool) -> None:
        """The frame source is (not) delivering. While it is not, an attempt under way is cancelled (no verdict,
        nothing audited: the kiosk could not see anyone) and new ones are refused. Queued after any
        verification request sent before it, so that request is cancelled too."""
        self._source.emit(available)

    @property
    def threshold(self) -> float:
        return self.service.threshold

    # -- in the worker thread -------------------------------------------------------------------------------
    @Slot()
    def start(self) -> None:
        """Load the engine (slow) in this thread; QTimers are created here so they belong to it."""
        self._deadline = QTimer(self)
        self._deadline.setSingleShot(True)
        self._deadline.setTimerType(Qt.TimerType.PreciseTimer)  # a coarse timer may fire up to 5% early
        self._deadline.timeout.connect(self._on_deadline)
        self._throttle = QTimer(self)
        self._throttle.setSingleShot(True)
        self._throttle.timeout.connect(self._process_latest)
        set_threads()  # in this thread, where the network runs (kiosk.vision.threads: one torch thread)
        try:
            self.engine = self._engine_factory(self.weights_path)
        except KioskError as exc:
            self._engine_unavailable(str(exc))
            return
        except Exception as exc:
            log.exception("loading the model failed")
            self._engine_unavailable(f"the model could not be loaded ({type(exc).__name__}: {exc})")
            return
        self.service.engine = self.engine
        try:  # features of another model are never compared: re-embed from the stored photos first
            self.refreshed.emit(refresh_features(self.engine, self.core.employees, self.refreshing.emit))
        except Exception as exc:  # not fatal: stale features are simply not used
            log.exception("recomputing reference features failed")
            self.error.emit(f"could not update stored features for the new model: {exc}")
        metadata = getattr(self.engine, "metadata", {}) or {}
        log.info("model %s loaded (threshold %.3f)", self.weights_path, self.engine.default_threshold)
        liveness = getattr(self.engine, "liveness", None)
        self.engine_ready.emit(EngineInfo(
            str(self.weights_path), float(self.engine.default_threshold), metadata.get("roc"),
            str(metadata.get("description", "")), liveness.threshold if liveness is not None else None,
            (liveness.metadata or {}).get("roc") if liveness is not None else None,
            getattr(self.engine, "liveness_problem", "") if liveness is None else ""))
        self._emit_walk_up_info()

    def _engine_unavailable(self, reason: str) -> None:
        log.error("verification unavailable: %s", reason)
        try:
            self._detector = HaarFaceDetector()  # prompts and face outline still work
        except KioskError as exc:
            reason = f"{reason}; {exc}"
        self.engine_failed.emit(reason)

    @Slot()
    def stop(self) -> None:
        self._stopping = True
        for timer in (getattr(self, "_deadline", None), getattr(self, "_throttle", None)):
            if timer is not None:
                timer.stop()

    @Slot()
    def _process_latest(self) -> None:
        if self._stopping:
            return
        now = time.monotonic()
        if not self.service.active and self._idle_interval:
            wait = self._last_analysis + self._idle_interval - now
            if wait > 0:  # nobody is being verified: analyse at a gentle rate to spare the CPU
                if not self._throttle.isActive():
                    self._throttle.start(int(wait * 1000) + 1)
                return
        with self._lock:
            item, self._latest, self._wake_pending = self._latest, None, False
        if item is None:
            return
        self._last_analysis = now
        try:
            self._analyse(*item)
        except Exception as exc:
            self._deliver(self.service.fail())  # the person gets a clear answer, and the attempt is logged
            self._report(f"frame analysis failed: {type(exc).__name__}: {exc}")

    def _report(self, message: str) -> None:
        """Log and signal a problem, but the same one at most every 10 s (a bad camera can fail every frame)."""
        now = time.monotonic()
        if message == self._last_error[0] and now - self._last_error[1] < 10.0:
            return
        self._last_error = (message, now)
        log.error("%s", message, exc_info=True)
        self.error.emit(message)

    def _analyse(self, frame: np.ndarray, captured_at: float) -> None:
        if self.engine is not None:
            analysis = self.engine.analyse(frame)
            box, quality = analysis.box, analysis.quality
        elif self._detector is not None:
            detection = self._detector.detect(frame)
            box, quality = detection.primary, assess_quality(frame, detection)
        else:
            return
        self.analysed.emit(FrameResult(frame, captured_at, box, quality.ok, list(quality.reasons)))
        if not self.service.active or self.engine is None:
            return
        before = self.service.progress[0]
        decision = self.service.add_analysis(analysis, captured_at)
        if decision is not None:
            self._deliver(decision)
        elif self.service.progress[0] != before:
            self.progress.emit(*self.service.progress)

    @Slot(str, float)
    def _begin_verification(self, claimed_id: str, started_at: float) -> None:
        """A typed ID (1:1), or '' for a walk-up (1:N)."""
        if self.engine is None:
            self.error.emit("verification is unavailable (no model loaded)")
            self.cancelled.emit(claimed_id)  # the screen's attempt ends: nothing was decided or recorded
            return
        if not self._source_ok:
            log.info("verification of %r not started: no frames (out of service)", claimed_id)
            self.cancelled.emit(claimed_id)
            return
        self._deadline.stop()
        try:
            if claimed_id:
                decision = self.service.begin(claimed_id, started_at)
            else:
                decision = self.service.begin_walk_up(started_at)
                self._emit_walk_up_info()
        except Exception as exc:
            log.exception("starting verification failed")
            self.service.cancel()
            self.error.emit(f"verification failed: {type(exc).__name__}: {exc}")
            self.cancelled.emit(claimed_id)  # the screen's attempt ends: nothing was decided or recorded
            return
        if decision is not None:
            self._deliver(decision)
            return
        self._arm_deadline()
        self.progress.emit(*self.service.progress)
        if self._throttle.isActive():  # a frame is waiting for the idle rate: take it now
            self._throttle.stop()
            self._process_latest()

    def _arm_deadline(self) -> None:
        remaining = self.service.remaining()
        if remaining is not None:
            self._deadline.start(int(remaining * 1000) + 20)

    @Slot()
    def _on_deadline(self) -> None:
        if not self._source_ok:
            return
        decision = self.service.expire()
        if decision is not None:
            self._deliver(decision)
        elif self.service.active and not self._deadline.isActive():  # woke early: wait for the rest
            self._arm_deadline()

    def _deliver(self, decision: Decision | None) -> None:
        if decision is None:
            return
        self._deadline.stop()
        self.decided.emit(decision)

    @Slot()
    def _cancel_session(self) -> None:
        self.service.cancel()
        if hasattr(self, "_deadline"):
            self._deadline.stop()

    @Slot(bool)
    def _set_source_ok(self, available: bool) -> None:
        self._source_ok = available
        if available or not self.service.active:
            return
        claimed = self.service.claimed_id or ""
        self._cancel_session()
        log.info("verification of %r cancelled: the frame source stopped delivering", claimed)
        self.cancelled.emit(claimed)

    @Slot(object)
    def _set_threshold(self, threshold: float | None) -> None:
        self.service.set_threshold(threshold)

    @Slot(object)
    def _set_fusion(self, fusion: FusionParams) -> None:
        self.service.set_fusion(fusion)

    @Slot(object)
    def _set_liveness(self, policy: LivenessPolicy) -> None:
        self.service.set_liveness(policy)

    @Slot()
    def _emit_walk_up_info(self) -> None:
        if self.engine is None:
            return
        try:
            site = self.service.site()  # measured again here when enrolments changed (this thread, not the GUI's)
            calibration, problem = self.service.walk_up_calibration()
            if calibration is None:
                self.walk_up_info.emit(WalkUpInfo(False, problem, site=site))
                return
            gallery = self.service.gallery()
            threshold, gap = site.in_force(calibration.rule.threshold), calibration.rule.gap
            self.walk_up_info.emit(WalkUpInfo(True, "", threshold, gap, len(gallery), gallery.photos,
                                              calibration.expected_fpir(threshold, gallery.photos), site))
        except Exception as exc:  # the store could not be read: say so, never crash the worker
            log.exception("walk-up information")
            self.walk_up_info.emit(WalkUpInfo(False, f"{type(exc).__name__}: {exc}"))

    @Slot(str, str, object, bool)
    def _do_enrol(self, employee_id: str, name: str, images: list, replace: bool) -> None:
        if self.engine is None:
            self.enrol_failed.emit("enrolment needs trained weights, and none are loaded")
            return
        problem = ""
        try:
            employee = self.core.admin.enrol(self.engine, employee_id, name, images, replace)
        except AuditNotRecorded as exc:  # enrolled; only the audit entry is missing
            employee, problem = self.core.employees.get(employee_id.strip()), str(exc)
        except KioskError as exc:
            self.enrol_failed.emit(str(exc))
            return
        except Exception as exc:
            log.exception("enrolment failed")
            self.enrol_failed.emit(f"enrolment failed: {type(exc).__name__}: {exc}")
            return
        self.enrolled.emit(employee, problem)
        self._emit_walk_up_info()  # the index follows enrolments (and the admin sees the new count)


class InferenceThread(QObject):
    """Owns the worker's thread (GUI side): start, and a clean stop."""

    def __init__(self, worker: VerificationWorker, parent=None):
        super().__init__(parent)
        self.worker = worker
        self.thread = QThread()
        self.thread.setObjectName("inference")
        worker.moveToThread(self.thread)
        self.thread.started.connect(worker.start)
        self.thread.finished.connect(worker.stop)  # emitted in the worker thread: its timers stop there

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout_ms: int = 10000) -> bool:
        """Finish the current frame (if any), drop queued work, end the thread."""
        self.worker._stopping = True  # seen by the worker before each frame
        self.thread.quit()
        return self.thread.wait(timeout_ms)
