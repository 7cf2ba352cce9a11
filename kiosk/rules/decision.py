"""From frame scores to one ACCEPT/REJECT: several good frames, fused, against all reference photos.

After an ID is entered, up to ``frames`` good-quality frames are collected within ``window_s`` seconds.
Each frame's score is its best match over ALL the employee's reference photos; the decision is the
mean (or median) of the frame scores against the threshold. Pure Python, no Qt, no network: the caller
computes the scores (e.g. with :func:`frame_score` and FaceEngine.similarity); kiosk.app.attempt runs a whole
attempt around it.

The insider check (kiosk.rules.site): with the gallery of everyone enrolled, each frame is also scored against every
other enrolled person, fused per person like the claimed one, and the attempt is refused when another employee
comes within ``margin`` logits of the claimed one (:func:`insider_ok`): a colleague with a borrowed badge is
closer to themself than to the badge's owner. The person is told only "not recognised, please see the front
desk"; the audit names the closer employee.

Liveness (kiosk.vision.liveness) is fused too: each good frame also carries P(live), and an attempt is refused as a
suspected presentation attack, whatever the face score (a printed photo of the right person matches the
face), unless EVERY one of its frames looks live (:func:`fuse_liveness`, the lowest P(live)).

The one home of the decision rules' constants: the threshold's allowed range and policy
(:class:`ThresholdPolicy`), the liveness switch and threshold (:class:`LivenessPolicy`), the kiosk modes,
and the fusion defaults and limits (:class:`FusionParams`), which the settings use too.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace
from statistics import mean, median
from typing import Callable, Sequence

import numpy as np

ACCEPT, REJECT = "ACCEPT", "REJECT"
# The one range any decision threshold may take, wherever it comes from (weights, settings, the slider): a
# threshold near 0 would let anyone in, one at 1 nobody.
THRESHOLD_RANGE = (0.05, 0.999)
FALLBACK_THRESHOLD = 0.5  # shown while no model is loaded; never used to decide (no model, no attempt)

REASON_MATCH = "face matches"
REASON_NO_MATCH = "face does not match"
REASON_UNKNOWN_ID = "unknown ID"
REASON_NO_FACE = "no usable face in time"
REASON_NO_REFERENCE = "no reference photo for this ID (re-enrolment needed)"
REASON_ERROR = "technical problem, please try again"
REASON_ATTACK = "presentation attack suspected"  # the audit's words; the person is told LOOK_AT_CAMERA
REASON_NO_LIVENESS = "liveness check unavailable"
REASON_NO_WALK_UP = "walk-up identification unavailable, please enter your ID"
LOOK_AT_CAMERA = "Please look at the camera yourself"
REASON_CLOSER = "face closer to another employee"  # the audit's words (with the employee in its detail)
SEE_FRONT_DESK = "Not recognised, please see the front desk"
REASON_LOCKED = "face verification locked after repeated suspected photo attacks"  # kiosk.rules.retries
LOCKED_MESSAGE = "Please see the front desk"  # what the person at a locked ID is told

# How the person states who they are; every decision is audited with the mode that made it.
MODE_ID = "id"          # an ID or badge is typed, then one face comparison (1:1)
MODE_WALK_UP = "walk-up"  # no ID: the face is searched among everyone enrolled (1:N)
MODE_BOTH = "both"        # walk-ups are identified, and a typed ID is still taken
KIOSK_MODES = {MODE_ID: "ID + face", MODE_WALK_UP: "Face only (walk-up)",
               MODE_BOTH: "Both: walk-up, or type the ID"}  # the setting's values -> what the admin reads


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_EPS = 1e-7


def logit(p):
    """log(p / (1 - p)), clipped away from 0 and 1 (scalars or arrays)."""
    p = np.clip(np.asarray(p, np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def insider_ok(score: float, rival_score: float | None, margin: float) -> bool:
    """THE insider rule: the claimed employee's fused score beats the best other enrolled person's by at least
    ``margin`` logits (no other person enrolled: nothing to beat)."""
    return rival_score is None or float(logit(score) - logit(rival_score)) >= margin


def valid_threshold(value: object) -> bool:
    return _is_number(value) and THRESHOLD_RANGE[0] <= value <= THRESHOLD_RANGE[1]  # type: ignore[operator]


@dataclass(frozen=True)
class ThresholdPolicy:
    """THE threshold rule: the admin's saved threshold (the settings') when set and in range, else the
    model's calibrated default. The worker's attempts and the admin slider both ask this."""

    saved: float | None = None  # Settings.threshold; None: follow the model

    def threshold(self, model_default: float | None) -> float:
        if self.saved is not None and valid_threshold(self.saved):
            return float(self.saved)
        return float(model_default) if model_default is not None else FALLBACK_THRESHOLD

    def follows_model(self) -> bool:
        return self.saved is None or not valid_threshold(self.saved)


# P(live) thresholds the liveness model file and the admin may set (kiosk.vision.liveness checks its file with it)
LIVENESS_THRESHOLD_RANGE = (0.01, 0.99)


def valid_liveness_threshold(value: object) -> bool:
    return _is_number(value) and LIVENESS_THRESHOLD_RANGE[0] <= value <= LIVENESS_THRESHOLD_RANGE[1]  # type: ignore[operator]


@dataclass(frozen=True)
class LivenessPolicy:
    """THE liveness rule: on unless the admin switched it off; the admin's saved P(live) threshold when set
    and in range, else the liveness model's own (fitted on held-out people)."""

    enabled: bool = True
    saved: float | None = None  # Settings.liveness_threshold; None: follow the model

    def threshold(self, model_default: float | None) -> float | None:
        """The P(live) an attempt needs; None when liveness is off."""
        if not self.enabled:
            return None
        if self.saved is not None and valid_liveness_threshold(self.saved):
            return float(self.saved)
        return float(model_default) if model_default is not None else None


AGGREGATES = ("mean", "median")
FRAMES_RANGE = (1, 20)          # good frames per decision
WINDOW_RANGE_S = (0.5, 60.0)    # seconds to collect them


@dataclass(frozen=True)
class FusionParams:
    """The fusion defaults and limits, in one place (Settings takes its defaults and checks from here)."""

    frames: int = 3          # good frames fused into one decision
    window_s: float = 4.0    # seconds after the ID is entered
    aggregate: str = "mean"  # "mean" or "median"

    def __post_init__(self):
        if not all(self.valid(name, getattr(self, name)) for name in ("frames", "window_s", "aggregate")):
            raise ValueError(f"invalid fusion parameters {self}")

    @staticmethod
    def valid(name: str, value: object) -> bool:
        """Whether ``value`` is allowed for the field ``name``."""
        if name == "frames":
            return isinstance(value, int) and not isinstance(value, bool) and FRAMES_RANGE[0] <= value <= FRAMES_RANGE[1]
        if name == "window_s":
            return _is_number(value) and WINDOW_RANGE_S[0] <= value <= WINDOW_RANGE_S[1]  # type: ignore[operator]
        if name == "aggregate":
            return value in AGGREGATES
        raise KeyError(name)


@dataclass(frozen=True)
class Decision:
    claimed_id: str
    accepted: bool
    reason: str
    score: float | None         # fused score; None when nothing was compared
    threshold: float
    frame_scores: tuple[float, ...] = ()
    name: str | None = None     # the employee's name, on accepted decisions (kiosk.app.attempt fills it in)
    liveness: float | None = None            # fused P(live) (the least live frame); None: off or nothing seen
    liveness_threshold: float | None = None  # None: liveness off
    mode: str = MODE_ID
    rival_id: str | None = None         # the best-scoring OTHER enrolled employee (insider check), if any
    rival_score: float | None = None    # their fused score
    margin: float = 0.0                 # the insider margin it was judged with (logits)

    @property
    def attack_suspected(self) -> bool:
        return self.reason == REASON_ATTACK

    @property
    def closer_to_other(self) -> bool:
        return self.reason == REASON_CLOSER

    @property
    def message(self) -> str:
        """What the person at the kiosk is told (the audit keeps ``reason`` and ``detail``)."""
        if self.attack_suspected:
            return LOOK_AT_CAMERA
        if self.closer_to_other:
            return SEE_FRONT_DESK
        if self.reason == REASON_LOCKED:
            return LOCKED_MESSAGE
        return self.reason[:1].upper() + self.reason[1:]

    @property
    def detail(self) -> str:
        """The audit entry's detail: the closer employee of a refused claim, for the admin to follow up."""
        if self.rival_id is None or self.rival_score is None:
            return ""
        closer = "closer to" if self.closer_to_other else "next best"
        own = "-" if self.score is None else f"{self.score:.3f}"
        return f"{closer} {self.rival_id} (P {self.rival_score:.3f} against {own})"

    @property
    def verdict(self) -> str:
        return ACCEPT if self.accepted else REJECT

    def with_threshold(self, threshold: float) -> "Decision":
        """The same evidence judged against another threshold."""
        if self.score is None:
            return replace(self, threshold=threshold)
        rival = (self.rival_id, self.rival_score) if self.rival_id is not None else None
        judged = decide(self.claimed_id, self.frame_scores, threshold, aggregate=None, fused=self.score,
                        liveness=self.liveness, liveness_threshold=self.liveness_threshold, mode=self.mode,
                        rival=rival, margin=self.margin)
        return replace(judged, name=self.name if judged.accepted else None)


def frame_score(similarity: Callable[[np.ndarray, np.ndarray], np.ndarray], frame_features: np.ndarray,
                reference_features: np.ndarray) -> float:
    """A frame's score: its best P(same) over all reference photos (N, D)."""
    refs = np.atleast_2d(reference_features)
    if refs.size == 0:
        raise ValueError("no reference features")
    return float(np.max(similarity(frame_features, refs)))


def fuse_liveness(p_live: Sequence[float]) -> float:
    """An attempt's liveness: its least live frame. An attacker must pass every frame; in leave-one-person-out
    cross-validation on NUAA (3 frames an attempt) the least live frame let fewer attack attempts through than
    the mean (weights/LIVENESS_CARD.md has the figures)."""
    if not p_live:
        raise ValueError("no liveness scores to fuse")
    return float(min(p_live))


def fuse(scores: Sequence[float], aggregate: str = "mean") -> float:
    if not scores:
        raise ValueError("no scores to fuse")
    return float(median(scores) if aggregate == "median" else mean(scores))


def looks_live(liveness: float | None, liveness_threshold: float | None) -> bool:
    """THE liveness rule of a decision: liveness off (no threshold), or the fused P(live) reaches it."""
    return liveness_threshold is None or (liveness is not None and liveness >= liveness_threshold)


def decide(claimed_id: str, frame_scores: Sequence[float], threshold: float, aggregate: str | None = "mean",
           fused: float | None = None, liveness: float | None = None, liveness_threshold: float | None = None,
           mode: str = MODE_ID, rival: tuple[str, float] | None = None, margin: float = 0.0) -> Decision:
    """ACCEPT iff (liveness off, or the fused P(live) ``liveness`` >= ``liveness_threshold``) AND no other
    enrolled employee (``rival``: the best other person and their fused score) comes within ``margin`` logits
    of the claimed one AND the fused score >= threshold. In that order: liveness below its threshold -> REJECT
    'presentation attack suspected', whatever the face score; a closer employee -> REJECT 'face closer to another
    employee'; no frames -> REJECT 'no usable face in time'."""
    scores = tuple(float(s) for s in frame_scores)
    if not scores:
        return Decision(claimed_id, False, REASON_NO_FACE, None, threshold, liveness_threshold=liveness_threshold,
                        mode=mode)
    score = fused if fused is not None else fuse(scores, aggregate or "mean")
    rival_id, rival_score = rival if rival is not None else (None, None)
    if not looks_live(liveness, liveness_threshold):
        reason, accepted = REASON_ATTACK, False
    elif not insider_ok(score, rival_score, margin):
        reason, accepted = REASON_CLOSER, False
    else:
        accepted = score >= threshold
        reason = REASON_MATCH if accepted else REASON_NO_MATCH
    return Decision(claimed_id, accepted, reason, score, threshold, scores, liveness=liveness,
                    liveness_threshold=liveness_threshold, mode=mode, rival_id=rival_id,
                    rival_score=None if rival_score is None else float(rival_score), margin=margin)


def decide_walk_up(person_id: str | None, recognised: bool, reason: str, score: float | None, threshold: float,
                   liveness: float | None = None, liveness_threshold: float | None = None) -> Decision:
    """A walk-up's verdict from its identification (kiosk.rules.identification.identify: the 1:N rule) and, with
    liveness on, the fused P(live) of its frames: ACCEPT iff recognised AND live. The person found is named
    in ``claimed_id`` when recognised, or when a photo of them was refused ('' otherwise)."""
    if score is None:  # no frame was searched
        return Decision("", False, reason, None, threshold, liveness_threshold=liveness_threshold,
                        mode=MODE_WALK_UP)
    if not looks_live(liveness, liveness_threshold):
        return Decision((person_id or "") if recognised else "", False, REASON_ATTACK, score, threshold,
                        liveness=liveness, liveness_threshold=liveness_threshold, mode=MODE_WALK_UP)
    return Decision((person_id or "") if recognised else "", recognised, reason, score, threshold, liveness=liveness,
                    liveness_threshold=liveness_threshold, mode=MODE_WALK_UP)


def refused(claimed_id: str, reason: str, threshold: float, mode: str = MODE_ID) -> Decision:
    """A REJECT before (or instead of) any comparison: unknown ID, no reference, technical problem."""
    return Decision(claimed_id, False, reason, None, threshold, mode=mode)


def unknown_id(claimed_id: str, threshold: float) -> Decision:
    return refused(claimed_id, REASON_UNKNOWN_ID, threshold)


class VerificationSession:
    """THE attempt, 1:1 or walk-up: started when the ID is entered (or a face walks up). Feed it the scores
    of good frames (with their capture time) and the clock; it decides once, at ``frames`` frames or at the
    deadline.

    A typed ID's frames bring their score against the claimed employee (``add_score(score, ...)``) and, for
    the insider check, against each of the ``others`` enrolled; the verdict is :func:`decide`'s. A walk-up
    (``claimed_id`` '', ``others`` everyone enrolled) brings only the scores against everyone
    (``add_score(None, ..., others=row)``), and its verdict is its ``judge``'s (the 1:N rule, which the
    application layer brings)."""

    def __init__(self, claimed_id: str, threshold: float, params: FusionParams = FusionParams(),
                 started_at: float = 0.0, liveness_threshold: float | None = None, mode: str = MODE_ID,
                 others: Sequence[str] = (), margin: float = 0.0,
                 judge: Callable[[VerificationSession], Decision] | None = None):
        """``others``: the other enrolled people (the insider check; everyone, for a walk-up); each frame then
        brings its score against each of them (``add_score(..., others=)``), fused per person like the
        claimed score. ``judge``: decides instead of :func:`decide` (a walk-up's 1:N rule)."""
        self.claimed_id = claimed_id
        self.others = tuple(others)
        self.margin = margin
        self.other_scores: list[np.ndarray] = []  # (len(others),) per frame
        self.threshold = threshold
        self.params = params
        self.started_at = started_at
        self.deadline = started_at + params.window_s
        self.liveness_threshold = liveness_threshold  # None: liveness off
        self.mode = mode
        self.judge = judge
        self.frames = 0                  # good frames counted so far
        self.scores: list[float] = []
        self.liveness: list[float] = []  # P(live) of the same frames
        self.decision: Decision | None = None

    @property
    def done(self) -> bool:
        return self.decision is not None

    def wants(self, captured_at: float) -> bool:
        """Only frames captured after the ID was entered and before the deadline count."""
        return not self.done and self.started_at <= captured_at <= self.deadline

    def add_score(self, score: float, captured_at: float, liveness: float | None = None,
                  others: np.ndarray | None = None) -> Decision | None:
        """A good frame's face score, with liveness on its P(live) (a frame without one cannot count), and with
        other people enrolled its scores against each of them (in ``self.others`` order)."""
        if not self.wants(captured_at):
            return self.decision
        if score is None and self.judge is None:
            raise ValueError("a 1:1 attempt needs each frame's score against the claimed employee")
        if self.others:
            row = np.asarray(others if others is not None else (), np.float64).reshape(-1)
            if row.shape != (len(self.others),):
                raise ValueError(f"the insider check needs a score for each of the {len(self.others)} other people")
            self.other_scores.append(row)
        if self.liveness_threshold is not None:
            if liveness is None:
                raise ValueError("liveness is on: every frame needs its P(live)")
            self.liveness.append(float(liveness))
        if score is not None:
            self.scores.append(float(score))
        self.frames += 1
        if self.frames >= self.params.frames:
            self._decide()
        return self.decision

    def expire(self, now: float) -> Decision | None:
        """At the deadline: decide on the frames collected so far (none -> no usable face in time)."""
        if not self.done and now >= self.deadline:
            self._decide()
        return self.decision

    def rival(self) -> tuple[str, float] | None:
        """The best other person over the frames so far (scores fused per person as the claimed one's)."""
        if not self.others or not self.other_scores:
            return None
        scores = np.stack(self.other_scores)
        fused = scores.mean(axis=0) if self.params.aggregate == "mean" else np.median(scores, axis=0)
        best = int(np.argmax(fused))
        return self.others[best], float(fused[best])

    def fused_liveness(self) -> float | None:
        return fuse_liveness(self.liveness) if self.liveness else None

    def _decide(self) -> None:
        if self.judge is not None:
            self.decision = self.judge(self)
            return
        liveness = self.fused_liveness()
        self.decision = decide(self.claimed_id, self.scores, self.threshold, self.params.aggregate,
                               liveness=liveness, liveness_threshold=self.liveness_threshold, mode=self.mode,
                               rival=self.rival(), margin=self.margin)

    def remaining(self, now: float) -> float:
        return max(0.0, self.deadline - now)


def roc_points(roc: list[dict] | None, keys: tuple[str, str] = ("far", "frr")) -> list[tuple[float, float, float]]:
    """THE reading of a model's ROC points ({"threshold", "far", "frr"}; the liveness model's use
    ``keys=("apcer", "bpcer")``): (threshold, accept rate, reject rate) sorted by threshold; [] when the points
    are missing or malformed."""
    accept, reject = keys
    try:
        return sorted((float(p["threshold"]), float(p[accept]), float(p[reject])) for p in roc or [])
    except (KeyError, TypeError, ValueError):
        return []


def estimate_rates(roc: list[dict] | None, threshold: float, keys: tuple[str, str] = ("far", "frr")
                   ) -> tuple[float, float] | None:
    """(false-accept rate, false-reject rate) at ``threshold``, interpolated linearly between the model's
    ROC points ({"threshold", "far", "frr"} sorted by threshold); None without usable points. The liveness
    model's points use ``keys=("apcer", "bpcer")`` (attacks accepted, live people refused)."""
    points = roc_points(roc, keys)
    if not points:
        return None
    thresholds = [p[0] for p in points]
    i = bisect.bisect_left(thresholds, threshold)
    if i == 0:
        return points[0][1], points[0][2]
    if i == len(points):
        return points[-1][1], points[-1][2]
    (t0, far0, frr0), (t1, far1, frr1) = points[i - 1], points[i]
    w = 0.0 if t1 == t0 else (threshold - t0) / (t1 - t0)
    return far0 + w * (far1 - far0), frr0 + w * (frr1 - frr0)
