"""A fleet that trusts no kiosk's word (#25): what the registry itself enforces against a kiosk's own role.

The registry's schema step 2 (``TRUST_MIGRATIONS``, appended to kiosk.storage.migrations.REGISTRY_MIGRATIONS by
kiosk.storage.fleet.registry):

- **Kiosk IDs belong to roles.** ``kiosk_ids`` maps each kiosk ID to the one login role that may write audit
  entries under it. A kiosk claims its ID the first time it writes (``claim_kiosk_id``: trust on first use, like
  the data key's ID); the registry's owner may bind IDs beforehand (``INSERT INTO kiosk_ids (kiosk_id, role_name)
  VALUES ('door-north', 'kiosk_north')``) or remove a binding. Row-level security on ``audit_log`` lets a kiosk
  role INSERT only rows whose kiosk ID is bound to it: kiosk_a cannot write in door-B's name.
- **Audit IDs are the server's.** A BEFORE INSERT trigger takes the chain writers' advisory lock itself (a writer
  that skips it is serialised all the same) and refuses a row whose ID is not the value this session last took
  from ``audit_log_id`` (``currval``; the kiosk role may call nextval but not setval) or is not past the chain's
  end: no INSERT with id 9e18 that would break every later ``audit verify``. The kiosk still takes the ID
  (nextval) before it inserts, because the chain's MAC covers it; a CHECK keeps IDs in 1..2^53-1.
- **Fleet settings and the PIN record are the admin's.** The kiosk role loses INSERT/UPDATE/DELETE on
  ``settings`` except for the PIN guard row (wrong entries and lockouts, which every kiosk counts; RLS). A
  shared setting (threshold, liveness) or the PIN record is written through SECURITY DEFINER functions that
  check the admin's proof and that an audit entry of the change was written by the caller in the same
  transaction (kiosk.storage.fleet.registry.admin_write):
  ``fleet_change_settings`` (threshold, liveness, liveness threshold), ``fleet_set_pin`` (the record, its
  guard, the new proof's verifier) and ``fleet_seed_settings`` (only keys never set: a new fleet taking a
  kiosk's settings.json). The proof is ``pin_proof``: a scrypt key derived from the PIN (a salt apart from the
  record's), computed by the kiosk when the admin's PIN checks out; the registry keeps only its SHA-256
  (``pin_verifier``, readable by the owner alone) and compares. While the fleet has no PIN at all (a new
  fleet: the first-start page) no proof is asked, as on a single kiosk. The owner (``admin reset-pin``) writes
  directly and sets the verifier.

Limits, said plainly: the PIN record must stay readable by every kiosk (a kiosk checks PINs while the registry
is away), so whoever holds a kiosk's role can still try PINs against it offline (scrypt makes each try cost);
a kiosk role can still write a guard row (clear a lockout, or damage it: administration then locks) and can
append entries with a wrong MAC under its own kiosk ID (``audit verify`` reports them, and they name it).
"""

from __future__ import annotations

import hashlib

from kiosk.storage.migrations import FLEET_ROLE
from kiosk.storage.pin import _scrypt

_PROOF_LABEL = b"siamese-kiosk fleet admin proof/1"
MAX_AUDIT_ID = 2 ** 53 - 1
AUDIT_LOCK = 0x5349414D  # the advisory lock that serialises audit chain writers ("SIAM")
ADMIN_KINDS = ("threshold", "liveness", "pin_set", "pin_changed")  # kiosk.storage.audit.EVENT_*


def pin_proof(pin: str, record: dict) -> bytes:
    """What a kiosk shows the registry once the admin's PIN checked out against ``record``: scrypt of the PIN
    under the record's parameters and a salt apart from the record's (the record never yields it)."""
    salt = bytes.fromhex(record["salt"]) + _PROOF_LABEL
    return _scrypt(pin, salt, int(record["n"]), int(record["r"]), int(record["p"]), 32)


def verifier(proof: bytes) -> bytes:
    return hashlib.sha256(proof).digest()


_SECURE = "LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp"

# the admin event written by the caller in this transaction (kiosk.storage.fleet.registry.admin_write)
_CHECK_EVENT = f"""
    IF NOT EXISTS (SELECT 1 FROM audit_log WHERE entry_uuid = p_entry AND kind = ANY(ARRAY{list(ADMIN_KINDS)!r})
                   AND xmin::text = (pg_current_xact_id()::text::bigint % 4294967296)::text) THEN
        RAISE EXCEPTION 'an admin change needs its audit entry written in the same transaction'
            USING ERRCODE = 'insufficient_privilege';
    END IF;"""

# the admin's proof, unless the fleet has no PIN at all (first start)
_CHECK_PROOF = """
    SELECT verifier INTO v FROM pin_verifier;
    IF v IS NULL AND EXISTS (SELECT 1 FROM settings WHERE key IN ('pin', 'pin_guard')) THEN
        RAISE EXCEPTION 'the fleet has an admin PIN but no proof verifier: the registry''s owner must run admin reset-pin'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF v IS NOT NULL AND (p_proof IS NULL OR sha256(p_proof) <> v) THEN
        RAISE EXCEPTION 'the admin''s proof (the fleet PIN) does not check out' USING ERRCODE = 'insufficient_privilege';
    END IF;"""

TRUST_MIGRATIONS: dict[int, list[str]] = {
    2: [
        # -- kiosk IDs bound to roles; audit rows only under one's own ------------------------------------
        """CREATE TABLE kiosk_ids (
               kiosk_id  TEXT PRIMARY KEY CHECK (kiosk_id <> ''),
               role_name TEXT NOT NULL DEFAULT current_user,
               claimed   TIMESTAMPTZ NOT NULL DEFAULT now())""",
        "ALTER TABLE kiosk_ids ENABLE ROW LEVEL SECURITY",
        f"CREATE POLICY kiosk_ids_read ON kiosk_ids FOR SELECT TO {FLEET_ROLE} USING (true)",
        f"CREATE POLICY kiosk_ids_claim ON kiosk_ids FOR INSERT TO {FLEET_ROLE} WITH CHECK (role_name = current_user)",
        f"GRANT SELECT, INSERT ON kiosk_ids TO {FLEET_ROLE}",
        "ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY",
        f"CREATE POLICY audit_read ON audit_log FOR SELECT TO {FLEET_ROLE} USING (true)",
        f"CREATE POLICY audit_own_kiosk ON audit_log FOR INSERT TO {FLEET_ROLE} WITH CHECK (EXISTS (SELECT 1 FROM "
        f"kiosk_ids k WHERE k.kiosk_id = audit_log.kiosk_id AND k.role_name = current_user))",
        # -- the server's IDs ---------------------------------------------------------------------------------
        f"ALTER TABLE audit_log ADD CONSTRAINT audit_log_id_range CHECK (id BETWEEN 1 AND {MAX_AUDIT_ID}) NOT VALID",
        f"ALTER SEQUENCE audit_log_id MAXVALUE {MAX_AUDIT_ID}",
        f"""CREATE FUNCTION audit_log_guard() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_advisory_xact_lock({AUDIT_LOCK});
                IF NEW.id IS DISTINCT FROM currval('audit_log_id') THEN
                    RAISE EXCEPTION 'audit entry id % is not the one the registry issued', NEW.id
                        USING ERRCODE = 'check_violation';
                END IF;
                IF NEW.id <= (SELECT coalesce(max(id), 0) FROM audit_log) THEN
                    RAISE EXCEPTION 'audit entry id % is not past the end of the chain', NEW.id
                        USING ERRCODE = 'check_violation';
                END IF;
                RETURN NEW;
            END $$""",
        "CREATE TRIGGER audit_log_guard BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_guard()",
        # -- fleet settings and the PIN record: the admin's --------------------------------------------------
        f"REVOKE INSERT, UPDATE, DELETE ON settings FROM {FLEET_ROLE}",
        f"GRANT INSERT, UPDATE ON settings TO {FLEET_ROLE}",  # the guard row only (the policies below)
        "ALTER TABLE settings ENABLE ROW LEVEL SECURITY",
        f"CREATE POLICY settings_read ON settings FOR SELECT TO {FLEET_ROLE} USING (true)",
        f"CREATE POLICY settings_guard_insert ON settings FOR INSERT TO {FLEET_ROLE} WITH CHECK (key = 'pin_guard')",
        f"CREATE POLICY settings_guard_update ON settings FOR UPDATE TO {FLEET_ROLE} USING (key = 'pin_guard') "
        f"WITH CHECK (key = 'pin_guard')",
        "CREATE TABLE pin_verifier (one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), verifier BYTEA NOT NULL)",
        f"""CREATE FUNCTION fleet_seed_settings(p_values jsonb) RETURNS integer {_SECURE} AS $$
            DECLARE n integer;
            BEGIN
                INSERT INTO settings (key, value) SELECT key, value FROM jsonb_each(p_values)
                    WHERE key IN ('threshold', 'liveness', 'liveness_threshold') ON CONFLICT (key) DO NOTHING;
                GET DIAGNOSTICS n = ROW_COUNT;
                IF n > 0 THEN NOTIFY kiosk_registry; END IF;
                RETURN n;
            END $$""",
        f"""CREATE FUNCTION fleet_change_settings(p_values jsonb, p_proof bytea, p_entry uuid) RETURNS boolean
            {_SECURE} AS $$
            DECLARE v bytea;
            BEGIN
                IF EXISTS (SELECT 1 FROM jsonb_object_keys(p_values) k
                           WHERE k NOT IN ('threshold', 'liveness', 'liveness_threshold')) THEN
                    RAISE EXCEPTION 'only the threshold and liveness settings are changed here'
                        USING ERRCODE = 'insufficient_privilege';
                END IF;
                {_CHECK_PROOF}
                {_CHECK_EVENT}
                INSERT INTO settings (key, value) SELECT key, value FROM jsonb_each(p_values)
                    ON CONFLICT (key) DO UPDATE SET value = excluded.value;
                NOTIFY kiosk_registry;
                RETURN true;
            END $$""",
        f"""CREATE FUNCTION fleet_set_pin(p_record jsonb, p_guard jsonb, p_new_proof bytea, p_proof bytea,
                                          p_create_only boolean, p_entry uuid) RETURNS boolean {_SECURE} AS $$
            DECLARE v bytea;
            BEGIN
                PERFORM 1 FROM settings WHERE key IN ('pin', 'pin_guard') FOR UPDATE;
                IF p_create_only THEN
                    IF EXISTS (SELECT 1 FROM settings WHERE key IN ('pin', 'pin_guard'))
                       OR EXISTS (SELECT 1 FROM pin_verifier) THEN
                        RETURN false;
                    END IF;
                ELSE
                    {_CHECK_PROOF}
                END IF;
                {_CHECK_EVENT}
                INSERT INTO settings (key, value) VALUES ('pin', p_record), ('pin_guard', p_guard)
                    ON CONFLICT (key) DO UPDATE SET value = excluded.value;
                INSERT INTO pin_verifier (verifier) VALUES (sha256(p_new_proof))
                    ON CONFLICT (one) DO UPDATE SET verifier = excluded.verifier;
                NOTIFY kiosk_registry;
                RETURN true;
            END $$""",
        *[f"REVOKE ALL ON FUNCTION {f} FROM PUBLIC" for f in (
            "fleet_seed_settings(jsonb)", "fleet_change_settings(jsonb, bytea, uuid)",
            "fleet_set_pin(jsonb, jsonb, bytea, bytea, boolean, uuid)")],
        *[f"GRANT EXECUTE ON FUNCTION {f} TO {FLEET_ROLE}" for f in (
            "fleet_seed_settings(jsonb)", "fleet_change_settings(jsonb, bytea, uuid)",
            "fleet_set_pin(jsonb, jsonb, bytea, bytea, boolean, uuid)")],
    ],
}
