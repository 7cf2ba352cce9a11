"""The kiosk as its operator meets it (issue 13, items 1, 5, 6): the PIN-protected way out, PIN focus, out of
service without frames (and no REJECT recorded for it), the sounds and their setting, the assets."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest
from helpers import PIN, no_camera, unlock_admin, wait_ready
from PySide6.QtCore import Qt

from kiosk.app.enrolment import RefreshReport
from kiosk.errors import SourceError
from kiosk.io.sources import FrameSource
from kiosk.qt.background import wait_for_background
from kiosk.qt.capture import CaptureWorker
from kiosk.qt.kiosk_tab import IDLE, OUT_OF_SERVICE, VERDICT, VERIFYING
from kiosk.qt.sounds import SoundPlayer
from kiosk.storage import NewPhoto, Settings, SettingsStore, Storage
from kiosk.storage.audit import (
    EVENT_LOCKOUT,
    EVENT_MODEL,
    EVENT_PIN_CHANGED,
    EVENT_PIN_SET,
    EVENT_PIN_WRONG,
    EVENT_START,
    EVENT_STOP,
    EVENT_UNLOCK,
)


def decisions(window) -> list[tuple[str, str]]:
    """The verification decisions in the audit log (not the admin events), newest first."""
    return [(e.claimed_id, e.verdict) for e in window.storage.audit.entries() if e.verdict]


def activate(qtbot, window) -> None:
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)


# -- 1. the way out -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_fullscreen_kiosk_closes_only_through_the_pin_protected_quit(qtbot, make_window, tmp_path):
    window = make_window(tmp_path / "missing.pt", opener=no_camera, fullscreen=True)  # no model: starts fast
    activate(qtbot, window)
    admin = window.admin
    quits = []
    admin.quit_requested.connect(lambda: quits.append(True))
    for key, modifier in ((Qt.Key.Key_Escape, Qt.KeyboardModifier.NoModifier),
                          (Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier),
                          (Qt.Key.Key_F4, Qt.KeyboardModifier.AltModifier)):
        qtbot.keyClick(window.kiosk.id_field, key, modifier)
        qtbot.keyClick(window, key, modifier)
    assert not window.close()  # what a window manager's close (Alt+F4) asks: ignored
    qtbot.wait(100)
    assert window.isVisible() and not window._closed
    admin.request_quit()  # locked: nothing
    window.tabs.setCurrentWidget(admin)
    assert not admin.quit_button.isVisible() and quits == [] and window.isVisible()

    unlock_admin(qtbot, window)
    admin.panel.setCurrentWidget(admin.kiosk_page)
    assert admin.quit_button.isVisible()
    admin.confirm = lambda *args: False  # the admin changes their mind
    qtbot.mouseClick(admin.quit_button, Qt.MouseButton.LeftButton)
    assert window.isVisible() and quits == []
    admin.confirm = lambda *args: True
    qtbot.mouseClick(admin.quit_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=5000)
    assert quits == [True] and window._closed  # shut down: threads stopped, store closed


@pytest.mark.slow
def test_windowed_ctrl_q_and_closing_the_window_work(qtbot, make_window, tmp_path):
    window = make_window(tmp_path / "missing.pt", opener=no_camera)
    activate(qtbot, window)
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert window.isVisible()
    qtbot.keyClick(window.kiosk, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=5000)
    assert window._closed
    other = make_window(tmp_path / "missing.pt", opener=no_camera)
    assert other.close() and other._closed


@pytest.mark.slow
def test_the_pin_field_has_the_focus_whenever_the_admin_tab_asks_for_the_pin(qtbot, make_window, tmp_path):
    window = make_window(tmp_path / "missing.pt", opener=no_camera, admin_idle_s=2.0)
    activate(qtbot, window)
    admin = window.admin
    window.tabs.setCurrentWidget(admin)
    assert window.focusWidget() is admin.new_pin  # first start: the new PIN
    qtbot.keyClicks(window.focusWidget(), "13579")  # typing goes to the field; too short
    qtbot.keyClick(window.focusWidget(), Qt.Key.Key_Tab)
    qtbot.keyClicks(window.focusWidget(), "13579")
    qtbot.keyClick(window.focusWidget(), Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not admin.busy, timeout=5000)
    assert not admin.unlocked and window.focusWidget() is admin.new_pin
    unlock_admin(qtbot, window)
    window.tabs.setCurrentWidget(window.kiosk)
    window.tabs.setCurrentWidget(admin)  # on entering the tab
    assert window.focusWidget() is admin.pin_field
    qtbot.keyClicks(window.focusWidget(), "000000")  # a wrong PIN: the field is busy meanwhile, then focused again
    qtbot.keyClick(window.focusWidget(), Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not admin.busy, timeout=5000)
    assert "attempt" in admin.unlock_message.text() and window.focusWidget() is admin.pin_field
    qtbot.keyClicks(window.focusWidget(), PIN)  # typed straight away, no click
    qtbot.keyClick(window.focusWidget(), Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not admin.busy, timeout=5000)
    assert admin.unlocked
    admin.lock()  # "Lock now"
    assert window.focusWidget() is admin.pin_field
    unlock_admin(qtbot, window)
    qtbot.waitUntil(lambda: not admin.unlocked, timeout=5000)  # idle relock: the visitor's screen again
    assert window.tabs.currentWidget() is window.kiosk
    window.show_admin_view()
    assert window.focusWidget() is admin.pin_field


# -- 5. no frames: out of service ---------------------------------------------------------------------------
class Camera:
    """A grey camera that can be unplugged (reads fail, opening fails) and plugged in again, or frozen (open,
    but no frame comes)."""

    def __init__(self):
        self.plugged = threading.Event()
        self.plugged.set()
        self.frozen = threading.Event()

    def open(self) -> FrameSource:
        if not self.plugged.is_set():
            raise SourceError("camera 0: not found")
        camera = self

        class Source(FrameSource):
            description = "test camera"

            def __init__(self):
                super().__init__(fps=20)

            def _read(self):
                if not camera.plugged.is_set():
                    raise SourceError("test camera: the device stopped responding")
                if camera.frozen.is_set():
                    time.sleep(0.05)
                    return None
                return np.full((240, 320, 3), 128, np.uint8)

        return Source()


@pytest.mark.slow
def test_out_of_service_while_the_source_is_dead_no_reject_recorded_and_back_by_itself(qtbot, make_window,
                                                                                        untrained_weights):
    SettingsStore().update(fusion_window_s=1.5)
    camera = Camera()
    window = make_window(untrained_weights, opener=camera.open, stall_s=1.0)
    qtbot.waitUntil(lambda: window.kiosk.state == IDLE, timeout=20000)
    photo = np.full((240, 240, 3), 128, np.uint8)
    window.storage.employees.enrol("E1", "Somebody", [NewPhoto(photo, np.ones(128, np.float32))],
                                   window.worker.engine.model_id)  # references of the current model
    window.tabs.setCurrentWidget(window.kiosk)
    qtbot.keyClicks(window.kiosk.id_field, "E1")
    qtbot.keyClick(window.kiosk.id_field, Qt.Key.Key_Return)
    assert window.kiosk.state == VERIFYING  # grey frames: no face; it would end as REJECT after 1.5 s

    camera.plugged.clear()  # the source dies during the attempt
    qtbot.waitUntil(lambda: window.kiosk.state == OUT_OF_SERVICE, timeout=5000)
    assert not window.kiosk.id_field.isEnabled() and window.kiosk.verdict.text() == "Out of service"
    assert "No camera picture" in window.kiosk.reason.text()
    qtbot.keyClicks(window.kiosk.id_field, "E1")  # disabled: takes nothing
    qtbot.keyClick(window.kiosk.id_field, Qt.Key.Key_Return)
    qtbot.wait(2500)  # past the attempt's deadline
    assert window.kiosk.state == OUT_OF_SERVICE
    assert decisions(window) == []  # no REJECT for what the kiosk could not see

    camera.plugged.set()  # frames come back: in service by itself
    qtbot.waitUntil(lambda: window.kiosk.state == IDLE, timeout=10000)
    assert window.kiosk.id_field.isEnabled() and window.kiosk.verdict.text() == ""

    camera.frozen.set()  # open but silent: out of service after stall_s
    qtbot.waitUntil(lambda: window.kiosk.state == OUT_OF_SERVICE, timeout=10000)
    assert "No camera picture" in window.kiosk.reason.text() and "no picture" in window.admin.source_label.text()
    camera.frozen.clear()
    qtbot.waitUntil(lambda: window.kiosk.state == IDLE, timeout=5000)
    qtbot.keyClicks(window.kiosk.id_field, "E1")  # and attempts run and are recorded again
    qtbot.keyClick(window.kiosk.id_field, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: window.kiosk.state == VERDICT, timeout=10000)
    assert decisions(window) == [("E1", "REJECT")]


def test_a_failing_source_is_logged_once_per_failure_not_per_retry(caplog):
    def opener():
        raise SourceError("camera 0: not found")

    worker = CaptureWorker(opener, retry=(0.001, 0.001))
    with caplog.at_level(logging.DEBUG, logger="kiosk.qt.capture"):
        for _ in range(5):
            worker._open(0.001)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "camera 0: not found" in warnings[0].getMessage()


def test_opencv_logs_only_fatal_messages():
    import os

    import cv2

    import kiosk.io.sources  # noqa: F401

    if not os.environ.get("OPENCV_LOG_LEVEL"):
        assert cv2.utils.logging.getLogLevel() == cv2.utils.logging.LOG_LEVEL_FATAL


# -- 6. sounds, icon, style sheet ---------------------------------------------------------------------------
class FakePlayer:
    def __init__(self):
        self.played = []

    def play(self, verdict: str) -> None:
        self.played.append(verdict)

    def check(self) -> str:
        return ""


@pytest.mark.slow
def test_verdict_sounds_play_unless_the_admin_turns_them_off(qtbot, make_window, untrained_weights):
    camera = Camera()
    window = make_window(untrained_weights, opener=camera.open)
    window.sounds = player = FakePlayer()
    qtbot.waitUntil(lambda: window.kiosk.state == IDLE, timeout=20000)

    def verify(claimed: str) -> None:
        window.tabs.setCurrentWidget(window.kiosk)
        qtbot.waitUntil(lambda: window.kiosk.state == IDLE, timeout=10000)
        qtbot.keyClicks(window.kiosk.id_field, claimed)
        qtbot.keyClick(window.kiosk.id_field, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: window.kiosk.state == VERDICT, timeout=10000)

    verify("NOBODY")
    assert player.played == ["REJECT"]
    unlock_admin(qtbot, window)
    box = window.admin.sounds_box
    assert box.isChecked()
    box.setChecked(False)  # saved off the GUI thread
    qtbot.waitUntil(lambda: not window.sounds_on, timeout=5000)
    assert SettingsStore().load().sounds is False
    verify("NOBODY")
    assert player.played == ["REJECT"]


@pytest.mark.slow
def test_sound_player_without_audio_or_files_is_silent_with_one_log_line(qtbot, tmp_path, caplog):
    player = SoundPlayer(tmp_path)  # no files here (and, in the tests, no audio device or Qt Multimedia)
    with caplog.at_level(logging.INFO, logger="kiosk.qt.sounds"):
        player.play("ACCEPT")
        player.play("REJECT")
    assert len([r for r in caplog.records if "sounds are off" in r.getMessage()]) == 1
    assert not player.available


def test_sounds_setting_is_kept_and_validated():
    assert Settings().sounds is True
    assert SettingsStore().update(sounds=False).sounds is False and SettingsStore().load().sounds is False
    assert Settings(sounds="yes").validated().sounds is True  # not a bool: the default
    assert Settings(admin_idle_s=True).validated().admin_idle_s == 300.0  # bools still refused elsewhere


@pytest.mark.slow
def test_window_icon_and_the_kiosk_style_sheet_come_from_assets(qtbot, make_window, tmp_path):
    window = make_window(tmp_path / "missing.pt", opener=no_camera)
    assert not window.windowIcon().isNull()
    style = window.kiosk.styleSheet()
    assert "QLabel#verdict" in style and window.kiosk.verdict.objectName() == "verdict"
    wait_ready(qtbot, window)
    assert window.kiosk.verdict.property("verdict") == "info"  # "Out of service" (no model) in its style


# -- the audit trail of the operator's actions ------------------------------------------------------------------
def events(audit) -> list[str]:
    """The admin events' kinds, oldest first."""
    wait_for_background()  # written off the GUI thread
    return [e.kind for e in reversed(audit.entries()) if e.is_event]


@pytest.mark.slow
def test_pin_actions_start_stop_and_model_changes_are_audited(qtbot, make_window, tmp_path):
    window = make_window(tmp_path / "missing.pt", opener=no_camera)
    admin, audit = window.admin, window.storage.audit
    unlock_admin(qtbot, window)  # first start: PIN set, unlocked
    admin.panel.setCurrentIndex(admin.panel.count() - 2)  # Security
    qtbot.keyClicks(admin.current_pin, "999999")  # a wrong current PIN counts as a wrong PIN
    qtbot.keyClicks(admin.changed_pin, "1357911")
    qtbot.keyClicks(admin.changed_pin_repeat, "1357911")
    qtbot.mouseClick(admin.change_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not admin.busy, timeout=5000)
    qtbot.keyClicks(admin.current_pin, PIN)
    qtbot.keyClicks(admin.changed_pin, "1357911")
    qtbot.keyClicks(admin.changed_pin_repeat, "1357911")
    qtbot.mouseClick(admin.change_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not admin.busy, timeout=5000)
    assert admin.change_message.text() == "PIN changed."
    assert events(audit) == [EVENT_START, EVENT_PIN_SET, EVENT_UNLOCK, EVENT_PIN_WRONG, EVENT_PIN_CHANGED]
    admin.lock()
    for _ in range(5):  # five wrong in a row: locked out
        qtbot.keyClicks(admin.pin_field, "000000")
        qtbot.keyClick(admin.pin_field, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: not admin.busy, timeout=5000)
    assert admin.locked_out
    assert events(audit)[5:] == [EVENT_PIN_WRONG] * 5 + [EVENT_LOCKOUT]
    lockout = audit.entries(kind=EVENT_LOCKOUT)[0]
    assert lockout.detail.endswith("min") and "wrong PIN" in lockout.reason
    assert all(PIN not in e.detail + e.reason for e in audit.entries())  # never the PIN itself

    window._on_refreshed(RefreshReport(updated=2))  # the worker re-embedded stored photos for a new model
    assert events(audit)[-1] == EVENT_MODEL and "2 reference photo(s) re-embedded" in audit.entries()[0].detail
    window.shutdown()
    storage = Storage.open()
    try:
        assert events(storage.audit)[-1] == EVENT_STOP
        assert events(storage.audit)[0] == EVENT_START and storage.audit.entries(kind=EVENT_START)[0].detail
    finally:
        storage.close()
