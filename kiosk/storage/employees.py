"""Employees and their reference photos: image files beside the database, features in it.

Photos and features are sealed (AES-GCM, kiosk.storage.crypto) with the employee and the photo's file
name as associated data; every read verifies them. Damaged items are reported and never used to verify.

Enrolment writes each photo file first (atomically), then changes the database in ONE transaction, then
deletes replaced files. A crash at any point leaves the database consistent; photo files that no row
refers to (from a crash) are removed by the next writer, and only files no live writer can own: older
than its writer lock and not in flight in this process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import unicodedata
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from kiosk.io.files import atomic_write_bytes, private_dir
from kiosk.io.imageio import decode_image
from kiosk.storage.crypto import DamagedDataError, Sealer, features_aad, photo_aad
from kiosk.storage.db import Database, StorageError
from kiosk.storage.integrity import IntegrityReport, ReferenceDamage
from kiosk.storage.lock import WriterLock
from kiosk.storage.sql import LIKE_ESCAPE, like_contains

log = logging.getLogger(__name__)

MAX_ID_LENGTH = 64
MAX_NAME_LENGTH = 120
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _scripts(text: str) -> set[str]:
    """The scripts of the letters in ``text`` (LATIN, CYRILLIC, GREEK, CJK, ...), from their Unicode names."""
    names = {unicodedata.name(ch, "?").split()[0] for ch in text if ch.isalpha()}
    return {"CJK" if name in _EAST_ASIAN else name for name in names}  # kanji with kana (or hangul): one writing


_EAST_ASIAN = {"CJK", "HIRAGANA", "KATAKANA", "HANGUL", "KATAKANA-HIRAGANA"}


def photo_file(folder: Path, name: str) -> Path:
    """THE path of a photo file named in the database, a backup or the registry: a single plain name inside
    ``folder``, else StorageError (a name such as ``../../config/data.key`` would read, seal or delete a file
    outside the photos folder)."""
    text = str(name)
    if (not text or text in (".", "..") or text.startswith(".") or os.path.basename(text) != text
            or any(ch in text for ch in ("/", "\\", "\x00")) or len(text) > 128):
        raise StorageError(f"refused a photo file name that is not a plain name inside the photos folder: {text[:80]!r}"
                           f" (a damaged or tampered database or backup)")
    return Path(folder) / text


def normal_id(text: str) -> str:
    """THE form of an employee ID, typed, scanned or stored: NFKC (NFC and NFD alike, full-width digits as
    digits), surrounding blanks removed. No check (clean_employee_id checks)."""
    return unicodedata.normalize("NFKC", text or "").strip()


def clean_employee_id(text: str) -> str:
    """THE ID as stored and as looked up: NFKC-normalised (one form for look-alike encodings: NFC/NFD,
    full-width digits), surrounding blanks removed. StorageError if empty, too long, with control or invisible
    format characters (zero-width, bidi overrides) or with letters of more than one script (a Cyrillic 'а'
    inside a Latin ID would make a second, look-alike ID)."""
    value = normal_id(text)
    if not value:
        raise StorageError("the employee ID is empty")
    if len(value) > MAX_ID_LENGTH or _CONTROL.search(value) or any(unicodedata.category(ch) in ("Cc", "Cf", "Co",
                                                                                              "Cs", "Cn")
                                                                       for ch in value):
        raise StorageError(f"the employee ID must be at most {MAX_ID_LENGTH} printable characters (no invisible "
                           f"or control characters)")
    if len(_scripts(value)) > 1:
        raise StorageError("the employee ID mixes letters of several scripts (e.g. a Cyrillic letter that looks "
                           "Latin); use one script")
    return value


# Homoglyphs: letters of Cyrillic and Greek (and a few Latin letters and digits) drawn like another Latin
# letter or digit, each mapped to the one it is taken for; an ID's skeleton is its NFD form through this map
# (the skeleton of Unicode TR 39, section 4, on the characters an employee ID is made of; NFKC, applied to
# every ID first, already folds full-width, mathematical and other compatibility forms). Hand-written and
# small, because no well-kept library gives TR 39 skeletons to this install: ICU's spoof checker comes through
# PyICU, which ships no wheels (it builds against the system ICU with a C++ compiler, which the kiosk's
# install does without); of the pure-Python packages, 'confusables' stopped in 2021 and 'confusable_homoglyphs'
# tells whether one string holds characters of another script, not whether two IDs look alike. These are the
# look-alikes an ID is forged with.
_HOMOGLYPHS = str.maketrans({
    # Cyrillic capitals and small letters
    "А": "A", "В": "B", "Е": "E", "З": "3", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C",
    "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "І": "l", "Ј": "J", "Ԛ": "Q", "Ԝ": "W", "Ү": "Y", "Ӏ": "l",
    "Ѵ": "V", "а": "a", "г": "r", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "ѕ": "s",
    "і": "i", "ј": "j", "ԛ": "q", "ԝ": "w", "һ": "h", "ԁ": "d", "ӏ": "l", "ү": "y", "ѵ": "v",
    # Greek capitals and small letters
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "l", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "Ϲ": "C", "Ϳ": "J", "α": "a", "γ": "y", "ι": "i", "ν": "v",
    "ο": "o", "ρ": "p", "υ": "u", "ϲ": "c", "ϳ": "j",
    # Latin letters and digits taken for one another (TR 39: 0 -> O; 1, I and | -> l)
    "0": "O", "1": "l", "I": "l", "|": "l", "ǀ": "l", "ı": "i", "ɑ": "a", "ɡ": "g",
})


def id_skeleton(text: str) -> str:
    """What an employee ID looks like: two IDs with the same skeleton differ only by homoglyphs (a Cyrillic
    'Е' for a Latin 'E', a zero for an 'O'), and a second one is refused at enrolment."""
    mapped = unicodedata.normalize("NFD", normal_id(text)).translate(_HOMOGLYPHS)
    return unicodedata.normalize("NFD", mapped)


def clean_name(text: str) -> str:
    """The name as stored: NFC, blanks collapsed; StorageError if empty, too long or with control or invisible
    format characters (NUL, ESC, bidi overrides)."""
    value = " ".join(unicodedata.normalize("NFC", text or "").split())
    if not value:
        raise StorageError("the name is empty")
    if len(value) > MAX_NAME_LENGTH:
        raise StorageError(f"the name must be at most {MAX_NAME_LENGTH} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs", "Cn") for ch in value):
        raise StorageError("the name holds control or invisible characters")
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
    features: np.ndarray  # float32 (D,); empty when damaged
    model_sha: str
    created: str
    features_damage: str = ""  # why the features cannot be used ("" when they are fine)
    encrypted: bool = True     # False only for a row of an old store not yet sealed


@dataclass
class NewPhoto:
    image: np.ndarray      # BGR uint8, stored as a high-quality JPEG
    features: np.ndarray   # float32 (D,)


@dataclass(frozen=True)
class SealedReference:
    """A reference photo as it is stored, here and in the fleet registry: its file name, the sealed JPEG, the
    sealed features (each with the employee ID and the file name as associated data) and their size."""

    file: str
    photo: bytes      # sealed
    features: bytes   # sealed
    dim: int


def _encode(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise StorageError("the photo could not be encoded as JPEG")
    return data.tobytes()


def _blob(features: np.ndarray) -> bytes:
    return np.ascontiguousarray(features, dtype="<f4").reshape(-1).tobytes()


def new_photo_file() -> str:
    return f"{uuid.uuid4().hex}.enc"


_SELECT = ("SELECT id, employee_id, file, features, feature_dim, model_sha, created, encrypted "
           "FROM reference_photos")

# Photo files being written by this process and not yet committed, per photos folder (every store of this
# process on that folder sees them; stores on other folders share nothing): orphan clean-up leaves them alone.
_in_flight: dict[str, set[str]] = {}
_in_flight_guard = threading.Lock()


class EmployeeStore:
    """``sealer`` seals and opens the biometric data; ``lock`` is this process's writer lock (None: the
    store was opened read-only, and orphan clean-up is refused)."""

    def __init__(self, db: Database, photos_dir: str | Path, sealer: Sealer | None,
                 lock: WriterLock | None = None):
        self.db = db
        self.sealer = sealer
        self.lock = lock
        self.photos_dir = private_dir(photos_dir) if lock is not None else Path(photos_dir)

    # -- reading -----------------------------------------------------------------------------------------
    def get(self, employee_id: str) -> Employee | None:
        row = self.db.query_one(
            "SELECT e.id, e.name, e.created, COUNT(r.id) FROM employees e "
            "LEFT JOIN reference_photos r ON r.employee_id = e.id WHERE e.id = ? GROUP BY e.id",
            (normal_id(employee_id),))
        return Employee(*row) if row else None

    def search(self, text: str = "", limit: int = 1000) -> list[Employee]:
        """Employees whose ID or name contains ``text`` (case-insensitive), sorted by ID."""
        pattern = like_contains(text)
        rows = self.db.query(
            "SELECT e.id, e.name, e.created, COUNT(r.id) FROM employees e "
            "LEFT JOIN reference_photos r ON r.employee_id = e.id "
            f"WHERE e.id LIKE ? {LIKE_ESCAPE} OR e.name LIKE ? {LIKE_ESCAPE} "
            "GROUP BY e.id ORDER BY e.id LIMIT ?", (pattern, pattern, limit))
        return [Employee(*row) for row in rows]

    def count(self) -> int:
        return int(self.db.query_one("SELECT COUNT(*) FROM employees")[0])

    def references(self, employee_id: str) -> list[ReferencePhoto]:
        """All the person's reference photos, damaged ones included (``features_damage`` says why)."""
        rows = self.db.query(_SELECT + " WHERE employee_id = ? ORDER BY id", (normal_id(employee_id),))
        return [self._reference(row) for row in rows]

    def reference_features(self, employee_id: str, model_sha: str | None = None) -> np.ndarray:
        """(N, D) float32 features of the person's photos (only those made by ``model_sha`` if given).
        A reference whose features or photo file fail their check is left out, as the store check reports
        ("damaged and not used for verification"): nobody is verified against a reference that is damaged."""
        refs = [r for r in self.references(employee_id)
                if not r.features_damage and (model_sha is None or r.model_sha == model_sha) and self._photo_intact(r)]
        if not refs:
            return np.zeros((0, 0), np.float32)
        return np.stack([r.features for r in refs])

    def _photo_intact(self, reference: ReferencePhoto) -> bool:
        """The reference's photo file is there and opens (its AES-GCM tag checks); said in the log if not."""
        try:
            self._photo_bytes(reference.employee_id, reference.path.name, reference.encrypted)
        except StorageError as exc:
            log.warning("%s: reference %d of %s not used for verification", exc, reference.id, reference.employee_id)
            return False
        return True

    def fingerprint(self) -> str:
        """A cheap digest of which reference photos exist and which model made their features (one query, no
        decryption): it changes with every enrolment, re-enrolment, deletion and re-embedding."""
        sha = hashlib.sha256()
        for row in self.db.query("SELECT id, employee_id, model_sha, created FROM reference_photos ORDER BY id"):
            sha.update(repr(tuple(row)).encode())
        return sha.hexdigest()

    def stale_references(self, model_sha: str) -> list[ReferencePhoto]:
        """Photos whose features must be recomputed: made with other weights, or damaged."""
        rows = self.db.query(_SELECT + " ORDER BY id")
        refs = [self._reference(row) for row in rows]
        return [r for r in refs if r.model_sha != model_sha or r.features_damage]

    def load_photo(self, reference: ReferencePhoto) -> np.ndarray:
        """The photo as BGR image; StorageError if it is missing, damaged or its key is unavailable."""
        return decode_image(self._photo_bytes(reference.employee_id, reference.path.name, reference.encrypted),
                            reference.path.name)

    def photo_files(self, employee_id: str) -> list[Path]:
        return [r.path for r in self.references(employee_id)]

    def _photo_bytes(self, employee_id: str, file: str, encrypted: bool) -> bytes:
        path = photo_file(self.photos_dir, file)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StorageError(f"the photo file {path} of {employee_id} is missing; re-enrol {employee_id} or "
                               f"restore a backup") from None
        except OSError as exc:
            raise StorageError(f"the photo file {path} of {employee_id} cannot be read ({exc.strerror or exc})") \
                from None
        if not encrypted:
            return data
        try:
            return self._sealer().open(data, photo_aad(employee_id, file), f"the photo {path} of {employee_id}")
        except DamagedDataError as exc:
            raise DamagedDataError(f"{exc}; re-enrol {employee_id} or restore a backup") from None

    def _sealer(self) -> Sealer:
        if self.sealer is None:
            raise StorageError("the data key is not available: sealed photos and features cannot be read")
        return self.sealer

    # -- sealing: the one place photos and features are sealed (enrolment, re-embedding, the fleet, old stores)
    def seal_photo_data(self, employee_id: str, file: str, data: bytes) -> bytes:
        """A photo file's bytes (JPEG), sealed for ``file`` of ``employee_id``."""
        return self._sealer().seal(data, photo_aad(employee_id, file))

    def seal_features(self, employee_id: str, file: str, features: np.ndarray | bytes) -> bytes:
        """A feature vector (or its float32 little-endian bytes, as an old store holds them), sealed for
        ``file`` of ``employee_id``."""
        blob = features if isinstance(features, bytes) else _blob(features)
        return self._sealer().seal(blob, features_aad(employee_id, file))

    def seal_image(self, employee_id: str, file: str, image: np.ndarray) -> bytes:
        """A photo (BGR) as the sealed JPEG of ``file``."""
        return self.seal_photo_data(employee_id, file, _encode(image))

    def seal_reference(self, employee_id: str, photo: NewPhoto) -> SealedReference:
        """A new reference photo, under a new file name, sealed (the JPEG and the features)."""
        file = new_photo_file()
        return SealedReference(file, self.seal_image(employee_id, file, photo.image),
                               self.seal_features(employee_id, file, photo.features),
                               int(np.asarray(photo.features).size))

    def _reference(self, row: tuple) -> ReferencePhoto:
        ref_id, employee_id, file, blob, dim, model_sha, created, encrypted = row
        features, damage = self._features(employee_id, file, blob, int(dim), bool(encrypted))
        return ReferencePhoto(ref_id, employee_id, photo_file(self.photos_dir, file), features, model_sha, created, damage,
                              bool(encrypted))

    def _features(self, employee_id: str, file: str, blob: bytes, dim: int,
                  encrypted: bool) -> tuple[np.ndarray, str]:
        empty = np.zeros(0, np.float32)
        data = bytes(blob)
        if encrypted:
            try:
                data = self._sealer().open(data, features_aad(employee_id, file), "the feature vector")
            except DamagedDataError as exc:
                return empty, str(exc)
        if len(data) != 4 * dim or dim == 0:
            return empty, f"the feature vector has {len(data)} bytes, not {dim} float32 values"
        return np.frombuffer(data, dtype="<f4").astype(np.float32), ""

    def check(self, reference_ids: list[int] | None = None) -> IntegrityReport:
        """Verify every reference (or those named): features and photo file, against their checksums."""
        rows = self.db.query(_SELECT + " ORDER BY id")
        if reference_ids is not None:
            wanted = set(reference_ids)
            rows = [r for r in rows if r[0] in wanted]
        damage = []
        for row in rows:
            ref = self._reference(row)
            try:
                self._photo_bytes(ref.employee_id, ref.path.name, ref.encrypted)
                photo = ""
            except StorageError as exc:
                photo = str(exc)
            if ref.features_damage or photo:
                damage.append(ReferenceDamage(ref.employee_id, ref.id, ref.path.name, ref.features_damage, photo))
        return IntegrityReport(len(rows), tuple(damage))

    # -- writing -----------------------------------------------------------------------------------------
    @contextmanager
    def in_flight(self, files: list[str]):
        """Mark photo files this process is writing, so that orphan clean-up leaves them alone."""
        key = os.path.realpath(self.photos_dir)
        with _in_flight_guard:
            _in_flight.setdefault(key, set()).update(files)
        try:
            yield
        finally:
            with _in_flight_guard:
                busy = _in_flight[key]
                busy.difference_update(files)
                if not busy:
                    del _in_flight[key]

    def _require_writer(self) -> None:
        if self.lock is None:
            raise StorageError("the store was opened read-only")

    def _checked_enrolment(self, employee_id: str, name: str, photos: list[NewPhoto]) -> tuple[str, str]:
        """The ID and name as stored; StorageError when the store is read-only or the enrolment is not valid."""
        self._require_writer()
        employee_id, name = clean_employee_id(employee_id), clean_name(name)
        self._refuse_look_alike(employee_id)
        if not photos:
            raise StorageError(f"{employee_id}: at least one reference photo is needed")
        dims = {int(np.asarray(p.features).size) for p in photos}
        if len(dims) != 1 or 0 in dims:
            raise StorageError(f"{employee_id}: the photos' feature vectors differ in size or are empty")
        return employee_id, name

    def _refuse_look_alike(self, employee_id: str) -> None:
        """StorageError when a new ID differs from one already enrolled only by homoglyphs (id_skeleton): it
        would read as that employee's ID in the list and the audit log. Re-enrolling an ID is not refused."""
        mine = id_skeleton(employee_id)
        others = [other for (other,) in self.db.query("SELECT id FROM employees")]
        if employee_id in others:
            return
        for other in others:
            if id_skeleton(other) == mine:
                shown = employee_id if employee_id.isascii() else f"{employee_id} ({ascii(employee_id)[1:-1]})"
                raise StorageError(f"the employee ID {shown} looks like {other}, which is already enrolled (a "
                                   f"letter of another script, or a digit and a letter, drawn alike); choose an ID "
                                   f"that reads differently")

    def enrol(self, employee_id: str, name: str, photos: list[NewPhoto], model_sha: str,
              replace: bool = True) -> Employee:
        """Create or update an employee with ``photos``; ``replace`` drops their previous photos."""
        employee_id, name = self._checked_enrolment(employee_id, name, photos)
        self._sealer()  # without the key: refused before anything is written
        files = [new_photo_file() for _ in photos]
        with self.in_flight(files):
            written: list[str] = []
            try:
                for file, photo in zip(files, photos, strict=True):  # 1. files, each written atomically
                    atomic_write_bytes(photo_file(self.photos_dir, file), self.seal_image(employee_id, file, photo.image))
                    written.append(file)
                with self.db.transaction() as conn:  # 2. all rows, or none
                    old = [f for (f,) in conn.execute("SELECT file FROM reference_photos WHERE employee_id = ?",
                                                      (employee_id,))] if replace else []
                    conn.execute("INSERT INTO employees (id, name, created) VALUES (?, ?, ?) "
                                 "ON CONFLICT(id) DO UPDATE SET name = excluded.name", (employee_id, name, now_iso()))
                    if replace:
                        conn.execute("DELETE FROM reference_photos WHERE employee_id = ?", (employee_id,))
                    for file, photo in zip(files, photos, strict=True):
                        conn.execute("INSERT INTO reference_photos (employee_id, file, features, feature_dim, "
                                     "model_sha, created, encrypted) VALUES (?, ?, ?, ?, ?, ?, 1)",
                                     (employee_id, file, self.seal_features(employee_id, file, photo.features),
                                      int(np.asarray(photo.features).size), model_sha, now_iso()))
            except BaseException:
                for file in written:
                    photo_file(self.photos_dir, file).unlink(missing_ok=True)
                raise
        self._remove_files(old)  # 3. replaced photos (a crash here leaves orphans, removed at next start)
        if old:
            self.db.checkpoint()
        log.info("enrolled %s with %d photo(s)%s", employee_id, len(photos), " (replaced)" if old else "")
        return self.get(employee_id)

    def update_features(self, reference_id: int, features: np.ndarray, model_sha: str) -> None:
        self._require_writer()
        self._sealer()  # without the key: refused before anything is read
        with self.db.transaction() as conn:
            row = conn.execute("SELECT employee_id, file FROM reference_photos WHERE id = ?",
                               (reference_id,)).fetchone()
            if row is None:
                return
            employee_id, file = row
            conn.execute("UPDATE reference_photos SET features = ?, feature_dim = ?, model_sha = ?, encrypted = 1 "
                         "WHERE id = ?", (self.seal_features(employee_id, file, features),
                                          int(np.asarray(features).size), model_sha, reference_id))

    def delete(self, employee_id: str) -> bool:
        """Remove the employee, their features and their photo files. False if there was no such ID."""
        self._require_writer()
        employee_id = normal_id(employee_id)
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
        """Delete photo files (and temp files) that no database row refers to and that no live writer can
        own: only with the writer lock held (no other writer lives), only files older than this process's
        lock (left by a writer that has ended), and never a file this process is writing."""
        self._require_writer()
        known = {f for (f,) in self.db.query("SELECT file FROM reference_photos")}
        with _in_flight_guard:
            busy = set(_in_flight.get(os.path.realpath(self.photos_dir), ()))
        removed = 0
        for path in self.photos_dir.iterdir():
            if path.name in known or path.name in busy:
                continue
            try:
                info = path.stat()
                if not path.is_file() or info.st_mtime_ns > self.lock.acquired_ns:
                    continue
                path.unlink()
                removed += 1
            except FileNotFoundError:
                continue
        if removed:
            log.warning("removed %d orphaned photo file(s) from %s (an interrupted enrolment?)",
                        removed, self.photos_dir)
        return removed

    def _remove_files(self, files: list[str]) -> None:
        for file in files:
            try:
                photo_file(self.photos_dir, file).unlink(missing_ok=True)
            except StorageError as exc:  # a tampered name: never delete anything outside the photos folder
                log.error("%s", exc)
            except OSError as exc:
                log.warning("cannot delete photo %s (%s); it will be removed at next start", file, exc)
