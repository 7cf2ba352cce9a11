"""Shared test set-up: Qt offscreen, per-test data/config/log folders, LFW faces and weights fixtures, and the
fixtures several test files use by name: the kiosk windows, a throw-away store, the PostgreSQL fleet."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before anything imports Qt

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from postgres_fixture import postgres_cluster, registry_db  # noqa: E402,F401 (fixtures, for every test file)

from kiosk.paths import DEFAULT_WEIGHTS, datasets_dir  # noqa: E402
from kiosk.qt.app import prepare_qt_environment  # noqa: E402

prepare_qt_environment()  # as the app does: Qt must not use opencv-python's bundled plugins

LFW_SUBDIR = Path("lfw") / "lfw-deepfunneled"

# The fast subset is `pytest -m "not slow"` (README). Each test file marks its slow tests itself
# (`pytestmark = pytest.mark.slow`, or `@pytest.mark.slow` on a test): subprocesses, kill -9 loops, scrypt-heavy
# lockouts, training steps, the PostgreSQL fleet and anything else over about half a second on 2 cores. The one
# net kept here: a test using one of these fixtures (the Qt app, the face network loaded for a model, a built
# wheel) and not marked slow fails at set-up, saying so.
SLOW_FIXTURES = {"qtbot", "trained_weights", "trained_engine", "untrained_weights", "untrained_engine", "wheel"}


def pytest_runtest_setup(item):
    heavy = sorted(SLOW_FIXTURES & set(getattr(item, "fixturenames", ())))
    if heavy and item.get_closest_marker("slow") is None:
        pytest.fail(f"{item.nodeid} uses {', '.join(heavy)}: mark it @pytest.mark.slow (or its file, "
                    f"pytestmark = pytest.mark.slow)", pytrace=False)


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

    from kiosk.vision.model import SiameseNet
    from kiosk.vision.preprocess import InputSpec
    from kiosk.vision.weights import save_weights

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
    from kiosk.vision.engine import FaceEngine
    return FaceEngine(untrained_weights)


@pytest.fixture(scope="session")
def trained_engine(trained_weights):
    from kiosk.vision.engine import FaceEngine
    return FaceEngine(trained_weights)


@pytest.fixture(scope="session")
def good_photos(lfw_photos):
    """good_photos("Tony_Blair", 3, skip=0) -> photos that pass the kiosk's quality checks (one clear face)."""
    from kiosk.io.imageio import read_image
    from kiosk.vision.detection import HaarFaceDetector
    from kiosk.vision.quality import assess_quality

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


@pytest.fixture
def make_window(qtbot):
    """make_window(weights, source=..., opener=..., liveness=False, **AppConfig options) -> a shown MainWindow;
    every window made is shut down at the end, its capture and inference threads ended."""
    from kiosk.qt.main_window import AppConfig, MainWindow
    from kiosk.storage import SettingsStore

    windows = []

    def make(weights, source=None, opener=None, liveness=False, **options) -> MainWindow:
        if not liveness:  # LFW photos are photographs (tests/test_app.py's docstring): liveness off, as an admin can
            SettingsStore().update(liveness=False)
        config = AppConfig(source=str(source) if source else "0", weights=Path(weights), opener=opener,
                           fps=options.pop("fps", 20), loop=True, source_retry=(0.1, 0.5),
                           verdict_display_s=options.pop("verdict_display_s", 0.5), **options)
        window = MainWindow(config)
        qtbot.addWidget(window)
        window.resize(1000, 650)
        window.show()
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.shutdown()
        assert not window.capture.thread.isRunning() and not window.inference.thread.isRunning()


@pytest.fixture
def storage():
    """A throw-away store in this test's data folder (background work finished before it is closed)."""
    from kiosk.qt.background import wait_for_background
    from kiosk.storage import Storage

    store = Storage.open()
    yield store
    wait_for_background()
    store.close()


@pytest.fixture
def fleet(postgres_cluster, registry_db, tmp_path):  # noqa: F811 (the fixtures imported above)
    """fleet("a") -> a kiosk (Storage) on the fresh registry, in its own data folder; closed at the end."""
    from kiosk.storage import Storage

    opened = []

    def open_kiosk(name: str):
        storage = Storage.open(tmp_path / f"kiosk-{name}", url=postgres_cluster.url("kiosk_a", registry_db))
        opened.append(storage)
        return storage
    yield open_kiosk
    for storage in opened:
        storage.close()
