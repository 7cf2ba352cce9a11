"""Verification metrics against hand-checked values."""

import numpy as np
import pytest

from kiosk.lab.metrics import auc, eer, fold_accuracy, rates_at, tar_at_far, threshold_for_far


def test_perfect_and_inverted_separation():
    same = np.array([1, 1, 1, 0, 0, 0], bool)
    assert auc([0.9, 0.8, 0.7, 0.3, 0.2, 0.1], same) == pytest.approx(1.0)
    assert auc([0.1, 0.2, 0.3, 0.7, 0.8, 0.9], same) == pytest.approx(0.0)
    assert eer([0.9, 0.8, 0.7, 0.3, 0.2, 0.1], same) == pytest.approx(0.0)


def test_rates_and_far_threshold():
    scores = np.array([0.95, 0.9, 0.6, 0.4, 0.85, 0.3, 0.2, 0.1])
    same = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    assert rates_at(scores, same, 0.5) == (0.25, 0.25)  # one impostor above, one genuine below
    t = threshold_for_far(scores, same, 0.0)
    assert t == pytest.approx(0.9) and rates_at(scores, same, t)[0] == 0.0
    assert tar_at_far(scores, same, 0.0) == pytest.approx(0.5)
    assert tar_at_far(scores, same, 0.25) == pytest.approx(1.0)  # threshold 0.4: the 0.85 impostor only


def test_fold_accuracy_tunes_on_other_folds():
    rng = np.random.default_rng(0)
    same = np.tile([True, False], 300)
    scores = np.where(same, rng.normal(1, 1, 600), rng.normal(-1, 1, 600))
    folds = np.repeat(np.arange(1, 4), 200)
    mean, std, per_fold = fold_accuracy(scores, same, folds)
    assert len(per_fold) == 3 and 0.78 < mean < 0.9 and std < 0.05  # two unit Gaussians 2 apart: ~84%
