"""The site rules (kiosk.rules.site, kiosk.rules.decision's insider check): pure numbers, no model. The figures on real
sites are in tests/test_site_eval.py and the model card."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pytest

from kiosk.errors import WeightsError
from kiosk.rules.decision import (
    REASON_CLOSER,
    REASON_MATCH,
    REASON_NO_MATCH,
    SEE_FRONT_DESK,
    FusionParams,
    VerificationSession,
    decide,
    insider_ok,
    logit,
)
from kiosk.rules.identification import GalleryIndex, euclidean_head_scorer, seal_calibration
from kiosk.rules.site import SITE_FORMAT, SiteCalibration, SiteRule, SiteRuleFile, measure_site

W, B = -10.0, 6.0  # P(same) = sigmoid(6 - 10 d)


def p_same(d):
    return 1 / (1 + np.exp(-(B + W * np.asarray(d, np.float64))))


def gallery_of(points: dict[str, list[list[float]]]) -> GalleryIndex:
    g = GalleryIndex(euclidean_head_scorer(W, B))
    g.replace_all({k: np.asarray(v, np.float32) for k, v in points.items()})
    return g


def test_site_threshold_is_the_fitted_tail_of_the_pair_scores():
    rng = np.random.default_rng(1)
    people = {f"E{i}": [list(rng.normal(size=4) * 0.3)] for i in range(12)}
    site = measure_site(gallery_of(people), SiteRule(target_far=0.01, min_people=5))
    x = np.array([v[0] for v in people.values()])
    d = np.linalg.norm(x[:, None] - x[None], axis=2)[np.triu_indices(12, 1)]
    z = np.r_[logit(p_same(d)), logit(p_same(d))]  # each photo against each other person: every pair twice
    expected = 1 / (1 + math.exp(-(z.mean() + NormalDist().inv_cdf(0.99) * z.std(ddof=1))))
    assert site.fitted and site.people == 12 and site.comparisons == 132
    assert site.threshold == pytest.approx(expected, rel=1e-5)
    assert site.mean_logit == pytest.approx(z.mean(), rel=1e-5)
    # the most alike pair is named
    i, j = np.unravel_index(np.argmin(np.where(np.eye(12, dtype=bool), 9, np.linalg.norm(x[:, None] - x[None], axis=2))),
                            (12, 12))
    assert set(site.closest[:2]) == {f"E{i}", f"E{j}"}
    # what a threshold alone would let in: the fraction of pairs above it (to one histogram bin)
    for t in (0.2, 0.5, site.threshold):
        assert abs(site.colleagues_above(t) - np.mean(p_same(d) >= t)) <= np.mean(np.abs(p_same(d) - t) < 0.002) + 1e-9
    # the stricter of the two is in force
    assert site.in_force(0.1) == site.threshold and site.in_force(0.999) == 0.999


def test_a_person_counts_with_their_best_photo():
    # E0 has a second photo very close to E1: that pair's score is the best over both photos
    site = measure_site(gallery_of({"E0": [[0, 0], [1.0, 0.05]], "E1": [[1.0, 0]], "E2": [[0, 3]], "E3": [[3, 0]],
                                    "E4": [[3, 3]]}), SiteRule(min_people=5))
    assert site.comparisons == 2 * 4 + 4 * 4  # E0's two photos against 4 people, the others' against 4
    assert site.closest[:2] == ("E0", "E1") and site.closest[2] == pytest.approx(float(p_same(0.05)), rel=1e-5)


def test_too_few_people_fall_back_and_say_so():
    g = gallery_of({"E0": [[0, 0]], "E1": [[1, 0]], "E2": [[0, 1]]})
    site = measure_site(g, SiteRule(min_people=5, fallback_threshold=0.93))
    assert not site.fitted and site.threshold == 0.93 and site.comparisons == 6
    assert "fewer than 5" in site.describe() and "0.930" in site.describe()
    assert site.in_force(0.6) == 0.93
    # no rule for this model: no site threshold at all until enough people
    site = measure_site(g, SiteRule(min_people=5))
    assert site.threshold is None and site.in_force(0.6) == 0.6
    assert measure_site(gallery_of({}), SiteRule()).people == 0


def test_a_crowded_site_gets_a_stricter_threshold_than_a_spread_one():
    rng = np.random.default_rng(2)
    spread = measure_site(gallery_of({f"E{i}": [list(rng.normal(size=8) * 0.5)] for i in range(20)}))
    crowded = measure_site(gallery_of({f"E{i}": [list(rng.normal(size=8) * 0.12)] for i in range(20)}))
    assert crowded.threshold > spread.threshold
    assert crowded.colleagues_above(0.5) > spread.colleagues_above(0.5)


def test_the_insider_rule():
    assert insider_ok(0.95, None, 0.5)
    assert insider_ok(0.95, 0.80, 0.5)
    assert not insider_ok(0.95, 0.96, 0.0)
    assert not insider_ok(0.95, 0.94, 0.5)  # logit(0.95) - logit(0.94) = 0.19 < 0.5
    d = decide("E1", [0.95, 0.96], 0.6, rival=("E7", 0.97), margin=0.0)
    assert not d.accepted and d.reason == REASON_CLOSER and d.message == SEE_FRONT_DESK
    assert d.detail.startswith("closer to E7 (P 0.970 against 0.955")
    ok = decide("E1", [0.95, 0.96], 0.6, rival=("E7", 0.5), margin=0.3)
    assert ok.accepted and ok.reason == REASON_MATCH and ok.detail.startswith("next best E7")
    # the threshold still applies; liveness comes first
    assert decide("E1", [0.5], 0.6, rival=("E7", 0.1)).reason == REASON_NO_MATCH
    assert decide("E1", [0.95], 0.6, liveness=0.1, liveness_threshold=0.5, rival=("E7", 0.99)).attack_suspected
    # judged again at another threshold, the rival stays
    assert d.with_threshold(0.5).reason == REASON_CLOSER


def test_the_session_fuses_the_others_like_the_claimed_one():
    s = VerificationSession("E1", 0.6, FusionParams(frames=3), 0.0, others=("E2", "E3"), margin=0.0)
    with pytest.raises(ValueError, match="a score for each of the 2"):
        s.add_score(0.9, 0.1)
    s.add_score(0.90, 0.1, others=np.array([0.99, 0.2]))
    s.add_score(0.90, 0.2, others=np.array([0.70, 0.2]))
    d = s.add_score(0.90, 0.3, others=np.array([0.70, 0.95]))
    # E2 averages 0.797, E3 0.45: E1 (0.9) is the best, accepted, E2 named as next best
    assert d.accepted and d.rival_id == "E2" and d.rival_score == pytest.approx((0.99 + 0.7 + 0.7) / 3)
    s = VerificationSession("E1", 0.6, FusionParams(frames=2), 0.0, others=("E2",))
    s.add_score(0.90, 0.1, others=np.array([0.95]))
    d = s.add_score(0.90, 0.2, others=np.array([0.92]))
    assert not d.accepted and d.reason == REASON_CLOSER and d.rival_id == "E2"


def test_the_site_rule_file_is_checked(tmp_path):
    body = {"format": SITE_FORMAT, "rule": SiteRule(0.01, 5, 0.3, 0.9).to_dict(), "model_id": "m",
            "head": {"weight": W, "bias": B}}
    path = tmp_path / "site.json"
    path.write_text(json.dumps(seal_calibration(body)))
    assert SiteRuleFile.load(path).rule == SiteRule(0.01, 5, 0.3, 0.9)
    forged = dict(seal_calibration(body))
    forged["rule"] = dict(forged["rule"], insider_margin=0.0)
    path.write_text(json.dumps(forged))
    with pytest.raises(WeightsError, match="integrity"):
        SiteRuleFile.load(path)
    path.write_text(json.dumps(seal_calibration(dict(body, rule=dict(body["rule"], target_far=0.9)))))
    with pytest.raises(WeightsError, match="out of range"):
        SiteRuleFile.load(path)
    with pytest.raises(WeightsError, match="no site rule"):
        SiteRuleFile.load(tmp_path / "missing.json")


def test_a_calibration_of_nobody_is_not_fitted():
    site = SiteCalibration(0, 0, None, False)
    assert site.colleagues_above(0.5) is None and site.in_force(0.62) == 0.62


def test_each_employee_gets_their_own_threshold_from_their_colleagues():
    """E0 sits among the others (everyone resembles them); E9 stands apart: E0's own threshold is stricter."""
    rng = np.random.default_rng(3)
    points = {f"E{i}": [list(rng.normal(size=6) * 0.25)] for i in range(1, 9)}
    points["E0"] = [[0.0] * 6]
    points["E9"] = [[2.0] * 6]
    site = measure_site(gallery_of(points), SiteRule(min_people=5, person_z=2.0))
    x = np.array([points[k][0] for k in sorted(points)])
    d0 = np.linalg.norm(x[1:] - x[0], axis=1)  # E0 against the others
    z0 = logit(p_same(d0))
    assert site.person_mean["E0"] == pytest.approx(z0.mean(), rel=1e-5)
    assert site.person_thresholds["E0"] == pytest.approx(float(1 / (1 + np.exp(-(z0.mean() + 2.0 * z0.std(ddof=1))))),
                                                         rel=1e-5)
    assert site.threshold_for("E0", 0.5) > site.threshold_for("E9", 0.5) >= site.in_force(0.5)
    assert site.threshold_for("nobody", 0.5) == site.in_force(0.5)
    # without the rule, or below the minimum, nobody has their own threshold
    assert measure_site(gallery_of(points), SiteRule(min_people=5)).threshold_for("E0", 0.5) == site.in_force(0.5)
