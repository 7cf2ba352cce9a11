"""Hardening of the weights files (issue #16 item 2): a tampered threshold is refused with exit 3, and the
reader turns any damaged or hostile file into a WeightsError, never another exception."""

from __future__ import annotations

import io

import pytest
import torch
from helpers import lfw_photo, needs_lfw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiosk.cli import EXIT_NO_WEIGHTS, main
from kiosk.errors import WeightsError
from kiosk.paths import DEFAULT_WEIGHTS
from kiosk.vision.weights import load_weights, read_payload

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def shipped_bytes() -> bytes:
    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"no shipped weights at {DEFAULT_WEIGHTS}")
    return DEFAULT_WEIGHTS.read_bytes()


def tampered(tmp_path, shipped_bytes: bytes, **metadata) -> str:
    payload = torch.load(io.BytesIO(shipped_bytes), weights_only=True)
    payload["metadata"].update(metadata)
    path = tmp_path / "tampered.pt"
    torch.save(payload, path)
    return str(path)


@needs_lfw
@pytest.mark.parametrize("threshold", [0.0, 0.01, 0.3])
def test_verify_with_a_tampered_threshold_exits_3_and_says_why(tmp_path, shipped_bytes, capsys, threshold):
    """The 'why' of the issue: metadata.threshold set to 0 in an otherwise intact file let anyone in. Even a
    plausible value (0.3) is refused: the digest covers the metadata."""
    weights = tampered(tmp_path, shipped_bytes, threshold=threshold)
    code = main(["--weights", weights, "verify", str(lfw_photo("George_W_Bush", 1)), str(lfw_photo("Colin_Powell", 1))])
    err = capsys.readouterr().err
    assert code == EXIT_NO_WEIGHTS == 3
    assert "integrity check failed" in err and "tampered.pt" in err and "ACCEPT" not in capsys.readouterr().out


def test_flip_averaging_flag_cannot_be_switched_in_the_file(tmp_path, shipped_bytes):
    with pytest.raises(WeightsError, match="integrity"):
        load_weights(tampered(tmp_path, shipped_bytes, flip_average=True))


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes_give_a_weights_error(tmp_path, data):
    path = tmp_path / "w.pt"
    path.write_bytes(data)
    with pytest.raises(WeightsError):
        read_payload(path)


@pytest.mark.slow
@settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0), flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)),
                                                    max_size=4))
def test_truncated_or_mutated_shipped_weights_load_or_give_a_weights_error(tmp_path, shipped_bytes, cut, flips):
    """Cut short and/or a few bytes changed: either the file still loads (a change in padding the format
    ignores) with the very same tensors and metadata, or it is refused with a WeightsError."""
    data = bytearray(shipped_bytes[:len(shipped_bytes) - cut % len(shipped_bytes)])
    for position, value in flips:
        if data:
            data[position % len(data)] ^= value
    path = tmp_path / "w.pt"
    path.write_bytes(bytes(data))
    try:
        payload = read_payload(path)
    except WeightsError:
        return
    original = read_payload(DEFAULT_WEIGHTS)
    assert payload["metadata"] == original["metadata"] and payload["sha256"] == original["sha256"]
    assert all(torch.equal(payload["state_dict"][k], original["state_dict"][k]) for k in original["state_dict"])
