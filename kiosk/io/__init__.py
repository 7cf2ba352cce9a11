"""The bottom layer: files written atomically and privately, images decoded safely, frame sources (cameras,
videos, folders). Nothing here knows about faces.

Decompression bombs: ``MAX_IMAGE_PIXELS`` is the largest image (width x height) the kiosk decodes.
kiosk.io.imageio checks it from the file's header before decoding; OpenCV enforces the same limit for every
format it reads, but it reads OPENCV_IO_MAX_IMAGE_PIXELS once, when cv2 is loaded, so it is set here, on the
first import of any module of this package, before anything in the kiosk imports cv2 (kiosk.vision, kiosk.lab
and kiosk.storage import this package first; where cv2 was loaded before, OpenCV keeps its own 2^30 and only
the header check applies). KIOSK_MAX_IMAGE_PIXELS changes the limit (a smaller OPENCV_IO_MAX_IMAGE_PIXELS
already set is kept). ``import kiosk`` alone sets nothing.
"""

import os as _os

DEFAULT_MAX_IMAGE_PIXELS = 40_000_000


def _positive_int(text: str | None) -> int | None:
    try:
        value = int(text) if text else None
    except ValueError:
        return None
    return value if value and value > 0 else None


MAX_IMAGE_PIXELS = _positive_int(_os.environ.get("KIOSK_MAX_IMAGE_PIXELS")) or DEFAULT_MAX_IMAGE_PIXELS


def limit_opencv_pixels() -> None:
    """Set OPENCV_IO_MAX_IMAGE_PIXELS to the kiosk's limit (unless a smaller one is set); effective only when
    cv2 has not been loaded yet."""
    opencv_limit = _positive_int(_os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS"))
    if opencv_limit is None or opencv_limit > MAX_IMAGE_PIXELS:
        _os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(MAX_IMAGE_PIXELS)


limit_opencv_pixels()
