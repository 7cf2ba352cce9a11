"""Decoding under limits (#25 item 7): a JPEG's markers are walked before anything is decoded (too many scans
refused, truncation judged by where the last scan ends, a trailer after the end allowed, a progressive JPEG whose
coefficient buffer would be too large refused), libjpeg's own "corrupt data" word refuses a file cut inside a
scan, a TIFF with two sizes for one page is refused, large images are decoded at reduced size so that the worst
accepted files peak under 500 MB of RSS, and the admin's "add photo" decodes off the GUI thread."""

from __future__ import annotations

import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from kiosk.errors import ImageReadError
from kiosk.io.imageio import (
    DECODE_MAX_PIXELS,
    MAX_JPEG_COEFFICIENT_BYTES,
    MAX_JPEG_SCANS,
    _jpeg_layout,
    decode_image,
    reduction,
)

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


@pytest.mark.parametrize("tag", [256, 257])  # ImageWidth, ImageLength
@pytest.mark.parametrize("value", [60000, None])  # conflicting, or the same size twice
def test_a_tiff_with_two_sizes_for_one_page_is_refused(photo, tag, value):
    assert decode_image(tiff(photo, [])).shape == photo.shape  # the rebuilt IFD itself is fine
    same = photo.shape[1] if tag == 256 else photo.shape[0]
    duplicated = tiff(photo, [(tag, 4, 1, same if value is None else value)])  # a second width (or height)
    with pytest.raises(ImageReadError, match="header is damaged"):
        decode_image(duplicated, "two-sizes.tif")


# Decoding at reduced size, and the memory the worst accepted files take

def test_the_reduction_keeps_a_phone_photo_whole_and_shrinks_larger_ones():
    assert reduction(4000, 3000) == 1  # 12 MP: read whole
    assert reduction(4001, 3000) == 2 and reduction(8000, 5000) == 2  # 40 MP -> 10 MP
    assert reduction(40000, 1000) == 2 and reduction(20000, 5000) == 4 and reduction(20000, 10000) == 8
    assert reduction(1_000_000, 40) == 2  # never below the smallest side a face needs
    assert 8000 * 5000 / reduction(8000, 5000) ** 2 <= DECODE_MAX_PIXELS


def test_a_large_jpeg_is_decoded_at_reduced_size_and_a_cut_one_is_still_refused(photo):
    big = cv2.resize(photo, (4800, 3000))  # 14.4 MP: decoded at half size by libjpeg's DCT scaling
    for progressive in (False, True):
        data = jpeg(big, progressive)
        image = decode_image(data, "big.jpg")
        assert image.shape == (1500, 2400, 3)
        assert np.abs(image.astype(int) - cv2.resize(big, (2400, 1500), interpolation=cv2.INTER_AREA)).mean() < 4
        start, end = scans(data)[-1]
        with pytest.raises(ImageReadError, match="truncated or damaged"):
            decode_image(data[:(start + end) // 2] + b"\xff\xd9", "big-cut.jpg")  # DCT scaling hides no damage


def test_a_large_png_is_decoded_at_reduced_size(photo):
    ok, buffer = cv2.imencode(".png", cv2.resize(photo, (4800, 3000)))
    assert ok and decode_image(buffer.tobytes()).shape == (1500, 2400, 3)


def test_a_progressive_jpeg_too_large_for_its_coefficient_buffer_is_refused_before_decoding():
    flat = np.full((5000, 8000, 3), 128, np.uint8)  # 40 MP in 4:4:4: 229 MB of coefficients, a file of 0.5 MB
    ok, buffer = cv2.imencode(".jpg", flat, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                             cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
    assert ok and len(buffer) < 1 << 20
    layout = _jpeg_layout(buffer.tobytes())
    assert layout.coefficient_bytes > MAX_JPEG_COEFFICIENT_BYTES
    with pytest.raises(ImageReadError, match="too large to read safely as a progressive JPEG"):
        decode_image(buffer.tobytes(), "coefficients.jpg")


# The peak as VmHWM: ru_maxrss of a child carries over the peak of the forked copy of pytest before its exec.
_PEAK_RSS = """
import re, sys, time
from kiosk.io.imageio import read_image
def peak_mb():
    with open("/proc/self/status") as status:
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1)) // 1024
before = peak_mb()
began = time.perf_counter()
image = read_image(sys.argv[1]) if sys.argv[1] != "-" else None
print(before, peak_mb(), *(image.shape[1::-1] if image is not None else (0, 0)), round(time.perf_counter() - began, 2))
"""


def _worst_files(folder: Path) -> dict[str, Path]:
    """The 40 MP files (at the pixel limit) that cost the most memory to decode, among those accepted."""
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (5000, 8000, 3), dtype=np.uint8)
    flat = np.full((5000, 8000, 3), 128, np.uint8)
    progressive_420 = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                       cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]
    made = {
        "noise.jpg": (noise, [cv2.IMWRITE_JPEG_QUALITY, 95]),  # baseline, about 47 MB
        "noise-progressive.jpg": (noise, [cv2.IMWRITE_JPEG_QUALITY, 100, *progressive_420]),  # about 57 MB
        "flat-progressive.jpg": (flat, progressive_420),  # a small file (0.2 MB) making 40 MP
        "noise.png": (noise, [cv2.IMWRITE_PNG_COMPRESSION, 1]),  # about 120 MB
        "flat.png": (flat, []),  # a small file (0.1 MB) making 40 MP
    }
    files = {}
    for name, (image, params) in made.items():
        files[name] = folder / name
        assert cv2.imwrite(str(files[name]), image, params)
    return files


def test_the_worst_accepted_files_peak_under_500_mb(tmp_path):
    """Each read in a fresh process that imports kiosk.io.imageio alone (with torch, as in kiosk verify, about
    300 MB more: the decode's own share is what is bounded here)."""
    if not Path("/proc/self/status").is_file():
        pytest.skip("no /proc/self/status (VmHWM) to read the peak RSS from")
    files = _worst_files(tmp_path)
    for name, path in files.items():
        done = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(path)], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        imported_mb, peak_mb, width, height, seconds = done.stdout.split()
        print(f"\n{name} ({path.stat().st_size / 1e6:.1f} MB, 8000x5000 read as {width}x{height}): peak RSS "
              f"{peak_mb} MB ({imported_mb} MB after the import), {seconds} s", end="")
        assert int(peak_mb) < 500, name
        assert (int(width), int(height)) == (4000, 2500)  # decoded at half size


# The admin's "add photo" decodes off the GUI thread

@pytest.mark.slow  # a Qt page
def test_add_photo_decodes_off_the_gui_thread(qtbot, storage, lfw_photos, monkeypatch):
    from kiosk.app import Kiosk
    from kiosk.qt import employees_page
    from kiosk.qt.employees_page import EmployeesPage

    threads = []
    real_read = employees_page.read_image

    def read_image(path, *args, **kwargs):
        threads.append(threading.current_thread())
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(employees_page, "read_image", read_image)
    page = EmployeesPage(Kiosk(storage))
    qtbot.addWidget(page)
    page.show()
    page.set_engine_state(True)
    photos = [str(p) for p in lfw_photos("Colin_Powell")[:2]]
    page.choose_files = lambda: photos
    page.add_files()
    assert not threads or threads[0] is not threading.main_thread()  # not decoded in add_files itself
    qtbot.waitUntil(lambda: page.ops.running == 0, timeout=15000)
    assert len(threads) == 2 and all(t is not threading.main_thread() for t in threads)
    assert threading.current_thread() is threading.main_thread()
