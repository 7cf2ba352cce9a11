"""Shared test helpers: where the real datasets are, and skipping cleanly where they are not."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiosk.paths import DEFAULT_WEIGHTS, datasets_dir

DATASETS = datasets_dir()
LFW = DATASETS / "lfw" / "lfw-deepfunneled"
LFW_PAIRS = DATASETS / "lfw" / "pairs.txt"
OMNIGLOT = DATASETS / "omniglot"

needs_lfw = pytest.mark.skipif(not LFW.is_dir(), reason=f"LFW dataset not found at {LFW} (set KIOSK_DATASETS)")
needs_weights = pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(),
                                   reason=f"no trained weights at {DEFAULT_WEIGHTS}")


def lfw_photo(person: str, number: int = 1) -> Path:
    return LFW / person / f"{person}_{number:04d}.jpg"
