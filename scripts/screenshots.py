"""Screenshots of the real kiosk window for the README, taken under a virtual X server.

Starts the app's MainWindow on Qt's X11 platform (under Xvfb), with throw-away data folders, an image-folder
source of NUAA webcam frames (a person live, then a printed photo of them held to the camera, then a colleague
claiming their ID), the shipped models, all 9 NUAA people enrolled from one live frame each and a set PIN; shows
the kiosk screen, the three verdicts, and the admin pages; and saves what the window draws (``QWidget.grab``) to
docs/screenshots/WxH/, once for each window size given (default: the smallest and a full-HD screen).

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python scripts/screenshots.py [--size 800x600 --size 1920x1080]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
PIN = "246810"


SIZES = ("800x600", "1920x1080")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", action="append", help="window size WxH (repeatable; default 800x600, 1920x1080)")
    args = parser.parse_args()
    if not os.environ.get("DISPLAY"):
        print("needs an X server: xvfb-run -a -s '-screen 0 1920x1080x24' .venv/bin/python scripts/screenshots.py")
        return 2
    sizes = args.size or list(SIZES)
    if len(sizes) > 1:  # one fresh process (and data folder) per size
        return max(subprocess.run([sys.executable, __file__, "--size", size]).returncode for size in sizes)
    width, height = (int(v) for v in sizes[0].lower().split("x"))
    out = OUT / f"{width}x{height}"
    work = Path(tempfile.mkdtemp(prefix="kiosk-shots-"))
    for var, name in (("KIOSK_DATA_DIR", "data"), ("KIOSK_CONFIG_DIR", "config"), ("KIOSK_LOG_DIR", "logs")):
        os.environ[var] = str(work / name)
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    sys.path.insert(0, str(ROOT))

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from kiosk.app.enrolment import enrol_files
    from kiosk.paths import DEFAULT_WEIGHTS, datasets_dir
    from kiosk.qt.app import prepare_qt_environment
    from kiosk.qt.main_window import AppConfig, MainWindow
    from kiosk.storage import PinManager, SettingsStore, Storage
    from kiosk.vision.engine import FaceEngine

    prepare_qt_environment()
    nuaa = datasets_dir() / "nuaa"
    camera = work / "camera"
    camera.mkdir()

    def show_on_camera(kind: str, person: str = "0001") -> None:  # the folder source rescans at each loop
        for old in camera.iterdir():
            old.unlink()
        files = sorted((nuaa / kind / person).glob(f"{person}_*.jpg"))
        # Alex live or printed: session 2, with glasses; a colleague: frames after their reference
        chosen = [f for f in files if f.name.startswith("0001_00_") and f.stem.split("_")[3] == "02"][:6] \
            if person == "0001" else files[6:12]
        for path in chosen:
            shutil.copy(path, camera / path.name)

    show_on_camera("live")
    storage = Storage.open()
    engine = FaceEngine(DEFAULT_WEIGHTS)
    try:  # the site: 0001 is "Alex Chen", E1042; the 8 others are colleagues
        for number, person in enumerate(sorted(p.name for p in (nuaa / "live").iterdir() if p.is_dir())):
            first = sorted((nuaa / "live" / person).glob("*.jpg"))[0]
            employee_id, name = ("E1042", "Alex Chen") if person == "0001" else (f"E20{number:02d}", f"Colleague {number}")
            enrol_files(engine, storage.employees, employee_id, name, [first])
    finally:
        storage.close()
    PinManager(SettingsStore()).set_pin(PIN, PIN)

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow(AppConfig(source=str(camera), weights=DEFAULT_WEIGHTS, fps=10, loop=True))
    window.resize(width, height)
    window.show()
    out.mkdir(parents=True, exist_ok=True)
    steps = []

    def shot(name: str):
        return lambda: window.grab().save(str(out / f"{name}.png"))

    def claim():
        window.show_kiosk_view()
        window.kiosk.id_field.setText("E1042")
        window.kiosk.id_field.returnPressed.emit()

    def admin(page):
        def show():
            window.show_admin_view()
            if not window.admin.unlocked:
                window.admin.pin_field.setText(PIN)
                window.admin.pin_field.returnPressed.emit()
            window.admin.panel.setCurrentWidget(page)
        return show

    steps += [(4000, shot("kiosk")), (500, claim), (2500, shot("accept")),
              (500, lambda: show_on_camera("photo")), (4500, claim), (2500, shot("attack")),
              (500, lambda: show_on_camera("live", "0002")), (4500, claim), (2500, shot("colleague")),
              (3000, admin(window.employees)), (1500, shot("admin_employees")),
              (500, admin(window.threshold_page)), (800, shot("admin_threshold")),
              (500, admin(window.liveness_page)), (800, shot("admin_liveness")),
              (500, admin(window.door_page)), (800, shot("admin_door")),
              (500, admin(window.audit_page)), (1200, shot("admin_audit")),
              (500, lambda: (window.shutdown(), app.quit()))]
    delay = 0
    for wait, action in steps:
        delay += wait
        QTimer.singleShot(delay, action)
    app.exec()
    print(f"wrote {', '.join(sorted(p.name for p in out.glob('*.png')))} to {out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
