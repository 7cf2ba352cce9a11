"""Liveness research (issue #22): compare feature sets, thresholds and fusion by leave-one-person-out on
the 9 shared NUAA people, per frame and per 3-frame attempt, with the worst held-out person.

    .venv/bin/python -m research.liveness_features            # caches crops in runs/liveness_crops.npz
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from kiosk.io.imageio import read_image
from kiosk.lab.training.liveness import fit, nuaa_recording, read_labels
from kiosk.vision.detection import HaarFaceDetector
from kiosk.vision.liveness import face_crop

NUAA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "nuaa" / "labels.csv"
CACHE = Path(__file__).resolve().parents[1] / "runs" / "liveness_crops.npz"


def crops():
    if CACHE.is_file():
        d = np.load(CACHE, allow_pickle=False)
        return {k: d[k] for k in d.files}
    rows = read_labels(NUAA)
    det = HaarFaceDetector()
    c64 = np.zeros((len(rows), 64, 64, 3), np.uint8)
    found = np.zeros(len(rows), bool)
    boxes = np.zeros((len(rows), 4), np.float32)
    for i, (path, *_r) in enumerate(rows):
        frame = read_image(path)
        box = det.detect(frame).primary
        if box is not None:
            found[i], boxes[i] = True, box
            c64[i] = face_crop(frame, box)
    rec = [nuaa_recording(r[0]) for r in rows]
    out = {"c64": c64, "found": found, "boxes": boxes, "live": np.array([r[1] for r in rows]),
           "person": np.array([r[2] for r in rows]), "recording": np.array([k[0] for k in rec]),
           "frame": np.array([k[1] for k in rec]), "path": np.array([str(r[0]) for r in rows])}
    np.savez(CACHE, **out)
    return out


# -- features of a 64x64 BGR crop -----------------------------------------------------------------------------
def f_lbp(c):
    from kiosk.vision.liveness import lbp_histogram
    h = [lbp_histogram(cv2.cvtColor(c, s)[:, :, k]) for s in (cv2.COLOR_BGR2YCrCb, cv2.COLOR_BGR2HSV) for k in range(3)]
    return np.sqrt(np.concatenate(h))


def f_chroma(c, bins=16):
    ycc, hsv = cv2.cvtColor(c, cv2.COLOR_BGR2YCrCb), cv2.cvtColor(c, cv2.COLOR_BGR2HSV)
    chans = [(ycc[:, :, 1], 256), (ycc[:, :, 2], 256), (hsv[:, :, 0], 180), (hsv[:, :, 1], 256)]
    out = []
    for ch, top in chans:
        h = np.bincount((ch.astype(np.int32) * bins // top).ravel(), minlength=bins)[:bins].astype(np.float32)
        out.append(h / h.sum())
    return np.sqrt(np.concatenate(out))


_Y, _X = np.mgrid[-32:32, -32:32]
_R = np.hypot(_Y, _X)
_BANDS = np.digitize(_R, [2, 4, 6, 8, 11, 14, 18, 22, 27, 32, 99])
_WIN = np.outer(np.hanning(64), np.hanning(64))


def f_fft(c):
    g = cv2.cvtColor(c, cv2.COLOR_BGR2GRAY).astype(np.float32)
    g = (g - g.mean()) * _WIN
    p = np.abs(np.fft.fftshift(np.fft.fft2(g))) ** 2
    e = np.bincount(_BANDS.ravel(), weights=p.ravel(), minlength=12)[1:12]
    e = e / max(e.sum(), 1e-9)
    return np.log(e + 1e-9).astype(np.float32)


def f_sharp(c):
    g = cv2.cvtColor(c, cv2.COLOR_BGR2GRAY).astype(np.float32)
    lap = cv2.Laplacian(g, cv2.CV_32F)
    sob = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    hsv = cv2.cvtColor(c, cv2.COLOR_BGR2HSV).astype(np.float32)
    spec = ((hsv[:, :, 2] > 220) & (hsv[:, :, 1] < 60)).mean()
    m, s = g.mean(), g.std() + 1e-3
    return np.array([np.log(lap.var() + 1e-3) - 2 * np.log(s), np.log(sob.mean() + 1e-3) - np.log(s),
                     spec, np.log(s), m / 255, hsv[:, :, 1].mean() / 255, hsv[:, :, 1].std() / 255], np.float32)


def f_lbp2(c):
    """LBP P=8 R=2 of Y only (sampled at the integer ring)."""
    from kiosk.vision.liveness import _BINS
    g = cv2.cvtColor(c, cv2.COLOR_BGR2GRAY).astype(np.int16)
    ctr = g[2:-2, 2:-2]
    code = np.zeros(ctr.shape, np.int64)
    for bit, (dy, dx) in enumerate([(-2, -2), (-2, 0), (-2, 2), (0, 2), (2, 2), (2, 0), (2, -2), (0, -2)]):
        code |= (g[2 + dy:62 + dy, 2 + dx:62 + dx] >= ctr).astype(np.int64) << bit
    h = np.bincount(_BINS[code].ravel(), minlength=59).astype(np.float32)
    return np.sqrt(h / h.sum())


FEATURES = {"lbp": f_lbp, "chroma": f_chroma, "fft": f_fft, "sharp": f_sharp, "lbp2": f_lbp2}


def feature_matrix(d, name):
    path = CACHE.with_name(f"liveness_f_{name}.npy")
    if path.is_file():
        return np.load(path)
    f = FEATURES[name]
    dim = len(f(d["c64"][0]))
    x = np.zeros((len(d["found"]), dim), np.float32)
    for i in np.nonzero(d["found"])[0]:
        x[i] = f(d["c64"][i])
    np.save(path, x)
    return x


def cost_ms(d, name, n=200):
    f = FEATURES[name]
    c = d["c64"][d["found"]][:n]
    t = time.perf_counter()
    for ci in c:
        f(ci)
    return (time.perf_counter() - t) / len(c) * 1e3


# -- protocol --------------------------------------------------------------------------------------------------
def lopo_scores(x, d, wd):
    ok = d["found"]
    s = np.full(len(ok), np.nan)
    for p in sorted(set(d["person"][ok])):
        held, train = ok & (d["person"] == p), ok & (d["person"] != p)
        mean, scale, w, b = fit(x[train], d["live"][train], wd)
        s[held] = ((x[held] - mean) / scale) @ w + b   # logits
    return s


def windows(d, s, size=3, rule=min):
    """(fused, live, person) for every run of `size` consecutive detected frames of a recording."""
    ok = d["found"]
    groups = {}
    for i in np.nonzero(ok)[0]:
        groups.setdefault((d["recording"][i], bool(d["live"][i])), []).append((d["frame"][i], i))
    fused, live, person = [], [], []
    for (_, lv), mem in groups.items():
        order = [i for _, i in sorted(mem)]
        for k in range(len(order) - size + 1):
            fused.append(rule([s[i] for i in order[k:k + size]]))
            live.append(lv)
            person.append(d["person"][order[k]])
    return np.array(fused), np.array(live), np.array(person)


def acer_threshold(s, live, bias=0.0):
    """Lowest ACER threshold (middle of ties); bias>0 weights APCER more."""
    u = np.unique(s)
    cand = (u[1:] + u[:-1]) / 2
    ap = np.array([(s[~live] >= t).mean() for t in cand])
    bp = np.array([(s[live] < t).mean() for t in cand])
    cost = (1 + bias) * ap + bp
    best = np.nonzero(cost <= cost.min() + 1e-12)[0]
    return cand[best[len(best) // 2]]


def report(name, x, d, wd=1e-1, margin=0.0, bias=0.0, quiet=False):
    s = lopo_scores(x, d, wd)
    ok = d["found"]
    live, person = d["live"], d["person"]
    # threshold from the pooled held-out frame scores (as shipped), plus a margin (in logits) toward refusing
    t = acer_threshold(s[ok], live[ok], bias) + margin
    fa, fl, fp = windows(d, s)
    res = {"name": name, "t": t, "f_ap": (s[ok & ~live] >= t).mean(), "f_bp": (s[ok & live] < t).mean(),
           "a_ap": (fa[~fl] >= t).mean(), "a_bp": (fa[fl] < t).mean(),
           "acc": int((fa[~fl] >= t).sum()), "ref": int((fa[fl] < t).sum())}
    worst_ap = worst_bp = 0.0
    blind_acc = blind_ref = 0
    for p in sorted(set(person[ok])):
        m = fp == p
        worst_ap = max(worst_ap, (fa[m & ~fl] >= t).mean())
        worst_bp = max(worst_bp, (fa[m & fl] < t).mean())
        others = ok & (person != p)
        tb = acer_threshold(s[others], live[others], bias) + margin  # threshold that never saw p
        blind_acc += int((fa[m & ~fl] >= tb).sum())
        blind_ref += int((fa[m & fl] < tb).sum())
    from kiosk.lab.metrics import auc
    res.update(w_ap=worst_ap, w_bp=worst_bp, b_ap=blind_acc / (~fl).sum(), b_bp=blind_ref / fl.sum(),
               auc=auc(s[ok], live[ok]))
    if not quiet:
        print(f"{name:<28} wd={wd:<5} m={margin:<4} b={bias:<3} frame AP {res['f_ap']:.4f} BP {res['f_bp']:.4f} AUC "
              f"{res['auc']:.4f} | attempt AP {res['a_ap']:.4f} ({res['acc']}) BP {res['a_bp']:.4f} ({res['ref']}) "
              f"worst AP {worst_ap:.3f} BP {worst_bp:.3f} | blind AP {res['b_ap']:.4f} BP {res['b_bp']:.4f}", flush=True)
    return res, s


def main():
    d = crops()
    xs = {k: feature_matrix(d, k) for k in FEATURES}
    for k in FEATURES:
        print(f"cost {k}: {cost_ms(d, k):.2f} ms", flush=True)
    combos = [("lbp",), ("chroma",), ("fft",), ("sharp",), ("lbp2",), ("lbp", "chroma"), ("lbp", "fft"),
              ("lbp", "fft", "sharp"), ("lbp", "chroma", "fft", "sharp"), ("lbp", "lbp2", "chroma", "fft", "sharp"),
              ("chroma", "fft", "sharp", "lbp2")]
    for combo in combos:
        x = np.concatenate([xs[k] for k in combo], 1)
        for wd in (1e-2, 1e-1, 1.0):
            report("+".join(combo), x, d, wd)


if __name__ == "__main__":
    main()
