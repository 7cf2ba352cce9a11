"""Shared test helpers: where the real datasets are, skipping cleanly where they are not, driving the Qt kiosk
(its windows come from conftest's make_window) and attempts on a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiosk.paths import DEFAULT_WEIGHTS, datasets_dir

DATASETS = datasets_dir()
LFW = DATASETS / "lfw" / "lfw-deepfunneled"
LFW_PAIRS = DATASETS / "lfw" / "pairs.txt"
OMNIGLOT = DATASETS / "omniglot"

needs_lfw = pytest.mark.skipif(not LFW.is_dir(), reason=f"LFW dataset not found at {LFW} (set KIOSK_DATASETS)")
needs_weights = pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(),
                                   reason=f"no trained weights at {DEFAULT_WEIGHTS}")


def lfw_photo(person: str, number: int = 1) -> Path:
    return LFW / person / f"{person}_{number:04d}.jpg"


# -- the Qt kiosk (windows from conftest's make_window) ------------------------------------------------------
PIN = "246810"


def no_camera():
    from kiosk.errors import SourceError
    raise SourceError("no camera here")


def wait_ready(qtbot, window, timeout=15000) -> None:
    """The model has loaded (or failed to); without frames the kiosk is then out of service."""
    from kiosk.qt.kiosk_tab import IDLE, OUT_OF_SERVICE, UNAVAILABLE
    qtbot.waitUntil(lambda: window.kiosk.state in (IDLE, UNAVAILABLE, OUT_OF_SERVICE), timeout=timeout)


def verify(qtbot, window, claimed_id: str, timeout=20000):
    """Type the ID like a badge scanner (characters + Enter); returns the worker's Decision."""
    from PySide6.QtCore import Qt

    from kiosk.qt.kiosk_tab import IDLE, VERDICT, VERIFYING
    qtbot.waitUntil(lambda: window.kiosk.state == IDLE, timeout=timeout)
    window.tabs.setCurrentWidget(window.kiosk)
    qtbot.keyClicks(window.kiosk.id_field, claimed_id)
    qtbot.keyClick(window.kiosk.id_field, Qt.Key.Key_Return)
    assert window.kiosk.state == VERIFYING
    qtbot.waitUntil(lambda: window.kiosk.state == VERDICT, timeout=timeout)  # the GUI got the worker's decision
    decision = window.kiosk.last_decision
    assert decision.claimed_id == claimed_id and window.kiosk.verdict.text() == decision.verdict
    return decision


def unlock_admin(qtbot, window, pin=PIN) -> None:
    from PySide6.QtCore import Qt
    admin = window.admin
    window.tabs.setCurrentWidget(admin)
    if admin.stack.currentWidget() is admin.setup_page:
        qtbot.keyClicks(admin.new_pin, pin)
        qtbot.keyClicks(admin.new_pin_repeat, pin)
        qtbot.mouseClick(admin.set_pin_button, Qt.MouseButton.LeftButton)
    else:
        qtbot.keyClicks(admin.pin_field, pin)
        qtbot.keyClick(admin.pin_field, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not admin.busy, timeout=5000)  # the PIN is checked off the GUI thread
    assert admin.unlocked and admin.stack.currentWidget() is admin.panel


# -- attempts without the GUI, on a fake clock -----------------------------------------------------------------
class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run_attempt(service, engine, clock: Clock, paths: list[Path], claimed: str = "0001"):
    """One attempt of ``claimed`` (NUAA's person 0001 unless told) with these camera frames, 0.2 s apart;
    its Decision."""
    from kiosk.io.imageio import read_image
    assert service.begin(claimed) is None
    decision = None
    for path in paths:
        clock.now += 0.2
        analysis = engine.analyse(read_image(path))
        decision = service.add_frame(analysis.crop if analysis.quality.ok else None, clock.now, analysis.liveness)
        if decision is not None:
            return decision
    clock.now += 10
    return service.expire()
