"""The kiosk screen: live picture, ID entry (keyboard or badge scanner + Enter), prompts, big verdict.

In walk-up mode (or "both") a good face in front of an idle kiosk starts a walk-up (kiosk.app.screen.WalkUpTrigger,
the start and re-arm rule): the worker searches everyone enrolled. In "both", typing an ID during a walk-up
replaces it with a 1:1 attempt. The words under a verdict are kiosk.app.screen.verdict_text's. No walk-up starts
while the tab is hidden (the Admin tab shown).

Visitors read plain words only: out of service says so and what to do; the technical reason (a camera path, a
missing weights file) is kept in ``source_message`` / ``unavailable_reason`` for the Admin tab and the log.

The text scales with the screen (800x600 to 4K): the fonts follow the tab's size (``resizeEvent``) and the verdict's
is fitted to its label's width with QFontMetrics, so no text is clipped at any size."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFont, QFontMetrics
from PySide6.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QSizePolicy, QVBoxLayout, QWidget

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

OUT_OF_SERVICE_TITLE = "Out of service"
NO_PICTURE_TEXT = "No camera picture. Please use another entrance or ask staff; the kiosk resumes by itself."
NOT_WORKING_TEXT = "Face verification is not working. Please use another entrance or ask staff."
NO_PICTURE_OVERLAY = "No camera picture"  # on the video, for visitors (the reason is in Admin > Kiosk)

# The verdict label's look (colours, padding) comes from assets/style.qss (QLabel#verdict[verdict="accept"] ...);
# the sizes of the fonts come from here: they follow the size of the screen.
_VERDICT_STYLE = {"ACCEPT": "accept", "REJECT": "reject", "info": "info", "none": "none"}
DESIGN_SIZE = (1200, 720)  # the size the base pixel sizes below were chosen for
_BASE_PX = {"id_label": 26, "id_field": 40, "prompt": 34, "verdict": 80, "reason": 30}
_MIN_PX = 12
_VERDICT_PADDING = 12  # assets/style.qss: QLabel#verdict { padding: 12px }


def _font(pixels: int, bold: bool = False) -> QFont:
    font = QFont()
    font.setPixelSize(max(_MIN_PX, int(pixels)))
    font.setBold(bold)
    return font


def fitted_pixel_size(font: QFont, text: str, width: int, largest: int) -> int:
    """The largest pixel size up to ``largest`` at which ``text`` (one line) is at most ``width`` wide."""
    trial = QFont(font)
    size = max(_MIN_PX, int(largest))
    while size > _MIN_PX:
        trial.setPixelSize(size)
        if QFontMetrics(trial).horizontalAdvance(text) <= width:
            break
        size = max(_MIN_PX, int(size * 0.92))
    return size


class KioskTab(QWidget):
    verification_requested = Signal(str, float)  # claimed ID, time.monotonic() when it was entered
    walk_up_requested = Signal(float)            # capture time of the good face that started a walk-up

    def __init__(self, mirror: bool = False, verdict_display_s: float = 4.0, parent=None, clock=time.monotonic):
        super().__init__(parent)
        self.clock = clock  # the walk-up trigger's and the typed ID's time (tests give a fake one)
        self.verdict_display_s = verdict_display_s
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)  # the style sheet paints the background
        self.state = STARTING
        self.last_decision: Decision | None = None
        self.source_ok = True   # frames are arriving
        self.source_message = ""  # why there are no frames (technical: for Admin and the log, not for visitors)
        self.unavailable_reason = ""  # why the model cannot run (likewise)
        self._engine_ready = False
        self.mode = MODE_ID
        self._walk_up = False         # the attempt under way is a walk-up
        self.walk_up_trigger = WalkUpTrigger()
        self.video = VideoView(self, mirror=mirror)

        self.id_label = QLabel(ID_PROMPTS[MODE_ID])
        self.id_label.setObjectName("idLabel")
        self.id_label.setFont(_font(_BASE_PX["id_label"], bold=True))
        self.id_label.setWordWrap(True)
        self.id_field = QLineEdit()
        self.id_field.setObjectName("idField")
        self.id_field.setFont(_font(_BASE_PX["id_field"]))
        self.id_field.setPlaceholderText("Employee ID")
        self.id_field.setMaxLength(64)
        self.id_field.returnPressed.connect(self._on_id_entered)
        self.prompt = QLabel("Starting...")
        self.prompt.setObjectName("prompt")
        self.prompt.setFont(_font(_BASE_PX["prompt"], bold=True))
        self.prompt.setWordWrap(True)
        self.prompt.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.verdict = QLabel("")
        self.verdict.setObjectName("verdict")
        self.verdict.setFont(_font(_BASE_PX["verdict"], bold=True))
        self.verdict.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.verdict.setMinimumHeight(110)
        # the text never sets the label's width: the font is fitted to the width the layout gives
        self.verdict.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._scale = 1.0
        self.reason = QLabel("")
        self.reason.setObjectName("reason")
        self.reason.setFont(_font(_BASE_PX["reason"]))
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
        panel.setMinimumWidth(320)
        self.panel = panel
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
    def walking_up(self) -> bool:
        """The attempt under way is a walk-up."""
        return self._walk_up

    @property
    def takes_ids(self) -> bool:
        return self.mode in (MODE_ID, MODE_BOTH)

    def set_mode(self, mode: str) -> None:
        """"id" (type the ID), "walk-up" (face only) or "both" (kiosk.rules.decision.KIOSK_MODES)."""
        self.mode = mode if mode in ID_PROMPTS else MODE_ID
        self.id_label.setText(ID_PROMPTS[self.mode])
        self.id_field.setVisible(self.takes_ids and self.state not in (UNAVAILABLE, OUT_OF_SERVICE))

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
        self._show_outage(NO_PICTURE_TEXT)

    def _show_outage(self, text: str) -> None:
        """Out of service in plain words: no prompt to look at the camera or type an ID while it lasts."""
        self._walk_up = False
        self._reset_timer.stop()
        self.id_field.clear()
        self.id_field.setEnabled(False)
        self.id_label.setVisible(False)
        self.id_field.setVisible(False)
        self.prompt.setText("")
        self._show_verdict(OUT_OF_SERVICE_TITLE, text, "info")

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
        """The model cannot run (``reason``: for Admin and the log; visitors read plain words)."""
        self.state = UNAVAILABLE
        self.unavailable_reason = reason
        self._show_outage(NOT_WORKING_TEXT)

    def abandon_walk_up(self) -> None:
        """The kiosk view was hidden (the Admin tab shown) during a walk-up: it is dropped (the window cancels
        it in the worker); the next one starts when the kiosk is seen again."""
        if self.state == VERIFYING and self._walk_up:
            self._walk_up = False
            self.state = IDLE
            self.reset()

    def reset(self) -> None:
        """Ready for the next person."""
        if self.state in (UNAVAILABLE, OUT_OF_SERVICE):
            return
        self.state = IDLE
        self.id_label.setVisible(True)
        self.id_field.setVisible(self.takes_ids)
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
        self._fit_verdict()

    # -- sizes ------------------------------------------------------------------------------------------------
    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._scale_fonts()

    def _scale_fonts(self) -> None:
        """Fonts in proportion to the tab's size (the design size is 1200x720); the verdict fitted to its width."""
        scale = min(self.width() / DESIGN_SIZE[0], self.height() / DESIGN_SIZE[1])
        self._scale = max(0.5, scale)
        px = {name: size * self._scale for name, size in _BASE_PX.items()}
        self.id_label.setFont(_font(px["id_label"], bold=True))
        self.id_field.setFont(_font(px["id_field"]))
        self.prompt.setFont(_font(px["prompt"], bold=True))
        self.reason.setFont(_font(px["reason"]))
        self.verdict.setMinimumHeight(int(px["verdict"] * 1.3 + 2 * _VERDICT_PADDING))
        self.panel.setMinimumWidth(max(320, int(self.width() * 0.3)))
        self._fit_verdict()

    def _fit_verdict(self) -> None:
        width = self.verdict.contentsRect().width() - 2 * _VERDICT_PADDING - 4
        text = self.verdict.text() or "ACCEPT"
        font = _font(_BASE_PX["verdict"], bold=True)
        font.setPixelSize(fitted_pixel_size(font, text, width, _BASE_PX["verdict"] * self._scale))
        if font != self.verdict.font():
            self.verdict.setFont(font)

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
        self.verification_requested.emit(claimed, self.clock())

    def on_analysed(self, result: FrameResult) -> None:
        self.video.set_face(result.box, result.ok)
        if self.state == VERIFYING:
            self.prompt.setText(result.advice or "Hold still...")
        elif self.state == IDLE:  # a hint while the person types their ID
            self.prompt.setText(result.advice)
        # no walk-up while the kiosk view is hidden (the Admin tab shown): nobody would see its verdict
        ready = self.state == IDLE and self.walks_up and not self.id_field.text().strip() and self.isVisible()
        if self.walk_up_trigger.frame(result.box is not None, result.ok, ready, self.clock()):
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
        self.walk_up_trigger.decided(self.clock())
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
