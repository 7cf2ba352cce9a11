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

# The fast subset is `pytest -m "not slow"` (README). A test is slow, without a mark in its file, when it uses
# one of these fixtures (the Qt app, the face network loaded for a model, a built wheel) ...
SLOW_FIXTURES = {"qtbot", "trained_weights", "trained_engine", "untrained_weights", "untrained_engine", "wheel"}
# ... or is named here (file::function, every parameter): subprocesses, kill -9 loops, scrypt-heavy lockouts,
# training steps and other tests over about half a second on 2 cores.
SLOW_TESTS = {
    "test_site_eval.py::test_a_site_of_nuaa_people_keeps_colleagues_and_outsiders_out_and_lets_people_in",
    "test_site_eval.py::test_bad_site_arguments_are_refused_with_exit_2",
    "test_faceres.py::test_real_model_puts_the_same_person_closer_than_other_people",
    "test_site_kiosk.py::test_colleagues_are_refused_on_each_others_id_and_the_owner_is_let_in",
    "test_training.py::test_training_set_excludes_every_person_of_the_reported_folds",
    "test_hardening_store.py::test_kill_9_during_enrolment_20_times_loses_nothing_committed",
    "test_hardening_store.py::test_kill_9_during_migration_resumes_and_loses_nothing",
    "test_hardening_store.py::test_backup_and_restore_bring_back_a_corrupted_store",
    "test_hardening_store.py::test_the_kiosk_says_at_start_what_is_damaged_and_re_embeds_it_from_the_photo",
    "test_hardening_inputs.py::test_png_bomb_is_refused_from_its_header_with_exit_2_under_500_mb",
    "test_hardening_inputs.py::test_opencv_enforces_the_same_limit_when_kiosk_is_imported_first",
    "test_hardening_inputs.py::test_pairs_csv_reader_on_arbitrary_bytes_gives_pairs_inside_or_dataset_error",
    "test_hardening_inputs.py::test_evaluate_pairs_counts_a_one_pixel_image_as_unreadable_on_the_console",
    "test_pin.py::test_lockout_is_capped_and_a_clock_turned_back_cannot_lock_for_ever",
    "test_pin.py::test_lockouts_escalate_and_survive_restarts_and_settings_edits",
    "test_pin.py::test_reset_pin_from_a_terminal_command",
    "test_pin.py::test_reset_pin_is_the_way_back",
    "test_pin.py::test_new_pins_need_six_digits_and_an_old_short_pin_still_opens",
    "test_storage.py::test_pin_lockout_after_five_wrong_is_persisted_and_expires",
    "test_storage.py::test_pin_lock_survives_clock_turned_back_only_for_one_lock_period",
    "test_storage.py::test_pin_first_run_accept_and_hash_is_salted",
    "test_omniglot.py::test_train_resume_and_evaluate",
    "test_omniglot.py::test_a_few_training_steps_lower_the_loss",
    "test_omniglot.py::test_the_paper_reproduction_gives_its_published_figures",
    "test_face_resnet.py::test_parity_with_dlib",
    "test_core_cli.py::test_evaluate_pairs_csv_writes_the_metrics",
    "test_core_cli.py::test_missing_weights_are_reported_not_replaced_by_random_ones",
    "test_core_cli.py::test_verify_accepts_same_person_and_rejects_another",
    "test_core_cli.py::test_verify_bad_input_exits_2_with_one_line_reason",
    "test_core_model.py::test_one_chip_at_a_time_gives_the_features_of_a_batch",
    "test_core_model.py::test_twins_share_one_encoder",
    "test_core_model.py::test_face_weights_hold_the_head_only_and_name_the_encoder_file",
    "test_core_model.py::test_embed_is_separate_from_the_head",
    "test_core_model.py::test_koch_architecture_as_in_the_paper",
    "test_training.py::test_shipped_weights_keep_their_accuracy_on_1200_lfw_pairs",
    "test_hardening_store.py::test_second_writer_is_refused_with_the_holders_pid_and_the_first_loses_nothing",
    "test_attempt.py::test_the_service_does_not_import_qt",
    "test_background.py::test_two_threads_use_the_store_at_once_each_on_its_own_connection",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
        if name in SLOW_TESTS or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


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
