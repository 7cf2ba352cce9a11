"""The settings a fleet shares, on one kiosk: the registry's ``settings`` table is the truth, and each kiosk
keeps its last synchronised copy in fleet.sqlite3 (its data folder), so it reads them without waiting for
the network and still has them after a restart while the registry is away.

Shared (``SHARED``): the face threshold, the liveness switch and threshold, the admin PIN record (the scrypt
hash, never the PIN) and its guard (wrong entries and lockouts: kiosk.storage.pin). Each kiosk's own, in its
``settings.json``: the kiosk mode (one entrance may want walk-ups, another not), sounds, how long a verdict
stays on screen, the admin idle time and the fusion parameters.

- Reading: always the copy. Before a kiosk's first synchronisation the copy is empty: the threshold and
  liveness are the safe defaults (the model's threshold, liveness on) and administration stays locked
  (kiosk.storage.fleet.pin): never "no PIN set".
- Changing a shared setting writes the registry first, then the copy; while the registry is away it is
  refused (``SETTINGS_OFFLINE``).
- The sync thread (kiosk.storage.fleet.sync) calls ``pull`` every poll and when told of a change (NOTIFY): the copy
  becomes the registry's and ``pull`` says whether it changed. A setting the registry does not hold yet is
  first taken from the kiosk that connects (its settings.json): a kiosk joining with its own threshold brings it.
- The registry only takes a shared setting or the PIN record from a kiosk with the admin's proof and an
  audit entry of the change in the same transaction (kiosk.storage.fleet.trust): ``proof`` is set by the
  fleet's PIN manager when the admin's PIN checks out (``forget_proof`` when the admin tab locks); the guard
  (wrong entries, lockouts) is the one row a kiosk's role writes directly.
- Wrong PINs while the registry is away count on the copy (and lock this kiosk by the same rule) and are
  added to the registry's count when it is back (``record_entry``, ``pull``): none is lost, and the stricter
  lock wins.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import fields, replace

from kiosk.storage.audit import EVENT_LIVENESS, EVENT_PIN_CHANGED, EVENT_PIN_SET, EVENT_THRESHOLD, new_entry
from kiosk.storage.db import Database, StorageError
from kiosk.storage.fleet import registry
from kiosk.storage.pin import LockoutRule, valid_guard
from kiosk.storage.settings import Settings, SettingsStore

log = logging.getLogger(__name__)

FLEET_SETTINGS = ("threshold", "liveness", "liveness_threshold")  # Settings fields the fleet shares
PIN_KEY, GUARD_KEY = "pin", "pin_guard"
SHARED = (*FLEET_SETTINGS, PIN_KEY)  # what FleetSettingsStore writes to the registry, never to settings.json
SETTINGS_OFFLINE = ("the fleet registry cannot be reached, so the fleet's settings (threshold, liveness, admin PIN) "
                    "cannot be changed now (this kiosk goes on with its last copy of them); try again when the status "
                    "bar says online")
_SYNCED, _OFFLINE_WRONG = "settings_synced", "pin_wrong_offline"


class FleetSettings:
    """The registry's shared settings and this kiosk's copy (``link`` is set by kiosk.storage.fleet.stores)."""

    def __init__(self, local: Database, own: SettingsStore):
        self.local = local   # fleet.sqlite3
        self.own = own       # this kiosk's settings.json: where a setting the registry lacks is first taken from
        self.link = None     # kiosk.storage.fleet.sync.FleetLink
        self.rule = LockoutRule()  # the PIN manager's (kiosk.storage.fleet.pin) once there is one
        self._lock = threading.RLock()
        self.proof: bytes | None = None  # the admin's proof (kiosk.storage.fleet.trust.pin_proof) once the PIN checked out

    def forget_proof(self) -> None:
        """The admin's session is over (the admin tab locked): shared settings need the PIN again."""
        self.proof = None

    # -- the copy -------------------------------------------------------------------------------------------
    @property
    def synced(self) -> bool:
        """The copy has been made at least once (False: this kiosk never reached the registry)."""
        return self.local.meta(_SYNCED) == "1"

    def values(self) -> dict[str, object]:
        values = {}
        for key, text in self.local.query("SELECT key, value FROM fleet_settings"):
            try:
                values[key] = json.loads(text)
            except ValueError:
                values[key] = text  # kept as found: kiosk.storage.settings and .pin judge it (fail closed)
        return values

    def _keep(self, conn, values: dict[str, object], replace_all: bool = False) -> None:
        if replace_all:
            conn.execute("DELETE FROM fleet_settings")
        conn.executemany("INSERT INTO fleet_settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                         "value = excluded.value", [(k, json.dumps(v, sort_keys=True)) for k, v in values.items()])

    def offline_wrong_entries(self) -> int:
        value = self.local.meta(_OFFLINE_WRONG)
        return int(value) if value and value.isdigit() else 0

    # -- changes --------------------------------------------------------------------------------------------
    def write(self, values: dict[str, object], create_only: bool = False) -> bool:
        """Threshold / liveness into the registry (StorageError(SETTINGS_OFFLINE) while it is away; refused
        without the admin's proof once the fleet has a PIN), with an audit entry of the change in the same
        transaction, then into the copy. With ``create_only``, only where none of the keys is set yet (False
        otherwise). The PIN record goes through ``write_pin``."""
        if PIN_KEY in values or GUARD_KEY in values:
            raise StorageError("the fleet's admin PIN is changed through its PIN manager (set_pin), not as a setting")
        with self._lock:
            current = self.values()
            detail = ", ".join(f"{k}: {current.get(k)!r} -> {v!r}" for k, v in sorted(values.items()))
            kind = EVENT_THRESHOLD if "threshold" in values else EVENT_LIVENESS
            event = new_entry(kind, "", None, "", detail[:500], "a fleet setting, written to the registry")
            link = self.link
            if create_only:
                written = link.call(lambda conn: registry.seed_settings(conn, values) == len(values),
                                    offline_message=SETTINGS_OFFLINE)
            else:
                written = link.call(lambda conn: registry.change_settings(conn, link.kiosk_id, link.chain_hash, values,
                                                                          self.proof, event),
                                    offline_message=SETTINGS_OFFLINE)
            if written:
                with self.local.transaction() as conn:
                    self._keep(conn, values)
            return written

    def write_pin(self, record: dict, guard: dict, new_proof: bytes, create_only: bool) -> bool:
        """The PIN record and its guard (the first PIN with ``create_only``: False when one was set meanwhile;
        else the current PIN's ``proof`` is needed), with an audit entry, then into the copy."""
        with self._lock:
            link = self.link
            event = new_entry(EVENT_PIN_SET if create_only else EVENT_PIN_CHANGED, "", None, "", "fleet admin PIN",
                              "the PIN record, written to the registry")
            written = link.call(lambda conn: registry.set_pin(conn, link.kiosk_id, link.chain_hash, record, guard,
                                                              new_proof, self.proof, create_only, event),
                                offline_message=SETTINGS_OFFLINE)
            if written:
                self.proof = new_proof
                with self.local.transaction() as conn:
                    self._keep(conn, {PIN_KEY: record, GUARD_KEY: guard})
            return written

    def keep_guard(self, guard: dict) -> None:
        """The PIN guard into this kiosk's copy only (a lock restarted after the clock went back)."""
        with self._lock, self.local.transaction() as conn:
            self._keep(conn, {GUARD_KEY: guard})

    def record_entry(self, guard: dict, ok: bool, now: float) -> dict:
        """One PIN entry: into the registry's guard, atomically (two kiosks at once both count); while the
        registry is away into the copy, a wrong one also counted for the registry (``pull`` adds it when it
        is back; a good one forgets this kiosk's offline typos, not the registry's count). Returns the guard."""
        with self._lock:
            if self.link.status.online:
                try:
                    new = self.link.call(lambda conn: registry.change_setting(
                        conn, GUARD_KEY, lambda old: self.rule.after_entry(old if valid_guard(old) else guard, ok, now)),
                        offline_message=SETTINGS_OFFLINE)
                except StorageError:
                    if self.link.status.online:
                        raise
                else:
                    with self.local.transaction() as conn:
                        self._keep(conn, {GUARD_KEY: new})
                    return new
            new = self.rule.after_entry(guard, ok, now)
            counted = 0 if ok else self.offline_wrong_entries() + 1
            with self.local.transaction() as conn:
                self._keep(conn, {GUARD_KEY: new})
                conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                             "value = excluded.value", (_OFFLINE_WRONG, str(counted)))
            log.warning("PIN entry counted on this kiosk only (the registry is away): %d wrong to add", counted)
            return new

    # -- synchronisation (the sync thread) ------------------------------------------------------------------
    def _seed(self) -> dict[str, object]:
        try:
            own = self.own.load()
        except StorageError as exc:
            log.warning("%s", exc)
            own = Settings()
        return {key: getattr(own, key) for key in FLEET_SETTINGS}

    def _merge_offline(self, old, wrong: int, mine) -> object:
        """The registry's guard with this kiosk's offline wrong entries added, and the stricter lock."""
        if not valid_guard(old):
            return old
        now = time.time()
        for _ in range(wrong):
            old = self.rule.after_entry(old, False, now)
        if valid_guard(mine) and mine["locked_until"] > old["locked_until"]:
            old = dict(old, lockouts=max(old["lockouts"], mine["lockouts"]), locked_until=mine["locked_until"])
        return old

    def pull(self, conn) -> bool:
        """Make the copy the registry's (after adding what this kiosk holds for it); True when it changed."""
        with self._lock:
            values = registry.settings(conn)
            if any(key not in values for key in FLEET_SETTINGS):  # settings.json is read then, not at every poll
                missing = {k: v for k, v in self._seed().items() if k not in values}
                registry.seed_settings(conn, missing)
                log.info("fleet settings %s taken from this kiosk's settings", ", ".join(sorted(missing)))
                values = registry.settings(conn)
            wrong = self.offline_wrong_entries()
            if wrong:
                mine = self.values().get(GUARD_KEY)
                values[GUARD_KEY] = registry.change_setting(conn, GUARD_KEY,
                                                            lambda old: self._merge_offline(old, wrong, mine))
                log.info("%d wrong PIN entr%s made while the registry was away added to the fleet's count", wrong,
                         "y" if wrong == 1 else "ies")
            changed = not self.synced or values != self.values()
            if changed or wrong:
                with self.local.transaction() as c:
                    self._keep(c, values, replace_all=True)
                    c.execute("INSERT INTO meta (key, value) VALUES (?, '1') ON CONFLICT(key) DO UPDATE SET "
                              "value = excluded.value", (_SYNCED,))
                    c.execute("DELETE FROM meta WHERE key = ?", (_OFFLINE_WRONG,))
            return changed


class FleetSettingsStore(SettingsStore):
    """A fleet kiosk's SettingsStore: its settings.json, with the shared fields from the fleet's copy, and
    changes of them written to the registry (refused while it is away)."""

    def __init__(self, own: SettingsStore, fleet: FleetSettings):
        super().__init__(own.path)
        self.own, self.fleet = own, fleet

    def load(self) -> Settings:
        settings = self.own.load()
        values = self.fleet.values() if self.fleet.synced else {}
        defaults = Settings()  # never synchronised: the safe defaults (the model's threshold, liveness on)
        shared = {key: values.get(key, getattr(defaults, key)) for key in FLEET_SETTINGS}
        return replace(settings, **shared, pin=values.get(PIN_KEY)).validated()

    def save(self, settings: Settings) -> Settings:
        current = self.load()
        return self.update(**{f.name: getattr(settings, f.name) for f in fields(Settings)
                              if getattr(settings, f.name) != getattr(current, f.name)})

    def update(self, **changes) -> Settings:
        with self._lock:
            shared = [key for key in changes if key in SHARED]
            if shared:
                checked = replace(self.load(), **changes).validated()
                self.fleet.write({key: getattr(checked, key) for key in shared})
            own = {key: value for key, value in changes.items() if key not in SHARED}
            if own:
                self.own.update(**own)
            return self.load()
