"""On a real X server (Xvfb, started here): a kiosk whose window is destroyed from outside stops with exit code
4 and audits why, instead of running on behind a black screen (#24 item 1). Skips where Xvfb or Qt's xcb
platform cannot run."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import LFW

pytestmark = pytest.mark.slow

APP = textwrap.dedent("""
    import sys
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication
    from kiosk.qt.app import main, prepare_qt_environment
    prepare_qt_environment()
    app = QApplication(sys.argv[:1])

    def report():  # the shown window's X id, for the test to destroy
        shown = [w for w in QApplication.topLevelWidgets() if w.isVisible()]
        if shown:
            print(int(shown[0].winId()), flush=True)
        else:
            QTimer.singleShot(100, report)

    QTimer.singleShot(100, report)
    sys.exit(main(sys.argv[1:]))
""")


def _xvfb(display: int):
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb is not installed (Debian: xvfb)")
    server = subprocess.Popen([xvfb, f":{display}", "-nolisten", "tcp", "-screen", "0", "800x600x24"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socket = Path(f"/tmp/.X11-unix/X{display}")
    for _ in range(100):
        if socket.exists() or server.poll() is not None:
            break
        try:
            server.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            pass
    if not socket.exists():
        server.kill()
        pytest.skip(f"Xvfb :{display} did not start")
    return server


class _Cookie(ctypes.Structure):
    _fields_ = [("sequence", ctypes.c_uint)]


def _destroy(display: int, window: int) -> None:
    """DestroyWindow from another client, as xdotool windowclose does; checked (a round trip), since a request
    only flushed before the disconnect was sometimes never carried out."""
    xcb = ctypes.CDLL(ctypes.util.find_library("xcb"))
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_destroy_window_checked.restype = _Cookie
    xcb.xcb_destroy_window_checked.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    xcb.xcb_request_check.restype = ctypes.c_void_p
    xcb.xcb_request_check.argtypes = [ctypes.c_void_p, _Cookie]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    libc.free.argtypes = [ctypes.c_void_p]
    connection = xcb.xcb_connect(f":{display}".encode(), None)
    error = xcb.xcb_request_check(connection, xcb.xcb_destroy_window_checked(connection, window))
    xcb.xcb_disconnect(connection)
    if error:
        libc.free(error)
        pytest.fail(f"the X server refused to destroy window {window}")


def test_a_window_destroyed_from_outside_stops_the_kiosk(tmp_path, untrained_weights):
    if ctypes.util.find_library("xcb") is None:
        pytest.skip("libxcb is not installed")
    if not LFW.is_dir():
        pytest.skip(f"LFW not found at {LFW} (its photos are the camera here)")
    display = 90 + os.getpid() % 100
    server = _xvfb(display)
    env = dict(os.environ, DISPLAY=f":{display}", QT_QPA_PLATFORM="xcb", KIOSK_DATA_DIR=str(tmp_path / "data"),
               KIOSK_CONFIG_DIR=str(tmp_path / "config"), KIOSK_LOG_DIR=str(tmp_path / "logs"))
    try:
        app = subprocess.Popen([sys.executable, "-c", APP, "--source", str(LFW / "Colin_Powell"), "--weights",
                                str(untrained_weights), "--fullscreen", "--fps", "5"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = app.stdout.readline()  # the window's id, once shown
            if not line.strip().isdigit():
                app.kill()
                pytest.skip(f"the kiosk did not start on Qt's xcb platform: {app.stderr.read()[-500:]}")
            _destroy(display, int(line))
            assert app.wait(timeout=60) == 4
        finally:
            if app.poll() is None:
                app.kill()
    finally:
        server.kill()
        server.wait()
    log = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert "the window was destroyed by the window system" in log
