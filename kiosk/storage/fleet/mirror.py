"""A fleet kiosk's local copy of the registry: its ordinary SQLite store (kiosk.sqlite3 + sealed photo
files), kept equal to the registry by ``Mirror.pull``. Verification only ever reads this copy, so it goes
on unchanged while the registry is away.

A pull compares the registry's view (IDs, names, files, which features exist; no bytes) with the copy and
fetches only the bytes of photos and features it lacks. Like enrolment, it writes new photo files first
(atomically), then changes the database in ONE transaction, then deletes the files of removed photos: a
crash anywhere leaves a consistent copy (and orphans the next start removes); the next pull finishes.
Photos and features stay sealed: the bytes are copied as the registry holds them (same data key, same
associated data: employee ID and file name).
"""

from __future__ import annotations

import logging
import threading

from kiosk.io.files import atomic_write_bytes
from kiosk.storage.db import Database
from kiosk.storage.employees import EmployeeStore
from kiosk.storage.fleet import registry

log = logging.getLogger(__name__)


class Mirror:
    def __init__(self, store: EmployeeStore, local: Database):
        self.store = store          # the mirror's EmployeeStore (its plain SQLite methods)
        self.local = local          # fleet.sqlite3: which features version each photo holds, the generation
        self.preferred_model: str | None = None  # the model this kiosk runs (features of it are mirrored first)
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        value = self.local.meta("generation")
        return int(value) if value else -1

    def _choose(self, versions: list[tuple[str, int, int]]) -> tuple[str, int, int] | None:
        for item in versions:
            if item[0] == self.preferred_model:
                return item
        return max(versions, key=lambda v: v[2]) if versions else None

    def pull(self, conn) -> bool:
        """Make the copy equal to the registry; True when something changed."""
        with self._lock:
            return self._pull(conn)

    def _pull(self, conn) -> bool:
        view = registry.view(conn)
        db, store = self.store.db, self.store
        local_photos = {rid: (e, f) for rid, e, f in db.query("SELECT id, employee_id, file FROM reference_photos")}
        local_emps = {i: (n, c) for i, n, c in db.query("SELECT id, name, created FROM employees")}
        held = dict(self.local.query("SELECT reference_id, features_version FROM mirrored"))
        remove = [rid for rid, (e, f) in local_photos.items() if view.photos.get(rid, ("", "", ""))[:2] != (e, f)]
        chosen = {rid: self._choose(view.features.get(rid, [])) for rid in view.photos}
        add = [rid for rid in view.photos if chosen[rid] and (rid not in local_photos or rid in remove)]
        refeature = [rid for rid in view.photos if chosen[rid] and rid in local_photos and rid not in remove
                     and held.get(rid) != chosen[rid][2]]
        gone_emps = [i for i in local_emps if i not in view.employees]
        changed_emps = [i for i, v in view.employees.items() if local_emps.get(i) != v]
        if not (remove or add or refeature or gone_emps or changed_emps):
            self._done(view.generation, {}, [])
            return False
        photos = registry.photo_bytes(conn, add)
        feats = registry.feature_bytes(conn, [(rid, chosen[rid][0]) for rid in add + refeature])
        add = [rid for rid in add if rid in photos and (rid, chosen[rid][0]) in feats]  # deleted meanwhile
        files = [view.photos[rid][1] for rid in add]
        with store.in_flight(files):
            for rid in add:
                atomic_write_bytes(store.photos_dir / view.photos[rid][1], photos[rid])
            with db.transaction() as c:
                c.executemany("DELETE FROM reference_photos WHERE id = ?", [(rid,) for rid in remove])
                c.executemany("DELETE FROM employees WHERE id = ?", [(i,) for i in gone_emps])
                c.executemany("INSERT INTO employees (id, name, created) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE "
                              "SET name = excluded.name, created = excluded.created",
                              [(i, *view.employees[i]) for i in changed_emps])
                for rid in add:
                    employee_id, file, created = view.photos[rid]
                    model_sha, dim, _ = chosen[rid]
                    c.execute("INSERT INTO reference_photos (id, employee_id, file, features, feature_dim, model_sha, "
                              "created, encrypted) VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
                              (rid, employee_id, file, feats[(rid, model_sha)], dim, model_sha, created))
                for rid in refeature:
                    model_sha, dim, _ = chosen[rid]
                    if (rid, model_sha) in feats:
                        c.execute("UPDATE reference_photos SET features = ?, feature_dim = ?, model_sha = ?, "
                                  "encrypted = 1 WHERE id = ?", (feats[(rid, model_sha)], dim, model_sha, rid))
        self._done(view.generation, {rid: chosen[rid][2] for rid in add + refeature}, remove)
        store._remove_files([local_photos[rid][1] for rid in remove])
        if remove or gone_emps:
            db.checkpoint()  # deleted features leave the WAL too
        log.info("mirror: %d photo(s) added, %d removed, %d re-featured, %d employee(s) changed, %d gone "
                 "(registry generation %d)", len(add), len(remove), len(refeature), len(changed_emps), len(gone_emps),
                 view.generation)
        return True

    def _done(self, generation: int, versions: dict[int, int], removed: list[int]) -> None:
        with self.local.transaction() as c:
            c.executemany("DELETE FROM mirrored WHERE reference_id = ?", [(rid,) for rid in removed])
            c.executemany("INSERT INTO mirrored (reference_id, features_version) VALUES (?, ?) ON CONFLICT(reference_id) "
                          "DO UPDATE SET features_version = excluded.features_version", list(versions.items()))
            c.execute("INSERT INTO meta (key, value) VALUES ('generation', ?) ON CONFLICT(key) DO UPDATE SET "
                      "value = excluded.value", (str(generation),))
