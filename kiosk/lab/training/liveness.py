"""Training and measuring the liveness detector on NUAA, split by person, never by frame.

Leave-one-person-out cross-validation on the 9 people of ``../shared/datasets/nuaa``: each person's frames are
scored by a model trained on the other 8. The threshold is fitted on all those held-out scores together (where
the loss on unseen people comes from), then the shipped model is trained on all 9 people with the same
settings. Figures follow ISO/IEC 30107-3: APCER (attacks accepted as live), BPCER (live people refused), ACER
(their mean).
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from kiosk.errors import DatasetError, KioskError
from kiosk.io.imageio import read_image
from kiosk.lab.datasets import read_csv_text
from kiosk.lab.metrics import auc
from kiosk.rules.decision import LIVENESS_THRESHOLD_RANGE, FusionParams, fuse_liveness
from kiosk.vision.detection import HaarFaceDetector
from kiosk.vision.liveness import FEATURE_DIM, LivenessModel, texture_features

log = logging.getLogger(__name__)


@dataclass
class LabelledFrames:
    paths: list[Path]
    live: np.ndarray        # (N,) bool
    group: np.ndarray       # (N,) person (the image's folder name: NUAA's subject)
    features: np.ndarray    # (N, FEATURE_DIM) float32, zeros where no face
    found: np.ndarray       # (N,) bool: a face was detected


def read_labels(csv_file: str | Path) -> list[tuple[Path, bool, str, str]]:
    """``path,label[,attempt]`` (1 = live, 0 = attack), paths relative to the CSV's folder -> (path, live,
    person: the image's folder name, attempt: '' where none is given).

    Read as the pairs CSV is (kiosk.lab.datasets.read_csv_text): a FIFO, a device or a file over 64 MB is
    refused at once, and so are NUL bytes, text that is not UTF-8, a field over the csv module's limit and a
    file with no frames after its header, each with a DatasetError naming the line (exit 2 at the CLI)."""
    csv_file = Path(csv_file)
    header = "a header 'path,label' (and optionally ',attempt')"
    reader = csv.reader(io.StringIO(read_csv_text(csv_file, header), newline=""))
    folder = csv_file.parent.resolve()
    out: list[tuple[Path, bool, str, str]] = []
    seen_header = False
    try:
        for row in reader:
            line = reader.line_num
            if not any(field.strip() for field in row):
                continue  # blank line
            if not seen_header:
                if [field.strip() for field in row[:2]] != ["path", "label"]:
                    raise DatasetError(f"{csv_file}: line {line}: needs {header}")
                seen_header = True
                continue
            if len(row) < 2 or row[1].strip() not in ("0", "1") or not row[0].strip():
                raise DatasetError(f"{csv_file}: line {line}: expected path,label with label 0 or 1")
            try:
                path = (folder / row[0].strip()).resolve()
            except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long
                raise DatasetError(f"{csv_file}: line {line}: {row[0]!r} cannot be resolved ({exc})") from None
            if folder not in path.parents:
                raise DatasetError(f"{csv_file}: line {line}: {row[0]!r} leaves the CSV's folder")
            attempt = row[2].strip() if len(row) > 2 else ""
            out.append((path, row[1].strip() == "1", Path(row[0].strip()).parent.name, attempt))
    except csv.Error as exc:  # a quote left open, a field over the size limit
        raise DatasetError(f"{csv_file}: line {reader.line_num}: malformed CSV ({exc})") from None
    if not out:
        raise DatasetError(f"{csv_file}: no frames after the header; it needs rows path,label")
    return out


def measure(labels: str | Path | list[tuple[Path, bool, str, str]], crop_scale: float = 1.0,
            detector: HaarFaceDetector | None = None) -> LabelledFrames:
    """Detect the face in each frame (the kiosk's own detector) and measure its texture. ``labels``: a label
    CSV, or its rows as :func:`read_labels` gives them."""
    detector = detector or HaarFaceDetector()
    rows = read_labels(labels) if isinstance(labels, (str, Path)) else list(labels)
    features = np.zeros((len(rows), FEATURE_DIM), np.float32)
    found = np.zeros(len(rows), bool)
    for i, (path, *_) in enumerate(tqdm(rows, desc="liveness: frames", unit="img", leave=False)):
        try:
            frame = read_image(path)
        except KioskError as exc:
            log.warning("%s", exc)
            continue
        box = detector.detect(frame).primary
        if box is not None:
            features[i], found[i] = texture_features(frame, box, crop_scale), True
    return LabelledFrames([r[0] for r in rows], np.array([r[1] for r in rows]), np.array([r[2] for r in rows]),
                          features, found)


def fit(features: np.ndarray, live: np.ndarray, weight_decay: float = 1e-2) -> tuple:
    """Class-balanced logistic regression on standardised features: (mean, scale, weights, bias)."""
    mean = features.mean(0)
    scale = features.std(0) + 1e-6
    x = torch.from_numpy((features - mean) / scale)
    y = torch.from_numpy(live.astype(np.float32))
    balance = torch.where(y > 0, 0.5 / y.mean(), 0.5 / (1 - y.mean()))
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    optimiser = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = (F.binary_cross_entropy_with_logits(x @ w + b, y, reduction="none") * balance).mean()
        loss = loss + weight_decay * (w ** 2).sum() / 2
        loss.backward()
        return loss

    optimiser.step(closure)
    return mean, scale, w.detach().numpy(), float(b.detach())


def model_from(params: tuple, threshold: float = 0.5, crop_scale: float = 1.0, metadata: dict | None = None):
    mean, scale, weights, bias = params
    return LivenessModel(mean.astype(np.float32), scale.astype(np.float32), weights.astype(np.float32), bias,
                         threshold, crop_scale, metadata)


def rates(p_live: np.ndarray, live: np.ndarray, threshold: float) -> dict:
    """ISO/IEC 30107-3 at one threshold (accept as live when P(live) >= threshold)."""
    accepted = p_live >= threshold
    apcer = float(accepted[~live].mean()) if (~live).any() else 0.0
    bpcer = float((~accepted[live]).mean()) if live.any() else 0.0
    return {"apcer": apcer, "bpcer": bpcer, "acer": (apcer + bpcer) / 2}


def best_threshold(p_live: np.ndarray, live: np.ndarray) -> float:
    """The threshold with the lowest ACER (midway between neighbouring scores; the middle one of ties)."""
    s = np.unique(p_live)
    candidates = np.r_[(s[1:] + s[:-1]) / 2.0] if len(s) > 1 else s
    acer = np.array([rates(p_live, live, t)["acer"] for t in candidates])
    best = np.nonzero(acer <= acer.min() + 1e-12)[0]
    return float(np.clip(candidates[best[len(best) // 2]], 0.01, 0.99))


def nuaa_recording(path: Path) -> tuple[str, int] | None:
    """NUAA's file names, <subject>_<glasses>_<position>_<session>_<frame>: (the recording, the frame number),
    or None for a name that does not follow them."""
    parts = Path(path).stem.split("_")
    return ("_".join(parts[:4]), int(parts[4])) if len(parts) == 5 and parts[4].isdigit() else None


def attempt_windows(frames: LabelledFrames, p_live: np.ndarray, size: int) -> dict | None:
    """Kiosk-like attempts: every run of ``size`` consecutive frames (by frame number) of one recording, fused as
    the kiosk fuses them (kiosk.rules.decision.fuse_liveness). None where the file names give no recordings."""
    keys = [nuaa_recording(path) for path in frames.paths]
    if any(k is None for k in keys):
        return None
    recordings: dict[tuple[str, bool], list[tuple[int, int]]] = {}
    for i, (key, live) in enumerate(zip(keys, frames.live)):
        if frames.found[i]:
            recordings.setdefault((key[0], bool(live)), []).append((key[1], i))
    fused, labels, people = [], [], []
    for (_, live), members in recordings.items():
        order = [i for _, i in sorted(members)]
        for start in range(len(order) - size + 1):
            fused.append(fuse_liveness([float(p_live[i]) for i in order[start:start + size]]))
            labels.append(live)
            people.append(str(frames.group[order[start]]))
    return {"frames_per_attempt": size, "attempts": len(fused), "recordings": len(recordings),
            "fused_scores": np.array(fused), "live": np.array(labels, bool), "person": np.array(people)}


def leave_people_out(frames: LabelledFrames, weight_decay: float = 1e-2) -> dict:
    """Held-out P(live) of every detected frame, each from the model trained without that person."""
    usable = frames.found
    scores = np.full(len(frames.paths), np.nan)
    for person in sorted(set(frames.group[usable])):
        held = usable & (frames.group == person)
        train = usable & ~held
        params = fit(frames.features[train], frames.live[train], weight_decay)
        scores[held] = model_from(params).probability(frames.features[held])
    ok = usable
    threshold = best_threshold(scores[ok], frames.live[ok])
    pooled = rates(scores[ok], frames.live[ok], threshold)
    per_person = {}
    blind = []  # each person judged at the threshold fitted on the OTHER people's held-out scores
    for person in sorted(set(frames.group[ok])):
        mine = ok & (frames.group == person)
        others = ok & ~mine
        t_other = best_threshold(scores[others], frames.live[others])
        per_person[person] = rates(scores[mine], frames.live[mine], threshold)
        blind.append((scores[mine] >= t_other, frames.live[mine]))
    accepted = np.concatenate([a for a, _ in blind])
    live = np.concatenate([b for _, b in blind])
    blind_apcer, blind_bpcer = float(accepted[~live].mean()), float((~accepted[live]).mean())
    # the admin page's estimates of APCER / BPCER: a grid, and the chosen threshold itself
    grid = np.union1d(np.round(np.linspace(*LIVENESS_THRESHOLD_RANGE, 99), 4), [threshold])
    roc = [{"threshold": float(t), **{k: v for k, v in rates(scores[ok], frames.live[ok], t).items() if k != "acer"}}
           for t in grid]
    windows = attempt_windows(frames, scores, FusionParams().frames)
    attempts = None
    if windows is not None:  # the same held-out scores, fused over attempts as the kiosk does
        fused, live, people = windows.pop("fused_scores"), windows.pop("live"), windows.pop("person")
        mine_rates = {p: rates(fused[people == p], live[people == p], threshold) for p in sorted(set(people))}
        attempts = {**windows, **rates(fused, live, threshold), "attacks_accepted": int((fused[~live] >= threshold).sum()),
                    "attack_attempts": int((~live).sum()), "live_refused": int((fused[live] < threshold).sum()),
                    "live_attempts": int(live.sum()), "per_person": mine_rates,
                    "worst_person_apcer": max(r["apcer"] for r in mine_rates.values()),
                    "worst_person_bpcer": max(r["bpcer"] for r in mine_rates.values())}
    return {"threshold": threshold, **pooled, "auc": auc(scores[ok], frames.live[ok]), "roc": roc, "attempts": attempts,
            "threshold_from_other_people": {"apcer": blind_apcer, "bpcer": blind_bpcer,
                                            "acer": (blind_apcer + blind_bpcer) / 2},
            "per_person": per_person, "frames": int(ok.sum()), "missed_faces": int((~frames.found).sum()),
            "live": int(frames.live[ok].sum()), "attacks": int((~frames.live[ok]).sum())}


def evaluate_frames(model: LivenessModel, frames: LabelledFrames, attempts: list[str] | None = None) -> dict:
    """Figures at the model's threshold: per frame (frames without a detected face are left out and counted)
    and, given each frame's attempt, per attempt (its least live frame, as the kiosk fuses them)."""
    ok = frames.found
    p = model.probability(frames.features[ok]) if ok.any() else np.zeros(0)
    live = frames.live[ok]
    result = {"images": len(frames.paths), "missed_faces": int((~ok).sum()), "threshold": model.threshold,
              **rates(p, live, model.threshold), "auc": auc(p, live) if live.any() and (~live).any() else float("nan")}
    if attempts is not None:
        keys = np.array(attempts)[ok]
        fused, fused_live = [], []
        for key in sorted(set(keys) - {""}):
            mine = keys == key
            fused.append(fuse_liveness(list(p[mine])))
            fused_live.append(bool(live[mine].all()))
        result["attempts"] = {"count": len(fused), **rates(np.array(fused), np.array(fused_live), model.threshold)}
    return result


def train_liveness(csv_file: str | Path, out: Path, crop_scale: float = 1.0, weight_decay: float = 1e-2) -> dict:
    frames = measure(csv_file, crop_scale)
    cv = leave_people_out(frames, weight_decay)
    params = fit(frames.features[frames.found], frames.live[frames.found], weight_decay)
    metadata = {"data": "NUAA Photograph Imposter Database, subjects 0001-0009 (../shared/datasets/nuaa)",
                "protocol": "leave one person out; threshold fitted on all held-out scores (lowest ACER)",
                "features": "uniform LBP (P=8, R=1) of Y Cr Cb H S V + 16-bin chroma histograms of Cr Cb H S, "
                            "Hellinger, on the 64x64 face crop",
                "crop_scale": crop_scale, "weight_decay": weight_decay, "cross_validation": cv}
    metadata["roc"] = cv.pop("roc")  # held-out people's rates at each threshold: what the admin page shows
    model_from(params, cv["threshold"], crop_scale, metadata).save(out)
    return metadata
