"""Whether the kiosk's native window still exists on the X server. A window destroyed from outside (xdotool
windowclose, a crashed window manager's clean-up) only looks unexposed to Qt, and the process would go on behind
a black screen; the main window asks here when it is unexposed and quits if the window is gone.

libxcb through ctypes (Qt's own xcb platform already loads it): one round trip, GetWindowAttributes, whose error
means the window is gone. Elsewhere than on X (Wayland, Windows, macOS, offscreen) the answer is None: unknown."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)


class _Cookie(ctypes.Structure):
    _fields_ = [("sequence", ctypes.c_uint)]


class _X:
    def __init__(self):
        name = ctypes.util.find_library("xcb")
        if name is None:
            raise OSError("libxcb not found")
        self.xcb = xcb = ctypes.CDLL(name)
        self.libc = ctypes.CDLL(ctypes.util.find_library("c"))
        xcb.xcb_connect.restype = ctypes.c_void_p
        xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
        xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
        xcb.xcb_get_window_attributes.restype = _Cookie
        xcb.xcb_get_window_attributes.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        xcb.xcb_get_window_attributes_reply.restype = ctypes.c_void_p
        xcb.xcb_get_window_attributes_reply.argtypes = [ctypes.c_void_p, _Cookie, ctypes.POINTER(ctypes.c_void_p)]
        self.libc.free.argtypes = [ctypes.c_void_p]
        self.connection = xcb.xcb_connect(None, None)
        if not self.connection or xcb.xcb_connection_has_error(self.connection):
            raise OSError("cannot connect to the X server")

    def exists(self, window: int) -> bool:
        error = ctypes.c_void_p()
        reply = self.xcb.xcb_get_window_attributes_reply(
            self.connection, self.xcb.xcb_get_window_attributes(self.connection, window), ctypes.byref(error))
        for pointer in (reply, error.value):
            if pointer:
                self.libc.free(pointer)
        return bool(reply)


_x: _X | None = None


def window_exists(platform: str, window: int) -> bool | None:
    """True or False on Qt's xcb platform; None where it cannot be told."""
    global _x
    if platform != "xcb":
        return None
    try:
        if _x is None:
            _x = _X()
        return _x.exists(window)
    except OSError as exc:
        log.warning("cannot ask the X server about the window: %s", exc)
        return None
