"""Which face boxes to give the 5-point landmark model: measured on LFW validation folds, never folds 1-5.

For each strategy: how often it finds no face (the LFW framing box is used then, alike for all), and the
verification accuracy of dlib's network (our torch port, parity 1e-6) on the aligned chips (Euclidean
distance, fold-wise threshold).
The Haar-to-dlib box mapping is fitted on CelebA photos (people we never report on).

    python -m research choose-detector [--folds 6-10] [--json weights/results/detector_choice.json]
    (or: python -m research.choose_detector ...)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from kiosk.lab.datasets import list_identities, parse_folds, read_lfw_pairs
from kiosk.lab.metrics import summarise
from kiosk.paths import datasets_dir
from kiosk.vision.alignment import LandmarkFinder, align_chip, chip_transform
from kiosk.vision.detection import HaarFaceDetector

LFW_BOX = (67.0, 79.5, 109.0, 109.0)  # dlib's median box on LFW-framed 250x250 images (datasets README)


def dlib_boxes(detector, rgb, upsample):
    return [(r.left(), r.top(), r.width(), r.height()) for r in detector(rgb, upsample)]


def largest(boxes):
    return max(boxes, key=lambda b: b[2] * b[3]) if boxes else None


def fit_box_mapping(haar: HaarFaceDetector, hog, paths, finder=None) -> dict:
    """Median offsets/scale that turn a Haar box into the box dlib's HOG detector draws on the same face;
    and, given a landmark finder, the HOG box in chip coordinates (centre and side), for re-boxing from
    landmarks."""
    rows, chip_rows = [], []
    for path in tqdm(paths, desc="fit mapping", leave=False):
        bgr = cv2.imread(str(path))
        h, d = haar.detect(bgr).primary, largest(dlib_boxes(hog, bgr[:, :, ::-1].copy(), 1))
        if h is None or d is None:
            continue
        hx, hy, hw = h[0] + h[2] / 2, h[1] + h[3] / 2, h[2]
        dx, dy, dw = d[0] + d[2] / 2, d[1] + d[3] / 2, d[2]
        rows.append(((dx - hx) / hw, (dy - hy) / hw, dw / hw))
        if finder is not None:
            m = chip_transform(finder.find(bgr[:, :, ::-1].copy(), d))  # chip -> image
            inverse = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
            cx, cy = inverse @ [dx, dy, 1]
            chip_rows.append((cx, cy, dw / np.hypot(*m[:, 0])))
    dx, dy, dw = np.median(np.array(rows), 0)
    out = {"dx": float(dx), "dy": float(dy), "scale": float(dw), "faces": len(rows)}
    if chip_rows:
        cx, cy, side = np.median(np.array(chip_rows), 0)
        out["chip_box"] = {"cx": float(cx), "cy": float(cy), "side": float(side)}
    return out


def rebox(landmarks, chip_box):
    """The HOG-like box implied by 5 landmarks (its median place in chip coordinates, mapped back)."""
    m = chip_transform(landmarks)
    cx, cy = m @ [chip_box["cx"], chip_box["cy"], 1]
    side = chip_box["side"] * np.hypot(*m[:, 0])
    return (cx - side / 2, cy - side / 2, side, side)


def mapped(box, m):
    x, y, w, h = box
    cx, cy = x + w / 2 + m["dx"] * w, y + h / 2 + m["dy"] * w
    side = m["scale"] * w
    return (cx - side / 2, cy - side / 2, side, side)


def hog_in_roi(hog, rgb, box, m, face_px=100.0, reach=1.0):
    """dlib's HOG detector on the region around a (mapped) Haar box (``reach`` box sides from its centre),
    scaled so the face is about ``face_px`` wide."""
    x, y, w, _ = mapped(box, m)
    cx, cy = x + w / 2, y + w / 2
    half = reach * w
    x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
    x1, y1 = int(min(rgb.shape[1], cx + half)), int(min(rgb.shape[0], cy + half))
    scale = face_px / w
    region = cv2.resize(rgb[y0:y1, x0:x1], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    found = largest(dlib_boxes(hog, np.ascontiguousarray(region), 0))
    if found is None:
        return None
    fx, fy, fw, fh = found
    return (x0 + fx / scale, y0 + fy / scale, fw / scale, fh / scale)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research choose-detector", description=__doc__.splitlines()[0])
    parser.add_argument("--folds", default="6-10", help="LFW folds to measure on (never the reported 1-5)")
    parser.add_argument("--fit-images", type=int, default=600, help="CelebA photos to fit the box mapping on")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--strategies", default="hog_up1,haar_raw,haar_mapped,haar_mapped_hog_roi,haar_mapped_hog_roi_small,"
                                                "haar_mapped_rebox",
                        help="comma-separated: hog_up1, haar_raw, haar_mapped, haar_mapped_hog_roi, "
                             "haar_mapped_hog_roi_small, haar_mapped_rebox")
    args = parser.parse_args(argv)
    folds = parse_folds(args.folds)
    if set(folds) & {1, 2, 3, 4, 5}:
        raise SystemExit("folds 1-5 are for reporting only")
    import dlib
    root = datasets_dir()
    pairs = read_lfw_pairs(root / "lfw/pairs.txt", root / "lfw/lfw-deepfunneled", folds)
    celeba = [p for images in list_identities(root / "celeba-subset").values() for p in images]
    rng = np.random.default_rng(0)
    fit_paths = [celeba[i] for i in rng.choice(len(celeba), args.fit_images, replace=False)]
    haar, hog = HaarFaceDetector(), dlib.get_frontal_face_detector()
    finder = LandmarkFinder()
    mapping = fit_box_mapping(haar, hog, fit_paths, finder)
    print("Haar -> dlib box mapping (CelebA):", mapping)
    from kiosk.vision.engine import embed_crops
    from kiosk.vision.model import SiameseNet
    net = SiameseNet("dlib_resnet", {}, "euclidean").eval()

    paths = sorted({p for pair in pairs for p in (pair.left, pair.right)})
    strategies = args.strategies.split(",")
    chips = {s: np.zeros((len(paths), 150, 150, 3), np.uint8) for s in strategies}
    missed = {s: 0 for s in strategies}
    seconds = {s: 0.0 for s in strategies}
    for i, path in enumerate(tqdm(paths, desc="images")):
        bgr = cv2.imread(str(path))
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        t = time.perf_counter()
        haar_box = haar.detect(bgr).primary
        t_haar = time.perf_counter() - t
        for s in strategies:
            t = time.perf_counter()
            if s == "hog_up1":
                box = largest(dlib_boxes(hog, rgb, 1))
            elif haar_box is None:
                box = None
            elif s == "haar_raw":
                box = haar_box
            elif s == "haar_mapped":
                box = mapped(haar_box, mapping)
            elif s == "haar_mapped_rebox":  # landmarks from the mapped box, re-boxed from them, landmarks again
                box = rebox(finder.find(rgb, mapped(haar_box, mapping)), mapping["chip_box"])
            elif s == "haar_mapped_hog_roi_small":  # a smaller, coarser region: cheaper
                box = hog_in_roi(hog, rgb, haar_box, mapping, 85.0, 0.85) or mapped(haar_box, mapping)
            else:
                box = hog_in_roi(hog, rgb, haar_box, mapping) or mapped(haar_box, mapping)
            seconds[s] += time.perf_counter() - t + (0 if s == "hog_up1" else t_haar)
            if box is None:
                missed[s] += 1
                box = LFW_BOX
            chips[s][i] = align_chip(bgr, finder.find(rgb, box))
    features = {s: embed_crops(net, chips[s]) for s in tqdm(strategies, desc="embed")}
    index = {p: i for i, p in enumerate(paths)}
    a = np.array([index[p.left] for p in pairs])
    b = np.array([index[p.right] for p in pairs])
    same = np.array([p.same for p in pairs])
    fold = np.array([p.fold for p in pairs])
    results = {"folds": folds, "pairs": len(pairs), "images": len(paths), "box_mapping": mapping, "strategies": {}}
    for s in strategies:
        scores = -np.linalg.norm(features[s][a] - features[s][b], axis=1)
        summary = summarise(scores, same, fold)
        results["strategies"][s] = {"missed": missed[s], "detect_ms": 1000 * seconds[s] / len(paths),
                                    **{k: summary[k] for k in ("accuracy", "accuracy_std", "auc", "tar_at_far_1e-2")}}
        print(f"{s:<22} missed {missed[s]:>4}  accuracy {summary['accuracy']:.4f}  TAR@FAR1% "
              f"{summary['tar_at_far_1e-2']:.4f}  AUC {summary['auc']:.5f}  box {1000 * seconds[s] / len(paths):.1f} ms")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
