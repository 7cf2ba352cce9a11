"""Shared test set-up: Qt offscreen, per-test data/config/log folders, LFW faces and weights fixtures."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before anything imports Qt

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from kiosk.paths import DEFAULT_WEIGHTS, datasets_dir  # noqa: E402
from kiosk.qt.app import prepare_qt_environment  # noqa: E402

prepare_qt_environment()  # as the app does: Qt must not use opencv-python's bundled plugins

LFW_SUBDIR = Path("lfw") / "lfw-deepfunneled"


@pytest.fixture(autouse=True)
def kiosk_dirs(tmp_path, monkeypatch) -> Path:
    """Each test gets its own data, config and log folders (the face cache, KIOSK_CACHE_DIR, is shared)."""
    for var, name in (("KIOSK_DATA_DIR", "data"), ("KIOSK_CONFIG_DIR", "config"), ("KIOSK_LOG_DIR", "logs")):
        monkeypatch.setenv(var, str(tmp_path / f"kiosk-{name}"))
    return tmp_path


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    root = datasets_dir() / LFW_SUBDIR
    if not root.is_dir():
        pytest.skip(f"LFW faces not found at {root} (set KIOSK_DATASETS to the shared datasets folder)")
    return root


@pytest.fixture(scope="session")
def lfw_photos(lfw_dir):
    """lfw_photos("George_W_Bush") -> that person's photo paths, sorted."""
    def photos(person: str) -> list[Path]:
        files = sorted((lfw_dir / person).glob("*.jpg"))
        if not files:
            pytest.skip(f"{person} not found in {lfw_dir}")
        return files
    return photos


@pytest.fixture(scope="session")
def untrained_weights(tmp_path_factory) -> Path:
    """The pretrained twin encoder with a head we did NOT train: dlib's own rule (same person below a
    Euclidean distance of 0.6) as P(same) = sigmoid(10 * (0.6 - distance)), threshold 0.5. For tests of the
    mechanics; the shipped head is tested separately."""
    import torch

    from kiosk.model import SiameseNet
    from kiosk.preprocess import InputSpec
    from kiosk.weights import save_weights

    model = SiameseNet("dlib_resnet", {}, "euclidean")
    with torch.no_grad():
        model.distance_weights.weight.fill_(-10.0)
        model.distance_weights.bias.fill_(6.0)
    return save_weights(tmp_path_factory.mktemp("weights") / "dlib_rule.pt", model, InputSpec(),
                        {"threshold": 0.5, "note": "dlib's 0.6 distance rule, for tests of the mechanics"}, half=False)


@pytest.fixture(scope="session")
def trained_weights() -> Path:
    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"no trained weights at {DEFAULT_WEIGHTS} (train the model first); "
                    f"real accept/reject cannot be tested without them")
    return DEFAULT_WEIGHTS


@pytest.fixture(scope="session")
def untrained_engine(untrained_weights):
    from kiosk.engine import FaceEngine
    return FaceEngine(untrained_weights)


@pytest.fixture(scope="session")
def trained_engine(trained_weights):
    from kiosk.engine import FaceEngine
    return FaceEngine(trained_weights)


@pytest.fixture(scope="session")
def good_photos(lfw_photos):
    """good_photos("Tony_Blair", 3, skip=0) -> photos that pass the kiosk's quality checks (one clear face)."""
    from kiosk.detection import HaarFaceDetector
    from kiosk.imageio import read_image
    from kiosk.quality import assess_quality

    detector = HaarFaceDetector()
    verdicts: dict[Path, bool] = {}

    def ok(path: Path) -> bool:
        if path not in verdicts:
            image = read_image(path)
            verdicts[path] = assess_quality(image, detector.detect(image)).ok
        return verdicts[path]

    def pick(person: str, count: int, skip: int = 0) -> list[Path]:
        chosen = []
        for path in lfw_photos(person)[skip:]:  # stops as soon as there are enough
            if len(chosen) == count:
                break
            if ok(path):
                chosen.append(path)
        if len(chosen) < count:
            pytest.skip(f"fewer than {count} usable photos of {person}")
        return chosen
    return pick
