"""The site's own evidence: how alike the people enrolled HERE score with each other. Qt-free, torch-free.

A threshold calibrated on LFW (mostly Western public figures) let 83 % of colleagues in on each other's ID at a
site of East Asian staff: dlib's network crowds some populations together, so one global threshold cannot hold
everywhere. Two rules adapt the decision to the people actually enrolled:

* **The site threshold** (:func:`measure_site`): every reference photo is scored against every other enrolled
  person as a camera frame would be (the best P(same) over that person's photos). Those are the site's own
  impostor scores; a normal distribution is fitted to their logits and the site threshold is the score that the fit gives
  a ``target_far`` chance (1 %: mean + 2.33 sd). The threshold in force is the stricter of the admin's (or the
  model's) and the site's (:meth:`SiteCalibration.in_force`). Below ``min_people`` the pairs are too few to fit
  and a conservative fallback applies (:data:`SiteRule.fallback_threshold`, chosen on LFW folds 6-10 at 0.1 %
  false accepts), and the calibration says so.
* **Each employee's own threshold** (Z-norm over the enrolled references): the scores of every colleague's
  photos against one employee are that employee's own impostor scores; a claim of their ID must score ``person_z`` standard
  deviations above their mean (:meth:`SiteCalibration.threshold_for`). An employee whom many colleagues resemble
  gets a stricter threshold, one who stands apart keeps the site's.
* **The insider check** (:func:`kiosk.rules.decision.decide` with a rival): a claimed ID is accepted only if its
  employee scores at least ``insider_margin`` (in logits) above every other enrolled person; a colleague with a
  borrowed badge is closer to themself than to the badge's owner.

The rule's numbers (target, minimum, margin, fallback) are in ``weights/site.json`` (``kiosk calibrate-site``,
chosen on LFW folds 6-10 only), integrity-checked at load, valid for the model they were measured with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import NormalDist

import numpy as np

from kiosk.errors import WeightsError
from kiosk.paths import WEIGHTS_DIR
from kiosk.rules.decision import logit, valid_threshold
from kiosk.rules.identification import REASON_NOT_RECOGNISED, measured_with, read_sealed

SITE_RULE_FILE = WEIGHTS_DIR / "site.json"
SITE_FORMAT = "kiosk-site-1"
HISTOGRAM_BINS = 1000  # pair scores kept as a histogram on [0, 1] (the admin page's "N % of colleagues")


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


@dataclass(frozen=True)
class SiteRule:
    """The numbers of the site rules (weights/site.json)."""

    target_far: float = 0.01          # the site threshold's false-accept target per comparison (from the fit)
    min_people: int = 5               # fewer people: too few pairs to fit, the fallback applies
    insider_margin: float = 0.0       # logits by which the claimed employee must beat every other enrolled person
    # P(same) used as the site threshold below min_people; None (no rule measured for this model): none
    fallback_threshold: float | None = None
    person_z: float | None = None     # each employee's own threshold: mean + person_z sd of their colleagues' logits

    def __post_init__(self):
        if not (1e-5 <= self.target_far <= 0.2 and 2 <= self.min_people <= 1000 and 0.0 <= self.insider_margin <= 5.0
                and (self.fallback_threshold is None or valid_threshold(self.fallback_threshold))
                and (self.person_z is None or 0.0 <= self.person_z <= 10.0)):
            raise ValueError(f"invalid site rule {self}")

    def to_dict(self) -> dict:
        return {"target_far": self.target_far, "min_people": self.min_people, "insider_margin": self.insider_margin,
                "fallback_threshold": self.fallback_threshold, "person_z": self.person_z}


@dataclass(frozen=True)
class SiteCalibration:
    """What the enrolled people say about this site: their pair scores, fitted, and the site threshold."""

    people: int
    comparisons: int                  # reference photos x other people scored (each pair of people twice or more)
    threshold: float | None           # the site threshold (P(same)); the fallback's below min_people (or None)
    fitted: bool                      # False: fewer than min_people, the fallback is in force
    mean_logit: float | None = None
    sd_logit: float | None = None
    closest: tuple[str, str, float] | None = None   # the most alike pair of different people, and their score
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(HISTOGRAM_BINS, np.int64), repr=False)
    rule: SiteRule = SiteRule()
    person_mean: dict[str, float] = field(default_factory=dict, repr=False)  # each employee's logits against
    person_sd: dict[str, float] = field(default_factory=dict, repr=False)    # every colleague (3+ people)

    @property
    def person_thresholds(self) -> dict[str, float]:
        """Each employee's own threshold (fitted sites with a person_z rule): mean + person_z sd, as P(same)."""
        if not self.fitted or self.rule.person_z is None:
            return {}
        return {p: float(sigmoid(m + self.rule.person_z * self.person_sd[p])) for p, m in self.person_mean.items()}

    def in_force(self, threshold: float) -> float:
        """The threshold of any decision at this site: the stricter of ``threshold`` (the admin's or the model's)
        and the site's."""
        return float(threshold) if self.threshold is None else max(float(threshold), self.threshold)

    def threshold_for(self, person_id: str, threshold: float) -> float:
        """THE threshold of a decision for ``person_id`` (a claimed ID, or the person a walk-up found): the
        stricter of :meth:`in_force` and that employee's own threshold."""
        if not self.fitted or self.rule.person_z is None or person_id not in self.person_mean:
            return self.in_force(threshold)
        own = float(sigmoid(self.person_mean[person_id] + self.rule.person_z * self.person_sd[person_id]))
        return max(self.in_force(threshold), own)

    def colleagues_above(self, threshold: float) -> float | None:
        """Fraction of reference photos scoring >= ``threshold`` against another enrolled person: about how many
        colleagues a threshold alone would let in on each other's ID (None without comparisons). Read off the histogram (bins of
        0.001: an over-estimate by at most one bin)."""
        if self.comparisons == 0:
            return None
        i = int(np.clip(math.floor(float(threshold) * HISTOGRAM_BINS), 0, HISTOGRAM_BINS - 1))
        return float(self.histogram[i:].sum() / self.comparisons)

    def describe(self) -> str:
        if not self.fitted:
            fallback = ("no site threshold for this model" if self.threshold is None
                        else f"the conservative threshold {self.threshold:.3f} applies")
            return (f"{self.people} people enrolled, fewer than {self.rule.min_people}: the site cannot be measured yet, "
                    f"{fallback}")
        return (f"{self.people} people enrolled ({self.comparisons} comparisons): site threshold {self.threshold:.3f} "
                f"(about {self.rule.target_far:.0%} of colleagues' scores above it)")


def _photo_blocks(matrix, row_norms, starts, scorer, chunk_rows: int = 256):
    """Yield (first row, (rows, P) scores): each reference photo against each person (their best photo)."""
    for r0 in range(0, len(matrix), chunk_rows):
        rows = scorer(matrix[r0:r0 + chunk_rows], matrix, row_norms)
        yield r0, np.maximum.reduceat(np.asarray(rows, np.float64), starts, axis=1)


def measure_site(gallery, rule: SiteRule = SiteRule()) -> SiteCalibration:
    """The site calibration of everyone in ``gallery`` (kiosk.rules.identification.GalleryIndex): every reference photo
    scored against every OTHER person as a camera frame would be (the best over that person's photos), the
    logits fitted by a normal distribution, for the site and for each person (the photos of their colleagues
    against them)."""
    snap = gallery.snapshot()
    ids, n = snap.ids, len(snap.ids)
    owner = np.repeat(np.arange(n), np.diff(np.r_[snap.starts, len(snap.matrix)])) if n else np.zeros(0, np.int64)
    col_n, col_s1, col_s2 = np.zeros(n), np.zeros(n), np.zeros(n)
    histogram = np.zeros(HISTOGRAM_BINS, np.int64)
    closest: tuple[str, str, float] | None = None
    for r0, block in _photo_blocks(snap.matrix, snap.row_norms, snap.starts, gallery.scorer):
        others = np.ones(block.shape, bool)
        others[np.arange(len(block)), owner[r0:r0 + len(block)]] = False  # not against their own person
        z = np.where(others, logit(block), 0.0)
        col_n += others.sum(axis=0)
        col_s1 += z.sum(axis=0)
        col_s2 += (z * z).sum(axis=0)
        scores = block[others]
        histogram += np.bincount(np.clip((scores * HISTOGRAM_BINS).astype(np.int64), 0, HISTOGRAM_BINS - 1),
                                 minlength=HISTOGRAM_BINS)
        masked = np.where(others, block, -np.inf)
        r, j = np.unravel_index(int(np.argmax(masked)), masked.shape) if masked.size else (0, 0)
        if masked.size and np.isfinite(masked[r, j]) and (closest is None or masked[r, j] > closest[2]):
            closest = (ids[owner[r0 + r]], ids[j], float(masked[r, j]))
    total = float(col_n.sum())
    comparisons = int(total)
    if n < rule.min_people or comparisons < 2:
        return SiteCalibration(n, comparisons, rule.fallback_threshold, False, closest=closest, histogram=histogram,
                               rule=rule)
    mean = float(col_s1.sum() / total)
    sd = math.sqrt(max(float(col_s2.sum()) / total - mean * mean, 0.0) * total / (total - 1))
    threshold = float(sigmoid(mean + NormalDist().inv_cdf(1 - rule.target_far) * sd))
    own_mean = col_s1 / np.maximum(col_n, 1)
    own_sd = np.sqrt(np.maximum(col_s2 / np.maximum(col_n, 1) - own_mean ** 2, 0.0) * col_n / np.maximum(col_n - 1, 1))
    return SiteCalibration(n, comparisons, threshold, True, mean, sd, closest, histogram, rule,
                           dict(zip(ids, own_mean.tolist())), dict(zip(ids, own_sd.tolist())))


def judge_walk_up(found, site: SiteCalibration, threshold: float):
    """A walk-up's identification (kiosk.rules.identification.identify, already with the site's threshold) held to the
    found person's own threshold too: not recognised when their fused score is below it."""
    if found.accepted and found.score < site.threshold_for(found.person_id, threshold):
        return replace(found, accepted=False, reason=REASON_NOT_RECOGNISED)
    return found


# -- the shipped rule ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SiteRuleFile:
    rule: SiteRule
    model_id: str
    head: tuple[float, float]
    body: dict

    @classmethod
    def load(cls, path: str | Path = SITE_RULE_FILE) -> "SiteRuleFile":
        path = Path(path)
        body = read_sealed(path, SITE_FORMAT, "site rule")
        try:
            r = body["rule"]
            optional = lambda key: None if r.get(key) is None else float(r[key])  # noqa: E731
            rule = SiteRule(float(r["target_far"]), int(r["min_people"]), float(r["insider_margin"]),
                            optional("fallback_threshold"), optional("person_z"))
            head = (float(body["head"]["weight"]), float(body["head"]["bias"]))
            model_id = str(body["model_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"{path}: site rule out of range or incomplete ({exc})") from None
        return cls(rule, model_id, head, body)

    def matches(self, engine) -> bool:
        return measured_with(engine, self.model_id, self.head)
