"""Frame sources: opening errors, folder order and skipping, video, webcam drop-out, mid-stream failures."""

from __future__ import annotations

import logging
import shutil
import time

import cv2
import numpy as np
import pytest

from kiosk.errors import SourceError
from kiosk.io.sources import CameraSource, ImageFolderSource, VideoFileSource, open_source


def _image(value: int, size=(48, 64)) -> np.ndarray:
    return np.full((*size, 3), value, np.uint8)


@pytest.fixture
def folder(tmp_path):
    """Three readable images (grey levels 10, 20, 30) written out of order, plus non-images."""
    root = tmp_path / "frames"
    root.mkdir()
    for name, value in (("b.png", 20), ("a.png", 10), ("c.jpg", 30)):
        cv2.imwrite(str(root / name), _image(value))
    (root / "notes.txt").write_text("not an image")
    return root


def _levels(frames) -> list[int]:
    return [int(round(float(f.mean()), -1)) for f in frames]


def test_missing_path_and_empty_folder_are_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="no such camera index, video file or image folder"):
        open_source(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no image files"):
        open_source(tmp_path / "empty")
    with pytest.raises(SourceError, match="no source given"):
        open_source("  ")


def test_folder_yields_images_in_sorted_order_then_finishes(folder):
    with open_source(folder) as source:
        assert isinstance(source, ImageFolderSource)
        frames = [source.read() for _ in range(3)]
        assert _levels(frames) == [10, 20, 30]
        assert source.read() is None and source.finished


def test_folder_loops_and_skips_unreadable_images_with_a_warning(folder, caplog):
    (folder / "b2.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg \xff\xd9")
    with caplog.at_level(logging.WARNING, logger="kiosk.io.sources"):
        with open_source(folder, loop=True) as source:
            frames = [source.read() for _ in range(7)]
    assert _levels(frames) == [10, 20, 30, 10, 20, 30, 10]
    warnings = [r.getMessage() for r in caplog.records if "b2.jpg" in r.getMessage()]
    assert len(warnings) == 1, "one warning per bad file, not one per loop"


def test_folder_of_only_unreadable_images_is_an_error(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"garbage")
    source = open_source(tmp_path)
    with pytest.raises(SourceError, match="none of the 1 image files could be read"):
        source.read()


def test_folder_that_vanishes_mid_stream_raises_and_reopen_recovers(folder, tmp_path):
    source = open_source(folder, loop=True)
    assert source.read() is not None
    backup = tmp_path / "backup"
    shutil.move(folder, backup)
    with pytest.raises(SourceError, match="disappeared|no such folder"):
        for _ in range(4):
            source.read()
    with pytest.raises(SourceError, match="no such folder"):
        source.reopen()
    shutil.move(backup, folder)
    source.reopen()
    assert _levels([source.read()]) == [10]


def test_single_image_file_is_a_one_frame_source(folder):
    source = open_source(folder / "b.png", loop=True)
    assert _levels([source.read(), source.read()]) == [20, 20]


def test_fps_paces_reads_and_interrupt_wakes_early(folder):
    source = open_source(folder, loop=True, fps=20)
    start = time.monotonic()
    for _ in range(5):
        source.read()
    assert time.monotonic() - start >= 4 / 20 * 0.9
    slow = open_source(folder, loop=True, fps=0.2)  # 5 s between frames
    slow.read()
    slow.interrupt()
    start = time.monotonic()
    slow.read()
    assert time.monotonic() - start < 1.0


def _write_video(path, values) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    for value in values:
        writer.write(_image(value))
    writer.release()


def test_video_file_plays_to_the_end_and_loops(tmp_path):
    path = tmp_path / "clip.avi"
    _write_video(path, [40, 80, 120, 160])
    with open_source(path, fps=0) as source:
        assert isinstance(source, VideoFileSource)
        frames = []
        while (frame := source.read()) is not None:
            frames.append(frame)
        assert _levels(frames) == [40, 80, 120, 160] and source.finished
    with open_source(path, fps=0, loop=True) as source:
        assert _levels([source.read() for _ in range(6)]) == [40, 80, 120, 160, 40, 80]


def test_unreadable_video_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.avi"
    path.write_bytes(b"RIFF this is not a video at all" * 10)
    with pytest.raises(SourceError, match="broken.avi"):
        open_source(path)


class FakeCapture:
    """Stands in for cv2.VideoCapture: ``script`` lists per-read results (a frame value or False)."""

    def __init__(self, script, opened=True, count=0):
        self.script, self.opened, self.count = list(script), opened, count
        self.released = False

    def isOpened(self):
        return self.opened

    def read(self):
        if not self.script:
            return False, None
        item = self.script.pop(0)
        return (False, None) if item is False else (True, _image(item))

    def get(self, prop):
        return self.count if prop == cv2.CAP_PROP_FRAME_COUNT else 0

    def release(self):
        self.released = True


def test_video_failing_mid_stream_raises_and_reopen_restarts(tmp_path):
    path = tmp_path / "clip.avi"
    path.write_bytes(b"placeholder")  # the fake capture does the reading
    source = VideoFileSource(path, fps=0, capture_factory=lambda p: FakeCapture([10, 20, False], count=10))
    assert _levels([source.read(), source.read()]) == [10, 20]
    with pytest.raises(SourceError, match="reading failed at frame 2 of 10"):
        source.read()
    source.reopen()
    assert _levels([source.read()]) == [10]


def test_missing_camera_is_a_clear_error():
    with pytest.raises(SourceError, match="camera 7: not found"):
        CameraSource(7, capture_factory=lambda i: FakeCapture([], opened=False))


def test_camera_drop_out_is_reconnected_with_backoff():
    now = [0.0]
    captures = [FakeCapture([1, 2] + [False] * 3), None, FakeCapture([5, 6])]  # works, drops, 1 failed retry

    def factory(index):
        cap = captures.pop(0)
        return cap if cap is not None else FakeCapture([], opened=False)

    camera = CameraSource(0, capture_factory=factory, backoff=(1.0, 8.0), max_failed_reads=3, clock=lambda: now[0])
    assert [int(camera.read().mean()) for _ in range(2)] == [1, 2]
    assert [camera.read() for _ in range(3)] == [None, None, None]
    assert camera.lost
    camera.interrupt()
    assert camera.read() is None  # backoff not over yet
    now[0] = 1.5
    assert camera.read() is None and camera.lost  # retry failed: backoff doubles to 2 s
    now[0] = 2.5
    camera.interrupt()
    assert camera.read() is None and camera.lost  # too early for the next try
    now[0] = 4.0
    assert camera.read() is None and not camera.lost  # reconnected
    frame = camera.read()
    assert frame is not None and int(frame.mean()) == 5


def test_truncated_video_file_is_reported_mid_stream(tmp_path):
    path = tmp_path / "cut.avi"
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(20):  # noise: frames of similar size, so cutting the file in half loses about half
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    source = open_source(path, fps=0)
    with pytest.raises(SourceError, match="truncated"):
        for _ in range(25):
            source.read()
