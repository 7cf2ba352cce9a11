"""Siamese Kiosk: offline one-shot face verification (Koch, Zemel & Salakhutdinov 2015).

The package is Qt-free except for ``kiosk.qt``; tests and the command line drive the core directly.
"""

import os as _os

__version__ = "0.1.0"

# Decompression bombs: the largest image (width x height) the kiosk decodes. kiosk.io.imageio checks it from
# the file's header before decoding; OpenCV enforces the same limit for every format it reads, but it
# reads OPENCV_IO_MAX_IMAGE_PIXELS once, when cv2 is loaded, so it is set here, on the first import of
# any kiosk module, before anything imports cv2 (where cv2 was loaded first, OpenCV keeps its own 2^30
# and only the header check applies). KIOSK_MAX_IMAGE_PIXELS changes the limit (a smaller
# OPENCV_IO_MAX_IMAGE_PIXELS already set is kept).
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000


def _positive_int(text: str | None) -> int | None:
    try:
        value = int(text) if text else None
    except ValueError:
        return None
    return value if value and value > 0 else None


MAX_IMAGE_PIXELS = _positive_int(_os.environ.get("KIOSK_MAX_IMAGE_PIXELS")) or DEFAULT_MAX_IMAGE_PIXELS
_opencv_limit = _positive_int(_os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS"))
if _opencv_limit is None or _opencv_limit > MAX_IMAGE_PIXELS:
    _os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(MAX_IMAGE_PIXELS)

# torch's OpenMP threads busy-wait after each parallel region (libgomp's default spin), taking a core from
# OpenCV's detection of the next frame: a live frame took 24 ms with one torch thread and 24 with two.
# A shorter spin before they sleep lets both libraries use both cores (21.5 ms; benchmarks/speed.py).
# libgomp reads it when torch loads it, so it is set on the first import of any kiosk module.
_os.environ.setdefault("GOMP_SPINCOUNT", "30000")
