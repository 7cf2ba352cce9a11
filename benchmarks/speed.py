"""Speed, side by side in one run: our Siamese pipeline against face_recognition (dlib) on this machine.

Prints the encoder's time per face (batch 1, on the same aligned 150x150 chips: our torch port of dlib's
ResNet against dlib's own) and the whole per-frame pipeline on 640x480 frames built from real LFW photos
(detect, landmarks, warp, liveness, embed, compare with a stored reference), with ratios against the peer.
The liveness check (kiosk.vision.liveness, part of our pipeline; the peer has none) is also timed on its own.

    python benchmarks/speed.py [--frames 60] [--threads N] [--busy-core] [--json OUT]

--threads (torch's) defaults to the app's own rule (kiosk.vision.threads; OpenCV always uses every core).
--busy-core keeps one core busy with another process, as a kiosk PC's GUI, capture thread and whatever else its
owner installed do, and prints the tables for 1 and 2 torch threads, idle and under that load.
"""

from __future__ import annotations

import kiosk.vision  # noqa: F401 (first, as in the app: it sets the OpenMP spin count before torch loads)

# isort: split
import argparse
import contextlib
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from kiosk.lab.peer import FaceRecognitionPeer
from kiosk.paths import DEFAULT_WEIGHTS, datasets_dir
from kiosk.vision.engine import FaceEngine
from kiosk.vision.threads import app_threads, opencv_threads, set_threads


def make_frames(count: int, seed: int = 0) -> list[np.ndarray]:
    """640x480 webcam-like frames: an LFW photo scaled to a kiosk-distance face on a blurred backdrop."""
    rng = np.random.default_rng(seed)
    photos = sorted((datasets_dir() / "lfw" / "lfw-deepfunneled").glob("*/*_0001.jpg"))
    frames = []
    for i in range(count):
        photo = cv2.imread(str(photos[int(rng.integers(len(photos)))]))
        frame = cv2.resize(cv2.GaussianBlur(photo, (0, 0), 8), (640, 480))
        side = int(rng.integers(300, 380))
        face = cv2.resize(photo, (side, side))
        x, y = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))
        frame[y:y + side, x:x + side] = face
        frames.append(frame)
    return frames


def timed(fn, items, repeats: int = 1) -> list[float]:
    out = []
    for _ in range(repeats):
        for item in items:
            start = time.perf_counter()
            fn(item)
            out.append((time.perf_counter() - start) * 1000)
    return out


@contextlib.contextmanager
def busy_core():
    """Another process spinning on one core for as long as the block runs."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it take its core
        yield
    finally:
        spinner.kill()
        spinner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the app's rule)")
    parser.add_argument("--busy-core", action="store_true", help="also measure with one core kept busy")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    engine = FaceEngine(args.weights)
    peer = FaceRecognitionPeer()
    frames = make_frames(args.frames)
    default = args.threads or app_threads()
    settings = sorted({1, 2, default}) if args.busy_core else [default]
    figures = {f"idle, {t} torch threads": measure(engine, peer, frames, t, "idle") for t in settings}
    if args.busy_core:
        with busy_core():
            for threads in settings:
                figures[f"busy, {threads} torch threads"] = measure(engine, peer, frames, threads, "one core busy")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def measure(engine: FaceEngine, peer: FaceRecognitionPeer, frames: list[np.ndarray], threads: int, load: str) -> dict:
    """Print and return the table for one thread setting under the machine's present load."""
    set_threads(threads)
    reference_image = cv2.imread(str(datasets_dir() / "lfw/lfw-deepfunneled/Colin_Powell/Colin_Powell_0001.jpg"))
    reference = engine.embed_image(reference_image, check_quality=False)
    peer_reference, _ = peer.embed(reference_image)

    # The encoder per face, batch 1, on chips already aligned (the network only), ours and dlib's.
    analyses = [engine.analyse(f) for f in frames]
    crops = [a.crop for a in analyses if a.crop is not None]
    timed(lambda c: engine.embed_crops(c[None]), crops[:10])  # warm-up
    ours_embed = timed(lambda c: engine.embed_crops(c[None]), crops, repeats=3)
    import dlib  # noqa: PLC0415 (the peer's own network, for the encoder-only row)

    from kiosk.vision.face_resnet import dlib_resnet_path  # noqa: PLC0415
    dlib_net = dlib.face_recognition_model_v1(str(dlib_resnet_path()))
    peer_embed = timed(lambda c: dlib_net.compute_face_descriptor(c), crops)
    rgb_frames = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames]
    peer_items = [b for b in (peer.fr.face_locations(f, 1) for f in rgb_frames) if b]

    # Whole per-frame pipeline: detect, landmarks, warp, liveness (in analyse), embed, compare with the reference.
    def ours_frame(frame):
        analysis = engine.analyse(frame)
        if analysis.crop is not None:
            engine.similarity(engine.embed_crops(analysis.crop[None])[0], reference)

    def peer_frame(rgb):
        boxes = peer.fr.face_locations(rgb, 1)
        if boxes:
            peer.similarity(peer.fr.face_encodings(rgb, boxes[:1])[0], peer_reference)

    # Liveness alone: P(live) from the frame and the face box the pipeline already has (in ours_frame too).
    boxed = [(f, a.box) for f, a in zip(frames, analyses) if a.box is not None]
    liveness = timed(lambda item: engine.liveness.p_live(*item), boxed, repeats=3) if engine.liveness else []

    timed(ours_frame, frames[:5])
    ours_pipeline = timed(ours_frame, frames, repeats=2)
    peer_pipeline = timed(peer_frame, rgb_frames)

    med = statistics.median
    rows = [
        ("encoder per face, batch 1 (ms)", med(ours_embed), med(peer_embed)),
        ("per-frame pipeline 640x480 (ms)", med(ours_pipeline), med(peer_pipeline)),
        ("per-frame pipeline, 90th pct (ms)", float(np.percentile(ours_pipeline, 90)), float(np.percentile(peer_pipeline, 90))),
    ]
    print(f"\n== {load}: machine {platform.processor() or platform.machine()}, {threads} torch threads, "
          f"{opencv_threads()} OpenCV "
          f"({'the app default' if threads == app_threads() else 'not the app default'}), "
          f"torch {torch.__version__}, OpenCV {cv2.__version__}; {len(frames)} frames, "
          f"faces found: ours {len(crops)}, peer {len(peer_items)}")
    print(f"{'':36}{'siamese':>10}{'face_recognition':>18}{'speed-up':>10}")
    for name, ours, theirs in rows:
        print(f"{name:36}{ours:>10.2f}{theirs:>18.2f}{theirs / ours:>9.1f}x")
    if liveness:
        print(f"{'liveness per face (ms), in the pipeline':36}{med(liveness):>10.2f}{'(none)':>18}"
              f"   90th pct {np.percentile(liveness, 90):.2f} ms")
    else:
        print(f"liveness: not measured ({engine.liveness_problem})")
    fps = 1000 / med(ours_pipeline)
    print(f"siamese pipeline: {fps:.0f} frames/s (camera rate needs 30: {'yes' if fps >= 30 else 'NO'})")
    figures = {name: {"siamese_ms": o, "face_recognition_ms": t, "speedup": t / o} for name, o, t in rows}
    if liveness:
        figures["liveness per face (ms)"] = {"siamese_ms": med(liveness), "face_recognition_ms": None}
    return figures


if __name__ == "__main__":
    main()
