"""The admin PIN of a fleet: one PIN for every kiosk, its record (the scrypt hash, never the PIN) and its guard
(fingerprint of the record, wrong entries, lockouts) in the registry's settings (kiosk.storage.fleet.settings),
with every kiosk's last synchronised copy in its data folder. The rules are kiosk.storage.pin's: five wrong
PINs at one kiosk lock administration at every kiosk, and the locks escalate.

Failing closed, as on a single kiosk: a kiosk that never had the fleet's settings, a record missing while
its guard is there, damaged, or not the one its guard names keeps administration locked; it never offers
the first-start page unless the registry says no PIN was ever set. A kiosk's local files cannot reset the
fleet's PIN or lockout: the copy is replaced by the registry's at the next synchronisation, and
``kiosk --database URL admin reset-pin`` only works as the registry's owner (``reset_fleet_pin``), not with
a kiosk's role. Setting or changing the PIN while the registry is away is refused.
"""

from __future__ import annotations

from kiosk.storage.db import StorageError
from kiosk.storage.fleet.pgconn import ConnectionConfig
from kiosk.storage.fleet.settings import GUARD_KEY, PIN_KEY, FleetSettings
from kiosk.storage.fleet.trust import pin_proof
from kiosk.storage.pin import (
    DAMAGED,
    MISMATCH,
    MISSING,
    OK,
    UNSET,
    LockoutRule,
    PinError,
    PinManager,
    PinResult,
    check_pin_format,
    fingerprint,
    hash_pin,
    new_guard,
    valid_guard,
    valid_record,
)
from kiosk.storage.settings import SettingsStore

UNSYNCED = "unsynced"
FLEET_RESET_COMMAND = "kiosk --database postgresql://OWNER@HOST/DB admin reset-pin"
_REASONS = {
    UNSYNCED: "this kiosk has not had the fleet's settings from the registry yet (it has not reached it since it "
              "joined the fleet)",
    MISSING: "the fleet's admin PIN record is missing from the registry",
    DAMAGED: "the fleet's admin PIN record (or its guard) in the registry is damaged",
    MISMATCH: "the fleet's admin PIN record in the registry is not the one a kiosk set (was it changed?)",
}


class FleetPinStore:
    """Where a fleet keeps its PIN: the record and the guard in the registry's settings, read from this kiosk's
    synchronised copy (kiosk.storage.fleet.settings). The fleet's state store of the one PIN state machine
    (kiosk.storage.pin.PinManager)."""

    def __init__(self, fleet: FleetSettings):
        self.fleet = fleet
        self.new_pin: str | None = None  # set by FleetPinManager.set_pin: the new PIN's proof is derived from it

    def bind(self, rule: LockoutRule, clock) -> None:
        self.fleet.rule = rule  # offline wrong entries are added by the same rule

    def read(self) -> tuple[str, dict | None, object]:
        if not self.fleet.synced:
            return UNSYNCED, None, None
        values = self.fleet.values()
        record, guard = values.get(PIN_KEY), values.get(GUARD_KEY)
        if guard is None:
            return (UNSET, None, None) if record is None else (MISMATCH, None, record)
        if not valid_guard(guard):
            return DAMAGED, None, record
        if record is None:
            return MISSING, guard, record
        if not valid_record(record):
            return DAMAGED, guard, record
        if fingerprint(record) != guard["fingerprint"]:
            return MISMATCH, guard, record
        return OK, guard, record

    def locked_message(self, state: str) -> str:
        if state == UNSYNCED:
            return f"{_REASONS[state]}. The admin tab opens once the registry has been reached."
        return (f"{_REASONS[state]}. The admin tab stays locked at every kiosk: the registry's owner must run "
                f"'{FLEET_RESET_COMMAND}' to set a new PIN.")

    def load_guard(self) -> dict | None:
        guard = self.fleet.values().get(GUARD_KEY)
        return guard if valid_guard(guard) else None

    def save_guard(self, guard: dict) -> None:
        self.fleet.keep_guard(guard)

    def count_entry(self, guard: dict, ok: bool, now: float) -> dict:
        return self.fleet.record_entry(guard, ok, now)

    def write_record(self, record: dict, guard: dict | None) -> None:
        """The record and its guard in one transaction; the first PIN only where none was set meanwhile."""
        if self.new_pin is None:
            raise PinError("the fleet's PIN record is written by set_pin only")
        if not self.fleet.write_pin(record, new_guard(record), pin_proof(self.new_pin, record), create_only=guard is None):
            raise PinError("an admin PIN was set at another kiosk meanwhile: use that one")

    def check_reset(self) -> None:
        raise PinError(f"the admin PIN of a fleet is the registry's: run '{FLEET_RESET_COMMAND}' as its owner")

    def reset(self, record: dict) -> None:
        self.check_reset()


class FleetPinManager(PinManager):
    """The PIN state machine on the fleet's store (FleetPinStore); only the store differs from a kiosk's."""

    def __init__(self, settings: SettingsStore, fleet: FleetSettings, **options):
        super().__init__(settings, store=FleetPinStore(fleet), **options)
        self.fleet = fleet

    def check(self, pin: str) -> PinResult:
        """As a kiosk's; a right PIN also gives the registry's proof (kiosk.storage.fleet.trust) for the shared
        settings this admin session changes; a wrong one takes it away."""
        result = super().check(pin)
        if result.ok:
            self.fleet.proof = pin_proof(pin, self._guarded()[1])
        else:
            self.fleet.forget_proof()
        return result

    def end_session(self) -> None:
        """The admin session ended (the view locked): the registry's proof is forgotten."""
        self.fleet.forget_proof()

    def set_pin(self, new_pin: str, repeat: str | None = None, current: str | None = None) -> None:
        self.store.new_pin = new_pin
        try:
            super().set_pin(new_pin, repeat, current)
        finally:
            self.store.new_pin = None


def reset_fleet_pin(url: str, new_pin: str, repeat: str | None = None) -> None:
    """``kiosk --database URL admin reset-pin``: a new fleet PIN, lockouts cleared at every kiosk; only as the
    registry's owner (a kiosk's role is refused: whoever holds one kiosk's files must not reset the fleet's PIN)."""
    from kiosk.storage.fleet import registry  # noqa: PLC0415 -- psycopg only here

    check_pin_format(new_pin)
    if repeat is not None and repeat != new_pin:
        raise PinError("the two PINs differ")
    config = ConnectionConfig.from_url(url)
    with config.connect(autocommit=True) as conn:
        registry.check_schema(conn, config.safe_url)
        if not registry.owns_registry(conn):
            raise StorageError(f"{config.safe_url}: only the registry's owner may reset the fleet's admin PIN, not a "
                               f"kiosk's role; run '{FLEET_RESET_COMMAND}' with the owner's role")
        record = hash_pin(new_pin)
        with conn.transaction():  # the record and its proof's verifier (kiosk.storage.fleet.trust) together
            registry.put_settings(conn, {PIN_KEY: record, GUARD_KEY: new_guard(record)})
            registry.put_verifier(conn, pin_proof(new_pin, record))
