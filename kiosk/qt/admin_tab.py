"""The admin tab behind a PIN: first run sets the PIN, 5 wrong entries lock it for a while (longer each
time, the message naming the recovery), and it locks itself again when the admin leaves the tab or after
``idle_s`` (default 5 min) of real inactivity: no key, mouse or touch input and no dialog or PIN check open. Once a
PIN has been set, a missing or damaged PIN record keeps the tab locked with the reason and the way back
(``kiosk admin reset-pin`` in a terminal); it never falls back to the first-run page. Checking and setting a
PIN (scrypt, ~45 ms) run off the GUI thread; a result that arrives after the tab locked again is ignored."""

from __future__ import annotations

import logging
import time

import shiboken6
from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QStackedWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from kiosk.app import MAX_PIN, MIN_PIN, Admin, PinResult, Pins, format_duration, key_place_line
from kiosk.errors import KioskError
from kiosk.qt.background import Background
from kiosk.rules.decision import KIOSK_MODES, MODE_ID

log = logging.getLogger(__name__)

SOUNDS_LABEL = "Play accept and reject sounds"
PAGE_WIDTH = 560  # the admin gate's and pages' boxes (fits an 800x600 screen)

_INPUT_EVENTS = {QEvent.Type.KeyPress, QEvent.Type.KeyRelease, QEvent.Type.MouseButtonPress,
                 QEvent.Type.MouseButtonRelease, QEvent.Type.MouseButtonDblClick, QEvent.Type.MouseMove,
                 QEvent.Type.HoverMove, QEvent.Type.Wheel, QEvent.Type.TouchBegin, QEvent.Type.TouchUpdate,
                 QEvent.Type.InputMethod}
ADMIN_IDLE_S = 300.0  # the admin tab locks itself after this much inactivity unless the settings say otherwise
GATE_IDLE_S = 60.0    # the locked gate (PIN page) left alone this long goes back to the visitor's screen
RESET_PIN_HINT = "Forgotten the PIN? Run kiosk admin reset-pin in a terminal on this machine."


def _pin_field() -> QLineEdit:
    field = QLineEdit()
    field.setEchoMode(QLineEdit.EchoMode.Password)
    field.setMaxLength(MAX_PIN)
    field.setInputMethodHints(Qt.InputMethodHint.ImhDigitsOnly)
    return field


def _page(title: str, *rows) -> tuple[QWidget, QFormLayout]:
    page = QWidget()
    box = QGroupBox(title)
    box.setFixedWidth(PAGE_WIDTH)  # the same width whatever message is shown in it
    form = QFormLayout(box)
    for row in rows:
        if isinstance(row, QLabel):
            row.setWordWrap(True)
        form.addRow(*row) if isinstance(row, tuple) else form.addRow(row)
    outer = QVBoxLayout(page)
    outer.addStretch(1)
    outer.addWidget(box, 0, Qt.AlignmentFlag.AlignHCenter)
    outer.addStretch(2)
    return page, form


class AdminTab(QWidget):
    unlocked_changed = Signal(bool)
    quit_requested = Signal()      # the admin chose "Quit kiosk" (only possible while unlocked)
    sounds_changed = Signal(bool)  # the sounds setting was saved
    mode_changed = Signal(str)     # the kiosk mode was saved (kiosk.rules.decision.KIOSK_MODES)
    leave_requested = Signal()     # back to the visitor's screen: the button, Esc, idle relock, an idle gate

    def __init__(self, pins: Pins | None, panel: QTabWidget, idle_s: float = ADMIN_IDLE_S,
                 unavailable_reason: str = "", parent=None, admin: Admin | None = None,
                 sounds: bool = True, mode: str = MODE_ID):
        super().__init__(parent)
        self.pins = pins    # kiosk.app.Pins: every PIN action and its audit entry (None: no PIN can be checked)
        self.admin = admin  # kiosk.app.Admin: the mode and sounds (None: they cannot be saved)
        self.panel = panel
        self.unlocked = False
        self.ops = Background(self)
        self._session = 0  # bumped by lock(): a PIN result from before it no longer counts
        self._pin_busy = False

        # first run: choose a PIN
        self.new_pin, self.new_pin_repeat = _pin_field(), _pin_field()
        self.set_pin_button = QPushButton("Set PIN")
        self.set_pin_button.clicked.connect(self.set_first_pin)
        self.setup_message = QLabel("")
        self.setup_page, _ = _page(f"First start: choose the administrator PIN ({MIN_PIN} to {MAX_PIN} digits)",
                                   ("New PIN", self.new_pin), ("Repeat", self.new_pin_repeat),
                                   self.set_pin_button, self.setup_message)
        self.new_pin_repeat.returnPressed.connect(self.set_first_pin)

        # normal: enter the PIN
        self.pin_field = _pin_field()
        self.pin_field.returnPressed.connect(self.try_unlock)
        self.unlock_button = QPushButton("Unlock")
        self.unlock_button.clicked.connect(self.try_unlock)
        self.unlock_message = QLabel("")
        self.unlock_page, _ = _page("Administration is locked", ("PIN", self.pin_field), self.unlock_button,
                                    self.unlock_message)

        # settings file damaged (or other storage trouble): no PIN can be checked
        self.error_label = QLabel(unavailable_reason)
        self.error_label.setWordWrap(True)
        self.error_page, _ = _page("Administration unavailable", self.error_label)

        # the unlocked panel gets a Security tab
        self.current_pin, self.changed_pin, self.changed_pin_repeat = _pin_field(), _pin_field(), _pin_field()
        self.change_button = QPushButton("Change PIN")
        self.change_button.clicked.connect(self.change_pin)
        self.change_message = QLabel("")
        lock_button = QPushButton("Lock now")
        lock_button.clicked.connect(self.lock)
        # where the data key is (read-only; "on the same disk" for the plain key file): kiosk key migrate moves it
        self.key_place = QLabel(key_place_line(getattr(admin, "storage", None)))
        self.key_place.setObjectName("keyPlace")
        self.key_place.setWordWrap(True)
        security, _ = _page("Administrator PIN", ("Current PIN", self.current_pin), ("New PIN", self.changed_pin),
                            ("Repeat", self.changed_pin_repeat), self.change_button, self.change_message, lock_button,
                            ("Data key", self.key_place))
        self.panel.addTab(security, "Security")

        # the kiosk itself: sounds on/off, and the only way out of a fullscreen kiosk
        self.sounds_box = QCheckBox(SOUNDS_LABEL)
        self.sounds_state = QLabel("")  # "unavailable: no audio device" where Qt Multimedia cannot play
        self.sounds_state.setObjectName("soundsState")
        self.sounds_state.setWordWrap(True)
        self.sounds_state.setVisible(False)
        self.source_label = QLabel("")  # the camera's state, technical reason included (visitors never see it)
        self.source_label.setWordWrap(True)
        self.model_label = QLabel("")
        self.model_label.setWordWrap(True)
        self.sounds_box.setChecked(sounds)
        self.sounds_box.setEnabled(admin is not None)
        self.sounds_box.toggled.connect(self._save_sounds)
        self.mode = mode if mode in KIOSK_MODES else MODE_ID
        self.mode_box = QComboBox()
        for value, label in KIOSK_MODES.items():
            self.mode_box.addItem(label, value)
        self.mode_box.setCurrentIndex(self.mode_box.findData(self.mode))
        self.mode_box.setEnabled(admin is not None)
        self.mode_box.activated.connect(lambda _index: self.set_mode(self.mode_box.currentData()))
        self.kiosk_message = QLabel("")
        self.kiosk_message.setWordWrap(True)
        self.quit_button = QPushButton("Quit kiosk")
        self.quit_button.clicked.connect(self.request_quit)
        self.kiosk_page, _ = _page("Kiosk", ("How people identify", self.mode_box), self.sounds_box,
                                   self.sounds_state, ("Camera", self.source_label), ("Model", self.model_label),
                                   self.kiosk_message, self.quit_button)
        self.panel.addTab(self.kiosk_page, "Kiosk")
        self.confirm = _confirm  # replaced in tests

        # the alert: IDs locked for face verification after repeated suspected photo attacks (while unlocked)
        self.alert = QLabel("")
        self.alert.setObjectName("alert")
        self.alert.setWordWrap(True)
        self.alert.setStyleSheet("background: #b00020; color: white; font-weight: bold; padding: 6px;")
        self.locked_ids = QComboBox()
        self.unlock_face_button = QPushButton("Unlock face verification")
        self.unlock_face_button.clicked.connect(self.unlock_face)
        self.alert_row = QWidget()
        row = QHBoxLayout(self.alert_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.alert, 1)
        row.addWidget(self.locked_ids)
        row.addWidget(self.unlock_face_button)
        self.alert_row.setVisible(False)
        self.face_locks: dict[str, float] = {}

        self.stack = QStackedWidget()
        for page in (self.setup_page, self.unlock_page, self.panel, self.error_page):
            self.stack.addWidget(page)
        self.back_button = QPushButton("Back to kiosk")  # locks: leaving the admin view always does
        self.back_button.setObjectName("backButton")
        self.back_button.clicked.connect(self.leave_requested)
        top = QHBoxLayout()
        top.addStretch(1)
        top.addWidget(self.back_button)
        outer = QVBoxLayout(self)
        outer.addLayout(top)
        outer.addWidget(self.alert_row)
        scroll = QScrollArea()  # on an 800x600 screen the admin pages scroll rather than widen the window
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self.stack)
        outer.addWidget(scroll)
        self._escape = QShortcut(QKeySequence(Qt.Key.Key_Escape), self, context=Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self._escape.activated.connect(self.leave_requested)

        self.idle_timer = QTimer(self)
        self.idle_timer.setSingleShot(True)
        self.idle_timer.setInterval(int(idle_s * 1000))
        self.idle_timer.timeout.connect(self._idle_timeout)
        self.idle_s = idle_s
        self.gate_timer = QTimer(self)  # the PIN page shown but left alone: back to the visitor's screen
        self.gate_timer.setSingleShot(True)
        self.gate_timer.setInterval(int(GATE_IDLE_S * 1000))
        self.gate_timer.timeout.connect(self._gate_timeout)
        self._lock_ticker = QTimer(self)  # counts down a lockout on screen
        self._lock_ticker.setInterval(1000)
        self._lock_ticker.timeout.connect(self._show_lock_state)
        self._activity = _ActivityFilter((self.idle_timer, self.gate_timer), self)  # a child: gone with the tab
        self.lock()

    # -- locking ------------------------------------------------------------------------------------------
    def lock(self) -> None:
        if self.unlocked:
            log.info("admin locked")
        self.unlocked = False
        self._session += 1
        if self.pins is not None:
            self.pins.end_session()  # a fleet's proof for the registry goes with the session
        self.idle_timer.stop()
        app = QApplication.instance()
        if app is not None:
            app.removeEventFilter(self._activity)
        for field in (self.pin_field, self.new_pin, self.new_pin_repeat, self.current_pin, self.changed_pin,
                      self.changed_pin_repeat):
            field.clear()
        self.unlocked_changed.emit(False)
        self.alert_row.setVisible(False)
        self._show_gate()
        self.focus_pin()
        if self.isVisible():
            self._watch_gate()

    def focus_pin(self) -> None:
        """Keyboard focus to the field the gate asks for (the tab is showing, the field can take input)."""
        page = self.stack.currentWidget()
        field = {self.setup_page: self.new_pin, self.unlock_page: self.pin_field}.get(page)
        if field is not None and field.isEnabled() and self.isVisible():
            field.setFocus(Qt.FocusReason.OtherFocusReason)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not self.unlocked:
            self.focus_pin()
            self._watch_gate()

    def hideEvent(self, event) -> None:
        super().hideEvent(event)
        self.gate_timer.stop()
        if not self.unlocked:
            QApplication.instance().removeEventFilter(self._activity)

    def _watch_gate(self) -> None:
        QApplication.instance().installEventFilter(self._activity)
        self.gate_timer.start()

    def _gate_timeout(self) -> None:
        """The PIN page shown with nobody typing (a visitor who found the way in): the visitor's screen again."""
        if self.unlocked or not self.isVisible():
            return
        if QApplication.activeModalWidget() is not None or self._pin_busy:
            self.gate_timer.start()
            return
        log.info("admin gate left alone for %.0f s: back to the kiosk", GATE_IDLE_S)
        self.leave_requested.emit()

    # -- the kiosk page ----------------------------------------------------------------------------------------
    def request_quit(self) -> None:
        if not self.unlocked:  # never without the PIN
            return
        if self.confirm("Quit kiosk", "Close the kiosk? The entrance is unattended until it is started again."):
            log.info("admin quits the kiosk")
            self.quit_requested.emit()

    def _save_sounds(self, on: bool) -> None:
        admin = self.admin
        if admin is None:
            return

        def saved(_settings) -> None:
            self.kiosk_message.setText("")
            log.info("sounds %s", "on" if on else "off")
            self.sounds_changed.emit(on)

        def failed(exc: BaseException) -> None:
            self.kiosk_message.setText(f"The setting could not be saved: {exc}")
            self.sounds_box.blockSignals(True)
            self.sounds_box.setChecked(not on)
            self.sounds_box.blockSignals(False)

        self.ops.run(lambda: admin.set_sounds(on), saved, failed, busy=[self.sounds_box], key="sounds")

    def set_mode(self, mode: str) -> None:
        """Change the kiosk mode (after a confirmation), save it, tell the kiosk and record it."""
        admin, old = self.admin, self.mode
        if admin is None or mode == old or mode not in KIOSK_MODES:
            return
        walk_up = mode != MODE_ID
        if not self.confirm("Kiosk mode", f"Change how people identify from '{KIOSK_MODES[old]}' to "
                            f"'{KIOSK_MODES[mode]}'?" + (" Walk-ups are searched among everyone enrolled: "
                            "Admin > Threshold shows the expected false accepts per walk-up." if walk_up else "")):
            self.mode_box.setCurrentIndex(self.mode_box.findData(old))
            return

        def saved(_settings) -> None:
            self.mode = mode
            self.kiosk_message.setText(f"Mode: {KIOSK_MODES[mode]}.")
            log.info("kiosk mode %s -> %s", old, mode)
            self.mode_changed.emit(mode)

        def failed(exc: BaseException) -> None:
            self.kiosk_message.setText(f"The mode could not be saved: {exc}")
            self.mode_box.setCurrentIndex(self.mode_box.findData(old))

        self.ops.run(lambda: admin.set_mode(mode, old), saved, failed, busy=[self.mode_box], key="mode")

    def _show_gate(self) -> None:
        if self.pins is None:
            self.stack.setCurrentWidget(self.error_page)
            return
        try:
            first_run = not self.pins.is_set
        except KioskError as exc:
            self.error_label.setText(str(exc))
            self.stack.setCurrentWidget(self.error_page)
            return
        self.stack.setCurrentWidget(self.setup_page if first_run else self.unlock_page)
        if not first_run:
            self._show_lock_state()

    def refresh_gate(self) -> None:
        """While locked: the gate as the PIN's state stands now (e.g. a PIN set or a lockout begun at another
        kiosk of the fleet); an open session and a PIN being checked are left alone."""
        if not self.unlocked and not self._pin_busy:
            self._show_gate()

    def _unlock(self) -> None:
        self.unlocked = True
        self.gate_timer.stop()
        self.unlock_message.setText("")
        self.stack.setCurrentWidget(self.panel)
        QApplication.instance().installEventFilter(self._activity)
        self.idle_timer.start()
        log.info("admin unlocked")
        self.refresh_face_locks()
        self.unlocked_changed.emit(True)

    # -- face-verification locks (kiosk.rules.retries) ------------------------------------------------------
    def refresh_face_locks(self) -> None:
        """The alert as the locks stand now (read off the GUI thread); shown only while the tab is unlocked."""
        admin = self.admin
        if admin is None:
            return
        self.ops.run(admin.face_locks, self._show_face_locks,
                     lambda exc: log.error("cannot read the face-verification locks: %s", exc), key="face_locks")

    def _show_face_locks(self, locks: dict[str, float]) -> None:
        self.face_locks = dict(locks)
        self.locked_ids.clear()
        self.locked_ids.addItems(sorted(locks))
        until = lambda t: time.strftime("%H:%M", time.localtime(t))  # noqa: E731
        self.alert.setText("Face verification locked after repeated suspected photo attacks: "
                           + ", ".join(f"{i} (until {until(t)})" for i, t in sorted(locks.items()))
                           + ". Check who tried; unlock to let the person in before then." if locks else "")
        self.alert_row.setVisible(bool(locks) and self.unlocked)

    def unlock_face(self) -> None:
        employee_id, admin = self.locked_ids.currentText(), self.admin
        if not self.unlocked or admin is None or not employee_id:
            return
        if not self.confirm("Unlock face verification", f"Let {employee_id} verify by face again? Their ID was "
                            "locked after repeated suspected photo attacks."):
            return
        self.ops.run(lambda: admin.unlock_face(employee_id), lambda _done: self.refresh_face_locks(),
                     lambda exc: self.alert.setText(f"Could not unlock {employee_id}: {exc}"),
                     busy=[self.unlock_face_button])

    def _idle_timeout(self) -> None:
        """``idle_s`` without input. A dialog open (a confirmation, a file chooser) or a PIN being checked is
        not inactivity: the count starts again."""
        if not self.unlocked:
            return
        if QApplication.activeModalWidget() is not None or QApplication.activePopupWidget() is not None \
                or self._pin_busy:
            self.idle_timer.start()
            return
        log.info("admin idle for %.0f s: locking, back to the kiosk", self.idle_s)
        self.lock()
        self.leave_requested.emit()

    # -- what the operator is told (the Kiosk page) -----------------------------------------------------------
    def set_sound_state(self, problem: str) -> None:
        """The sounds' real state: ``problem`` is why they cannot play ("" if they can)."""
        self.sounds_box.setText(SOUNDS_LABEL if not problem else f"{SOUNDS_LABEL} (unavailable: {problem})")
        self.sounds_state.setText(f"Sounds unavailable: {problem}" if problem else "")
        self.sounds_state.setVisible(bool(problem))

    def set_source_state(self, text: str) -> None:
        """The camera as the kiosk sees it, with the technical reason when there is no picture."""
        self.source_label.setText(text)

    def set_model_state(self, text: str) -> None:
        self.model_label.setText(text)

    def _show_lock_state(self) -> None:
        try:
            locked = self.pins.locked_for()
        except KioskError as exc:
            self.unlock_message.setText(str(exc))
            return
        self.pin_field.setEnabled(locked <= 0)
        self.unlock_button.setEnabled(locked <= 0)
        if locked > 0:
            self.unlock_message.setText(f"Too many wrong PINs: try again in {format_duration(locked)}. "
                                        f"{RESET_PIN_HINT}")
            self._lock_ticker.start()
        else:
            if self._lock_ticker.isActive():
                self.unlock_message.setText("")
                self._lock_ticker.stop()
                self.focus_pin()  # the lockout is over: the PIN can be typed again

    @property
    def locked_out(self) -> bool:
        """No PIN entry possible now: a lockout running, or the PIN record cannot be checked."""
        return self.pins is None or self.pins.locked_out

    # -- PIN actions (off the GUI thread) --------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """A PIN is being checked or set."""
        return self._pin_busy

    def _run_pin_op(self, operation, on_success, on_failure, busy: list[QWidget]) -> None:
        self._pin_busy = True
        session = self._session

        def done(callback):
            def call(value) -> None:
                self._pin_busy = False
                if session == self._session:  # not locked meanwhile
                    callback(value)
                elif not self.unlocked:  # locked meanwhile: the gate as it stands now (a lockout may have begun)
                    if self.pins is not None:
                        self.pins.end_session()  # a PIN that checked out after the lock opens no session
                    self._show_gate()
            return call

        self.ops.run(operation, done(on_success), done(on_failure), busy=busy)

    def set_first_pin(self) -> None:
        if self._pin_busy:
            return
        pins, pin, repeat = self.pins, self.new_pin.text(), self.new_pin_repeat.text()
        self.new_pin.clear()
        self.new_pin_repeat.clear()
        self._run_pin_op(lambda: pins.set_first(pin, repeat), self._on_first_pin_set, self._on_first_pin_failed,
                         [self.new_pin, self.new_pin_repeat, self.set_pin_button])

    def _on_first_pin_set(self, _result: object) -> None:
        log.info("admin PIN set")
        self.setup_message.setText("")
        self._unlock()

    def _on_first_pin_failed(self, exc: BaseException) -> None:
        self.setup_message.setText(_message(exc))
        self.focus_pin()

    def try_unlock(self) -> None:
        pin = self.pin_field.text()
        self.pin_field.clear()
        if not pin or self._pin_busy:
            return
        pins = self.pins
        self._run_pin_op(lambda: pins.unlock(pin), self._on_checked, self._on_check_failed,
                         [self.pin_field, self.unlock_button])

    def _on_checked(self, result: PinResult) -> None:
        if result.ok:
            self._unlock()
            return
        self.unlock_message.setText(result.message)
        self._show_lock_state()
        self.focus_pin()

    def _on_check_failed(self, exc: BaseException) -> None:  # e.g. the PIN record was deleted meanwhile
        self.unlock_message.setText(_message(exc))
        self._show_gate()

    def change_pin(self) -> None:
        if self._pin_busy:
            return
        pins = self.pins
        new, repeat, current = self.changed_pin.text(), self.changed_pin_repeat.text(), self.current_pin.text()
        for field in (self.current_pin, self.changed_pin, self.changed_pin_repeat):
            field.clear()
        self._run_pin_op(lambda: pins.change(current, new, repeat), self._on_pin_changed,
                         self._on_change_failed,
                         [self.current_pin, self.changed_pin, self.changed_pin_repeat, self.change_button])

    def _on_pin_changed(self, _result: object) -> None:
        self.change_message.setText("PIN changed.")
        log.info("admin PIN changed")

    def _on_change_failed(self, exc: BaseException) -> None:
        self.change_message.setText(_message(exc))
        if self.locked_out:  # too many wrong current PINs (or the record went missing)
            self.lock()


def _confirm(title: str, text: str) -> bool:
    answer = QMessageBox.question(None, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def _message(exc: BaseException) -> str:
    if isinstance(exc, KioskError):
        return str(exc)
    log.error("PIN operation failed", exc_info=exc)
    return f"The PIN could not be checked: {exc}"


class _ActivityFilter(QObject):
    """Any key or mouse input restarts the running idle timers (the open panel's, the shown gate's)."""

    def __init__(self, timers: tuple[QTimer, ...], parent: QObject):
        super().__init__(parent)
        self.timers = timers

    def eventFilter(self, obj, event) -> bool:
        if event.type() in _INPUT_EVENTS:
            for timer in self.timers:
                if shiboken6.isValid(timer) and timer.isActive():
                    timer.start()
        return False
