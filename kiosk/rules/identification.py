"""Walk-up identification (1:N): who, among everyone enrolled, is this face? Qt-free, torch-free.

* :class:`GalleryIndex` keeps the features of every enrolled person in ONE float32 matrix in memory (the rows
  of a person next to each other) and scores a probe against all of them with one matrix product: squared
  distances ``|q|^2 + |g|^2 - 2 q.g``, then the head's sigmoid, then the best row of each person
  (``np.maximum.reduceat``; a person's score is the max over their photos, as ``kiosk.rules.decision.frame_score``
  does for 1:1). The scores are the engine's own P(same) (``FaceEngine.similarity``), not an approximation.
* Changes (``set_person``, ``remove``, ``replace_all``, ``sync`` from the store) bump ``generation``; the
  matrix is rebuilt lazily, once, at the next search, so enrolling 10,000 people costs 10,000 dict inserts
  and one concatenation.
* :func:`identify` is THE decision rule, a pure function: the per-person scores of several frames are fused
  (mean, or median) per person; the best person is accepted only with a fused score of at least
  ``rule.threshold`` AND a gap of at least ``rule.gap`` to the second-best person. Otherwise "not
  recognised" (the kiosk then asks for the ID).
* :class:`IdentifyCalibration` reads ``weights/identify.json`` (the rule chosen on LFW folds 6-10,
  ``kiosk calibrate-identify``) with a SHA-256 and range check, and gives the expected false-accept rate per
  walk-up for a threshold and a number of enrolled reference photos (:meth:`IdentifyCalibration.expected_fpir`).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kiosk.errors import WeightsError
from kiosk.io.pins import read_model_file
from kiosk.paths import WEIGHTS_DIR
from kiosk.rules.decision import THRESHOLD_RANGE, valid_threshold

if TYPE_CHECKING:  # the store is only read, and only passed in
    from kiosk.storage import EmployeeStore

IDENTIFY_CALIBRATION = WEIGHTS_DIR / "identify.json"
CALIBRATION_FORMAT = "kiosk-identify-1"
GAP_RANGE = (0.0, 0.5)

REASON_RECOGNISED = "recognised"
REASON_NOT_RECOGNISED = "not recognised, please enter your ID"
REASON_NOBODY_ENROLLED = "nobody is enrolled"
REASON_NO_FACE = "no usable face in time"

# (probes (F, D) float32, matrix (R, D) float32, squared row norms (R,)) -> scores (F, R), higher = more alike
RowScorer = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def squared_distances(probes: np.ndarray, matrix: np.ndarray, row_norms: np.ndarray) -> np.ndarray:
    """(F, R) squared Euclidean distances through one matrix product (clipped at 0 against rounding)."""
    probes = np.atleast_2d(np.asarray(probes, np.float32))
    d2 = (probes * probes).sum(axis=1, dtype=np.float32)[:, None] + row_norms[None, :] - 2.0 * (probes @ matrix.T)
    return np.maximum(d2, 0.0, out=d2)


def euclidean_head_scorer(weight: float, bias: float) -> RowScorer:
    """P(same) = sigmoid(bias + weight * distance): the shipped Euclidean head (``kiosk.vision.model.SiameseNet``)."""
    def score(probes, matrix, row_norms):
        logits = np.sqrt(squared_distances(probes, matrix, row_norms)) * np.float32(weight) + np.float32(bias)
        return 1.0 / (1.0 + np.exp(-logits))
    return score


def negative_distance_scorer(probes, matrix, row_norms) -> np.ndarray:
    """Minus the Euclidean distance (face_recognition's score, for the side-by-side evaluation)."""
    return -np.sqrt(squared_distances(probes, matrix, row_norms))


def similarity_scorer(similarity: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> RowScorer:
    """Any other head: the engine's similarity of each probe against all rows (one call per probe)."""
    def score(probes, matrix, row_norms):
        probes = np.atleast_2d(probes)
        if not len(matrix):
            return np.zeros((len(probes), 0), np.float32)
        return np.stack([np.asarray(similarity(matrix, p), np.float32).reshape(len(matrix)) for p in probes])
    return score


def head_parameters(engine) -> tuple[float, float] | None:
    """(weight, bias) of the engine's Euclidean head; None for another head."""
    model = engine.model
    if getattr(model, "head", None) != "euclidean":
        return None
    layer = model.distance_weights
    return float(layer.weight.detach().reshape(-1)[0]), float(layer.bias.detach().reshape(-1)[0])


def scorer_for(engine) -> RowScorer:
    """The engine's P(same) as a row scorer: the matrix-product form for the Euclidean head, else its similarity."""
    head = head_parameters(engine)
    return euclidean_head_scorer(*head) if head is not None else similarity_scorer(engine.similarity)


@dataclass(frozen=True)
class _Snapshot:
    generation: int
    ids: tuple[str, ...]
    matrix: np.ndarray      # (R, D) float32, rows of one person contiguous, people in ``ids`` order
    row_norms: np.ndarray   # (R,) float32
    starts: np.ndarray      # (P,) first row of each person


class GalleryIndex:
    """Every enrolled person's reference features, searchable at once. Thread-safe: writers take a lock,
    searches work on an immutable snapshot (rebuilt at most once per change)."""

    def __init__(self, scorer: RowScorer, model_id: str = "", feature_dim: int | None = None):
        self.scorer = scorer
        self.model_id = model_id
        self.feature_dim = feature_dim
        self._people: dict[str, np.ndarray] = {}
        self._generation = 0
        self._snapshot: _Snapshot | None = None
        self._fingerprint: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_engine(cls, engine) -> "GalleryIndex":
        return cls(scorer_for(engine), engine.model_id, engine.feature_dim)

    # -- changes -----------------------------------------------------------------------------------------
    @property
    def generation(self) -> int:
        """Bumped by every change; a caller holding results of an older generation should search again."""
        return self._generation

    def _checked(self, features: np.ndarray) -> np.ndarray:
        rows = np.atleast_2d(np.asarray(features, np.float32))
        if rows.ndim != 2 or (rows.size and self.feature_dim is not None and rows.shape[1] != self.feature_dim):
            raise ValueError(f"features of shape {np.shape(features)}; expected (N, {self.feature_dim})")
        if rows.size and not np.isfinite(rows).all():
            raise ValueError("features contain NaN or infinity")
        if rows.size and self.feature_dim is None:
            self.feature_dim = rows.shape[1]
        return np.array(rows, np.float32, copy=True)

    def set_person(self, person_id: str, features: np.ndarray) -> None:
        """Enrol or re-enrol (replaces their rows); no rows removes them."""
        rows = self._checked(features)
        with self._lock:
            if rows.size:
                self._people[person_id] = rows
            else:
                self._people.pop(person_id, None)
            self._changed()

    def remove(self, person_id: str) -> bool:
        with self._lock:
            found = self._people.pop(person_id, None) is not None
            if found:
                self._changed()
            return found

    def replace_all(self, people: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]],
                    fingerprint: str | None = None) -> None:
        """The whole gallery at once (a rebuild); people without rows are left out."""
        items = people.items() if isinstance(people, Mapping) else people
        checked = {pid: rows for pid, rows in ((pid, self._checked(f)) for pid, f in items) if rows.size}
        with self._lock:
            self._people = checked
            self._changed()
            self._fingerprint = fingerprint

    def _changed(self) -> None:
        self._generation += 1
        self._snapshot = None
        self._fingerprint = None

    # -- the store ------------------------------------------------------------------------------------------
    def sync(self, store: "EmployeeStore", force: bool = False) -> bool:
        """Rebuild from the store if its reference photos changed since the last sync (or ``force``);
        True when it rebuilt. Only features made by this index's model are used (``model_id``)."""
        fingerprint = store_fingerprint(store, self.model_id)
        if not force and fingerprint == self._fingerprint:
            return False
        self.replace_all(references_by_person(store, self.model_id), fingerprint)
        return True

    # -- reading ----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._people)

    @property
    def people(self) -> tuple[str, ...]:
        return self.snapshot().ids

    @property
    def photos(self) -> int:
        return len(self.snapshot().matrix)

    @property
    def nbytes(self) -> int:
        """Memory of the search matrix and its norms."""
        s = self.snapshot()
        return s.matrix.nbytes + s.row_norms.nbytes + s.starts.nbytes

    def snapshot(self) -> _Snapshot:
        with self._lock:
            if self._snapshot is None or self._snapshot.generation != self._generation:
                ids = tuple(sorted(self._people))
                blocks = [self._people[i] for i in ids]
                dim = self.feature_dim or 0
                matrix = np.ascontiguousarray(np.concatenate(blocks) if blocks else np.zeros((0, dim), np.float32))
                counts = np.array([len(b) for b in blocks], np.int64)
                starts = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64) if len(counts) else counts
                self._snapshot = _Snapshot(self._generation, ids, matrix,
                                           (matrix * matrix).sum(axis=1, dtype=np.float32), starts)
            return self._snapshot

    def person_scores(self, probes: np.ndarray, snapshot: _Snapshot | None = None) -> tuple[tuple[str, ...], np.ndarray]:
        """(people, (F, P) scores): each probe's best score over each person's photos (in ``snapshot``, default
        the current one: an attempt keeps the one it began with, so its columns stay the same people)."""
        s = snapshot if snapshot is not None else self.snapshot()
        probes = np.atleast_2d(np.asarray(probes, np.float32))
        if not s.ids:
            return s.ids, np.zeros((len(probes), 0), np.float32)
        rows = np.asarray(self.scorer(probes, s.matrix, s.row_norms))
        return s.ids, np.maximum.reduceat(rows, s.starts, axis=1)

    def identify(self, frames: np.ndarray, rule: "IdentifyRule", aggregate: str = "mean") -> "Identification":
        """Several frames' features (F, D) of one walk-up -> one decision (:func:`identify`)."""
        frames = np.asarray(frames, np.float32)
        if frames.size == 0:
            return identify((), np.zeros((0, 0)), rule, aggregate)
        ids, scores = self.person_scores(frames)
        return identify(ids, scores, rule, aggregate, self.generation)


def references_by_person(store: "EmployeeStore", model_id: str) -> dict[str, np.ndarray]:
    """{employee ID: (k, D) features made by ``model_id``} for everyone enrolled (read-only)."""
    people = {}
    for employee in store.search("", limit=max(1, store.count())):
        features = store.reference_features(employee.id, model_id)
        if features.size:
            people[employee.id] = features
    return people


def store_fingerprint(store: "EmployeeStore", model_id: str = "") -> str:
    """The store's reference photos (EmployeeStore.fingerprint) as seen by the index of ``model_id``."""
    return hashlib.sha256(f"{model_id}\n{store.fingerprint()}".encode()).hexdigest()


# -- the decision -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IdentifyRule:
    """Accept the best person iff their fused score >= threshold and it beats the second-best person's by
    at least ``gap`` (with one person enrolled there is no second and the gap always holds)."""

    threshold: float
    gap: float = 0.0

    def __post_init__(self):
        if not valid_threshold(self.threshold) or not (GAP_RANGE[0] <= self.gap <= GAP_RANGE[1]):
            raise ValueError(f"invalid identification rule {self}: threshold in {THRESHOLD_RANGE}, gap in {GAP_RANGE}")

    def accepts(self, best: float, second: float | None) -> bool:
        return best >= self.threshold and (second is None or best - second >= self.gap)


@dataclass(frozen=True)
class Identification:
    accepted: bool
    reason: str
    person_id: str | None = None      # the best candidate (also when not accepted: for the audit)
    score: float | None = None        # their fused score
    second_id: str | None = None
    second_score: float | None = None
    frames: int = 0
    generation: int = 0               # the index generation searched

    @property
    def gap(self) -> float | None:
        if self.score is None or self.second_score is None:
            return None
        return self.score - self.second_score


def identify(people: tuple[str, ...] | list[str], frame_scores: np.ndarray, rule: IdentifyRule,
             aggregate: str = "mean", generation: int = 0) -> Identification:
    """THE 1:N rule on (F frames, P people) scores: fuse per person over frames (mean or median), take the
    best and second-best person, accept only above the threshold with a clear gap. Ties go to the person
    listed first (and fail any gap > 0)."""
    scores = np.asarray(frame_scores, np.float64)
    if scores.ndim != 2 or scores.shape[0] == 0:
        return Identification(False, REASON_NO_FACE, generation=generation)
    if scores.shape[1] == 0:
        return Identification(False, REASON_NOBODY_ENROLLED, frames=scores.shape[0], generation=generation)
    if scores.shape[1] != len(people):
        raise ValueError(f"{scores.shape[1]} score columns for {len(people)} people")
    if aggregate not in ("mean", "median"):
        raise ValueError(f"unknown aggregate {aggregate!r}")
    fused = scores.mean(axis=0) if aggregate == "mean" else np.median(scores, axis=0)
    order = np.argsort(-fused, kind="stable")
    best = int(order[0])
    second = int(order[1]) if len(order) > 1 else None
    second_score = float(fused[second]) if second is not None else None
    accepted = rule.accepts(float(fused[best]), second_score)
    return Identification(accepted, REASON_RECOGNISED if accepted else REASON_NOT_RECOGNISED, people[best],
                          float(fused[best]), people[second] if second is not None else None, second_score,
                          scores.shape[0], generation)


# -- the shipped calibration ----------------------------------------------------------------------------------
def _digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def seal_calibration(body: dict) -> dict:
    """A calibration file's content (the 1:N rule's, the site rule's): ``body`` plus the SHA-256 over it."""
    return dict(body, sha256=_digest(body))


def read_sealed(path: Path, file_format: str, what: str) -> dict:
    """The body of a sealed calibration file (:func:`seal_calibration`) of ``file_format``; WeightsError naming
    ``what`` when it is missing, unreadable, of another format or fails its SHA-256."""
    try:
        data = json.loads(read_model_file(path))
    except FileNotFoundError:
        raise WeightsError(f"{path}: no {what} installed") from None
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: damaged {what} ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != file_format:
        raise WeightsError(f"{path}: not an {what} ({file_format})" if what[0] in "aeiou" else
                           f"{path}: not a {what} ({file_format})")
    body = {k: v for k, v in data.items() if k != "sha256"}
    if data.get("sha256") != _digest(body):
        raise WeightsError(f"{path}: integrity check failed (the {what} is damaged or was modified)")
    return body


def measured_with(engine, model_id: str, head: tuple[float, float]) -> bool:
    """A calibration measured with this engine's features and head (otherwise its numbers mean nothing)."""
    current = head_parameters(engine)
    if engine.model_id != model_id or current is None:
        return False
    return all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6) for a, b in zip(current, head))


@dataclass(frozen=True)
class IdentifyCalibration:
    """The 1:N rule chosen on LFW folds 6-10 and the per-comparison impostor statistics measured there."""

    rule: IdentifyRule
    model_id: str                    # the features it was measured on (FaceEngine.model_id)
    head: tuple[float, float]        # (weight, bias) of the head it was measured with
    impostor_thresholds: np.ndarray  # ascending
    impostor_tail: np.ndarray        # fraction of impostor comparisons scoring >= each threshold
    impostor_comparisons: int
    body: dict

    @classmethod
    def load(cls, path: str | Path = IDENTIFY_CALIBRATION) -> "IdentifyCalibration":
        path = Path(path)
        body = read_sealed(path, CALIBRATION_FORMAT, "identification calibration")
        try:
            rule = IdentifyRule(float(body["rule"]["threshold"]), float(body["rule"]["gap"]))
            impostor = body["impostor"]
            thresholds = np.asarray(impostor["thresholds"], np.float64)
            tail = np.asarray(impostor["tail"], np.float64)
            comparisons = int(impostor["comparisons"])
            head = (float(body["head"]["weight"]), float(body["head"]["bias"]))
            model_id = str(body["model_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"{path}: identification calibration out of range or incomplete ({exc})") from None
        if (thresholds.ndim != 1 or thresholds.shape != tail.shape or len(thresholds) < 2
                or np.any(np.diff(thresholds) <= 0) or np.any((tail < 0) | (tail > 1)) or np.any(np.diff(tail) > 0)
                or comparisons < 1):
            raise WeightsError(f"{path}: identification calibration's impostor table is not a valid tail")
        return cls(rule, model_id, head, thresholds, tail, comparisons, body)

    def matches(self, engine) -> bool:
        """Measured with this engine's features and head (otherwise the rule's numbers mean nothing)."""
        return measured_with(engine, self.model_id, self.head)

    def comparison_far(self, threshold: float) -> float:
        """Fraction of single impostor comparisons (one probe photo, one reference photo of another person)
        scoring >= threshold on folds 6-10 (the table's value at the nearest lower threshold: an over-estimate)."""
        i = int(np.searchsorted(self.impostor_thresholds, threshold, side="right")) - 1
        if i < 0:
            return 1.0
        return float(self.impostor_tail[i])

    def expected_fpir(self, threshold: float, references: int) -> float:
        """Expected false-accept rate per walk-up of someone not enrolled, with ``references`` reference photos
        enrolled in all (each is one impostor comparison; people's scores are the max over their photos):
        1 - (1 - p)^N, p the per-comparison impostor rate at ``threshold``. It ignores the gap rule, which
        only refuses more, so it over-estimates (weights/MODEL_CARD.md compares it with measured rates)."""
        return expected_fpir(self.comparison_far(threshold), references)


def expected_fpir(comparison_far: float, references: int) -> float:
    """1 - (1 - p)^N for N independent impostor comparisons, each accepted with probability p."""
    if references <= 0:
        return 0.0
    p = min(max(float(comparison_far), 0.0), 1.0)
    return float(-np.expm1(references * np.log1p(-p))) if p < 1.0 else 1.0
