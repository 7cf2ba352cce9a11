"""One verification attempt from the claimed ID to the audited verdict. Qt-free, clock injected.

``VerificationService`` holds every rule of an attempt: the claimed ID is checked against the store, the
employee's current references are fetched, good frames are scored and their P(live) kept, both are fused
(kiosk.decision: the face must match AND, with liveness on, the face must look live), the deadline
is kept, the verdict gets the employee's name when accepted, and every verdict is written to the audit log.
The caller (the Qt worker, a command, a test) only moves frames in and decisions out; with a fake clock a
test runs a whole attempt in microseconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from .decision import (
    REASON_ERROR,
    REASON_NO_LIVENESS,
    REASON_NO_REFERENCE,
    REASON_UNKNOWN_ID,
    Decision,
    FusionParams,
    LivenessPolicy,
    ThresholdPolicy,
    VerificationSession,
    frame_score,
    refused,
)
from .engine import FaceEngine
from .enrolment import current_references
from .storage import Storage

log = logging.getLogger(__name__)

Clock = Callable[[], float]  # monotonic seconds


@dataclass
class _Attempt:
    session: VerificationSession
    references: np.ndarray
    name: str


class VerificationService:
    """Runs attempts one at a time. Each method returns the Decision when the attempt ends (already
    audited), else None. ``report`` is told about problems that do not change the verdict (audit log)."""

    def __init__(self, storage: Storage, engine: FaceEngine | None = None, fusion: FusionParams = FusionParams(),
                 policy: ThresholdPolicy = ThresholdPolicy(), clock: Clock = time.monotonic,
                 report: Callable[[str], None] | None = None, liveness: LivenessPolicy = LivenessPolicy()):
        self.storage = storage
        self.engine = engine  # None: no model loaded, no attempt can start
        self.fusion = fusion
        self.policy = policy
        self.liveness = liveness
        self.clock = clock
        self.report = report
        self._attempt: _Attempt | None = None

    # -- configuration (applies to the next attempt) -------------------------------------------------------
    @property
    def threshold(self) -> float:
        return self.policy.threshold(self.engine.default_threshold if self.engine is not None else None)

    def set_threshold(self, saved: float | None) -> None:
        self.policy = ThresholdPolicy(saved)

    def set_fusion(self, fusion: FusionParams) -> None:
        self.fusion = fusion

    @property
    def liveness_threshold(self) -> float | None:
        """The P(live) the next attempt needs; None when liveness is off (or no liveness model is loaded)."""
        model = self.engine.liveness if self.engine is not None else None
        return self.liveness.threshold(model.threshold if model is not None else None)

    def set_liveness(self, policy: LivenessPolicy) -> None:
        self.liveness = policy

    # -- the attempt ------------------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self._attempt is not None

    @property
    def claimed_id(self) -> str | None:
        return self._attempt.session.claimed_id if self._attempt else None

    @property
    def progress(self) -> tuple[int, int]:
        """(good frames so far, frames needed) of the attempt under way, else (0, frames needed)."""
        done = len(self._attempt.session.scores) if self._attempt else 0
        return done, (self._attempt.session.params if self._attempt else self.fusion).frames

    def begin(self, claimed_id: str, started_at: float | None = None) -> Decision | None:
        """Start an attempt (replacing any under way). An unknown ID or one without usable references ends
        it at once (the Decision); otherwise None and frames are awaited until the deadline."""
        if self.engine is None:
            raise RuntimeError("verification is unavailable (no model loaded)")
        claimed_id = claimed_id.strip()
        if self._attempt is not None:
            log.info("verification of %s replaced by %s", self._attempt.session.claimed_id, claimed_id)
            self._attempt = None
        threshold = self.threshold
        employee = self.storage.employees.get(claimed_id)
        if employee is None:
            return self._finish(refused(claimed_id, REASON_UNKNOWN_ID, threshold))
        references = current_references(self.engine, self.storage.employees, claimed_id)
        if references.size == 0:
            return self._finish(refused(claimed_id, REASON_NO_REFERENCE, threshold))
        if self.liveness.enabled and self.engine.liveness is None:  # fail closed: no check, nobody in
            if self.report is not None:
                self.report(f"liveness is on but unavailable: {self.engine.liveness_problem}")
            return self._finish(refused(claimed_id, REASON_NO_LIVENESS, threshold))
        start = self.clock() if started_at is None else started_at
        session = VerificationSession(claimed_id, threshold, self.fusion, start, self.liveness_threshold)
        self._attempt = _Attempt(session, references, employee.name)
        return None

    def wants(self, captured_at: float) -> bool:
        """Whether a frame captured then would count (an attempt is under way and it lies in its window)."""
        return self._attempt is not None and self._attempt.session.wants(captured_at)

    def add_frame(self, face: np.ndarray | None, captured_at: float, liveness: float | None = None) -> Decision | None:
        """An analysed frame: ``face`` is its aligned face crop (FaceAnalysis.crop) when it passed the quality
        checks, else None; ``liveness`` its P(live) (FaceAnalysis.liveness). A frame that does not count still
        lets the deadline pass."""
        if face is not None and self.wants(captured_at):
            assert self.engine is not None
            return self.add_features(self.engine.embed_crops(face[None])[0], captured_at, liveness)
        return self.expire()

    def add_features(self, features: np.ndarray, captured_at: float, liveness: float | None = None) -> Decision | None:
        """A good frame's features (and P(live)): scored against all references; decides at ``fusion.frames``
        frames. With liveness on, a frame without a P(live) does not count."""
        attempt = self._attempt
        if attempt is None:
            return None
        if attempt.session.wants(captured_at):
            assert self.engine is not None
            if attempt.session.liveness_threshold is not None and liveness is None:
                log.warning("a frame without a liveness score was left out")
                return self.expire()
            score = frame_score(self.engine.similarity, features, attempt.references)
            decision = attempt.session.add_score(score, captured_at, liveness)
            if decision is not None:
                return self._finish(decision)
        return self.expire()

    def expire(self) -> Decision | None:
        """At or after the deadline: decide on the frames so far (none: no usable face in time)."""
        if self._attempt is None:
            return None
        decision = self._attempt.session.expire(self.clock())
        return self._finish(decision) if decision is not None else None

    def remaining(self) -> float | None:
        """Seconds to the deadline of the attempt under way; None without one."""
        return self._attempt.session.remaining(self.clock()) if self._attempt else None

    def fail(self) -> Decision | None:
        """A technical problem during the attempt: the person gets a clear REJECT, and it is audited."""
        if self._attempt is None:
            return None
        session = self._attempt.session
        return self._finish(refused(session.claimed_id, REASON_ERROR, session.threshold))

    def cancel(self) -> None:
        """Drop the attempt under way without a verdict (nothing is audited)."""
        self._attempt = None

    def _finish(self, decision: Decision) -> Decision:
        name = self._attempt.name if self._attempt is not None else None
        self._attempt = None
        if decision.accepted:
            decision = replace(decision, name=name)
        log.info("verification of %r (%s): %s (%s), score %s, threshold %.3f, liveness %s", decision.claimed_id,
                 decision.mode, decision.verdict, decision.reason,
                 "-" if decision.score is None else f"{decision.score:.3f}", decision.threshold,
                 "-" if decision.liveness is None else f"{decision.liveness:.3f}")
        try:
            self.storage.audit.record(decision.claimed_id, decision.verdict, decision.reason, decision.score,
                                      liveness=decision.liveness, mode=decision.mode)
        except Exception as exc:  # the person still gets the verdict
            log.exception("writing the audit log failed")
            if self.report is not None:
                self.report(f"the audit log could not be written: {exc}")
        return decision
