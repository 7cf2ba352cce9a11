"""Dataset readers: folders of identities, the LFW pairs.txt protocol, CSV pair files."""

from __future__ import annotations

import csv
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from kiosk.errors import DatasetError
from kiosk.io.imageio import is_image_file


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
        images = sorted(f for f in person.iterdir() if is_image_file(f))
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


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def _pair_path(csv_file: Path, folder: Path, value: str, line: int, column: str, allow_outside: bool) -> Path:
    """A path from the CSV, relative to its folder; refused (unless allowed) if it leads out of that folder:
    absolute, with '..', or through a symbolic link. Returned resolved, so the file checked is the file read."""
    text = value.strip()
    if not text:
        raise DatasetError(f"{csv_file}: line {line}: '{column}' is empty")
    path = Path(text)
    if path.is_absolute() and not allow_outside:
        raise DatasetError(f"{csv_file}: line {line}: '{column}' is an absolute path ({text!r}); paths must be "
                           f"relative to the CSV's folder (or pass --allow-outside)")
    try:
        resolved = (folder / path).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long
        raise DatasetError(f"{csv_file}: line {line}: '{column}' cannot be resolved ({exc})") from None
    if not allow_outside and not _inside(resolved, folder):
        raise DatasetError(f"{csv_file}: line {line}: '{column}' leads outside the CSV's folder ({text!r}); "
                           f"pass --allow-outside to read it anyway")
    return resolved


MAX_LIST_BYTES = 64 * 1024 * 1024  # a list of photo pairs or labels: far more than any real one


def read_small_file(path: Path, limit: int = MAX_LIST_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; DatasetError for anything else (a FIFO or a
    device would hang or never end, /dev/zero would fill the memory)."""
    try:
        with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise DatasetError(f"{path}: not a regular file (a FIFO, a device or a folder?)")
            data = f.read(limit + 1)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise DatasetError(f"{path}: larger than {limit // (1024 * 1024)} MB; not a list of photos")
    return data


def read_csv_text(csv_file: Path, wanted: str) -> str:
    """The text of a small CSV file (read_small_file), as UTF-8 (a BOM allowed); DatasetError naming the line
    for NUL bytes or bytes that are not UTF-8, and for an empty file (``wanted``: what it should hold)."""
    data = read_small_file(csv_file)
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DatasetError(f"{csv_file}: line {_line_of(data, nul)}: NUL byte (not a text file?)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{csv_file}: line {_line_of(data, exc.start)}: not UTF-8 text "
                           f"(byte {data[exc.start]:#04x}); save the file as UTF-8") from None
    if not text.strip():
        raise DatasetError(f"{csv_file}: the file is empty; it needs {wanted}")
    return text


def read_pairs_csv(csv_file: str | Path, allow_outside: bool = False) -> list[Pair]:
    """A CSV with header left,right,same (paths relative to the CSV's folder; same is 1/0/true/false).

    Anything malformed raises DatasetError naming the line: bytes that are not UTF-8, NUL bytes, an empty
    file, a header without left/right/same, a row with missing or extra fields. Image paths must stay
    inside the CSV's folder (symbolic links resolved) unless ``allow_outside``.
    """
    csv_file = Path(csv_file)
    text = read_csv_text(csv_file, "a header 'left,right,same' and rows")
    folder = csv_file.parent.resolve()
    reader = csv.reader(io.StringIO(text, newline=""))
    truthy, falsy = {"1", "true", "yes", "same"}, {"0", "false", "no", "different"}
    pairs: list[Pair] = []
    columns: dict[str, int] = {}
    header_width = header_line = 0
    try:
        for row in reader:
            line = reader.line_num
            if not any(field.strip() for field in row):
                continue  # blank line
            if not columns:
                names = [field.strip().lower() for field in row]
                if not {"left", "right", "same"} <= set(names) or len(set(names)) != len(names):
                    raise DatasetError(f"{csv_file}: line {line}: the header must name the columns left,right,same "
                                       f"(once each), got {','.join(row)!r}")
                columns = {name: names.index(name) for name in ("left", "right", "same")}
                header_width, header_line = len(names), line
                continue
            if len(row) != header_width:
                raise DatasetError(f"{csv_file}: line {line}: {len(row)} fields, the header has {header_width}")
            flag = row[columns["same"]].strip().lower()
            if flag not in truthy | falsy:
                raise DatasetError(f"{csv_file}: line {line}: 'same' must be 1/0 or true/false, "
                                   f"got {row[columns['same']]!r}")
            left, right = (_pair_path(csv_file, folder, row[columns[c]], line, c, allow_outside)
                           for c in ("left", "right"))
            pairs.append(Pair(left, right, flag in truthy))
    except csv.Error as exc:  # a quote left open, a field over the size limit
        raise DatasetError(f"{csv_file}: line {reader.line_num}: malformed CSV ({exc})") from None
    if not pairs:
        raise DatasetError(f"{csv_file}: line {header_line}: no pairs after the header")
    return pairs
