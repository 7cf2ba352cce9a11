"""Liveness in the kiosk's decision, on NUAA webcam frames: a printed photo of the enrolled person, held to
the camera, matches the face but is refused ("Please look at the camera yourself"; audited as a suspected
presentation attack with its liveness score); the same person live is accepted. With the shipped face and
liveness weights at their default thresholds. NUAA's 9 people are the ones the liveness model was trained on
(their figures are training figures); what this checks is the kiosk's rule and plumbing end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import DATASETS, PIN, Clock, no_camera, run_attempt, unlock_admin, verify, wait_ready

from kiosk.app import Admin
from kiosk.app.attempt import VerificationService
from kiosk.app.enrolment import enrol_files
from kiosk.paths import LIVENESS_WEIGHTS
from kiosk.qt.liveness_page import LivenessPage
from kiosk.qt.worker import EngineInfo
from kiosk.rules.decision import (
    LOOK_AT_CAMERA,
    MODE_ID,
    REASON_ATTACK,
    REASON_MATCH,
    REASON_NO_LIVENESS,
    FusionParams,
    LivenessPolicy,
)
from kiosk.storage import EVENT_LIVENESS, KIND_DECISION, SettingsStore, Storage
from kiosk.vision.engine import FaceEngine
from kiosk.vision.liveness import LivenessModel

NUAA = DATASETS / "nuaa"
PERSON = "0001"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (NUAA / "labels.csv").is_file(), reason=f"NUAA frames not found at {NUAA}")]


def frames(kind: str, count: int, session: str | None = None) -> list[Path]:
    """Every few frames of PERSON's ``kind`` ('live' or 'photo') recordings, optionally of one session."""
    files = sorted((NUAA / kind / PERSON).glob("*.jpg"))
    if session is not None:
        files = [f for f in files if f.stem.split("_")[3] == session]
    step = max(1, len(files) // count)
    return files[::step][:count]


REFERENCE = NUAA / "live" / PERSON / f"{PERSON}_00_00_01_0.jpg"  # one live webcam frame, session 1


@pytest.fixture
def enrolled(trained_engine):
    storage = Storage.open()
    enrol_files(trained_engine, storage.employees, PERSON, "NUAA person 1", [REFERENCE])
    yield storage
    storage.close()


def test_a_printed_photo_of_the_enrolled_person_is_refused_and_the_person_live_is_accepted(trained_engine, enrolled):
    clock = Clock()
    service = VerificationService(enrolled, trained_engine, FusionParams(frames=3, window_s=4.0), clock=clock)
    assert service.liveness_threshold == pytest.approx(trained_engine.liveness.threshold)
    attack = run_attempt(service, trained_engine, clock, frames("photo", 6, session="02"))
    assert not attack.accepted and attack.reason == REASON_ATTACK and attack.message == LOOK_AT_CAMERA
    assert attack.score >= attack.threshold  # the face itself matches: only liveness stops it
    assert attack.liveness < attack.liveness_threshold and attack.mode == MODE_ID
    live = run_attempt(service, trained_engine, clock, frames("live", 6, session="02"))
    assert live.accepted and live.reason == REASON_MATCH and live.liveness >= live.liveness_threshold
    newest, older = enrolled.audit.entries(kind=KIND_DECISION)[:2]
    assert (older.reason, older.verdict, older.mode) == (REASON_ATTACK, "REJECT", MODE_ID)
    assert older.liveness == pytest.approx(attack.liveness) and newest.liveness == pytest.approx(live.liveness)
    assert enrolled.audit.verify_chain() is None

    service.set_liveness(LivenessPolicy(enabled=False))  # what switching it off means: the photo gets in
    assert service.liveness_threshold is None
    unchecked = run_attempt(service, trained_engine, clock, frames("photo", 6, session="02"))
    assert unchecked.accepted and unchecked.liveness is None


def test_without_a_usable_liveness_model_nobody_is_let_in_while_liveness_is_on(trained_weights, enrolled, tmp_path):
    damaged = tmp_path / "liveness.npz"
    damaged.write_bytes(LIVENESS_WEIGHTS.read_bytes()[:-200])
    engine = FaceEngine(trained_weights, liveness_weights=damaged)
    assert engine.liveness is None and "damaged" in engine.liveness_problem
    problems: list[str] = []
    service = VerificationService(enrolled, engine, report=problems.append)
    decision = service.begin(PERSON)
    assert decision is not None and not decision.accepted and decision.reason == REASON_NO_LIVENESS
    assert problems and "unavailable" in problems[0]
    assert enrolled.audit.entries(kind=KIND_DECISION)[0].reason == REASON_NO_LIVENESS


def camera_folder(tmp_path: Path, kind: str) -> Path:
    folder = tmp_path / f"camera-{kind}"
    folder.mkdir()
    for path in frames(kind, 12, session="02"):
        shutil.copy(path, folder / path.name)
    return folder


@pytest.mark.parametrize("kind", ["photo", "live"])
def test_the_kiosk_refuses_a_photo_attack_with_the_liveness_message_and_accepts_the_person_live(
        qtbot, make_window, trained_weights, trained_engine, tmp_path, kind):
    storage = Storage.open()
    enrol_files(trained_engine, storage.employees, PERSON, "NUAA person 1", [REFERENCE])
    storage.close()
    window = make_window(trained_weights, camera_folder(tmp_path, kind), liveness=True)
    wait_ready(qtbot, window, timeout=30000)
    decision = verify(qtbot, window, PERSON)
    entry = window.storage.audit.entries(kind=KIND_DECISION)[0]
    if kind == "photo":
        assert not decision.accepted and window.kiosk.reason.text() == LOOK_AT_CAMERA
        assert entry.reason == "presentation attack suspected" and entry.verdict == "REJECT"
        assert entry.liveness is not None and entry.liveness < window.worker.service.liveness_threshold
    else:
        assert decision.accepted and window.kiosk.reason.text() == "Welcome, NUAA person 1"
        assert entry.verdict == "ACCEPT" and entry.liveness >= window.worker.service.liveness_threshold
    assert entry.mode == MODE_ID


def test_liveness_page_shows_held_out_rates_and_applies_on_off_with_an_audit_entry(qtbot):
    model = LivenessModel.load(LIVENESS_WEIGHTS)
    settings = SettingsStore()
    storage = Storage.open()
    try:
        page = LivenessPage(Admin(storage, settings), settings.load().liveness_policy)
        qtbot.addWidget(page)
        page.set_model(EngineInfo("w.pt", 0.6, None, "", model.threshold, model.metadata["roc"]))
        cv = model.metadata["cross_validation"]
        assert page.enabled_box.isChecked() and f"{model.threshold:.3f} (model default)" in page.value_label.text()
        text = page.rates_label.text()  # the held-out people's rates at the model's threshold
        assert "APCER" in text and "BPCER" in text and f"{cv['bpcer']:.2%}" in text
        applied = []
        page.liveness_changed.connect(applied.append)
        page.enabled_box.setChecked(False)
        page.confirm = lambda *args: False
        page.apply()
        qtbot.waitUntil(lambda: not page.saving, timeout=5000)
        assert not applied and settings.load().liveness  # refused at the confirmation: nothing changed
        page.confirm = lambda *args: True
        page.apply()
        qtbot.waitUntil(lambda: not page.saving, timeout=5000)
        assert applied == [LivenessPolicy(False, None)] and settings.load().liveness is False
        qtbot.waitUntil(lambda: bool(storage.audit.entries(kind=EVENT_LIVENESS)), timeout=5000)
        assert storage.audit.entries(kind=EVENT_LIVENESS)[0].detail.endswith("-> off")
        page.enabled_box.setChecked(True)
        page.slider.setValue(700)
        page.apply()
        qtbot.waitUntil(lambda: not page.saving, timeout=5000)
        assert applied[-1] == LivenessPolicy(True, 0.7) and settings.load().liveness_threshold == 0.7
    finally:
        storage.close()


def test_admin_liveness_tab_is_behind_the_pin(qtbot, make_window, tmp_path):
    window = make_window(tmp_path / "missing.pt", liveness=True, opener=no_camera)
    unlock_admin(qtbot, window, PIN)
    assert window.admin.panel.indexOf(window.liveness_page) >= 0
