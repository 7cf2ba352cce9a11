"""Training the Siamese face model: Koch's pair cross-entropy, plus optional hard negatives and
distillation from the face_recognition peer (training images only).

Checkpoints every epoch (model, optimiser, schedule, generator state) so an interrupted run resumes.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from ..datasets import Pair, read_lfw_pairs
from ..detection import HaarFaceDetector
from ..engine import embed_crops
from ..facecache import build_face_cache
from ..metrics import auc, best_accuracy_threshold, rates_at, roc_table, threshold_for_far
from ..model import SiameseNet
from ..preprocess import InputSpec, to_network_input
from ..weights import load_weights, save_weights
from .augment import augment_batch, jpeg_roundtrip
from .split import build_training_set

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    dataset_dirs: list[str]
    lfw_root: str | None
    pairs_file: str | None
    report_folds: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    validation_folds: list[int] = field(default_factory=lambda: [10])
    encoder: str = "compact"
    encoder_options: dict = field(default_factory=lambda: {"widths": [32, 64, 96, 160], "feature_dim": 128})
    input_size: int = 64
    epochs: int = 40
    identities_per_batch: int = 16   # each with 2 images: the positive pairs
    extra_images: int = 32           # random images: more negatives (singletons too)
    lr: float = 2e-3
    weight_decay: float = 5e-4
    hard_negatives: bool = True
    distill: float = 1.0             # weight of the distillation loss: MSE to the standardised teacher (0 = off)
    augment: float = 1.0             # augmentation strength (0 = off)
    target_far: float = 0.01         # the default threshold's false-accept rate on validation pairs
    flip_average: bool = False       # average features of each crop and its mirror image at inference
    detect_max_side: int = 320       # detection shrinks larger images to this (the shipped model's crops: 320)
    seed: int = 0
    threads: int | None = None
    max_steps: int | None = None     # smoke tests: stop after this many steps


def pair_loss(model: SiameseNet, f: torch.Tensor, labels: torch.Tensor, n_anchor: int, hard: bool,
              generator: torch.Generator) -> torch.Tensor:
    """Koch's objective: BCE on balanced same/different pairs through the weighted-L1 sigmoid head.
    The first n_anchor images come in same-identity couples (0,1), (2,3), ..."""
    anchors = torch.arange(n_anchor)
    partners = anchors ^ 1
    pos_logits = model.logit_from_features(f[anchors], f[partners])
    different = labels[anchors, None] != labels[None, :]
    random_scores = torch.rand(different.shape, generator=generator).masked_fill(~different, -1)
    rand_neg = random_scores.argmax(1)
    neg_logits = [model.logit_from_features(f[anchors], f[rand_neg])]
    if hard:  # the most similar other person in the batch, under the current head
        with torch.no_grad():
            diff = (f[anchors, None, :] - f[None, :, :]).abs()
            all_logits = model.distance_weights(diff).squeeze(-1).masked_fill(~different, -math.inf)
        neg_logits.append(model.logit_from_features(f[anchors], f[all_logits.argmax(1)]))
    negs = torch.cat(neg_logits)
    return 0.5 * (F.binary_cross_entropy_with_logits(pos_logits, torch.ones_like(pos_logits))
                  + F.binary_cross_entropy_with_logits(negs, torch.zeros_like(negs)))


class BatchSampler:
    """Per batch: P identities x 2 images (positive couples) + R random images (more negatives)."""

    def __init__(self, labels: np.ndarray, identities_per_batch: int, extra_images: int):
        self.labels = labels
        by_id: dict[int, list[int]] = {}
        for i, label in enumerate(labels):
            by_id.setdefault(int(label), []).append(i)
        self.multi = [np.array(v) for v in by_id.values() if len(v) >= 2]
        self.p, self.r = identities_per_batch, extra_images

    def steps_per_epoch(self) -> int:
        return max(1, len(self.labels) // (2 * self.p + self.r))

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        chosen = rng.choice(len(self.multi), self.p, replace=False)
        couples = np.concatenate([rng.choice(self.multi[k], 2, replace=False) for k in chosen])
        return np.concatenate([couples, rng.choice(len(self.labels), self.r, replace=False)])


def _atomic_save(obj, path: Path):
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def validation_scores(model: SiameseNet, crops: np.ndarray, index: dict, pairs: list[tuple[Path, Path]],
                      flip_average: bool = False) -> np.ndarray:
    model.eval()
    feats = torch.from_numpy(embed_crops(model, crops, flip_average))
    a = torch.tensor([index[p] for p, _ in pairs])
    b = torch.tensor([index[q] for _, q in pairs])
    with torch.inference_mode():
        return model.similarity(feats[a], feats[b]).numpy()


def validation_pairs(official: list[Pair], paths_by_person: dict[str, list[Path]], seed: int,
                     negatives: int = 20000, max_per_person: int = 20) -> tuple[list[tuple[Path, Path]], np.ndarray]:
    """The official validation-fold pairs plus same-person pairs and many random different-person
    pairs among the validation people (more pairs -> a steadier 1% false-accept threshold)."""
    rng = np.random.default_rng(seed)
    pairs = [(p.left, p.right) for p in official]
    same = [p.same for p in official]
    people = sorted(paths_by_person)
    for person in people:  # same-person pairs, at most max_per_person each (some people have hundreds of photos)
        imgs = paths_by_person[person]
        couples = [(i, j) for i in range(len(imgs)) for j in range(i + 1, len(imgs))]
        for k in rng.permutation(len(couples))[:max_per_person]:
            pairs.append((imgs[couples[k][0]], imgs[couples[k][1]]))
            same.append(True)
    for _ in range(negatives):
        a, b = rng.choice(len(people), 2, replace=False)
        pairs.append((rng.choice(paths_by_person[people[a]]), rng.choice(paths_by_person[people[b]])))
        same.append(False)
    return pairs, np.array(same)


def train(config: TrainConfig, out_path: Path, checkpoint_dir: Path, teacher: np.ndarray | None = None,
          resume: bool = True) -> dict:
    """Train, checkpointing each epoch; write the best-validation model with its calibrated threshold."""
    if config.threads:
        torch.set_num_threads(config.threads)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    spec = InputSpec(size=config.input_size)
    ts = build_training_set([Path(d) for d in config.dataset_dirs],
                            Path(config.lfw_root) if config.lfw_root else None,
                            Path(config.pairs_file) if config.pairs_file else None,
                            config.report_folds, config.validation_folds)
    log.info("training on %d images of %d identities; %d LFW people excluded (folds %s reported, %s validation)",
             len(ts.paths), len(ts.identities), len(ts.excluded_people), config.report_folds, config.validation_folds)
    detector = HaarFaceDetector(detect_max_side=config.detect_max_side)
    cache = build_face_cache(ts.paths, spec, detector=detector, desc="training crops")
    labels = np.array(ts.labels)
    if config.distill:
        if teacher is None or len(teacher) != len(ts.paths):
            raise ValueError("distillation needs one teacher embedding per training image")
        # dlib embeddings share a large common component: standardise each dimension so the student
        # learns what tells people apart, not the mean face.
        teacher = (teacher - np.nanmean(teacher, 0)) / (np.nanstd(teacher, 0) + 1e-6)

    val = ValidationSet.build(ts.validation_pairs, spec, config.seed, detector)

    torch.manual_seed(config.seed)
    model = SiameseNet(config.encoder, dict(config.encoder_options, input_size=config.input_size))
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sampler = BatchSampler(labels, config.identities_per_batch, config.extra_images)
    steps_per_epoch = sampler.steps_per_epoch()
    total = config.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / steps_per_epoch) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    generator = torch.Generator().manual_seed(config.seed)
    state = {"epoch": 0, "history": [], "best": None, "seconds": 0.0}

    ckpt = checkpoint_dir / "last.pt"
    if resume and ckpt.is_file():
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        if saved.get("config") == json.dumps(asdict(config), sort_keys=True):
            model.load_state_dict(saved["model"])
            optimiser.load_state_dict(saved["optimiser"])
            schedule.load_state_dict(saved["schedule"])
            generator.set_state(saved["generator"])
            state = json.loads(saved["state"])
            log.info("resumed from %s at epoch %d", ckpt, state["epoch"])
        else:
            log.warning("checkpoint %s is from another configuration; starting afresh", ckpt)

    step = state["epoch"] * steps_per_epoch
    for epoch in range(state["epoch"], config.epochs):
        model.train()
        rng = np.random.default_rng([config.seed, epoch])
        started = time.time()
        sums = {"pair": 0.0, "distill": 0.0}
        n_steps = 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", unit="step", leave=False)
        for _ in bar:
            idx = sampler.sample(rng)
            crops = jpeg_roundtrip(cache.crops[idx], rng, 0.2 * config.augment) if config.augment else cache.crops[idx]
            x = torch.from_numpy(to_network_input(crops))
            if config.augment:
                x = augment_batch(x, generator, config.augment)
            y = torch.from_numpy(labels[idx])
            f = model.embed(x)
            loss = pair_loss(model, f, y, 2 * config.identities_per_batch, config.hard_negatives, generator)
            sums["pair"] += loss.item()
            if config.distill:
                t = torch.from_numpy(teacher[idx])
                ok = ~torch.isnan(t).any(1)
                d_loss = F.mse_loss(f[ok], t[ok])
                sums["distill"] += d_loss.item()
                loss = loss + config.distill * d_loss
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            step += 1
            n_steps += 1
            bar.set_postfix(pair=f"{sums['pair'] / n_steps:.3f}")
            if config.max_steps and step >= config.max_steps:
                break
        scores = val.scores(model)
        official_scores, official_same = scores[:val.n_official], val.same[:val.n_official]
        t = best_accuracy_threshold(official_scores, official_same)
        record = {"epoch": epoch + 1, **{k: v / max(1, n_steps) for k, v in sums.items()},
                  "val_auc": auc(scores, val.same), "val_official_accuracy": float(((official_scores >= t) == official_same).mean()),
                  "seconds": time.time() - started}
        state["history"].append(record)
        state["seconds"] += record["seconds"]
        log.info("epoch %d: %s", epoch + 1, record)
        print(json.dumps(record), flush=True)
        if state["best"] is None or record["val_auc"] >= state["best"]["val_auc"]:
            state["best"] = record
            _atomic_save({"model": model.state_dict()}, checkpoint_dir / "best.pt")
        state["epoch"] = epoch + 1
        _atomic_save({"config": json.dumps(asdict(config), sort_keys=True), "model": model.state_dict(),
                      "optimiser": optimiser.state_dict(),
                      "schedule": schedule.state_dict(), "generator": generator.get_state(),
                      "state": json.dumps(state)}, ckpt)
        if config.max_steps and step >= config.max_steps:
            break

    # The shipped model: best validation AUC; threshold calibrated for the target FAR on validation pairs.
    model.load_state_dict(torch.load(checkpoint_dir / "best.pt", map_location="cpu", weights_only=True)["model"])
    metadata = calibration(model, val, config.target_far, config.validation_folds, config.flip_average)
    metadata["training"] = {"config": asdict(config), "images": len(ts.paths), "identities": len(ts.identities),
                            "excluded_lfw_people": len(ts.excluded_people), "epochs_run": state["epoch"],
                            "seconds": round(state["seconds"], 1), "best_epoch": state["best"]["epoch"],
                            "history": state["history"]}
    save_weights(out_path, model, spec, metadata)
    log.info("wrote %s (threshold %.4f: validation FAR %.4f, FRR %.4f)", out_path, metadata["threshold"],
             metadata["validation"]["far"], metadata["validation"]["frr"])
    return metadata


def calibration(model: SiameseNet, val: "ValidationSet", target_far: float, validation_folds: list[int],
                flip_average: bool) -> dict:
    """The default threshold (false-accept rate <= target on validation pairs) and the ROC table."""
    scores = val.scores(model, flip_average)
    threshold = threshold_for_far(scores, val.same, target_far)
    far, frr = rates_at(scores, val.same, threshold)
    return {
        "threshold": threshold,
        "threshold_rule": f"false-accept rate <= {target_far:g} on validation pairs of LFW folds "
                          f"{validation_folds} people (not trained on)",
        "flip_average": flip_average,
        "validation": {"pairs": int(len(val.same)), "same": int(val.same.sum()), "far": far, "frr": frr,
                       "auc": auc(scores, val.same)},
        "roc": roc_table(scores, val.same),
        "roc_source": "validation pairs (people of LFW validation folds, not trained on)",
    }


def recalibrate(weights_path: Path, flip_average: bool, target_far: float | None = None) -> dict:
    """Re-run the threshold calibration of trained weights (e.g. with flip averaging switched on), with
    the validation folds and seed recorded in their metadata; rewrites the file's metadata only."""
    model, spec, metadata = load_weights(weights_path)
    return save_calibrated(weights_path, model, spec, metadata, flip_average, target_far)


def save_calibrated(out_path: Path, model: SiameseNet, spec: InputSpec, metadata: dict, flip_average: bool,
                    target_far: float | None = None) -> dict:
    """Calibrate the default threshold on the validation pairs named by ``metadata["training"]`` and write
    the weights with the updated metadata; returns it."""
    config = metadata["training"]["config"]
    target_far = config["target_far"] if target_far is None else target_far
    pairs = read_lfw_pairs(Path(config["pairs_file"]), Path(config["lfw_root"]), config["validation_folds"])
    val = ValidationSet.build(pairs, spec, config["seed"])
    metadata.update(calibration(model, val, target_far, config["validation_folds"], flip_average))
    save_weights(out_path, model, spec, metadata)
    return metadata


@dataclass
class ValidationSet:
    """Crops and pairs of the validation people: the official pairs first, then the extra ones."""

    crops: np.ndarray
    index: dict
    pairs: list[tuple[Path, Path]]
    same: np.ndarray
    n_official: int

    @classmethod
    def build(cls, official: list[Pair], spec: InputSpec, seed: int,
              detector: HaarFaceDetector | None = None) -> "ValidationSet":
        people: dict[str, list[Path]] = {}
        for pair in official:
            for p in (pair.left, pair.right):
                people.setdefault(p.parent.name, sorted(p.parent.glob("*.jpg")))
        pairs, same = validation_pairs(official, people, seed)
        cache = build_face_cache(sorted({p for pair in pairs for p in pair}), spec, detector=detector,
                                 desc="validation crops")
        return cls(cache.crops, cache.index(), pairs, same, len(official))

    def scores(self, model: SiameseNet, flip_average: bool = False) -> np.ndarray:
        return validation_scores(model, self.crops, self.index, self.pairs, flip_average)
