"""Admin page: the decision threshold, saved in the settings, with the model's estimated error rates. What
it shows is what the kiosk uses: both ask kiosk.decision.ThresholdPolicy."""

from __future__ import annotations

import logging

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSlider, QVBoxLayout, QWidget

from ..decision import THRESHOLD_RANGE, ThresholdPolicy, estimate_rates
from ..storage import SettingsStore, StorageError
from .worker import EngineInfo

log = logging.getLogger(__name__)

STEPS = 1000  # slider resolution: 0.001


class ThresholdPage(QWidget):
    threshold_changed = Signal(object)  # float, or None for the model's own threshold

    def __init__(self, settings: SettingsStore, saved: float | None, parent=None):
        super().__init__(parent)
        self.settings = settings
        self.policy = ThresholdPolicy(saved)  # the settings' threshold; None: follow the model's default
        self.model: EngineInfo | None = None
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(round(THRESHOLD_RANGE[0] * STEPS), round(THRESHOLD_RANGE[1] * STEPS))
        self.slider.setPageStep(10)
        self.slider.valueChanged.connect(self._on_slider)
        self.value_label = QLabel()
        self.rates_label = QLabel()
        self.rates_label.setWordWrap(True)
        self.reset_button = QPushButton("Use the model's threshold")
        self.reset_button.clicked.connect(self.use_model_default)
        explain = QLabel("Higher: fewer impostors accepted, more employees asked to try again. "
                         "Lower: the opposite. Changes apply to the next person.")
        explain.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(QLabel("Strictness"))
        row.addWidget(self.slider, 1)
        row.addWidget(self.value_label)
        layout = QVBoxLayout(self)
        layout.addWidget(explain)
        layout.addLayout(row)
        layout.addWidget(self.rates_label)
        layout.addWidget(self.reset_button)
        layout.addStretch(1)
        self._save_timer = QTimer(self)  # debounce: save when the slider rests
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(400)
        self._save_timer.timeout.connect(self._save)
        self._syncing = False
        self._sync()

    @property
    def threshold(self) -> float:
        return self.policy.threshold(self.model.default_threshold if self.model is not None else None)

    def set_model(self, info: EngineInfo | None) -> None:
        self.model = info
        self._sync()

    def set_threshold(self, value: float) -> None:
        """Set (as the admin would with the slider) and save at once."""
        self.slider.setValue(round(value * STEPS))
        self.flush()

    def flush(self) -> None:
        if self._save_timer.isActive():
            self._save_timer.stop()
            self._save()

    def use_model_default(self) -> None:
        self.policy = ThresholdPolicy(None)
        self._sync()
        self.threshold_changed.emit(None)
        self._save()

    def _on_slider(self, value: int) -> None:
        if self._syncing:
            return
        self.policy = ThresholdPolicy(value / STEPS)
        self._show()
        self.threshold_changed.emit(self.policy.saved)
        self._save_timer.start()

    def _save(self) -> None:
        try:
            self.settings.update(threshold=self.policy.saved)
        except StorageError as exc:
            self.rates_label.setText(f"Cannot save the threshold: {exc}")
            log.error("cannot save the threshold: %s", exc)

    def _sync(self) -> None:
        self._syncing = True
        self.slider.setValue(round(self.threshold * STEPS))
        self._syncing = False
        self._show()

    def _show(self) -> None:
        value = self.threshold
        source = "model default" if self.policy.follows_model() else "saved"
        self.value_label.setText(f"{value:.3f} ({source})")
        rates = estimate_rates(self.model.roc if self.model else None, value)
        if self.model is None:
            self.rates_label.setText("Estimated error rates: unknown (no model loaded).")
        elif rates is None:
            self.rates_label.setText("Estimated error rates: not available (this model's file carries no ROC data).")
        else:
            far, frr = rates
            self.rates_label.setText(
                f"Estimated on the model's validation pairs at {value:.3f}: false accepts {far:.2%} "
                f"(impostors let in), false rejects {frr:.2%} (employees asked to try again). "
                f"Real conditions differ.")
