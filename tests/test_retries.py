"""Retries are an attack too (issue #22): repeated suspected photo attacks lock an ID for face verification.

The rule (kiosk.rules.retries) in fake time; the kiosk's attempts (kiosk.app.attempt with kiosk.app.locks) on
NUAA printed-photo and live webcam frames of person 0001, typed ID and walk-up; and the Qt window: the lock
message at the kiosk, the alert in Admin, the audited unlock."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from helpers import DATASETS, Clock, unlock_admin, verify, wait_ready

from kiosk.app import Admin
from kiosk.app.attempt import VerificationService
from kiosk.app.enrolment import enrol_files
from kiosk.app.locks import FaceLocks
from kiosk.io.imageio import read_image
from kiosk.rules.decision import LOCKED_MESSAGE, LOOK_AT_CAMERA, REASON_ATTACK, REASON_LOCKED, FusionParams
from kiosk.rules.retries import ATTACK, FACE_LOCK, FACE_UNLOCK, RetryRule
from kiosk.storage import SettingsStore, Storage
from kiosk.storage.audit import EVENT_FACE_LOCK, EVENT_FACE_UNLOCK

NUAA = DATASETS / "nuaa"
PERSON = "0001"
REFERENCE = NUAA / "live" / PERSON / f"{PERSON}_00_00_01_0.jpg"
needs_nuaa = pytest.mark.skipif(not (NUAA / "labels.csv").is_file(), reason=f"NUAA frames not found at {NUAA}")


# -- the rule, in fake time -------------------------------------------------------------------------------------
def test_three_attacks_within_ten_minutes_lock_for_thirty_and_an_unlock_starts_the_count_again():
    rule = RetryRule(max_attacks=3, window_s=600, lock_s=1800)
    history = [(0.0, ATTACK), (200.0, ATTACK)]
    assert not rule.locks_now(history, 200.0)
    history.append((500.0, ATTACK))
    assert rule.locks_now(history, 500.0)
    history.append((500.0, FACE_LOCK))
    assert rule.locked_until(history, 501.0) == 2300.0 and not rule.locks_now(history, 501.0)
    assert rule.locked_until(history, 2300.0) is None  # the lock ran out
    assert not rule.locks_now(history + [(2400.0, ATTACK)], 2400.0)  # the old attacks were dealt with
    unlocked = history + [(900.0, FACE_UNLOCK)]
    assert rule.locked_until(unlocked, 901.0) is None
    assert not rule.locks_now(unlocked + [(950.0, ATTACK), (960.0, ATTACK)], 960.0)
    assert rule.locks_now(unlocked + [(950.0, ATTACK), (960.0, ATTACK), (970.0, ATTACK)], 970.0)


def test_attacks_spread_over_more_than_the_window_do_not_lock():
    rule = RetryRule()
    assert not rule.locks_now([(0.0, ATTACK), (400.0, ATTACK), (800.0, ATTACK)], 800.0)
    with pytest.raises(ValueError):
        RetryRule(max_attacks=0)


# -- the kiosk's attempts, on NUAA frames ----------------------------------------------------------------------
def frames(kind: str) -> list[Path]:
    return sorted((NUAA / kind / PERSON).glob("*.jpg"))


@pytest.fixture
def enrolled(trained_engine):
    storage = Storage.open()
    enrol_files(trained_engine, storage.employees, PERSON, "NUAA person 1", [REFERENCE])
    yield storage
    storage.close()


def attempt(service, engine, clock, paths, walk_up: bool = False):
    """One attempt with these frames (0.2 s apart): its Decision, also when it ends at once (a locked ID)."""
    decision = service.begin_walk_up() if walk_up else service.begin(PERSON)
    for path in paths:
        if decision is not None:
            break
        clock.now += 0.2
        decision = service.add_analysis(engine.analyse(read_image(path)), clock.now)
    if decision is None:
        clock.now += 10.0
        decision = service.expire()
    return decision


@needs_nuaa
@pytest.mark.slow
@pytest.mark.parametrize("walk_up", [False, True], ids=["typed ID", "walk-up"])
def test_twenty_printed_photo_attempts_accept_none_and_lock_the_id_after_at_most_three(
        trained_engine, enrolled, walk_up):
    clock = Clock()
    service = VerificationService(enrolled, trained_engine, FusionParams(frames=3, window_s=4.0), clock=clock)
    photos = frames("photo")
    step = len(photos) // 60
    decisions = [attempt(service, trained_engine, clock, photos[i * 3 * step:(i * 3 + 3) * step:step], walk_up)
                 for i in range(20)]
    assert not any(d.accepted for d in decisions)
    locks = enrolled.audit.entries(kind=EVENT_FACE_LOCK)
    assert [e.detail for e in locks] == [PERSON]  # locked once, on the ID the photo shows
    reasons = [d.reason for d in decisions]
    first_locked = reasons.index(REASON_LOCKED)
    assert reasons[:first_locked].count(REASON_ATTACK) <= 3 and set(reasons[first_locked:]) == {REASON_LOCKED}
    assert decisions[-1].message == LOCKED_MESSAGE
    # the person themself is refused too while the ID is locked, until the admin unlocks it (audited)
    live = frames("live")[::40][:3]
    assert attempt(service, trained_engine, clock, live, walk_up).reason == REASON_LOCKED
    admin = Admin(enrolled, SettingsStore())
    assert list(admin.face_locks()) == [PERSON] and admin.unlock_face(PERSON)
    assert [e.detail for e in enrolled.audit.entries(kind=EVENT_FACE_UNLOCK)] == [PERSON]
    assert attempt(service, trained_engine, clock, live, walk_up).accepted
    assert not admin.face_locks() and enrolled.audit.verify_chain() is None


@needs_nuaa
@pytest.mark.slow
def test_a_lock_runs_out_after_thirty_minutes(trained_engine, enrolled):
    offset = [0.0]
    locks = FaceLocks(enrolled.audit, wall=lambda: time.time() + offset[0])
    clock = Clock()
    service = VerificationService(enrolled, trained_engine, FusionParams(frames=3, window_s=4.0), clock=clock,
                                  locks=locks)
    photos = frames("photo")
    for i in range(3):
        assert attempt(service, trained_engine, clock, photos[6 * i:6 * i + 6:2]).reason == REASON_ATTACK
    assert locks.locked_until(PERSON) is not None
    offset[0] = RetryRule().lock_s + 60
    assert locks.locked_until(PERSON) is None
    assert attempt(service, trained_engine, clock, frames("live")[::40][:3]).accepted


# -- the window ---------------------------------------------------------------------------------------------------
@needs_nuaa
@pytest.mark.slow
def test_the_kiosk_shows_the_lock_message_admin_the_alert_and_the_unlock_is_audited(
        qtbot, make_window, trained_weights, trained_engine, tmp_path):
    storage = Storage.open()
    enrol_files(trained_engine, storage.employees, PERSON, "NUAA person 1", [REFERENCE])
    storage.close()
    camera = tmp_path / "camera"
    camera.mkdir()
    for path in frames("photo")[::25][:12]:
        shutil.copy(path, camera / path.name)
    window = make_window(trained_weights, camera, liveness=True)
    wait_ready(qtbot, window, timeout=30000)
    messages = []
    for _ in range(4):
        decision = verify(qtbot, window, PERSON)
        assert not decision.accepted
        messages.append(window.kiosk.reason.text())
    assert messages[:3] == [LOOK_AT_CAMERA] * 3 and messages[3] == LOCKED_MESSAGE
    unlock_admin(qtbot, window)
    admin = window.admin
    qtbot.waitUntil(lambda: admin.alert_row.isVisible(), timeout=5000)
    assert PERSON in admin.alert.text() and admin.locked_ids.currentText() == PERSON
    admin.confirm = lambda *args: True
    admin.unlock_face_button.click()
    qtbot.waitUntil(lambda: not admin.alert_row.isVisible(), timeout=5000)
    assert [e.detail for e in window.storage.audit.entries(kind=EVENT_FACE_UNLOCK)] == [PERSON]
