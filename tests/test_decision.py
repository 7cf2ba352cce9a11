"""Decision fusion: frames within the window, max over references, mean/median, threshold, reasons."""

from __future__ import annotations

import numpy as np
import pytest

from kiosk.rules.decision import (
    REASON_MATCH,
    REASON_NO_FACE,
    REASON_NO_MATCH,
    REASON_UNKNOWN_ID,
    FusionParams,
    VerificationSession,
    decide,
    estimate_rates,
    frame_score,
    fuse,
    unknown_id,
)


def test_frame_score_is_the_best_match_over_all_references():
    refs = np.array([[0.0], [1.0], [2.0]])

    def similarity(a, b):  # closer = more similar
        return 1.0 / (1.0 + np.abs(np.atleast_2d(b)[:, 0] - np.asarray(a).reshape(-1)[0]))

    assert frame_score(similarity, np.array([2.0]), refs) == pytest.approx(1.0)
    assert frame_score(similarity, np.array([5.0]), refs) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        frame_score(similarity, np.array([1.0]), np.zeros((0, 1)))


def test_session_decides_on_the_mean_of_n_frames():
    session = VerificationSession("E1", threshold=0.6, params=FusionParams(frames=3, window_s=4.0), started_at=10.0)
    assert session.add_score(0.9, 9.5) is None and session.scores == []  # captured before the ID was entered
    assert session.add_score(0.9, 10.1) is None
    assert session.add_score(0.2, 10.2) is None
    decision = session.add_score(0.8, 10.3)
    assert decision.accepted and decision.verdict == "ACCEPT" and decision.reason == REASON_MATCH
    assert decision.score == pytest.approx((0.9 + 0.2 + 0.8) / 3) and decision.frame_scores == (0.9, 0.2, 0.8)
    assert session.add_score(0.0, 10.4) is decision  # decided once


def test_median_resists_one_bad_frame_where_mean_does_not():
    scores = [0.9, 0.1, 0.8]
    assert decide("E", scores, 0.7, "mean").verdict == "REJECT"
    assert decide("E", scores, 0.7, "median").verdict == "ACCEPT"
    assert fuse(scores, "median") == 0.8


def test_timeout_decides_on_frames_so_far_or_no_usable_face():
    empty = VerificationSession("E1", 0.5, FusionParams(frames=3, window_s=4.0), started_at=0.0)
    assert empty.expire(3.9) is None
    decision = empty.expire(4.0)
    assert (decision.verdict, decision.reason, decision.score) == ("REJECT", REASON_NO_FACE, None)
    partial = VerificationSession("E1", 0.5, FusionParams(frames=3, window_s=4.0), started_at=0.0)
    partial.add_score(0.3, 1.0)
    assert partial.add_score(0.9, 4.5) is None  # after the deadline: ignored
    late = partial.expire(4.5)
    assert (late.verdict, late.reason, late.frame_scores) == ("REJECT", REASON_NO_MATCH, (0.3,))


def test_moving_the_threshold_changes_the_verdict():
    decision = decide("E1", [0.62, 0.66, 0.64], threshold=0.5)
    assert decision.accepted
    stricter = decision.with_threshold(0.7)
    assert not stricter.accepted and stricter.reason == REASON_NO_MATCH and stricter.score == decision.score
    assert stricter.with_threshold(0.64).accepted  # at the threshold: accepted


def test_the_name_stays_only_on_accepted_decisions():
    from dataclasses import replace

    named = replace(decide("E1", [0.8], threshold=0.5), name="Ann")
    assert named.with_threshold(0.6).name == "Ann" and named.with_threshold(0.9).name is None


def test_unknown_id_is_a_reject_with_its_reason():
    decision = unknown_id("NOPE", 0.5)
    assert (decision.verdict, decision.reason, decision.score) == ("REJECT", REASON_UNKNOWN_ID, None)


def test_invalid_fusion_parameters_are_refused():
    with pytest.raises(ValueError):
        FusionParams(frames=0)
    with pytest.raises(ValueError):
        FusionParams(aggregate="max")


def test_estimate_rates_interpolates_the_roc_points():
    roc = [{"threshold": 0.2, "far": 0.30, "frr": 0.01},
           {"threshold": 0.6, "far": 0.10, "frr": 0.05},
           {"threshold": 0.8, "far": 0.02, "frr": 0.20}]
    assert estimate_rates(roc, 0.6) == pytest.approx((0.10, 0.05))
    assert estimate_rates(roc, 0.7) == pytest.approx((0.06, 0.125))
    assert estimate_rates(roc, 0.0) == pytest.approx((0.30, 0.01))   # clamped at the ends
    assert estimate_rates(roc, 1.0) == pytest.approx((0.02, 0.20))
    assert estimate_rates(None, 0.5) is None and estimate_rates([], 0.5) is None
    assert estimate_rates([{"threshold": "x"}], 0.5) is None


def _session_scores(engine, refs, photos, threshold) -> VerificationSession:
    from kiosk.io.imageio import read_image

    session = VerificationSession("E", threshold, FusionParams(frames=3), started_at=0.0)
    for path in photos:
        analysis = engine.analyse(read_image(path))
        if analysis.quality.ok:
            session.add_score(frame_score(engine.similarity, engine.embed_crops(analysis.crop[None])[0], refs), 1.0)
        if session.done:
            break
    return session


@pytest.mark.slow
def test_real_faces_same_person_accepted_other_person_rejected(trained_engine, lfw_photos):
    """With the trained model: three Bush references; other Bush photos vs Powell photos."""
    bush, powell = lfw_photos("George_W_Bush"), lfw_photos("Colin_Powell")
    refs = np.stack([trained_engine.embed_file(p) for p in bush[:3]])
    threshold = trained_engine.default_threshold
    same = _session_scores(trained_engine, refs, bush[10:30], threshold)
    other = _session_scores(trained_engine, refs, powell[:20], threshold)
    assert same.done and other.done
    assert same.decision.verdict == "ACCEPT", same.decision
    assert other.decision.verdict == "REJECT" and other.decision.reason == REASON_NO_MATCH, other.decision
    assert same.decision.score > other.decision.score
