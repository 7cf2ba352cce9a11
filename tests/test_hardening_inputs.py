"""Hardening (issue #16), hostile input and file modes: decompression bombs and tiny images, malformed and
escaping pair CSVs, owner-only logs and caches. Each failure the issue found is a test here.

Run alone with ``pytest -m reliability``.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kiosk import cli
from kiosk.errors import DatasetError, ImageReadError
from kiosk.io.imageio import DEFAULT_MAX_PIXELS, MIN_IMAGE_SIDE, decode_image, image_size, read_image
from kiosk.lab.datasets import read_pairs_csv
from kiosk.paths import cache_dir, log_dir, private_dir

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- images -------------------------------------------------------------------------------------------------
def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of width x height black pixels, compressed row block by row block: the
    pixels are never held in memory (32000x32000 gives about 124 KB, as in the issue)."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    block = row * 64
    parts = [packer.compress(block) for _ in range(height // 64)]
    parts += [packer.compress(row * (height % 64)), packer.flush()]
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def _photo(width: int = 120, height: int = 100, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _encoded(ext: str, image: np.ndarray, params=()) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return buf.tobytes()


# Peak memory is measured in a fresh Python whose only child is the kiosk command (ru_maxrss of children).
_PEAK_RSS = textwrap.dedent("""
    import json, resource, subprocess, sys
    done = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=300)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"code": done.returncode, "stderr": done.stderr, "peak": peak}))
""")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB is Linux's unit")
@pytest.mark.parametrize("side", [32000, 20000])
def test_png_bomb_is_refused_from_its_header_with_exit_2_under_500_mb(tmp_path, untrained_weights, side):
    """Issue #16: a 124 KB PNG declaring 32000x32000 pixels took 31 s and 6.3 GB (20000x20000: 2.6 GB)."""
    bomb = tmp_path / f"bomb{side}.png"
    bomb.write_bytes(png_bomb(side, side))
    assert bomb.stat().st_size < 200_000 and image_size(bomb.read_bytes()) == (side, side)
    other = tmp_path / "other.png"
    other.write_bytes(_encoded(".png", _photo()))
    command = [sys.executable, "-m", "kiosk.cli", "--weights", str(untrained_weights), "verify", str(bomb), str(other)]
    measured = subprocess.run([sys.executable, "-c", _PEAK_RSS, *command], capture_output=True, text=True,
                              timeout=400, cwd=ROOT)
    result = json.loads(measured.stdout)
    print(f"{side}x{side} PNG bomb ({bomb.stat().st_size} bytes): exit {result['code']}, "
          f"peak RSS {result['peak'] / MB:.0f} MB")
    assert result["code"] == 2, result["stderr"]
    assert "too large" in result["stderr"] and "Traceback" not in result["stderr"]
    assert result["stderr"].strip().count("\n") == 0  # one line: the reason
    assert result["peak"] < 500 * MB


def _bomb_headers() -> dict[str, bytes]:
    """A small valid file of each format with its header changed to claim 30000x30000 pixels."""
    small = _photo(40, 30)
    out = {}
    png = bytearray(_encoded(".png", small))
    png[16:24] = struct.pack(">II", 30000, 30000)
    out["png"] = bytes(png)
    for name, params in (("jpeg", ()), ("progressive jpeg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1))):
        jpeg = bytearray(_encoded(".jpg", small, params))
        sof = next(i for i in range(2, len(jpeg) - 1) if jpeg[i] == 0xFF and jpeg[i + 1] in (0xC0, 0xC2))
        jpeg[sof + 5:sof + 9] = struct.pack(">HH", 30000, 30000)
        out[name] = bytes(jpeg)
    bmp = bytearray(_encoded(".bmp", small))
    bmp[18:26] = struct.pack("<ii", 30000, 30000)
    out["bmp"] = bytes(bmp)
    webp = bytearray(_encoded(".webp", small, (cv2.IMWRITE_WEBP_QUALITY, 101)))  # lossless: VP8L
    assert webp[12:16] == b"VP8L"
    webp[21:25] = struct.pack("<I", (29999 & 0x3FFF) | ((29999 & 0x3FFF) << 14))  # 14-bit fields: 16383 max
    out["webp lossless"] = bytes(webp)
    lossy = bytearray(_encoded(".webp", small, (cv2.IMWRITE_WEBP_QUALITY, 80)))
    assert lossy[12:16] == b"VP8 "
    lossy[26:30] = struct.pack("<HH", 16000, 16000)
    out["webp"] = bytes(lossy)
    tiff = bytearray(_encoded(".tiff", small))
    offset = struct.unpack("<I", tiff[4:8])[0]
    for i in range(struct.unpack("<H", tiff[offset:offset + 2])[0]):
        entry = offset + 2 + 12 * i
        tag, kind = struct.unpack("<HH", tiff[entry:entry + 4])
        if tag in (256, 257):
            tiff[entry + 2:entry + 12] = struct.pack("<HII", 4, 1, 30000)
    out["tiff"] = bytes(tiff)
    return out


@pytest.mark.parametrize("kind", sorted(_bomb_headers()))
def test_every_format_is_size_checked_from_the_header_before_decoding(kind, monkeypatch):
    data = _bomb_headers()[kind]

    def no_decoding(*_):
        raise AssertionError("decoded before the size check")

    monkeypatch.setattr("kiosk.io.imageio.cv2.imdecode", no_decoding)
    with pytest.raises(ImageReadError, match="too large"):
        decode_image(data, kind)


@pytest.mark.parametrize("ext, params", [(".png", ()), (".jpg", ()), (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
                                         (".bmp", ()), (".webp", (cv2.IMWRITE_WEBP_QUALITY, 80)),
                                         (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101)),
                                         (".tiff", ())])
def test_the_header_size_is_the_decoded_size_and_the_limit_is_exact(ext, params):
    data = _encoded(ext, _photo(40, 30), params)
    assert image_size(data) == (40, 30)
    assert decode_image(data, max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(ImageReadError, match="too large"):
        decode_image(data, max_pixels=1199)


@pytest.mark.slow
def test_opencv_enforces_the_same_limit_when_kiosk_is_imported_first():
    """OpenCV reads OPENCV_IO_MAX_IMAGE_PIXELS once, when cv2 loads: importing any kiosk module first sets
    it, so even cv2.imdecode called directly refuses 41 MP (the kiosk's 40 MP limit, not OpenCV's 1 GP)."""
    code = textwrap.dedent(f"""
        import os, sys
        import kiosk.io.imageio, cv2, numpy as np
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_hardening_inputs import png_bomb
        print(os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"])
        try:
            image = cv2.imdecode(np.frombuffer(png_bomb(6500, 6500), np.uint8), cv2.IMREAD_GRAYSCALE)
        except cv2.error:
            image = None
        print("refused" if image is None else "decoded")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.stdout.split() == [str(DEFAULT_MAX_PIXELS), "refused"], done.stderr
    assert DEFAULT_MAX_PIXELS == 40_000_000


@pytest.mark.parametrize("width, height", [(1, 1), (15, 200), (200, 15)])
def test_images_too_small_for_a_face_are_refused_clearly(tmp_path, width, height):
    path = tmp_path / "tiny.png"
    path.write_bytes(_encoded(".png", _photo(width, height)))
    with pytest.raises(ImageReadError, match="too small to hold a face") as info:
        read_image(path)
    assert str(path) in str(info.value)
    path.write_bytes(_encoded(".png", _photo(MIN_IMAGE_SIDE, MIN_IMAGE_SIDE)))
    assert read_image(path).shape == (MIN_IMAGE_SIDE, MIN_IMAGE_SIDE, 3)


def test_files_that_are_not_plain_image_files_are_refused(tmp_path):
    fifo = tmp_path / "camera.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageReadError, match="not a regular file"):  # and no hang waiting for a writer
        read_image(fifo)
    with pytest.raises(ImageReadError, match="is a folder"):
        read_image(tmp_path)
    gif = tmp_path / "photo.gif"
    gif.write_bytes(b"GIF89a" + struct.pack("<HH", 60000, 60000) + b"\x00" * 64)
    with pytest.raises(ImageReadError, match="not a readable image"):  # formats without a size check: refused
        read_image(gif)


def _valid_samples() -> list[bytes]:
    image = _photo(24, 20)
    return [_encoded(ext, image, params) for ext, params in
            ((".png", ()), (".jpg", ()), (".bmp", ()), (".webp", (cv2.IMWRITE_WEBP_QUALITY, 80)), (".tiff", ()),
             (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)), (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101)))]


_SAMPLES = _valid_samples()
_SIGNATURES = [b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", b"\xff\xd8\xff", b"BM", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
               b"RIFF\x00\x00\x00\x00WEBPVP8L", b"RIFF\x00\x00\x00\x00WEBPVP8X", b"II*\x00", b"MM\x00*"]


@st.composite
def _mutated(draw) -> bytes:
    """A valid small image with bytes changed, cut or inserted: the inputs a decoder trips on."""
    data = bytearray(draw(st.sampled_from(_SAMPLES)))
    for _ in range(draw(st.integers(1, 8))):
        where = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["set", "cut", "insert"]))
        if action == "set":
            data[where] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[where:where + draw(st.integers(1, 64))]
        else:
            data[where:where] = draw(st.binary(min_size=1, max_size=16))
        if not data:
            break
    return bytes(data)


_image_bytes = st.one_of(st.binary(max_size=512),
                         st.builds(lambda sig, rest: sig + rest, st.sampled_from(_SIGNATURES), st.binary(max_size=512)),
                         _mutated())


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_image_bytes)
@example(png_bomb(32000, 32000))
@example(_encoded(".png", np.zeros((1, 1, 3), np.uint8)))
def test_decode_image_on_arbitrary_bytes_gives_an_image_or_image_read_error(data):
    try:
        image = decode_image(data, "fuzzed")
    except ImageReadError as exc:
        assert str(exc).startswith("fuzzed: ")
        return
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert min(image.shape[:2]) >= MIN_IMAGE_SIDE and image.shape[0] * image.shape[1] <= DEFAULT_MAX_PIXELS


# -- pair CSVs ----------------------------------------------------------------------------------------------
def _images(folder: Path, *names: str) -> None:
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(_encoded(".png", _photo(seed=i)))


MALFORMED = {  # name: (file bytes, the line the message must name)
    "short row": (b"left,right,same\na.png,b.png,1\na.png,b.png\n", 3),
    "one field": (b"left,right,same\na.png\n", 2),
    "empty path": (b"left,right,same\na.png,,1\n", 2),
    "extra field": (b"left,right,same\na.png,b.png,1,x\n", 2),
    "not utf-8": (b"left,right,same\na.png,b.png,1\nb\xe9\xff.png,a.png,0\n", 3),
    "nul byte": (b"left,right,same\na.png,b\x00.png,1\n", 2),
    "bad header": (b"first,second,same\na.png,b.png,1\n", 1),
    "repeated column": (b"left,right,same,left\na.png,b.png,1,c.png\n", 1),
    "header only": (b"left,right,same\n", 1),
    "bad flag": (b"left,right,same\na.png,b.png,maybe\n", 2),
    "open quote": (b'left,right,same\na.png,b.png,1\n"a.png,b.png,1\n', 3),
    "huge field": (b"left,right,same\n" + b"a" * 200_000 + b".png,b.png,1\n", 2),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_pairs_csv_names_the_line_and_exits_2(tmp_path, capsys, name):
    """Issue #16: a short row ended in AttributeError, non-UTF-8 bytes in UnicodeDecodeError (exit 1)."""
    data, line = MALFORMED[name]
    _images(tmp_path, "a.png", "b.png")
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_bytes(data)
    with pytest.raises(DatasetError, match=f"line {line}\\b"):
        read_pairs_csv(csv_file)
    assert cli.main(["evaluate", "pairs", "--csv", str(csv_file)]) == 2  # before any model is loaded
    err = capsys.readouterr().err
    assert f"line {line}" in err and "Traceback" not in err and err.count("\n") == 1


def test_empty_pairs_csv_is_refused(tmp_path):
    for content in (b"", b"\n\n  \n", b"\xef\xbb\xbf"):
        (tmp_path / "pairs.csv").write_bytes(content)
        with pytest.raises(DatasetError, match="empty"):
            read_pairs_csv(tmp_path / "pairs.csv")


def test_pairs_csv_reads_quoted_bom_crlf_and_relative_paths(tmp_path):
    _images(tmp_path, "a b.png", "sub/c.png")
    (tmp_path / "pairs.csv").write_bytes(b'\xef\xbb\xbf Left , RIGHT ,same\r\n"a b.png",sub/c.png,True\r\n\r\n'
                                         b'./sub/../a b.png,sub/c.png,0\r\n')
    pairs = read_pairs_csv(tmp_path / "pairs.csv")
    assert [(p.left.name, p.right.name, p.same) for p in pairs] == [("a b.png", "c.png", True),
                                                                    ("a b.png", "c.png", False)]
    assert all(p.left.is_absolute() and p.left.parent == tmp_path.resolve() for p in pairs)


@pytest.mark.parametrize("escape", ["../outside.png", "../../../../etc/passwd", "sub/../../outside.png",
                                    "/etc/passwd", "link.png", "linked_dir/outside.png"])
def test_pairs_csv_paths_must_stay_inside_its_folder_unless_allowed(tmp_path, escape):
    """Issue #16: '../../../../etc/passwd' and absolute paths were read."""
    folder = tmp_path / "set"
    folder.mkdir()
    _images(tmp_path, "outside.png")
    _images(folder, "a.png", "sub/b.png")
    (folder / "link.png").symlink_to(tmp_path / "outside.png")
    (folder / "linked_dir").symlink_to(tmp_path)
    (folder / "inner.png").symlink_to(folder / "a.png")  # a link that stays inside is fine
    csv_file = folder / "pairs.csv"
    csv_file.write_text(f"left,right,same\na.png,inner.png,1\nsub/b.png,{escape},0\n")
    with pytest.raises(DatasetError, match="line 3.*(outside the CSV's folder|absolute path)"):
        read_pairs_csv(csv_file)
    pairs = read_pairs_csv(csv_file, allow_outside=True)
    assert pairs[1].right == Path(escape if escape.startswith("/") else folder / escape).resolve()
    assert pairs[0].right == (folder / "a.png").resolve()  # links resolved: the file checked is the file read


_TOKENS = ["a", "b", ".", "..", "/", "\\", " ", ",", '"', "'", "\r", "\n", "\t", "1", "0", "true", "é", "\x00",
           "\u2028", "~", "link.png"]
_field = st.lists(st.sampled_from(_TOKENS), max_size=8).map("".join)
_path = st.lists(st.sampled_from(["a", "b", ".", "..", "/", "sub", "x.png", "é", " ", "~"]), min_size=1,
                 max_size=6).map("".join)  # CSV-clean: paths that may or may not leave the folder


def _csv_bytes(rows) -> bytes:
    return "\n".join(",".join(row) for row in [("left", "right", "same"), *rows]).encode()


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(max_size=300),
    st.lists(st.lists(_field, max_size=5), max_size=6).map(_csv_bytes),  # any shape
    st.lists(st.tuples(_path, _path, st.sampled_from(["1", "0", "true", "no"])), max_size=6).map(_csv_bytes)))
def test_pairs_csv_reader_on_arbitrary_bytes_gives_pairs_inside_or_dataset_error(tmp_path, data):
    folder = tmp_path / "fuzz"
    folder.mkdir(exist_ok=True)
    csv_file = folder / "pairs.csv"
    csv_file.write_bytes(data)
    try:
        pairs = read_pairs_csv(csv_file)
    except DatasetError as exc:
        assert str(exc).startswith(str(csv_file))
        return
    assert pairs
    for pair in pairs:
        assert isinstance(pair.same, bool)
        for path in (pair.left, pair.right):
            assert path.is_absolute() and path.is_relative_to(folder.resolve())


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("KIOSK_CACHE_DIR", str(tmp_path / "cache" / "kiosk"))
    return tmp_path / "cache" / "kiosk"


@pytest.mark.slow
def test_evaluate_pairs_counts_a_one_pixel_image_as_unreadable_on_the_console(tmp_path, capsys, own_cache,
                                                                               untrained_weights):
    """Issue #16: a 1x1 image ended in ZeroDivisionError (vision/preprocess.py:60); unreadable images were counted
    only in the JSON and the log. Also: what the command wrote is owner-only."""
    folder = tmp_path / "set"
    _images(folder, "a.png", "b.png", "c.png")
    (folder / "dot.png").write_bytes(_encoded(".png", np.zeros((1, 1, 3), np.uint8)))
    (folder / "pairs.csv").write_text("left,right,same\na.png,b.png,1\nb.png,c.png,0\ndot.png,a.png,1\n")
    out = tmp_path / "metrics.json"
    code = cli.main(["--weights", str(untrained_weights), "evaluate", "pairs", "--csv", str(folder / "pairs.csv"),
                     "--json", str(out)])
    console = capsys.readouterr().out
    assert code == 0
    assert any(line.split()[:2] == ["unreadable", "1"] for line in console.splitlines()), console
    assert "1 image file(s) could not be read" in console
    assert json.loads(out.read_text())["unreadable"] == 1
    assert _mode(out) == 0o600  # the command line writes owner-only (umask 077 while it runs) ...
    written = [p for p in own_cache.rglob("*")]
    assert any(p.suffix == ".npz" for p in written)
    for path in [own_cache, *written]:  # ... and the feature cache: faces of people
        assert _mode(path) == (0o700 if path.is_dir() else 0o600), path
    assert _mode(own_cache.parent) == 0o700  # a parent the kiosk had to create too


def test_peer_feature_cache_is_owner_only(tmp_path, own_cache):
    from kiosk.lab.evaluation import peer_features

    class Peer:
        name, upsample = "fake-peer", 0

        def embed(self, image):
            return np.full(128, image.mean(), np.float32), True

    _images(tmp_path, "a.png", "b.png")
    old_umask = os.umask(0o022)
    try:
        features, readable, detected = peer_features(Peer(), [tmp_path / "a.png", tmp_path / "b.png"])
    finally:
        os.umask(old_umask)
    assert readable.all() and detected.all()
    written = list(own_cache.rglob("*"))
    assert any(p.suffix == ".npz" for p in written)
    for path in [own_cache, *written]:
        assert _mode(path) == (0o700 if path.is_dir() else 0o600), path


# -- files ----------------------------------------------------------------------------------------------------
def test_rotated_logs_are_owner_only(monkeypatch):
    """Issue #16: after rotation, kiosk.log and kiosk.log.1 were 0644."""
    from kiosk.logging_setup import setup_logging

    old_umask = os.umask(0o022)
    root = logging.getLogger()
    try:
        path = setup_logging(console=False)
        handler = next(h for h in root.handlers if getattr(h, "_kiosk_handler", False))
        handler.maxBytes = 300
        for i in range(40):
            logging.getLogger("kiosk.test").warning("line %d of a log that rotates", i)
    finally:
        os.umask(old_umask)
        for h in [h for h in root.handlers if getattr(h, "_kiosk_handler", False)]:
            root.removeHandler(h)
            h.close()
    files = sorted(log_dir().iterdir())
    assert path == log_dir() / "kiosk.log" and {p.name for p in files} >= {"kiosk.log", "kiosk.log.1", "kiosk.log.5"}
    assert all(_mode(p) == 0o600 for p in files), {p.name: oct(_mode(p)) for p in files}
    assert _mode(log_dir()) == 0o700


def test_an_old_wide_log_file_is_narrowed_when_opened(monkeypatch):
    from kiosk.logging_setup import setup_logging

    private_dir(log_dir())
    (log_dir() / "kiosk.log").write_text("from an older version\n")
    os.chmod(log_dir() / "kiosk.log", 0o644)
    root = logging.getLogger()
    try:
        setup_logging(console=False)
    finally:
        for h in [h for h in root.handlers if getattr(h, "_kiosk_handler", False)]:
            root.removeHandler(h)
            h.close()
    assert _mode(log_dir() / "kiosk.log") == 0o600


def test_new_folders_are_0700_and_an_existing_wide_folder_is_warned_about_not_chmodded(tmp_path, caplog):
    """Issue #16: an existing KIOSK_DATA_DIR was silently chmodded to 0700."""
    from kiosk.paths import config_dir
    from kiosk.storage import SettingsStore

    old_umask = os.umask(0o022)
    try:
        made = private_dir(tmp_path / "new" / "deeper" / "folder")
    finally:
        os.umask(old_umask)
    assert [_mode(p) for p in (made, made.parent, made.parent.parent)] == [0o700, 0o700, 0o700]

    config_dir().mkdir(mode=0o755)
    os.chmod(config_dir(), 0o755)
    with caplog.at_level(logging.WARNING):
        SettingsStore().update(threshold=0.6)
        SettingsStore().update(threshold=0.7)
    assert _mode(config_dir()) == 0o755  # not changed behind the owner's back ...
    warnings = [r.getMessage() for r in caplog.records if str(config_dir()) in r.getMessage()]
    assert len(warnings) == 1 and "accessible to others" in warnings[0]  # ... but said, once
    assert _mode(config_dir() / "settings.json") == 0o600
    with pytest.raises(NotADirectoryError):
        private_dir(config_dir() / "settings.json")


def test_cache_dir_default_is_created_owner_only(own_cache):
    assert not own_cache.exists()
    private_dir(cache_dir() / "features")
    assert _mode(own_cache) == 0o700 and _mode(own_cache / "features") == 0o700


def test_a_fifo_or_a_device_as_the_pairs_csv_is_refused_at_once(tmp_path):
    import os

    from kiosk.errors import DatasetError
    from kiosk.lab.datasets import read_pairs_csv

    fifo = tmp_path / "pairs.csv"
    os.mkfifo(fifo)  # nobody writes to it: reading it would wait for ever
    with pytest.raises(DatasetError, match="not a regular file"):
        read_pairs_csv(fifo)
    with pytest.raises(DatasetError, match="not a regular file"):
        read_pairs_csv("/dev/zero")  # would never end


def test_look_alike_ids_are_one_id_or_refused_and_names_hold_no_control_characters():
    from kiosk.storage import StorageError, clean_employee_id, clean_name

    assert clean_employee_id("Ｅ１７") == clean_employee_id("E17") == "E17"  # full-width: the same ID
    assert clean_employee_id("Zoe\u0301") == clean_employee_id("Zo\u00e9")  # NFD and NFC: the same ID
    assert clean_employee_id("田中たろう01") == "田中たろう01"  # kanji with kana is one writing
    for look_alike in ("E\u200b17", "\u202eE17", "p\u0430ypal", "E\x0017"):  # zero-width, bidi, Cyrillic а, NUL
        with pytest.raises(StorageError):
            clean_employee_id(look_alike)
    for name in ("Ann\x00", "Ann\x1b[31m", "Ann\u202e"):
        with pytest.raises(StorageError):
            clean_name(name)
    assert clean_name("  Zoë   Ünal ") == "Zoë Ünal"


def test_the_csv_export_neutralises_formulas_after_line_breaks_and_separators_too():
    import re

    from kiosk.storage.audit import _csv_safe

    cell_start = re.compile(r"""(^|[,;\t|])[\s"]*[=+\-@]""")  # where some spreadsheet starts a formula cell
    for hostile in ("=HYPERLINK(1)", "\n=cmd|' /C calc'!A0", "x;=1+1", "a,@SUM(1)", "+1", "\t=1", "\x00=1"):
        safe = _csv_safe(hostile)
        assert not cell_start.search(safe) and "\n" not in safe and "\r" not in safe, safe
    assert _csv_safe("=1").startswith("'") and _csv_safe("x;=1+1") == "x;'=1+1"  # a quote where a cell starts
    assert _csv_safe("E-17") == "E-17" and _csv_safe("face matches") == "face matches"
