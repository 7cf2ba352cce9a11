"""Every schema change of both back ends, in one place: the kiosk's SQLite store, the fleet registry in
PostgreSQL, and a fleet kiosk's local state (the audit outbox and what it has mirrored).

Each dictionary maps version n to the statements that take a schema from n-1 to n, run in one transaction
and recorded in a ``schema_version`` table by the one runner, kiosk.storage.db.run_migrations (for SQLite and, from
kiosk.storage.fleet.registry, for PostgreSQL). Append, never edit, once released.

The registry starts from what the store's steps 1-4 built (employees, reference photos, the audit log with
its liveness and mode columns) and adds what several kiosks need: photos as bytes, features keyed by the
model that made them, the kiosk's ID and a client-made UUID on every audit entry, fleet-wide settings,
and a generation counter that every change of the registry moves (kiosks compare it to know they are stale).
Privileges are granted to the group role ``kiosk_fleet`` (created beforehand, docs/fleet_readme_section.md):
it may read and change employees, photos, features and fleet settings, and only INSERT and SELECT the
audit log (no UPDATE, DELETE or TRUNCATE: a kiosk cannot rewrite the trail).
"""

from __future__ import annotations

STORE_MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE employees (
               id      TEXT PRIMARY KEY,
               name    TEXT NOT NULL,
               created TEXT NOT NULL)""",
        """CREATE TABLE reference_photos (
               id          INTEGER PRIMARY KEY AUTOINCREMENT,
               employee_id TEXT NOT NULL REFERENCES employees(id) ON DELETE CASCADE,
               file        TEXT NOT NULL UNIQUE,   -- name inside data_dir()/photos
               features    BLOB NOT NULL,          -- float32 little-endian
               feature_dim INTEGER NOT NULL,
               model_sha   TEXT NOT NULL,          -- weights the features were computed with
               created     TEXT NOT NULL)""",
        "CREATE INDEX reference_photos_employee ON reference_photos(employee_id)",
        """CREATE TABLE audit_log (
               id         INTEGER PRIMARY KEY AUTOINCREMENT,
               time       TEXT NOT NULL,           -- ISO 8601, UTC
               claimed_id TEXT NOT NULL,
               score      REAL,                    -- NULL when no face was compared
               verdict    TEXT NOT NULL CHECK (verdict IN ('ACCEPT', 'REJECT')),
               reason     TEXT NOT NULL)""",
        "CREATE INDEX audit_log_time ON audit_log(time)",
    ],
    2: [  # biometric data encrypted at rest (kiosk.storage.crypto); rows are sealed one by one after this step
        # 1: the photo file and the features are sealed with the data key
        "ALTER TABLE reference_photos ADD COLUMN encrypted INTEGER NOT NULL DEFAULT 0",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",  # key_id: the data key's ID
    ],
    3: [  # admin events in the audit log, and its hash chain (kiosk.storage.audit); the table is rebuilt because
        # a decision's verdict CHECK cannot be relaxed in place; existing rows are chained at the next open
        """CREATE TABLE audit_log_v3 (
               id         INTEGER PRIMARY KEY AUTOINCREMENT,
               time       TEXT NOT NULL,                 -- ISO 8601, UTC
               kind       TEXT NOT NULL DEFAULT 'decision',  -- 'decision' or an admin event kind
               claimed_id TEXT NOT NULL DEFAULT '',
               score      REAL,                          -- NULL when no face was compared
               verdict    TEXT NOT NULL DEFAULT '',      -- ACCEPT / REJECT for decisions, '' for events
               detail     TEXT NOT NULL DEFAULT '',      -- what an event changed (employee ID only)
               reason     TEXT NOT NULL DEFAULT '',
               hash       TEXT,                          -- the chain: MAC(previous hash + this row)
               CHECK ((kind = 'decision') = (verdict IN ('ACCEPT', 'REJECT'))))""",
        "INSERT INTO audit_log_v3 (id, time, kind, claimed_id, score, verdict, reason) "
        "SELECT id, time, 'decision', claimed_id, score, verdict, reason FROM audit_log ORDER BY id",
        "DROP TABLE audit_log",
        "ALTER TABLE audit_log_v3 RENAME TO audit_log",
        "CREATE INDEX audit_log_time ON audit_log(time)",
        "CREATE INDEX audit_log_kind ON audit_log(kind)",
        "INSERT INTO meta (key, value) SELECT 'audit_unchained_upto', MAX(id) FROM audit_log WHERE id IS NOT NULL "
        "HAVING COUNT(*) > 0",
    ],
    4: [  # a decision records the fused liveness score and the kiosk mode that made it (chained when set)
        "ALTER TABLE audit_log ADD COLUMN liveness REAL",  # fused P(live); NULL: liveness off or not measured
        "ALTER TABLE audit_log ADD COLUMN mode TEXT NOT NULL DEFAULT ''",  # 'id' or 'walk-up'; '' for events
    ],
}
FLEET_ROLE = "kiosk_fleet"

REGISTRY_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",  # registry_id, key_id, audit_chain
        "INSERT INTO meta (key, value) VALUES ('registry_id', gen_random_uuid()::text), ('audit_chain', 'hmac-sha256')",
        # one row: its generation moves with every change of employees, photos or features (in the same
        # transaction), which also serialises registry writers; NOTIFY kiosk_registry tells the kiosks
        "CREATE TABLE registry (one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), generation BIGINT NOT NULL DEFAULT 0)",
        "INSERT INTO registry DEFAULT VALUES",
        """CREATE TABLE employees (
               id      TEXT PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 64),
               name    TEXT NOT NULL,
               created TEXT NOT NULL)""",
        """CREATE TABLE reference_photos (
               id          BIGSERIAL PRIMARY KEY,
               employee_id TEXT NOT NULL REFERENCES employees(id) ON DELETE CASCADE,
               file        TEXT NOT NULL UNIQUE,   -- the photo's name (part of its sealing's associated data)
               photo       BYTEA NOT NULL,         -- sealed JPEG (AES-GCM, kiosk.storage.crypto)
               created     TEXT NOT NULL)""",
        "CREATE INDEX reference_photos_employee ON reference_photos(employee_id)",
        "CREATE SEQUENCE features_version",
        """CREATE TABLE features (
               reference_id BIGINT NOT NULL REFERENCES reference_photos(id) ON DELETE CASCADE,
               model_sha    TEXT NOT NULL,         -- the model that made them
               data         BYTEA NOT NULL,        -- sealed float32 little-endian
               dim          INTEGER NOT NULL CHECK (dim > 0),
               version      BIGINT NOT NULL DEFAULT nextval('features_version'),
               PRIMARY KEY (reference_id, model_sha))""",
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value JSONB NOT NULL)",  # fleet-wide settings
        """CREATE TABLE audit_log (
               id         BIGINT PRIMARY KEY,              -- from audit_log_id, taken in chain order
               entry_uuid UUID NOT NULL UNIQUE,            -- made by the kiosk: an entry is written once
               kiosk_id   TEXT NOT NULL CHECK (kiosk_id <> ''),
               time       TEXT NOT NULL,                   -- ISO 8601, UTC, when it happened at the kiosk
               kind       TEXT NOT NULL DEFAULT 'decision',
               claimed_id TEXT NOT NULL DEFAULT '',
               score      DOUBLE PRECISION,
               verdict    TEXT NOT NULL DEFAULT '',
               detail     TEXT NOT NULL DEFAULT '',
               reason     TEXT NOT NULL DEFAULT '',
               liveness   DOUBLE PRECISION,
               mode       TEXT NOT NULL DEFAULT '',
               hash       TEXT NOT NULL,                   -- the chain: MAC(previous hash + this row)
               CHECK ((kind = 'decision') = (verdict IN ('ACCEPT', 'REJECT'))))""",
        "CREATE SEQUENCE audit_log_id OWNED BY audit_log.id",
        "CREATE INDEX audit_log_time ON audit_log(time)",
        "CREATE INDEX audit_log_kind ON audit_log(kind)",
        "CREATE INDEX audit_log_kiosk ON audit_log(kiosk_id)",
        f"GRANT SELECT ON meta, registry, employees, reference_photos, features, settings, audit_log TO {FLEET_ROLE}",
        f"GRANT INSERT ON meta TO {FLEET_ROLE}",  # the first kiosk records the data key's ID; nobody changes it
        f"GRANT UPDATE ON registry TO {FLEET_ROLE}",
        f"GRANT INSERT, UPDATE, DELETE ON employees, reference_photos, features, settings TO {FLEET_ROLE}",
        f"GRANT INSERT ON audit_log TO {FLEET_ROLE}",  # append only
        f"GRANT USAGE ON SEQUENCE reference_photos_id_seq, features_version, audit_log_id TO {FLEET_ROLE}",
    ],
}

# A fleet kiosk's own state, in fleet.sqlite3 beside its mirror (kiosk.sqlite3, the store above):
LOCAL_FLEET_MIGRATIONS: dict[int, list[str]] = {
    1: [
        # audit entries not yet in the registry, in the order they happened; removed once written there
        """CREATE TABLE outbox (
               seq        INTEGER PRIMARY KEY AUTOINCREMENT,
               entry_uuid TEXT NOT NULL UNIQUE,
               time       TEXT NOT NULL,
               kind       TEXT NOT NULL,
               claimed_id TEXT NOT NULL,
               score      REAL,
               verdict    TEXT NOT NULL,
               detail     TEXT NOT NULL,
               reason     TEXT NOT NULL,
               liveness   REAL,
               mode       TEXT NOT NULL)""",
        # which features version of the registry each mirrored reference photo holds
        "CREATE TABLE mirrored (reference_id INTEGER PRIMARY KEY, features_version INTEGER NOT NULL)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",  # registry_id, generation, synced_at
    ],
    2: [  # the last synchronised copy of the registry's fleet-wide settings (kiosk.storage.fleet.settings), JSON
        "CREATE TABLE fleet_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ],
}
