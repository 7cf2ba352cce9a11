"""The liveness detector: its texture features, its file, and what it does on real NUAA frames of people it
was not trained on (split by person, never by frame)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DATASETS

from kiosk.errors import DatasetError, WeightsError
from kiosk.paths import WEIGHTS_DIR
from kiosk.vision.liveness import FEATURE_DIM, LivenessModel, chroma_histogram, lbp_histogram

NUAA = DATASETS / "nuaa"
needs_nuaa = pytest.mark.skipif(not (NUAA / "labels.csv").is_file(), reason=f"NUAA frames not found at {NUAA}")


def brute_force_lbp(image: np.ndarray) -> np.ndarray:
    """Textbook uniform LBP (P=8, R=1), pixel by pixel."""
    histogram = np.zeros(59)
    uniform = [c for c in range(256) if sum(((c >> i) & 1) != ((c >> ((i + 1) % 8)) & 1) for i in range(8)) <= 2]
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]
    for y in range(1, image.shape[0] - 1):
        for x in range(1, image.shape[1] - 1):
            code = sum(int(image[y + dy, x + dx] >= image[y, x]) << bit for bit, (dy, dx) in enumerate(offsets))
            histogram[uniform.index(code) if code in uniform else 58] += 1
    return histogram / histogram.sum()


def test_lbp_matches_the_textbook_definition():
    image = np.random.default_rng(0).integers(0, 256, (12, 15), dtype=np.uint8)
    assert np.allclose(lbp_histogram(image), brute_force_lbp(image), atol=1e-6)
    flat = np.full((10, 10), 77, np.uint8)  # every neighbour equals the centre: code 255, a uniform pattern
    assert lbp_histogram(flat).max() == 1.0 and lbp_histogram(flat)[58] == 0.0


def test_chroma_histograms_count_every_pixel_in_its_bin():
    channel = np.array([[0, 15, 16, 255], [128, 128, 200, 31]], np.uint8)
    histogram = chroma_histogram(channel, 256)
    assert histogram.shape == (16,) and histogram.sum() == pytest.approx(1.0)
    assert histogram[0] == pytest.approx(2 / 8) and histogram[1] == pytest.approx(2 / 8)
    assert histogram[8] == pytest.approx(2 / 8) and histogram[12] == histogram[15] == pytest.approx(1 / 8)
    hue = np.array([[0, 179]], np.uint8)  # OpenCV's hue runs 0-179: the top value lands in the last bin
    assert chroma_histogram(hue, 180)[[0, 15]].tolist() == [0.5, 0.5]


def test_the_liveness_file_is_checked(tmp_path):
    model = LivenessModel.load(WEIGHTS_DIR / "liveness.npz")
    assert 0.01 <= model.threshold <= 0.99 and model.weights.shape == (FEATURE_DIM,)
    copy = tmp_path / "copy.npz"
    model.save(copy)
    assert LivenessModel.load(copy).threshold == model.threshold
    import dataclasses
    dataclasses.replace(model, threshold=0.001).save(tmp_path / "low.npz")  # a digest that matches, a bad value
    with pytest.raises(WeightsError, match="out of range"):
        LivenessModel.load(tmp_path / "low.npz")
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "flipped.npz").write_bytes(bytes(data))
    with pytest.raises(WeightsError):
        LivenessModel.load(tmp_path / "flipped.npz")
    with pytest.raises(WeightsError, match="no liveness model"):
        LivenessModel.load(tmp_path / "absent.npz")


def test_label_files_are_read_strictly(tmp_path):
    from kiosk.lab.training.liveness import read_labels
    (tmp_path / "a.csv").write_text("path,label\nx.jpg,2\n")
    with pytest.raises(DatasetError, match="line 2"):
        read_labels(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("path,label\n../../etc/passwd,1\n")
    with pytest.raises(DatasetError, match="leaves the CSV's folder"):
        read_labels(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("path,label,attempt\nlive/1.jpg,1,A\nlive/2.jpg,0,\n")
    rows = read_labels(tmp_path / "c.csv")
    assert [(r[1], r[2], r[3]) for r in rows] == [(True, "live", "A"), (False, "live", "")]


@needs_nuaa
@pytest.mark.slow
def test_people_never_seen_are_told_apart_live_from_printed(tmp_path):
    """Trained on 3 NUAA people, judged on 2 others at the threshold fitted on the training people's
    held-out scores: a real leave-people-out check, small enough for CI."""
    from kiosk.lab.training.liveness import fit, leave_people_out, measure, model_from, rates, read_labels
    rows = read_labels(NUAA / "labels.csv")
    # Every 2nd frame of 3 people to train, every frame of 2 others to judge (neighbouring frames are alike).
    train = measure([r for r in rows if r[2] in ("0001", "0004", "0006")][::2])
    test = measure([r for r in rows if r[2] in ("0003", "0009")])
    assert train.live.any() and (~train.live).any() and test.live.any() and (~test.live).any()
    threshold = leave_people_out(train, 0.1)["threshold"]
    model = model_from(fit(train.features[train.found], train.live[train.found], 0.1), threshold)
    result = rates(model.probability(test.features[test.found]), test.live[test.found], threshold)
    assert result["acer"] < 0.10, result


@needs_nuaa
@pytest.mark.slow
def test_evaluate_liveness_command_reports_frames_and_attempts(tmp_path, capsys):
    """`kiosk evaluate liveness`: the issue's JSON keys, on the console too; with an attempt column, the
    figures per attempt (here: each NUAA recording is an attempt). The shipped model saw these people, so
    the figures are training-set figures; the test checks the command, and that it is not blind."""
    import json
    import shutil

    from kiosk.cli import main
    from kiosk.lab.training.liveness import read_labels
    rows = read_labels(NUAA / "labels.csv")
    lines = ["path,label,attempt"]
    for path, live, person, _ in rows[::6]:
        recording = "_".join(path.stem.split("_")[:4])  # subject, glasses, position, session
        target = tmp_path / person / path.name
        target.parent.mkdir(exist_ok=True)
        shutil.copy(path, target)  # a temporary copy for the test only
        lines.append(f"{person}/{path.name},{int(live)},{recording}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    assert main(["evaluate", "liveness", "--csv", str(tmp_path / "labels.csv"), "--json", str(tmp_path / "o.json")]) == 0
    result = json.loads((tmp_path / "o.json").read_text())
    assert {"apcer", "bpcer", "acer", "auc", "threshold", "images", "missed_faces"} <= set(result)
    assert result["images"] == len(lines) - 1 and result["acer"] < 0.1 and result["auc"] > 0.95
    assert result["attempts"]["count"] > 10
    out = capsys.readouterr().out
    assert f"acer          {result['acer']:.4f}" in out and "attempts" in out
