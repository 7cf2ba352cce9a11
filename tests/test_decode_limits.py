"""Decoding under limits (#25 item 7): a JPEG's markers are walked before anything is decoded (too many scans
refused, truncation judged by where the last scan ends, a trailer after the end allowed), libjpeg's own
"corrupt data" word refuses a file cut inside a scan, and a TIFF with two sizes for one page is refused."""

from __future__ import annotations

import struct
import time

import cv2
import numpy as np
import pytest

from kiosk.errors import ImageReadError
from kiosk.io.imageio import MAX_JPEG_SCANS, _jpeg_layout, decode_image

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def photo(lfw_dir) -> np.ndarray:
    return cv2.imread(str(sorted((lfw_dir / "Colin_Powell").glob("*.jpg"))[0]))


def jpeg(image, progressive=False) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] + ([cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if progressive else [])
    ok, buffer = cv2.imencode(".jpg", image, params)
    assert ok
    return buffer.tobytes()


def scans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each scan: its SOS marker up to the next marker after its entropy data."""
    from kiosk.io.imageio import _skip_entropy_data

    found, pos = [], 0
    while (pos := data.find(b"\xff\xda", pos)) >= 0:
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        end = _skip_entropy_data(data, pos + 2 + length)
        found.append((pos, end))
        pos = end
    return found


def test_a_jpeg_repeating_one_scan_20000_times_is_refused_before_decoding(photo):
    data = jpeg(photo, progressive=True)
    layout = _jpeg_layout(data)
    assert layout.complete and 1 < layout.scans <= MAX_JPEG_SCANS  # a real progressive JPEG passes
    assert decode_image(data).shape == photo.shape
    start, end = scans(data)[-1]  # the last refinement scan, repeated: valid to libjpeg, minutes to decode
    hostile = data[:end] + data[start:end] * 20_000 + data[end:]
    assert len(hostile) > 1_000_000
    began = time.process_time()
    with pytest.raises(ImageReadError, match=f"more than {MAX_JPEG_SCANS} JPEG scans"):
        decode_image(hostile, "scans.jpg")
    spent = time.process_time() - began
    print(f"refused in {spent * 1000:.0f} ms of CPU")  # the bar is 2 s; the walk stops after 101 scans
    assert spent < 2.0


def test_a_jpeg_with_a_trailer_after_its_end_is_read(photo):
    data = jpeg(photo) + bytes(range(256)) * 4  # 1 KB after the end-of-image marker (phones write such)
    assert decode_image(data, "trailer.jpg").shape == photo.shape


@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_cut_inside_a_scan_is_refused_even_with_an_end_marker_put_back(photo, progressive):
    data = jpeg(photo, progressive)
    start, end = scans(data)[-1]
    cut = data[:(start + end) // 2]
    with pytest.raises(ImageReadError, match="truncated"):
        decode_image(cut, "cut.jpg")  # no end marker: the walk sees the data run out
    with pytest.raises(ImageReadError, match="truncated or damaged"):
        decode_image(cut + b"\xff\xd9", "cut-with-end.jpg")  # libjpeg: premature end of data segment


def test_a_warning_free_decode_leaves_stderr_to_others(photo, capfd):
    import sys

    print("before", file=sys.stderr, flush=True)
    decode_image(jpeg(photo))
    print("after", file=sys.stderr, flush=True)
    assert capfd.readouterr().err == "before\nafter\n"


def tiff(image, extra_entries: list[tuple[int, int, int, int]]) -> bytes:
    ok, buffer = cv2.imencode(".tiff", image)
    assert ok
    data = bytearray(buffer.tobytes())
    order = "<" if data[:2] == b"II" else ">"
    offset = struct.unpack(order + "I", data[4:8])[0]
    count = struct.unpack(order + "H", data[offset:offset + 2])[0]
    entries = [bytes(data[offset + 2 + 12 * i:offset + 14 + 12 * i]) for i in range(count)]
    entries += [struct.pack(order + "HHII", *entry) for entry in extra_entries]
    entries.sort(key=lambda e: struct.unpack(order + "H", e[:2])[0])
    ifd = struct.pack(order + "H", len(entries)) + b"".join(entries) + struct.pack(order + "I", 0)
    new_offset = len(data) + (len(data) % 2)
    data += b"\0" * (new_offset - len(data)) + ifd
    data[4:8] = struct.pack(order + "I", new_offset)
    return bytes(data)


def test_a_tiff_with_two_sizes_for_one_page_is_refused(photo):
    assert decode_image(tiff(photo, [])).shape == photo.shape  # the rebuilt IFD itself is fine
    duplicated = tiff(photo, [(256, 4, 1, 60000)])  # a second ImageWidth: 60000 wide
    with pytest.raises(ImageReadError, match="header is damaged"):
        decode_image(duplicated, "two-sizes.tif")
