"""The open-set (1:N) protocol on LFW and its metrics: rank-1, FPIR, DIR at FPIR, the calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kiosk import cli
from kiosk.lab.open_set import (
    Scores,
    build_protocol,
    choose_gap,
    impostor_tail,
    measure,
    outcome,
    predicted_vs_measured,
)
from kiosk.rules.identification import IdentifyCalibration


def write_lfw(root, people: dict[str, int], folds: list[list[tuple]]):
    """A tiny LFW: ``people`` {name: photo count}; ``folds`` of pairs (name, a, b) or (n1, a, n2, b)."""
    for name, count in people.items():
        (root / name).mkdir(parents=True)
        for i in range(count, 0, -1):  # created in reverse order: the protocol must sort by name
            (root / name / f"{name}_{i:04d}.jpg").write_bytes(b"x")
    per_half = len(folds[0]) // 2
    lines = [f"{len(folds)}\t{per_half}"] + ["\t".join(str(v) for v in pair) for fold in folds for pair in fold]
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root / "pairs.txt"


def test_protocol_gallery_first_photo_mated_rest_non_mated_single_and_other_folds_excluded(tmp_path):
    pairs = write_lfw(tmp_path, {"Ann": 3, "Bob": 2, "Cy": 1, "Dee": 1, "Eve": 2, "Shared": 2},
                      [[("Ann", 1, 2), ("Cy", 1, "Shared", 1)],
                       [("Eve", 1, 2), ("Dee", 1, "Shared", 2)],
                       [("Bob", 1, 2), ("Ann", 1, "Dee", 1)]])
    p = build_protocol(tmp_path, pairs, [1, 3])
    names = lambda items: [(person, path.name) for person, path in items]  # noqa: E731
    assert names(p.gallery) == [("Ann", "Ann_0001.jpg"), ("Bob", "Bob_0001.jpg")]
    assert names(p.mated) == [("Ann", "Ann_0002.jpg"), ("Ann", "Ann_0003.jpg"), ("Bob", "Bob_0002.jpg")]
    assert names(p.non_mated) == [("Cy", "Cy_0001.jpg")]
    assert p.excluded == ["Dee", "Shared"]  # named in fold 2 too: on neither side
    assert p.describe() == {"folds": [1, 3], "gallery": 2, "mated_probes": 3, "non_mated_probes": 1, "probes": 4,
                            "excluded_people": 2}
    assert len(p.paths) == 6


def scores(mated, truth, non_mated):
    return Scores(np.array(mated, float), np.array(truth), np.array(non_mated, float))


def test_rank1_dir_and_fpir_follow_their_definitions():
    s = scores([[0.9, 0.2], [0.3, 0.8], [0.7, 0.6], [0.4, 0.5]], [0, 1, 0, 0],
               [[0.85, 0.1], [0.6, 0.55], [0.3, 0.2], [0.2, 0.1]])
    # rank-1: probes 0, 1, 2 right, 3 wrong
    assert measure(s, 0.0)["rank1"] == 0.75
    o = outcome(s, 0.0)
    assert o.rates(0.5) == (0.5, 0.75)           # non-mated 0.85 and 0.6 accepted; mated 0, 1, 2 correct+accepted
    assert o.rates(0.86) == (0.0, 0.25)
    t = o.threshold_for_fpir(0.25)               # at most 1 of 4 non-mated accepted: just above 0.6
    assert 0.6 < t < 0.6001 and o.rates(t) == (0.25, 0.75)
    assert o.threshold_for_fpir(0.0) > 0.85
    gapped = outcome(s, 0.2)                     # the gap refuses 0.6 vs 0.55 and mated 0.7 vs 0.6
    assert gapped.threshold_for_fpir(0.25) == -np.inf  # only one non-mated probe passes the gap at all
    assert gapped.rates(-np.inf) == (0.25, 0.5)
    result = measure(s, 0.2, threshold=0.5)
    assert result["dir_at_fpir_1e-2"] == 0.25 and result["fpir_at_threshold"] == 0.25
    assert result["dir_at_threshold"] == 0.5


def test_a_wrong_rank1_is_never_counted_as_detected_and_identified():
    s = scores([[0.1, 0.99]], [0], [[0.2, 0.1]])
    assert measure(s, 0.0)["dir_at_fpir_1e-2"] == 0.0 and measure(s, 0.0)["rank1"] == 0.0


def test_choose_gap_takes_the_best_mean_dir_and_the_smaller_gap_on_ties():
    s = scores([[0.9, 0.2]] * 10, [0] * 10, [[0.95, 0.94]] * 5 + [[0.1, 0.05]] * 995)
    gap, table = choose_gap(s, (0.0, 0.005, 0.02, 0.3))
    assert [r["dir_at_fpir_1e-2"] for r in table] == [1.0, 1.0, 1.0, 1.0]
    assert [r["dir_at_fpir_1e-3"] for r in table] == [0.0, 0.0, 1.0, 1.0]  # the 5 close non-mated need a gap
    assert gap == 0.02


def test_impostor_tail_counts_single_comparisons():
    s = scores([[0.9]], [0], [[0.1, 0.5], [0.7, 0.3]])
    tail, n = impostor_tail(s, np.array([0.05, 0.4, 0.6, 0.8]))
    assert n == 4 and list(tail) == [1.0, 0.5, 0.25, 0.0]


def test_the_evaluation_refuses_the_folds_the_rule_was_calibrated_on(lfw_dir, capsys):
    assert cli.main(["evaluate", "identify", "--folds", "6"]) == cli.EXIT_BAD_INPUT
    assert "calibrated on folds [6, 7, 8, 9, 10]" in capsys.readouterr().err


@pytest.mark.slow
def test_lfw_protocol_sizes_on_folds_1_to_5(lfw_dir):
    p = build_protocol(lfw_dir, lfw_dir.parent / "pairs.txt", [1, 2, 3, 4, 5])
    assert p.describe() == {"folds": [1, 2, 3, 4, 5], "gallery": 774, "mated_probes": 3287, "non_mated_probes": 1312,
                            "probes": 4599, "excluded_people": 0}
    assert all(path.name.endswith("_0001.jpg") for _, path in p.gallery)


@pytest.mark.slow
def test_evaluate_identify_writes_the_keys_and_the_impostor_model_holds(lfw_dir, tmp_path):
    out = tmp_path / "identify.json"
    assert cli.main(["evaluate", "identify", "--folds", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    for key in ("rank1", "dir_at_fpir_1e-2", "dir_at_fpir_1e-3", "threshold", "gallery", "probes"):
        assert key in result
    assert result["folds"] == [1] and result["gallery"] > 100 and result["probes"] > 300
    assert result["rank1"] >= 0.9 and result["dir_at_fpir_1e-2"] >= 0.5  # the full bar is measured on folds 1-5
    assert result["threshold"] == IdentifyCalibration.load().rule.threshold
    for row in result["impostor_model"]:  # the stored model over-estimates what the gap rule lets through
        assert row["measured_fpir_with_gap"] <= row["measured_fpir_without_gap"]


def test_predicted_vs_measured_uses_this_gallerys_size():
    calibration = IdentifyCalibration.load()
    s = scores([[0.9, 0.2, 0.1]], [0], [[0.2, 0.1, 0.05]] * 10)
    (row,) = predicted_vs_measured(calibration, s, [0.9])
    assert row["gallery"] == 3 and row["measured_fpir_with_gap"] == 0.0
    assert row["predicted_fpir"] == pytest.approx(1 - (1 - calibration.comparison_far(0.9)) ** 3)
