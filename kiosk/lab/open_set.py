"""Open-set identification (1:N) measured on LFW: the protocol, the metrics, and the calibration of the rule.

The protocol on a set of LFW View 2 folds (``build_protocol``):

* **People:** everyone named in those folds' pairs (``pairs.txt``). A person also named in the pairs of any
  other fold is left out of both sides and counted (``excluded``); with the official pairs.txt there are none,
  the folds are identity-disjoint.
* **Gallery:** each of those people with at least 2 photos in the LFW folder: their first photo by file name
  (``<name>_0001.jpg``), one photo per person.
* **Mated probes:** all their other photos in the folder (not only those in the pairs).
* **Non-mated probes:** the one photo of each of those people who has only one (they are not in the gallery).

Every photo goes through the engine's own detect -> align -> embed (a missed face is aligned from LFW's fixed
framing box, as in the pair evaluation; an unreadable file scores as the worst score and is counted).

Metrics (``measure``), for a rule "accept the best person iff score >= t and score - second >= gap":

* **rank-1:** fraction of mated probes whose best-scoring gallery person is theirs.
* **FPIR(t):** fraction of non-mated probes accepted (as anyone).
* **DIR at FPIR x:** t set as low as possible with FPIR(t) <= x on these non-mated probes; DIR = fraction of
  mated probes whose rank-1 person is correct AND accepted at t.

LFW folds 1-5 are for reporting only: the gap and the threshold are chosen on folds 6-10 (``calibrate``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kiosk.lab.datasets import people_in_pairs, read_lfw_pairs
from kiosk.rules.identification import (
    CALIBRATION_FORMAT,
    GAP_RANGE,
    GalleryIndex,
    IdentifyCalibration,
    expected_fpir,
    head_parameters,
    negative_distance_scorer,
    scorer_for,
    seal_calibration,
)

log = logging.getLogger(__name__)

ALL_FOLDS = list(range(1, 11))
FPIR_POINTS = (1e-2, 1e-3)
# The gaps tried on folds 6-10 (in the model's P(same)); the one with the best mean of DIR at FPIR 1 % and
# 0.1 % there is chosen (ties: the smaller gap).
GAP_GRID = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)
DEFAULT_TARGET_FPIR = 1e-3
IMPOSTOR_GRID = np.round(np.arange(0.05, 1.0, 0.0025), 4)  # thresholds of the stored impostor tail


@dataclass
class Protocol:
    folds: list[int]
    gallery: list[tuple[str, Path]]      # (person, photo), one per person, sorted by person
    mated: list[tuple[str, Path]]
    non_mated: list[tuple[str, Path]]
    excluded: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return sorted({p for _, p in self.gallery + self.mated + self.non_mated})

    def describe(self) -> dict:
        return {"folds": self.folds, "gallery": len(self.gallery), "mated_probes": len(self.mated),
                "non_mated_probes": len(self.non_mated), "probes": len(self.mated) + len(self.non_mated),
                "excluded_people": len(self.excluded)}


def build_protocol(root: str | Path, pairs_file: str | Path, folds: list[int]) -> Protocol:
    root = Path(root)
    people = people_in_pairs(read_lfw_pairs(pairs_file, root, folds))
    others = [f for f in ALL_FOLDS if f not in folds]
    elsewhere = people_in_pairs(read_lfw_pairs(pairs_file, root, others)) if others else set()
    excluded = sorted(people & elsewhere)
    gallery, mated, non_mated = [], [], []
    for person in sorted(people - elsewhere):
        photos = sorted((root / person).glob("*.jpg"), key=lambda p: p.name)
        if len(photos) >= 2:
            gallery.append((person, photos[0]))
            mated += [(person, p) for p in photos[1:]]
        elif photos:
            non_mated.append((person, photos[0]))
    if excluded:
        log.warning("%d people appear in folds %s and in other folds; left out: %s", len(excluded), folds,
                    ", ".join(excluded[:10]))
    return Protocol(list(folds), gallery, mated, non_mated, excluded)


@dataclass
class Scores:
    """Per-person scores of every probe against the gallery (people in gallery order)."""

    mated: np.ndarray        # (M, P)
    mated_truth: np.ndarray  # (M,) column of the probe's own person
    non_mated: np.ndarray    # (N, P)
    missed_faces: int = 0
    unreadable: int = 0


def _scores(protocol: Protocol, features: np.ndarray, readable: np.ndarray, scorer, worst: float) -> Scores:
    where = {p: i for i, p in enumerate(protocol.paths)}
    index = GalleryIndex(scorer)
    index.replace_all((person, features[where[path]]) for person, path in protocol.gallery)
    people = index.people
    column = {person: i for i, person in enumerate(people)}

    def probe_scores(probes):
        rows = np.array([where[p] for _, p in probes], int)
        scores = index.person_scores(features[rows])[1].astype(np.float64)
        scores[~readable[rows]] = worst
        return scores

    unusable_gallery = [person for person, path in protocol.gallery if not readable[where[path]]]
    m = probe_scores(protocol.mated)
    for person in unusable_gallery:  # an unreadable gallery photo matches nobody
        m[:, column[person]] = worst
    n = probe_scores(protocol.non_mated)
    for person in unusable_gallery:
        n[:, column[person]] = worst
    truth = np.array([column[person] for person, _ in protocol.mated], int)
    return Scores(m, truth, n)


def score_ours(engine, protocol: Protocol, desc: str = "siamese") -> Scores:
    from kiosk.lab.featurecache import build_feature_cache  # noqa: PLC0415 (engine side)
    cache = build_feature_cache(protocol.paths, engine, desc=f"{desc}: faces")
    scores = _scores(protocol, cache.features, cache.readable, scorer_for(engine), 0.0)
    scores.missed_faces = int((~cache.detected & cache.readable).sum())
    scores.unreadable = int((~cache.readable).sum())
    return scores


def score_peer(peer, protocol: Protocol, desc: str = "face_recognition") -> Scores:
    from kiosk.lab.evaluation import peer_features  # noqa: PLC0415
    features, readable, detected = peer_features(peer, protocol.paths, desc)
    scores = _scores(protocol, features, readable, negative_distance_scorer, -10.0)
    scores.missed_faces = int((~detected & readable).sum())
    scores.unreadable = int((~readable).sum())
    return scores


# -- metrics -----------------------------------------------------------------------------------------------
def _top2(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index of the best, best score, second-best score; -inf with one person) per row."""
    if scores.shape[1] == 1:
        return np.zeros(len(scores), int), scores[:, 0], np.full(len(scores), -np.inf)
    best = np.argmax(scores, axis=1)  # ties: the first, as identification.identify
    top = np.take_along_axis(scores, best[:, None], 1)[:, 0]
    part = -np.partition(-scores, 1, axis=1)
    return best, top, part[:, 1]


@dataclass
class Outcome:
    """What one rule does: each probe's best score, whether the gap holds, and (mated) whether rank-1 is right."""

    mated_best: np.ndarray
    mated_gap_ok: np.ndarray
    mated_correct: np.ndarray
    non_mated_best: np.ndarray
    non_mated_gap_ok: np.ndarray

    def threshold_for_fpir(self, fpir: float) -> float:
        """The lowest threshold accepting at most ``fpir`` of the non-mated probes (-inf: the gap alone does)."""
        eligible = np.sort(self.non_mated_best[self.non_mated_gap_ok])[::-1]
        allowed = int(np.floor(fpir * len(self.non_mated_best) + 1e-9))
        if len(eligible) <= allowed:
            return -np.inf
        return float(np.nextafter(eligible[allowed], np.inf))

    def rates(self, threshold: float) -> tuple[float, float]:
        """(FPIR, DIR) at ``threshold``."""
        fpir = float(np.mean(self.non_mated_gap_ok & (self.non_mated_best >= threshold)))
        dir_ = float(np.mean(self.mated_correct & self.mated_gap_ok & (self.mated_best >= threshold)))
        return fpir, dir_


def outcome(scores: Scores, gap: float) -> Outcome:
    best, top, second = _top2(scores.mated)
    _, n_top, n_second = _top2(scores.non_mated)
    return Outcome(top, top - second >= gap, best == scores.mated_truth, n_top, n_top - n_second >= gap)


def measure(scores: Scores, gap: float, threshold: float | None = None,
            fpir_points: tuple[float, ...] = FPIR_POINTS) -> dict:
    """rank-1, DIR at each FPIR (thresholds set on these non-mated probes), and, given a threshold (one
    chosen elsewhere), the FPIR and DIR it gives here."""
    o = outcome(scores, gap)
    result = {"rank1": float(np.mean(o.mated_correct)), "gap": gap}
    for x in fpir_points:
        t = o.threshold_for_fpir(x)
        result[f"dir_at_fpir_{x:.0e}".replace("e-0", "e-")] = o.rates(t)[1]
        result[f"threshold_at_fpir_{x:.0e}".replace("e-0", "e-")] = None if np.isinf(t) else t
    if threshold is not None:
        result["fpir_at_threshold"], result["dir_at_threshold"] = o.rates(threshold)
    return result


def impostor_tail(scores: Scores, grid: np.ndarray = IMPOSTOR_GRID) -> tuple[np.ndarray, int]:
    """Fraction of single impostor comparisons (each non-mated probe against each gallery person) >= each
    threshold of ``grid``, and the number of comparisons."""
    values = np.sort(scores.non_mated.reshape(-1))
    tail = 1.0 - np.searchsorted(values, grid, side="left") / len(values)
    return tail, len(values)


# -- calibration on folds 6-10 ------------------------------------------------------------------------------
def choose_gap(scores: Scores, gaps: tuple[float, ...] = GAP_GRID) -> tuple[float, list[dict]]:
    """The gap with the best mean of DIR at FPIR 1 % and 0.1 % (ties: the smaller), and every gap's figures."""
    table = [measure(scores, g) for g in gaps]
    best = max(table, key=lambda r: (r["dir_at_fpir_1e-2"] + r["dir_at_fpir_1e-3"], -r["gap"]))
    return best["gap"], table


def calibrate(engine, protocol: Protocol, target_fpir: float = DEFAULT_TARGET_FPIR) -> dict:
    """The rule for the kiosk, from ``protocol`` (folds 6-10): the gap (``choose_gap``) and the lowest
    threshold with at most ``target_fpir`` of the non-mated probes accepted, plus the impostor statistics.
    Returns the calibration file's content (sealed with its SHA-256)."""
    from kiosk.rules.decision import THRESHOLD_RANGE  # noqa: PLC0415
    scores = score_ours(engine, protocol, "siamese (calibration)")
    gap, table = choose_gap(scores)
    o = outcome(scores, gap)
    # rounded up to 6 decimals, never down: a lower threshold could accept one more non-mated probe
    threshold = float(np.clip(np.ceil(o.threshold_for_fpir(target_fpir) * 1e6) / 1e6, *THRESHOLD_RANGE))
    fpir, dir_ = o.rates(threshold)
    tail, comparisons = impostor_tail(scores)
    weight, bias = head_parameters(engine)
    body = {
        "format": CALIBRATION_FORMAT,
        "rule": {"threshold": threshold, "gap": gap, "score": "P(same), fused over frames by the mean"},
        "model_id": engine.model_id,
        "head": {"weight": weight, "bias": bias},
        "calibration": dict(protocol.describe(), target_fpir=target_fpir, fpir=fpir, dir=dir_,
                            rank1=float(np.mean(o.mated_correct)), missed_faces=scores.missed_faces,
                            unreadable=scores.unreadable, gaps_tried=table,
                            choice="gap: best mean of DIR at FPIR 1e-2 and 1e-3 (ties: smaller); threshold: the "
                                   "lowest with FPIR <= target on these non-mated probes"),
        "impostor": {"thresholds": [float(t) for t in IMPOSTOR_GRID], "tail": [float(v) for v in tail],
                     "comparisons": comparisons,
                     "what": "fraction of single comparisons (non-mated probe photo vs one gallery photo of "
                             "another person) scoring >= threshold, folds 6-10"},
    }
    assert GAP_RANGE[0] <= gap <= GAP_RANGE[1]
    return seal_calibration(body)


def predicted_vs_measured(calibration: IdentifyCalibration, scores: Scores, thresholds: list[float]) -> list[dict]:
    """The stored impostor model's FPIR for this gallery's size against the FPIR measured here, with the
    calibrated gap and without a gap."""
    size = scores.non_mated.shape[1]
    rows = []
    for t in thresholds:
        measured_gap = outcome(scores, calibration.rule.gap).rates(t)[0]
        measured_plain = outcome(scores, 0.0).rates(t)[0]
        rows.append({"threshold": t, "gallery": size,
                     "predicted_fpir": expected_fpir(calibration.comparison_far(t), size),
                     "measured_fpir_with_gap": measured_gap, "measured_fpir_without_gap": measured_plain})
    return rows
