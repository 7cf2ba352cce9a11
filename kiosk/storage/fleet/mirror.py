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
from dataclasses import dataclass

from kiosk.io.files import atomic_write_bytes
from kiosk.storage.db import Database
from kiosk.storage.employees import EmployeeStore, photo_file
from kiosk.storage.fleet import registry

log = logging.getLogger(__name__)


@dataclass
class _Plan:
    """One pull's comparison of the registry's view with the copy."""

    view: registry.RegistryView
    local_photos: dict[int, tuple[str, str]]            # the copy's photos: id -> (employee_id, file)
    chosen: dict[int, tuple[str, int, int] | None]      # the features version mirrored for each registry photo
    remove: list[int]       # photos of the copy gone from the registry (or changed: removed, then added)
    add: list[int]          # registry photos the copy lacks
    refeature: list[int]    # photos whose chosen features differ from those the copy holds
    gone_emps: list[str]    # employees gone from the registry
    changed_emps: list[str]  # employees new or renamed in the registry

    @property
    def unchanged(self) -> bool:
        return not (self.remove or self.add or self.refeature or self.gone_emps or self.changed_emps)


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
        plan = self._plan(registry.view(conn))
        if plan.unchanged:
            self._done(plan.view.generation, {}, [])
            return False
        photos, feats = self._fetch(conn, plan)
        self._apply(plan, photos, feats)
        self._done(plan.view.generation, {rid: plan.chosen[rid][2] for rid in plan.add + plan.refeature}, plan.remove)
        self._clean_up(plan)
        return True

    # -- one pull, step by step ----------------------------------------------------------------------------
    def _plan(self, view: registry.RegistryView) -> _Plan:
        """What differs between the registry's ``view`` and the copy (no bytes read yet)."""
        db = self.store.db
        local_photos = {rid: (e, f) for rid, e, f in db.query("SELECT id, employee_id, file FROM reference_photos")}
        local_emps = {i: (n, c) for i, n, c in db.query("SELECT id, name, created FROM employees")}
        held = dict(self.local.query("SELECT reference_id, features_version FROM mirrored"))
        chosen = {rid: self._choose(view.features.get(rid, [])) for rid in view.photos}
        remove = [rid for rid, (e, f) in local_photos.items() if view.photos.get(rid, ("", "", ""))[:2] != (e, f)]
        removed = set(remove)
        add = [rid for rid in view.photos if chosen[rid] and (rid not in local_photos or rid in removed)]
        refeature = [rid for rid in view.photos if chosen[rid] and rid in local_photos and rid not in removed
                     and held.get(rid) != chosen[rid][2]]
        return _Plan(view, local_photos, chosen, remove, add, refeature,
                     gone_emps=[i for i in local_emps if i not in view.employees],
                     changed_emps=[i for i, v in view.employees.items() if local_emps.get(i) != v])

    def _fetch(self, conn, plan: _Plan) -> tuple[dict[int, bytes], dict[tuple[int, str], bytes]]:
        """The sealed bytes the copy lacks: photos to add, features to add or replace. Photos deleted from the
        registry meanwhile are dropped from ``plan.add``."""
        photos = registry.photo_bytes(conn, plan.add)
        feats = registry.feature_bytes(conn, [(rid, plan.chosen[rid][0]) for rid in plan.add + plan.refeature])
        plan.add = [rid for rid in plan.add if rid in photos and (rid, plan.chosen[rid][0]) in feats]
        return photos, feats

    def _apply(self, plan: _Plan, photos: dict[int, bytes], feats: dict[tuple[int, str], bytes]) -> None:
        """New photo files first (atomically), then every row in ONE transaction."""
        store = self.store
        with store.in_flight([plan.view.photos[rid][1] for rid in plan.add]):
            for rid in plan.add:
                atomic_write_bytes(photo_file(store.photos_dir, plan.view.photos[rid][1]), photos[rid])
            with store.db.transaction() as c:
                self._delete_rows(c, plan)
                self._upsert_employees(c, plan)
                self._insert_photos(c, plan, feats)
                self._replace_features(c, plan, feats)

    @staticmethod
    def _delete_rows(c, plan: _Plan) -> None:
        c.executemany("DELETE FROM reference_photos WHERE id = ?", [(rid,) for rid in plan.remove])
        c.executemany("DELETE FROM employees WHERE id = ?", [(i,) for i in plan.gone_emps])

    @staticmethod
    def _upsert_employees(c, plan: _Plan) -> None:
        c.executemany("INSERT INTO employees (id, name, created) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE "
                      "SET name = excluded.name, created = excluded.created",
                      [(i, *plan.view.employees[i]) for i in plan.changed_emps])

    @staticmethod
    def _insert_photos(c, plan: _Plan, feats: dict[tuple[int, str], bytes]) -> None:
        for rid in plan.add:
            employee_id, file, created = plan.view.photos[rid]
            model_sha, dim, _ = plan.chosen[rid]
            c.execute("INSERT INTO reference_photos (id, employee_id, file, features, feature_dim, model_sha, "
                      "created, encrypted) VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
                      (rid, employee_id, file, feats[(rid, model_sha)], dim, model_sha, created))

    @staticmethod
    def _replace_features(c, plan: _Plan, feats: dict[tuple[int, str], bytes]) -> None:
        for rid in plan.refeature:
            model_sha, dim, _ = plan.chosen[rid]
            if (rid, model_sha) in feats:
                c.execute("UPDATE reference_photos SET features = ?, feature_dim = ?, model_sha = ?, "
                          "encrypted = 1 WHERE id = ?", (feats[(rid, model_sha)], dim, model_sha, rid))

    def _clean_up(self, plan: _Plan) -> None:
        """After the commit: the files of removed photos, the WAL after deletions, the log line."""
        self.store._remove_files([plan.local_photos[rid][1] for rid in plan.remove])
        if plan.remove or plan.gone_emps:
            self.store.db.checkpoint()  # deleted features leave the WAL too
        log.info("mirror: %d photo(s) added, %d removed, %d re-featured, %d employee(s) changed, %d gone "
                 "(registry generation %d)", len(plan.add), len(plan.remove), len(plan.refeature),
                 len(plan.changed_emps), len(plan.gone_emps), plan.view.generation)

    def _done(self, generation: int, versions: dict[int, int], removed: list[int]) -> None:
        with self.local.transaction() as c:
            c.executemany("DELETE FROM mirrored WHERE reference_id = ?", [(rid,) for rid in removed])
            c.executemany("INSERT INTO mirrored (reference_id, features_version) VALUES (?, ?) ON CONFLICT(reference_id) "
                          "DO UPDATE SET features_version = excluded.features_version", list(versions.items()))
            c.execute("INSERT INTO meta (key, value) VALUES ('generation', ?) ON CONFLICT(key) DO UPDATE SET "
                      "value = excluded.value", (str(generation),))
