"""Faces in pictures: detection, alignment, the one preprocessing path, quality, the networks and their weights,
and liveness. Torch lives here (and in kiosk.lab), nowhere else.

What OpenCV and torch read once, when they load, is set here, before any module of this package loads them:
OpenCV's image pixel limit (kiosk.io sets it on import), and the OpenMP spin count. torch's OpenMP threads
busy-wait after each parallel region (libgomp's default spin); a shorter spin before they sleep matters when
KIOSK_THREADS gives torch more than one thread (the default is one: kiosk.vision.threads, which measures why).
libgomp reads GOMP_SPINCOUNT when torch loads it (a value already set is kept).
"""

import os as _os

import kiosk.io as _io  # noqa: F401  (OpenCV's pixel limit, before the modules here import cv2)

_os.environ.setdefault("GOMP_SPINCOUNT", "30000")
