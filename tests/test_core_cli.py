"""The `kiosk` command line: verdicts and exit codes (0 accept, 1 reject, 2 bad input, 3 no weights)."""

import json
import subprocess
import sys

import pytest
from helpers import OMNIGLOT, lfw_photo, needs_lfw, needs_weights

pytestmark = pytest.mark.slow  # a `kiosk` subprocess per call


def kiosk(*args):
    return subprocess.run([sys.executable, "-m", "kiosk.cli", *map(str, args)], capture_output=True, text=True, timeout=120)


@needs_lfw
@needs_weights
def test_verify_accepts_same_person_and_rejects_another():
    same = kiosk("verify", lfw_photo("Colin_Powell", 1), lfw_photo("Colin_Powell", 2), "--json")
    other = kiosk("verify", lfw_photo("Colin_Powell", 1), lfw_photo("Serena_Williams", 1), "--json")
    p_same, p_other = json.loads(same.stdout)["probability"], json.loads(other.stdout)["probability"]
    assert p_same > p_other
    middle = (p_same + p_other) / 2
    accepted = kiosk("verify", lfw_photo("Colin_Powell", 1), lfw_photo("Colin_Powell", 2), "--threshold", middle)
    rejected = kiosk("verify", lfw_photo("Colin_Powell", 1), lfw_photo("Serena_Williams", 1), "--threshold", middle)
    assert accepted.returncode == 0 and "ACCEPT" in accepted.stdout
    assert rejected.returncode == 1 and "REJECT" in rejected.stdout


@needs_lfw
@needs_weights
def test_verify_bad_input_exits_2_with_one_line_reason(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(lfw_photo("Colin_Powell", 1).read_bytes()[:3000])
    result = kiosk("verify", broken, lfw_photo("Colin_Powell", 2))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "truncated" in result.stderr
    if OMNIGLOT.is_dir():
        import cv2
        character = next((OMNIGLOT / "images_background" / "Latin").rglob("*.png"))
        big = tmp_path / "character.png"
        cv2.imwrite(str(big), cv2.resize(cv2.imread(str(character)), (320, 320)))
        result = kiosk("verify", big, lfw_photo("Colin_Powell", 2))
        assert result.returncode == 2 and "no face" in result.stderr


@needs_lfw
def test_missing_weights_are_reported_not_replaced_by_random_ones(tmp_path):
    result = kiosk("--weights", tmp_path / "none.pt", "verify", lfw_photo("Colin_Powell", 1), lfw_photo("Colin_Powell", 2))
    assert result.returncode == 3
    assert "no trained weights" in result.stderr and "Traceback" not in result.stderr


@needs_lfw
@needs_weights
def test_evaluate_pairs_csv_writes_the_metrics(tmp_path):
    rows = ["left,right,same"]
    for person, other in (("Colin_Powell", "Tony_Blair"), ("Tony_Blair", "Serena_Williams"), ("Serena_Williams", "Colin_Powell")):
        rows.append(f"{lfw_photo(person, 1)},{lfw_photo(person, 3)},1")
        rows.append(f"{lfw_photo(person, 2)},{lfw_photo(other, 2)},0")
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    out = tmp_path / "metrics.json"
    result = kiosk("evaluate", "pairs", "--csv", csv_file, "--json", out, "--allow-outside")  # absolute LFW paths
    assert result.returncode == 0, result.stderr
    metrics = json.loads(out.read_text())
    for key in ("accuracy", "accuracy_std", "auc", "eer", "tar_at_far_1e-2", "tar_at_far_1e-3", "threshold", "pairs", "missed_faces"):
        assert key in metrics
    assert metrics["pairs"] == 6 and metrics["auc"] > 0.5
