"""Migrating an old store (plain JPEG files, float32 BLOBs) to sealed data, in place, one row at a time.

For each plain row: (1) the sealed photo is written under a NEW file name (atomically); (2) one
transaction points the row at it, seals its features and marks it encrypted; (3) the plain file is
deleted. Interrupted anywhere, nothing is lost: before (2) the row still names its intact plain file and
the new file is an orphan; after (2) the row is complete and the plain file is the orphan. Orphans are
removed by the writer's clean-up; the next open simply carries on with the rows still plain.
Runs with the writer lock held. Afterwards the WAL is truncated so no plain copy stays in it
(``secure_delete`` already overwrote the old cells in the database file).
"""

from __future__ import annotations

import logging
from pathlib import Path

from kiosk.io.files import atomic_write_bytes
from kiosk.storage.employees import EmployeeStore, new_photo_file, photo_file

log = logging.getLogger(__name__)


def seal_plain_rows(store: EmployeeStore) -> int:
    """Seal every row not yet encrypted; returns how many were sealed."""
    rows = store.db.query("SELECT id, employee_id, file, features FROM reference_photos WHERE encrypted = 0 "
                          "ORDER BY id")
    if not rows:
        return 0
    log.info("encrypting %d reference photo(s) and feature vector(s) in %s", len(rows), store.photos_dir)
    for ref_id, employee_id, file, blob in rows:
        _seal_row(store, ref_id, employee_id, file, bytes(blob))
    store.db.checkpoint()
    log.info("encrypted %d reference photo(s) and feature vector(s)", len(rows))
    return len(rows)


def _seal_row(store: EmployeeStore, ref_id: int, employee_id: str, file: str, blob: bytes) -> None:
    old = photo_file(store.photos_dir, file)
    new = new_photo_file()
    with store.in_flight([new]):
        try:
            plain = old.read_bytes()
        except FileNotFoundError:  # already missing: the row keeps its features, the report names the photo
            plain = None
            log.warning("photo %s of %s is missing; its features are encrypted all the same", file, employee_id)
        if plain is not None:
            atomic_write_bytes(photo_file(store.photos_dir, new), store.seal_photo_data(employee_id, new, plain))
        _update_row(store, ref_id, employee_id, new, blob)
    _remove_plain(old)


def _update_row(store: EmployeeStore, ref_id: int, employee_id: str, new: str, blob: bytes) -> None:
    with store.db.transaction() as conn:
        changed = conn.execute("UPDATE reference_photos SET file = ?, features = ?, encrypted = 1 "
                               "WHERE id = ? AND encrypted = 0",
                               (new, store.seal_features(employee_id, new, blob), ref_id)).rowcount
    if not changed:  # cannot happen under the writer lock; leave the new file to the orphan clean-up
        log.warning("reference %d changed while it was being encrypted", ref_id)


def _remove_plain(path: Path) -> None:
    path.unlink(missing_ok=True)
