"""The site's own evidence: how alike the people enrolled HERE score with each other. Qt-free, torch-free.

A threshold calibrated on LFW (mostly Western public figures) let 83 % of colleagues in on each other's ID at a
site of East Asian staff: dlib's network crowds some populations together, so one global threshold cannot hold
everywhere. Two rules adapt the decision to the people actually enrolled:

* **The site threshold** (:func:`measure_site`): every pair of different enrolled people is scored as an attempt
  would score them (the best P(same) over their reference photos). Those pair scores are the site's own impostor
  scores; a normal distribution is fitted to their logits and the site threshold is the score that the fit gives
  a ``target_far`` chance (1 %: mean + 2.33 sd). The threshold in force is the stricter of the admin's (or the
  model's) and the site's (:meth:`SiteCalibration.in_force`). Below ``min_people`` the pairs are too few to fit
  and a conservative fallback applies (:data:`SiteRule.fallback_threshold`, chosen on LFW folds 6-10 at 0.1 %
  false accepts), and the calibration says so.
* **Each employee's own threshold** (Z-norm over the enrolled references): the scores of one employee against
  every colleague are that employee's own impostor scores; a claim of their ID must score ``person_z`` standard
  deviations above their mean (:meth:`SiteCalibration.threshold_for`). An employee whom many colleagues resemble
  gets a stricter threshold, one who stands apart keeps the site's.
* **The insider check** (:func:`kiosk.decision.decide` with a rival): a claimed ID is accepted only if its
  employee scores at least ``insider_margin`` (in logits) above every other enrolled person; a colleague with a
  borrowed badge is closer to themself than to the badge's owner.

The rule's numbers (target, minimum, margin, fallback) are in ``weights/site.json`` (``kiosk calibrate-site``,
chosen on LFW folds 6-10 only), integrity-checked at load, valid for the model they were measured with.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import NormalDist

import numpy as np

from .decision import logit, valid_threshold
from .errors import WeightsError
from .identification import REASON_NOT_RECOGNISED, head_parameters
from .paths import WEIGHTS_DIR

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
    pairs: int
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
        """Fraction of pairs of different enrolled people scoring >= ``threshold``: about how many colleagues a
        threshold alone would let in on each other's ID (None without pairs). Read off the histogram (bins of
        0.001: an over-estimate by at most one bin)."""
        if self.pairs == 0:
            return None
        i = int(np.clip(math.floor(float(threshold) * HISTOGRAM_BINS), 0, HISTOGRAM_BINS - 1))
        return float(self.histogram[i:].sum() / self.pairs)

    def describe(self) -> str:
        if not self.fitted:
            fallback = ("no site threshold for this model" if self.threshold is None
                        else f"the conservative threshold {self.threshold:.3f} applies")
            return (f"{self.people} people enrolled, fewer than {self.rule.min_people}: the site cannot be measured yet, "
                    f"{fallback}")
        return (f"{self.people} people enrolled ({self.pairs} pairs): site threshold {self.threshold:.3f} "
                f"(about {self.rule.target_far:.0%} of colleagues' scores above it)")


def _pair_blocks(ids, matrix, row_norms, starts, scorer, chunk_rows: int = 2048):
    """Yield (i0, (people in block, P) scores): each person's best score over their photos against each person."""
    n = len(ids)
    ends = np.r_[starts[1:], len(matrix)] if n else starts
    i = 0
    while i < n:
        j = i + 1
        while j < n and ends[j] - starts[i] <= chunk_rows:
            j += 1
        rows = scorer(matrix[starts[i]:ends[j - 1]], matrix, row_norms)
        by_person = np.maximum.reduceat(np.asarray(rows, np.float64), starts, axis=1)    # (rows, P)
        yield i, np.maximum.reduceat(by_person, starts[i:j] - starts[i], axis=0)        # (people, P)
        i = j


def measure_site(gallery, rule: SiteRule = SiteRule()) -> SiteCalibration:
    """The site calibration of everyone in ``gallery`` (kiosk.identification.GalleryIndex): every pair of different
    people scored once (the best over their photos), their logits fitted by a normal distribution."""
    snap = gallery.snapshot()
    ids, n = snap.ids, len(snap.ids)
    total = s1 = s2 = 0.0
    histogram = np.zeros(HISTOGRAM_BINS, np.int64)
    own_mean, own_sd = np.zeros(n), np.zeros(n)  # each person's logits against everyone else
    closest: tuple[str, str, float] | None = None
    for i0, block in _pair_blocks(ids, snap.matrix, snap.row_norms, snap.starts, gallery.scorer):
        for k, row in enumerate(block):
            i = i0 + k
            if n > 2:
                everyone = logit(np.delete(row, i))
                own_mean[i], own_sd[i] = everyone.mean(), everyone.std(ddof=1)
            others = row[i + 1:]  # each pair once
            if not len(others):
                continue
            z = logit(others)
            total += len(others)
            s1 += float(z.sum())
            s2 += float((z * z).sum())
            histogram += np.bincount(np.clip((others * HISTOGRAM_BINS).astype(np.int64), 0, HISTOGRAM_BINS - 1),
                                     minlength=HISTOGRAM_BINS)
            j = int(np.argmax(others))
            if closest is None or others[j] > closest[2]:
                closest = (ids[i], ids[i + 1 + j], float(others[j]))
    pairs = int(total)
    if n < rule.min_people or pairs < 2:
        return SiteCalibration(n, pairs, rule.fallback_threshold, False, closest=closest, histogram=histogram,
                               rule=rule)
    mean = s1 / total
    sd = math.sqrt(max(s2 / total - mean * mean, 0.0) * total / (total - 1))
    threshold = float(sigmoid(mean + NormalDist().inv_cdf(1 - rule.target_far) * sd))
    return SiteCalibration(n, pairs, threshold, True, mean, sd, closest, histogram, rule,
                           dict(zip(ids, own_mean.tolist())), dict(zip(ids, own_sd.tolist())))


def judge_walk_up(found, site: SiteCalibration, threshold: float):
    """A walk-up's identification (kiosk.identification.identify, already with the site's threshold) held to the
    found person's own threshold too: not recognised when their fused score is below it."""
    if found.accepted and found.score < site.threshold_for(found.person_id, threshold):
        return replace(found, accepted=False, reason=REASON_NOT_RECOGNISED)
    return found


# -- the shipped rule ----------------------------------------------------------------------------------------
def _digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def seal_site_rule(body: dict) -> dict:
    return dict(body, sha256=_digest(body))


@dataclass(frozen=True)
class SiteRuleFile:
    rule: SiteRule
    model_id: str
    head: tuple[float, float]
    body: dict

    @classmethod
    def load(cls, path: str | Path = SITE_RULE_FILE) -> "SiteRuleFile":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise WeightsError(f"{path}: no site rule installed") from None
        except (OSError, ValueError) as exc:
            raise WeightsError(f"{path}: damaged site rule ({type(exc).__name__})") from None
        if not isinstance(data, dict) or data.get("format") != SITE_FORMAT:
            raise WeightsError(f"{path}: not a site rule ({SITE_FORMAT})")
        body = {k: v for k, v in data.items() if k != "sha256"}
        if data.get("sha256") != _digest(body):
            raise WeightsError(f"{path}: integrity check failed (the site rule is damaged or was modified)")
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
        current = head_parameters(engine)
        if engine.model_id != self.model_id or current is None:
            return False
        return all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6) for a, b in zip(current, self.head))
