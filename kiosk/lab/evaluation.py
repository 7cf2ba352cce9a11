"""Scoring pair lists with our model or the peer, under one missed-face rule, and summarising them.

Missed-face rule (the same for every model): an image where the model's own detector finds no face is
aligned from the dataset's fixed face framing (LFW-style centring) and still scored; the count is reported.
An unreadable file scores as a rejection and is reported.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kiosk.errors import KioskError
from kiosk.io.imageio import read_image
from kiosk.lab.datasets import Pair
from kiosk.lab.diskcache import cache_path, load_arrays, save_arrays
from kiosk.lab.featurecache import build_feature_cache
from kiosk.lab.metrics import rates_at, summarise
from kiosk.vision.engine import FaceEngine

log = logging.getLogger(__name__)


def _unique_paths(pairs: list[Pair]) -> list[Path]:
    return sorted({p for pair in pairs for p in (pair.left, pair.right)})


def _pair_scores(features: np.ndarray, ok: np.ndarray, index: dict, pairs: list[Pair], similarity, worst: float):
    a = np.array([index[p.left] for p in pairs])
    b = np.array([index[p.right] for p in pairs])
    scores = np.asarray(similarity(features[a], features[b]), float).reshape(-1)
    scores[~(ok[a] & ok[b])] = worst
    return scores


def score_pairs_ours(engine: FaceEngine, pairs: list[Pair], desc: str = "ours") -> tuple[np.ndarray, dict]:
    paths = _unique_paths(pairs)
    cache = build_feature_cache(paths, engine, desc=f"{desc}: faces")
    scores = _pair_scores(cache.features, cache.readable, cache.index(), pairs, engine.similarity, 0.0)
    return scores, {"images": len(paths), "missed_faces": int((~cache.detected & cache.readable).sum()),
                    "unreadable": int((~cache.readable).sum())}


def peer_features(peer, paths: list[Path], desc: str = "peer") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, readable, detected) for each path, cached on disk like our face crops."""
    target = cache_path("peer", (peer.name, peer.upsample, [str(p) for p in paths]))
    cached = load_arrays(target, ("features", "readable", "detected"))
    if cached is not None:
        return cached["features"], cached["readable"], cached["detected"]
    features = np.zeros((len(paths), 128), np.float32)
    readable = np.zeros(len(paths), bool)
    detected = np.zeros(len(paths), bool)
    for i, path in enumerate(tqdm(paths, desc=f"{desc}: faces", unit="img")):
        try:
            features[i], detected[i] = peer.embed(read_image(path))
        except KioskError as exc:
            log.warning("%s", exc)
            continue
        readable[i] = True
    save_arrays(target, features=features, readable=readable, detected=detected)
    return features, readable, detected


def score_pairs_peer(peer, pairs: list[Pair], desc: str = "peer") -> tuple[np.ndarray, dict]:
    paths = _unique_paths(pairs)
    features, readable, detected = peer_features(peer, paths, desc)
    scores = _pair_scores(features, readable, {p: i for i, p in enumerate(paths)}, pairs, peer.similarity, -10.0)
    return scores, {"images": len(paths), "missed_faces": int((~detected & readable).sum()),
                    "unreadable": int((~readable).sum())}


def report(scores: np.ndarray, pairs: list[Pair], stats: dict, default_threshold: float | None = None) -> dict:
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    result = summarise(scores, same, folds)
    result.update(missed_faces=stats["missed_faces"], unreadable=stats["unreadable"], images=stats["images"],
                  folds=sorted({int(f) for f in folds}))
    if default_threshold is not None:
        far, frr = rates_at(scores, same, default_threshold)
        result.update(default_threshold=default_threshold, far_at_default=far, frr_at_default=frr)
    return result
