"""Admin page: the door. Which back end an audited ACCEPT opens the door through (an MQTT broker, a signed
webhook, a USB relay board on a serial port, or none), its fields, how long the door stays unlocked, the
connection's state (updated every second while the page shows), Save and Test door.

Everything goes through kiosk.app.door_admin.DoorAdmin, off the GUI thread: Save checks every field (the
problems are listed and the wrong fields marked; nothing is saved), keeps the secrets in owner-only files and
audits the change; Test door sends one unlock, audited with its outcome. Both need the open admin session.
A secret typed here is never shown again: the page only says whether one is set.
"""

from __future__ import annotations

import logging
import secrets

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from kiosk.app import AuditNotRecorded
from kiosk.app.door import DoorState
from kiosk.app.door_admin import (
    BACKEND_LABELS,
    BAUDS,
    DEFAULTS,
    FIELDS,
    NOT_SET,
    SET,
    UNLOCK_RANGE,
    DoorAdmin,
    DoorConfigError,
    DoorNotOpened,
    DoorTest,
    DoorView,
)
from kiosk.qt.background import Background
from kiosk.qt.setting_page import button_row

log = logging.getLogger(__name__)

STATE_POLL_MS = 1000
ERROR_STYLE = "border: 2px solid #c62828;"
SECRET_HINTS = {SET: "set: leave empty to keep it", NOT_SET: "not set"}


def _form(title: str) -> tuple[QGroupBox, QFormLayout]:
    box = QGroupBox(title)
    form = QFormLayout(box)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    return box, form


def _row(*widgets: QWidget, stretch: bool = False) -> QWidget:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget, 1 if isinstance(widget, QLineEdit) else 0)
    if stretch:
        layout.addStretch(1)
    return row


def _secret_field() -> QLineEdit:
    field = QLineEdit()
    field.setEchoMode(QLineEdit.EchoMode.Password)
    field.setMaxLength(1024)
    return field


class DoorPage(QWidget):
    def __init__(self, door_admin: DoorAdmin, parent=None):
        super().__init__(parent)
        self.door_admin = door_admin
        self.ops = Background(self)
        self.view: DoorView | None = None  # the saved settings, once read
        self._saved_form: dict | None = None
        explain = QLabel("An audited ACCEPT opens the door through the back end chosen here; a REJECT or a "
                         "suspected attack never does. Passwords and keys are kept in owner-only files in the "
                         "config folder and are never shown again.")
        explain.setWordWrap(True)

        self.backend_box = QComboBox()
        for value, label in BACKEND_LABELS.items():
            self.backend_box.addItem(label, value)
        self.backend_box.setMinimumWidth(240)
        self.backend_box.currentIndexChanged.connect(self._backend_chosen)
        self.unlock_box = QDoubleSpinBox()
        self.unlock_box.setRange(*UNLOCK_RANGE)
        self.unlock_box.setSingleStep(0.5)
        self.unlock_box.setDecimals(1)
        self.unlock_box.setSuffix(" s")
        self.unlock_box.setValue(3.0)
        self.unlock_box.setMinimumWidth(110)
        top = QFormLayout()
        top.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        top.addRow("Back end", self.backend_box)
        top.addRow("Unlock time", self.unlock_box)

        # one box of fields per back end
        none_box, none_form = _form("No door")
        nothing = QLabel("The kiosk shows its verdicts and opens nothing.")
        nothing.setWordWrap(True)
        none_form.addRow(nothing)

        mqtt_box, mqtt = _form("MQTT broker")
        self.host = QLineEdit()
        self.host.setPlaceholderText("broker.lan or 192.168.1.20")
        self.port = QLineEdit(str(DEFAULTS["port"]))
        self.port.setMaximumWidth(90)
        self.tls = QCheckBox("TLS")
        self.tls.toggled.connect(self._tls_port)
        self.discovery = QCheckBox("Home Assistant discovery")
        self.username = QLineEdit()
        self.password = _secret_field()
        self.topic = QLineEdit(DEFAULTS["topic"])
        mqtt.addRow("Host", _row(self.host, QLabel("Port"), self.port))
        mqtt.addRow("", _row(self.tls, self.discovery, stretch=True))
        mqtt.addRow("User name", self.username)
        mqtt.addRow("Password", self.password)
        mqtt.addRow("Topic", self.topic)

        hook_box, hook = _form("Signed webhook")
        self.url = QLineEdit()
        self.url.setPlaceholderText("https://door.lan/unlock")
        self.webhook_key = _secret_field()
        self.new_key_button = QPushButton("New key")
        self.new_key_button.clicked.connect(self.new_webhook_key)
        hook.addRow("URL", self.url)
        hook.addRow("Signing key", _row(self.webhook_key, self.new_key_button))

        serial_box, serial = _form("USB relay (serial)")
        self.device = QLineEdit(DEFAULTS["device"])
        self.on_hex = QLineEdit(DEFAULTS["on_hex"])
        self.off_hex = QLineEdit(DEFAULTS["off_hex"])
        self.baud = QComboBox()
        for value in BAUDS:
            self.baud.addItem(str(value), value)
        self.baud.setCurrentIndex(self.baud.findData(DEFAULTS["baud"]))
        serial.addRow("Device", self.device)
        serial.addRow("On bytes (hex)", self.on_hex)
        serial.addRow("Off bytes (hex)", self.off_hex)
        serial.addRow("Baud rate", self.baud)

        self.boxes = {"none": none_box, "mqtt": mqtt_box, "webhook": hook_box, "serial": serial_box}
        self.stack = QStackedWidget()
        for box in self.boxes.values():
            self.stack.addWidget(box)
        self.inputs: dict[str, QWidget] = {
            "backend": self.backend_box, "unlock_s": self.unlock_box, "host": self.host, "port": self.port,
            "tls": self.tls, "username": self.username, "password": self.password, "topic": self.topic,
            "discovery": self.discovery, "url": self.url, "webhook_key": self.webhook_key, "device": self.device,
            "on_hex": self.on_hex, "off_hex": self.off_hex, "baud": self.baud}

        self.state_label = QLabel("Connection: ...")
        self.state_label.setObjectName("doorState")
        self.state_label.setWordWrap(True)
        self.save_button = QPushButton("Save")
        self.save_button.clicked.connect(self.save)
        self.test_button = QPushButton("Test door")
        self.test_button.clicked.connect(self.test_door)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addWidget(explain)
        layout.addLayout(top)
        layout.addWidget(self.stack)
        layout.addWidget(self.state_label)
        layout.addLayout(button_row(self.save_button, self.test_button))
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.state_timer = QTimer(self)
        self.state_timer.setInterval(STATE_POLL_MS)
        self.state_timer.timeout.connect(self.refresh_state)
        self._show_backend()
        self.reload()

    # -- reading -------------------------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self.view is not None

    @property
    def busy(self) -> bool:
        """A read, a save or a test is still under way off the GUI thread."""
        return self.ops.running > 0

    def reload(self) -> None:
        """The saved settings into the form (read off the GUI thread)."""
        self.ops.run(self.door_admin.config, self._show_view,
                     lambda exc: self._say(f"The door settings cannot be read: {exc}", error=True), key="config")

    def _show_view(self, view: DoorView) -> None:
        self.view = view
        self.backend_box.setCurrentIndex(self.backend_box.findData(view.backend))
        self.unlock_box.setValue(view.unlock_s)
        for name, value in view.fields.items():
            widget = self.inputs[name]
            if isinstance(widget, QCheckBox):
                widget.blockSignals(True)
                widget.setChecked(bool(value))
                widget.blockSignals(False)
            elif isinstance(widget, QComboBox):
                widget.setCurrentIndex(max(0, widget.findData(value)))
            else:
                widget.setText(str(value))
        for name, field in (("password", self.password), ("webhook_key", self.webhook_key)):
            field.clear()
            field.setEchoMode(QLineEdit.EchoMode.Password)
            field.setPlaceholderText(SECRET_HINTS[view.secrets.get(name, NOT_SET)])
        self._saved_form = self._form_values()
        if view.problem:
            self._say(f"{view.problem}. Save to replace it.", error=True)
        self._show_backend()
        self.refresh_state()

    def _form_values(self) -> dict:
        backend = self.backend_box.currentData()
        return {"backend": backend, "unlock_s": round(self.unlock_box.value(), 1), **self._fields(backend),
                "password": self.password.text(), "webhook_key": self.webhook_key.text()}

    def _fields(self, backend: str) -> dict:
        values = {}
        for name in FIELDS.get(backend, ()):
            widget = self.inputs[name]
            if isinstance(widget, QCheckBox):
                values[name] = widget.isChecked()
            elif isinstance(widget, QComboBox):
                values[name] = widget.currentData()
            else:
                values[name] = widget.text()
        return values

    @property
    def pending(self) -> bool:
        """The form shows something other than the saved settings."""
        return self._saved_form is not None and self._form_values() != self._saved_form

    # -- display -------------------------------------------------------------------------------------------
    def _backend_chosen(self, _index: int) -> None:
        self._mark(set(), focus=False)
        self._say("")
        self._show_backend()

    def _show_backend(self) -> None:
        backend = self.backend_box.currentData()
        for name, box in self.boxes.items():  # the stack as tall as the back end shown, not the tallest
            policy = QSizePolicy.Policy.Preferred if name == backend else QSizePolicy.Policy.Ignored
            box.setSizePolicy(policy, policy)
        self.stack.setCurrentWidget(self.boxes[backend])
        self.stack.adjustSize()
        self.test_button.setEnabled(self.view is not None and self.view.backend != "none")

    def _tls_port(self, on: bool) -> None:
        if self.port.text().strip() in ("1883", "8883", ""):
            self.port.setText("8883" if on else "1883")

    def refresh_state(self) -> None:
        """The connection's state now (cheap: DoorAdmin.state reads what the back end already knows)."""
        try:
            state = self.door_admin.state()
        except Exception as exc:  # never let a back end's failure into the event loop
            state = DoorState(True, False, f"the state cannot be read ({exc})")
        self.state_label.setText(f"Connection: {state.text}")
        color = {True: "#1b5e20", False: "#c62828"}.get(state.connected, "#111820") if state.configured \
            else "#555f6b"
        self.state_label.setStyleSheet(f"color: {color};")

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.refresh_state()
        self.state_timer.start()

    def hideEvent(self, event) -> None:
        super().hideEvent(event)
        self.state_timer.stop()

    def _say(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color:#c62828;" if error else "")

    def _mark(self, names: set[str], focus: bool = True) -> None:
        for name, widget in self.inputs.items():
            widget.setStyleSheet(ERROR_STYLE if name in names else "")
        first = next((name for name in self.inputs if name in names), None)
        if focus and first is not None:
            self.inputs[first].setFocus()

    # -- actions -------------------------------------------------------------------------------------------
    def new_webhook_key(self) -> None:
        """A random signing key, shown once so that it can be copied to the door's receiver."""
        self.webhook_key.setText(secrets.token_urlsafe(32))
        self.webhook_key.setEchoMode(QLineEdit.EchoMode.Normal)
        self._say("Copy this key to the door's receiver now: once saved, it is not shown again.")

    def save(self) -> None:
        """Check and save (off the GUI thread); DoorAdmin audits the change."""
        form = self._form_values()
        backend = form["backend"]
        fields = self._fields(backend)
        password = form["password"] or None  # empty: keep the one set
        key = form["webhook_key"] or None
        door_admin = self.door_admin

        def saved(view: DoorView) -> None:
            self._mark(set())
            self._show_view(view)
            self._say("Saved." if view.backend != "none" else "Saved: no door.")

        def failed(exc: BaseException) -> None:
            self._show_backend()  # Test door as the saved settings allow
            if isinstance(exc, DoorConfigError):
                self._mark({name for name, _ in exc.problems})
                self._say("Not saved:\n" + "\n".join(message for _, message in exc.problems), error=True)
                return
            if isinstance(exc, AuditNotRecorded):
                self.reload()
                self._say(f"Saved, but {exc}", error=True)
                return
            if isinstance(exc, DoorNotOpened):  # saved and audited; the back end would not start
                self.reload()
                self._say(f"Saved, but {exc}", error=True)
                return
            self._say(f"Not saved: {exc}", error=True)

        self._say("Saving the door settings...")
        self.ops.run(lambda: door_admin.save(backend, form["unlock_s"], fields, password, key), saved, failed,
                     busy=[self.save_button, self.test_button], key="save")

    def test_door(self) -> None:
        """One unlock now, through the saved settings (off the GUI thread; audited with its outcome)."""
        if self.pending:
            self._say("Save first: Test door uses the saved settings.", error=True)
            return

        def done(result: DoorTest) -> None:
            self.refresh_state()
            self._say("Test door: the unlock was delivered." if result.delivered
                      else f"Test door: the unlock was {result.reason}.", error=not result.delivered)

        def failed(exc: BaseException) -> None:
            self.refresh_state()
            if isinstance(exc, AuditNotRecorded):
                self._say(f"Test door: sent, but {exc}", error=True)
                return
            self._say(f"Test door: {exc}", error=True)

        self._say("Testing the door...")
        self.ops.run(self.door_admin.test, done, failed, busy=[self.test_button], key="test")
