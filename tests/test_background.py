"""Qt code never blocks on work (issue #12 item 2): the background-operation helper, the admin tab's PIN
check off the GUI thread, and one SQLite connection per thread."""

from __future__ import annotations

import threading
import time

import pytest
from PySide6.QtCore import Qt, QThread, QTimer
from PySide6.QtWidgets import QApplication, QPushButton, QTabWidget, QWidget

from kiosk.app import Pins
from kiosk.paths import data_dir
from kiosk.qt.background import Background, wait_for_background
from kiosk.storage import AuditLog, Database, PinManager, SettingsStore, StorageError

pytestmark = pytest.mark.slow  # Qt threads and event loops, every test


def gui_thread() -> QThread:
    return QApplication.instance().thread()


@pytest.fixture
def owner(qtbot) -> QWidget:
    widget = QWidget()
    qtbot.addWidget(widget)
    return widget


def test_the_operation_runs_off_the_gui_thread_and_the_callback_on_it(qtbot, owner):
    seen: dict = {}

    def operation() -> int:
        seen["op_thread"] = QThread.currentThread()
        return 42

    def on_success(value: int) -> None:
        seen["value"], seen["cb_thread"] = value, QThread.currentThread()

    Background(owner).run(operation, on_success)
    qtbot.waitUntil(lambda: "value" in seen, timeout=3000)
    assert seen["value"] == 42
    assert seen["cb_thread"] is gui_thread() and seen["op_thread"] is not gui_thread()


def test_a_failing_operation_reaches_the_failure_callback_on_the_gui_thread(qtbot, owner):
    seen: dict = {}

    def operation() -> None:
        raise StorageError("disk on fire")

    def on_failure(exc: BaseException) -> None:
        seen["exc"], seen["thread"] = exc, QThread.currentThread()

    Background(owner).run(operation, on_success=lambda _v: seen.setdefault("success", True), on_failure=on_failure)
    qtbot.waitUntil(lambda: "exc" in seen, timeout=3000)
    assert isinstance(seen["exc"], StorageError) and "disk on fire" in str(seen["exc"])
    assert seen["thread"] is gui_thread() and "success" not in seen


def test_the_gui_keeps_processing_events_while_a_slow_operation_runs(qtbot, owner):
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start()
    button = QPushButton(owner)
    done: list[float] = []
    started = time.monotonic()
    Background(owner).run(lambda: time.sleep(0.3), lambda _v: done.append(time.monotonic()), busy=[button])
    assert not button.isEnabled()  # busy: the control is disabled while it runs
    qtbot.waitUntil(lambda: bool(done), timeout=3000)
    timer.stop()
    assert button.isEnabled()
    during = [t for t in ticks if started < t < done[0]]
    assert len(during) >= 3, f"only {len(during)} timer ticks during a 300 ms operation"  # blocked: none


def test_only_the_newest_operation_of_a_key_reports(qtbot, owner):
    shown: list[str] = []
    ops = Background(owner)
    gate = threading.Event()
    ops.run(lambda: (gate.wait(2), "old")[1], shown.append, key="search")
    ops.run(lambda: "new", shown.append, key="search")
    qtbot.waitUntil(lambda: shown == ["new"], timeout=3000)
    gate.set()
    assert wait_for_background(3000)
    qtbot.wait(50)
    assert shown == ["new"]


def test_operations_run_in_the_order_they_were_asked_for(qtbot, owner, tmp_path):
    """Audit entries of events that follow each other keep their order (a PIN set, then the unlock): with two
    pool threads a later, quicker operation could overtake an earlier one."""
    done: list[int] = []
    helper = Background(owner)
    for i in range(8):
        helper.run(lambda i=i: (time.sleep(0.02 * (8 - i)), done.append(i)))  # the earliest sleep longest
    assert wait_for_background(5000)
    assert done == list(range(8))
    audit = AuditLog(Database(tmp_path / "audit.sqlite3"))
    kinds = ["pin_set", "unlock", "pin_wrong", "lockout", "unlock"]
    for kind in kinds:
        helper.run(lambda kind=kind: audit.record_event(kind))
    assert wait_for_background(5000)
    assert [e.kind for e in reversed(audit.entries())] == kinds


def test_no_callback_after_the_owner_is_destroyed(qtbot):
    owner = QWidget()
    called: list[object] = []
    gate = threading.Event()
    Background(owner).run(lambda: gate.wait(2), called.append, called.append)
    owner.deleteLater()
    qtbot.waitUntil(lambda: not __import__("shiboken6").isValid(owner), timeout=3000)
    gate.set()
    assert wait_for_background(3000)
    qtbot.wait(50)
    assert called == []


def test_the_pin_check_no_longer_runs_on_the_gui_thread(qtbot, monkeypatch):
    from kiosk.qt.admin_tab import AdminTab

    PinManager(SettingsStore()).set_pin("246810", "246810")
    pins = PinManager(SettingsStore())
    threads: list[QThread] = []
    real_check = pins.check

    def check(pin: str):
        threads.append(QThread.currentThread())
        return real_check(pin)

    monkeypatch.setattr(pins, "check", check)
    admin = AdminTab(Pins(pins), QTabWidget())
    qtbot.addWidget(admin)
    qtbot.keyClicks(admin.pin_field, "246810")
    qtbot.keyClick(admin.pin_field, Qt.Key.Key_Return)
    assert not admin.unlock_button.isEnabled() and not admin.unlocked  # busy while the check runs
    qtbot.waitUntil(lambda: admin.unlocked, timeout=5000)
    assert threads and threads[0] is not gui_thread()


def test_a_right_pin_checked_after_the_tab_locked_again_does_not_open_it(qtbot):
    from kiosk.qt.admin_tab import AdminTab

    PinManager(SettingsStore()).set_pin("246810", "246810")
    admin = AdminTab(Pins(PinManager(SettingsStore())), QTabWidget())
    qtbot.addWidget(admin)
    qtbot.keyClicks(admin.pin_field, "246810")
    qtbot.keyClick(admin.pin_field, Qt.Key.Key_Return)
    admin.lock()  # the admin left the tab while the PIN was being checked
    qtbot.waitUntil(lambda: not admin.busy, timeout=5000)
    assert not admin.unlocked and admin.stack.currentWidget() is admin.unlock_page and admin.pin_field.isEnabled()


def test_two_threads_use_the_store_at_once_each_on_its_own_connection():
    db = Database(data_dir() / "kiosk.sqlite3")
    audit = AuditLog(db)
    connections: dict[str, int] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(name: str) -> None:
        try:
            start.wait()
            connections[name] = id(db._conn)
            for i in range(200):
                audit.record(f"{name}-{i}", "ACCEPT", "face matches", 0.9)
                assert audit.entries(f"{name}-", limit=1)  # reads interleave with the other thread's writes
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    try:
        threads = [threading.Thread(target=work, args=(name,)) for name in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert len(set(connections.values()) | {id(db._conn)}) == 3 and db.connections == 3
        assert len(audit.entries(limit=1000)) == 400
        assert {e.claimed_id for e in audit.entries(limit=1000)} == {f"{n}-{i}" for n in "ab" for i in range(200)}
    finally:
        db.close()
    with pytest.raises(StorageError, match="closed"):
        db.query("SELECT 1")
    assert db.connections == 0
