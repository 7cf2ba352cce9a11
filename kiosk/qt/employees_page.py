"""Admin page: search, enrol (live camera or photo files, several photos), re-enrol and delete employees.
The database work (search, look-up, delete with its log checkpoint) runs off the GUI thread."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
from PySide6.QtCore import QSize, QStandardPaths, QTimer, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from kiosk.app import AuditNotRecorded, Employee, Kiosk, StorageError, clean_employee_id, clean_name
from kiosk.app.enrolment import FrameBurst, check_photo
from kiosk.errors import KioskError
from kiosk.io.imageio import IMAGE_FILE_FILTER, read_image
from kiosk.qt.background import Background
from kiosk.qt.imaging import thumbnail
from kiosk.qt.video_view import VideoView
from kiosk.qt.worker import FrameResult
from kiosk.vision.detection import Box, HaarFaceDetector
from kiosk.vision.quality import SEVERAL_FACES

log = logging.getLogger(__name__)

FRESH_S = 1.0  # a camera photo must come from an analysis at most this old
ENROL_FRAMES = 3         # "Take N frames": good camera frames taken in one action, one reference each
FRAME_GAP_S = 0.3        # ... captured at least this far apart (not the same frame twice)
FRAMES_TIMEOUT_S = 10.0  # ... all within this time of the click, else none are added


class EmployeesPage(QWidget):
    enrol_requested = Signal(str, str, object, bool)  # id, name, [(image, label)], replace
    deleted = Signal(str)                             # an employee was deleted: their ID

    def __init__(self, core: Kiosk, mirror: bool = False, parent=None):
        super().__init__(parent)
        self.core = core  # reads the employees; deletes through core.admin (enrolment goes through the worker)
        self.pending: list[tuple] = []          # (BGR image, label)
        self._last_good: FrameResult | None = None
        self._engine_ok = False
        self._camera_ok = False
        self._saving = False
        self._enrolling: tuple[str, bool] | None = None  # (employee ID, re-enrolment) while saving
        self._detector: HaarFaceDetector | None = None
        self._burst: FrameBurst | None = None  # while taking several camera frames
        self._burst_timer = QTimer(self)       # ends the burst when good frames don't come (or none at all)
        self._burst_timer.setSingleShot(True)
        self._burst_timer.timeout.connect(self._check_burst_time)
        self.ops = Background(self)

        # left: the list
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search by ID or name")
        self.search.textChanged.connect(self.refresh)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["ID", "Name", "Photos", "Enrolled"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.table.horizontalHeader()
        for column in (0, 2, 3):  # ID, photos, enrolled: as wide as their content; the name takes the rest
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.delete_button = QPushButton("Delete employee...")
        self.delete_button.clicked.connect(self.delete_selected)
        self.delete_button.setEnabled(False)
        left = QVBoxLayout()
        left.addWidget(self.search)
        left.addWidget(self.table, 1)
        left.addWidget(self.delete_button)

        # right: enrolment
        self.id_field = QLineEdit()
        self.id_field.setMaxLength(64)
        self.name_field = QLineEdit()
        self.name_field.setMaxLength(120)
        for field in (self.id_field, self.name_field):
            field.textChanged.connect(self._update_buttons)
        self.preview = VideoView(mirror=mirror, min_size=(200, 120))
        self.take_button = QPushButton("Take photo")
        self.take_button.clicked.connect(self.take_photo)
        self.frames_button = QPushButton(f"Take {ENROL_FRAMES} frames")  # "Cancel" while taking them
        self.frames_button.clicked.connect(self._on_frames_button)
        self.files_button = QPushButton("Add photo files...")
        self.files_button.clicked.connect(self.add_files)
        self.photos = QListWidget()
        self.photos.setViewMode(QListWidget.ViewMode.IconMode)
        self.photos.setIconSize(QSize(80, 80))
        self.photos.setGridSize(QSize(124, 124))
        self.photos.setWordWrap(True)
        self.photos.setFixedHeight(140)  # with the rest, fits an 800x600 screen
        self.remove_button = QPushButton("Remove photo")
        self.remove_button.clicked.connect(self.remove_photo)
        self.save_button = QPushButton("Save enrolment")
        self.save_button.clicked.connect(self.save)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.unusable = QLabel("")  # photos that gave no usable face for the current model: re-enrol them
        self.unusable.setWordWrap(True)
        self.unusable.setStyleSheet("color:#c62828;")
        self.unusable.hide()
        form = QFormLayout()
        form.addRow("Employee ID", self.id_field)
        form.addRow("Name", self.name_field)
        capture_row = QGridLayout()  # two by two: the page fits an 800x600 screen
        for index, button in enumerate((self.take_button, self.frames_button, self.files_button, self.remove_button)):
            capture_row.addWidget(button, index // 2, index % 2)
        group = QGroupBox("Enrol or re-enrol")
        right = QVBoxLayout(group)
        replaces = QLabel("Re-enrolling replaces the person's photos.")
        replaces.setWordWrap(True)
        right.addWidget(replaces)
        right.addLayout(form)
        right.addWidget(self.preview, 1)
        right.addLayout(capture_row)
        right.addWidget(self.photos)
        right.addWidget(self.save_button)
        right.addWidget(self.status)
        right.addWidget(self.unusable)

        layout = QHBoxLayout(self)
        layout.addLayout(left, 1)
        layout.addWidget(group, 1)
        self.refresh()
        self._update_buttons()

    # -- hooks (tests replace these instead of driving modal dialogs) -------------------------------------
    file_dialog = staticmethod(QFileDialog.getOpenFileNames)  # (parent, caption, directory, filter)
    clock = staticmethod(time.monotonic)  # the clock of FrameResult.captured_at

    def choose_files(self) -> list[str]:
        files, _ = self.file_dialog(self, "Reference photos", start_folder(), IMAGE_FILE_FILTER)
        return files

    def confirm(self, title: str, text: str) -> bool:
        return QMessageBox.question(self, title, text) == QMessageBox.StandardButton.Yes

    # -- state from the window ---------------------------------------------------------------------------
    def set_engine_state(self, ok: bool, reason: str = "") -> None:
        self._engine_ok = ok
        if not ok:
            self._stop_burst()
            self._say(f"Enrolment is unavailable: {reason}", error=True)
        self._update_buttons()

    def set_unusable_references(self, employee_ids: list[str]) -> None:
        """Employees with a reference photo that no longer yields a usable face for the current model."""
        self.unusable.setText("Re-enrol, their photos give no usable face for the current model: "
                              + ", ".join(employee_ids) if employee_ids else "")
        self.unusable.setVisible(bool(employee_ids))

    def set_camera_state(self, ok: bool) -> None:
        self._camera_ok = ok
        if not ok and self._burst is not None:
            self._stop_burst("The camera stopped while taking frames; none were added.", error=True)
        self._update_buttons()

    def on_frame(self, frame) -> None:
        if self.preview.isVisible():
            self.preview.set_frame(frame)

    def on_analysed(self, result: FrameResult) -> None:
        self._last_good = result if result.ok else None
        if self.preview.isVisible():
            self.preview.set_face(result.box, result.ok)
            self.preview.set_message("" if result.ok else result.advice)
        if self._burst is not None:
            self._offer_to_burst(result)
        self._update_buttons()

    def on_enrolled(self, employee, audit_problem: str = "") -> None:
        """The worker enrolled ``employee`` (kiosk.app.Admin.enrol, which audited it; ``audit_problem``: why
        the audit entry could not be written)."""
        self._saving = False
        self._enrolling = None
        self._say(f"Enrolled {employee.id} ({employee.name}) with {employee.photo_count} photo(s)."
                  + (f" The audit log could not record it: {audit_problem}" if audit_problem else ""),
                  error=bool(audit_problem))
        self.clear_form()
        self.refresh()
        self._update_buttons()

    def on_enrol_failed(self, message: str) -> None:
        self._saving = False
        self._enrolling = None
        self._say(message, error=True)
        self._update_buttons()

    # -- actions ------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        employees, text = self.core.employees, self.search.text()
        self.ops.run(lambda: employees.search(text), self._show_employees, self._on_db_error, key="search")

    def _show_employees(self, employees: list[Employee]) -> None:
        self.table.setRowCount(len(employees))
        for row, e in enumerate(employees):
            for col, value in enumerate((e.id, e.name, str(e.photo_count), e.created[:16].replace("T", " "))):
                self.table.setItem(row, col, QTableWidgetItem(value))
        self.table.resizeColumnToContents(3)
        self._on_selection()

    def _on_db_error(self, exc: BaseException) -> None:
        self._say(str(exc) if isinstance(exc, KioskError) else f"The database failed: {exc}", error=True)

    def selected_id(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return self.table.item(rows[0].row(), 0).text() if rows else None

    def _on_selection(self) -> None:
        employee_id = self.selected_id()
        self.delete_button.setEnabled(employee_id is not None)
        if employee_id is not None:
            self.id_field.setText(employee_id)
            self.name_field.setText(self.table.item(self.table.currentRow(), 1).text())

    def take_photo(self) -> None:
        result = self._last_good
        if result is None or self.clock() - result.captured_at > FRESH_S:
            self._say("No good face in view: look at the camera and try again.", error=True)
            return
        self._add_pending(result.frame, f"camera photo {len(self.pending) + 1}", result.box, [])

    def take_frames(self) -> None:
        """Start taking the next ENROL_FRAMES good camera frames (FrameBurst's rule); returns at once: the
        frames come with on_analysed, and the timer ends the wait if they don't."""
        if self._burst is not None or self._saving or not (self._engine_ok and self._camera_ok):
            return
        self._burst = FrameBurst(self.clock(), ENROL_FRAMES, FRAME_GAP_S, FRAMES_TIMEOUT_S, FRESH_S)
        self._burst_timer.start(int(FRAMES_TIMEOUT_S * 1000) + 20)
        self._say(self._burst_progress())
        self._update_buttons()

    def cancel_frames(self) -> None:
        if self._burst is not None:
            self._stop_burst("Taking frames cancelled; none were added.")

    def _on_frames_button(self) -> None:
        if self._burst is not None:
            self.cancel_frames()
        else:
            self.take_frames()

    def _offer_to_burst(self, result: FrameResult) -> None:
        burst, now = self._burst, self.clock()
        if burst.expired(now):
            self._burst_timed_out()
            return
        if not burst.offer(result, result.ok, result.captured_at, now):
            self._say_progress(self._burst_progress(result.advice))
            return
        if not burst.done:
            self._say_progress(self._burst_progress())
            return
        self._stop_burst()
        for k, (taken, _) in enumerate(burst.taken, start=1):
            self._add_pending(taken.frame, f"camera frame {k} of {burst.count}", taken.box, [])
        self._say(f"{burst.count} camera frames taken; {len(self.pending)} photo(s) ready; add more or save.")

    def _say_progress(self, text: str) -> None:
        if text != self.status.text():  # analyses come ~10 times a second: say (and log) changes only
            self._say(text)

    def _burst_progress(self, advice: str = "") -> str:
        burst = self._burst
        return f"Hold still: {len(burst.taken)} of {burst.count} frames" + (f" ({advice})" if advice else "")

    def _check_burst_time(self) -> None:
        if self._burst is None:
            return
        now = self.clock()
        if self._burst.expired(now):
            self._burst_timed_out()
        else:  # woke early (or the clock is not the timer's): wait for the rest
            self._burst_timer.start(int(self._burst.remaining(now) * 1000) + 20)

    def _burst_timed_out(self) -> None:
        burst = self._burst
        self._stop_burst(f"Only {len(burst.taken)} of {burst.count} good frames came in {burst.timeout_s:g} s; "
                         f"none were added. Face the camera in good light, hold still and try again.", error=True)

    def _stop_burst(self, message: str = "", error: bool = False) -> None:
        self._burst = None
        self._burst_timer.stop()
        if message:
            self._say(message, error=error)
        self._update_buttons()

    def hideEvent(self, event) -> None:  # the admin left the page (or locked): don't take frames unseen
        if self._burst is not None:
            self._stop_burst("Taking frames stopped: the page was left; none were added.")
        super().hideEvent(event)

    def add_files(self) -> None:
        """Each photo is checked as enrolment will check it: one with several faces, or none, is refused at
        once with the reason; the others are listed with the face that will be used and their problems. Decoding
        and checking run off the GUI thread (a hostile file may take long to decode)."""
        names = list(self.choose_files())
        if not names:
            return
        if self._detector is None:
            self._detector = HaarFaceDetector()
        detector = self._detector

        def check_all() -> list[tuple[str, object, object]]:
            checked = []
            for name in names:
                try:
                    image = read_image(name)
                except KioskError as exc:
                    checked.append((Path(name).name, None, str(exc)))
                    continue
                checked.append((Path(name).name, image, check_photo(image, detector)))
            return checked

        self._say(f"Checking {len(names)} photo(s)...")
        self.ops.run(check_all, self._add_checked, self._on_db_error, busy=[self.files_button])

    def _add_checked(self, checked: list[tuple[str, object, object]]) -> None:
        refused = []
        for label, image, check in checked:
            if image is None:
                refused.append(check)
                continue
            if check.refusal:
                hint = "a photo of the employee alone" if SEVERAL_FACES in check.refusal else "a clear frontal photo"
                refused.append(f"{label} refused: {', '.join(check.refusal)} (use {hint})")
                continue
            self._add_pending(image, label, check.box, check.quality.reasons)
        self._say("; ".join(refused), error=True) if refused else self._say("")

    def clear_form(self) -> None:
        """Empty the ID, the name and the photos waiting to be saved."""
        self.table.clearSelection()
        self.id_field.clear()
        self.name_field.clear()
        self.pending.clear()
        self.photos.clear()
        self._update_buttons()

    def remove_photo(self) -> None:
        row = self.photos.currentRow()
        if row >= 0:
            self.photos.takeItem(row)
            del self.pending[row]
            self._update_buttons()

    def save(self) -> None:
        if self._saving or self._burst is not None:
            return
        try:
            employee_id, name = clean_employee_id(self.id_field.text()), clean_name(self.name_field.text())
        except StorageError as exc:
            self._say(str(exc), error=True)
            return
        if not self.pending:
            self._say("Add at least one photo.", error=True)
            return
        self._saving = True
        self._update_buttons()
        employees, photos = self.core.employees, list(self.pending)

        def looked_up(existing: Employee | None) -> None:
            if existing is not None and not self.confirm(
                    "Re-enrol", f"{employee_id} ({existing.name}) is already enrolled with {existing.photo_count} "
                                f"photo(s). Replace them with the {len(photos)} new photo(s)?"):
                self._saving = False
                self._update_buttons()
                return
            self._say(f"Enrolling {employee_id}...")
            self._enrolling = (employee_id, existing is not None)
            self.enrol_requested.emit(employee_id, name, photos, True)

        def failed(exc: BaseException) -> None:
            self._saving = False
            self._on_db_error(exc)
            self._update_buttons()

        self.ops.run(lambda: employees.get(employee_id), looked_up, failed)

    def delete_selected(self) -> None:
        employee_id = self.selected_id()
        if employee_id is None:
            return
        if not self.confirm("Delete", f"Delete {employee_id} with all their reference photos and features? "
                                      f"This cannot be undone."):
            return
        admin = self.core.admin

        def done(_found: bool) -> None:
            self._say(f"Deleted {employee_id} and their photos.")
            self.id_field.clear()
            self.name_field.clear()
            self.refresh()
            self.deleted.emit(employee_id)

        def failed(exc: BaseException) -> None:
            if isinstance(exc, AuditNotRecorded):  # deleted; only the audit entry is missing
                done(True)
                self._say(f"Deleted {employee_id}, but {exc}", error=True)
                return
            self._on_db_error(exc)

        self.ops.run(lambda: admin.delete(employee_id), done, failed, busy=[self.delete_button, self.table])

    # -- helpers ------------------------------------------------------------------------------------------
    def _add_pending(self, image, label: str, box: Box | None, reasons: list[str]) -> None:
        self.pending.append((image, label))
        problems = ", ".join(reasons) if reasons else "ok"
        item = QListWidgetItem(QIcon(thumbnail(face_view(image, box, not reasons), 128)), f"{label}\n{problems}")
        item.setToolTip(f"{label}: {problems}" + ("" if not reasons else " (it will be refused at saving)"))
        self.photos.addItem(item)
        self._say(f"{len(self.pending)} photo(s) ready; add more or save.")
        self._update_buttons()

    def _say(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color:#c62828;" if error else "")
        (log.warning if error else log.info)("admin: %s", text)

    def _update_buttons(self) -> None:
        collecting = self._burst is not None
        idle = not self._saving and not collecting
        fresh = self._last_good is not None and self.clock() - self._last_good.captured_at <= FRESH_S
        self.take_button.setEnabled(idle and self._engine_ok and self._camera_ok and fresh)
        self.frames_button.setEnabled(not self._saving and self._engine_ok and self._camera_ok)
        self.frames_button.setText("Cancel" if collecting else f"Take {ENROL_FRAMES} frames")
        self.frames_button.setToolTip(f"Take the next {ENROL_FRAMES} good camera frames, "
                                      f"{FRAME_GAP_S:g} s apart at least, as reference photos")
        self.files_button.setEnabled(idle and self._engine_ok)
        self.remove_button.setEnabled(idle and bool(self.pending))
        self.save_button.setEnabled(idle and self._engine_ok and bool(self.pending)
                                    and bool(self.id_field.text().strip()) and bool(self.name_field.text().strip()))
        self.take_button.setToolTip("" if fresh else "Enabled when a face passes the quality checks")


def start_folder() -> str:
    """Where file dialogs open: the user's Pictures folder, else home."""
    pictures = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation)
    if pictures and Path(pictures).is_dir():
        return pictures
    return QStandardPaths.writableLocation(QStandardPaths.StandardLocation.HomeLocation) or str(Path.home())


def face_view(image, box: Box | None, ok: bool = True):
    """The face enrolment will use, outlined (green when it passes the checks, red otherwise), with some of
    its surroundings; the whole photo when no face was found."""
    if box is None:
        return image
    x, y, w, h = box
    height, width = image.shape[:2]
    margin = max(w, h) // 2
    x0, y0 = max(0, x - margin), max(0, y - margin)
    view = image[y0:min(height, y + h + margin), x0:min(width, x + w + margin)].copy()
    if view.ndim == 2:
        view = cv2.cvtColor(view, cv2.COLOR_GRAY2BGR)
    thickness = max(2, round(max(view.shape[:2]) / 80))
    cv2.rectangle(view, (x - x0, y - y0), (x - x0 + w, y - y0 + h), (60, 160, 60) if ok else (40, 40, 200), thickness)
    return view
