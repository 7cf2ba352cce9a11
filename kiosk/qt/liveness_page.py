"""Admin page: liveness (is the face in front of the camera live, or a printed photo?) on or off, and its own
P(live) threshold, with the attack-accept and live-refuse rates the liveness model's held-out people give there.
What it shows is what the kiosk uses: both ask kiosk.rules.decision.LivenessPolicy.

Like the face threshold: the controls only preview; Apply asks for confirmation, saves, tells the worker
(``liveness_changed``) and records the change in the audit log.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QLabel, QPushButton, QSlider, QVBoxLayout

from kiosk.app import Admin, describe_liveness
from kiosk.qt.setting_page import SettingPage, button_row, slider_row
from kiosk.qt.worker import EngineInfo
from kiosk.rules.decision import LIVENESS_THRESHOLD_RANGE, LivenessPolicy, estimate_rates

log = logging.getLogger(__name__)

STEPS = 1000  # slider resolution: 0.001


class LivenessPage(SettingPage):
    liveness_changed = Signal(object)  # LivenessPolicy

    SETTING = "liveness"

    def __init__(self, admin: Admin, policy: LivenessPolicy, parent=None):
        super().__init__(admin, policy, parent)
        self.model: EngineInfo | None = None
        explain = QLabel("Liveness refuses a face that looks like a printed photo held up to the camera: the "
                         "person is asked to look at the camera themselves, and the audit log records a suspected "
                         "presentation attack. It was trained on one database of printed-photo attacks (NUAA); "
                         "screen replays and masks were not in it.")
        explain.setWordWrap(True)
        self.enabled_box = QCheckBox("Check liveness (recommended)")
        self.enabled_box.toggled.connect(self._on_controls)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(round(LIVENESS_THRESHOLD_RANGE[0] * STEPS), round(LIVENESS_THRESHOLD_RANGE[1] * STEPS))
        self.slider.setPageStep(10)
        self.slider.valueChanged.connect(self._on_controls)
        self.value_label = QLabel()
        self.value_label.setFixedWidth(self.value_label.fontMetrics().horizontalAdvance("0.000 (model default)") + 8)
        self.rates_label = QLabel()
        self.rates_label.setWordWrap(True)
        self.apply_button = QPushButton("Apply...")
        self.apply_button.clicked.connect(self.apply)
        self.reset_button = QPushButton("Use the liveness model's threshold")
        self.reset_button.clicked.connect(self.preview_model_default)
        layout = QVBoxLayout(self)
        layout.addWidget(explain)
        layout.addWidget(self.enabled_box)
        layout.addLayout(slider_row(self.slider, self.value_label))
        layout.addWidget(self.rates_label)
        layout.addLayout(button_row(self.apply_button, self.reset_button))
        layout.addWidget(self.status)
        layout.addStretch(1)
        self._syncing = False
        self._sync()

    # -- state --------------------------------------------------------------------------------------------
    @property
    def model_default(self) -> float | None:
        return self.model.liveness_threshold if self.model is not None else None

    def _value(self, policy: LivenessPolicy) -> float | None:
        """The P(live) threshold ``policy`` sets, liveness on or off (None: unknown, no liveness model yet)."""
        return LivenessPolicy(True, policy.saved).threshold(self.model_default)

    def set_model(self, info: EngineInfo | None) -> None:
        self.model = info
        self._sync()

    # -- actions ------------------------------------------------------------------------------------------
    def preview_model_default(self) -> None:
        self.preview_policy = LivenessPolicy(self.preview_policy.enabled, None)
        self._sync()

    def set_policy(self, policy: LivenessPolicy) -> None:
        """Preview ``policy`` and apply it at once, without asking (as an admin who confirmed)."""
        self.preview_policy = policy
        self._sync()
        self._commit()

    def _warning(self) -> str:
        switching_off = self.policy.enabled and not self.preview_policy.enabled
        return "\n\nWith liveness off, anyone holding a photo of an employee can be let in." if switching_off else ""

    def _save(self, policy: LivenessPolicy, old: LivenessPolicy) -> None:
        self.admin.set_liveness(policy, old, self.model_default)

    def _announce(self, policy: LivenessPolicy) -> None:
        self.liveness_changed.emit(policy)

    # -- display ------------------------------------------------------------------------------------------
    def _describe(self, policy: LivenessPolicy) -> str:
        return describe_liveness(policy, self.model_default)

    def _on_controls(self, *_) -> None:
        if self._syncing:
            return
        saved = self.slider.value() / STEPS
        if self.preview_policy.saved is None and self.model_default is not None \
                and round(self.model_default * STEPS) == self.slider.value():
            saved = None  # the slider was not moved off the model's threshold
        self.preview_policy = LivenessPolicy(self.enabled_box.isChecked(), saved)
        self._show()

    def _sync(self) -> None:
        self._syncing = True
        self.enabled_box.setChecked(self.preview_policy.enabled)
        value = self._value(self.preview_policy)
        if value is not None:
            self.slider.setValue(round(value * STEPS))
        self._syncing = False
        self._show()

    def _show(self) -> None:
        policy = self.preview_policy
        value = self._value(policy)
        source = "not applied" if self.pending else "model default" if policy.saved is None else "saved"
        self.value_label.setText("-" if value is None else f"{value:.3f} ({source})")
        self.slider.setEnabled(policy.enabled)
        self.apply_button.setEnabled(self.pending)
        if self.model is not None and self.model.liveness_threshold is None:
            self.rates_label.setText(f"No liveness model is loaded ({self.model.liveness_problem or 'unknown'}): "
                                     f"with liveness on, every attempt is refused until it is restored.")
            return
        if not policy.enabled:
            self.rates_label.setText("Liveness is off: a printed photo of an employee's face is accepted like "
                                     "the employee.")
            return
        rates = estimate_rates(self.model.liveness_roc if self.model else None, value or 0.5, ("apcer", "bpcer"))
        if rates is None:
            self.rates_label.setText("Estimated error rates: not available yet (the model is loading).")
            return
        apcer, bpcer = rates
        self.rates_label.setText(
            f"Estimated per frame on people the liveness model did not train on (NUAA, leave one person out) at "
            f"{value:.3f}: photo attacks accepted (APCER) {apcer:.2%}, live people refused (BPCER) {bpcer:.2%}. "
            f"An attempt fuses several frames; real cameras and attacks differ.")
