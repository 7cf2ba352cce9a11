"""Enrolment in kiosk conditions (issue #21, item 4): Admin > Employees takes several camera frames in one
action ("Take 3 frames"), each passing the enrolment checks, spaced in time, within a timeout; they are saved
as several references of one employee. The rule (kiosk.app.enrolment.FrameBurst) is tested with a clock of its own;
the page is fed real analyses of NUAA webcam frames, as the worker's `analysed` signal feeds it, with a clock
the test moves (no sleeps)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers import DATASETS
from PySide6.QtCore import Qt

from kiosk.app import Kiosk
from kiosk.app.enrolment import FrameBurst, enrol_images
from kiosk.io.imageio import read_image
from kiosk.qt import employees_page as page_module
from kiosk.qt.employees_page import ENROL_FRAMES, EmployeesPage
from kiosk.qt.worker import FrameResult
from kiosk.vision.quality import ADVICE, TOO_DARK

NUAA_LIVE = DATASETS / "nuaa" / "live"
PERSON = "0001"
needs_nuaa = pytest.mark.skipif(not (NUAA_LIVE / PERSON).is_dir(),
                                reason=f"NUAA webcam frames not found at {NUAA_LIVE} (set KIOSK_DATASETS)")


# -- the rule, Qt-free ---------------------------------------------------------------------------------------

def burst(**kw) -> FrameBurst:
    return FrameBurst(**{"started_at": 100.0, "count": 3, "gap_s": 0.3, "timeout_s": 10.0, "fresh_s": 1.0, **kw})


def test_a_burst_takes_the_next_good_fresh_frames_spaced_in_time():
    b = burst()
    assert not b.offer("before the click", True, 99.9, now=100.05)
    assert not b.offer("bad", False, 100.1, now=100.15)
    assert b.offer("first", True, 100.1, now=100.15)
    assert not b.offer("the same frame again", True, 100.1, now=100.2)
    assert not b.offer("too soon after", True, 100.35, now=100.4)
    assert not b.offer("stale", True, 100.5, now=101.6)
    assert b.offer("second", True, 100.5, now=100.6)
    assert not b.done
    assert b.offer("third", True, 100.9, now=101.0)
    assert b.done and not b.offer("one more", True, 101.5, now=101.6)
    assert [item for item, _ in b.taken] == ["first", "second", "third"]


def test_a_burst_expires_at_its_timeout_and_takes_nothing_late():
    b = burst()
    assert b.offer("first", True, 100.1, now=100.2)
    assert not b.expired(109.99) and b.remaining(109.0) == pytest.approx(1.0)
    assert b.expired(110.0) and b.remaining(111.0) == 0.0
    assert not b.offer("late", True, 109.95, now=110.0)
    assert len(b.taken) == 1
    complete = burst(count=1)
    assert complete.offer("only", True, 100.1, now=100.2)
    assert not complete.expired(200.0)  # a complete burst never times out


# -- the page, on real webcam frames ---------------------------------------------------------------------------

class Clock:
    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="session")
def nuaa_frames(untrained_engine):
    """(good, dark): three live webcam frames of PERSON that pass the enrolment checks, and one of them
    darkened so that it fails them; each as (image, engine analysis)."""
    if not (NUAA_LIVE / PERSON).is_dir():
        pytest.skip(f"NUAA webcam frames not found at {NUAA_LIVE} (set KIOSK_DATASETS)")
    good = []
    for path in sorted((NUAA_LIVE / PERSON).glob("*.jpg"))[::10]:
        image = read_image(path)
        analysis = untrained_engine.analyse(image)
        if analysis.quality.ok:
            good.append((image, analysis))
        if len(good) == ENROL_FRAMES:
            break
    if len(good) < ENROL_FRAMES:
        pytest.skip(f"fewer than {ENROL_FRAMES} NUAA frames of {PERSON} pass the quality checks")
    dark_image = (good[0][0] * 0.15).astype(np.uint8)
    dark = (dark_image, untrained_engine.analyse(dark_image))
    if TOO_DARK not in dark[1].quality.reasons:
        pytest.skip(f"the darkened frame gives {dark[1].quality.describe()}")
    return good, dark


def result(frame, captured_at: float) -> FrameResult:
    """What the worker emits for one analysed frame."""
    image, analysis = frame
    return FrameResult(image, captured_at, analysis.box, analysis.quality.ok, list(analysis.quality.reasons))


@pytest.fixture
def page(qtbot, storage):
    page = EmployeesPage(Kiosk(storage))
    qtbot.addWidget(page)
    page.resize(900, 600)
    page.show()
    page.clock = Clock()
    page.set_engine_state(True)
    page.set_camera_state(True)
    page.confirm = lambda *args: True
    return page


def feed(page, frame, captured_at: float, delay: float = 0.05) -> None:
    """One analysis arrives ``delay`` after its frame was captured."""
    page.clock.now = captured_at + delay
    page.on_analysed(result(frame, captured_at))


@pytest.mark.slow
@needs_nuaa
def test_three_good_frames_are_taken_skipping_bad_ones_and_saved_as_three_references(
        qtbot, page, nuaa_frames, untrained_engine, storage):
    good, dark = nuaa_frames

    def enrol(employee_id, name, images, replace):  # as the worker does
        try:
            page.on_enrolled(enrol_images(untrained_engine, storage.employees, employee_id, name, images, replace))
        except Exception as exc:  # noqa: BLE001
            page.on_enrol_failed(str(exc))

    page.enrol_requested.connect(enrol)
    page.id_field.setText("E-21")
    page.name_field.setText("NUAA 0001")
    assert page.frames_button.text() == "Take 3 frames" and page.frames_button.isEnabled()
    qtbot.mouseClick(page.frames_button, Qt.MouseButton.LeftButton)
    # the click returns at once: nothing taken yet, the admin is told what to do, saving waits
    assert page.status.text() == "Hold still: 0 of 3 frames" and not page.pending
    assert page.frames_button.text() == "Cancel" and not page.save_button.isEnabled()
    assert not page.take_button.isEnabled() and not page.files_button.isEnabled()

    feed(page, good[0], 100.1)
    assert page.status.text() == "Hold still: 1 of 3 frames"
    feed(page, dark, 100.5)                      # fails the checks: skipped, with the advice
    assert page.status.text() == f"Hold still: 1 of 3 frames ({ADVICE[TOO_DARK]})"
    page.on_analysed(result(good[0], 100.1))     # the same frame again: skipped
    feed(page, good[1], 100.2)                   # too soon after the first: skipped
    assert page.status.text() == "Hold still: 1 of 3 frames" and not page.pending
    feed(page, good[1], 100.6)
    assert page.status.text() == "Hold still: 2 of 3 frames" and not page.pending
    feed(page, good[2], 101.0)

    assert [label for _, label in page.pending] == ["camera frame 1 of 3", "camera frame 2 of 3",
                                                    "camera frame 3 of 3"]
    assert all(image is frame[0] for (image, _), frame in zip(page.pending, good))  # the good ones, in order
    assert page.photos.count() == 3 and page.photos.item(0).text() == "camera frame 1 of 3\nok"
    assert page.status.text().startswith("3 camera frames taken; 3 photo(s) ready")
    assert page.frames_button.text() == "Take 3 frames" and page.save_button.isEnabled()

    qtbot.mouseClick(page.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.status.text().startswith("Enrolled"), timeout=20000)
    assert storage.employees.get("E-21").photo_count == 3
    features = storage.employees.reference_features("E-21", untrained_engine.model_id)
    assert features.shape == (3, untrained_engine.feature_dim)
    assert not np.allclose(features[0], features[1]) and not np.allclose(features[1], features[2])  # 3 frames
    assert not page.pending and page.photos.count() == 0


@pytest.mark.slow
@needs_nuaa
def test_without_enough_good_frames_the_wait_ends_with_a_clear_message_and_adds_nothing(qtbot, page, nuaa_frames):
    good, dark = nuaa_frames
    qtbot.mouseClick(page.frames_button, Qt.MouseButton.LeftButton)
    feed(page, good[0], 100.1)
    for captured_at in (100.5, 104.0, 109.9):
        feed(page, dark, captured_at, delay=0.04)
    assert page.status.text() == f"Hold still: 1 of 3 frames ({ADVICE[TOO_DARK]})"
    feed(page, good[1], 109.96)  # good, but it arrives when the 10 s are up
    assert page.status.text().startswith("Only 1 of 3 good frames came in 10 s; none were added.")
    assert "color:#c62828" in page.status.styleSheet()
    assert not page.pending and page.photos.count() == 0
    assert page.frames_button.text() == "Take 3 frames"
    feed(page, good[2], 110.5)  # the burst is over: later frames are not taken
    assert not page.pending


@pytest.mark.slow
@needs_nuaa
def test_the_timer_ends_the_wait_when_no_good_frame_comes_at_all(qtbot, page, nuaa_frames, monkeypatch):
    """No analyses at all (the GUI is not waiting on them): the page's timer says so on its own."""
    monkeypatch.setattr(page_module, "FRAMES_TIMEOUT_S", 0.3)
    page.clock = time.monotonic
    started = time.monotonic()
    qtbot.mouseClick(page.frames_button, Qt.MouseButton.LeftButton)
    assert time.monotonic() - started < 0.2 and page.status.text() == "Hold still: 0 of 3 frames"
    qtbot.waitUntil(lambda: page.status.text().startswith("Only 0 of 3 good frames came in 0.3 s"), timeout=3000)
    assert time.monotonic() - started >= 0.3 and not page.pending


@pytest.mark.slow
@needs_nuaa
def test_cancel_or_a_lost_camera_ends_the_burst_and_adds_nothing(qtbot, page, nuaa_frames):
    good, _ = nuaa_frames
    qtbot.mouseClick(page.frames_button, Qt.MouseButton.LeftButton)
    feed(page, good[0], 100.1)
    qtbot.mouseClick(page.frames_button, Qt.MouseButton.LeftButton)  # "Cancel"
    assert page.status.text() == "Taking frames cancelled; none were added."
    feed(page, good[1], 100.6)
    feed(page, good[2], 101.0)
    assert not page.pending and page.frames_button.text() == "Take 3 frames"

    qtbot.mouseClick(page.frames_button, Qt.MouseButton.LeftButton)
    feed(page, good[0], 101.2)
    page.set_camera_state(False)
    assert page.status.text() == "The camera stopped while taking frames; none were added."
    assert not page.pending and not page.frames_button.isEnabled()
    page.set_camera_state(True)
    feed(page, good[1], 101.6)
    assert not page.pending  # nothing is collecting any more


@pytest.mark.slow
def test_take_frames_needs_the_engine_and_the_camera(qtbot, storage):
    page = EmployeesPage(Kiosk(storage))
    qtbot.addWidget(page)
    page.set_engine_state(True)
    assert not page.frames_button.isEnabled()  # no camera yet
    page.set_camera_state(True)
    assert page.frames_button.isEnabled()
    page.set_engine_state(False, "no model")
    assert not page.frames_button.isEnabled()
    page.take_frames()  # called anyway: nothing starts
    assert page.frames_button.text() == "Take 3 frames" and "unavailable" in page.status.text()
