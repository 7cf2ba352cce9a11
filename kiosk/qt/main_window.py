"""The kiosk window: wires the capture thread, the inference worker, the kiosk tab and the admin tab."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QEvent, QObject, QTimer, Signal
from PySide6.QtGui import QGuiApplication, QIcon, QKeySequence, QShortcut
from PySide6.QtWidgets import QLabel, QMainWindow, QStackedWidget, QTabWidget, QWidget

from kiosk.app import IntegrityReport, Kiosk, StorageError
from kiosk.errors import KioskError
from kiosk.io.sources import IMAGE_EXTENSIONS, FrameSource, is_camera_spec, open_source
from kiosk.paths import ASSETS_DIR, DEFAULT_WEIGHTS
from kiosk.qt.admin_tab import AdminTab
from kiosk.qt.audit_page import AuditPage
from kiosk.qt.background import wait_for_background
from kiosk.qt.capture import FAILED, LIVE, FrameCapture
from kiosk.qt.connection_status import ConnectionLabel
from kiosk.qt.door_page import DoorPage
from kiosk.qt.employees_page import EmployeesPage
from kiosk.qt.kiosk_tab import NO_PICTURE_OVERLAY, VERIFYING, KioskTab
from kiosk.qt.liveness_page import LivenessPage
from kiosk.qt.native_window import window_exists
from kiosk.qt.sounds import SoundPlayer
from kiosk.qt.threshold_page import ThresholdPage
from kiosk.qt.worker import EngineInfo, InferenceThread, VerificationWorker
from kiosk.rules.decision import REASON_LOCKED, Decision, ThresholdPolicy
from kiosk.vision.engine import FaceEngine

log = logging.getLogger(__name__)

FOLDER_FPS = 5.0  # an image folder shows this many photos per second unless --fps says otherwise
STALL_S = 5.0     # a source that is open but has sent no frame for this long counts as out of service
ADMIN_KEYS = "Ctrl+Alt+A"  # the admin view (behind the PIN); nothing on the visitor's screen offers it
EXIT_WINDOW_LOST = 4  # the window was destroyed from outside: the process ends (a supervisor starts it again)
CORNER_PX, CORNER_TAPS, CORNER_WINDOW_S = 80, 5, 4.0  # or 5 taps within 4 s in the screen's top-left corner


def window_icon() -> QIcon:
    icon = QIcon()
    for name in ("icon.svg", "icon.png"):
        if (ASSETS_DIR / name).is_file():
            icon.addFile(str(ASSETS_DIR / name))
    return icon


def kiosk_style(name: str = "style.qss") -> str:
    """A style sheet from assets/ (style.qss: the kiosk screen's look, admin.qss: the admin view's); empty, with
    one log line, if it cannot be read."""
    try:
        return (ASSETS_DIR / name).read_text(encoding="utf-8")
    except OSError as exc:
        log.warning("no style sheet: %s", exc)
        return ""


@dataclass
class AppConfig:
    source: str = "0"                       # camera index, video file, image file or folder
    weights: Path = DEFAULT_WEIGHTS
    fullscreen: bool = False
    fps: float | None = None                # pacing of file sources (folder default FOLDER_FPS, video: own rate)
    loop: bool = True                       # replay videos and folders
    opener: Callable[[], FrameSource] | None = None   # replaces open_source (tests, other devices)
    engine_factory: Callable[[Path], FaceEngine] = FaceEngine
    admin_idle_s: float | None = None       # None: from the settings
    verdict_display_s: float | None = None  # None: from the settings
    idle_rate_hz: float = 10.0              # face analysis rate while nobody is being verified
    source_retry: tuple[float, float] = (1.0, 10.0)
    stall_s: float = STALL_S                # no frame for this long from an open source: out of service
    database: str | None = None             # a fleet registry's URL (None: KIOSK_DATABASE_URL, else embedded)

    def open_source(self) -> FrameSource:
        if self.opener is not None:
            return self.opener()
        fps = self.fps
        if fps is None and not is_camera_spec(self.source):
            path = Path(self.source)
            if path.is_dir() or path.suffix.lower() in IMAGE_EXTENSIONS:  # photos: a gentle slide show
                fps = FOLDER_FPS
        return open_source(self.source, loop=self.loop, fps=fps)


class MainWindow(QMainWindow):
    registry_changed = Signal()  # the fleet registry's copy changed (emitted from the sync thread: queued)
    settings_changed = Signal()  # the fleet's shared settings changed elsewhere (from the sync thread: queued)

    def __init__(self, config: AppConfig, core: Kiosk | None = None):
        super().__init__()
        self.setWindowTitle("Siamese Kiosk")
        self.setWindowIcon(window_icon())
        self.config = config
        self.kiosk_mode = config.fullscreen  # fullscreen at the entrance: only the admin (PIN) closes the window
        self._quit_authorised = False
        self._own_core = core is None
        self.core = core or Kiosk.open(database=config.database)  # the store and every use case (kiosk.app)
        self.settings_store = self.core.settings_store  # a fleet kiosk's: shared ones from the registry
        settings_error = self.core.settings_problem  # the kiosk runs on defaults; admin stays closed until fixed
        settings = self.core.settings()
        mirror = config.opener is None and is_camera_spec(config.source)

        self.kiosk = KioskTab(mirror, config.verdict_display_s or settings.verdict_display_s)
        self.kiosk.setStyleSheet(kiosk_style())
        self.kiosk.set_mode(settings.kiosk_mode)  # ID + face, walk-up, or both
        self.sounds = SoundPlayer()
        self.sounds_on = settings.sounds
        self.employees = EmployeesPage(self.core, mirror)
        self.threshold_page = ThresholdPage(self.core.admin, settings.threshold)
        self.liveness_page = LivenessPage(self.core.admin, settings.liveness_policy)
        self.audit_page = AuditPage(self.core.audit, self.core.admin)
        self.door_page = DoorPage(self.core.door_admin)
        panel = QTabWidget()
        panel.addTab(self.employees, "Employees")
        panel.addTab(self.threshold_page, "Threshold")
        panel.addTab(self.liveness_page, "Liveness")
        panel.addTab(self.door_page, "Door")
        panel.addTab(self.audit_page, "Audit log")
        if self.core.is_fleet:  # the registry's state, and how old the copy the kiosk verifies with is
            panel.addTab(ConnectionLabel(self.core.connection, detailed=True), "Registry")
        self.admin = AdminTab(self.core.pins, panel, config.admin_idle_s or settings.admin_idle_s, settings_error,
                              admin=None if settings_error else self.core.admin, sounds=settings.sounds,
                              mode=settings.kiosk_mode)
        self.admin.quit_requested.connect(self.quit_kiosk)
        self.admin.unlocked_changed.connect(self._on_admin_unlocked)
        self.admin.sounds_changed.connect(self._set_sounds)
        self.admin.mode_changed.connect(self.kiosk.set_mode)
        self.admin.setStyleSheet(kiosk_style("admin.qss"))
        self.admin.leave_requested.connect(self.show_kiosk_view)
        self.tabs = QStackedWidget()  # the visitor's screen or the admin view: no tab bar a visitor could use
        self.tabs.addWidget(self.kiosk)
        self.tabs.addWidget(self.admin)
        self.tabs.currentChanged.connect(self._on_tab_changed)
        self._admin_shortcut = QShortcut(QKeySequence(ADMIN_KEYS), self)
        self._admin_shortcut.activated.connect(self.show_admin_view)
        self._corner = _CornerTaps(self.show_admin_view, self.kiosk)
        self.setCentralWidget(self.tabs)
        self.source_status, self.model_status = QLabel("Opening the video source..."), QLabel("Loading the model...")
        self.statusBar().addWidget(self.source_status, 1)
        self.statusBar().addPermanentWidget(self.model_status)
        self.connection_status = ConnectionLabel(self.core.connection)
        self.statusBar().addPermanentWidget(self.connection_status)
        self.store_status = QLabel()  # what the store's self-check found at start (damaged references), if anything
        self.store_status.setStyleSheet("color: #b00020; font-weight: bold")
        self.store_status.setWordWrap(True)
        self.statusBar().addWidget(self.store_status, 2)
        self._show_store_health(self.core.health)

        self.worker = VerificationWorker(config.weights, self.core, settings.fusion, settings.threshold,
                                         config.engine_factory, config.idle_rate_hz, settings.liveness_policy)
        self.inference = InferenceThread(self.worker)
        w = self.worker
        w.engine_ready.connect(self._on_engine_ready)
        w.engine_failed.connect(self._on_engine_failed)
        w.analysed.connect(self.kiosk.on_analysed)
        w.analysed.connect(self.employees.on_analysed)
        w.progress.connect(self.kiosk.on_progress)
        w.decided.connect(self._on_decided)
        w.enrolled.connect(self.employees.on_enrolled)
        w.enrol_failed.connect(self.employees.on_enrol_failed)
        w.error.connect(self._on_worker_error)
        w.refreshing.connect(self._on_refreshing)
        w.refreshed.connect(self._on_refreshed)
        w.cancelled.connect(self.kiosk.on_cancelled)
        self.kiosk.verification_requested.connect(self.worker.request_verification)  # GUI -> inference thread
        self.employees.enrol_requested.connect(self.worker.request_enrolment)
        self.kiosk.walk_up_requested.connect(self.worker.request_walk_up)
        self.employees.deleted.connect(lambda _employee_id: self.worker.request_walk_up_info())
        w.walk_up_info.connect(self.threshold_page.set_walk_up)
        w.walk_up_info.connect(lambda _info: self._show_model_status() if getattr(self, "engine_info", None) else None)
        # an employee enrolled or deleted at another kiosk of the fleet (told from the sync thread)
        self.registry_changed.connect(self._on_registry_changed)
        self.core.on_registry_change(self.registry_changed.emit)
        # the threshold, liveness or admin PIN changed at another kiosk of the fleet (told from the sync thread)
        self.settings_changed.connect(self._on_settings_changed)
        self.core.on_settings_change(self.settings_changed.emit)
        self.threshold_page.threshold_changed.connect(self._threshold_changed)
        self.liveness_page.liveness_changed.connect(self.worker.set_liveness)

        self.capture = FrameCapture(config.open_source, config.source_retry)
        self.capture.add_sink(self.worker.offer_frame)  # capture thread -> inference thread, not via the GUI
        self.capture.frame_ready.connect(self._on_frame)
        self.capture.state_changed.connect(self._on_source_state)
        self.frames_received = 0
        self.source_state = ""
        self.source_detail = ""  # why there is no picture (technical: Admin > Kiosk and the log)
        self.in_service = True  # frames are arriving (False: the kiosk says out of service)
        self._last_frame_at = time.monotonic()
        # the window destroyed before Qt saw it exposed sends no unexposed event: asked every 2 s as well
        self._native_timer = QTimer(self)
        self._native_timer.setInterval(2000)
        self._native_timer.timeout.connect(self._check_native_window)
        self._stall_timer = QTimer(self)
        self._stall_timer.setInterval(500)
        self._stall_timer.timeout.connect(self._check_stall)
        self._stall_timer.start()
        self._quit_shortcut = QShortcut(QKeySequence("Ctrl+Q"), self)
        self._quit_shortcut.activated.connect(self._on_quit_keys)
        self._closed = False
        self._record(lambda: self.core.admin.started(f"source {config.source}, weights {Path(config.weights).name}",
                                                     "fullscreen kiosk" if config.fullscreen else "windowed"))
        self.inference.start()
        self.capture.start()

    # -- frames -------------------------------------------------------------------------------------------
    def _on_frame(self) -> None:
        item = self.capture.take_latest()
        if item is None:
            return
        frame, captured_at = item
        self.frames_received += 1
        self._last_frame_at = time.monotonic()
        if not self.in_service and self.source_state == LIVE:
            self._set_in_service(True, "")
        self.kiosk.video.set_frame(frame)
        self.employees.on_frame(frame)

    def _on_source_state(self, state: str, message: str) -> None:
        self.source_state = state
        live = state == LIVE
        self.kiosk.video.set_message("" if live else NO_PICTURE_OVERLAY)  # visitors: plain words
        self.source_detail = "" if live else message  # the operator: the reason, in Admin > Kiosk and the log
        self.employees.set_camera_state(live)
        if state == FAILED:
            self.kiosk.video.clear_frame()
        if live:
            self._last_frame_at = time.monotonic()  # back in service with the first frame (_on_frame)
        else:
            self._set_in_service(False, message)
        description = self.capture.worker.description or self.config.source
        self.source_status.setText("Camera: working" if live else "Camera: no picture (Admin > Kiosk shows why)")
        self.admin.set_source_state(f"working ({description})" if live else message)

    def _check_stall(self) -> None:
        """An open source that sends nothing (a frozen camera) is out of service too."""
        if (self.in_service and self.source_state == LIVE
                and time.monotonic() - self._last_frame_at > self.config.stall_s):
            description = self.capture.worker.description or self.config.source
            log.warning("%s: no frame for %.0f s", description, self.config.stall_s)
            message = f"no picture from {description} for {self.config.stall_s:.0f} s"
            self.source_detail = message
            self.admin.set_source_state(message)
            self._set_in_service(False, message)

    def _set_in_service(self, available: bool, message: str) -> None:
        if available == self.in_service:
            if not available:
                self.kiosk.set_source_available(False, message)  # a newer reason
            return
        self.in_service = available
        log.info("kiosk %s", "back in service" if available else f"out of service: {message}")
        self.worker.set_source_available(available)  # first: an attempt under way is cancelled, not rejected
        self.kiosk.set_source_available(available, message)

    @property
    def storage(self):
        """The kiosk's store (for tests and diagnostics; the window itself goes through ``core``)."""
        return self.core.storage

    @staticmethod
    def _record(event) -> None:
        """The kiosk's start, stop or model change (kiosk.app.Admin writes the entry). Rare, one small insert
        each, written at once: the stop entry must be in before the store closes."""
        try:
            event()
        except KioskError as exc:
            log.error("audit event not recorded: %s", exc)

    # -- worker results ---------------------------------------------------------------------------------
    def _show_store_health(self, health: IntegrityReport) -> None:
        self.store_health = health
        self.store_status.setText("" if health.ok else health.summary)
        self.store_status.setToolTip("\n".join(health.lines()))
        self.store_status.setVisible(not health.ok)

    def _recheck_store_health(self) -> None:
        """After the worker re-embedded damaged features from their photos: show what is still damaged."""
        health = self.store_health
        if health.ok:
            return
        try:
            now = self.core.employees.check([d.reference_id for d in health.damage])
        except StorageError as exc:
            log.warning("cannot re-check the store: %s", exc)
            return
        self._show_store_health(IntegrityReport(health.checked, now.damage))

    def _on_engine_ready(self, info: EngineInfo) -> None:
        self.engine_info = info
        self._recheck_store_health()
        self.threshold_page.set_model(info)  # first: the shown threshold may be the model's
        self.liveness_page.set_model(info)
        self._show_model_status()
        self.admin.set_model_state(f"{Path(info.weights_path).name}, loaded")
        self.employees.set_engine_state(True)
        self.kiosk.set_ready()

    def _on_engine_failed(self, reason: str) -> None:
        self.engine_info = None
        self.model_status.setText("Model: not available (Admin > Kiosk shows why)")
        self.admin.set_model_state(f"not available: {reason}")
        log.error("face verification unavailable: %s", reason)
        self.kiosk.set_unavailable(reason)
        self.employees.set_engine_state(False, reason)

    def _on_decided(self, decision: Decision) -> None:
        shown = self.kiosk.state
        self.kiosk.on_decided(decision)  # the worker's decision carries the name: no lookup here
        if self.sounds_on and shown != self.kiosk.state:  # the verdict is on screen now
            self.sounds.play(decision.verdict)
        if self.audit_page.isVisible():
            self.audit_page.refresh()
        if self.admin.unlocked and (decision.attack_suspected or decision.reason == REASON_LOCKED):
            self.admin.refresh_face_locks()  # the alert, as the retry rule may have locked an ID just now

    def _on_registry_changed(self) -> None:
        self.employees.refresh()
        self.worker.request_walk_up_info()

    def _on_settings_changed(self) -> None:
        """The fleet's settings as changed elsewhere: the worker uses them for the next attempt, the admin
        pages show them as applied, the admin gate as it stands (a PIN set or a lockout begun elsewhere)."""
        try:
            settings = self.settings_store.load()
        except StorageError as exc:
            log.error("the fleet's settings changed but cannot be read: %s", exc)
            return
        if self.threshold_page.show_applied(ThresholdPolicy(settings.threshold)):
            self._threshold_changed(settings.threshold)
        if self.liveness_page.show_applied(settings.liveness_policy):
            self.worker.set_liveness(settings.liveness_policy)
        self.admin.refresh_gate()

    def _on_refreshing(self, done: int, total: int) -> None:
        self.model_status.setText(f"Updating stored faces for the new model: {done}/{total}")

    def _on_refreshed(self, report) -> None:
        if getattr(self, "engine_info", None) is not None:
            self._show_model_status()
        self.employees.set_unusable_references(sorted({employee for employee, _ in report.unusable}))
        if report.updated or report.unusable:
            self.statusBar().showMessage(report.describe(), 15000)
            self._record(lambda: self.core.admin.model_changed(f"{Path(self.config.weights).name}: {report.describe()}"))

    def _on_worker_error(self, message: str) -> None:
        log.warning("worker: %s", message)
        self.statusBar().showMessage(message, 8000)
        self.kiosk.on_error(message)

    # -- requests -------------------------------------------------------------------------------------------
    def _threshold_changed(self, value) -> None:
        self.worker.set_threshold(value)
        if getattr(self, "engine_info", None) is not None:
            self._show_model_status()

    def _show_model_status(self) -> None:
        applied, in_force = self.threshold_page.threshold, self.threshold_page.in_force
        site = f", at this site {in_force:.3f}" if in_force > applied else ""
        self.model_status.setText(f"Model: {Path(self.engine_info.weights_path).name}, threshold {applied:.3f}{site}")

    def _set_sounds(self, on: bool) -> None:
        self.sounds_on = on

    def _on_admin_unlocked(self, unlocked: bool) -> None:
        """The operator sees the sounds' real state (Qt Multimedia and an audio device are tried now)."""
        if unlocked:
            check = getattr(self.sounds, "check", None)
            self.admin.set_sound_state(check() if check is not None else "")

    def _on_tab_changed(self, index: int) -> None:
        if self.tabs.widget(index) is not self.kiosk and self.kiosk.state == VERIFYING and self.kiosk.walking_up:
            self.worker.cancel()  # a walk-up nobody sees: dropped, not decided (no walk-up starts while hidden)
            self.kiosk.abandon_walk_up()
        if self.tabs.widget(index) is not self.admin:
            self.admin.lock()
        else:
            self.admin.focus_pin()
        if self.tabs.widget(index) is self.kiosk and self.kiosk.id_field.isEnabled():
            self.kiosk.id_field.setFocus()

    def show_admin_view(self) -> None:
        """The admin view (its PIN page unless unlocked): the key sequence or the corner taps."""
        self.tabs.setCurrentWidget(self.admin)

    def show_kiosk_view(self) -> None:
        self.tabs.setCurrentWidget(self.kiosk)

    def show_kiosk_fullscreen(self) -> None:
        """Fill the screen, with or without a window manager: showFullScreen asks the window manager; without
        one the geometry is set to the screen's as well."""
        screen = self.screen() or QGuiApplication.primaryScreen()
        if screen is not None:
            self.setGeometry(screen.geometry())
        self.showFullScreen()
        if screen is not None:
            self._fill(screen)
            QTimer.singleShot(0, self, lambda: self._fill(screen))  # once mapped: a bare X server ignores the state

    def _fill(self, screen) -> None:
        if self.isVisible() and self.geometry() != screen.geometry():
            self.setGeometry(screen.geometry())

    def showEvent(self, event) -> None:
        super().showEvent(event)
        handle = self.windowHandle()
        if handle is not None and not getattr(self, "_watching_native", False):
            self._watching_native = True
            handle.installEventFilter(self)
            if QGuiApplication.platformName() == "xcb":
                self._native_timer.start()

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.Expose and obj is self.windowHandle() and not obj.isExposed():
            QTimer.singleShot(0, self, self._check_native_window)  # hidden, covered, minimised... or destroyed
        return super().eventFilter(obj, event)

    def _check_native_window(self) -> None:
        if self._closed or window_exists(QGuiApplication.platformName(), int(self.winId())) is not False:
            return
        log.critical("the kiosk's window was destroyed by the window system: the kiosk stops (exit code %d)",
                     EXIT_WINDOW_LOST)
        self._quit_authorised = True
        self._window_lost = True
        self.close()
        QGuiApplication.exit(EXIT_WINDOW_LOST)

    # -- quitting -------------------------------------------------------------------------------------------
    def quit_kiosk(self) -> None:
        """The authorised way out (the admin's Quit kiosk behind the PIN, Ctrl+C in the terminal)."""
        self._quit_authorised = True
        self.close()

    def _on_quit_keys(self) -> None:
        if self.kiosk_mode:  # a visitor at a fullscreen kiosk: nothing
            log.info("Ctrl+Q ignored in kiosk mode (use Admin > Kiosk > Quit kiosk)")
            return
        self.close()

    # -- shutdown -----------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop both threads and close the database; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stall_timer.stop()
        self._native_timer.stop()
        self.capture.frame_ready.disconnect(self._on_frame)
        self.capture.state_changed.disconnect(self._on_source_state)
        self.threshold_page.flush()
        self.admin.lock()
        reason = ("the window was destroyed by the window system" if getattr(self, "_window_lost", False)
                  else "quit by the admin" if self._quit_authorised else "window closed")
        self._record(lambda: self.core.admin.stopped(reason))
        capture_ok = self.capture.stop()
        inference_ok = self.inference.stop()
        background_ok = wait_for_background()  # database and PIN work still running uses the store
        if not (capture_ok and inference_ok and background_ok):
            log.error("a thread did not stop in time (capture %s, inference %s, background work %s)", capture_ok,
                      inference_ok, background_ok)
        if self._own_core and capture_ok and inference_ok and background_ok:
            self.core.close()
        log.info("kiosk closed")

    def closeEvent(self, event) -> None:
        if self.kiosk_mode and not self._quit_authorised:  # Alt+F4 and the like at the entrance
            log.info("close request ignored in kiosk mode (use Admin > Kiosk > Quit kiosk)")
            event.ignore()
            return
        self.shutdown()
        super().closeEvent(event)


class _CornerTaps(QObject):
    """CORNER_TAPS presses within CORNER_WINDOW_S in the kiosk screen's top-left corner open the admin view (a
    touch screen has no keyboard). Nothing marks the corner; the PIN still guards what lies behind it."""

    def __init__(self, action: Callable[[], None], screen: QWidget):
        super().__init__(screen)
        self.action, self.screen = action, screen
        self.taps: list[float] = []
        for widget in [screen, *screen.findChildren(QWidget)]:
            widget.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:
        if event.type() in (QEvent.Type.MouseButtonPress, QEvent.Type.TouchBegin):
            point = event.globalPosition() if event.type() == QEvent.Type.MouseButtonPress \
                else event.points()[0].globalPosition()
            point = self.screen.mapFromGlobal(point.toPoint())
            if obj is not (self.screen.childAt(point) or self.screen):
                return False  # the press, ignored by the widget under it, passed on to a parent: counted once
            if point.x() <= CORNER_PX and point.y() <= CORNER_PX:
                now = time.monotonic()
                self.taps = [t for t in self.taps if now - t <= CORNER_WINDOW_S] + [now]
                if len(self.taps) >= CORNER_TAPS:
                    self.taps = []
                    self.action()
            else:
                self.taps = []
        return False
