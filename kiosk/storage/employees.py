"""Employees and their reference photos: image files beside the database, features in it.

Enrolment writes each photo file first (atomically), then changes the database in ONE transaction, then
deletes replaced files. A crash at any point leaves the database consistent; photo files that no row
refers to (from a crash) are removed when the store is next opened.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from ..imageio import read_image
from .db import Database, StorageError
from .files import atomic_write_bytes, private_dir

log = logging.getLogger(__name__)

MAX_ID_LENGTH = 64
MAX_NAME_LENGTH = 120
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def clean_employee_id(text: str) -> str:
    """The ID as stored: surrounding blanks removed; StorageError if empty, too long or with control chars."""
    value = (text or "").strip()
    if not value:
        raise StorageError("the employee ID is empty")
    if len(value) > MAX_ID_LENGTH or _CONTROL.search(value):
        raise StorageError(f"the employee ID must be at most {MAX_ID_LENGTH} printable characters")
    return value


def clean_name(text: str) -> str:
    value = " ".join((text or "").split())
    if not value:
        raise StorageError("the name is empty")
    if len(value) > MAX_NAME_LENGTH:
        raise StorageError(f"the name must be at most {MAX_NAME_LENGTH} characters")
    return value


@dataclass(frozen=True)
class Employee:
    id: str
    name: str
    created: str
    photo_count: int


@dataclass(frozen=True)
class ReferencePhoto:
    id: int
    employee_id: str
    path: Path
    features: np.ndarray  # float32 (D,)
    model_sha: str
    created: str


@dataclass
class NewPhoto:
    image: np.ndarray      # BGR uint8, stored as a high-quality JPEG
    features: np.ndarray   # float32 (D,)


def _encode(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise StorageError("the photo could not be encoded as JPEG")
    return data.tobytes()


def _blob(features: np.ndarray) -> bytes:
    return np.ascontiguousarray(features, dtype="<f4").reshape(-1).tobytes()


class EmployeeStore:
    def __init__(self, db: Database, photos_dir: str | Path):
        self.db = db
        self.photos_dir = private_dir(photos_dir)
        self.cleanup_orphans()

    # -- reading -----------------------------------------------------------------------------------------
    def get(self, employee_id: str) -> Employee | None:
        row = self.db.query_one(
            "SELECT e.id, e.name, e.created, COUNT(r.id) FROM employees e "
            "LEFT JOIN reference_photos r ON r.employee_id = e.id WHERE e.id = ? GROUP BY e.id",
            (employee_id.strip(),))
        return Employee(*row) if row else None

    def search(self, text: str = "", limit: int = 1000) -> list[Employee]:
        """Employees whose ID or name contains ``text`` (case-insensitive), sorted by ID."""
        pattern = "%" + text.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self.db.query(
            "SELECT e.id, e.name, e.created, COUNT(r.id) FROM employees e "
            "LEFT JOIN reference_photos r ON r.employee_id = e.id "
            "WHERE e.id LIKE ? ESCAPE '\\' OR e.name LIKE ? ESCAPE '\\' "
            "GROUP BY e.id ORDER BY e.id LIMIT ?", (pattern, pattern, limit))
        return [Employee(*row) for row in rows]

    def count(self) -> int:
        return int(self.db.query_one("SELECT COUNT(*) FROM employees")[0])

    def references(self, employee_id: str) -> list[ReferencePhoto]:
        rows = self.db.query("SELECT id, employee_id, file, features, model_sha, created FROM reference_photos "
                             "WHERE employee_id = ? ORDER BY id", (employee_id.strip(),))
        return [self._reference(row) for row in rows]

    def reference_features(self, employee_id: str, model_sha: str | None = None) -> np.ndarray:
        """(N, D) float32 features of the person's photos (only those made by ``model_sha`` if given)."""
        refs = [r for r in self.references(employee_id) if model_sha is None or r.model_sha == model_sha]
        if not refs:
            return np.zeros((0, 0), np.float32)
        return np.stack([r.features for r in refs])

    def stale_references(self, model_sha: str) -> list[ReferencePhoto]:
        """Photos whose features were computed with other weights (to be recomputed)."""
        rows = self.db.query("SELECT id, employee_id, file, features, model_sha, created FROM reference_photos "
                             "WHERE model_sha != ? ORDER BY id", (model_sha,))
        return [self._reference(row) for row in rows]

    def load_photo(self, reference: ReferencePhoto) -> np.ndarray:
        return read_image(reference.path)

    def photo_files(self, employee_id: str) -> list[Path]:
        return [r.path for r in self.references(employee_id)]

    def _reference(self, row: tuple) -> ReferencePhoto:
        ref_id, employee_id, file, blob, model_sha, created = row
        return ReferencePhoto(ref_id, employee_id, self.photos_dir / file,
                              np.frombuffer(blob, dtype="<f4").astype(np.float32), model_sha, created)

    # -- writing -----------------------------------------------------------------------------------------
    def enrol(self, employee_id: str, name: str, photos: list[NewPhoto], model_sha: str,
              replace: bool = True) -> Employee:
        """Create or update an employee with ``photos``; ``replace`` drops their previous photos."""
        employee_id, name = clean_employee_id(employee_id), clean_name(name)
        if not photos:
            raise StorageError(f"{employee_id}: at least one reference photo is needed")
        dims = {int(np.asarray(p.features).size) for p in photos}
        if len(dims) != 1 or 0 in dims:
            raise StorageError(f"{employee_id}: the photos' feature vectors differ in size or are empty")
        written: list[str] = []
        try:
            for photo in photos:  # 1. files, each written atomically
                file = f"{uuid.uuid4().hex}.jpg"
                atomic_write_bytes(self.photos_dir / file, _encode(photo.image))
                written.append(file)
            with self.db.transaction() as conn:  # 2. all rows, or none
                old = [f for (f,) in conn.execute("SELECT file FROM reference_photos WHERE employee_id = ?",
                                                  (employee_id,))] if replace else []
                conn.execute("INSERT INTO employees (id, name, created) VALUES (?, ?, ?) "
                             "ON CONFLICT(id) DO UPDATE SET name = excluded.name", (employee_id, name, now_iso()))
                if replace:
                    conn.execute("DELETE FROM reference_photos WHERE employee_id = ?", (employee_id,))
                for file, photo in zip(written, photos, strict=True):
                    conn.execute("INSERT INTO reference_photos (employee_id, file, features, feature_dim, model_sha, "
                                 "created) VALUES (?, ?, ?, ?, ?, ?)",
                                 (employee_id, file, _blob(photo.features), int(np.asarray(photo.features).size),
                                  model_sha, now_iso()))
        except BaseException:
            for file in written:
                (self.photos_dir / file).unlink(missing_ok=True)
            raise
        self._remove_files(old)  # 3. replaced photos (a crash here leaves orphans, removed at next start)
        if old:
            self.db.checkpoint()
        log.info("enrolled %s with %d photo(s)%s", employee_id, len(photos), " (replaced)" if old else "")
        return self.get(employee_id)

    def update_features(self, reference_id: int, features: np.ndarray, model_sha: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE reference_photos SET features = ?, feature_dim = ?, model_sha = ? WHERE id = ?",
                         (_blob(features), int(np.asarray(features).size), model_sha, reference_id))

    def delete(self, employee_id: str) -> bool:
        """Remove the employee, their features and their photo files. False if there was no such ID."""
        employee_id = employee_id.strip()
        with self.db.transaction() as conn:
            files = [f for (f,) in conn.execute("SELECT file FROM reference_photos WHERE employee_id = ?",
                                                (employee_id,))]
            conn.execute("DELETE FROM reference_photos WHERE employee_id = ?", (employee_id,))
            deleted = conn.execute("DELETE FROM employees WHERE id = ?", (employee_id,)).rowcount
        self._remove_files(files)
        self.db.checkpoint()
        if deleted:
            log.info("deleted %s and %d photo(s)", employee_id, len(files))
        return bool(deleted)

    def cleanup_orphans(self) -> int:
        """Delete photo files (and temp files) that no database row refers to."""
        known = {f for (f,) in self.db.query("SELECT file FROM reference_photos")}
        removed = 0
        for path in self.photos_dir.iterdir():
            if path.is_file() and path.name not in known:
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.warning("removed %d orphaned photo file(s) from %s (an interrupted enrolment?)",
                        removed, self.photos_dir)
        missing = [f for f in known if not (self.photos_dir / f).is_file()]
        if missing:
            log.warning("%d reference photo file(s) are missing from %s; their features still work but cannot "
                        "be recomputed for new weights", len(missing), self.photos_dir)
        return removed

    def _remove_files(self, files: list[str]) -> None:
        for file in files:
            try:
                (self.photos_dir / file).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("cannot delete photo %s (%s); it will be removed at next start", file, exc)
