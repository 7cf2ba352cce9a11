"""What the face model's input allows: the teacher (face_recognition's dlib ResNet) on OUR crops.

1. LFW folds 1-5 scored by the teacher on the kiosk's own crop (Haar box, 15 % margin), at 64 px (what
   the student sees) and at 192 px: if the teacher stays near its full-photo accuracy, the crop is not
   what limits the student.
2. How far the training augmentation moves the teacher's embedding of a training crop, against the
   distance between two photos of one person; and how close the shipped student's features come to the
   teacher's on the same (clean) training crops.

Needs the peer (README). Takes about 10 minutes on 2 cores:
    .venv/bin/python scripts/teacher_on_our_crops.py --json weights/results/teacher_on_our_crops.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from kiosk.datasets import read_lfw_pairs
from kiosk.detection import HaarFaceDetector
from kiosk.engine import FaceEngine
from kiosk.facecache import build_face_cache
from kiosk.metrics import summarise
from kiosk.paths import datasets_dir
from kiosk.preprocess import InputSpec
from kiosk.training.augment import augmented_views
from kiosk.training.split import build_training_set
from kiosk.training.teacher import TEACHER_SIDE, cached_teacher_embeddings, teacher_on_crops


def lfw_scores(side: int, workers: int) -> dict:
    lfw = datasets_dir() / "lfw"
    pairs = read_lfw_pairs(lfw / "pairs.txt", lfw / "lfw-deepfunneled", [1, 2, 3, 4, 5])
    paths = sorted({p for pair in pairs for p in (pair.left, pair.right)})
    spec = InputSpec(size=side)  # the kiosk's crop (same box, margin and shift), at this size
    crops = build_face_cache(paths, spec, desc=f"{side} px crops", use_disk=False).crops
    features = teacher_on_crops(crops, spec, workers, desc=f"teacher on {side} px crops")
    index = {p: i for i, p in enumerate(paths)}
    a = features[[index[p.left] for p in pairs]]
    b = features[[index[p.right] for p in pairs]]
    result = summarise(-np.linalg.norm(a - b, axis=1), np.array([p.same for p in pairs]),
                       np.array([p.fold for p in pairs]))
    return {k: round(result[k], 4) for k in ("accuracy", "auc", "tar_at_far_1e-2")}


def augmentation_shift(n: int, workers: int) -> dict:
    data = datasets_dir()
    lfw = data / "lfw"
    ts = build_training_set([lfw / "lfw-deepfunneled", data / "celeba-subset"], lfw / "lfw-deepfunneled",
                            lfw / "pairs.txt", [1, 2, 3, 4, 5], [10])
    full = cached_teacher_embeddings(ts.paths)  # the clean-photo targets training uses
    chosen = np.random.default_rng(1).choice(len(ts.paths), n, replace=False)
    spec = InputSpec()
    crops = build_face_cache([ts.paths[i] for i in chosen], spec, detector=HaarFaceDetector(detect_max_side=320),
                             use_disk=False).crops
    clean = teacher_on_crops(crops, spec, workers, desc="teacher on clean crops")
    viewed = teacher_on_crops(augmented_views(crops, 1, seed=1)[0], spec, workers, desc="teacher on views")
    student = FaceEngine().embed_crops(crops)  # the shipped model, trained to match the standardised targets
    mean, std = np.nanmean(full, 0), np.nanstd(full, 0) + 1e-6
    target = full[chosen]

    def standardised(x):
        return (x - mean) / std

    def median_distance(x, y):
        return round(float(np.median(np.linalg.norm(x - y, axis=1))), 3)

    def mse(x, y):
        return round(float(((x - y) ** 2).mean()), 3)

    by_person: dict[int, list[int]] = {}
    for i, label in enumerate(ts.labels):
        by_person.setdefault(int(label), []).append(i)
    first, second = np.array([v[:2] for v in by_person.values() if len(v) >= 2][:n]).T
    return {"median distance, view to clean-photo target": median_distance(viewed, target),
            "median distance, 64 px crop to clean-photo target": median_distance(clean, target),
            "median distance, two photos of one person": median_distance(full[first], full[second]),
            "standardised MSE, view to target": mse(standardised(viewed), standardised(target)),
            "standardised MSE, 64 px crop to target": mse(standardised(clean), standardised(target)),
            "standardised MSE, shipped student to target": mse(student, standardised(target))}

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample", type=int, default=300, help="training photos for the augmentation shift")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    results = {}
    for side in (64, TEACHER_SIDE):
        results[f"teacher on our {side} px crops, LFW folds 1-5"] = lfw_scores(side, args.workers)
    results["augmentation shift"] = augmentation_shift(args.sample, args.workers)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
