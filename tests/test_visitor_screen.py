"""The visitor's screen (issue #24), pytest-qt, offscreen: every text fits from 800x600 to 1920x1080 and fullscreen
fills the screen; out of service is said in plain words (the technical reason is in Admin > Kiosk); the sounds'
real state is shown in Admin; a walk-up lets a person in once per presence and never while Admin is shown."""

from __future__ import annotations

import shutil

import pytest
from helpers import Clock, no_camera, unlock_admin, wait_ready
from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QApplication, QMessageBox

from kiosk.app.enrolment import enrol_files
from kiosk.qt.kiosk_tab import (
    _VERDICT_PADDING,
    ID_PROMPTS,
    NO_PICTURE_OVERLAY,
    NO_PICTURE_TEXT,
    NOT_WORKING_TEXT,
    OUT_OF_SERVICE,
    OUT_OF_SERVICE_TITLE,
    UNAVAILABLE,
    VERDICT,
    VERIFYING,
)
from kiosk.qt.sounds import SoundPlayer
from kiosk.rules.decision import MODE_BOTH, MODE_WALK_UP

pytestmark = pytest.mark.slow  # the Qt app

SIZES = [(800, 600), (1280, 800), (1920, 1080)]
VERDICTS = ["ACCEPT", "REJECT", OUT_OF_SERVICE_TITLE]
PROMPTS = ["Hold still... (3/3)", "Look at the camera", "Please look straight at the camera"]
REASONS = [NO_PICTURE_TEXT, NOT_WORKING_TEXT, "Welcome, George W Bush", "Not recognised. Please ask at the reception."]
WRAP = Qt.TextFlag.TextWordWrap | Qt.AlignmentFlag.AlignCenter


def assert_one_line_fits(label, text: str, padding: int = 0) -> None:
    label.setText(text)
    QApplication.processEvents()
    width = label.contentsRect().width() - 2 * padding
    advance = QFontMetrics(label.font()).horizontalAdvance(text)
    assert advance <= width, f"{text!r}: {advance} px in a {width} px label"


def assert_wrapped_fits(label, text: str) -> None:
    label.setText(text)
    QApplication.processEvents()
    room = label.contentsRect()
    needed = QFontMetrics(label.font()).boundingRect(QRect(0, 0, room.width(), 100000), WRAP, text)
    fits = needed.width() <= room.width() and label.height() >= label.heightForWidth(label.width())
    assert fits and needed.height() <= room.height() + 2, \
        f"{text!r} needs {needed.width()}x{needed.height()} px in {room.width()}x{room.height()}"


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_visitor_text_fits_from_800x600_to_1920x1080(qtbot, make_window, tmp_path, size):
    window = make_window(tmp_path / "missing.pt", opener=no_camera)
    qtbot.waitUntil(lambda: window.kiosk.state == UNAVAILABLE, timeout=10000)
    window.resize(*size)
    qtbot.waitUntil(lambda: window.size().width() == size[0] and window.size().height() == size[1], timeout=5000)
    kiosk = window.kiosk
    kiosk.set_mode(MODE_BOTH)  # the longest ID prompt, and the ID field shown
    kiosk.id_label.setVisible(True)
    kiosk.id_field.setVisible(True)
    qtbot.wait(50)
    for verdict in VERDICTS:
        kiosk._show_verdict(verdict, NO_PICTURE_TEXT, "info")
        assert_one_line_fits(kiosk.verdict, verdict, _VERDICT_PADDING)
    assert_wrapped_fits(kiosk.id_label, ID_PROMPTS[MODE_BOTH])
    for prompt in PROMPTS:
        assert_wrapped_fits(kiosk.prompt, prompt)
    for reason in REASONS:
        assert_wrapped_fits(kiosk.reason, reason)
    assert kiosk.reason.font().pixelSize() >= 16  # readable, not shrunk to nothing
    if size[0] >= 1280:
        assert kiosk.verdict.font().pixelSize() > 40


def test_fullscreen_fills_the_screen(qtbot, make_window, tmp_path):
    window = make_window(tmp_path / "missing.pt", opener=no_camera)
    window.show_kiosk_fullscreen()
    screen = window.screen()
    qtbot.waitUntil(lambda: window.geometry() == screen.geometry(), timeout=5000)
    assert window.isFullScreen()


def test_out_of_service_is_plain_words_for_visitors_and_the_reason_is_in_admin(qtbot, make_window, tmp_path):
    missing = tmp_path / "cam"
    missing.mkdir()  # an empty folder as the camera: "no image files in this folder (...)"
    window = make_window(tmp_path / "missing.pt", source=missing)
    qtbot.waitUntil(lambda: window.kiosk.state in (UNAVAILABLE, OUT_OF_SERVICE), timeout=10000)
    qtbot.waitUntil(lambda: window.kiosk.video.message != "", timeout=10000)
    kiosk = window.kiosk
    seen = [kiosk.video.message, kiosk.verdict.text(), kiosk.reason.text(), window.source_status.text(),
            window.model_status.text(), kiosk.prompt.text()]
    for text in seen:
        assert str(tmp_path) not in text and "missing.pt" not in text and "image files" not in text, text
    assert kiosk.verdict.text() == OUT_OF_SERVICE_TITLE and kiosk.video.message == NO_PICTURE_OVERLAY
    assert not kiosk.id_label.isVisible() and not kiosk.id_field.isVisible()  # no prompt during the outage
    assert "missing.pt" in window.admin.model_label.text()  # the operator's reason
    assert str(missing) in window.admin.source_label.text() or "cam" in window.admin.source_label.text()


def test_sounds_unavailable_is_shown_in_admin(qtbot, make_window, tmp_path):
    window = make_window(tmp_path / "missing.pt", opener=no_camera)
    window.sounds = SoundPlayer(tmp_path / "no-sounds")  # no files (and here no audio device): cannot play
    unlock_admin(qtbot, window)
    assert "unavailable" in window.admin.sounds_box.text()
    assert window.admin.sounds_state.text().startswith("Sounds unavailable: ")


# -- walk-up: once per presence, never while Admin is shown (the shipped model, LFW photos as the camera) ------------
@pytest.fixture
def bush_camera(trained_engine, good_photos, tmp_path):
    from kiosk.storage import Storage

    storage = Storage.open()
    enrol_files(trained_engine, storage.employees, "BUSH", "George W Bush", good_photos("George_W_Bush", 3))
    storage.close()
    folder = tmp_path / "camera"
    folder.mkdir()
    for path in good_photos("George_W_Bush", 6, skip=30):  # a clear face in every frame: the person stays
        shutil.copy(path, folder / path.name)
    return folder


def accepts(window) -> list:
    from kiosk.storage import KIND_DECISION
    return [e for e in window.storage.audit.entries(kind=KIND_DECISION) if e.verdict == "ACCEPT"]


def test_a_walk_up_of_30_s_is_let_in_once_and_nothing_is_decided_while_admin_is_shown(
        qtbot, make_window, trained_weights, bush_camera):
    from kiosk.storage import KIND_DECISION, SettingsStore

    SettingsStore().update(kiosk_mode=MODE_WALK_UP)
    window = make_window(trained_weights, bush_camera)
    clock = window.kiosk.clock = Clock()
    window.tabs.setCurrentWidget(window.admin)  # Admin shown before the model is even loaded
    wait_ready(qtbot, window, timeout=30000)
    for _ in range(20):  # 5 s on the kiosk's clock, 2 s real, a face in front of the camera all along
        clock.now += 0.25
        qtbot.wait(100)
    assert window.kiosk.state not in (VERIFYING, VERDICT)
    assert window.storage.audit.entries(kind=KIND_DECISION) == []

    window.tabs.setCurrentWidget(window.kiosk)
    qtbot.waitUntil(lambda: window.kiosk.state == VERDICT, timeout=30000)
    assert window.kiosk.last_decision.accepted
    start = clock.now
    while clock.now - start < 30.0:  # the person stands there for 30 s (on the kiosk's clock)
        clock.now += 0.25
        qtbot.wait(50)
    qtbot.wait(500)
    assert window.kiosk.state != VERIFYING
    assert len(accepts(window)) == 1


# -- the admin's day ----------------------------------------------------------------------------------------------
def test_the_idle_lock_counts_real_inactivity(qtbot, make_window, tmp_path):
    from PySide6.QtCore import QPoint

    from kiosk.qt.admin_tab import ADMIN_IDLE_S, AdminTab

    assert AdminTab.__init__.__defaults__[0] == ADMIN_IDLE_S == 300.0  # 5 min unless the settings say otherwise
    window = make_window(tmp_path / "missing.pt", opener=no_camera, admin_idle_s=1.0)
    unlock_admin(qtbot, window)
    for step in range(8):  # 2 s of moving the mouse and scrolling about: in use, not idle
        qtbot.mouseMove(window.admin, QPoint(50 + step * 10, 60))
        qtbot.wait(250)
    assert window.admin.unlocked
    dialog = QMessageBox(QMessageBox.Icon.Question, "Export", "Choose a file", parent=window)
    dialog.open()  # a dialog the admin is reading (window-modal, as a file chooser or a confirmation)
    qtbot.waitUntil(lambda: QApplication.activeModalWidget() is dialog, timeout=2000)
    qtbot.wait(1600)
    assert window.admin.unlocked
    dialog.close()
    qtbot.waitUntil(lambda: not window.admin.unlocked, timeout=3000)  # then nothing: locked


def test_plurals_and_the_export_folder():
    from pathlib import Path

    from kiosk.qt.audit_page import export_folder
    from kiosk.qt.threshold_page import plural

    assert f"{plural(1, 'person', 'people')} ({plural(1, 'reference photo')})" == "1 person (1 reference photo)"
    assert f"{plural(3, 'person', 'people')} ({plural(9, 'reference photo')})" == "3 people (9 reference photos)"
    assert export_folder() != Path.cwd() and export_folder().is_dir()
