"""Consistent distillation: stored augmented views of the training crops, each with the teacher's embedding
of that very view, so the target matches what the student sees (a degraded view moves the teacher's
embedding about as far as another photo of the same person does). Training images only; cached.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..paths import cache_dir
from ..preprocess import InputSpec, to_network_input
from .augment import augment_batch, jpeg_roundtrip

TEACHER_SIDE = 192  # crops are enlarged to this before the teacher's own 150 px face alignment


def augmented_views(crops: np.ndarray, n_views: int, seed: int, strength: float = 1.0) -> np.ndarray:
    """(V, N, H, W, C) uint8: ``n_views`` augmented copies of each crop, the training augmentation."""
    rng = np.random.default_rng(seed + 123)
    generator = torch.Generator().manual_seed(seed + 123)
    views = np.zeros((n_views,) + crops.shape, np.uint8)
    for v in range(n_views):
        for start in range(0, len(crops), 512):
            chunk = jpeg_roundtrip(crops[start:start + 512], rng, 0.2 * strength)
            x = augment_batch(torch.from_numpy(to_network_input(chunk)), generator, strength)
            views[v, start:start + 512] = ((x.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255)
    return views


def face_box_in_crop(spec: InputSpec, side: int) -> tuple[int, int, int, int]:
    """Where crop_face put the detected (square) face box, in a crop enlarged to ``side``: (top, right,
    bottom, left), dlib's order."""
    box = side / (1 + 2 * spec.margin)
    left, top = (side - box) / 2, (side - box) / 2 - spec.shift_y * box
    return int(top), int(left + box), int(top + box), int(left)


def _teacher_chunk(args) -> np.ndarray:
    crops, spec = args
    from ..peer import import_face_recognition  # noqa: PLC0415 - in the worker process
    fr = import_face_recognition()
    location = [face_box_in_crop(spec, TEACHER_SIDE)]
    out = np.zeros((len(crops), 128), np.float32)
    for i, crop in enumerate(crops):
        big = cv2.resize(crop, (TEACHER_SIDE, TEACHER_SIDE), interpolation=cv2.INTER_CUBIC)
        out[i] = fr.face_encodings(cv2.cvtColor(big, cv2.COLOR_BGR2RGB), location)[0]
    return out


def teacher_on_crops(crops: np.ndarray, spec: InputSpec, workers: int = 1, desc: str = "teacher views") -> np.ndarray:
    """The teacher's 128-d embedding of each (N, H, W, 3) crop, at the face box the crop was framed on."""
    chunks = [(crops[s:s + 256], spec) for s in range(0, len(crops), 256)]
    with ProcessPoolExecutor(max(1, workers)) as pool:
        parts = list(tqdm(pool.map(_teacher_chunk, chunks), total=len(chunks), desc=desc, unit="chunk"))
    return np.concatenate(parts) if parts else np.zeros((0, 128), np.float32)


def cached_teacher_views(crops: np.ndarray, spec: InputSpec, n_views: int, seed: int,
                         workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(views (V,N,H,W,C) uint8, teacher embeddings (V,N,128)), computed once and kept in the cache."""
    views = augmented_views(crops, n_views, seed)
    key = hashlib.sha256(views.tobytes()).hexdigest()[:20]
    target = cache_dir() / "teacher" / f"views_{key}.npy"
    if target.is_file():
        return views, np.load(target)
    embeddings = teacher_on_crops(views.reshape((-1,) + crops.shape[1:]), spec, workers)
    embeddings = embeddings.reshape(n_views, len(crops), 128)
    target.parent.mkdir(parents=True, exist_ok=True)
    np.save(target.with_suffix(".tmp.npy"), embeddings)
    target.with_suffix(".tmp.npy").replace(target)
    return views, embeddings
