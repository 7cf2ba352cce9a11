"""Reading image files into BGR uint8 arrays, refusing corrupt, truncated, oversized or tiny files with a
clear reason.

Decompression bombs: a PNG of 124 KB can declare 32000x32000 pixels (3 GB once decoded). The size is
read from the file's own header (PNG IHDR, JPEG SOF, BMP, WebP, TIFF) and checked against a pixel limit
BEFORE anything is decoded; formats whose size this module cannot read are refused. OpenCV enforces the
same limit itself (OPENCV_IO_MAX_IMAGE_PIXELS, set by kiosk/io/__init__.py, which runs before the import of
cv2 below), as a second line should a header lie. Images given as arrays (``check_image_array``) are held to
the same shape and size rules as decoded files.

Decoding under limits (time and memory, #25 item 7): a JPEG's markers are walked before decoding: more than
MAX_JPEG_SCANS scans are refused (20,000 repeats of one scan took minutes), as is a multi-scan JPEG whose
coefficient buffer would pass MAX_JPEG_COEFFICIENT_BYTES; truncation is judged by where the last scan's data
ends (an end-of-image marker there; bytes after it, a phone's trailer, are ignored), and libjpeg's own
"premature end" warning refuses a file cut inside a scan whose end marker was put back. An image of more than
DECODE_MAX_PIXELS is decoded at 1/2, 1/4 or 1/8 size (by DCT scaling for a JPEG). A TIFF whose first page
declares its width or height twice is refused (only the first page is read). The decode of the worst accepted
files peaks under 500 MB of RSS (tests/test_decode_limits.py measures it in a fresh process).
"""

from __future__ import annotations

import os
import stat
import struct
import sys
import tempfile
import threading
from pathlib import Path

import cv2  # kiosk/io/__init__.py, run before this module, has set OpenCV's pixel limit
import numpy as np

from kiosk.errors import ImageReadError
from kiosk.io import MAX_IMAGE_PIXELS

# The default limit (40 MP unless KIOSK_MAX_IMAGE_PIXELS says otherwise); callers may pass a smaller one.
DEFAULT_MAX_PIXELS = MAX_IMAGE_PIXELS
# A face needs pixels: below this on either side there is nothing to detect (and 1x1 broke the crop).
MIN_IMAGE_SIDE = 16
# An encoded file never needs more than an uncompressed 32-bit BMP of the largest allowed image.
_BYTES_PER_PIXEL_MAX = 4
_FILE_SLACK = 1 << 20

SUPPORTED_FORMATS = "JPEG, PNG, BMP, WebP or TIFF"
# THE list of image file types (the formats above, whose size this module reads from the header): dataset
# folders, image-folder sources and the photo file dialogs all use it.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# For Qt file dialogs: "Images (*.jpg *.jpeg ...)".
IMAGE_FILE_FILTER = "Images (" + " ".join(f"*{suffix}" for suffix in IMAGE_SUFFIXES) + ")"


def is_image_file(path: str | Path) -> bool:
    """Whether the file name has one of the image suffixes (case-insensitive); the content is not read."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES

_JPEG_START = b"\xff\xd8"
_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND"
# JPEG start-of-frame markers (baseline, extended, progressive, lossless, arithmetic); not DHT/JPG/DAC
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_NO_LENGTH = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0-7: markers without a length field


def max_file_bytes(max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """The largest file read for a given pixel limit (an uncompressed 32-bit image of that size)."""
    return max_pixels * _BYTES_PER_PIXEL_MAX + _FILE_SLACK


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


# A real progressive JPEG has about 10 scans; thousands cost minutes to decode (one of 1.39 MB with 20,000 took
# 2 min 17 s): refused from the markers, before decoding (libjpeg-turbo's djpeg has -maxscans for the same).
MAX_JPEG_SCANS = 100
# A JPEG in several scans (progressive, or sequential with one scan per colour) is decoded through a buffer of
# the whole image's DCT coefficients, 2 bytes each, kept at full size whatever the output's: 240 MB for 40 MP in
# full colour resolution (4:4:4), 120 MB in 4:2:0. Above this budget it is refused before decoding (40 MP in
# 4:2:0 or 4:2:2 passes; 4:4:4 up to about 26 MP).
MAX_JPEG_COEFFICIENT_BYTES = 160 << 20
# Larger images are decoded at 1/2, 1/4 or 1/8 of their size, the largest of those within this many pixels (a
# JPEG by libjpeg's DCT scaling, which never makes the full-size pixels; other formats are decoded whole, then
# shrunk): a face needs no more, and a 40 MP file would otherwise become 120 MB of pixels in every copy the
# pipeline makes. A 12 MP phone photo is read whole.
DECODE_MAX_PIXELS = 12_000_000
_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}
_JPEG_PROGRESSIVE_SOF = {0xC2, 0xC6, 0xCA, 0xCE}


class _JpegLayout:
    """What a walk over a JPEG's markers finds: the first frame's size, its components' sampling factors, whether
    it is progressive, the scans, and whether the last scan's data ends at an end-of-image marker (bytes after
    it, such as a phone's trailer, are not the image's)."""

    def __init__(self, size: tuple[int, int] | None = None, scans: int = 0, complete: bool = False):
        self.size, self.scans, self.complete = size, scans, complete
        self.sampling: list[tuple[int, int]] = []  # (horizontal, vertical) per component
        self.progressive = False

    @property
    def coefficient_bytes(self) -> int:
        """The whole-image coefficient buffer libjpeg allocates for a multi-scan JPEG (0 for a single scan)."""
        if self.size is None or not self.sampling or not (self.progressive or self.scans > 1):
            return 0
        width, height = self.size
        h_max = max(h for h, _ in self.sampling) or 1
        v_max = max(v for _, v in self.sampling) or 1
        return sum(-(-width * h // (h_max * 8)) * -(-height * v // (v_max * 8)) * 64 * 2 for h, v in self.sampling)


def _skip_entropy_data(data: bytes, pos: int) -> int:
    """The position of the first marker after a scan's entropy-coded data (0xFF then neither a stuffed zero
    nor a restart marker), or len(data) when the data runs to the end of the file."""
    end = len(data)
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= end:
            return end
        following = data[pos + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            pos += 1 if following == 0xFF else 2
            continue
        return pos


def _jpeg_layout(data: bytes) -> _JpegLayout:
    """Markers found as libjpeg finds them (stray bytes and fill bytes skipped), so that the size checked is
    the size libjpeg will decode; the walk stops at the end-of-image marker, or after MAX_JPEG_SCANS + 1 scans."""
    layout = _JpegLayout()
    pos, end = 2, len(data)
    while pos + 2 <= end:
        if data[pos] != 0xFF or data[pos + 1] in (0xFF, 0x00):  # stray byte, fill byte, stuffed zero
            pos += 1
            continue
        marker = data[pos + 1]
        if marker == 0xD9:  # end of image
            layout.complete = layout.size is not None and layout.scans > 0
            return layout
        if marker in _JPEG_NO_LENGTH:
            pos += 2
            continue
        if pos + 4 > end:
            return layout
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if length < 2:
            return layout
        if marker in _JPEG_SOF and layout.size is None:
            if pos + 9 > end:
                return layout
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            layout.size = (width, height)
            layout.progressive = marker in _JPEG_PROGRESSIVE_SOF
            components = data[pos + 9] if pos + 10 <= end else 0
            layout.sampling = [(data[at] >> 4, data[at] & 0x0F)
                               for at in range(pos + 11, min(pos + 11 + 3 * components, end), 3)]
        if marker == 0xDA:  # start of scan: its header, then entropy-coded data up to the next marker
            if layout.size is None:  # a scan before any frame header
                return layout
            layout.scans += 1
            if layout.scans > MAX_JPEG_SCANS:
                return layout
            pos = _skip_entropy_data(data, pos + 2 + length)
            continue
        pos += 2 + length
    return layout


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    return _jpeg_layout(data).size


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    header = struct.unpack("<I", data[14:18])[0]
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack("<HH", data[18:22])
    if header < 40:
        return None
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)  # negative height: stored top-down


def _webp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: key frame start code, then 14-bit sizes
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: signature, then 14-bit (size - 1) fields
        if data[20] != 0x2F:
            return None
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit (canvas size - 1) fields
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) from the first IFD, the page OpenCV decodes."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        offset = struct.unpack(order + "I", data[4:8])[0]
        count = struct.unpack(order + "H", data[offset:offset + 2])[0]
        sizes = {}
        for i in range(count):
            entry = data[offset + 2 + 12 * i:offset + 14 + 12 * i]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag in (256, 257):
                if tag in sizes:  # a second, different size for the same page: which one a decoder takes is its own
                    return None
                if kind == 3:
                    sizes[tag] = struct.unpack(order + "H", entry[8:10])[0]
                elif kind == 4:
                    sizes[tag] = struct.unpack(order + "I", entry[8:12])[0]
                else:
                    return None
    except struct.error:  # offsets beyond the data
        return None
    if 256 not in sizes or 257 not in sizes:
        return None
    return sizes[256], sizes[257]


def _probe(data: bytes) -> tuple[str | None, tuple[int, int] | None]:
    """(format name, (width, height)) from the header; format None = not a format the kiosk reads,
    size None = a damaged header."""
    if data.startswith(_PNG_START):
        return "PNG", _png_size(data)
    if data.startswith(_JPEG_START):
        return "JPEG", _jpeg_size(data)
    if data.startswith(b"BM"):
        return "BMP", _bmp_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP", _webp_size(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF", _tiff_size(data)
    return None, None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as the file's header declares it, without decoding; None if unknown."""
    return _probe(data)[1]


def _looks_truncated(data: bytes) -> bool:
    """A PNG carries an end chunk; a file cut short has lost it (OpenCV would decode it grey-filled). JPEGs are
    judged by their markers (``_jpeg_layout``) and by libjpeg's own word while decoding (``_decode_jpeg``)."""
    if data.startswith(_PNG_START):
        return _PNG_END not in data[-64:]
    return False


# libjpeg's warnings that the data ended or broke inside a scan: the rest of the picture is made up (a flat band)
_JPEG_DAMAGE = (b"Corrupt JPEG data", b"Premature end of JPEG file")
_STDERR_LOCK = threading.Lock()


def _decode_jpeg(data: bytes, flags: int = cv2.IMREAD_COLOR) -> tuple[np.ndarray | None, bool]:
    """(image, damaged): OpenCV's decode, with libjpeg's warnings read from the C stderr it writes them to
    (captured into a file for the call and passed on afterwards, so nothing another thread writes is lost)."""
    with _STDERR_LOCK, tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(captured.fileno(), 2)
            try:
                image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
            finally:
                os.dup2(saved, 2)
        finally:
            os.close(saved)
        captured.seek(0)
        text = captured.read(1 << 20)
    damaged = any(sign in text for sign in _JPEG_DAMAGE)
    passed_on = b"".join(line for line in text.splitlines(keepends=True)
                         if not any(sign in line for sign in _JPEG_DAMAGE))
    if passed_on:
        os.write(2, passed_on)
    return image, damaged


def _check_size(name: str, width: int, height: int, max_pixels: int, min_side: int) -> None:
    if width * height > max_pixels:
        raise ImageReadError(f"{name}: the image is too large to read safely ({width}x{height} = "
                             f"{width * height / 1e6:.1f} megapixels; the limit is {max_pixels / 1e6:g})")
    if min(width, height) < min_side:
        raise ImageReadError(f"{name}: the image is too small to hold a face ({width}x{height} pixels; "
                             f"at least {min_side}x{min_side} needed)")


def reduction(width: int, height: int, min_side: int = MIN_IMAGE_SIDE) -> int:
    """The factor (1, 2, 4 or 8) an image of this size is decoded at: the smallest that brings it within
    DECODE_MAX_PIXELS, never so far that its short side falls below ``min_side``."""
    scale = 1
    while (scale < 8 and width * height > DECODE_MAX_PIXELS * scale * scale
           and min(width, height) // (scale * 2) >= min_side):
        scale *= 2
    return scale


def decode_image(data: bytes, name: str = "image", max_pixels: int | None = None,
                 min_side: int = MIN_IMAGE_SIDE) -> np.ndarray:
    """Decode encoded image bytes to a BGR uint8 array (H, W, 3).

    ``max_pixels`` (default DEFAULT_MAX_PIXELS) is checked against the header before decoding. OpenCV's
    own limit is DEFAULT_MAX_PIXELS for the whole process, so a larger value here does not raise it. An image
    of more than DECODE_MAX_PIXELS is returned at 1/2, 1/4 or 1/8 of its size (``reduction``), so the array
    may be smaller than the file's header says.
    """
    max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if not data:
        raise ImageReadError(f"{name}: the file is empty")
    kind, size = _probe(data)
    if kind is None:
        raise ImageReadError(f"{name}: not a readable image (corrupt file, or not {SUPPORTED_FORMATS})")
    if size is None:
        raise ImageReadError(f"{name}: not a readable image (the {kind} header is damaged)")
    _check_size(name, *size, max_pixels, min_side)
    damaged = False
    if kind == "JPEG":
        layout = _jpeg_layout(data)
        if layout.scans > MAX_JPEG_SCANS:
            raise ImageReadError(f"{name}: not a readable image (more than {MAX_JPEG_SCANS} JPEG scans: real photos "
                                 "have about 10; so many would take minutes to decode)")
        if not layout.complete:
            raise ImageReadError(f"{name}: the image file is truncated (incomplete download or copy?)")
        if layout.coefficient_bytes > MAX_JPEG_COEFFICIENT_BYTES:
            raise ImageReadError(
                f"{name}: the image is too large to read safely as a progressive JPEG ({size[0]}x{size[1]}: "
                f"{layout.coefficient_bytes / (1 << 20):.0f} MB to decode, {MAX_JPEG_COEFFICIENT_BYTES >> 20} MB at "
                f"most; save it as a smaller or a baseline JPEG)")
    if _looks_truncated(data):
        raise ImageReadError(f"{name}: the image file is truncated (incomplete download or copy?)")
    scale = reduction(*size, min_side)
    try:
        if kind == "JPEG":
            image, damaged = _decode_jpeg(data, _REDUCED_FLAGS[scale])
        else:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED_FLAGS[scale])
    except cv2.error:  # OpenCV's own checks, its pixel limit among them
        image = None
    if damaged:
        raise ImageReadError(f"{name}: the image file is truncated or damaged inside (libjpeg: the picture's data "
                             "ends before the picture does)")
    if image is None or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageReadError(f"{name}: not a readable image (corrupt file or unsupported {kind} variant)")
    height, width = image.shape[:2]  # as decoded (EXIF rotation, or a header that lied)
    if scale > 1:  # the smallest full size that decodes to this (libjpeg rounds up, the shrink down)
        _check_size(name, (width - 1) * scale + 1, (height - 1) * scale + 1, max_pixels, 1)
    _check_size(name, width, height, max_pixels, min_side)
    return image


def check_image_array(image: object, name: str = "image", max_pixels: int | None = None,
                      min_side: int = MIN_IMAGE_SIDE) -> np.ndarray:
    """An image given as an array, held to the rules of a decoded file: BGR uint8 of shape (H, W, 3) (as
    OpenCV reads it), within the size limits; returned C-contiguous. ImageReadError naming ``name`` otherwise."""
    if not isinstance(image, np.ndarray):
        raise ImageReadError(f"{name}: not an image (a BGR uint8 array of shape (H, W, 3) or a file is needed, "
                             f"got {type(image).__name__})")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageReadError(f"{name}: not a BGR image (a uint8 array of shape (H, W, 3) is needed, got "
                             f"{image.dtype} {image.shape})")
    height, width = image.shape[:2]
    _check_size(name, width, height, DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels, min_side)
    return np.ascontiguousarray(image)


def read_image(path: str | Path, max_pixels: int | None = None, min_side: int = MIN_IMAGE_SIDE) -> np.ndarray:
    """Read an image file as BGR uint8; raises ImageReadError naming the file on any problem."""
    path = Path(path)
    limit = max_file_bytes(DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels)
    try:
        # O_NONBLOCK: a FIFO named as a photo must not hang the kiosk (no effect on regular files)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ImageReadError(f"{path}: not a regular file")
            if info.st_size > limit:
                raise ImageReadError(f"{path}: the file is too large for an image ({limit // (1 << 20)} MB at most)")
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"{path}: is a folder, not an image file") from None
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise ImageReadError(f"{path}: the file is too large for an image ({limit // (1 << 20)} MB at most)")
    return decode_image(data, str(path), max_pixels, min_side)
