"""Admin page: the decision threshold, saved in the settings, with the model's estimated error rates and its
DET curve. What it shows is what the kiosk uses: both ask kiosk.rules.decision.ThresholdPolicy.

Moving the slider only previews a threshold (the rates, the marker on the curve); Apply asks for confirmation,
then saves it, tells the worker (``threshold_changed``) and records the change in the audit log.

The plot is Qt's own QtCharts (PySide6's Addons, already installed with PySide6): no new dependency, and it
draws log axes and a moving marker, which is all this page needs.
"""

from __future__ import annotations

import logging

from PySide6.QtCharts import QChart, QChartView, QLineSeries, QLogValueAxis, QScatterSeries
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import QLabel, QPushButton, QSlider, QVBoxLayout

from kiosk.app import Admin, describe_threshold
from kiosk.qt.setting_page import SettingPage, button_row, slider_row
from kiosk.qt.worker import EngineInfo, WalkUpInfo
from kiosk.rules.decision import THRESHOLD_RANGE, ThresholdPolicy, estimate_rates, roc_points

log = logging.getLogger(__name__)

STEPS = 1000  # slider resolution: 0.001
RATE_FLOOR = 0.0001  # the plot's log axes start at 0.01 %; rates of 0 are drawn there
_SOURCES = ("model default", "saved", "not applied")


def plural(count: int, one: str, many: str | None = None) -> str:
    """"1 person", "2 people", "1 reference photo", "3 reference photos"."""
    return f"{count} {one if count == 1 else (many or one + 's')}"


def _plotted(rate: float) -> float:
    """A rate (0..1) as drawn: percent, at least the axes' floor."""
    return 100.0 * max(RATE_FLOOR, min(1.0, rate))


class ThresholdPage(SettingPage):
    threshold_changed = Signal(object)  # float, or None for the model's own threshold

    SETTING = "threshold"

    def __init__(self, admin: Admin, saved: float | None, parent=None):
        # the applied policy: the settings' threshold; None: follow the model's default
        super().__init__(admin, ThresholdPolicy(saved), parent)
        self.model: EngineInfo | None = None
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(round(THRESHOLD_RANGE[0] * STEPS), round(THRESHOLD_RANGE[1] * STEPS))
        self.slider.setPageStep(10)
        self.slider.valueChanged.connect(self._on_slider)
        self.value_label = QLabel()
        metrics = self.value_label.fontMetrics()  # fixed width: the slider's length never jumps
        self.value_label.setFixedWidth(max(metrics.horizontalAdvance(f"0.000 ({s})") for s in _SOURCES) + 8)
        self.value_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.rates_label = QLabel()
        self.rates_label.setWordWrap(True)
        self.walk_up_label = QLabel("")  # walk-ups (1:N): their own rule, and what it means for the people enrolled
        self.walk_up_label.setWordWrap(True)
        self.site = None  # kiosk.rules.site.SiteCalibration of the people enrolled (the worker's WalkUpInfo)
        self.site_label = QLabel("")  # what the slider means for the people enrolled HERE
        self.site_label.setObjectName("site")
        self.site_label.setWordWrap(True)
        self.apply_button = QPushButton("Apply...")
        self.apply_button.clicked.connect(self.apply)
        self.reset_button = QPushButton("Use the model's threshold")
        self.reset_button.clicked.connect(self.preview_model_default)
        explain = QLabel("Higher: fewer impostors accepted, more employees asked to try again. "
                         "Lower: the opposite. Moving the slider shows the trade-off; Apply makes it the kiosk's "
                         "threshold for the next person.")
        explain.setWordWrap(True)

        self.chart = QChart()
        self.chart.setTitle("Trade-off on the model's validation pairs (DET curve)")
        self.chart.legend().setAlignment(Qt.AlignmentFlag.AlignBottom)
        self.curve = QLineSeries()
        self.curve.setName("all thresholds")
        self.marker = QScatterSeries()
        self.marker.setName("slider")
        self.marker.setMarkerSize(12.0)
        self.marker.setColor(QColor("#c62828"))
        self.applied_marker = QScatterSeries()  # the threshold in use, while the slider previews another
        self.applied_marker.setName("in use")
        self.applied_marker.setMarkerSize(10.0)
        self.applied_marker.setColor(QColor("#616161"))
        for series in (self.curve, self.applied_marker, self.marker):
            self.chart.addSeries(series)
        self.far_axis, self.frr_axis = QLogValueAxis(), QLogValueAxis()
        for axis, title, side in ((self.far_axis, "false accepts (%)", Qt.AlignmentFlag.AlignBottom),
                                  (self.frr_axis, "false rejects (%)", Qt.AlignmentFlag.AlignLeft)):
            axis.setTitleText(title)
            axis.setBase(10.0)
            axis.setRange(100.0 * RATE_FLOOR, 100.0)
            axis.setLabelFormat("%g")
            axis.setMinorTickCount(-1)
            self.chart.addAxis(axis, side)
            for series in (self.curve, self.applied_marker, self.marker):
                series.attachAxis(axis)
        self.plot = QChartView(self.chart)
        self.plot.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.plot.setMinimumHeight(260)

        layout = QVBoxLayout(self)
        layout.addWidget(explain)
        layout.addLayout(slider_row(self.slider, self.value_label))
        layout.addWidget(self.rates_label)
        layout.addWidget(self.site_label)
        layout.addWidget(self.walk_up_label)
        layout.addLayout(button_row(self.apply_button, self.reset_button))
        layout.addWidget(self.status)
        layout.addWidget(self.plot, 1)
        self._syncing = False
        self._plot_curve()
        self._sync()

    # -- state --------------------------------------------------------------------------------------------
    @property
    def model_default(self) -> float | None:
        return self.model.default_threshold if self.model is not None else None

    @property
    def threshold(self) -> float:
        """The applied threshold (what the kiosk decides with)."""
        return self.policy.threshold(self.model_default)

    @property
    def in_force(self) -> float:
        """The applied threshold, or the site's when stricter (kiosk.rules.site; what a claim is judged by at least)."""
        return self.site.in_force(self.threshold) if self.site is not None else self.threshold

    @property
    def preview_threshold(self) -> float:
        """The threshold the slider shows (applied or not)."""
        return self.preview_policy.threshold(self.model_default)

    @property
    def pending(self) -> bool:
        """The slider shows something other than the applied threshold."""
        return (self.preview_policy.follows_model() != self.policy.follows_model()
                or self.preview_threshold != self.threshold)

    def set_walk_up(self, info: WalkUpInfo) -> None:
        """What walk-up identification and the slider mean for the people enrolled now (the worker's WalkUpInfo)."""
        self.site = info.site
        self._show()
        if not info.available:
            self.walk_up_label.setText(f"Walk-up identification (face only): unavailable ({info.problem}).")
            return
        self.walk_up_label.setText(
            f"Walk-up identification (face only) has its own rule: the best match among everyone enrolled, at "
            f"P(same) {info.threshold:.3f} or more and {info.gap:.2f} ahead of the next person. With "
            f"{plural(info.people, 'person', 'people')} ({plural(info.photos, 'reference photo')}) enrolled, a stranger who walks up is let in as someone with "
            f"a chance of at most {info.expected_false_accepts:.3%} per walk-up (estimated from impostor "
            f"comparisons on LFW folds 6-10; an upper bound, it grows with every photo enrolled).")

    def set_model(self, info: EngineInfo | None) -> None:
        self.model = info
        self._plot_curve()
        self._sync()

    # -- actions ------------------------------------------------------------------------------------------
    def set_threshold(self, value: float) -> None:
        """Preview ``value`` and apply it at once, without asking (as an admin who confirmed)."""
        self.slider.setValue(round(value * STEPS))
        self._commit()

    def use_model_default(self) -> None:
        """Follow the model's own threshold and apply that at once, without asking."""
        self.preview_model_default()
        self._commit()

    def preview_model_default(self) -> None:
        self.preview_policy = ThresholdPolicy(None)
        self._sync()

    def flush(self) -> None:
        """Nothing to save: the slider alone never saves (kept for the window's shutdown)."""

    def _save(self, policy: ThresholdPolicy, old: ThresholdPolicy) -> None:
        self.admin.set_threshold(policy, old, self.model_default)

    def _announce(self, policy: ThresholdPolicy) -> None:
        self.threshold_changed.emit(policy.saved)

    # -- display ------------------------------------------------------------------------------------------
    def _describe(self, policy: ThresholdPolicy) -> str:
        return describe_threshold(policy, self.model_default)

    def _on_slider(self, value: int) -> None:
        if self._syncing:
            return
        self.preview_policy = ThresholdPolicy(value / STEPS)
        self._show()

    def _sync(self) -> None:
        self._syncing = True
        self.slider.setValue(round(self.preview_threshold * STEPS))
        self._syncing = False
        self._show()

    def _plot_curve(self) -> None:
        points = roc_points(self.model.roc if self.model else None)
        self.curve.replace([QPointF(_plotted(far), _plotted(frr)) for _, far, frr in points])
        self.plot.setVisible(bool(points))

    def marker_rates(self) -> tuple[float, float] | None:
        """(FAR, FRR) where the marker stands, or None when it is not drawn."""
        points = self.marker.points()
        return (points[0].x(), points[0].y()) if points else None

    @staticmethod
    def _point(rates: tuple[float, float] | None) -> list[QPointF]:
        return [] if rates is None else [QPointF(_plotted(rates[0]), _plotted(rates[1]))]

    def _show(self) -> None:
        value = self.preview_threshold
        source = ("not applied" if self.pending else
                  "model default" if self.preview_policy.follows_model() else "saved")
        self.value_label.setText(f"{value:.3f} ({source})")
        self.apply_button.setEnabled(self.pending)
        rates = estimate_rates(self.model.roc if self.model else None, value)
        self.marker.replace(self._point(rates))
        applied = estimate_rates(self.model.roc if self.model else None, self.threshold) if self.pending else None
        self.applied_marker.replace(self._point(applied))
        if self.model is None:
            self.rates_label.setText("Estimated error rates: unknown (no model loaded).")
        elif rates is None:
            self.rates_label.setText("Estimated error rates: not available (this model's file carries no ROC data).")
        else:
            far, frr = rates
            self.rates_label.setText(
                f"Estimated on the model's validation pairs at {value:.3f}: false accepts {far:.2%} "
                f"(impostors let in), false rejects {frr:.2%} (employees asked to try again). "
                f"Those pairs are LFW's, mostly Western public figures: other people score differently.")
        self.site_label.setText(self._site_text(value))

    def _site_text(self, value: float) -> str:
        """The slider's value for the people enrolled here (kiosk.rules.site): colleagues it alone would let in, and the
        site's own threshold, in force when stricter."""
        site = self.site
        if site is None:
            return ""
        if not site.fitted:
            return f"At this site: {site.describe()}. Enrol at least {site.rule.min_people} people to measure it."
        share = site.colleagues_above(value)
        in_force = site.in_force(value)
        strict = (f"The site's own threshold, {site.threshold:.3f}, is stricter and is used instead."
                  if in_force > value else "It is stricter than the site's own threshold "
                  f"({site.threshold:.3f}), so it is used.")
        own = sorted(site.person_thresholds.values())
        own_text = (f" Each employee also has their own threshold from their colleagues' scores against them "
                    f"({own[0]:.3f} to {own[-1]:.3f} here)." if own else "")
        return (f"At this site ({site.people} people enrolled): {value:.3f} alone would let about {share:.0%} of "
                f"colleagues in on each other's ID (every enrolled photo compared with every other person). {strict}"
                f"{own_text} Besides, a claim is refused when the face is closer to another enrolled employee.")
