"""Training the Siamese head on the frozen pretrained twin encoder, choosing it, calibrating the threshold.

The twin encoder is dlib's face ResNet (tied weights: one module embeds both faces). On top of it, Koch
et al.'s head (a learned weighted L1 distance, a sigmoid, pair cross-entropy) is trained on training people
only: the CelebA subset and LFW people outside every fold used for validation or reporting. It is compared
on validation pairs (LFW folds 6-10, people never trained on) with plain Euclidean distance (dlib's own
rule) made a probability by the same sigmoid; the better ships. Flip averaging is measured the same way.
LFW folds 1-5 are never read here.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from kiosk.lab.datasets import Pair, read_lfw_pairs
from kiosk.lab.featurecache import build_feature_cache
from kiosk.lab.metrics import auc, fold_accuracy, rates_at, roc_table, tar_at_far, threshold_for_far
from kiosk.lab.training.split import build_training_set
from kiosk.vision.engine import FaceEngine
from kiosk.vision.face_resnet import dlib_resnet_path, load_dlib_face_resnet
from kiosk.vision.model import SiameseNet
from kiosk.vision.preprocess import InputSpec
from kiosk.vision.weights import load_weights, save_weights

log = logging.getLogger(__name__)

# The rules, fixed before any run: the head with the higher TAR at FAR 1 % on the validation pairs ships
# (AUC breaks a tie); flip averaging (twice the encoder time per frame) only if it adds at least 1 point.
FLIP_MIN_GAIN = 0.01


@dataclass
class HeadConfig:
    dataset_dirs: list[str]
    lfw_root: str
    pairs_file: str
    report_folds: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    validation_folds: list[int] = field(default_factory=lambda: [6, 7, 8, 9, 10])
    positives_per_identity: int = 40   # same-person training pairs drawn per identity (at most)
    negatives_per_positive: int = 1
    epochs: int = 300                  # full-batch Adam steps
    lr: float = 0.05
    weight_decay: float = 1e-4
    target_far: float = 0.01           # the default threshold's false-accept rate on validation pairs
    seed: int = 0


def training_pairs(labels: np.ndarray, usable: np.ndarray, config: HeadConfig) -> tuple[np.ndarray, np.ndarray]:
    """(index pairs (M, 2), same (M,)): same-person pairs within each identity, random different-person pairs."""
    rng = np.random.default_rng(config.seed)
    by_identity: dict[int, list[int]] = {}
    for i in np.nonzero(usable)[0]:
        by_identity.setdefault(int(labels[i]), []).append(int(i))
    positives = []
    for members in by_identity.values():
        if len(members) < 2:
            continue
        all_pairs = [(a, b) for k, a in enumerate(members) for b in members[k + 1:]]
        take = rng.choice(len(all_pairs), min(len(all_pairs), config.positives_per_identity), replace=False)
        positives += [all_pairs[t] for t in take]
    pool = np.nonzero(usable)[0]
    negatives = []
    while len(negatives) < len(positives) * config.negatives_per_positive:
        a, b = rng.choice(pool, 2, replace=False)
        if labels[a] != labels[b]:
            negatives.append((int(a), int(b)))
    pairs = np.array(positives + negatives)
    same = np.r_[np.ones(len(positives), bool), np.zeros(len(negatives), bool)]
    return pairs, same


def fit_head(model: SiameseNet, features: np.ndarray, pairs: np.ndarray, same: np.ndarray,
             config: HeadConfig) -> float:
    """Pair cross-entropy on the head's parameters only (the encoder is frozen); returns the final loss."""
    torch.manual_seed(config.seed)
    head = model.distance_weights
    with torch.no_grad():  # start from "farther apart = less alike"
        head.weight.fill_(-1.0 if model.head == "euclidean" else -0.1)
        head.bias.fill_(0.5 if model.head == "euclidean" else 1.0)
    f = torch.from_numpy(features)
    a, b = f[pairs[:, 0]], f[pairs[:, 1]]
    y = torch.from_numpy(same.astype(np.float32))
    optimiser = torch.optim.Adam(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss = torch.tensor(0.0)
    for _ in range(config.epochs):
        optimiser.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model.logit_from_features(a, b), y)
        loss.backward()
        optimiser.step()
    return float(loss.detach())


@dataclass
class PairSet:
    """Pairs over a list of images, with the images' features."""

    pairs: list[Pair]
    features: np.ndarray
    index: dict

    def scores(self, model: SiameseNet) -> np.ndarray:
        a = torch.from_numpy(self.features[[self.index[p.left] for p in self.pairs]])
        b = torch.from_numpy(self.features[[self.index[p.right] for p in self.pairs]])
        with torch.inference_mode():
            return model.similarity(a, b).numpy().astype(float)

    @property
    def same(self) -> np.ndarray:
        return np.array([p.same for p in self.pairs])

    @property
    def folds(self) -> np.ndarray:
        return np.array([p.fold for p in self.pairs])


def validation_summary(scores: np.ndarray, val: PairSet, target_far: float) -> dict:
    same = val.same
    threshold = threshold_for_far(scores, same, target_far)
    far, frr = rates_at(scores, same, threshold)
    accuracy, accuracy_std, _ = fold_accuracy(scores, same, val.folds)
    return {"pairs": len(same), "auc": auc(scores, same), "tar_at_far_1e-2": tar_at_far(scores, same, 1e-2),
            "tar_at_far_1e-3": tar_at_far(scores, same, 1e-3), "accuracy": accuracy, "accuracy_std": accuracy_std,
            "threshold": threshold, "far": far, "frr": frr}


def _engine(head: str, flip_average: bool, sha: str) -> FaceEngine:
    model = SiameseNet("dlib_resnet", {"source_sha256": sha}, head)
    return FaceEngine(loaded=(model, InputSpec(), {"threshold": 0.5, "flip_average": flip_average}),
                      liveness_weights=None)  # features only: no liveness check


def train_head(config: HeadConfig, out_path: Path) -> dict:
    if set(config.report_folds) & set(config.validation_folds):
        raise ValueError("validation folds must not overlap the reported folds")
    _, sha = load_dlib_face_resnet()
    ts = build_training_set([Path(d) for d in config.dataset_dirs], Path(config.lfw_root), Path(config.pairs_file),
                            config.report_folds, config.validation_folds)
    val_pairs = read_lfw_pairs(config.pairs_file, config.lfw_root, config.validation_folds)
    val_paths = sorted({p for pair in val_pairs for p in (pair.left, pair.right)})
    labels = np.array(ts.labels)
    log.info("training people: %d identities, %d images; validation: %d pairs", len(ts.identities), len(ts.paths),
             len(val_pairs))
    results, candidates = {}, {}
    for flip in (False, True):
        engine = _engine("weighted_l1", flip, sha)
        train_cache = build_feature_cache(ts.paths, engine, fallback=None, desc=f"training faces (flip {flip})")
        val_cache = build_feature_cache(val_paths, engine, desc=f"validation faces (flip {flip})")
        usable = train_cache.readable & train_cache.detected  # training learns from detected faces only
        pairs, same = training_pairs(labels, usable, config)
        val = PairSet(val_pairs, val_cache.features, val_cache.index())
        for head in ("weighted_l1", "euclidean"):
            model = SiameseNet("dlib_resnet", {"source_sha256": sha}, head) if head != "weighted_l1" else engine.model
            loss = fit_head(model, train_cache.features, pairs, same, config)
            name = f"{head}{'+flip' if flip else ''}"
            results[name] = dict(validation_summary(val.scores(model), val, config.target_far), training_loss=loss)
            candidates[name] = (model, val)
            log.info("%s: %s", name, results[name])
        results[f"training_pairs{'+flip' if flip else ''}"] = {"pairs": int(len(same)), "same": int(same.sum()),
                                                                "images_usable": int(usable.sum())}

    def rank(name: str) -> tuple[float, float]:
        return results[name]["tar_at_far_1e-2"], results[name]["auc"]

    plain = max(("weighted_l1", "euclidean"), key=rank)
    flipped = plain + "+flip"
    chosen = flipped if results[flipped]["tar_at_far_1e-2"] >= results[plain]["tar_at_far_1e-2"] + FLIP_MIN_GAIN \
        else plain
    model, val = candidates[chosen]
    scores = val.scores(model)
    summary = results[chosen]
    metadata = {
        "threshold": summary["threshold"],
        "flip_average": chosen.endswith("+flip"),
        "description": f"dlib ResNet twin encoder (frozen, tied) + {model.head} head",
        "encoder_source": {"package": "face_recognition_models", "file": dlib_resnet_path().name, "sha256": sha,
                           "licence": "public domain (dlib-models) / CC0 1.0 (package)"},
        "validation": dict(summary, folds=config.validation_folds,
                           people="LFW validation folds, none of them trained on"),
        "roc": roc_table(scores, val.same),
        "roc_source": "validation pairs (people of LFW folds 6-10, not trained on)",
        "selection": {"chosen": chosen, "rule": "higher validation TAR at FAR 1 % (AUC breaks ties); flip "
                      f"averaging only for a gain of at least {FLIP_MIN_GAIN:.0%}", "candidates": results},
        "training": {"config": asdict(config), "identities": len(ts.identities), "images": len(ts.paths),
                     "excluded_lfw_people": len(ts.excluded_people)},
    }
    save_weights(out_path, model, InputSpec(), metadata, half=False)
    log.info("wrote %s: %s, threshold %.4f (validation FAR %.4f, FRR %.4f)", out_path, chosen,
             metadata["threshold"], summary["far"], summary["frr"])
    return metadata


def recalibrate(weights_path: Path, out_path: Path, target_far: float, lfw_root: Path, pairs_file: Path) -> dict:
    """A new default threshold (and ROC) for trained weights, for another false-accept rate on the same
    validation pairs (the folds the weights name); the head itself is unchanged."""
    model, spec, metadata = load_weights(weights_path)
    folds = list(metadata.get("validation", {}).get("folds") or HeadConfig([], "", "").validation_folds)
    if set(folds) & set(metadata.get("training", {}).get("config", {}).get("report_folds", [1, 2, 3, 4, 5])):
        raise ValueError("the weights' validation folds overlap the reported folds")
    engine = FaceEngine(loaded=(model, spec, metadata), liveness_weights=None)
    pairs = read_lfw_pairs(pairs_file, lfw_root, folds)
    cache = build_feature_cache(sorted({p for pair in pairs for p in (pair.left, pair.right)}), engine,
                                desc="validation faces")
    val = PairSet(pairs, cache.features, cache.index())
    scores = val.scores(model)
    summary = validation_summary(scores, val, target_far)
    metadata = dict(metadata, threshold=summary["threshold"], roc=roc_table(scores, val.same),
                    validation=dict(metadata.get("validation", {}), **summary, target_far=target_far))
    save_weights(out_path, model, spec, metadata, half=False)
    return metadata
