"""The thread rule (kiosk.vision.threads): one torch thread unless KIOSK_THREADS says otherwise, OpenCV on every
core this process may use; a bad KIOSK_THREADS falls back to the default instead of failing the kiosk."""

from __future__ import annotations

import os

import cv2
import pytest
import torch

from kiosk.vision.threads import DEFAULT_TORCH_THREADS, THREADS_VARIABLE, app_threads, opencv_threads, set_threads


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads(), cv2.getNumThreads()
    yield
    torch.set_num_threads(before[0])
    cv2.setNumThreads(before[1])


@pytest.mark.parametrize(("value", "expected"), [("", DEFAULT_TORCH_THREADS), ("3", 3), (" 2 ", 2), ("0", 1),
                                                 ("-4", 1), ("two", 1), ("1.5", 1)])
def test_kiosk_threads_is_read_and_checked(monkeypatch, value, expected):
    monkeypatch.setenv(THREADS_VARIABLE, value)
    assert app_threads() == expected


def test_set_threads_applies_the_rule(monkeypatch, restore_threads):
    monkeypatch.delenv(THREADS_VARIABLE, raising=False)
    torch.set_num_threads(2)
    assert set_threads() == 1
    assert torch.get_num_threads() == 1
    assert cv2.getNumThreads() == opencv_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(THREADS_VARIABLE, "2")
    assert set_threads() == 2 and torch.get_num_threads() == 2
