"""Start the kiosk: command-line options, logging, the Qt application and the main window."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from kiosk.app import StorageError
from kiosk.logging_setup import setup_logging
from kiosk.paths import DEFAULT_WEIGHTS
from kiosk.qt.main_window import AppConfig, MainWindow, window_icon

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="main.py", description="Siamese Kiosk: face verification at the door.")
    parser.add_argument("--source", default="0",
                        help="camera index (default 0), a video file, an image file or a folder of images")
    parser.add_argument("--fullscreen", action="store_true", help="fill the screen (kiosk mode)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                        help=f"model weights (default {DEFAULT_WEIGHTS})")
    parser.add_argument("--fps", type=float, default=None,
                        help="frames per second for a video or folder source (default: video's own, folder 5)")
    parser.add_argument("--no-loop", action="store_true", help="play a video or folder once instead of looping")
    parser.add_argument("--database", default=None, metavar="URL",
                        help="a fleet's shared registry, postgresql://user@host/db (default: KIOSK_DATABASE_URL, "
                             "else this kiosk's own SQLite store); the password never goes in the URL")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def prepare_qt_environment() -> None:
    """opencv-python (the non-headless wheel) points Qt at its own plugin and font folders when cv2 is
    imported; PySide6 then fails to load its xcb plugin. Undo that (call after cv2 is imported)."""
    import cv2  # noqa: F401  (make sure its settings are in place before removing them)

    for var in ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR"):
        value = os.environ.get(var, "")
        if f"{os.sep}cv2{os.sep}" in value:
            del os.environ[var]


def pyside_loses_references() -> bool:
    """True for a PySide6 build that drops a reference to None on each call of a void method (PySide6 6.12.0
    on Python 3.11 does): the kiosk would then crash after a few minutes ("deallocating None")."""
    from PySide6.QtCore import QObject

    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(200):
        probe.setObjectName("probe")
    return sys.getrefcount(None) < before - 100


def _log_uncaught(kind, value, tb) -> None:
    """An exception escaping a Qt slot is logged, not fatal (the kiosk keeps running)."""
    log.critical("uncaught exception", exc_info=(kind, value, tb))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log_file = setup_logging(args.log_level)
    log.info("starting the kiosk (source %s, weights %s, log %s)", args.source, args.weights, log_file)
    sys.excepthook = _log_uncaught
    prepare_qt_environment()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Siamese Kiosk")
    app.setWindowIcon(window_icon())
    config = AppConfig(source=args.source, weights=args.weights, fullscreen=args.fullscreen, fps=args.fps,
                       loop=not args.no_loop, database=args.database)
    if pyside_loses_references():
        import PySide6
        log.critical("PySide6 %s on Python %d.%d corrupts reference counts: the kiosk will crash within minutes. "
                     "Install PySide6 < 6.12 or use Python 3.12 or newer.", PySide6.__version__, *sys.version_info[:2])
    try:
        window = MainWindow(config)
    except StorageError as exc:
        log.critical("%s", exc)
        QMessageBox.critical(None, "Siamese Kiosk", f"The kiosk cannot start:\n\n{exc}")
        return 2
    signal.signal(signal.SIGINT, lambda *_: window.quit_kiosk())  # Ctrl+C in the terminal (the admin's) closes
    wake = QTimer()
    wake.start(300)  # lets Python see the signal while Qt's loop runs
    wake.timeout.connect(lambda: None)
    if args.fullscreen:
        window.show_kiosk_fullscreen()
    else:
        window.resize(1200, 720)
        window.show()
    code = app.exec()
    window.shutdown()
    return code
