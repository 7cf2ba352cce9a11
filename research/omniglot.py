"""Omniglot: reproducing Koch, Zemel & Salakhutdinov (2015)'s one-shot result with the kiosk's SiameseNet.

A second dataset adapter and a training preset for the SAME model code as the face kiosk (SiameseNet with
the "koch" encoder, weighted-L1 distance, one sigmoid unit), not a separate program:

* data: the 105x105 1-bit drawings of ``<datasets>/omniglot`` (see the datasets README), held in RAM as
  uint8 ink masks (1 = ink, 0 = paper); the full split is cached as one .npz in the kiosk cache folder;
* training: verification pairs of background-set characters, balanced same/different, many of the
  different pairs within one alphabet; Koch's random affine distortions applied batch-wise
  (affine_grid/grid_sample); BCE through the weighted-L1 sigmoid head (the model's logits). The preset
  scores every cross pair of a batch of characters (2 drawings each) and keeps the hardest different
  pairs; Adam + L2, warm-up and cosine learning-rate decay; a narrower Koch encoder with BatchNorm on
  80x80 input so that a run fits ~30 minutes on 2 CPU cores (PRESET, docs/OMNIGLOT.md);
* validation: 20-way within-alphabet one-shot accuracy on background alphabets held out of training,
  early stopping on it, the best validated weights kept;
* checkpoints every N steps (model, optimizer, step, every RNG) so an interrupted run resumes exactly;
* test: 20-way within-alphabet one-shot on the 20 evaluation alphabets (Koch's protocol, fixed seed) and
  Lake's 20 official one-shot runs.

See docs/OMNIGLOT.md for the method and what differs from the paper.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from kiosk.errors import DatasetError, KioskError, WeightsError
from kiosk.io.files import atomic_writer, private_dir
from kiosk.lab.diskcache import cache_path, load_arrays, save_arrays
from kiosk.paths import datasets_dir
from kiosk.vision.model import SiameseNet
from kiosk.vision.preprocess import InputSpec
from kiosk.vision.weights import load_weights, save_weights

log = logging.getLogger(__name__)

IMAGE_SIZE = 105
SPLITS = {"background": "images_background", "evaluation": "images_evaluation"}
CHECKPOINT_NAME = "omniglot_checkpoint.pt"
LOG_NAME = "omniglot_train.log"
CACHE_VERSION = 1

# Background alphabets held out of training for validation (model selection / early stopping): eight
# alphabets of 20-26 characters (187 characters, 19% of the background set), each large enough for a
# 20-way within-alphabet episode. The other 22 alphabets (777 characters) are trained on.
VALIDATION_ALPHABETS = (
    "Alphabet_of_the_Magi", "Arcadian", "Balinese", "Early_Aramaic",
    "Futurama", "Greek", "Hebrew", "Syriac_(Estrangelo)",
)

PAPER = {
    "reference": "Koch, Zemel & Salakhutdinov 2015, Siamese Neural Networks for One-shot Image Recognition",
    "way20_oneshot_accuracy": 0.920,
}


def omniglot_root() -> Path:
    """``<datasets>/omniglot`` (datasets folder configurable with KIOSK_DATASETS)."""
    return datasets_dir() / "omniglot"


# ----------------------------------------------------------------------------------------------- data


@dataclass
class OmniglotSet:
    """Drawings of one split (or some of its alphabets) in RAM."""

    images: np.ndarray           # (N, 105, 105) uint8 ink mask: 1 = ink, 0 = paper
    labels: np.ndarray           # (N,) character index into ``characters``
    characters: list[str]        # "Alphabet/characterNN"
    char_alphabet: np.ndarray    # (C,) alphabet index of each character
    alphabets: list[str]

    def __post_init__(self):
        order = np.argsort(self.labels, kind="stable")
        bounds = np.searchsorted(self.labels[order], np.arange(len(self.characters) + 1))
        self.by_char = [order[bounds[c]:bounds[c + 1]] for c in range(len(self.characters))]
        self.by_alphabet = [np.flatnonzero(self.char_alphabet == a) for a in range(len(self.alphabets))]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, alphabets) -> "OmniglotSet":
        """Only the given alphabets (in the order given); raises DatasetError for unknown names."""
        alphabets = list(alphabets)
        missing = [a for a in alphabets if a not in self.alphabets]
        if missing:
            raise DatasetError(f"Omniglot: unknown alphabet(s) {missing}")
        keep_alpha = [self.alphabets.index(a) for a in alphabets]
        chars = [c for a in keep_alpha for c in self.by_alphabet[a]]
        new_char = np.full(len(self.characters), -1, np.int64)
        new_char[chars] = np.arange(len(chars))
        rows = np.concatenate([self.by_char[c] for c in chars]) if chars else np.zeros(0, np.int64)
        remap_alpha = {a: i for i, a in enumerate(keep_alpha)}
        return OmniglotSet(self.images[rows], new_char[self.labels[rows]], [self.characters[c] for c in chars],
                           np.array([remap_alpha[int(self.char_alphabet[c])] for c in chars], np.int64), alphabets)


def _read_ink(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None or image.shape != (IMAGE_SIZE, IMAGE_SIZE):
        raise DatasetError(f"{path}: not a readable {IMAGE_SIZE}x{IMAGE_SIZE} Omniglot image")
    return (image < 128).astype(np.uint8)


def _list_split(root: Path, split: str, alphabets=None) -> list[tuple[str, str, list[Path]]]:
    folder = root / SPLITS[split]
    if not folder.is_dir():
        raise DatasetError(f"{folder}: Omniglot folder not found (set KIOSK_DATASETS to the datasets folder)")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir()) if alphabets is None else list(alphabets)
    entries = []
    for alphabet in names:
        if not (folder / alphabet).is_dir():
            raise DatasetError(f"{folder / alphabet}: no such Omniglot alphabet")
        for char in sorted(p for p in (folder / alphabet).iterdir() if p.is_dir()):
            files = sorted(char.glob("*.png"))
            if len(files) < 2:
                raise DatasetError(f"{char}: a character needs at least two drawings")
            entries.append((alphabet, char.name, files))
    if not entries:
        raise DatasetError(f"{folder}: no Omniglot characters found")
    return entries


def load_omniglot(split: str = "background", alphabets=None, root: Path | None = None,
                  use_cache: bool = True) -> OmniglotSet:
    """Read a split ("background" or "evaluation"), optionally only some alphabets.

    The whole split is cached (bit-packed, compressed .npz in the kiosk cache folder, keyed by the file list); reading
    a few alphabets goes to the PNGs directly.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}")
    root = Path(root) if root is not None else omniglot_root()
    entries = _list_split(root, split, alphabets)
    alpha_names = list(dict.fromkeys(a for a, _, _ in entries))
    characters = [f"{a}/{c}" for a, c, _ in entries]
    char_alphabet = np.array([alpha_names.index(a) for a, _, _ in entries], np.int64)
    labels = np.concatenate([np.full(len(files), i, np.int64) for i, (_, _, files) in enumerate(entries)])
    files = [f for _, _, fs in entries for f in fs]

    cache_file = None
    if use_cache and alphabets is None:
        cache_file = cache_path("omniglot", (CACHE_VERSION, split, [str(f.relative_to(root)) for f in files]))
        cached = load_arrays(cache_file, ["bits"])
        if cached is not None:
            images = np.unpackbits(cached["bits"], count=len(files) * IMAGE_SIZE * IMAGE_SIZE)
            return OmniglotSet(images.reshape(len(files), IMAGE_SIZE, IMAGE_SIZE), labels, characters,
                               char_alphabet, alpha_names)
    images = np.stack([_read_ink(f) for f in tqdm(files, desc=f"omniglot {split}", unit="img", leave=False,
                                                   disable=len(files) < 2000)])
    if cache_file is not None:
        save_arrays(cache_file, compressed=True, bits=np.packbits(images.reshape(-1)))
    return OmniglotSet(images, labels, characters, char_alphabet, alpha_names)


@dataclass
class OfficialRun:
    """One of Lake's 20-way one-shot runs: 20 training images (one per class) and 20 test items."""

    name: str
    support: np.ndarray    # (20, 105, 105) uint8 ink masks, training/class01..20
    queries: np.ndarray    # (20, 105, 105) test/item01..20
    answers: np.ndarray    # (20,) index into support of each query's class


def load_official_runs(root: Path | None = None) -> list[OfficialRun]:
    """The 20 runs of ``omniglot/one-shot-runs`` (class_labels.txt: test item -> its training image)."""
    folder = (Path(root) if root is not None else omniglot_root()) / "one-shot-runs"
    runs_dirs = sorted(p for p in folder.glob("run*") if p.is_dir()) if folder.is_dir() else []
    if not runs_dirs:
        raise DatasetError(f"{folder}: Lake's one-shot runs not found")
    runs = []
    for run in runs_dirs:
        labels = (run / "class_labels.txt").read_text().split()
        if len(labels) % 2:
            raise DatasetError(f"{run / 'class_labels.txt'}: expected 'test training' path pairs")
        pairs = list(zip(labels[0::2], labels[1::2]))
        train_files = sorted({t for _, t in pairs})
        support = np.stack([_read_ink(folder / t) for t in train_files])
        queries = np.stack([_read_ink(folder / q) for q, _ in pairs])
        answers = np.array([train_files.index(t) for _, t in pairs], np.int64)
        runs.append(OfficialRun(run.name, support, queries, answers))
    return runs


# ------------------------------------------------------------------------- network input and distortions


def network_input(images: np.ndarray | torch.Tensor, size: int = IMAGE_SIZE,
                  theta: torch.Tensor | None = None, centre_ink: bool = False) -> torch.Tensor:
    """uint8 ink masks (N, 105, 105) -> float (N, 1, size, size), ink 1.0, paper 0.0.

    ``theta`` (N, 2, 3): affine_grid matrices (output -> input, normalised coordinates) of a distortion.
    ``centre_ink``: first move each drawing's ink centre of mass to the middle (where a drawer put the
    character on the page is not part of the character). Resizing to ``size`` (when not 105) goes through
    the same bilinear sampling, in training and at test.
    """
    x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    x = x.float().unsqueeze(1)
    if theta is None and size == x.shape[-1] and not centre_ink:
        return x
    theta = torch.eye(2, 3).repeat(len(x), 1, 1) if theta is None else theta.clone()
    if centre_ink:
        theta[:, :, 2] += _ink_centres(x)
    grid = F.affine_grid(theta, [len(x), 1, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _ink_centres(x: torch.Tensor) -> torch.Tensor:
    """(N, 2) ink centres of mass (x, y) of (N, 1, H, W) drawings in affine_grid's normalised coordinates
    (align_corners=False); 0 for a blank drawing."""
    height, width = x.shape[-2:]
    mass = x.sum((1, 2, 3)).clamp(min=1e-6)
    cols = (torch.arange(width, dtype=x.dtype) + 0.5) * 2 / width - 1
    rows = (torch.arange(height, dtype=x.dtype) + 0.5) * 2 / height - 1
    return torch.stack([(x.sum((1, 2)) * cols).sum(1) / mass, (x.sum((1, 3)) * rows).sum(1) / mass], 1)


@dataclass(frozen=True)
class DrawingInput:
    """How a drawing becomes network input, the same in training and at test: the side it is resampled
    to and whether its ink is centred first. Weights record it (``InputSpec.size`` and the preset)."""
    size: int = IMAGE_SIZE
    centre_ink: bool = False

    def __call__(self, images: np.ndarray | torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        return network_input(images, self.size, theta, self.centre_ink)

    @classmethod
    def of_weights(cls, spec: InputSpec, metadata: dict) -> "DrawingInput":
        return cls(spec.size, bool(metadata.get("preset", {}).get("centre_ink", False)))


def koch_distortions(n: int, generator: torch.Generator, prob: float = 0.5, rotation_deg: float = 10.0,
                     shear: float = 0.3, scale: tuple[float, float] = (0.8, 1.2), shift_px: float = 2.0,
                     image_size: int = IMAGE_SIZE) -> torch.Tensor:
    """Koch et al.'s random affine distortions as affine_grid matrices (n, 2, 3).

    T = (theta, rho_x, rho_y, s_x, s_y, t_x, t_y) with theta in [-10, 10] degrees, rho in [-0.3, 0.3],
    s in [0.8, 1.2], t in [-2, 2] pixels; each component is included with probability ``prob``. The forward
    map is x' = R(theta) Shear(rho) Scale(s) x + t about the image centre; affine_grid needs its inverse.
    """
    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    def gate():
        return torch.rand(n, generator=generator) < prob

    zero, one = torch.zeros(n), torch.ones(n)
    angle = torch.where(gate(), uniform(-rotation_deg, rotation_deg), zero) * math.pi / 180.0
    rho_x = torch.where(gate(), uniform(-shear, shear), zero)
    rho_y = torch.where(gate(), uniform(-shear, shear), zero)
    s_x = torch.where(gate(), uniform(*scale), one)
    s_y = torch.where(gate(), uniform(*scale), one)
    t_x = torch.where(gate(), uniform(-shift_px, shift_px), zero) * 2.0 / image_size  # pixels -> [-1, 1] units
    t_y = torch.where(gate(), uniform(-shift_px, shift_px), zero) * 2.0 / image_size
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shr = torch.stack([torch.stack([one, rho_x], -1), torch.stack([rho_y, one], -1)], -2)
    scl = torch.diag_embed(torch.stack([s_x, s_y], -1))
    forward = rot @ shr @ scl
    inverse = torch.linalg.inv(forward)
    shift = torch.stack([t_x, t_y], -1).unsqueeze(-1)
    return torch.cat([inverse, -inverse @ shift], -1)


# ------------------------------------------------------------------------------------------------ pairs


class PairSampler:
    """Balanced verification pairs: half same character (two different drawings), half different
    characters, of which ``within_alphabet`` come from the same alphabet (the hard negatives)."""

    def __init__(self, data: OmniglotSet, rng: np.random.Generator, within_alphabet: float = 0.5):
        if len(data.characters) < 2:
            raise DatasetError("Omniglot: pair sampling needs at least two characters")
        self.data, self.rng, self.within_alphabet = data, rng, within_alphabet

    def _drawing(self, char: int, avoid: int = -1) -> int:
        rows = self.data.by_char[char]
        while True:
            row = int(rows[self.rng.integers(len(rows))])
            if row != avoid:
                return row

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows of the left images, rows of the right images, 1.0 same / 0.0 different)."""
        data, rng = self.data, self.rng
        n_chars = len(data.characters)
        left, right = np.zeros(batch, np.int64), np.zeros(batch, np.int64)
        same = np.zeros(batch, np.float32)
        same[: batch // 2] = 1.0
        rng.shuffle(same)
        for i in range(batch):
            a = int(rng.integers(n_chars))
            left[i] = self._drawing(a)
            if same[i]:
                right[i] = self._drawing(a, avoid=left[i])
                continue
            siblings = data.by_alphabet[data.char_alphabet[a]]
            if len(siblings) > 1 and rng.random() < self.within_alphabet:
                b = a
                while b == a:
                    b = int(siblings[rng.integers(len(siblings))])
            else:
                b = int(rng.integers(n_chars - 1))
                b += b >= a
            right[i] = self._drawing(b)
        return left, right, same

    def sample_grid(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``k`` distinct characters, two different drawings of each: (rows of drawing A, rows of drawing B).

        Pairing every A with every B gives k same pairs and k(k-1) different pairs from 2k encoder passes.
        Characters come from whole alphabets drawn at random until twice ``k`` characters are in the pool,
        so roughly half of the different pairs are within one alphabet (the hard negatives)."""
        data, rng = self.data, self.rng
        n_chars = len(data.characters)
        if k > n_chars:
            raise DatasetError(f"Omniglot: a batch of {k} characters needs at least {k} characters")
        pool: list[int] = []
        for a in rng.permutation(len(data.alphabets)):
            pool.extend(int(c) for c in data.by_alphabet[a])
            if len(pool) >= 2 * k:
                break
        chars = rng.choice(np.array(pool), size=k, replace=False)
        left = np.array([self._drawing(int(c)) for c in chars], np.int64)
        right = np.array([self._drawing(int(c), avoid=int(r)) for c, r in zip(chars, left)], np.int64)
        return left, right


# --------------------------------------------------------------------------------------- one-shot tests


@dataclass
class Episode:
    """A within-alphabet one-shot task: one drawing per character as the support set, and queries (other
    drawings of the same characters) each to be matched to its character among the support."""

    support: np.ndarray    # (way,) image rows
    queries: np.ndarray    # (k,) image rows
    answers: np.ndarray    # (k,) index into support


def make_episodes(data: OmniglotSet, trials: int, seed: int = 0, way: int = 20) -> list[Episode]:
    """Koch et al.'s 20-way protocol: an alphabet, 20 of its characters, two drawings of each (support and
    query); each query is one trial, so an episode holds up to ``way`` trials. Alphabets take turns (in an
    order fixed by ``seed``) so that every eligible alphabet is used equally.

    Omniglot's drawer identity is lost in this copy of the data (see the datasets README), so the two
    drawings of a character are two distinct drawings chosen at random: always two different drawers for
    that character, but not one fixed drawer pair across the whole episode as in the paper.
    """
    rng = np.random.default_rng(seed)
    eligible = [a for a in range(len(data.alphabets)) if len(data.by_alphabet[a]) >= way]
    if not eligible:
        raise DatasetError(f"Omniglot: no alphabet has {way} characters for a {way}-way test")
    order = [eligible[i] for i in rng.permutation(len(eligible))]
    episodes, done = [], 0
    while done < trials:
        alphabet = order[len(episodes) % len(order)]
        chars = rng.choice(data.by_alphabet[alphabet], size=way, replace=False)
        support, queries = np.zeros(way, np.int64), np.zeros(way, np.int64)
        for j, c in enumerate(chars):
            support[j], queries[j] = rng.choice(data.by_char[c], size=2, replace=False)
        k = min(way, trials - done)
        pick = rng.permutation(way)[:k]
        episodes.append(Episode(support, queries[pick], pick.astype(np.int64)))
        done += k
    return episodes


@torch.no_grad()
def embed_images(model: SiameseNet, images: np.ndarray, drawing: DrawingInput, batch: int = 256) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model.embed(drawing(images[i:i + batch]))
                          for i in range(0, len(images), batch)])
    finally:
        model.train(was_training)


@torch.no_grad()
def episode_accuracy(model: SiameseNet, data: OmniglotSet, episodes: list[Episode],
                     drawing: DrawingInput) -> tuple[int, int]:
    """(correct, trials): each query goes to the support drawing with the highest P(same)."""
    rows = np.unique(np.concatenate([np.concatenate([e.support, e.queries]) for e in episodes]))
    features = embed_images(model, data.images[rows], drawing)
    where = {int(r): i for i, r in enumerate(rows)}
    correct = total = 0
    for e in episodes:
        sup = features[[where[int(r)] for r in e.support]]
        qry = features[[where[int(r)] for r in e.queries]]
        logits = model.logit_from_features(qry[:, None, :], sup[None, :, :])   # (k, way)
        correct += int((logits.argmax(1).numpy() == e.answers).sum())
        total += len(e.queries)
    return correct, total


@torch.no_grad()
def official_runs_accuracy(model: SiameseNet, drawing: DrawingInput,
                           runs: list[OfficialRun] | None = None) -> tuple[int, int]:
    """(correct, items) over Lake's runs (20 runs x 20 test items)."""
    runs = runs if runs is not None else load_official_runs()
    correct = total = 0
    for run in runs:
        sup = embed_images(model, run.support, drawing)
        qry = embed_images(model, run.queries, drawing)
        logits = model.logit_from_features(qry[:, None, :], sup[None, :, :])
        correct += int((logits.argmax(1).numpy() == run.answers).sum())
        total += len(run.answers)
    return correct, total


def _interval(correct: int, total: int) -> list[float]:
    """95% Wilson interval of an accuracy."""
    if not total:
        return [0.0, 1.0]
    z, p = 1.96, correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def evaluate_model(model: SiameseNet, drawing: DrawingInput, *, trials: int = 400, seed: int = 0,
                   runs: bool = True, evaluation: OmniglotSet | None = None) -> dict:
    """20-way one-shot on the evaluation alphabets (+ Lake's official runs)."""
    evaluation = evaluation if evaluation is not None else load_omniglot("evaluation")
    correct, total = episode_accuracy(model, evaluation, make_episodes(evaluation, trials, seed), drawing)
    result = {"way20_accuracy": correct / total, "trials": total, "way20_ci95": _interval(correct, total),
              "seed": seed, "official_runs_accuracy": None}
    if runs:
        r_correct, r_total = official_runs_accuracy(model, drawing)
        result.update(official_runs_accuracy=r_correct / r_total, official_runs_items=r_total,
                      official_runs_ci95=_interval(r_correct, r_total))
    return result


def evaluate_oneshot(weights_path: Path, *, trials: int = 400, seed: int = 0, runs: bool = True) -> dict:
    """20-way within-alphabet one-shot accuracy of Omniglot weights on the 20 evaluation alphabets
    (``trials`` queries, episodes fixed by ``seed``) and, if ``runs``, on Lake's 20 official runs.

    Returns {"way20_accuracy", "trials", "official_runs_accuracy" (None without runs), "way20_ci95", ...}.
    """
    model, spec, metadata = load_weights(weights_path)
    if spec.channels != 1 or metadata.get("dataset") != "omniglot":
        raise WeightsError(f"{weights_path}: not Omniglot weights (made for {metadata.get('dataset', 'faces')!r}, "
                           f"{spec.channels} channel(s))")
    return evaluate_model(model, DrawingInput.of_weights(spec, metadata), trials=trials, seed=seed, runs=runs)


# -------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class OmniglotConfig:
    """The training preset (defaults) for ~30 minutes on 2 CPU cores; see docs/OMNIGLOT.md.

    ``train_omniglot``'s arguments and keyword overrides replace these fields."""

    steps: int = 12000
    batch_size: int = 32            # "grid": characters per batch (2 drawings each); "independent": pairs
    width: float = 0.25             # KochEncoder channel multiplier (1.0 = the paper's 64-128-128-256)
    input_size: int = 80            # network input side; the 105x105 drawings are resampled to it
    centre_ink: bool = False        # move each drawing's ink centre of mass to the middle (train and test)
    feature_dim: int = 4096         # the sigmoid feature layer (paper: 4096)
    batch_norm: bool = True         # BatchNorm after each convolution (not in the paper)
    lr: float = 3e-3                # Adam peak learning rate
    lr_final: float = 0.02          # cosine decay to this fraction of ``lr`` at ``steps``
    warmup_steps: int = 300
    weight_decay: float = 1e-5      # L2 (Adam's coupled weight decay)
    pairing: str = "grid"           # "grid": all pairs of a batch of characters; "independent": sampled pairs
    hard_negatives: int = 2         # "grid": the m hardest different pairs per row and column (0 = all of them)
    within_alphabet: float = 0.5    # "independent": fraction of "different" pairs drawn from one alphabet
    distort: bool = True            # Koch's affine distortions
    distort_prob: float = 0.5       # per-component probability of a distortion (paper: 0.5)
    validation_alphabets: tuple[str, ...] = VALIDATION_ALPHABETS
    train_alphabets: tuple[str, ...] | None = None   # None: every background alphabet not validated on
    test_alphabets: tuple[str, ...] | None = None    # None: all 20 evaluation alphabets
    val_trials: int = 800           # 20-way trials on the validation alphabets (episodes fixed)
    eval_every: int = 500           # steps between validations
    patience: int = 8               # stop after this many validations without improvement (0 = never)
    checkpoint_every: int = 250
    test_trials: int = 400
    test_seed: int = 0
    official_runs: bool = True
    progress: bool = True

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


PRESET = OmniglotConfig()

# Settings that do not change the training trajectory: a checkpoint resumes even if these differ.
_NOT_TRAJECTORY = {"progress", "checkpoint_every", "test_alphabets", "test_trials", "test_seed", "official_runs"}


def encoder_options(config: OmniglotConfig) -> dict:
    options = {"input_size": config.input_size, "channels": 1, "feature_dim": config.feature_dim,
               "width": config.width}
    if config.batch_norm:  # only passed when wanted: batch_norm=False runs on any KochEncoder
        options["batch_norm"] = True
    return options


def build_model(config: OmniglotConfig) -> SiameseNet:
    try:
        return SiameseNet("koch", encoder_options(config))
    except TypeError as exc:
        if config.batch_norm and "batch_norm" in str(exc):
            raise KioskError("the Omniglot preset needs KochEncoder(batch_norm=True) in kiosk/vision/model.py (see "
                             "docs/OMNIGLOT.md); without it train with batch_norm=False, hard_negatives=0, "
                             "lr=1e-3") from None
        raise


def input_spec(config: OmniglotConfig) -> InputSpec:
    """Whole drawing, no face margin or shift (version stays PREPROCESS_VERSION)."""
    return InputSpec(size=config.input_size, channels=1, padding=0.0, version=1)  # whole drawings, no alignment


def learning_rate(config: OmniglotConfig, step: int) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``lr * lr_final`` at ``steps``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    return config.lr * (config.lr_final + (1 - config.lr_final) * 0.5 * (1 + math.cos(math.pi * progress)))


def changes_from_paper(config: OmniglotConfig) -> list[str]:
    """What this training does differently from Koch et al. (2015), for the weights' metadata."""
    changes = []
    if config.width != 1.0 or config.input_size != IMAGE_SIZE:
        changes.append(f"encoder width {config.width} (channels {encoder_channels(config.width)}; paper "
                       f"64-128-128-256) on {config.input_size}x{config.input_size} input (paper 105x105), "
                       "for a CPU budget")
    if config.batch_norm:
        changes.append("BatchNorm after every convolution (paper: none)")
    if config.pairing == "grid":
        changes.append(f"batches of {config.batch_size} characters x 2 drawings, every cross pair scored "
                       f"({config.batch_size} same, {config.batch_size * (config.batch_size - 1)} different); "
                       "the loss is BCE balanced 50/50 between same and different pairs"
                       + (f", different pairs restricted to the {config.hard_negatives} hardest per row and "
                          "column" if config.hard_negatives else "")
                       + " (paper: independently drawn pairs, plain BCE)")
    changes += [
        f"Adam, peak lr {config.lr:g}, warm-up {config.warmup_steps} steps then cosine decay, one global L2 "
        f"{config.weight_decay:g} (paper: SGD + momentum with per-layer learning rates, momenta and L2 "
        "weights tuned by Bayesian optimisation)",
        "pairs sampled and distorted on the fly (paper: fixed sets of pairs plus 8 distorted copies each)",
        "Lake's 30/20 background/evaluation split; 8 background alphabets held out for validation "
        "(paper: 40 background / 10 evaluation alphabets, 12 training and 4 validation drawers)",
        "drawer identity is lost in this copy of Omniglot: a test character's two drawings are two distinct "
        "random drawings, not one drawer pair per episode",
        "PyTorch default initialisation (paper: N(0, 0.01) conv weights, N(0.5, 0.01) biases, N(0, 0.2) "
        "fully connected weights)",
    ]
    return changes


def encoder_channels(width: float) -> list[int]:
    return [max(8, int(round(n * width))) for n in (64, 128, 128, 256)]


def _save_checkpoint(path: Path, state: dict) -> None:
    private_dir(path.parent)
    with atomic_writer(path) as handle:
        torch.save(state, handle)


def _clone_state(model: SiameseNet) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def pair_loss(model: SiameseNet, x: torch.Tensor, n: int, config: OmniglotConfig,
              same: np.ndarray | None = None) -> torch.Tensor:
    """BCE through the weighted-L1 sigmoid head. ``x`` holds 2n images: n left then n right.

    "grid": left i and right j show the same character iff i == j; every cross pair is scored and the
    loss is balanced: half the mean over the n same pairs, half the mean over the different pairs (all,
    or the ``hard_negatives`` with the highest loss in each row and column). "independent": pair i is
    (left i, right i) with label ``same[i]``."""
    if config.pairing != "grid":
        return F.binary_cross_entropy_with_logits(model(x[:n], x[n:]), torch.from_numpy(same))
    features = model.embed(x)
    logits = model.logit_from_features(features[:n, None, :], features[None, n:, :])   # (n, n)
    target = torch.eye(n)
    losses = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if config.hard_negatives:
        m = min(config.hard_negatives, n - 1)
        others = losses.masked_fill(target.bool(), float("-inf"))
        different = torch.cat([others.topk(m, 1).values.reshape(-1), others.topk(m, 0).values.reshape(-1)])
    else:
        different = losses[target == 0]
    return 0.5 * (losses.diagonal().mean() + different.mean())


def train_omniglot(out_path: Path, *, steps: int, batch_size: int, width: float, checkpoint_dir: Path,
                   seed: int = 0, resume: bool = True, threads: int | None = None, **overrides) -> dict:
    """Train the Koch Siamese net on Omniglot's background set; write the best validated weights to
    ``out_path`` (kiosk.vision.weights format; the metadata holds the preset, history and test results).

    ``batch_size``: characters per batch with the default "grid" pairing (2 drawings each, so 2 x
    batch_size images per step), pairs with pairing="independent". Checkpoints (model, optimizer, step,
    RNG states) go to ``checkpoint_dir`` every ``checkpoint_every`` steps and at every validation; with
    ``resume`` a run with the same settings continues from there, bit-for-bit as if uninterrupted (same
    thread count). A log is appended to ``checkpoint_dir/omniglot_train.log``. ``overrides``: further
    OmniglotConfig fields (lr, input_size, batch_norm, ...).

    Returns evaluate_oneshot's result plus "weights", "steps_done", "stopped_early", "best_step",
    "best_val_accuracy" and "train_seconds".
    """
    config = dataclasses.replace(PRESET, steps=steps, batch_size=batch_size, width=width, **overrides)
    if config.steps < 1 or config.batch_size < 2:
        raise ValueError("steps must be >= 1 and batch_size >= 2")
    if config.pairing not in ("grid", "independent"):
        raise ValueError("pairing must be 'grid' or 'independent'")
    out_path, checkpoint_dir = Path(out_path), Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    previous_threads, previous_level = torch.get_num_threads(), log.level
    if threads:
        torch.set_num_threads(threads)
    handler = logging.FileHandler(checkpoint_dir / LOG_NAME)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    log.addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        return _train(out_path, checkpoint_dir / CHECKPOINT_NAME, config, seed, resume)
    finally:
        log.removeHandler(handler)
        handler.close()
        log.setLevel(previous_level)
        torch.set_num_threads(previous_threads)


def _load_data(config: OmniglotConfig) -> tuple[OmniglotSet, OmniglotSet | None]:
    val_names = list(config.validation_alphabets)
    if config.train_alphabets is None:
        background = load_omniglot("background")
        train_names = [a for a in background.alphabets if a not in set(val_names)]
    else:
        train_names = list(config.train_alphabets)
        background = load_omniglot("background", alphabets=list(dict.fromkeys(train_names + val_names)))
    overlap = set(train_names) & set(val_names)
    if overlap:
        raise DatasetError(f"Omniglot: alphabets both trained and validated on: {sorted(overlap)}")
    return background.subset(train_names), (background.subset(val_names) if val_names else None)


def _train(out_path: Path, checkpoint: Path, config: OmniglotConfig, seed: int, resume: bool) -> dict:
    train, validation = _load_data(config)
    if config.pairing == "grid" and config.batch_size > len(train.characters):
        raise ValueError(f"batch_size {config.batch_size} > {len(train.characters)} training characters")
    val_episodes = make_episodes(validation, config.val_trials, seed=1234) if validation is not None else []

    torch.manual_seed(seed)
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(seed)
    aug = torch.Generator().manual_seed(seed + 1)
    state = {"step": 0, "best_val": -1.0, "best_step": 0, "best_state": None, "history": [],
             "evals_since_best": 0, "stopped_early": False, "train_seconds": 0.0}
    settings = {"config": {k: v for k, v in config.to_dict().items() if k not in _NOT_TRAJECTORY}, "seed": seed}

    if resume and checkpoint.is_file():
        try:
            saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any damage: say which file
            raise KioskError(f"{checkpoint}: unreadable checkpoint ({type(exc).__name__}); delete it or pass "
                             "resume=False") from None
        if saved.get("settings") != settings:
            raise KioskError(f"{checkpoint}: made with other settings ({saved.get('settings')}); use another "
                             "checkpoint folder or resume=False")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        aug.set_state(saved["aug_rng"])
        rng.bit_generator.state = saved["np_rng"]
        state = saved["state"]
        log.info("resumed %s at step %d", checkpoint, state["step"])
    else:
        log.info("training on %d characters of %d alphabets, validating on %d characters of %d alphabets; "
                 "settings %s, seed %d", len(train.characters), len(train.alphabets),
                 len(validation.characters) if validation else 0, len(validation.alphabets) if validation else 0,
                 config.to_dict(), seed)
    sampler = PairSampler(train, rng, config.within_alphabet)
    drawing = DrawingInput(config.input_size, config.centre_ink)

    def save():
        _save_checkpoint(checkpoint, {
            "settings": settings, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(), "aug_rng": aug.get_state(), "np_rng": rng.bit_generator.state,
            "state": state})

    model.train()
    bar = tqdm(total=config.steps, initial=state["step"], desc="omniglot", unit="step",
               disable=not config.progress, dynamic_ncols=True)
    running, seen, started = 0.0, 0, time.monotonic()
    n = config.batch_size
    while state["step"] < config.steps and not state["stopped_early"]:
        step = state["step"]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        same = None
        if config.pairing == "grid":
            left, right = sampler.sample_grid(n)
        else:
            left, right, same = sampler.sample(n)
        theta = koch_distortions(2 * n, aug, prob=config.distort_prob) if config.distort else None
        x = drawing(train.images[np.concatenate([left, right])], theta)
        loss = pair_loss(model, x, n, config, same)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state["step"] = step = step + 1
        running, seen = running + loss.item(), seen + 1
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{running / seen:.3f}", best_val=f"{max(state['best_val'], 0):.3f}")
        validate = validation is not None and (step % config.eval_every == 0 or step == config.steps)
        if validate:
            correct, total = episode_accuracy(model, validation, val_episodes, drawing)
            accuracy = correct / total
            entry = {"step": step, "loss": round(running / max(seen, 1), 4), "val_accuracy": round(accuracy, 4),
                     "lr": learning_rate(config, step - 1),
                     "seconds": round(state["train_seconds"] + time.monotonic() - started, 1)}
            state["history"].append(entry)
            running, seen = 0.0, 0
            if accuracy > state["best_val"]:
                state.update(best_val=accuracy, best_step=step, best_state=_clone_state(model), evals_since_best=0)
            else:
                state["evals_since_best"] += 1
                if config.patience and state["evals_since_best"] >= config.patience:
                    state["stopped_early"] = True
            log.info("step %d: loss %.4f, 20-way validation %.4f (best %.4f at step %d)%s", step, entry["loss"],
                     accuracy, state["best_val"], state["best_step"],
                     f"; stopping: {config.patience} validations without improvement" if state["stopped_early"]
                     else "")
            bar.set_postfix(loss=f"{entry['loss']:.3f}", val=f"{accuracy:.3f}")
        if validate or step % config.checkpoint_every == 0 or step == config.steps:
            state["train_seconds"] += time.monotonic() - started
            started = time.monotonic()
            save()
    bar.close()
    state["train_seconds"] += time.monotonic() - started

    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    model.eval()
    evaluation = load_omniglot("evaluation", alphabets=config.test_alphabets)
    results = evaluate_model(model, drawing, trials=config.test_trials, seed=config.test_seed,
                             runs=config.official_runs, evaluation=evaluation)
    log.info("test: 20-way one-shot %.4f over %d trials; Lake's official runs %s", results["way20_accuracy"],
             results["trials"], results["official_runs_accuracy"])
    training = {"steps_done": state["step"], "stopped_early": state["stopped_early"],
                "best_step": state["best_step"], "best_val_accuracy": state["best_val"],
                "train_seconds": round(state["train_seconds"], 1), "threads": torch.get_num_threads(),
                "train_alphabets": train.alphabets, "train_characters": len(train.characters),
                "validation_alphabets": validation.alphabets if validation else [],
                "validation_characters": len(validation.characters) if validation else 0}
    metadata = {
        "dataset": "omniglot",
        "task": "one-shot handwritten character classification (Koch et al. 2015)",
        "input": f"whole 105x105 drawing{', ink centre of mass moved to the middle,' if config.centre_ink else ''} "
                 f"resampled (bilinear) to {config.input_size}x{config.input_size}, ink 1.0, paper 0.0 "
                 "(research.omniglot.network_input)",
        "seed": seed, "preset": config.to_dict(), "training": training, "history": state["history"],
        "results": results, "paper": PAPER, "changes_from_paper": changes_from_paper(config),
    }
    save_weights(out_path, model, input_spec(config), metadata)
    log.info("wrote %s", out_path)
    return {"weights": str(out_path), **results, **{k: training[k] for k in
            ("steps_done", "stopped_early", "best_step", "best_val_accuracy", "train_seconds")}}
