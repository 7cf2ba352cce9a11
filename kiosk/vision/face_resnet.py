"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``, public domain), run by torch.

The weights come from the file that the ``face_recognition_models`` package installs, read by
``kiosk.vision.dlib_format`` (no dlib, no pickle). The network is built from the layer sequence in the file,
which must be that of dlib's ``dnn_face_recognition_ex.cpp``::

    con affine relu max_pool                                    stem
    tag con affine relu con affine add_prev relu                residual: relu(block(x) + x)
    tag con affine relu con affine tag tag avg_pool add_prev relu    residual_down: relu(block(x) + avg_pool(x))
    avg_pool(everything) fc_no_bias                             a 128-d descriptor

Kernel sizes, strides, paddings and widths are read from the file (the stride-2 convolutions and pools
have no padding). Each ``affine`` (a frozen batch norm: per-channel scale and shift) is folded into the
convolution before it. dlib's ``add_prev`` adds tensors of different shapes by zero-padding the smaller
one in channels and in rows/columns (top-left aligned); that happens at each downsampling unit, e.g.
a 3x3 block output plus a 4x4 pooled skip gives a 4x4 sum.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from kiosk.errors import WeightsError
from kiosk.vision.dlib_format import Affine, Conv, DlibNet, FullyConnected, Layer, Pool, read_dlib_net

RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"

STEM = ("con", "affine", "relu", "max_pool")
RESIDUAL = ("tag", "con", "affine", "relu", "con", "affine", "add_prev", "relu")
RESIDUAL_DOWN = ("tag", "con", "affine", "relu", "con", "affine", "tag", "tag", "avg_pool", "add_prev", "relu")
HEAD = ("avg_pool", "fc")
MAX_INPUT_SIDE = 1024


def dlib_resnet_path() -> Path:
    """The .dat installed by ``face_recognition_models`` (found without importing the package)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("dlib's face-recognition network is not installed: pip install face_recognition_models")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / RESNET_FILE
    if not path.is_file():
        raise WeightsError(f"{path} is missing: pip install --force-reinstall face_recognition_models")
    return path


def _add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum over the larger shape, each operand zero-padded at the end of each axis."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(x, y) for x, y in zip(a.shape[1:], b.shape[1:], strict=True))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class _Residual(nn.Module):
    """relu(add_prev(conv2(relu(conv1(x))), skip(x))), skip = x or an average pool of x."""

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d, pool: Pool | None):
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2
        self.pool = None if pool is None else nn.AvgPool2d(pool.size, pool.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x), inplace=True))
        return F.relu(_add_prev(y, x if self.pool is None else self.pool(x)), inplace=True)


class DlibFaceResNet(nn.Module):
    """dlib's 128-d face descriptor network. ``forward``: float32 (N, 3, 150, 150) RGB pixel values 0..255
    -> (N, 128) float32, not normalised (dlib's descriptor as is: same person when distance < 0.6).

    The convolution weights are channels_last (on one CPU thread 1.7x faster at batch 1 than contiguous
    ones); inputs may be either layout, the first convolution's output is channels_last anyway."""

    def __init__(self, net: DlibNet, source: str = "the dlib network"):
        super().__init__()
        self.source = source
        self.input_size = net.input_size
        if not all(1 <= side <= MAX_INPUT_SIDE for side in net.input_size):
            raise WeightsError(f"{source}: an input of {net.input_size} pixels (1 to {MAX_INPUT_SIDE} a side expected)")
        self.distance_threshold = float(net.loss_params[1])
        if not np.isfinite(net.input_means).all():
            raise WeightsError(f"{source}: the input layer's channel means are not finite: {net.input_means}")
        self.register_buffer("mean", torch.tensor(net.input_means, dtype=torch.float32).view(1, 3, 1, 1))
        layers, kinds = net.layers, tuple(layer.kind for layer in net.layers)

        def at(i: int, pattern: tuple[str, ...]) -> bool:
            return kinds[i:i + len(pattern)] == pattern

        if not at(0, STEM):
            self._refuse(0, kinds, "the stem (con affine relu max_pool)")
        self.stem = self._conv(layers[0], layers[1], 3)
        pool = self._pool(layers[3], "max", "the stem's pool")
        self.stem_pool = nn.MaxPool2d(pool.size, pool.stride, pool.padding)
        channels = self.stem.out_channels
        units: list[_Residual] = []
        i = len(STEM)
        while at(i, RESIDUAL) or at(i, RESIDUAL_DOWN):
            down = at(i, RESIDUAL_DOWN)
            conv1 = self._conv(layers[i + 1], layers[i + 2], channels)
            conv2 = self._conv(layers[i + 4], layers[i + 5], conv1.out_channels)
            pool = self._pool(layers[i + 8], "avg", f"the skip pool at layer {i + 8}") if down else None
            if pool is not None and pool.padding != (0, 0):
                raise WeightsError(f"{source}: the skip pool at layer {i + 8} has padding {pool.padding}; "
                                   f"only unpadded average pools are supported")
            units.append(_Residual(conv1, conv2, pool))
            channels = max(channels, conv2.out_channels)
            i += len(RESIDUAL_DOWN if down else RESIDUAL)
        if not units or not at(i, HEAD) or i + len(HEAD) != len(kinds):
            self._refuse(i, kinds, "a residual unit or the head (avg_pool fc) at the end")
        self.units = nn.Sequential(*units)
        self._pool(layers[i], "avg", "the final pool", everything=True)
        self.fc = self._fc(layers[i + 1], channels)
        self._check_map_sizes()

    def _check_map_sizes(self) -> None:
        """Follow the feature map's size through the network: no window may be larger than its input."""
        def after(size: tuple[int, int], layer: nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d) -> tuple[int, int]:
            kernel, stride, padding = (_pair(getattr(layer, name)) for name in ("kernel_size", "stride", "padding"))
            out = tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(size, kernel, stride, padding, strict=True))
            if min(out) < 1:
                raise WeightsError(f"{self.source}: a {kernel} window meets a {size} feature map "
                                   f"(for a {self.input_size} input): the network cannot run")
            return out  # type: ignore[return-value]

        size = after(after(self.input_size, self.stem), self.stem_pool)
        for unit in self.units:
            block = after(after(size, unit.conv1), unit.conv2)
            skip = size if unit.pool is None else after(size, unit.pool)
            size = (max(block[0], skip[0]), max(block[1], skip[1]))  # add_prev's zero padding

    def _refuse(self, i: int, kinds: tuple[str, ...], wanted: str) -> None:
        found = " ".join(kinds[i:i + len(RESIDUAL_DOWN)]) or "the end of the network"
        raise WeightsError(f"{self.source}: not dlib's face-recognition ResNet: expected {wanted} at layer {i}, "
                           f"found '{found}'")

    def _conv(self, conv: Layer, affine: Layer, in_channels: int) -> nn.Conv2d:
        """A torch convolution computing con_ followed by affine_ (the scale and shift folded in)."""
        assert isinstance(conv, Conv) and isinstance(affine, Affine)
        out_channels, k_in, kh, kw = conv.weight.shape
        fits = k_in == in_channels and affine.gamma.shape == (out_channels,) and out_channels > 0
        if not fits or min(*conv.stride, kh, kw) < 1 or conv.padding[0] >= kh or conv.padding[1] >= kw:
            raise WeightsError(f"{self.source}: a {kh}x{kw} convolution {k_in}->{out_channels} stride {conv.stride} "
                               f"padding {conv.padding} with {affine.gamma.size} scales on a {in_channels}-channel "
                               f"input: not a convolution this network can have")
        # (out, kh, kw, in) in memory, seen as (out, in, kh, kw): channels_last, faster on CPU than contiguous
        weight = conv.weight.transpose(0, 2, 3, 1) * affine.gamma[:, None, None, None]
        bias = conv.bias * affine.gamma.astype(np.float64) + affine.beta
        module = nn.Conv2d(in_channels, out_channels, (kh, kw), conv.stride, conv.padding, device="meta")
        module.weight = nn.Parameter(_tensor(weight, self.source).permute(0, 3, 1, 2))
        module.bias = nn.Parameter(_tensor(bias, self.source))
        return module

    def _pool(self, pool: Layer, mode: str, what: str, everything: bool = False) -> Pool:
        """Check a pool: its mode, and either a window torch can run or (``everything``) the whole image."""
        assert isinstance(pool, Pool)
        if everything:
            shape_ok = pool.size == (0, 0)
        else:
            padding_ok = all(2 * p <= s for p, s in zip(pool.padding, pool.size, strict=True))
            shape_ok = min(*pool.size, *pool.stride) >= 1 and padding_ok
        if pool.mode != mode or not shape_ok:
            expected = f"a {mode} pool over the whole image" if everything else f"a {mode} pool"
            raise WeightsError(f"{self.source}: {what} is a {pool.mode} pool of {pool.size} stride {pool.stride} "
                               f"padding {pool.padding}; expected {expected}")
        return pool

    def _fc(self, fc: Layer, in_features: int) -> nn.Linear:
        assert isinstance(fc, FullyConnected)
        if fc.bias is not None or fc.weight.shape[0] != in_features:
            bias = "with" if fc.bias is not None else "no"
            raise WeightsError(f"{self.source}: the final layer maps {fc.weight.shape[0]} features ({bias} bias); "
                               f"expected fc_no_bias on {in_features}")
        module = nn.Linear(in_features, fc.weight.shape[1], bias=False, device="meta")
        module.weight = nn.Parameter(_tensor(fc.weight.T, self.source))
        return module

    def descriptors(self, chips: np.ndarray) -> np.ndarray:
        """(N, rows, cols, 3) uint8 RGB face chips (as ``dlib.get_face_chip`` makes) -> (N, 128) float32."""
        x = torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float()  # NHWC = channels_last
        with torch.inference_mode():
            return self(x).numpy()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, *self.input_size):
            rows, cols = self.input_size
            raise ValueError(f"expected (N, 3, {rows}, {cols}) RGB pixels, got {tuple(x.shape)}")
        x = (x - self.mean) / 256.0  # dlib's input_rgb_image: (pixel - mean) / 256
        x = self.units(self.stem_pool(F.relu(self.stem(x), inplace=True)))
        return self.fc(x.mean(dim=(2, 3)))


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _tensor(values: np.ndarray, source: str) -> torch.Tensor:
    """A float32 copy in C order (never a view of the file's bytes), refused when not finite."""
    if not np.isfinite(values).all():
        raise WeightsError(f"{source}: the network holds non-finite weights (inf or nan)")
    return torch.from_numpy(np.array(values, dtype=np.float32, order="C"))


def load_dlib_face_resnet(path: str | Path | None = None,
                          expected_sha256: str | None = None) -> tuple[DlibFaceResNet, str]:
    """Read dlib's network (default: ``dlib_resnet_path()``) into a ``DlibFaceResNet`` in eval mode.
    Returns it with the file's sha256; refuses a file whose sha256 is not ``expected_sha256`` (when given)."""
    path = Path(path) if path is not None else dlib_resnet_path()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read dlib's network {path}: {exc.strerror or exc}") from exc
    sha256 = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and sha256 != expected_sha256.lower():
        raise WeightsError(f"{path} is not the network these weights were calibrated for: "
                           f"sha256 {sha256}, expected {expected_sha256}")
    model = DlibFaceResNet(read_dlib_net(data, str(path)), str(path))
    return model.eval(), sha256
