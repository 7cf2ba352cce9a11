"""dlib's face-recognition ResNet read by kiosk.vision.dlib_format and run by torch (kiosk.vision.face_resnet).

Parity with dlib needs dlib and face_recognition_models (the ``peer`` extra) and LFW; the format tests
also run on a tiny network written here in dlib's format, so they need neither.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk.errors import WeightsError
from kiosk.vision.dlib_format import DlibReader, read_dlib_net
from kiosk.vision.face_resnet import DlibFaceResNet, dlib_resnet_path, load_dlib_face_resnet

SETTINGS = settings(deadline=None, database=None, max_examples=150)


# A writer for dlib's format, just enough for a tiny network of the supported shape.
def _int(v: int) -> bytes:
    mag = abs(v).to_bytes(max(1, (abs(v).bit_length() + 7) // 8), "little")
    return bytes([len(mag) | (0x80 if v < 0 else 0)]) + mag


def _str(s: str) -> bytes:
    return _int(len(s)) + s.encode()


def _float(v: float) -> bytes:
    m, e = math.frexp(v)
    return _int(int(m * 2**24)) + _int(e - 24)


def _tensor(values: np.ndarray, shape: tuple[int, ...] | None = None) -> bytes:
    shape = tuple(shape or values.shape) + (1,) * (4 - len(shape or values.shape))
    return _int(2) + b"".join(map(_int, shape)) + np.asarray(values, "<f4").tobytes()


def _alias(*shape: int) -> bytes:
    return _int(1) + b"".join(map(_int, shape))


_MULTIPLIERS = _float(1) * 3 + _float(0)
_STATE = b"110" + _tensor(np.zeros(0), (0, 0, 0, 0)) * 3


def _con(rng, n: int, k: int, size: int, stride: int) -> bytes:
    params = rng.normal(0, 0.3, n * k * size * size + n)
    pad = size // 2 if stride == 1 else 0
    return (_str("con_4") + _tensor(params) + _int(n) + _int(size) * 2 + _int(stride) * 2 + _int(pad) * 2
            + _alias(n, k, size, size) + _alias(1, n, 1, 1) + _MULTIPLIERS)


def _affine(rng, c: int) -> bytes:
    params = np.r_[rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c)]  # gamma, beta
    return _str("affine_") + _tensor(params) + _alias(1, c, 1, 1) * 2 + _int(0)


def _pool(mode: str, size: int, stride: int) -> bytes:
    return _str(f"{mode}_pool_2") + _int(size) * 2 + _int(stride) * 2 + _int(0) * 2


def tiny_dlib_net(seed: int = 0, side: int = 24) -> bytes:
    """stem 3->4, a residual unit, a downsampling unit 4->8 (on a 24x24 input a 1x1 block output plus a 2x2
    pooled skip: add_prev pads both channels and rows/columns), head 8->5."""
    rng = np.random.default_rng(seed)
    relu, add, tag = _str("relu_"), _str("add_prev_"), None
    layers = [_con(rng, 4, 3, 7, 2), _affine(rng, 4), relu, _pool("max", 3, 2),
              tag, _con(rng, 4, 4, 3, 1), _affine(rng, 4), relu, _con(rng, 4, 4, 3, 1), _affine(rng, 4), add, relu,
              tag, _con(rng, 8, 4, 3, 2), _affine(rng, 8), relu, _con(rng, 8, 8, 3, 1), _affine(rng, 8), tag, tag,
              _pool("avg", 2, 2), add, relu, _pool("avg", 0, 1),
              _str("fc_2") + _int(5) + _int(8) + _tensor(rng.normal(0, 1, 40), (8, 5)) + _alias(8, 5, 1, 1)
              + _alias(0, 0, 0, 0) + _int(1) + _MULTIPLIERS]
    head = _int(1) + _str("loss_metric_2") + _float(0.04) + _float(0.6)
    versions = b"".join(_int(2 if layer else 1) for layer in reversed(layers[1:])) + _int(3)
    inputs = _str("input_rgb_image_sized") + _float(122.782) + _float(117.001) + _float(104.298) + _int(side) * 2
    body = layers[0] + _STATE + _int(1) + b"".join(layer + _STATE if layer else b"" for layer in layers[1:])
    return head + versions + inputs + body


@pytest.fixture(scope="module")
def dlib_file() -> Path:
    try:
        return dlib_resnet_path()
    except WeightsError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module", params=["tiny", "dlib"])
def net_bytes(request) -> bytes:
    """A whole network file: the tiny one written above, and dlib's own when it is installed."""
    return tiny_dlib_net() if request.param == "tiny" else request.getfixturevalue("dlib_file").read_bytes()


def test_tiny_net_builds_and_runs():
    model = DlibFaceResNet(read_dlib_net(tiny_dlib_net(), "tiny"), "tiny").eval()
    assert [type(u.pool).__name__ for u in model.units] == ["NoneType", "AvgPool2d"]
    with torch.inference_mode():
        out = model(torch.rand(2, 3, 24, 24) * 255)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="expected"):
        model(torch.zeros(1, 3, 150, 150))
    with pytest.raises(WeightsError, match=r"a \(3, 3\) window meets a \(1, 1\) feature map"):
        DlibFaceResNet(read_dlib_net(tiny_dlib_net(side=12)), "too small an input for its layers")


def test_reader_numbers():
    r = DlibReader(_int(-300) + _int(0) + _int(32000) + _int(0) + _int(32002) + _float(-0.75) + b"1", "numbers")
    values = r.int("a"), r.float("b"), math.isnan(r.float("c")), r.float("d"), r.bool("e")
    assert values == (-300, math.inf, True, -0.75, True)
    with pytest.raises(WeightsError, match="bad integer header"):
        DlibReader(b"\x00", "zero-length").int("x")


def test_dlib_file_structure(dlib_file):
    start = time.perf_counter()
    model, sha256 = load_dlib_face_resnet(dlib_file)
    print(f"loaded {dlib_file.name} in {time.perf_counter() - start:.3f} s")
    net = read_dlib_net(dlib_file.read_bytes())
    kinds = [layer.kind for layer in net.layers]
    assert (kinds.count("con"), kinds.count("affine"), kinds.count("relu"), kinds.count("add_prev")) == (29, 29, 29, 14)
    assert net.input_size == (150, 150) and net.input_means == pytest.approx((122.782, 117.001, 104.298), abs=1e-3)
    assert len(sha256) == 64 and not model.training and model.distance_threshold == pytest.approx(0.6)
    assert [u.conv1.stride for u in model.units if u.pool is not None] == [(2, 2)] * 4
    assert all(u.conv1.padding == (0, 0) for u in model.units if u.pool is not None)


# --- damaged files --------------------------------------------------------------------------------

def _load(tmp_path: Path, data: bytes, **kwargs):
    path = tmp_path / "net.dat"
    path.write_bytes(data)
    return load_dlib_face_resnet(path, **kwargs)


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[: len(data) // 2], "the file ends inside"),
    (lambda data: data[:-1], "the file ends inside"),
    (lambda data: data + b"\x00", "unexpected bytes after the network"),
    (lambda data: b"", "the file is empty"),
    (lambda data: np.random.default_rng(0).bytes(4096), "not a dlib network file"),
    (lambda data: data.replace(b"affine_", b"affinf_", 1), "unsupported layer type 'affinf_'"),
    (lambda data: data.replace(b"relu_", b"relu\x00", 1), "not a printable name"),
])
def test_damaged_file_is_refused(tmp_path, net_bytes, damage, message):
    with pytest.raises(WeightsError, match=message) as caught:
        _load(tmp_path, damage(net_bytes))
    assert "net.dat" in str(caught.value)


def test_other_structure_is_refused(tmp_path, net_bytes):
    swapped = net_bytes.replace(b"\x05relu_", b"\x09add_prev_", 1)  # a readable file, the stem's relu now an add_prev
    with pytest.raises(WeightsError, match="not dlib's face-recognition ResNet: expected the stem"):
        _load(tmp_path, swapped)


def test_wrong_sha256_and_missing_file(tmp_path, net_bytes):
    _, sha256 = _load(tmp_path, net_bytes)
    assert _load(tmp_path, net_bytes, expected_sha256=sha256.upper())[1] == sha256
    with pytest.raises(WeightsError, match=f"not the network these weights were calibrated for: sha256 {sha256}, "
                                           f"expected {'0' * 64}"):
        _load(tmp_path, net_bytes, expected_sha256="0" * 64)
    with pytest.raises(WeightsError, match="cannot read"):
        load_dlib_face_resnet(tmp_path / "absent.dat")


def test_package_not_installed(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsError, match="pip install face_recognition_models"):
        dlib_resnet_path()


# --- property: any bytes give a network or a WeightsError, quickly --------------------------------

def _read_and_build(data: bytes) -> None:
    with contextlib.suppress(WeightsError):
        DlibFaceResNet(read_dlib_net(data, "fuzzed"), "fuzzed")


@SETTINGS
@given(st.binary(max_size=4096))
def test_arbitrary_bytes(data):
    _read_and_build(data)


_TINY = tiny_dlib_net()


@SETTINGS
@given(st.integers(0, len(_TINY)), st.lists(st.tuples(st.integers(0, len(_TINY) - 1), st.integers(0, 255)), max_size=4))
def test_truncated_and_mutated_tiny_net(cut, changes):
    data = bytearray(_TINY)
    for position, value in changes:
        data[position] = value
    _read_and_build(bytes(data[:cut]))


@pytest.fixture(scope="module")
def dlib_prefix(dlib_file) -> bytes:
    with open(dlib_file, "rb") as handle:
        return handle.read(20_000)  # the loss, the versions, the input layer, the stem's convolution


@SETTINGS
@given(data=st.data())
def test_truncated_and_mutated_dlib_prefix(dlib_prefix, data):
    prefix = bytearray(dlib_prefix)
    for _ in range(data.draw(st.integers(0, 4))):
        prefix[data.draw(st.integers(0, len(prefix) - 1))] = data.draw(st.integers(0, 255))
    _read_and_build(bytes(prefix[: data.draw(st.integers(0, len(prefix)))]))


# --- parity with dlib on real faces ---------------------------------------------------------------

def _lfw_chips(dlib, lfw: Path, people: int = 10, per_person: int = 2) -> tuple[list[str], np.ndarray]:
    """Deterministic: the first ``people`` LFW names (sorted) with two photos where dlib finds a face."""
    models = dlib_resnet_path().parent
    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    names, chips = [], []
    for person in sorted(p for p in lfw.iterdir() if p.is_dir()):
        found = []
        for photo in sorted(person.glob("*.jpg"))[:4]:
            image = dlib.load_rgb_image(str(photo))
            faces = detector(image, 1)
            if faces:
                found.append(dlib.get_face_chip(image, landmarks(image, faces[0]), size=150, padding=0.25))
            if len(found) == per_person:
                names += [person.name] * per_person
                chips += found
                break
        if len(names) == people * per_person:
            return names, np.stack(chips)
    pytest.skip(f"fewer than {people} people with {per_person} detectable faces in {lfw}")


@pytest.mark.slow
def test_parity_with_dlib(dlib_file):
    dlib = pytest.importorskip("dlib", reason="dlib is not installed (pip install dlib-bin)")
    from kiosk.paths import datasets_dir

    lfw = datasets_dir() / "lfw" / "lfw-deepfunneled"
    if not lfw.is_dir():
        pytest.skip(f"LFW faces not found at {lfw} (set KIOSK_DATASETS to the shared datasets folder)")
    names, chips = _lfw_chips(dlib, lfw)
    reference = dlib.face_recognition_model_v1(str(dlib_file))
    expected = np.array([np.array(reference.compute_face_descriptor(chip)) for chip in chips], dtype=np.float32)

    model, _ = load_dlib_face_resnet(dlib_file)
    ours = model.descriptors(chips)
    diff = np.abs(ours - expected).max()
    print(f"max |ours - dlib| over {ours.size} values: {diff:.2e}")
    assert ours.shape == (20, 128) and diff <= 1e-4
    with torch.inference_mode():  # a contiguous (not channels_last) input gives the same
        contiguous = model(torch.from_numpy(chips).permute(0, 3, 1, 2).float().contiguous()).numpy()
    assert np.abs(contiguous - ours).max() <= 1e-5

    distances = np.linalg.norm(ours[:, None] - ours[None], axis=-1)
    same = np.array(names)[:, None] == np.array(names)[None]
    off_diagonal = ~np.eye(len(names), dtype=bool)
    same_d, other_d = distances[same & off_diagonal], distances[~same]
    print(f"same person: max {same_d.max():.3f}; different people: min {other_d.min():.3f}, "
          f"median {np.median(other_d):.3f}")
    assert same_d.max() < np.median(other_d) and same_d.mean() < model.distance_threshold < other_d.mean()
