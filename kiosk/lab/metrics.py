"""Verification metrics: ROC, AUC, EER, TAR at fixed FAR, and LFW-style fold accuracy."""

from __future__ import annotations

import numpy as np


def roc_points(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds descending, FAR, TAR): accept when score >= threshold. Starts at (inf, 0, 0)."""
    scores, same = np.asarray(scores, float), np.asarray(same, bool)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], same[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[distinct]
    fp = np.cumsum(~y)[distinct]
    n_pos, n_neg = max(1, y.sum()), max(1, (~y).sum())
    return np.r_[np.inf, s[distinct]], np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def auc(scores, same) -> float:
    _, far, tar = roc_points(scores, same)
    return float(np.trapezoid(tar, far))


def eer(scores, same) -> float:
    """Equal error rate: where the false-accept rate equals the false-reject rate."""
    _, far, tar = roc_points(scores, same)
    frr = 1.0 - tar
    i = int(np.argmin(np.abs(far - frr)))
    return float((far[i] + frr[i]) / 2.0)


def tar_at_far(scores, same, max_far: float) -> float:
    """Best true-accept rate with the false-accept rate at most max_far."""
    _, far, tar = roc_points(scores, same)
    ok = far <= max_far + 1e-12
    return float(tar[ok].max()) if ok.any() else 0.0


def threshold_for_far(scores, same, max_far: float) -> float:
    """Lowest threshold whose false-accept rate stays at most max_far."""
    thresholds, far, _ = roc_points(scores, same)
    ok = np.nonzero(far <= max_far + 1e-12)[0]
    return float(thresholds[ok[-1]])


def best_accuracy_threshold(scores, same) -> float:
    """The threshold (midway between neighbouring scores) that maximises accuracy."""
    scores, same = np.asarray(scores, float), np.asarray(same, bool)
    s = np.unique(scores)
    candidates = np.r_[s[0] - 1e-6, (s[1:] + s[:-1]) / 2.0, s[-1] + 1e-6]
    accuracy = [((scores >= t) == same).mean() for t in candidates]
    return float(candidates[int(np.argmax(accuracy))])


def rates_at(scores, same, threshold: float) -> tuple[float, float]:
    """(false-accept rate, false-reject rate) at a threshold."""
    scores, same = np.asarray(scores, float), np.asarray(same, bool)
    accept = scores >= threshold
    return float(accept[~same].mean()) if (~same).any() else 0.0, float((~accept[same]).mean()) if same.any() else 0.0


def fold_accuracy(scores, same, folds) -> tuple[float, float, list[float]]:
    """LFW protocol: each fold's threshold is chosen on the OTHER evaluated folds. (mean, std, per-fold)."""
    scores, same, folds = np.asarray(scores, float), np.asarray(same, bool), np.asarray(folds)
    unique = np.unique(folds)
    if len(unique) < 2:  # a single fold: no other fold to tune on, tune on itself (reported as such)
        t = best_accuracy_threshold(scores, same)
        acc = float(((scores >= t) == same).mean())
        return acc, 0.0, [acc]
    per_fold = []
    for fold in unique:
        test = folds == fold
        t = best_accuracy_threshold(scores[~test], same[~test])
        per_fold.append(float(((scores[test] >= t) == same[test]).mean()))
    return float(np.mean(per_fold)), float(np.std(per_fold)), per_fold


def summarise(scores, same, folds=None) -> dict:
    """The metrics every evaluation reports (keys as in the JSON output)."""
    scores, same = np.asarray(scores, float), np.asarray(same, bool)
    folds = np.zeros(len(scores), int) if folds is None else np.asarray(folds)
    mean, std, per_fold = fold_accuracy(scores, same, folds)
    return {
        "accuracy": mean,
        "accuracy_std": std,
        "fold_accuracies": per_fold,
        "auc": auc(scores, same),
        "eer": eer(scores, same),
        "tar_at_far_1e-2": tar_at_far(scores, same, 1e-2),
        "tar_at_far_1e-3": tar_at_far(scores, same, 1e-3),
        "threshold": best_accuracy_threshold(scores, same),
        "pairs": int(len(scores)),
    }


def roc_table(scores, same, steps: int = 101) -> list[dict]:
    """FAR/FRR at evenly spaced thresholds on [0, 1] (for P(same) scores), for the admin screen."""
    table = []
    for t in np.linspace(0.0, 1.0, steps):
        far, frr = rates_at(scores, same, t)
        table.append({"threshold": round(float(t), 4), "far": round(far, 5), "frr": round(frr, 5)})
    return table
