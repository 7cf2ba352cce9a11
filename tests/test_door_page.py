"""Admin > Door (issue #26 item 3), offscreen: the page configures the door against a real Mosquitto broker
(tests/test_door.py's, on 127.0.0.1) and a local HTTP server; Test door sends exactly one unlock, audited with
its outcome, and only in an unlocked admin session; the change is audited; secrets are kept in 0600 files,
never in door.json, settings.json, the audit log or the log file; the connection line follows the broker;
wrong fields are named and nothing is saved."""

from __future__ import annotations

import json
import logging
import stat
import threading

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QScrollArea, QTabWidget

from kiosk.app import Kiosk
from kiosk.app.door_admin import PASSWORD_NAME, WEBHOOK_KEY_NAME, AdminLocked
from kiosk.io.door import UNLOCK, verify_webhook
from kiosk.logging_setup import LOG_NAME, setup_logging
from kiosk.paths import config_dir, log_dir
from kiosk.qt.admin_tab import AdminTab
from kiosk.qt.background import wait_for_background
from kiosk.qt.door_page import DoorPage
from kiosk.storage.audit import EVENT_DOOR_CONFIG, EVENT_DOOR_TEST
from tests.helpers import PIN
from tests.test_door import Broker, Listener, webhook_receiver

pytestmark = pytest.mark.slow  # the Qt page, a broker, servers

PASSWORD = "door-Pa55word-never-logged"


@pytest.fixture
def log_file():
    """The kiosk's log file, written at DEBUG for the test (the handlers removed afterwards)."""
    path = setup_logging(logging.DEBUG, console=False)
    yield path
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_kiosk_handler", False)]:
        root.removeHandler(handler)
        handler.close()


@pytest.fixture
def admin_view(qtbot):
    """(kiosk, the admin tab unlocked with a first PIN, the door page shown in it) at 800x600."""
    kiosk = Kiosk.open()
    panel = QTabWidget()
    page = DoorPage(kiosk.door_admin)
    panel.addTab(page, "Door")
    tab = AdminTab(kiosk.pins, panel, admin=kiosk.admin)
    qtbot.addWidget(tab)
    tab.resize(800, 600)
    tab.show()
    qtbot.keyClicks(tab.new_pin, PIN)
    qtbot.keyClicks(tab.new_pin_repeat, PIN)
    qtbot.mouseClick(tab.set_pin_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.unlocked and page.loaded and not page.busy, timeout=10000)
    panel.setCurrentWidget(page)
    yield kiosk, tab, page
    wait_for_background()
    kiosk.close()


def events(kiosk, kind=None):
    """Admin events, oldest first, as (kind, detail, reason)."""
    wait_for_background()
    return [(e.kind, e.detail, e.reason) for e in reversed(kiosk.audit.entries())
            if e.is_event and (kind is None or e.kind == kind)]


def choose(page, backend: str) -> None:
    page.backend_box.setCurrentIndex(page.backend_box.findData(backend))


def press(qtbot, page, button) -> None:
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not page.busy, timeout=10000)


def settle(listener) -> None:
    """Everything the broker sent the listener before now has arrived: a marker published after it is back."""
    got = threading.Event()
    listener.client.message_callback_add("siamese-kiosk/door/marker", lambda *_: got.set())
    listener.client.publish("siamese-kiosk/door/marker", b"{}", qos=1)
    assert got.wait(10)
    listener.client.message_callback_remove("siamese-kiosk/door/marker")


def test_mqtt_configured_in_the_page_tested_once_audited_and_its_password_kept_secret(qtbot, admin_view, tmp_path,
                                                                                     log_file):
    kiosk, tab, page = admin_view
    broker = Broker(tmp_path / "broker")
    listener = Listener(broker.port)
    try:
        assert "Not configured" in page.state_label.text() and not page.test_button.isEnabled()
        choose(page, "mqtt")
        page.host.setText("127.0.0.1")
        page.port.setText(str(broker.port))
        page.username.setText("kiosk")
        page.password.setText(PASSWORD)
        page.unlock_box.setValue(4.5)
        scroll = tab.findChild(QScrollArea)  # 800x600: the page scrolls down, never sideways
        qtbot.waitUntil(lambda: scroll.viewport().width() > 0)
        assert scroll.horizontalScrollBar().maximum() == 0
        press(qtbot, page, page.save_button)
        assert page.status.text() == "Saved.", page.status.text()

        # the secret: an owner-only file, named (not held) by door.json, shown only as "set"
        secret = config_dir() / PASSWORD_NAME
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and secret.read_text() == PASSWORD
        door_json = (config_dir() / "door.json").read_text()
        assert PASSWORD not in door_json and json.loads(door_json)["options"]["password_file"] == str(secret)
        assert page.password.text() == "" and page.password.placeholderText().startswith("set")
        assert PASSWORD not in repr(kiosk.door_admin.config())

        qtbot.waitUntil(lambda: page.state_label.text().startswith("Connection: Connected"), timeout=10000)
        assert f"127.0.0.1:{broker.port}" in page.state_label.text()
        assert page.test_button.isEnabled()
        press(qtbot, page, page.test_button)
        assert page.status.text() == "Test door: the unlock was delivered.", page.status.text()
        settle(listener)
        unlocks = listener.of(UNLOCK)
        assert len(unlocks) == 1 and unlocks[0]["kind"] == "test" and unlocks[0]["unlock_s"] == 4.5
        assert events(kiosk, EVENT_DOOR_CONFIG) == [
            (EVENT_DOOR_CONFIG, f"no door -> MQTT 127.0.0.1:{broker.port}, topic siamese-kiosk/door, unlock 4.5 s",
             "changed by the admin: Back end, Unlock time, password changed")]
        assert events(kiosk, EVENT_DOOR_TEST) == [(EVENT_DOOR_TEST, "mqtt", "delivered")]

        # a locked admin view cannot test (nor change) the door: refused before anything is sent or audited
        tab.lock()
        assert not kiosk.pins.session_open
        page.test_door()
        qtbot.waitUntil(lambda: not page.busy, timeout=10000)
        assert "administration is locked" in page.status.text()
        with pytest.raises(AdminLocked):
            kiosk.door_admin.save("none", 3.0, {})
        settle(listener)
        assert len(listener.of(UNLOCK)) == 1 and len(events(kiosk, EVENT_DOOR_TEST)) == 1

        # the broker goes away: the state line says so, with the reason
        qtbot.keyClicks(tab.pin_field, PIN)
        qtbot.keyClick(tab.pin_field, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: tab.unlocked, timeout=10000)
        tab.panel.setCurrentWidget(page)
        listener.close()
        broker.stop()
        qtbot.waitUntil(lambda: page.state_label.text().startswith("Connection: Not connected"), timeout=10000)
        assert f"127.0.0.1:{broker.port}" in page.state_label.text()

        # nothing of the password anywhere else
        settings = config_dir() / "settings.json"
        assert not settings.exists() or PASSWORD not in settings.read_text()
        for e in kiosk.audit.entries():
            assert PASSWORD not in f"{e.detail} {e.reason} {e.claimed_id}"
        for handler in logging.getLogger().handlers:
            handler.flush()
        logged = (log_dir() / LOG_NAME).read_text()
        assert "door settings saved" in logged and "door test: delivered" in logged and PASSWORD not in logged
    finally:
        listener.close()
        if broker.process.poll() is None:
            broker.stop()


def test_wrong_fields_are_named_marked_and_nothing_is_saved(qtbot, admin_view):
    kiosk, _tab, page = admin_view
    choose(page, "mqtt")
    page.host.setText("bad host!")
    page.port.setText("70000")
    page.topic.setText("doors/#")
    page.password.setText(PASSWORD)
    press(qtbot, page, page.save_button)
    text = page.status.text()
    assert text.startswith("Not saved:") and "Broker host: 'bad host!' is not a host name" in text
    assert "Broker port: must be a whole number from 1 to 65535" in text and "Topic: must not hold" in text
    assert all("border" in w.styleSheet() for w in (page.host, page.port, page.topic))
    assert page.username.styleSheet() == ""

    choose(page, "webhook")
    page.url.setText("ftp://door.lan/unlock")
    page.webhook_key.setText("short")
    press(qtbot, page, page.save_button)
    assert "URL: must be an http:// or https:// address" in page.status.text()
    assert "Signing key: needs at least 16 characters" in page.status.text()

    choose(page, "serial")
    page.device.setText("ttyUSB0")
    page.on_hex.setText("A0 01 0")
    press(qtbot, page, page.save_button)
    assert "Serial device: give the relay board's device path" in page.status.text()
    assert "On bytes: 1 to 32 bytes in hex" in page.status.text() and "Off bytes" not in page.status.text()

    assert not (config_dir() / "door.json").exists()
    assert not (config_dir() / PASSWORD_NAME).exists() and not (config_dir() / WEBHOOK_KEY_NAME).exists()
    assert events(kiosk, EVENT_DOOR_CONFIG) == [] and kiosk.door.door is None
    assert "Not configured" in page.state_label.text()


def test_a_webhook_configured_in_the_page_gets_one_signed_unlock(qtbot, admin_view):
    kiosk, _tab, page = admin_view
    received, server = webhook_receiver()
    try:
        choose(page, "webhook")
        page.url.setText(f"http://127.0.0.1:{server.server_port}/door?token=abc")
        qtbot.mouseClick(page.new_key_button, Qt.MouseButton.LeftButton)
        key = page.webhook_key.text()
        assert len(key) >= 32 and "Copy this key" in page.status.text()
        press(qtbot, page, page.save_button)
        assert page.status.text() == "Saved."
        secret = config_dir() / WEBHOOK_KEY_NAME
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and secret.read_text() == key
        assert key not in (config_dir() / "door.json").read_text() and page.webhook_key.text() == ""
        assert "no message sent yet" in page.state_label.text()
        press(qtbot, page, page.test_button)
        assert page.status.text() == "Test door: the unlock was delivered."
        assert len(received) == 1
        body, stamp, signature = received[0]
        assert verify_webhook(key.encode(), body, stamp, signature) and json.loads(body)["kind"] == "test"
        assert "Connected: endpoint 127.0.0.1 answered HTTP 204" in page.state_label.text()
        assert events(kiosk, EVENT_DOOR_CONFIG)[0][1] == "no door -> webhook to 127.0.0.1, unlock 3 s"  # no token
        assert events(kiosk, EVENT_DOOR_TEST) == [(EVENT_DOOR_TEST, "webhook", "delivered")]

        # saving again with the key field empty keeps the key; nothing changed: nothing audited
        press(qtbot, page, page.save_button)
        assert secret.read_text() == key and len(events(kiosk, EVENT_DOOR_CONFIG)) == 1
    finally:
        server.shutdown()
        server.server_close()
