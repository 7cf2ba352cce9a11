"""A reader for dlib's binary serialization of DNNs (``dlib::serialize(net)``), without dlib.

What the stream holds (dlib/serialize.h, dlib/dnn/core.h, layers.h, input.h, loss.h):

* integers: one header byte (low 4 bits: how many little-endian bytes follow, 1..8; 0x80: negative);
* floats and doubles: two such integers, an int64 mantissa and an int16 exponent, value mantissa * 2**exponent
  (exponent 32000/32001/32002 stand for +inf/-inf/nan);
* bools: the character '1' or '0'; strings: an integer length, then the bytes;
* tensors (version 2): version, num_samples, k, nr, nc, then the values as raw little-endian float32
  (not as dlib floats), read here with one ``np.frombuffer`` and no copy;
* a network is written outside-in, each wrapper writing its version and then its subnetwork, so the file
  starts with the loss layer and a run of versions (2 = a layer, 1 = a tag or skip layer, 3 = the layer on
  the input), then the input layer, then each layer's details innermost (nearest the input) first.

``read_dlib_net`` turns that into a flat list of layers in the order they compute. Tag and skip layers
write only their version, so they appear as ``Marker`` with no id: which tag a skip or ``add_prev`` refers
to is not in the file and is left to the code that knows the architecture. Any problem raises
``WeightsError`` naming the source, the byte offset and what was wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, NoReturn

import numpy as np

from kiosk.errors import WeightsError

_SPECIAL_EXPONENTS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
_MAX_NAME = 64  # layer and type names are short; longer means a damaged length


@dataclass(frozen=True)
class Conv:
    kind: ClassVar[str] = "con"
    weight: np.ndarray  # (out, in, kh, kw): cross-correlation, like torch
    bias: np.ndarray  # (out,)
    stride: tuple[int, int]  # (y, x)
    padding: tuple[int, int]  # (y, x)


@dataclass(frozen=True)
class Affine:
    kind: ClassVar[str] = "affine"
    gamma: np.ndarray  # (channels,): y = gamma * x + beta per channel
    beta: np.ndarray


@dataclass(frozen=True)
class Pool:
    mode: Literal["max", "avg"]
    size: tuple[int, int]  # (nr, nc); 0 means the whole image (avg_pool_everything)
    stride: tuple[int, int]
    padding: tuple[int, int]

    @property
    def kind(self) -> str:
        return f"{self.mode}_pool"


@dataclass(frozen=True)
class FullyConnected:
    kind: ClassVar[str] = "fc"
    weight: np.ndarray  # (inputs, outputs), as dlib stores it: y = x @ weight (+ bias)
    bias: np.ndarray | None


@dataclass(frozen=True)
class Relu:
    kind: ClassVar[str] = "relu"


@dataclass(frozen=True)
class AddPrev:
    kind: ClassVar[str] = "add_prev"  # adds a tagged earlier output (which tag: not in the file)


@dataclass(frozen=True)
class Marker:
    kind: ClassVar[str] = "tag"  # a tag or skip layer: the file cannot tell which


Layer = Conv | Affine | Pool | FullyConnected | Relu | AddPrev | Marker


@dataclass(frozen=True)
class DlibNet:
    loss: str  # e.g. "loss_metric_2"
    loss_params: tuple[float, ...]  # loss_metric: (margin, distance_threshold)
    input_size: tuple[int, int]  # (rows, cols)
    input_means: tuple[float, float, float]  # red, green, blue, subtracted before /256
    layers: tuple[Layer, ...]  # in computation order, input side first


class DlibReader:
    """dlib's serialized primitives, read in sequence from ``data``; every problem is a ``WeightsError``."""

    def __init__(self, data: bytes | bytearray | memoryview, source: str):
        self.data = memoryview(data).cast("B")
        self.source = source
        self.pos = 0

    def fail(self, what: str, at: int | None = None) -> NoReturn:
        raise WeightsError(f"{self.source} is not a dlib network file we can read: {what} "
                           f"(at byte {self.pos if at is None else at} of {len(self.data)})")

    def take(self, n: int, what: str) -> memoryview:
        if n > len(self.data) - self.pos:
            self.fail(f"the file ends inside {what} (needs {n} more bytes, {len(self.data) - self.pos} left)")
        start, self.pos = self.pos, self.pos + n
        return self.data[start:self.pos]

    def int(self, what: str, max_bytes: int = 8) -> int:
        start = self.pos
        header = self.take(1, what)[0]
        size = header & 0x0F
        if header & 0x70 or not 1 <= size <= max_bytes:
            self.fail(f"bad integer header 0x{header:02x} for {what}", start)
        value = int.from_bytes(self.take(size, what), "little")
        return -value if header & 0x80 else value

    def count(self, what: str, max_bytes: int = 8) -> int:
        start = self.pos
        value = self.int(what, max_bytes)
        if value < 0:
            self.fail(f"negative {what} ({value})", start)
        return value

    def float(self, what: str) -> float:
        mantissa = self.int(f"{what} (mantissa)", 8)
        exponent = self.int(f"{what} (exponent)", 2)
        if exponent in _SPECIAL_EXPONENTS:
            return _SPECIAL_EXPONENTS[exponent]
        try:
            return math.ldexp(mantissa, exponent)
        except OverflowError:
            return math.copysign(math.inf, mantissa)

    def bool(self, what: str) -> bool:
        start = self.pos
        char = self.take(1, what)[0]
        if char not in b"01":
            self.fail(f"{what} should be '0' or '1', found byte 0x{char:02x}", start)
        return char == ord("1")

    def string(self, what: str, max_len: int = _MAX_NAME) -> str:
        start = self.pos
        n = self.count(f"the length of {what}")
        if n > max_len:
            self.fail(f"{what} is {n} bytes long (at most {max_len} expected)", start)
        raw = bytes(self.take(n, what))
        text = raw.decode("latin-1")
        if not raw.isascii() or not text.isprintable():
            self.fail(f"{what} is not a printable name: {raw!r}", start)
        return text

    def expect(self, got: int, want: int, what: str, at: int) -> None:
        if got != want:
            self.fail(f"{what} is {got}, expected {want}", at)

    def tensor(self, what: str) -> np.ndarray:
        """A version-2 tensor as a read-only float32 view of the bytes, shape (num_samples, k, nr, nc)."""
        start = self.pos
        self.expect(self.int(f"{what} version"), 2, f"{what} version", start)
        shape = tuple(self.count(f"{what} size") for _ in range(4))
        n = math.prod(shape)
        raw = self.take(4 * n, f"{what} ({n} floats)")  # checks the length before any allocation
        return np.frombuffer(raw, dtype="<f4").reshape(shape)

    def alias_shape(self, what: str) -> tuple[int, int, int, int]:
        start = self.pos
        self.expect(self.int(f"{what} version"), 1, f"{what} version", start)
        return tuple(self.count(f"{what} size") for _ in range(4))  # type: ignore[return-value]

    def pair(self, what: str) -> tuple[int, int]:
        return self.count(f"{what} (y)", 4), self.count(f"{what} (x)", 4)


def _split(r: DlibReader, params: np.ndarray, shapes: list[tuple[int, ...]], what: str, at: int) -> list[np.ndarray]:
    """Cut a layer's flat parameter tensor into the pieces its alias tensors describe, back to back."""
    flat = params.reshape(-1)
    sizes = [math.prod(s) for s in shapes]
    if sum(sizes) != flat.size:
        r.fail(f"{what}: parameters hold {flat.size} values, its parts {shapes} need {sum(sizes)}", at)
    offsets = np.cumsum([0, *sizes])
    return [flat[a:b].reshape(s) for a, b, s in zip(offsets[:-1], offsets[1:], shapes, strict=True)]


def _read_con(r: DlibReader, at: int) -> Conv:
    params = r.tensor("con_ parameters")
    filters = r.count("con_ filters", 4)
    kernel = r.pair("con_ kernel size")
    stride = r.pair("con_ stride")
    padding = r.pair("con_ padding")
    weight_shape = r.alias_shape("con_ filters")
    bias_shape = r.alias_shape("con_ biases")
    for _ in range(4):
        r.float("con_ learning-rate/weight-decay multiplier")
    if weight_shape[0] != filters or weight_shape[2:] != kernel or bias_shape != (1, filters, 1, 1):
        r.fail(f"con_ with {filters} filters of {kernel} has filter shape {weight_shape}, bias {bias_shape}", at)
    weight, bias = _split(r, params, [weight_shape, (filters,)], "con_", at)
    return Conv(weight, bias, stride, padding)


def _read_affine(r: DlibReader, at: int) -> Affine:
    params = r.tensor("affine_ parameters")
    gamma_shape = r.alias_shape("affine_ gamma")
    beta_shape = r.alias_shape("affine_ beta")
    mode = r.int("affine_ mode", 4)
    if mode != 0 or gamma_shape != beta_shape or gamma_shape[0] != 1 or gamma_shape[2:] != (1, 1):
        r.fail(f"affine_ in mode {mode} with gamma {gamma_shape}, beta {beta_shape}: only the per-channel "
               f"(convolutional) mode is supported", at)
    gamma, beta = _split(r, params, [(gamma_shape[1],)] * 2, "affine_", at)
    return Affine(gamma, beta)


def _read_pool(r: DlibReader, mode: Literal["max", "avg"]) -> Pool:
    return Pool(mode, r.pair("pool size"), r.pair("pool stride"), r.pair("pool padding"))


def _read_fc(r: DlibReader, at: int) -> FullyConnected:
    outputs = r.count("fc_ outputs", 4)
    inputs = r.count("fc_ inputs", 4)
    params = r.tensor("fc_ parameters")
    weight_shape = r.alias_shape("fc_ weights")
    bias_shape = r.alias_shape("fc_ biases")
    bias_mode = r.int("fc_ bias mode", 4)  # 0: with bias, 1: fc_no_bias
    for _ in range(4):
        r.float("fc_ learning-rate/weight-decay multiplier")
    has_bias = {0: True, 1: False}.get(bias_mode)
    if has_bias is None or weight_shape != (inputs, outputs, 1, 1) or \
            bias_shape != ((1, outputs, 1, 1) if has_bias else (0, 0, 0, 0)):
        r.fail(f"fc_ {inputs}->{outputs} with bias mode {bias_mode}, weights {weight_shape}, biases {bias_shape}", at)
    parts = [(inputs, outputs)] + ([(outputs,)] if has_bias else [])
    pieces = _split(r, params, parts, "fc_", at)
    return FullyConnected(pieces[0], pieces[1] if has_bias else None)


def _read_details(r: DlibReader) -> Layer:
    at = r.pos
    name = r.string("a layer name")
    if name == "con_4":
        return _read_con(r, at)
    if name == "affine_":
        return _read_affine(r, at)
    if name == "relu_":
        return Relu()
    if name == "add_prev_":
        return AddPrev()
    if name in ("max_pool_2", "avg_pool_2"):
        return _read_pool(r, "max" if name[0] == "m" else "avg")
    if name == "fc_2":
        return _read_fc(r, at)
    r.fail(f"unsupported layer type {name!r} (this reader knows con_4, affine_, relu_, add_prev_, "
           f"max_pool_2, avg_pool_2, fc_2)", at)


def _skip_layer_state(r: DlibReader, on_input: bool) -> None:
    """What add_layer writes after its details: 3 flags and 3 (normally empty) work tensors;
    the layer on the input adds its sample expansion factor."""
    for flag in ("setup-called", "gradient-stale", "output-disabled"):
        r.bool(f"the layer's {flag} flag")
    for work in ("x_grad", "cached_output", "params_grad"):
        r.tensor(f"the layer's {work}")
    if on_input:
        start = r.pos
        r.expect(r.int("the sample expansion factor"), 1, "the sample expansion factor", start)


def read_dlib_net(data: bytes | bytearray | memoryview, source: str = "<bytes>") -> DlibNet:
    """Parse a serialized dlib network (loss_metric over input_rgb_image_sized, the layer types above).

    The returned arrays are views of ``data`` (no copy): keep ``data`` alive and unchanged while using them.
    """
    r = DlibReader(data, source)
    if not len(r.data):
        r.fail("the file is empty")
    start = r.pos
    r.expect(r.int("the loss layer version"), 1, "the loss layer version", start)
    start = r.pos
    loss = r.string("the loss layer name")
    if loss != "loss_metric_2":
        r.fail(f"unsupported loss layer {loss!r} (expected 'loss_metric_2')", start)
    loss_params = (r.float("loss_metric margin"), r.float("loss_metric distance threshold"))

    wrappers: list[int] = []  # versions, outermost first; each one consumed >= 2 bytes, so this ends
    while True:
        start = r.pos
        version = r.int("a layer version", 4)
        if version == 3:
            break
        if version not in (1, 2):
            r.fail(f"layer version {version} (expected 1 for tag/skip, 2 for a layer, 3 for the input layer)", start)
        wrappers.append(version)

    start = r.pos
    name = r.string("the input layer name")
    if name != "input_rgb_image_sized":
        r.fail(f"unsupported input layer {name!r} (expected 'input_rgb_image_sized')", start)
    means = (r.float("red mean"), r.float("green mean"), r.float("blue mean"))
    size = (r.count("input rows", 4), r.count("input columns", 4))

    layers: list[Layer] = [_read_details(r)]
    _skip_layer_state(r, on_input=True)
    for version in reversed(wrappers):
        if version == 1:
            layers.append(Marker())
        else:
            layers.append(_read_details(r))
            _skip_layer_state(r, on_input=False)
    if r.pos != len(r.data):
        r.fail(f"{len(r.data) - r.pos} unexpected bytes after the network")
    return DlibNet(loss, loss_params, size, means, tuple(layers))
