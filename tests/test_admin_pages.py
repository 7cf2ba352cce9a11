"""Admin pages (issue 13 items 3-4), offscreen: the threshold's explicit, confirmed Apply with its DET plot and
fixed-width label; enrolment refusing a photo with two faces, showing each photo's face and problems,
clearing the form after saving, and opening file dialogs in Pictures or home."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QStandardPaths, Qt, QTimer

from kiosk.app import Admin, Kiosk
from kiosk.app.enrolment import check_photo
from kiosk.io.imageio import read_image
from kiosk.qt.background import wait_for_background
from kiosk.qt.employees_page import EmployeesPage
from kiosk.qt.threshold_page import ThresholdPage, _plotted
from kiosk.qt.worker import EngineInfo
from kiosk.rules.decision import estimate_rates
from kiosk.storage import SettingsStore
from kiosk.storage.audit import EVENT_DELETE, EVENT_ENROL, EVENT_RE_ENROL, EVENT_THRESHOLD
from kiosk.vision.quality import SEVERAL_FACES


def events(storage):
    """Admin events in the audit log, oldest first, as (kind, detail)."""
    wait_for_background()  # written off the GUI thread
    return [(e.kind, e.detail) for e in reversed(storage.audit.entries()) if e.is_event]


pytestmark = pytest.mark.slow  # the Qt pages, every test
ROC = [{"threshold": t / 100, "far": max(0.0, 1 - t / 60) ** 2, "frr": (t / 100) ** 3} for t in range(101)]


@pytest.fixture
def threshold_page(qtbot, storage):
    page = ThresholdPage(Admin(storage, SettingsStore()), None)
    qtbot.addWidget(page)
    page.resize(700, 500)
    page.show()
    page.set_model(EngineInfo("model.pt", 0.6, ROC, "test model"))
    told = []
    page.threshold_changed.connect(told.append)
    return page, told


def test_threshold_apply_asks_first_and_declined_changes_nothing(qtbot, threshold_page, storage):
    page, told = threshold_page
    asked = []
    page.confirm = lambda title, text: asked.append(text) or False
    page.slider.setValue(700)  # the slider alone: a preview
    assert page.preview_threshold == 0.7 and page.threshold == 0.6 and "not applied" in page.value_label.text()
    assert SettingsStore().load().threshold is None and not told
    qtbot.mouseClick(page.apply_button, Qt.MouseButton.LeftButton)
    assert asked and "0.600 (model default) to 0.700" in asked[0]
    assert SettingsStore().load().threshold is None and not told and page.threshold == 0.6
    assert "Not applied" in page.status.text() and events(storage) == []


def test_threshold_apply_confirmed_saves_tells_the_worker_says_so_and_is_audited(qtbot, threshold_page, storage):
    page, told = threshold_page
    page.confirm = lambda title, text: True
    page.slider.setValue(700)
    qtbot.mouseClick(page.apply_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not page.saving, timeout=5000)  # saved off the GUI thread
    assert SettingsStore().load().threshold == 0.7 and told == [0.7] and page.threshold == 0.7
    assert "Applied: threshold 0.700; it was 0.600 (model default)." in page.status.text()
    assert "(saved)" in page.value_label.text() and not page.apply_button.isEnabled()
    assert events(storage) == [(EVENT_THRESHOLD, "0.600 (model default) -> 0.700")]
    qtbot.mouseClick(page.apply_button, Qt.MouseButton.LeftButton)  # nothing new to apply: no entry
    # back to the model's own threshold: also previewed, then applied
    qtbot.mouseClick(page.reset_button, Qt.MouseButton.LeftButton)
    assert SettingsStore().load().threshold == 0.7 and told == [0.7]
    qtbot.mouseClick(page.apply_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not page.saving, timeout=5000)
    assert SettingsStore().load().threshold is None and told == [0.7, None] and page.threshold == 0.6
    assert events(storage)[1:] == [(EVENT_THRESHOLD, "0.700 -> 0.600 (model default)")]


def test_the_plot_marker_follows_the_slider(threshold_page):
    page, _ = threshold_page
    assert page.plot.isVisible() and page.curve.count() == len(ROC)
    for value in (200, 450, 600, 835, 990):
        page.slider.setValue(value)
        far, frr = estimate_rates(ROC, value / 1000)
        assert page.marker_rates() == pytest.approx((_plotted(far), _plotted(frr)))
        applied = [(p.x(), p.y()) for p in page.applied_marker.points()]  # the threshold in use stays
        in_use = estimate_rates(ROC, 0.6)
        assert applied == [pytest.approx((_plotted(in_use[0]), _plotted(in_use[1])))]
    page.preview_model_default()  # the slider on the threshold in use: one marker
    assert page.applied_marker.points() == [] and page.marker_rates() is not None
    page.set_model(EngineInfo("model.pt", 0.6, None, "no ROC"))
    assert page.marker_rates() is None and page.plot.isHidden() and "not available" in page.rates_label.text()


def test_the_value_label_has_a_fixed_width_so_the_slider_keeps_its_length(qtbot, threshold_page):
    page, _ = threshold_page
    page.confirm = lambda *args: True
    widths = set()
    for value in (50, 600, 999):
        page.slider.setValue(value)
        qtbot.wait(10)
        widths.add((page.value_label.width(), page.slider.width()))
        assert page.value_label.fontMetrics().horizontalAdvance(page.value_label.text()) <= page.value_label.width()
    qtbot.mouseClick(page.apply_button, Qt.MouseButton.LeftButton)
    qtbot.wait(10)
    widths.add((page.value_label.width(), page.slider.width()))
    assert len(widths) == 1


# -- enrolment ------------------------------------------------------------------------------------------------

@pytest.fixture
def employees_page(qtbot, storage):
    page = EmployeesPage(Kiosk(storage))
    qtbot.addWidget(page)
    page.resize(900, 600)
    page.show()
    page.set_engine_state(True)
    page.confirm = lambda *args: True
    return page


@pytest.fixture
def two_faces(tmp_path, good_photos) -> Path:
    """Two different people side by side in one photo."""
    left, right = (read_image(p) for p in (good_photos("Tony_Blair", 1)[0], good_photos("Colin_Powell", 1)[0]))
    path = tmp_path / "two_people.jpg"
    cv2.imwrite(str(path), np.hstack([left, right]))
    return path


def test_a_photo_with_two_faces_is_refused_with_the_reason(qtbot, employees_page, two_faces, good_photos):
    page = employees_page
    assert SEVERAL_FACES in check_photo(read_image(two_faces)).quality.reasons  # the real image shows both
    single = good_photos("Tony_Blair", 1)[0]
    page.choose_files = lambda: [str(two_faces), str(single)]
    qtbot.mouseClick(page.files_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.ops.running == 0, timeout=15000)  # the photos are checked off the GUI thread
    assert [label for _, label in page.pending] == [single.name]  # the single face is kept, the pair refused
    assert "two_people.jpg refused: several faces" in page.status.text()
    item = page.photos.item(0)  # the photo shows its face and its quality
    assert item.text() == f"{single.name}\nok" and not item.icon().isNull()


def test_each_photo_shows_its_problems(qtbot, employees_page, lfw_photos, tmp_path):
    page = employees_page
    dark = tmp_path / "dark.png"
    cv2.imwrite(str(dark), (read_image(lfw_photos("Tony_Blair")[0]) * 0.15).astype(np.uint8))
    check = check_photo(read_image(dark))
    if check.refusal or check.quality.ok:
        pytest.skip(f"the darkened photo gives {check.quality.describe()}")
    page.choose_files = lambda: [str(dark)]
    page.add_files()
    qtbot.waitUntil(lambda: page.ops.running == 0, timeout=15000)  # the photos are checked off the GUI thread
    assert page.photos.item(0).text() == "dark.png\n" + check.quality.describe()
    assert "refused at saving" in page.photos.item(0).toolTip()


def test_the_form_clears_after_a_successful_save(qtbot, employees_page, untrained_engine, good_photos, storage):
    page = employees_page

    def enrol(employee_id, name, images, replace):  # as the worker does
        try:
            page.on_enrolled(Admin(storage, SettingsStore()).enrol(untrained_engine, employee_id, name, images, replace))
        except Exception as exc:  # noqa: BLE001
            page.on_enrol_failed(str(exc))

    page.enrol_requested.connect(enrol)
    page.choose_files = lambda: [str(p) for p in good_photos("Colin_Powell", 2)]
    qtbot.mouseClick(page.files_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.ops.running == 0, timeout=15000)  # the photos are checked off the GUI thread
    page.id_field.setText("E-17")
    page.name_field.setText("Colin Powell")
    qtbot.mouseClick(page.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.status.text().startswith("Enrolled"), timeout=20000)
    assert storage.employees.get("E-17").photo_count == 2
    assert page.id_field.text() == "" and page.name_field.text() == ""
    assert not page.pending and page.photos.count() == 0 and not page.save_button.isEnabled()
    assert events(storage) == [(EVENT_ENROL, "E-17")]
    # re-enrolment, then deletion: each audited by ID
    page.choose_files = lambda: [str(good_photos("Colin_Powell", 1)[0])]
    qtbot.mouseClick(page.files_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.ops.running == 0, timeout=15000)  # the photos are checked off the GUI thread
    page.id_field.setText("E-17")
    page.name_field.setText("Colin Powell")
    qtbot.mouseClick(page.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: storage.employees.get("E-17").photo_count == 1, timeout=20000)
    assert events(storage)[1:] == [(EVENT_RE_ENROL, "E-17")]
    qtbot.waitUntil(lambda: page.table.rowCount() == 1, timeout=5000)
    page.table.selectRow(0)
    page.delete_selected()
    qtbot.waitUntil(lambda: storage.employees.get("E-17") is None, timeout=5000)
    assert events(storage)[2:] == [(EVENT_DELETE, "E-17")]
    assert all("photo" not in detail for _, detail in events(storage))  # the ID only


def test_file_dialogs_start_in_pictures_or_home(qtbot, employees_page, tmp_path, monkeypatch):
    page = employees_page
    seen = []
    page.file_dialog = lambda parent, caption, folder, filters: seen.append(folder) or ([], "")
    pictures = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation)
    home = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.HomeLocation)
    qtbot.mouseClick(page.files_button, Qt.MouseButton.LeftButton)
    expected = pictures if pictures and Path(pictures).is_dir() else home
    assert seen == [expected] and Path(seen[0]).resolve() != Path.cwd().resolve()
    # with a Pictures folder that exists, there
    QStandardPaths.setTestModeEnabled(True)
    try:
        pictures = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation)
        Path(pictures).mkdir(parents=True, exist_ok=True)
        page.choose_files()
        assert seen[-1] == pictures
    finally:
        QStandardPaths.setTestModeEnabled(False)


def test_applying_a_threshold_saves_off_the_gui_thread(qtbot, threshold_page, monkeypatch):
    """A fleet's registry may be slow to answer: the window must not freeze while the setting is saved."""
    page, told = threshold_page
    page.confirm = lambda title, text: True
    threads = []
    real_save = page._save

    def slow_save(policy, old):
        threads.append(threading.current_thread() is threading.main_thread())
        time.sleep(0.5)
        real_save(policy, old)

    monkeypatch.setattr(page, "_save", slow_save)
    page.slider.setValue(720)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(20)
    qtbot.mouseClick(page.apply_button, Qt.MouseButton.LeftButton)
    assert page.saving and not page.isEnabled() and not told  # not applied before it is saved
    qtbot.waitUntil(lambda: not page.saving, timeout=5000)
    timer.stop()
    assert threads == [False] and len(ticks) >= 10 and told == [0.72] and page.isEnabled()
