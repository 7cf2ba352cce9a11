"""Walk-up mode in the kiosk window (pytest-qt, offscreen): nobody types an ID; a good face starts a search
among everyone enrolled. An enrolled person is let in by name, a stranger is "not recognised", and the audit
log records the mode. The shipped model and 1:N rule; LFW photos as the camera, so liveness is off (as in
tests/test_app.py)."""

from __future__ import annotations

import shutil

import pytest
from helpers import unlock_admin, wait_ready

from kiosk.app.enrolment import enrol_files
from kiosk.qt.kiosk_tab import VERDICT
from kiosk.rules.decision import MODE_BOTH, MODE_ID, MODE_WALK_UP
from kiosk.rules.identification import REASON_NOT_RECOGNISED, REASON_RECOGNISED
from kiosk.storage import EVENT_MODE, KIND_DECISION, SettingsStore, Storage

pytestmark = pytest.mark.slow  # the Qt app and the shipped model
ENROLLED = {"BUSH": "George_W_Bush", "POWELL": "Colin_Powell", "BLAIR": "Tony_Blair"}


@pytest.fixture
def enrolled(trained_engine, good_photos):
    storage = Storage.open()
    for employee_id, person in ENROLLED.items():
        enrol_files(trained_engine, storage.employees, employee_id, person.replace("_", " "), good_photos(person, 3))
    storage.close()


def camera(tmp_path, lfw_photos, person: str):
    folder = tmp_path / f"camera-{person}"
    folder.mkdir()
    for path in lfw_photos(person)[30:40]:  # not the reference photos
        shutil.copy(path, folder / path.name)
    return folder


def walk_up_verdict(qtbot, window):
    """No key pressed: wait for the kiosk to find the face and show a verdict."""
    qtbot.waitUntil(lambda: window.kiosk.state == VERDICT, timeout=30000)
    return window.kiosk.last_decision


@pytest.mark.parametrize("person, expected", [("George_W_Bush", "BUSH"), ("Jacques_Chirac", None)])
def test_walk_up_mode_lets_an_enrolled_person_in_and_does_not_recognise_a_stranger(
        qtbot, make_window, trained_weights, enrolled, tmp_path, lfw_photos, person, expected):
    SettingsStore().update(kiosk_mode=MODE_WALK_UP)
    window = make_window(trained_weights, camera(tmp_path, lfw_photos, person))
    wait_ready(qtbot, window, timeout=30000)
    assert not window.kiosk.id_field.isVisibleTo(window.kiosk)  # face only: no ID to type
    decision = walk_up_verdict(qtbot, window)
    entry = window.storage.audit.entries(kind=KIND_DECISION)[0]
    assert decision.mode == MODE_WALK_UP and entry.mode == MODE_WALK_UP
    if expected:
        assert decision.accepted and decision.claimed_id == expected and decision.reason == REASON_RECOGNISED
        assert window.kiosk.reason.text() == "Welcome, George W Bush" and entry.claimed_id == expected
    else:
        assert not decision.accepted and decision.reason == REASON_NOT_RECOGNISED and entry.claimed_id == ""
        assert window.kiosk.verdict.text() == "REJECT" and window.kiosk.reason.text().startswith("Not recognised")
    qtbot.waitUntil(lambda: "3 people (9 reference photos)" in window.threshold_page.walk_up_label.text(),
                    timeout=10000)  # the admin sees what walk-ups mean for the people enrolled


def test_the_admin_switches_modes_behind_the_pin_and_it_is_recorded(qtbot, make_window, trained_weights, enrolled,
                                                                    tmp_path, lfw_photos):
    window = make_window(trained_weights, camera(tmp_path, lfw_photos, "Colin_Powell"))
    wait_ready(qtbot, window, timeout=30000)
    assert window.kiosk.mode == MODE_ID and window.kiosk.state != VERDICT  # ID + face: nothing happens alone
    unlock_admin(qtbot, window)
    admin = window.admin
    admin.panel.setCurrentWidget(admin.kiosk_page)
    admin.confirm = lambda *args: True
    admin.set_mode(MODE_BOTH)
    qtbot.waitUntil(lambda: window.kiosk.mode == MODE_BOTH, timeout=5000)
    assert SettingsStore().load().kiosk_mode == MODE_BOTH
    qtbot.waitUntil(lambda: bool(window.storage.audit.entries(kind=EVENT_MODE)), timeout=5000)
    assert window.storage.audit.entries(kind=EVENT_MODE)[0].detail == f"{MODE_ID} -> {MODE_BOTH}"
    window.tabs.setCurrentWidget(window.kiosk)
    assert window.kiosk.id_field.isVisibleTo(window.kiosk)  # both: the ID can still be typed
    decision = walk_up_verdict(qtbot, window)  # ... and a walk-up is found without it
    assert decision.accepted and decision.claimed_id == "POWELL" and decision.mode == MODE_WALK_UP
