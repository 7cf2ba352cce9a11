"""Dataset readers: folders of identities, the LFW pairs.txt protocol, CSV pair files."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from .errors import DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True)
class Pair:
    left: Path
    right: Path
    same: bool
    fold: int = 0


def list_identities(root: str | Path) -> dict[str, list[Path]]:
    """A folder of identities (root/<person>/<image>) -> {person: sorted image paths}."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    people = {}
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(f for f in person.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            people[person.name] = images
    if not people:
        raise DatasetError(f"{root}: no identity folders with images found")
    return people


def parse_folds(text: str, available: int = 10) -> list[int]:
    """'1-5' or '1,3,7' or '1-3,9' -> sorted fold numbers (1-based)."""
    folds: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                folds.update(range(lo, hi + 1))
            else:
                folds.add(int(part))
    except ValueError:
        raise DatasetError(f"folds {text!r}: expected a list such as 1-5 or 1,3,7") from None
    if not folds or min(folds) < 1 or max(folds) > available:
        raise DatasetError(f"folds {text!r}: choose folds between 1 and {available}")
    return sorted(folds)


def lfw_image_path(root: Path, name: str, number: str | int) -> Path:
    return root / name / f"{name}_{int(number):04d}.jpg"


def read_lfw_pairs(pairs_file: str | Path, root: str | Path, folds: list[int] | None = None) -> list[Pair]:
    """The LFW View 2 pairs (first line 'folds<TAB>n'), each tagged with its 1-based fold."""
    pairs_file, root = Path(pairs_file), Path(root)
    try:
        lines = pairs_file.read_text().strip().splitlines()
    except OSError as exc:
        raise DatasetError(f"{pairs_file}: cannot read the pairs file ({exc.strerror or exc})") from None
    try:
        n_folds, per_half = (int(v) for v in lines[0].split())
    except (ValueError, IndexError):
        raise DatasetError(f"{pairs_file}: first line must be '<folds> <pairs per half-fold>'") from None
    if len(lines) - 1 != n_folds * 2 * per_half:
        raise DatasetError(f"{pairs_file}: expected {n_folds * 2 * per_half} pairs, found {len(lines) - 1}")
    wanted = set(folds or range(1, n_folds + 1))
    pairs = []
    for index, line in enumerate(lines[1:]):
        fold = index // (2 * per_half) + 1
        if fold not in wanted:
            continue
        fields = line.split()
        if len(fields) == 3:
            name, a, b = fields
            pairs.append(Pair(lfw_image_path(root, name, a), lfw_image_path(root, name, b), True, fold))
        elif len(fields) == 4:
            n1, a, n2, b = fields
            pairs.append(Pair(lfw_image_path(root, n1, a), lfw_image_path(root, n2, b), False, fold))
        else:
            raise DatasetError(f"{pairs_file}: line {index + 2} is malformed: {line!r}")
    return pairs


def people_in_pairs(pairs: list[Pair]) -> set[str]:
    """Identity names (parent folder names) appearing in the pairs."""
    return {p.parent.name for pair in pairs for p in (pair.left, pair.right)}


def read_pairs_csv(csv_file: str | Path) -> list[Pair]:
    """A CSV with header left,right,same (paths relative to the CSV's folder; same is 1/0/true/false)."""
    csv_file = Path(csv_file)
    try:
        with csv_file.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise DatasetError(f"{csv_file}: cannot read ({exc.strerror or exc})") from None
    if not rows or not {"left", "right", "same"} <= set(rows[0]):
        raise DatasetError(f"{csv_file}: needs a header 'left,right,same' and at least one row")
    truthy, falsy = {"1", "true", "yes", "same"}, {"0", "false", "no", "different"}
    pairs = []
    for line, row in enumerate(rows, start=2):
        flag = row["same"].strip().lower()
        if flag not in truthy | falsy:
            raise DatasetError(f"{csv_file}: line {line}: 'same' must be 1/0 or true/false, got {row['same']!r}")
        pairs.append(Pair(csv_file.parent / row["left"].strip(), csv_file.parent / row["right"].strip(), flag in truthy))
    return pairs
