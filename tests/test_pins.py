"""The shipped model files are pinned (issue #25, item 4): an edited file whose own digest was recomputed is
refused when it sits where the shipped one does; the same file elsewhere is checked as before."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from kiosk.errors import WeightsError
from kiosk.io import pins
from kiosk.paths import WEIGHTS_DIR
from kiosk.rules.identification import IdentifyCalibration, seal_calibration


def test_every_pinned_digest_is_the_shipped_file_s():
    for name, pin in pins.PINNED.items():
        digest = hashlib.sha256((WEIGHTS_DIR / name).read_bytes()).hexdigest()
        assert digest == pin, f"weights/{name} changed: put {digest} in kiosk/io/pins.py (PINNED) if it is meant to"


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A copy of the shipped folder, standing in for it."""
    folder = tmp_path / "weights"
    folder.mkdir()
    for name in pins.PINNED:
        shutil.copy2(WEIGHTS_DIR / name, folder / name)
    monkeypatch.setattr(pins, "WEIGHTS_DIR", folder)
    return folder


def test_an_edited_rule_with_a_recomputed_digest_is_refused_in_the_shipped_folder_only(shipped, tmp_path):
    assert IdentifyCalibration.load(shipped / "identify.json").rule.threshold > 0.5  # the untouched copy loads
    body = json.loads((shipped / "identify.json").read_text())
    body.pop("sha256")
    body["rule"].update(threshold=0.05, gap=0.0)  # a stranger's walk-up would be let in
    forged = json.dumps(seal_calibration(body), indent=1)
    (shipped / "identify.json").write_text(forged)
    with pytest.raises(WeightsError, match="not the file shipped with this release"):
        IdentifyCalibration.load(shipped / "identify.json")
    elsewhere = tmp_path / "mine.json"  # a calibration of one's own, given explicitly: its own seal is checked
    elsewhere.write_text(forged)
    assert IdentifyCalibration.load(elsewhere).rule.threshold == 0.05
    assert pins.pinned_digest(elsewhere) is None


@pytest.mark.slow  # torch
def test_edited_face_weights_are_refused_and_a_character_model_is_not_a_face_model(shipped, capsys):
    from kiosk import cli
    from kiosk.vision.engine import FaceEngine

    data = bytearray((shipped / "face_siamese.pt").read_bytes())
    data[-100] ^= 0xFF
    (shipped / "face_siamese.pt").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="not the file shipped"):
        FaceEngine(shipped / "face_siamese.pt", liveness_weights=None)
    photo = str(WEIGHTS_DIR.parent / "assets" / "icon.png")
    assert cli.main(["--weights", str(WEIGHTS_DIR / "characters_siamese.pt"), "verify", photo, photo]) == 3
    assert "not a face model" in capsys.readouterr().err
