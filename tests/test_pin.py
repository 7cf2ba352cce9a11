"""The admin PIN fails closed (issue #16): once a PIN is set, a deleted, damaged or replaced PIN record
locks administration until `kiosk admin reset-pin`; lockouts escalate and survive restarts and edits of
the settings file; new PINs have at least 6 digits.

Run alone with ``pytest -m reliability``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kiosk import cli
from kiosk.app import Pins
from kiosk.paths import config_dir, data_dir
from kiosk.storage import PinError, PinManager, SettingsStore
from kiosk.storage.pin import (
    DAMAGED,
    GUARD_NAME,
    MISMATCH,
    MISSING,
    OK,
    UNAUTHENTICATED,
    UNGUARDED,
    UNSET,
    PinRecordError,
    hash_pin,
    new_guard,
)

pytestmark = pytest.mark.reliability

PIN = "246810"
ROOT = Path(__file__).resolve().parent.parent


def settings_file() -> Path:
    return config_dir() / "settings.json"


def pins(now: list[float] | None = None, **options) -> PinManager:
    """A fresh manager, as after a restart of the kiosk."""
    clock = (lambda: now[0]) if now is not None else None
    return PinManager(SettingsStore(), **({"clock": clock} if clock else {}), **options)


def set_raw_pin(value) -> None:
    data = json.loads(settings_file().read_text())
    data["pin"] = value
    settings_file().write_text(json.dumps(data))


@pytest.fixture
def pin_set() -> PinManager:
    manager = pins()
    manager.set_pin(PIN, repeat=PIN)
    assert manager.state() == OK and (data_dir() / GUARD_NAME).is_file()
    return manager


def assert_locked_closed(manager: PinManager, state: str) -> None:
    assert manager.state() == state
    with pytest.raises(PinRecordError, match="kiosk admin reset-pin") as info:
        manager.is_set  # noqa: B018 (the property raises)
    assert "terminal" in str(info.value)
    with pytest.raises(PinRecordError):  # no stranger's first-run PIN ...
        manager.set_pin("999999", repeat="999999")
    with pytest.raises(PinRecordError):  # ... and no entry with any PIN
        manager.check(PIN)


def test_deleting_settings_json_locks_admin_instead_of_asking_for_a_new_pin(pin_set):
    """Issue #16: with settings.json deleted, the first-run page appeared and a stranger set a new PIN."""
    settings_file().unlink()
    assert_locked_closed(pins(), MISSING)


@pytest.mark.parametrize("garbage", ["garbage", [], None, {}, 1234, {"algorithm": "scrypt"},
                                     {"algorithm": "scrypt", "n": 2 ** 30, "r": 8, "p": 1, "salt": "00" * 16,
                                      "hash": "00" * 32}])
def test_a_damaged_pin_record_locks_admin(pin_set, garbage):
    """Issue #16: "pin" as garbage, [] or null gave the first-run page. (A huge scrypt n is damage too: it
    would make every check a memory bomb.)"""
    set_raw_pin(garbage)
    assert_locked_closed(pins(), MISSING if garbage is None else DAMAGED)
    SettingsStore().update(threshold=0.7)  # saving other settings keeps the damage (and the lock)
    assert pins().state() in (MISSING, DAMAGED)


def test_a_record_written_by_someone_who_can_only_edit_the_config_file_is_refused(pin_set):
    set_raw_pin(hash_pin("000000"))  # a valid record of a PIN the attacker knows
    assert_locked_closed(pins(), MISMATCH)


def test_a_damaged_guard_locks_admin(pin_set):
    (data_dir() / GUARD_NAME).write_text("{ not json")
    with pytest.raises(PinRecordError, match="guard is damaged.*kiosk admin reset-pin"):
        pins().is_set  # noqa: B018


@pytest.mark.slow
def test_lockouts_escalate_and_survive_restarts_and_settings_edits(pin_set):
    now = [1_000_000.0]
    lengths = []
    for _ in range(4):
        results = [pins(now).check("000000") for _ in range(5)]
        assert [r.attempts_left for r in results[:4]] == [4, 3, 2, 1]
        lengths.append(results[4].locked_for)
        assert pins(now).check(PIN).locked_for == lengths[-1]  # a restart does not unlock; even the right PIN
        # someone who can edit the settings file cannot clear the lock: it is not kept there
        data = json.loads(settings_file().read_text())
        data.update(pin_failures=0, pin_locked_until=0)
        settings_file().write_text(json.dumps(data))
        assert pins(now).locked_for() == lengths[-1]
        now[0] += lengths[-1] + 1
    assert lengths == [300, 600, 1200, 2400]
    assert pins(now).check(PIN).ok  # a good PIN ends the escalation
    assert [pins(now).check("000000").locked_for for _ in range(5)][-1] == 300


@pytest.mark.slow
def test_lockout_is_capped_and_a_clock_turned_back_cannot_lock_for_ever(pin_set):
    now = [1_000_000.0]
    for _ in range(12):
        for _ in range(5):
            result = pins(now, max_lockout_s=3600).check("000000")
        now[0] += result.locked_for + 1
    assert result.locked_for == 3600
    for _ in range(5):
        pins(now, max_lockout_s=3600).check("000000")
    now[0] -= 10 * 24 * 3600  # clock turned back ten days: still locked, but only for the current lock's length
    assert pins(now, max_lockout_s=3600).locked_for() == 3600


@pytest.mark.slow
@pytest.mark.parametrize("older", ["without the guard", "guard without a MAC"])
def test_new_pins_need_six_digits_and_an_older_versions_pin_is_locked_until_reset(monkeypatch, capsys, older):
    """Issue #25 item 6: a PIN record from an older version is no longer trusted once (anyone who can write
    settings.json could have written it, and its guard too): administration stays locked, naming
    `kiosk admin reset-pin`, and the reset (of at least 6 digits) opens it with an authenticated guard."""
    with pytest.raises(PinError, match="6 to 12 digits"):
        pins().set_pin("1234", repeat="1234")
    with pytest.raises(PinError, match="6 to 12 digits"):
        pins().set_pin("12345", repeat="12345")
    assert pins().state() == UNSET
    # a kiosk upgraded from an older version: its 4-digit PIN, its running lock (and, later, its plain guard)
    now = [5000.0]
    old = hash_pin("1234")
    settings_file().parent.mkdir(parents=True)
    settings_file().write_text(json.dumps({"pin": old, "pin_failures": 2, "pin_locked_until": 5100.0}))
    if older == "guard without a MAC":
        data_dir().mkdir(parents=True)
        (data_dir() / GUARD_NAME).write_text(json.dumps(new_guard(old)))
    state = UNGUARDED if older == "without the guard" else UNAUTHENTICATED
    assert_locked_closed(pins(now), state)
    with pytest.raises(PinRecordError, match="older version"):
        pins(now).check("1234")  # not even the old right PIN
    assert reset_pin(monkeypatch, "4321\n4321\n") == 2  # the reset keeps the 6-digit minimum
    assert "6 to 12 digits" in capsys.readouterr().err
    assert reset_pin(monkeypatch, "432100\n432100\n") == 0
    assert pins(now).state() == OK and pins(now).locked_for() == 0
    assert "mac" in json.loads((data_dir() / GUARD_NAME).read_text())
    assert pins(now).check("432100").ok
    with pytest.raises(PinError, match="6 to 12 digits"):
        pins(now).set_pin("4321", current="432100")
    assert "pin_locked_until" not in json.loads(settings_file().read_text())  # the old lock state is gone


def reset_pin(monkeypatch, text: str) -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    return cli.main(["admin", "reset-pin"])


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["deleted", "garbage", "replaced", "guard damaged", "locked out"])
def test_reset_pin_is_the_way_back(pin_set, monkeypatch, capsys, damage):
    if damage == "deleted":
        settings_file().unlink()
    elif damage == "garbage":
        set_raw_pin([])
    elif damage == "replaced":
        set_raw_pin(hash_pin("000000"))
    elif damage == "guard damaged":
        (data_dir() / GUARD_NAME).write_bytes(b"\xff\x00")
    else:
        for _ in range(5):
            pins().check("000000")
        assert pins().locked_for() > 0
    assert reset_pin(monkeypatch, "135790\n135790\n") == 0
    assert "admin PIN set" in capsys.readouterr().out
    manager = pins()
    assert manager.state() == OK and manager.locked_for() == 0
    assert manager.check("135790").ok and not manager.check(PIN).ok


def test_reset_pin_refuses_bad_pins_and_other_users(pin_set, monkeypatch, capsys):
    assert reset_pin(monkeypatch, "1234\n1234\n") == 2
    assert "6 to 12 digits" in capsys.readouterr().err
    assert reset_pin(monkeypatch, "135790\n135791\n") == 2
    assert "differ" in capsys.readouterr().err
    assert reset_pin(monkeypatch, "") == 2
    owner = data_dir().stat().st_uid
    monkeypatch.setattr(os, "getuid", lambda: owner + 1)
    assert reset_pin(monkeypatch, "135790\n") == 2
    assert "only the owner" in capsys.readouterr().err
    assert pins().check(PIN).ok  # nothing changed


def test_reset_pin_reports_a_settings_file_it_cannot_read_and_changes_nothing(pin_set, monkeypatch, capsys):
    settings_file().write_text("{ broken")
    guard = (data_dir() / GUARD_NAME).read_bytes()
    assert reset_pin(monkeypatch, "135790\n") == 2
    assert "damaged" in capsys.readouterr().err and (data_dir() / GUARD_NAME).read_bytes() == guard


@pytest.mark.slow
def test_reset_pin_from_a_terminal_command(pin_set):
    """The real command line, as the owner types it (here: scripted on stdin)."""
    settings_file().unlink()
    done = subprocess.run([sys.executable, "-m", "kiosk.cli", "admin", "reset-pin"], input="112233\n",
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert pins().check("112233").ok


@pytest.mark.slow
def test_admin_tab_shows_why_it_is_locked_and_opens_after_reset(qtbot, pin_set, monkeypatch):
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QTabWidget

    from kiosk.qt.admin_tab import AdminTab

    settings_file().unlink()
    admin = AdminTab(Pins(pins()), QTabWidget())
    qtbot.addWidget(admin)
    assert admin.stack.currentWidget() is admin.error_page and not admin.unlocked
    assert "kiosk admin reset-pin" in admin.error_label.text() and admin.locked_out
    assert reset_pin(monkeypatch, "135790\n") == 0
    admin.lock()  # the gate is shown again (leaving the tab does this)
    assert admin.stack.currentWidget() is admin.unlock_page
    qtbot.keyClicks(admin.pin_field, "135790")
    qtbot.keyClick(admin.pin_field, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: admin.unlocked, timeout=5000)  # checked off the GUI thread


@pytest.mark.slow
def test_admin_tab_notices_a_record_deleted_while_it_waits(qtbot, pin_set):
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QTabWidget

    from kiosk.qt.admin_tab import AdminTab

    admin = AdminTab(Pins(pins()), QTabWidget())
    qtbot.addWidget(admin)
    assert admin.stack.currentWidget() is admin.unlock_page
    settings_file().unlink()
    qtbot.keyClicks(admin.pin_field, "999999")
    qtbot.keyClick(admin.pin_field, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: admin.stack.currentWidget() is admin.error_page, timeout=5000)
    assert not admin.unlocked and "missing" in admin.error_label.text()


@pytest.mark.slow
def test_first_start_asks_for_six_digits(qtbot):
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QTabWidget

    from kiosk.qt.admin_tab import AdminTab

    admin = AdminTab(Pins(pins()), QTabWidget())
    qtbot.addWidget(admin)
    assert admin.stack.currentWidget() is admin.setup_page
    qtbot.keyClicks(admin.new_pin, "1234")
    qtbot.keyClicks(admin.new_pin_repeat, "1234")
    qtbot.mouseClick(admin.set_pin_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not admin.busy, timeout=5000)
    assert "6 to 12 digits" in admin.setup_message.text() and not admin.unlocked


def test_scripted_reset_pin_reads_one_or_two_lines(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("123456\n123456\n"))
    assert cli._read_new_pin() == ("123456", "123456")
    monkeypatch.setattr(sys, "stdin", io.StringIO("654321\n"))
    assert cli._read_new_pin() == ("654321", None)
