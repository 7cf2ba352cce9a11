"""Reading image files into BGR uint8 arrays, refusing corrupt or truncated files with a clear reason."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import ImageReadError

_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND"


def _looks_truncated(data: bytes) -> bool:
    """JPEG and PNG carry an end marker; a file cut short has lost it (OpenCV would decode it grey-filled)."""
    tail = data[-64:]
    if data.startswith(_JPEG_START):
        return _JPEG_END not in tail
    if data.startswith(_PNG_START):
        return _PNG_END not in tail
    return False


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Decode encoded image bytes to a BGR uint8 array."""
    if not data:
        raise ImageReadError(f"{name}: the file is empty")
    if _looks_truncated(data):
        raise ImageReadError(f"{name}: the image file is truncated (incomplete download or copy?)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageReadError(f"{name}: not a readable image (corrupt file or unsupported format)")
    return image


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as BGR uint8; raises ImageReadError naming the file on any problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"{path}: is a folder, not an image file") from None
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return decode_image(data, str(path))
