"""Would a "turn your head" prompt, checked from the pipeline's 5 landmarks, tell a real head from a print?
(issue #22 item 3, "an active check, if it pays").

The cue: a real head turning shows parallax (the nose, in front of the eyes, moves across the eye line); a flat
print does not. With dlib's 5 points (two corners of each eye and the base of the nose) the four eye points lie
almost on one line, so the question is whether a flat picture, held at some angle, can put its 5 points where a
really turned head puts them. This measures it on real pose variation:

* real turns: pairs of photos of one CelebA person, one near-frontal, one turned (the nose's offset from the eyes'
  midpoint, along the eye line, at least ``--turn`` inter-ocular distances apart);
* the print: the frontal photo's 5 points moved by the plane-to-image map (a homography) that brings them closest
  to the turned photo's 5 points, i.e. the frontal photo printed and held at the best angle an attacker could find.
  The residual (pixels, in inter-ocular distances) is how far the best-held print stays from the real turn; the
  landmark noise is the residual between two photos of the same pose, which any check has to tolerate.

    python -m research.head_turn [--people 238] [--turn 0.12]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from kiosk.io.imageio import read_image
from kiosk.paths import datasets_dir
from kiosk.vision.engine import FaceEngine


def offset(points: np.ndarray) -> float:
    """The nose's offset from the eyes' midpoint along the eye line, in inter-ocular distances (a yaw proxy)."""
    eyes = points[:4]
    right, left = eyes[:2].mean(0), eyes[2:].mean(0)
    axis = left - right
    iod = float(np.linalg.norm(axis))
    return float(np.dot(points[4] - (right + left) / 2, axis / iod) / iod)


def iod(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[2:4].mean(0) - points[:2].mean(0)))


def best_print_residual(frontal: np.ndarray, turned: np.ndarray) -> tuple[float, np.ndarray]:
    """Max distance (in the turned photo's inter-ocular distances) between the turned photo's 5 points and the
    frontal photo's 5 points through the least-squares homography; and that homography."""
    h, _ = cv2.findHomography(frontal.astype(np.float64), turned.astype(np.float64), 0)
    if h is None:
        return float("inf"), np.eye(3)
    mapped = cv2.perspectiveTransform(frontal[None].astype(np.float64), h)[0]
    return float(np.max(np.linalg.norm(mapped - turned, axis=1)) / iod(turned)), h


def similarity_residual(frontal: np.ndarray, turned: np.ndarray) -> float:
    """The nose's distance from where a flat, unturned picture (a similarity fitted to the eyes) puts it."""
    m, _ = cv2.estimateAffinePartial2D(frontal[:4].astype(np.float64), turned[:4].astype(np.float64))
    nose = m[:, :2] @ frontal[4] + m[:, 2]
    return float(np.linalg.norm(nose - turned[4]) / iod(turned))


def tilt_degrees(h: np.ndarray, focal: float, centre: tuple[float, float]) -> float:
    """The smallest tilt of the print (angle between its normal and the camera axis) among the homography's
    physical decompositions, with a camera of this focal length."""
    k = np.array([[focal, 0, centre[0]], [0, focal, centre[1]], [0, 0, 1.0]])
    count, rotations, _, normals = cv2.decomposeHomographyMat(h, k)
    angles = [np.degrees(np.arccos(min(1.0, abs(float(n.ravel()[2]))))) for n in normals[:count]]
    return min(angles) if angles else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=None)
    parser.add_argument("--people", type=int, default=238)
    parser.add_argument("--turn", type=float, default=0.12, help="offset change that counts as a turn (iod)")
    args = parser.parse_args(argv)
    root = (args.datasets or datasets_dir()) / "celeba-subset"
    if not root.is_dir():
        raise SystemExit(f"the CelebA subset is not at {root}")
    engine = FaceEngine()
    pairs, same_pose = [], []
    for person in sorted(p for p in root.iterdir() if p.is_dir())[:args.people]:
        found = []
        for path in sorted(person.glob("*.jpg")):
            image = read_image(path)
            box = engine.detector.detect(image).primary
            if box is None:
                continue
            points = engine.preprocessor.find_landmarks(image, box)
            found.append((offset(points), points, image))
        frontal = [f for f in found if abs(f[0]) < 0.03]
        turned = [f for f in found if abs(f[0]) >= args.turn]
        if frontal and turned:
            pairs.append((frontal[0], max(turned, key=lambda f: abs(f[0]))))
        if len(frontal) >= 2:
            same_pose.append((frontal[0], frontal[1]))
    rows, prints = [], []
    for (_, a, frontal_image), (o, b, turned_image) in pairs:
        residual, h = best_print_residual(a, b)
        height, width = turned_image.shape[:2]
        rows.append((abs(o), similarity_residual(a, b), residual, tilt_degrees(h, width, (width / 2, height / 2))))
        # the print itself: the frontal photo warped by that homography, through the kiosk's own pipeline
        warped = cv2.warpPerspective(frontal_image, h, (width, height), borderMode=cv2.BORDER_REPLICATE)
        box = engine.detector.detect(warped).primary
        seen = offset(engine.preprocessor.find_landmarks(warped, box)) if box is not None else None
        prints.append((box is not None, seen is not None and abs(seen) >= args.turn and np.sign(seen) == np.sign(o)))
    noise = [best_print_residual(a, b)[0] for (_, a, _), (_, b, _) in same_pose]
    noise_flat = [similarity_residual(a, b) for (_, a, _), (_, b, _) in same_pose]
    rows = np.array(rows)
    print(f"{len(pairs)} people with a frontal (|offset| < 0.03 iod) and a turned (>= {args.turn}) photo; "
          f"{len(same_pose)} with two frontal photos (landmark noise)")
    print(f"turn: median offset {np.median(rows[:, 0]):.3f} iod")
    print(f"nose off where an unturned flat picture puts it: real turn median {np.median(rows[:, 1]):.3f} iod "
          f"(10th pct {np.percentile(rows[:, 1], 10):.3f}); same pose {np.median(noise_flat):.3f} "
          f"(90th pct {np.percentile(noise_flat, 90):.3f})")
    print(f"best-held print (homography on 5 points), max residual: real turn median {np.median(rows[:, 2]):.4f} iod "
          f"(90th pct {np.percentile(rows[:, 2], 90):.4f}); landmark noise between two frontal photos: median "
          f"{np.median(noise):.4f} (90th pct {np.percentile(noise, 90):.4f})")
    print(f"the print's tilt that does it: median {np.nanmedian(rows[:, 3]):.0f} deg (90th pct "
          f"{np.nanpercentile(rows[:, 3], 90):.0f})")
    prints = np.array(prints)
    print(f"the best-held prints (frontal photos warped by those homographies) through the pipeline: face found in "
          f"{prints[:, 0].sum()} of {len(prints)}, turned >= {args.turn} iod the prompted way in {prints[:, 1].sum()} "
          f"({100 * prints[:, 1].mean():.0f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
