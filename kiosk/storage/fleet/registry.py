"""The fleet registry in PostgreSQL: its migrations, and every statement a kiosk runs against it.

Writers of employees, photos and features first move the one ``registry`` row's generation (which
serialises them: two kiosks enrolling and deleting at once are applied one after the other) and end with
``NOTIFY kiosk_registry``; a kiosk that LISTENs hears of it at once, one that polls compares generations.

The audit log has one hash chain for the whole fleet, made in a serialised INSERT: the writer takes a
transaction-scoped advisory lock (the kiosk role may not LOCK the table, having neither UPDATE nor
DELETE on it), reads the newest hash, takes the next ID from ``audit_log_id`` and inserts the entry
with MAC(previous hash + entry). Entries whose UUID the registry already holds are skipped, which makes
the outbox's drain exactly-once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass

from kiosk.storage.audit import FLEET_FIELDS, columns, with_id
from kiosk.storage.db import StorageError, run_migrations
from kiosk.storage.employees import SealedReference
from kiosk.storage.fleet.pgconn import ConnectionConfig
from kiosk.storage.fleet.trust import AUDIT_LOCK, TRUST_MIGRATIONS
from kiosk.storage.migrations import REGISTRY_MIGRATIONS

log = logging.getLogger(__name__)

# step 2 (kiosk.storage.fleet.trust: RLS, server-checked audit IDs, admin-only settings) joins the steps of
# kiosk.storage.migrations here; it belongs there as REGISTRY_MIGRATIONS[2] once that file may be edited
MIGRATIONS: dict[int, list[str]] = {**REGISTRY_MIGRATIONS, **TRUST_MIGRATIONS}
REGISTRY_SCHEMA = max(MIGRATIONS)
CHANNEL = "kiosk_registry"
_BATCH = 50  # photos fetched per statement (kiosk.storage.fleet.pgconn: statement timeout, Watchdog)
_AUDIT_LOCK = AUDIT_LOCK  # the advisory lock that serialises audit chain writers ("SIAM"; the trigger takes it too)


NewReference = SealedReference  # a reference photo enrolled into the registry, sealed (kiosk.storage.employees)


@dataclass(frozen=True)
class RegistryView:
    """What the mirror compares with its copy: everything but the bytes."""

    generation: int
    employees: dict[str, tuple[str, str]]           # id -> (name, created)
    photos: dict[int, tuple[str, str, str]]          # id -> (employee_id, file, created)
    features: dict[int, list[tuple[str, int, int]]]  # photo id -> [(model_sha, dim, version)]


def migrate(config: ConnectionConfig) -> int:
    """Bring the registry's schema up to date (run as the role that owns it). Returns the version."""
    with config.connect(statement_timeout_ms=0) as conn:
        @contextmanager
        def transaction():
            with conn.transaction():
                yield conn

        run_migrations(transaction, MIGRATIONS, REGISTRY_SCHEMA, config.safe_url, mark="%s",
                       lock="LOCK TABLE schema_version IN ACCESS EXCLUSIVE MODE",  # one migrator at a time
                       kind="registry", label="registry schema")
        conn.execute("GRANT SELECT ON schema_version TO kiosk_fleet")
        conn.commit()
    return REGISTRY_SCHEMA


def check_schema(conn, safe_url: str) -> None:
    import psycopg  # noqa: PLC0415

    try:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
    except psycopg.errors.UndefinedTable:
        conn.rollback()
        row = None
    version = int(row[0]) if row else 0
    if version != REGISTRY_SCHEMA:
        raise StorageError(f"{safe_url}: registry schema {version}, this kiosk needs {REGISTRY_SCHEMA}; the registry's "
                           f"owner must run 'kiosk --database URL registry migrate' first")


def meta(conn, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
    return row[0] if row else None


def claim_key_id(conn, key_id: str) -> str:
    """The fleet's data key ID; the first kiosk records its own (nobody may change it afterwards)."""
    conn.execute("INSERT INTO meta (key, value) VALUES ('key_id', %s) ON CONFLICT (key) DO NOTHING", (key_id,))
    conn.commit()
    return meta(conn, "key_id")


def _bump(conn) -> int:
    generation = conn.execute("UPDATE registry SET generation = generation + 1 RETURNING generation").fetchone()[0]
    conn.execute(f"NOTIFY {CHANNEL}")  # delivered at commit
    return int(generation)


def enrol(conn, employee_id: str, name: str, created: str, references: list[NewReference], model_sha: str,
          replace: bool) -> None:
    with conn.transaction():
        _bump(conn)
        conn.execute("INSERT INTO employees (id, name, created) VALUES (%s, %s, %s) "
                     "ON CONFLICT (id) DO UPDATE SET name = excluded.name", (employee_id, name, created))
        if replace:
            conn.execute("DELETE FROM reference_photos WHERE employee_id = %s", (employee_id,))
        for ref in references:
            rid = conn.execute("INSERT INTO reference_photos (employee_id, file, photo, created) VALUES (%s, %s, %s, %s) "
                               "RETURNING id", (employee_id, ref.file, ref.photo, created)).fetchone()[0]
            conn.execute("INSERT INTO features (reference_id, model_sha, data, dim) VALUES (%s, %s, %s, %s)",
                         (rid, model_sha, ref.features, ref.dim))


def update_features(conn, reference_id: int, model_sha: str, sealed: bytes, dim: int) -> None:
    with conn.transaction():
        _bump(conn)
        conn.execute("INSERT INTO features (reference_id, model_sha, data, dim) SELECT %s, %s, %s, %s "
                     "WHERE EXISTS (SELECT 1 FROM reference_photos WHERE id = %s) "
                     "ON CONFLICT (reference_id, model_sha) DO UPDATE SET data = excluded.data, dim = excluded.dim, "
                     "version = nextval('features_version')", (reference_id, model_sha, sealed, dim, reference_id))


def delete(conn, employee_id: str) -> bool:
    with conn.transaction():
        _bump(conn)
        return conn.execute("DELETE FROM employees WHERE id = %s", (employee_id,)).rowcount > 0


def generation(conn) -> int:
    return int(conn.execute("SELECT generation FROM registry").fetchone()[0])


def view(conn) -> RegistryView:
    """One consistent snapshot (REPEATABLE READ) of what exists, without the bytes."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        gen = generation(conn)
        employees = {i: (n, c) for i, n, c in conn.execute("SELECT id, name, created FROM employees")}
        photos = {i: (e, f, c) for i, e, f, c in conn.execute("SELECT id, employee_id, file, created FROM reference_photos")}
        features: dict[int, list[tuple[str, int, int]]] = {}
        for rid, model_sha, dim, version in conn.execute("SELECT reference_id, model_sha, dim, version FROM features"):
            features.setdefault(int(rid), []).append((model_sha, int(dim), int(version)))
    return RegistryView(gen, employees, photos, features)


def photo_bytes(conn, ids: list[int]) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    for start in range(0, len(ids), _BATCH):  # a few at a time: each statement well within its timeouts
        found.update({int(i): bytes(b) for i, b in conn.execute(
            "SELECT id, photo FROM reference_photos WHERE id = ANY(%s)", (ids[start:start + _BATCH],))})
    return found


def feature_bytes(conn, wanted: list[tuple[int, str]]) -> dict[tuple[int, str], bytes]:
    if not wanted:
        return {}
    rows = conn.execute("SELECT reference_id, model_sha, data FROM features WHERE (reference_id, model_sha) IN "
                        "(SELECT * FROM unnest(%s::bigint[], %s::text[]))",
                        ([r for r, _ in wanted], [m for _, m in wanted]))
    return {(int(r), m): bytes(d) for r, m, d in rows}


def claim_kiosk_id(conn, kiosk_id: str) -> str:
    """Bind ``kiosk_id`` to this connection's role if no role holds it yet (kiosk.storage.fleet.trust); returns
    the role that holds it (audit entries under it are refused to any other)."""
    conn.execute("INSERT INTO kiosk_ids (kiosk_id) VALUES (%s) ON CONFLICT (kiosk_id) DO NOTHING", (kiosk_id,))
    row = conn.execute("SELECT role_name FROM kiosk_ids WHERE kiosk_id = %s", (kiosk_id,)).fetchone()
    return row[0] if row else ""


def _chain_insert(conn, kiosk_id: str, entries: Iterable, chain_hash: Callable[[str | None, tuple], str]) -> int:
    """In the caller's transaction: the chain writers' lock, then ``entries`` (OutboxEntry-like: entry_uuid,
    entry) chained after the newest row; those the registry already holds are skipped."""
    entries = list(entries)
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_AUDIT_LOCK,))
    have = {str(u) for (u,) in conn.execute("SELECT entry_uuid FROM audit_log WHERE entry_uuid = ANY(%s::uuid[])",
                                            ([e.entry_uuid for e in entries],))}
    row = conn.execute("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    previous = row[0] if row else None
    insert = (f"INSERT INTO audit_log ({columns(FLEET_FIELDS)}, entry_uuid, hash) "
              f"VALUES ({', '.join(['%s'] * (len(FLEET_FIELDS) + 2))})")
    written = 0
    for e in entries:
        if e.entry_uuid in have:
            continue
        rid = int(conn.execute("SELECT nextval('audit_log_id')").fetchone()[0])  # the trigger checks it is this
        content = with_id(e.entry, rid, kiosk_id).row(fleet=True)
        previous = chain_hash(previous, content)
        conn.execute(insert, content + (e.entry_uuid, previous))
        written += 1
    return written


def append_audit(conn, kiosk_id: str, entries: Iterable, chain_hash: Callable[[str | None, tuple], str]) -> int:
    """Write outbox entries (in their order) into the chain, in one transaction; those the registry already
    holds (by UUID) are skipped. ``chain_hash(previous, row)``: kiosk.storage.audit.AuditLog.chain_hash (None:
    the chain's first row). Returns how many were written. The registry refuses entries under a kiosk ID bound
    to another role, and IDs it did not issue (kiosk.storage.fleet.trust)."""
    entries = list(entries)
    with conn.transaction():
        claim_kiosk_id(conn, kiosk_id)
        return _chain_insert(conn, kiosk_id, entries, chain_hash)


@dataclass(frozen=True)
class _Event:
    entry_uuid: str
    entry: object  # kiosk.storage.audit.AuditEntry


def admin_write(conn, kiosk_id: str, chain_hash: Callable[[str | None, tuple], str], event, sql: str,
                params: tuple) -> bool:
    """An admin change through one of the registry's SECURITY DEFINER functions (``sql``: ``SELECT f(..., %s)``,
    its last parameter the event's UUID), in ONE transaction with ``event`` (kiosk.storage.audit.new_entry) written
    into the chain first: the function checks it is there. False (and nothing written) when the function says no."""
    import uuid  # noqa: PLC0415

    import psycopg  # noqa: PLC0415

    entry_uuid = str(uuid.uuid4())
    done = False
    with conn.transaction():
        claim_kiosk_id(conn, kiosk_id)
        _chain_insert(conn, kiosk_id, [_Event(entry_uuid, event)], chain_hash)
        done = bool(conn.execute(sql, (*params, entry_uuid)).fetchone()[0])
        if not done:
            raise psycopg.Rollback()
    return done


# -- fleet-wide settings (kiosk.storage.fleet.settings): one JSON value per key; every change NOTIFYs ----------
def settings(conn) -> dict[str, object]:
    return {key: value for key, value in conn.execute("SELECT key, value FROM settings")}


def put_settings(conn, values: dict[str, object], create_only: bool = False) -> bool:
    """Write ``values`` in one transaction. ``create_only``: only if none of the keys is there yet (False, and
    nothing written, otherwise)."""
    from psycopg.types.json import Jsonb  # noqa: PLC0415

    with conn.transaction():
        if create_only and conn.execute("SELECT 1 FROM settings WHERE key = ANY(%s) FOR UPDATE",
                                        (list(values),)).fetchone():
            return False
        conflict = "DO NOTHING" if create_only else "DO UPDATE SET value = excluded.value"
        for key, value in values.items():
            conn.execute(f"INSERT INTO settings (key, value) VALUES (%s, %s) ON CONFLICT (key) {conflict}",
                         (key, Jsonb(value)))
        conn.execute(f"NOTIFY {CHANNEL}")
    return True


def change_setting(conn, key: str, change: Callable[[object], object]) -> object:
    """Replace the value of ``key`` (None when absent) by ``change(value)``, the row locked meanwhile: two
    kiosks changing it at once are applied one after the other. Returns the new value."""
    from psycopg.types.json import Jsonb  # noqa: PLC0415

    with conn.transaction():
        row = conn.execute("SELECT value FROM settings WHERE key = %s FOR UPDATE", (key,)).fetchone()
        old = row[0] if row else None
        new = change(old)
        if new != old:
            conn.execute("INSERT INTO settings (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET "
                         "value = excluded.value", (key, Jsonb(new)))
            conn.execute(f"NOTIFY {CHANNEL}")
    return new


def seed_settings(conn, values: dict[str, object]) -> int:
    """The shared settings the registry does not hold yet, from a kiosk (kiosk.storage.fleet.trust); never
    overwrites one. Returns how many were taken."""
    from psycopg.types.json import Jsonb  # noqa: PLC0415

    return int(conn.execute("SELECT fleet_seed_settings(%s)", (Jsonb(values),)).fetchone()[0])


def change_settings(conn, kiosk_id: str, chain_hash, values: dict[str, object], proof: bytes | None, event) -> bool:
    """Threshold / liveness, with the admin's proof and ``event`` in the chain, in one transaction."""
    from psycopg.types.json import Jsonb  # noqa: PLC0415

    return admin_write(conn, kiosk_id, chain_hash, event, "SELECT fleet_change_settings(%s, %s, %s)",
                       (Jsonb(values), proof))


def set_pin(conn, kiosk_id: str, chain_hash, record: dict, guard: dict, new_proof: bytes, proof: bytes | None,
            create_only: bool, event) -> bool:
    """The PIN record and its guard, and the new PIN's proof verifier; ``create_only``: the first PIN (False
    when one was set meanwhile), else the current PIN's proof is needed."""
    from psycopg.types.json import Jsonb  # noqa: PLC0415

    return admin_write(conn, kiosk_id, chain_hash, event, "SELECT fleet_set_pin(%s, %s, %s, %s, %s, %s)",
                       (Jsonb(record), Jsonb(guard), new_proof, proof, create_only))


def put_verifier(conn, new_proof: bytes) -> None:
    """As the registry's owner (admin reset-pin): the proof verifier of a new PIN."""
    conn.execute("INSERT INTO pin_verifier (verifier) VALUES (sha256(%s)) ON CONFLICT (one) DO UPDATE SET "
                 "verifier = excluded.verifier", (new_proof,))


def owns_registry(conn) -> bool:
    """Whether this connection's role owns the registry's tables (or is a superuser): a kiosk's role does not."""
    row = conn.execute("SELECT (SELECT tableowner FROM pg_tables WHERE schemaname = current_schema() AND "
                       "tablename = 'settings') = current_user OR (SELECT rolsuper FROM pg_roles WHERE "
                       "rolname = current_user)").fetchone()
    return bool(row and row[0])
