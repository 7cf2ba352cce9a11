"""The site rules in the kiosk, on NUAA webcam frames (9 East Asian people; with the LFW threshold alone, 8 of 8
colleagues were let in on person 0001's ID): every person enrolled from one live frame, then each of the others
claims 0001's ID and is refused because their face is closer to another enrolled employee (the audit names who),
while 0001 is let in. With the shipped face, liveness and site weights at their defaults."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import DATASETS, Clock, run_attempt, verify, wait_ready

from kiosk.app import Admin
from kiosk.app.attempt import VerificationService
from kiosk.app.enrolment import enrol_files
from kiosk.rules.decision import REASON_CLOSER, SEE_FRONT_DESK, FusionParams
from kiosk.storage import EVENT_SITE, KIND_DECISION, Storage

LIVE = DATASETS / "nuaa" / "live"
CLAIMED = "0001"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not LIVE.is_dir(), reason=f"NUAA frames not found at {LIVE}")]


def people() -> list[str]:
    return sorted(p.name for p in LIVE.iterdir() if p.is_dir())


def reference(person: str) -> Path:
    return sorted((LIVE / person).glob("*.jpg"))[0]  # the first frame: one live frame each


def camera_frames(person: str, count: int) -> list[Path]:
    """Frames of later recordings than the reference (every few, across the person's sessions)."""
    files = sorted((LIVE / person).glob("*.jpg"))[1:]
    step = max(1, len(files) // count)
    return files[::step][:count]


def enrol_site(engine) -> None:
    storage = Storage.open()
    for person in people():
        enrol_files(engine, storage.employees, person, f"NUAA person {int(person)}", [reference(person)])
    storage.close()


def test_colleagues_are_refused_on_each_others_id_and_the_owner_is_let_in(trained_engine):
    enrol_site(trained_engine)
    storage = Storage.open()
    try:
        clock = Clock()
        service = VerificationService(storage, trained_engine, FusionParams(frames=3, window_s=4.0), clock=clock)
        site = service.site()
        assert site.fitted and site.people == 9 and site.comparisons == 72
        # the LFW threshold alone would let most colleagues in here; the site's own threshold is stricter
        assert site.colleagues_above(trained_engine.default_threshold) > 0.5
        assert service.threshold_in_force() == site.threshold > trained_engine.default_threshold
        event = storage.audit.entries(kind=EVENT_SITE)[0]
        assert event.detail == f"- -> {site.threshold:.4f}" and "9 people" in event.reason
        for person in people()[1:]:
            decision = run_attempt(service, trained_engine, clock, camera_frames(person, 6), CLAIMED)
            assert not decision.accepted, person
            assert decision.reason == REASON_CLOSER and decision.message == SEE_FRONT_DESK, (person, decision)
            assert decision.rival_id == person  # the audit names the employee the face belongs to
            entry = storage.audit.entries(kind=KIND_DECISION)[0]
            assert (entry.claimed_id, entry.verdict, entry.reason) == (CLAIMED, "REJECT", REASON_CLOSER)
            assert entry.detail.startswith(f"closer to {person} ")
        frames = camera_frames(CLAIMED, 30)
        accepted = sum(run_attempt(service, trained_engine, clock, frames[i:i + 3], CLAIMED).accepted
                       for i in range(0, 30, 3))
        assert accepted >= 9
        assert len(storage.audit.entries(kind=EVENT_SITE)) == 1  # nothing changed: measured once
        assert storage.audit.verify_chain() is None
    finally:
        storage.close()


def camera_folder(tmp_path: Path, person: str, count: int) -> Path:
    folder = tmp_path / f"camera-{person}"
    folder.mkdir()
    for path in camera_frames(person, count):
        shutil.copy(path, folder / path.name)
    return folder


def test_the_kiosk_refuses_a_colleague_on_0001s_id_and_lets_0001_in(qtbot, make_window, trained_weights,
                                                                    trained_engine, tmp_path):
    enrol_site(trained_engine)
    window = make_window(trained_weights, camera_folder(tmp_path, "0002", 12), liveness=True)
    wait_ready(qtbot, window, timeout=30000)
    decision = verify(qtbot, window, CLAIMED)
    assert not decision.accepted and window.kiosk.reason.text() == SEE_FRONT_DESK
    entry = window.storage.audit.entries(kind=KIND_DECISION)[0]
    assert entry.verdict == "REJECT" and entry.reason == REASON_CLOSER and entry.detail.startswith("closer to 0002 ")
    window.shutdown()

    window = make_window(trained_weights, camera_folder(tmp_path, CLAIMED, 30), liveness=True)
    wait_ready(qtbot, window, timeout=30000)
    accepted = sum(verify(qtbot, window, CLAIMED).accepted for _ in range(10))
    assert accepted >= 9


def test_admin_threshold_page_says_what_the_slider_lets_in_at_this_site(qtbot, trained_engine):
    """Admin > Threshold, fed the worker's site calibration of the 9 NUAA people: the slider's value alone would let
    most colleagues in; the site's own threshold is said to be used instead."""
    from kiosk.qt.threshold_page import ThresholdPage
    from kiosk.qt.worker import EngineInfo, WalkUpInfo
    from kiosk.storage import SettingsStore

    enrol_site(trained_engine)
    storage = Storage.open()
    try:
        site = VerificationService(storage, trained_engine).site()
        page = ThresholdPage(Admin(storage, SettingsStore()), None)
        qtbot.addWidget(page)
        page.set_model(EngineInfo("face_siamese.pt", trained_engine.default_threshold,
                                  trained_engine.metadata.get("roc"), "shipped"))
        page.set_walk_up(WalkUpInfo(False, "not needed here", site=site))
        text = page.site_label.text()
        share = site.colleagues_above(trained_engine.default_threshold)
        assert f"about {share:.0%} of colleagues" in text and "9 people enrolled" in text
        assert f"{site.threshold:.3f}, is stricter and is used instead" in text
        own = sorted(site.person_thresholds.values())
        assert len(own) == 9 and f"their own threshold from their colleagues' scores against them ({own[0]:.3f}" in text
        page.slider.setValue(999)  # a stricter slider than the site's: the slider is used
        assert "about 0% of colleagues" in page.site_label.text() and "so it is used" in page.site_label.text()
    finally:
        storage.close()
