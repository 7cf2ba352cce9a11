"""The way into the admin view (#24 item 6): nothing on the visitor's screen offers it (no tab bar); a key
sequence or taps in a corner open the PIN page; Back to kiosk, Esc, the idle relock and a PIN page left alone
all return to the visitor's screen, locked."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QTabBar

from kiosk.qt.main_window import CORNER_TAPS
from tests.helpers import no_camera, unlock_admin

pytestmark = pytest.mark.slow


def visible_tab_bars(window) -> list[QTabBar]:
    return [bar for bar in window.findChildren(QTabBar) if bar.isVisible()]


def test_the_visitor_screen_offers_no_way_into_admin(qtbot, make_window, tmp_path):
    window = make_window(tmp_path / "missing.pt", opener=no_camera)
    assert window.tabs.currentWidget() is window.kiosk
    assert visible_tab_bars(window) == []  # no "Kiosk | Admin" tab bar
    texts = " ".join(w.text() for w in window.kiosk.findChildren(type(window.admin.back_button)) if w.isVisible())
    assert "Admin" not in texts


def test_the_key_sequence_opens_the_pin_page_and_back_returns_locked(qtbot, make_window, tmp_path):
    window = make_window(tmp_path / "missing.pt", opener=no_camera)
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    qtbot.keyClick(window.kiosk.id_field, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier
                   | Qt.KeyboardModifier.AltModifier)
    assert window.tabs.currentWidget() is window.admin
    unlock_admin(qtbot, window)
    qtbot.mouseClick(window.admin.back_button, Qt.MouseButton.LeftButton)
    assert window.tabs.currentWidget() is window.kiosk and not window.admin.unlocked
    window.show_admin_view()
    assert window.admin.stack.currentWidget() is window.admin.unlock_page  # the PIN again
    qtbot.keyClick(window.admin.pin_field, Qt.Key.Key_Escape)
    assert window.tabs.currentWidget() is window.kiosk


def test_taps_in_the_corner_open_the_admin_view_only_when_quick_and_in_the_corner(qtbot, make_window, tmp_path):
    window = make_window(tmp_path / "missing.pt", opener=no_camera)
    kiosk = window.kiosk
    target = kiosk.childAt(QPoint(10, 10)) or kiosk  # what a finger in the corner actually touches
    for _ in range(CORNER_TAPS - 1):
        qtbot.mouseClick(target, Qt.MouseButton.LeftButton, pos=target.mapFrom(kiosk, QPoint(10, 10)))
    middle = kiosk.childAt(kiosk.rect().center()) or kiosk
    qtbot.mouseClick(middle, Qt.MouseButton.LeftButton, pos=middle.mapFrom(kiosk, kiosk.rect().center()))
    qtbot.mouseClick(target, Qt.MouseButton.LeftButton, pos=target.mapFrom(kiosk, QPoint(10, 10)))
    assert window.tabs.currentWidget() is kiosk  # a tap elsewhere starts the count again
    for _ in range(CORNER_TAPS - 1):
        qtbot.mouseClick(target, Qt.MouseButton.LeftButton, pos=target.mapFrom(kiosk, QPoint(10, 10)))
    assert window.tabs.currentWidget() is window.admin


def test_a_pin_page_left_alone_and_an_idle_admin_return_to_the_visitor_screen(qtbot, make_window, tmp_path):
    window = make_window(tmp_path / "missing.pt", opener=no_camera, admin_idle_s=1.0)
    admin = window.admin
    admin.gate_timer.setInterval(500)  # GATE_IDLE_S, shortened
    window.show_admin_view()
    qtbot.waitUntil(lambda: window.tabs.currentWidget() is window.kiosk, timeout=5000)
    unlock_admin(qtbot, window)
    assert window.tabs.currentWidget() is admin
    qtbot.waitUntil(lambda: window.tabs.currentWidget() is window.kiosk, timeout=5000)  # idle: locked, and back
    assert not admin.unlocked
