"""The kiosk screen: live picture, ID entry (keyboard or badge scanner + Enter), prompts, big verdict.

In walk-up mode (or "both") a good face in front of an idle kiosk starts a walk-up (kiosk.app.screen.WalkUpTrigger,
the start and re-arm rule): the worker searches everyone enrolled. In "both", typing an ID during a walk-up
replaces it with a 1:1 attempt. The words under a verdict are kiosk.app.screen.verdict_text's."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QVBoxLayout, QWidget

from kiosk.app.screen import WalkUpTrigger, verdict_text
from kiosk.qt.video_view import VideoView
from kiosk.qt.worker import FrameResult
from kiosk.rules.decision import MODE_BOTH, MODE_ID, MODE_WALK_UP, Decision

IDLE, VERIFYING, VERDICT, UNAVAILABLE, STARTING = "idle", "verifying", "verdict", "unavailable", "starting"
OUT_OF_SERVICE = "out_of_service"  # no frames from the source: no claims taken until they come back

ID_PROMPTS = {
    MODE_ID: "Enter or scan your employee ID, then press Enter",
    MODE_WALK_UP: "Look at the camera to be recognised",
    MODE_BOTH: "Look at the camera to be recognised, or enter or scan your employee ID and press Enter",
}

# The verdict label's look comes from assets/style.qss (QLabel#verdict[verdict="accept"] ...).
_VERDICT_STYLE = {"ACCEPT": "accept", "REJECT": "reject", "info": "info", "none": "none"}


def _font(points: int, bold: bool = False) -> QFont:
    font = QFont()
    font.setPointSize(points)
    font.setBold(bold)
    return font


class KioskTab(QWidget):
    verification_requested = Signal(str, float)  # claimed ID, time.monotonic() when it was entered
    walk_up_requested = Signal(float)            # capture time of the good face that started a walk-up

    def __init__(self, mirror: bool = False, verdict_display_s: float = 4.0, parent=None):
        super().__init__(parent)
        self.verdict_display_s = verdict_display_s
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)  # the style sheet paints the background
        self.state = STARTING
        self.last_decision: Decision | None = None
        self.source_ok = True   # frames are arriving
        self.source_message = ""
        self._engine_ready = False
        self.mode = MODE_ID
        self._walk_up = False         # the attempt under way is a walk-up
        self.walk_up_trigger = WalkUpTrigger()
        self.video = VideoView(self, mirror=mirror)

        self.id_label = QLabel(ID_PROMPTS[MODE_ID])
        self.id_label.setObjectName("idLabel")
        self.id_label.setFont(_font(16))
        self.id_label.setWordWrap(True)
        self.id_field = QLineEdit()
        self.id_field.setObjectName("idField")
        self.id_field.setFont(_font(24))
        self.id_field.setPlaceholderText("Employee ID")
        self.id_field.setMaxLength(64)
        self.id_field.returnPressed.connect(self._on_id_entered)
        self.prompt = QLabel("Starting...")
        self.prompt.setObjectName("prompt")
        self.prompt.setFont(_font(20, bold=True))
        self.prompt.setWordWrap(True)
        self.prompt.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.verdict = QLabel("")
        self.verdict.setObjectName("verdict")
        self.verdict.setFont(_font(44, bold=True))
        self.verdict.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.verdict.setMinimumHeight(110)
        self.reason = QLabel("")
        self.reason.setObjectName("reason")
        self.reason.setFont(_font(18))
        self.reason.setWordWrap(True)
        self.reason.setAlignment(Qt.AlignmentFlag.AlignCenter)

        side = QVBoxLayout()
        side.addWidget(self.id_label)
        side.addWidget(self.id_field)
        side.addSpacing(16)
        side.addWidget(self.prompt)
        side.addStretch(1)
        side.addWidget(self.verdict)
        side.addWidget(self.reason)
        side.addStretch(1)
        panel = QWidget()
        panel.setLayout(side)
        panel.setMinimumWidth(360)
        panel.setMaximumWidth(520)
        layout = QHBoxLayout(self)
        layout.addWidget(self.video, 3)
        layout.addWidget(panel, 2)

        self._reset_timer = QTimer(self)
        self._reset_timer.setSingleShot(True)
        self._reset_timer.timeout.connect(self.reset)
        self._show_verdict("", "", "none")
        self.id_field.setEnabled(False)

    # -- states -------------------------------------------------------------------------------------------
    @property
    def walks_up(self) -> bool:
        return self.mode in (MODE_WALK_UP, MODE_BOTH)

    @property
    def takes_ids(self) -> bool:
        return self.mode in (MODE_ID, MODE_BOTH)

    def set_mode(self, mode: str) -> None:
        """"id" (type the ID), "walk-up" (face only) or "both" (kiosk.rules.decision.KIOSK_MODES)."""
        self.mode = mode if mode in ID_PROMPTS else MODE_ID
        self.id_label.setText(ID_PROMPTS[self.mode])
        self.id_field.setVisible(self.takes_ids)

    def set_ready(self) -> None:
        """The model is loaded: accept IDs (once frames arrive)."""
        self._engine_ready = True
        if self.state == UNAVAILABLE:
            return
        if not self.source_ok:
            self._show_out_of_service()
            return
        self.state = IDLE
        self.reset()

    def set_source_available(self, available: bool, message: str = "") -> None:
        """Frames are (not) arriving. Without them the kiosk is out of service: the ID field is disabled and an
        attempt under way is dropped (the worker cancels it; nothing is recorded). It resumes by itself."""
        self.source_ok, self.source_message = available, message
        if self.state == UNAVAILABLE or not self._engine_ready:
            return  # the model's state decides (set_ready looks at the source)
        if not available:
            self._show_out_of_service()
        elif self.state == OUT_OF_SERVICE:
            self.state = IDLE
            self.reset()

    def _show_out_of_service(self) -> None:
        self.state = OUT_OF_SERVICE
        self._reset_timer.stop()
        self.id_field.clear()
        self.id_field.setEnabled(False)
        self.prompt.setText("")
        detail = f" ({self.source_message})" if self.source_message else ""
        self._show_verdict("Out of service", f"No camera picture{detail}. Please use another entrance or ask "
                           f"staff; the kiosk resumes by itself.", "info")

    def on_cancelled(self, _claimed_id: str = "") -> None:
        """The worker dropped the attempt (no frames): nothing was decided or recorded."""
        self._walk_up = False
        if self.state != VERIFYING:
            return
        if not self.source_ok:
            self._show_out_of_service()
            return
        self.state = VERDICT  # it could not start (a problem the worker reported): the person may try again
        self._show_verdict("Sorry", "Please try again", "info")
        self._reset_timer.start(int(self.verdict_display_s * 1000))

    def set_unavailable(self, reason: str) -> None:
        self.state = UNAVAILABLE
        self._reset_timer.stop()
        self.id_field.clear()
        self.id_field.setEnabled(False)
        self.prompt.setText("")
        self._show_verdict("Out of service", f"Face verification is unavailable: {reason}", "info")

    def reset(self) -> None:
        """Ready for the next person."""
        if self.state in (UNAVAILABLE, OUT_OF_SERVICE):
            return
        self.state = IDLE
        self.id_field.clear()
        self.id_field.setEnabled(True)
        self.prompt.setText("")
        self._show_verdict("", "", "none")
        if self.isVisible():
            self.id_field.setFocus()

    def _show_verdict(self, title: str, reason: str, style: str) -> None:
        self.verdict.setText(title)
        self.verdict.setProperty("verdict", _VERDICT_STYLE[style])
        self.verdict.style().unpolish(self.verdict)  # a dynamic property: the style sheet is re-applied
        self.verdict.style().polish(self.verdict)
        self.reason.setText(reason)

    # -- events ---------------------------------------------------------------------------------------------
    def _on_id_entered(self) -> None:
        claimed = self.id_field.text().strip()
        typed_over_walk_up = self.state == VERIFYING and self._walk_up  # the typed ID replaces the walk-up
        if not claimed or not self.takes_ids or not (self.state == IDLE or typed_over_walk_up):
            return
        self._walk_up = False
        self.state = VERIFYING
        self.id_field.setEnabled(False)
        self.prompt.setText("Look at the camera")
        self._show_verdict("", "", "none")
        self.verification_requested.emit(claimed, time.monotonic())

    def on_analysed(self, result: FrameResult) -> None:
        self.video.set_face(result.box, result.ok)
        if self.state == VERIFYING:
            self.prompt.setText(result.advice or "Hold still...")
        elif self.state == IDLE:  # a hint while the person types their ID
            self.prompt.setText(result.advice)
        ready = self.state == IDLE and self.walks_up and not self.id_field.text().strip()
        if self.walk_up_trigger.frame(result.box is not None, result.ok, ready, time.monotonic()):
            self._start_walk_up(result.captured_at)

    def _start_walk_up(self, captured_at: float) -> None:
        self.state = VERIFYING
        self._walk_up = True
        self.prompt.setText("Hold still...")
        self._show_verdict("", "", "none")
        self.walk_up_requested.emit(captured_at)

    def on_progress(self, done: int, needed: int) -> None:
        if self.state == VERIFYING and done:
            self.prompt.setText(f"Hold still... ({done}/{needed})")

    def on_decided(self, decision: Decision) -> None:
        if self.state != VERIFYING or (decision.mode == MODE_WALK_UP) != self._walk_up:
            return  # not the attempt on screen (a walk-up's verdict that crossed a typed ID)
        self._walk_up = False
        self.walk_up_trigger.decided(time.monotonic())
        self.last_decision = decision
        self.state = VERDICT
        self.prompt.setText("")
        self._show_verdict(decision.verdict, verdict_text(decision, self.takes_ids), decision.verdict)
        self._reset_timer.start(int(self.verdict_display_s * 1000))

    def on_error(self, message: str) -> None:
        """A problem the worker reports (also shown in the status bar). It does not end the attempt on screen:
        an attempt that fails ends with the worker's REJECT (audited) or its ``cancelled``; a problem with an
        idle frame, reported just as an ID was typed, must not leave that attempt's verdict unseen."""
        if self.state == VERIFYING:
            self.prompt.setText(f"Sorry, a problem: {message}")

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self.state == IDLE:
            self.id_field.setFocus()
