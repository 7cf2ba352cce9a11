"""One verification attempt from the claimed ID to the audited verdict. Qt-free, clock injected.

``VerificationService`` holds every rule of an attempt: the claimed ID is checked against the store, the
employee's current references are fetched, good frames are scored and their P(live) kept, both are fused
(kiosk.rules.decision: the face must match AND, with liveness on, the face must look live), the deadline
is kept, the verdict gets the employee's name when accepted, and every verdict is written to the audit log.
The caller (the Qt worker, a command, a test) only moves frames in and decisions out; with a fake clock a
test runs a whole attempt in microseconds.

The site's own evidence (kiosk.rules.site) decides too: the threshold in force is the stricter of the admin's (or the
model's) and the site threshold measured from the enrolled people's scores against each other (recomputed when
enrolments change, audited when it moves), and a typed ID's frames are also scored against everyone enrolled
(the walk-up gallery in memory): another employee closer than the claimed one refuses the claim (the insider
check), the audit naming them.

A walk-up (no ID typed) is an attempt too: its good frames are searched among everyone enrolled
(kiosk.rules.identification: the in-memory index, synced from the store when a walk-up begins; the 1:N rule and
threshold of weights/identify.json), and the same liveness rule applies. Every verdict is audited with its
mode (kiosk.rules.decision.MODE_ID or MODE_WALK_UP).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from kiosk.app.enrolment import current_references
from kiosk.app.locks import FaceLocks
from kiosk.errors import WeightsError
from kiosk.rules.decision import (
    MODE_WALK_UP,
    REASON_ERROR,
    REASON_LOCKED,
    REASON_NO_FACE,
    REASON_NO_LIVENESS,
    REASON_NO_REFERENCE,
    REASON_NO_WALK_UP,
    REASON_UNKNOWN_ID,
    Decision,
    FusionParams,
    LivenessPolicy,
    ThresholdPolicy,
    VerificationSession,
    decide_walk_up,
    frame_score,
    refused,
)
from kiosk.rules.identification import REASON_NOBODY_ENROLLED, GalleryIndex, IdentifyCalibration, IdentifyRule, identify
from kiosk.rules.site import SiteCalibration, SiteRule, SiteRuleFile, judge_walk_up, measure_site
from kiosk.storage import EVENT_SITE, Storage
from kiosk.storage.employees import normal_id

if TYPE_CHECKING:  # the engine (torch) is the caller's: the application layer imports no torch
    from kiosk.vision.engine import FaceEngine

log = logging.getLogger(__name__)

Clock = Callable[[], float]  # monotonic seconds


@dataclass
class _Attempt:
    """The attempt under way: THE session (kiosk.rules.decision.VerificationSession, 1:1 or walk-up), and what
    the service scores its frames with."""

    session: VerificationSession
    snapshot: object                     # the gallery as it was when the attempt began
    columns: np.ndarray                  # the session's ``others``, as columns of that snapshot
    references: np.ndarray | None = None  # a typed ID's references, from the store (None: a walk-up)
    rule: IdentifyRule | None = None     # a walk-up's 1:N rule (the site's threshold in it)
    name: str = ""

    @property
    def walk_up(self) -> bool:
        return self.references is None


class VerificationService:
    """Runs attempts one at a time. Each method returns the Decision when the attempt ends (already
    audited), else None. ``report`` is told about problems that do not change the verdict (audit log)."""

    def __init__(self, storage: Storage, engine: FaceEngine | None = None, fusion: FusionParams = FusionParams(),
                 policy: ThresholdPolicy = ThresholdPolicy(), clock: Clock = time.monotonic,
                 report: Callable[[str], None] | None = None, liveness: LivenessPolicy = LivenessPolicy(),
                 locks: FaceLocks | None = None, door=None):
        self.storage = storage
        self.engine = engine  # None: no model loaded, no attempt can start
        self.fusion = fusion
        self.policy = policy
        self.liveness = liveness
        self.clock = clock
        self.report = report
        self.locks = locks or FaceLocks(storage.audit)  # repeated suspected attacks lock an ID (kiosk.rules.retries)
        self.door = door  # kiosk.app.door.Door: an audited ACCEPT unlocks it (None: no door)
        self._attempt: _Attempt | None = None
        self._gallery: GalleryIndex | None = None    # walk-ups: everyone's features in memory
        self._calibration: IdentifyCalibration | None = None  # the 1:N rule (weights/identify.json)
        self._site_rule: SiteRule | None = None      # weights/site.json
        self._site: SiteCalibration | None = None    # measured on the gallery of generation _site_generation
        self._site_generation = -1
        self._site_audited: float | None = None  # the site threshold last written to the audit log

    # -- configuration (applies to the next attempt) -------------------------------------------------------
    @property
    def threshold(self) -> float:
        return self.policy.threshold(self.engine.default_threshold if self.engine is not None else None)

    def set_threshold(self, saved: float | None) -> None:
        self.policy = ThresholdPolicy(saved)

    def set_fusion(self, fusion: FusionParams) -> None:
        self.fusion = fusion

    def site_rule(self) -> SiteRule:
        """The site rule for this engine (weights/site.json); its built-in defaults (the fit, no margin, no fallback
        threshold), with a warning in the log, when the file is missing, damaged or was measured with another model."""
        if self._site_rule is None:
            try:
                loaded = SiteRuleFile.load()
                if self.engine is not None and not loaded.matches(self.engine):
                    raise WeightsError("the site rule was measured with another face model")
                self._site_rule = loaded.rule
            except WeightsError as exc:
                log.warning("site rule unavailable, its defaults apply: %s", exc)
                self._site_rule = SiteRule()
        return self._site_rule

    def site(self) -> SiteCalibration:
        """The site calibration of everyone enrolled now (measured again only when enrolments changed; a site
        threshold that appears, moves or goes is written to the audit log)."""
        gallery = self.gallery()
        if self._site is None or self._site_generation != gallery.generation:
            self._site = measure_site(gallery, self.site_rule())
            self._site_generation = gallery.generation
            log.info("site calibration: %s", self._site.describe())
            self._audit_site(self._site)
        return self._site

    def _audit_site(self, site: SiteCalibration) -> None:
        """A site threshold that appears, moves or goes is written to the audit log (with what it rests on)."""
        now = None if site.threshold is None else round(site.threshold, 4)
        if self._site_audited == now:
            return
        show = lambda t: "-" if t is None else f"{t:.4f}"  # noqa: E731
        try:
            self.storage.audit.record_event(EVENT_SITE, f"{show(self._site_audited)} -> {show(now)}", site.describe())
            self._site_audited = now
        except Exception as exc:  # the decision still uses it
            log.exception("writing the audit log failed")
            if self.report is not None:
                self.report(f"the audit log could not be written: {exc}")

    def threshold_in_force(self, claimed_id: str | None = None) -> float:
        """The threshold the next 1:1 attempt uses: the stricter of the admin's (or the model's), the site's and,
        for ``claimed_id``, that employee's own (kiosk.rules.site)."""
        site = self.site()
        return site.in_force(self.threshold) if claimed_id is None else site.threshold_for(claimed_id, self.threshold)

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
        """The ID of the 1:1 attempt under way ('' for a walk-up; None without an attempt)."""
        if self._attempt is None:
            return None
        return self._attempt.session.claimed_id

    @property
    def walking_up(self) -> bool:
        return self._attempt is not None and self._attempt.walk_up

    @property
    def progress(self) -> tuple[int, int]:
        """(good frames so far, frames needed) of the attempt under way, else (0, frames needed)."""
        if self._attempt is None:
            return 0, self.fusion.frames
        return self._attempt.session.frames, self._attempt.session.params.frames

    def begin(self, claimed_id: str, started_at: float | None = None) -> Decision | None:
        """Start an attempt (replacing any under way). An unknown ID or one without usable references ends
        it at once (the Decision); otherwise None and frames are awaited until the deadline."""
        if self.engine is None:
            raise RuntimeError("verification is unavailable (no model loaded)")
        claimed_id = normal_id(claimed_id)  # as the store keeps IDs: a full-width or NFD form is the same ID
        if self._attempt is not None:
            log.info("verification of %r replaced by %s", self.claimed_id, claimed_id)
            self._attempt = None
        threshold = self.threshold_in_force(claimed_id)
        employee = self.storage.employees.get(claimed_id)
        if employee is None:
            return self._finish(refused(claimed_id, REASON_UNKNOWN_ID, threshold))
        if self.locks.locked_until(claimed_id) is not None:  # the face is not even looked at
            return self._finish(refused(claimed_id, REASON_LOCKED, threshold))
        references = current_references(self.engine, self.storage.employees, claimed_id)
        if references.size == 0:
            return self._finish(refused(claimed_id, REASON_NO_REFERENCE, threshold))
        if self._liveness_missing():
            return self._finish(refused(claimed_id, REASON_NO_LIVENESS, threshold))
        start = self.clock() if started_at is None else started_at
        snapshot = self._gallery.snapshot()  # synced by threshold_in_force() above (one fingerprint query)
        columns = [i for i, person in enumerate(snapshot.ids) if person != claimed_id]
        session = VerificationSession(claimed_id, threshold, self.fusion, start, self.liveness_threshold,
                                      others=[snapshot.ids[i] for i in columns], margin=self.site_rule().insider_margin)
        self._attempt = _Attempt(session, snapshot, np.asarray(columns, np.int64), references, name=employee.name)
        return None

    # -- walk-ups (1:N) -----------------------------------------------------------------------------------------
    def walk_up_calibration(self) -> tuple[IdentifyCalibration | None, str]:
        """(the 1:N calibration for this engine, weights/identify.json; or None and why walk-ups are unavailable)."""
        if self.engine is None:
            return None, "no model loaded"
        if self._calibration is None:
            try:
                self._calibration = IdentifyCalibration.load()
            except WeightsError as exc:
                return None, str(exc)
        if not self._calibration.matches(self.engine):
            return None, "its calibration was measured with another face model"
        return self._calibration, ""

    def walk_up_rule(self) -> IdentifyRule | None:
        """The 1:N rule for this engine, or None (then says why through ``report``)."""
        calibration, problem = self.walk_up_calibration()
        if calibration is None:
            self._say(f"walk-up identification unavailable: {problem}")
            return None
        return calibration.rule

    def _liveness_missing(self) -> bool:
        """Liveness is on but its model is not loaded: fail closed (no check, nobody in), and say so."""
        if self.liveness.enabled and self.engine is not None and self.engine.liveness is None:
            self._say(f"liveness is on but unavailable: {self.engine.liveness_problem}")
            return True
        return False

    def gallery(self) -> GalleryIndex:
        """Everyone enrolled, in memory, brought up to date with the store (a cheap check when nothing changed)."""
        assert self.engine is not None
        if self._gallery is None or self._gallery.model_id != self.engine.model_id:
            self._gallery = GalleryIndex.for_engine(self.engine)
        self._gallery.sync(self.storage.employees)
        return self._gallery

    def begin_walk_up(self, started_at: float | None = None) -> Decision | None:
        """Start a walk-up (replacing any attempt under way): frames are searched among everyone enrolled. Ends
        at once (the Decision) when walk-ups are unavailable, nobody is enrolled or liveness is unavailable."""
        if self.engine is None:
            raise RuntimeError("verification is unavailable (no model loaded)")
        if self._attempt is not None:
            log.info("verification of %r replaced by a walk-up", self.claimed_id)
            self._attempt = None
        rule = self.walk_up_rule()
        if rule is None:
            return self._finish(refused("", REASON_NO_WALK_UP, self.threshold, MODE_WALK_UP))
        if self._liveness_missing():
            return self._finish(refused("", REASON_NO_LIVENESS, rule.threshold, MODE_WALK_UP))
        if len(self.gallery()) == 0:
            return self._finish(refused("", REASON_NOBODY_ENROLLED, rule.threshold, MODE_WALK_UP))
        rule = IdentifyRule(self.site().in_force(rule.threshold), rule.gap)  # the site's threshold holds here too
        start = self.clock() if started_at is None else started_at
        snapshot = self._gallery.snapshot()
        session = VerificationSession("", rule.threshold, self.fusion, start, self.liveness_threshold, MODE_WALK_UP,
                                      others=snapshot.ids, judge=self._judge_walk_up)
        self._attempt = _Attempt(session, snapshot, np.arange(len(snapshot.ids)), rule=rule)
        return None

    def _judge_walk_up(self, session: VerificationSession) -> Decision:
        """A walk-up's verdict: the 1:N rule on its frames' scores against everyone enrolled when it began (the
        site as measured then), and liveness; someone deleted since is not let in."""
        rule = self._attempt.rule
        if not session.frames:
            return refused("", REASON_NO_FACE, rule.threshold, MODE_WALK_UP)
        found = identify(session.others, np.stack(session.other_scores), rule, session.params.aggregate,
                         self._attempt.snapshot.generation)
        found = judge_walk_up(found, self._site, rule.threshold)
        decision = decide_walk_up(found.person_id, found.accepted, found.reason, found.score, rule.threshold,
                                  session.fused_liveness(), session.liveness_threshold)
        if decision.claimed_id and self.locks.locked_until(decision.claimed_id) is not None:
            # the face found is an ID locked after repeated suspected attacks: refused, live or not
            decision = replace(decision, accepted=False, reason=REASON_LOCKED)
        name = None
        if decision.accepted:
            employee = self.storage.employees.get(decision.claimed_id)
            if employee is None:  # deleted since the index was synced: not let in
                decision = replace(decision, accepted=False, reason=REASON_UNKNOWN_ID)
            else:
                name = employee.name
        self._attempt.name = name or ""
        log.info("walk-up: best %r (%.3f), second %r (%s), gap rule %.2f", found.person_id, found.score or 0.0,
                 found.second_id, "-" if found.second_score is None else f"{found.second_score:.3f}", rule.gap)
        return decision

    # -- frames -------------------------------------------------------------------------------------------------
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

    def add_analysis(self, analysis, captured_at: float) -> Decision | None:
        """A frame as the engine analysed it (kiosk.vision.engine.FaceAnalysis): THE quality gate, a frame counts
        only with a face that passed the quality checks (the others still let the deadline pass)."""
        return self.add_frame(analysis.crop if analysis.quality.ok else None, captured_at, analysis.liveness)

    def add_features(self, features: np.ndarray, captured_at: float, liveness: float | None = None) -> Decision | None:
        """A good frame's features (and P(live)): scored against all references; decides at ``fusion.frames``
        frames. With liveness on, a frame without a P(live) does not count."""
        attempt = self._attempt
        if attempt is None:
            return None
        session = attempt.session
        if session.wants(captured_at):
            assert self.engine is not None
            if session.liveness_threshold is not None and liveness is None:
                log.warning("a frame without a liveness score was left out")  # 1:1 and walk-up alike
                return self.expire()
            score = None if attempt.walk_up else frame_score(self.engine.similarity, features, attempt.references)
            others = None
            if session.others:
                _, everyone = self._gallery.person_scores(features, attempt.snapshot)
                others = everyone[0, attempt.columns]
            decision = session.add_score(score, captured_at, liveness, others)
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
        return self._finish(refused(session.claimed_id, REASON_ERROR, session.threshold, session.mode))

    def cancel(self) -> None:
        """Drop the attempt under way without a verdict (nothing is audited)."""
        self._attempt = None

    def _say(self, problem: str) -> None:
        log.warning("%s", problem)
        if self.report is not None:
            self.report(problem)

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
                                      liveness=decision.liveness, mode=decision.mode, detail=decision.detail)
        except Exception as exc:  # the person still gets the verdict
            log.exception("writing the audit log failed")
            if self.report is not None:
                self.report(f"the audit log could not be written: {exc}")
            return decision
        if self.door is not None:
            try:
                self.door.decided(decision)  # after the audit entry: only an audited ACCEPT opens the door
            except Exception as exc:
                log.exception("the door could not be told")
                if self.report is not None:
                    self.report(f"the door could not be told: {exc}")
        try:
            self.locks.after(decision)  # may lock the ID (audited, logged; Admin shows the alert)
        except Exception as exc:
            log.exception("the retry rule could not be applied")
            if self.report is not None:
                self.report(f"the retry rule could not be applied: {exc}")
        return decision
