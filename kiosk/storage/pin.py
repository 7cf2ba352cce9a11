"""The admin PIN: salted, peppered scrypt hash, constant-time comparison, escalating lockouts, and failing closed.

Two places hold it, on purpose:

- the PIN record (algorithm, salt, scrypt hash) in the settings file, in the config folder;
- the PIN guard, ``pin_guard.json`` (0600) in the data folder: a fingerprint (SHA-256) of the record set
  last, the wrong entries since the last good one, and the lockout state, with a MAC.

Both are tied to the kiosk's data key (kiosk.storage.keys), never used directly: two sub-keys are derived
from it, ``HMAC(data key, "siamese-kiosk pin guard v1")`` and ``HMAC(data key, "siamese-kiosk pin pepper v1")``.

- The guard's MAC (HMAC-SHA256 with the guard key) covers every field of the guard: the record's fingerprint
  (so the record too), the change in progress, the wrong entries and the lock. Deleting the guard, editing it
  (clearing the count or the lock, with or without a recomputed fingerprint), writing one without a MAC or
  with a MAC made without the key, or replacing the record keeps the admin tab locked.
- The record's hash is ``scrypt(HMAC(pepper key, PIN))`` (``"pepper"`` in the record): the settings file
  alone no longer lets anyone try all the PINs offline; that needs the data key too. A record without the
  pepper (written by an older version, or by the fleet's code) is still verified where the authenticated
  guard vouches for it (its fingerprint), and re-hashed with the pepper at the next right entry.

Once a PIN has been set, a record or guard that is missing, damaged, not authenticated or not the one the
guard knows keeps the admin tab locked, and only ``kiosk admin reset-pin``, run in a terminal by the owner of
the data folder, sets a new one (with an authenticated guard). A guard without a MAC, as the previous version
wrote it, is refused like a forged one: an attacker can write such a guard with a record of their own, so
trusting it "once" would reopen the hole. An upgraded kiosk therefore needs one ``kiosk admin reset-pin``.
A first start (no record, no guard) still offers the first-start page.

What the MAC does not cover: someone with the disk *and* the data key beside it (the default: data.key in the
config folder, unencrypted) can recompute the MAC and the pepper, so a copied disk with its key file is not
protected (keeping the key off the disk is a separate matter: ``KIOSK_KEY_FILE``). Nor does it stop putting
back an older authenticated guard and record of this kiosk saved earlier (a rollback to a PIN that was once
genuinely set, or to a guard from before a lockout): there is no monotonic counter to compare with. Nor
can it tell a first start from a kiosk whose record *and* guard were both deleted (by someone who can write
both folders): no file proves that another was never there. The application layer asks the audit log, which
keeps the PIN's EVENT_PIN_SET (kiosk.app.admin.Pins.is_set), and keeps administration locked.

The key: a PinManager built by Storage.pin_manager gets the key the store was opened with; one built by hand
(scripts, tests: ``PinManager(SettingsStore())``) reads ``key_file`` (default: kiosk.storage.keys.key_path())
whenever it needs the key, and the first PIN (or a reset) with no key file there creates one, as
Storage.open does for a new store. With a PIN set and no key to be found, administration stays locked (NO_KEY).

Lockouts escalate: ``max_attempts`` wrong entries lock for ``lockout_s``, each further lockout before a
good entry lasts twice as long (at most ``max_lockout_s``); a restart changes nothing (``LockoutRule``).

A fleet kiosk keeps the same rules with the record and the guard in the registry (kiosk.storage.fleet.pin),
without the local data key (its records are plain scrypt, ``hash_pin``/``verify_pin``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kiosk.io.files import atomic_write_text, private_dir
from kiosk.paths import data_dir
from kiosk.storage.db import StorageError
from kiosk.storage.keys import KeyMissingError, create_key, key_path, read_key
from kiosk.storage.settings import SettingsStore

SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 2 ** 14, 8, 1, 32
MIN_PIN, MAX_PIN = 6, 12
GUARD_NAME = "pin_guard.json"
RESET_COMMAND = "kiosk admin reset-pin"
_SCRYPT_MAXMEM = 128 * 1024 * 1024
PEPPER = "hmac-sha256-v1"   # the record's "pepper": scrypt over HMAC(pepper key, PIN)
_GUARD_LABEL = b"siamese-kiosk pin guard v1"
_PEPPER_LABEL = b"siamese-kiosk pin pepper v1"

# what PinManager.state() says
UNSET, OK, MISSING, DAMAGED, MISMATCH = "unset", "ok", "missing", "damaged", "mismatch"
UNGUARDED, UNAUTHENTICATED, NO_KEY = "unguarded", "unauthenticated", "no-key"
_LOCKED_REASONS = {
    MISSING: "the admin PIN record is missing from the settings file (was the file deleted or replaced?)",
    DAMAGED: "the admin PIN record in the settings file is damaged",
    MISMATCH: "the admin PIN record in the settings file is not the one set on this kiosk (was the file changed?)",
    UNGUARDED: f"the admin PIN guard ({GUARD_NAME} in the data folder) is missing beside a PIN record (it was "
               f"deleted, or the PIN was set by an older version of the kiosk)",
    UNAUTHENTICATED: f"the admin PIN guard ({GUARD_NAME} in the data folder) is not authenticated with this "
                     f"kiosk's data key (written by an older version of the kiosk, or changed outside it)",
    NO_KEY: "the data key is missing or cannot be read, so the admin PIN and its guard cannot be checked",
}


class PinError(StorageError):
    """A PIN that cannot be set (format, mismatch, wrong current PIN)."""


class PinRecordError(PinError):
    """A PIN was set on this kiosk, but its record is missing, damaged or replaced: administration stays
    locked until the owner of the data folder runs ``kiosk admin reset-pin``."""


def check_pin_format(pin: str) -> str:
    if not (isinstance(pin, str) and pin.isdigit() and pin.isascii() and MIN_PIN <= len(pin) <= MAX_PIN):
        raise PinError(f"the PIN must be {MIN_PIN} to {MAX_PIN} digits")
    return pin


def _scrypt(pin: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(pin.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=length, maxmem=_SCRYPT_MAXMEM)


def guard_key(data_key: bytes) -> bytes:
    """The sub-key of the guard's MAC (the data key itself is never used)."""
    return hmac.new(data_key, _GUARD_LABEL, hashlib.sha256).digest()


def pepper_key(data_key: bytes) -> bytes:
    """The sub-key of the pepper: the PIN is hashed as HMAC(pepper key, PIN)."""
    return hmac.new(data_key, _PEPPER_LABEL, hashlib.sha256).digest()


def _peppered(pin: str, pepper: bytes) -> str:
    # hex, so scrypt sees a plain ASCII password whatever the bytes
    return hmac.new(pepper, pin.encode("utf-8"), hashlib.sha256).hexdigest()


def hash_pin(pin: str, pepper: bytes | None = None) -> dict:
    """A storable record: algorithm, parameters, random salt and hash (hex); with ``pepper`` (pepper_key())
    the hash is of HMAC(pepper, PIN) and the record says so (``"pepper"``). Without: plain scrypt, as older
    versions and the fleet write it."""
    salt = os.urandom(16)
    secret = pin if pepper is None else _peppered(pin, pepper)
    digest = _scrypt(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN)
    record = {"algorithm": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
              "salt": salt.hex(), "hash": digest.hex()}
    if pepper is not None:
        record["pepper"] = PEPPER
    return record


def _int_in(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _hex_bytes(value, low: int, high: int) -> bool:
    try:
        return isinstance(value, str) and low <= len(bytes.fromhex(value)) <= high
    except ValueError:
        return False


def valid_record(record) -> bool:
    """A usable scrypt record, with parameters a stranger cannot turn into a memory or CPU bomb."""
    return (isinstance(record, dict) and record.get("algorithm") == "scrypt"
            and _int_in(record.get("n"), 2 ** 10, 2 ** 17) and record["n"] & (record["n"] - 1) == 0
            and _int_in(record.get("r"), 1, 16) and _int_in(record.get("p"), 1, 4)
            and 128 * record["r"] * record["n"] <= _SCRYPT_MAXMEM // 2
            and _hex_bytes(record.get("salt"), 16, 64) and _hex_bytes(record.get("hash"), 16, 64))


def fingerprint(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def verify_pin(pin: str, record: dict, pepper: bytes | None = None) -> bool:
    """Whether ``pin`` is the PIN of ``record``; a peppered record needs ``pepper`` (pepper_key())."""
    if not valid_record(record) or record.get("pepper", None) not in (None, PEPPER) \
            or (record.get("pepper") is not None and pepper is None):
        raise PinRecordError(f"{_LOCKED_REASONS[DAMAGED]}; run '{RESET_COMMAND}' in a terminal to set a new PIN")
    secret = pin if record.get("pepper") is None else _peppered(pin, pepper)
    expected = bytes.fromhex(record["hash"])
    actual = _scrypt(secret, bytes.fromhex(record["salt"]), record["n"], record["r"], record["p"], len(expected))
    return hmac.compare_digest(actual, expected)


def guard_mac(key: bytes, guard: dict) -> str:
    """The MAC of every field of ``guard`` but "mac" itself (``key``: guard_key())."""
    body = {k: v for k, v in guard.items() if k != "mac"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, _GUARD_LABEL + b"\n" + text, hashlib.sha256).hexdigest()


def guard_authentic(key: bytes, guard: dict) -> bool:
    mac = guard.get("mac")
    return isinstance(mac, str) and hmac.compare_digest(mac.encode(), guard_mac(key, guard).encode())


def valid_guard(guard) -> bool:
    return (isinstance(guard, dict) and isinstance(guard.get("fingerprint"), str)
            and _int_in(guard.get("failures"), 0, 10 ** 6) and _int_in(guard.get("lockouts"), 0, 10 ** 6)
            and isinstance(guard.get("locked_until"), (int, float)) and not isinstance(guard["locked_until"], bool)
            and isinstance(guard.get("next"), (str, type(None))))


def new_guard(record: dict | None, locked_until: float = 0.0, lockouts: int = 0) -> dict:
    """The guard of a freshly set ``record``: no wrong entries, no lock."""
    return {"fingerprint": fingerprint(record) if record is not None else "", "next": None, "failures": 0,
            "lockouts": lockouts, "locked_until": float(locked_until)}


@dataclass(frozen=True)
class LockoutRule:
    """How wrong entries lock PIN entry: the one home of this rule (single kiosk and fleet alike)."""

    max_attempts: int = 5
    lockout_s: float = 300.0
    max_lockout_s: float = 24 * 3600.0

    def length(self, lockouts: int) -> float:
        return min(self.lockout_s * 2 ** max(lockouts - 1, 0), max(self.max_lockout_s, self.lockout_s))

    def after_entry(self, guard: dict, ok: bool, now: float) -> dict:
        """The guard after one PIN entry at ``now``: a good one clears the count and the escalation, a wrong
        one counts, the ``max_attempts``-th starts the next lock. A guard locked meanwhile (at another kiosk
        of a fleet) stays as it is."""
        if guard["locked_until"] > now:
            return guard
        if ok:
            return dict(guard, failures=0, lockouts=0, locked_until=0.0)
        failures = guard["failures"] + 1
        if failures >= self.max_attempts:
            lockouts = guard["lockouts"] + 1
            return dict(guard, failures=0, lockouts=lockouts, locked_until=now + self.length(lockouts))
        return dict(guard, failures=failures)


@dataclass(frozen=True)
class PinResult:
    ok: bool
    attempts_left: int = 0
    locked_for: float = 0.0   # seconds; > 0 means locked

    @property
    def message(self) -> str:
        if self.ok:
            return "PIN accepted"
        if self.locked_for > 0:
            return f"Too many wrong PINs: locked for {format_duration(self.locked_for)}"
        return f"Wrong PIN ({self.attempts_left} attempt{'s' if self.attempts_left != 1 else ''} left)"


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60}:{seconds % 60:02d} min" if seconds >= 60 else f"{seconds} s"


def check_folder_owner(folder: str | Path) -> None:
    """Only the account that owns the data folder may reset the PIN (it could replace the data anyway)."""
    folder = Path(folder)
    try:
        owner = folder.stat().st_uid
    except FileNotFoundError:
        return  # nothing set up yet: the folder will be created by, and belong to, this account
    except OSError as exc:
        raise PinError(f"{folder}: cannot check who owns the data folder ({exc.strerror or exc})") from None
    if hasattr(os, "getuid") and os.getuid() != owner:
        raise PinError(f"only the owner of {folder} (user id {owner}) may reset the admin PIN; "
                       f"this is user id {os.getuid()}")


class LocalPinStore:
    """Where a single kiosk keeps its PIN: the record in the settings file, the guard in ``guard_path`` (the data
    folder), both tied to the data key (the module's docstring). One of the two state stores of the PIN state
    machine (PinManager); the fleet's is kiosk.storage.fleet.pin.FleetPinStore.

    ``data_key``: the key (Storage.pin_manager gives the one the store was opened with); without it, the key is
    read from ``key_file`` (default: key_path()) when needed, and created there by a first PIN or a reset."""

    def __init__(self, settings: SettingsStore, guard_path: Path, data_key: bytes | None = None,
                 key_file: str | Path | None = None):
        self.settings = settings
        self.guard_path = guard_path
        self.rule = LockoutRule()
        self.clock: Callable[[], float] = time.time
        self._data_key = data_key
        self.key_file = Path(key_file) if key_file else None
        self._key_problem = ""

    def bind(self, rule: LockoutRule, clock: Callable[[], float]) -> None:
        """The state machine's lockout rule and clock (called once by PinManager)."""
        self.rule, self.clock = rule, clock

    # -- the data key ---------------------------------------------------------------------------------------
    def _key(self, create: bool = False) -> bytes | None:
        """The data key, or None (why: ``_key_problem``); ``create``: make one where there is no key file."""
        if self._data_key is not None:
            return self._data_key
        path = self.key_file or key_path()
        try:
            key = read_key(path)
            if key is None and create:
                key = create_key(path)
        except (KeyMissingError, OSError) as exc:
            self._key_problem = str(exc)
            return None
        self._key_problem = "" if key is not None else f"the data key {path} is missing"
        return key

    def _keys(self, create: bool = False) -> tuple[bytes, bytes]:
        """(guard key, pepper key); PinError without a data key."""
        key = self._key(create)
        if key is None:
            raise PinRecordError(f"{self._key_problem or 'no data key'}: the admin PIN cannot be set or checked "
                                 f"without it")
        return guard_key(key), pepper_key(key)

    def new_record(self, pin: str) -> dict:
        """A record of ``pin``, peppered with this kiosk's key (made now where a first PIN has none yet)."""
        return hash_pin(pin, self._keys(create=True)[1])

    def verify(self, pin: str, record: dict) -> bool:
        return verify_pin(pin, record, self._keys()[1])

    def after_good_entry(self, pin: str, record: dict, guard: dict) -> None:
        """A record without the pepper (vouched for by the authenticated guard) is re-hashed with it."""
        if record.get("pepper") is None:
            self.write_record(self.new_record(pin), guard)

    # -- the guard file ---------------------------------------------------------------------------------------
    def _damaged_guard(self, why: str) -> StorageError:
        return PinRecordError(f"{self.guard_path}: the admin PIN guard is {why}; the admin tab stays locked "
                              f"until the owner of the data folder runs '{RESET_COMMAND}' in a terminal")

    def load_guard(self) -> dict | None:
        """The guard as it is on disk (its MAC is checked by read()); None when there is none."""
        try:
            text = self.guard_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise self._damaged_guard(f"unreadable ({getattr(exc, 'strerror', None) or exc})") from None
        try:
            guard = json.loads(text)
        except ValueError:
            guard = None
        if not valid_guard(guard):
            raise self._damaged_guard("damaged")
        return guard

    def save_guard(self, guard: dict) -> None:
        """Write ``guard`` with its MAC (PinRecordError without a data key)."""
        key = self._keys(create=False)[0]
        body = {k: v for k, v in guard.items() if k != "mac"}
        private_dir(self.guard_path.parent)
        atomic_write_text(self.guard_path, json.dumps(dict(body, mac=guard_mac(key, body)), indent=2,
                                                      sort_keys=True) + "\n")

    # -- the state ------------------------------------------------------------------------------------------
    def read(self) -> tuple[str, dict | None, object]:
        """(state, guard, record): UNSET, OK, or why administration is locked (MISSING, DAMAGED, MISMATCH,
        UNGUARDED, UNAUTHENTICATED, NO_KEY)."""
        record, guard = self.settings.load().pin, self.load_guard()
        if guard is None:
            # a first start; or a record whose guard was deleted, or never written (an older version): refused,
            # as anyone who can write the settings file could have written that record
            return (UNSET, None, None) if record is None else (UNGUARDED, None, record)
        if "mac" not in guard:  # an older version's guard (or one written without the key): nothing vouches for it
            return UNAUTHENTICATED, None, record
        key = self._key()
        if key is None:
            return NO_KEY, None, record
        if not guard_authentic(guard_key(key), guard):  # a MAC not made with this kiosk's key
            return UNAUTHENTICATED, None, record
        if record is None:
            return MISSING, guard, record
        if not valid_record(record) or record.get("pepper", None) not in (None, PEPPER):
            return DAMAGED, guard, record
        if fingerprint(record) == guard["next"]:  # a change interrupted after the record was written
            guard = dict(guard, fingerprint=guard["next"], next=None)
            self.save_guard(guard)
        if fingerprint(record) != guard["fingerprint"]:
            return MISMATCH, guard, record
        return OK, guard, record

    def locked_message(self, state: str) -> str:
        """Why administration is locked, and the way back."""
        reason = _LOCKED_REASONS[state]
        if state == NO_KEY:
            return (f"{reason}{': ' + self._key_problem if self._key_problem else ''}. The admin tab stays locked "
                    f"until the key file is back (the copy you kept; KIOSK_KEY_FILE if it lives elsewhere), or the "
                    f"owner of the data folder runs '{RESET_COMMAND}' in a terminal to set a new PIN.")
        return (f"{reason}. The admin tab stays locked: the owner of the data folder must run "
                f"'{RESET_COMMAND}' in a terminal to set a new PIN.")

    # -- changes --------------------------------------------------------------------------------------------
    def count_entry(self, guard: dict, ok: bool, now: float) -> dict:
        """Count one entry into the guard (LockoutRule) and keep it; returns the guard now."""
        changed = self.rule.after_entry(guard, ok, now)
        if changed != guard:
            self.save_guard(changed)
        return changed

    def write_record(self, record: dict, guard: dict | None) -> None:
        """Guard first, record second, guard again: the guard names the new record as 'next' beforehand (a first
        PIN's too), so a crash after the record was written leaves a kiosk that opens with the new PIN, one
        before it the old PIN (a first PIN: a locked admin tab, never the first-start page again)."""
        self.save_guard(dict(guard if guard is not None else new_guard(None), next=fingerprint(record)))
        extra = self.settings.load().extra
        stale = {k: v for k, v in extra.items() if k not in ("pin_failures", "pin_locked_until")}  # pre-guard
        self.settings.update(pin=record, extra=stale)
        self.save_guard(new_guard(record))

    def check_reset(self) -> None:
        """Whether this store may be reset from here (a single kiosk's may: its owner runs the command)."""

    def reset(self, record: dict) -> None:
        self.settings.load()  # a settings file that cannot be read is reported before anything changes
        # whatever guard there was (damaged, unauthenticated, or another record's) is replaced; until the new
        # record is in place this one matches no record, so an interruption leaves administration locked
        self.write_record(record, new_guard(None))


class PinManager:
    """The PIN state machine, one for a single kiosk and a fleet alike: the state (UNSET, OK or why it is
    locked), setting and changing the PIN, entries counted by the LockoutRule, the reset. Where the record and
    its guard are kept is its ``store``: LocalPinStore (the default: settings.json and ``guard_path``) or the
    fleet's (kiosk.storage.fleet.pin).

    ``data_key`` / ``key_file``: the local store's data key, or where to read it (LocalPinStore; the module's
    docstring). A store may hash and verify PINs itself (``new_record``, ``verify``, ``after_good_entry``, as
    LocalPinStore does with its pepper); one without them gets plain scrypt (``hash_pin``, ``verify_pin``)."""

    def __init__(self, settings: SettingsStore, max_attempts: int = 5, lockout_s: float = 300.0,
                 clock: Callable[[], float] = time.time, guard_path: str | Path | None = None,
                 max_lockout_s: float = 24 * 3600.0, store=None, data_key: bytes | None = None,
                 key_file: str | Path | None = None):
        self.settings = settings
        self.rule = LockoutRule(max_attempts, lockout_s, max(max_lockout_s, lockout_s))
        self.max_attempts = max_attempts
        self.lockout_s = lockout_s
        self.max_lockout_s = self.rule.max_lockout_s
        self.clock = clock
        self.guard_path = Path(guard_path) if guard_path else data_dir() / GUARD_NAME
        self.store = store if store is not None else LocalPinStore(settings, self.guard_path, data_key, key_file)
        self.store.bind(self.rule, clock)

    def _new_record(self, pin: str) -> dict:
        new_record = getattr(self.store, "new_record", None)
        return new_record(pin) if new_record is not None else hash_pin(pin)

    def _verify(self, pin: str, record: dict) -> bool:
        verify = getattr(self.store, "verify", None)
        return verify(pin, record) if verify is not None else verify_pin(pin, record)

    def _guarded(self) -> tuple[dict, dict]:
        """(guard, record) of a PIN in good order; PinRecordError otherwise (PinError when none is set)."""
        state, guard, record = self.store.read()
        if state == UNSET:
            raise PinError("no admin PIN is set yet")
        if state != OK:
            raise PinRecordError(self.store.locked_message(state))
        return guard, record

    # -- state ----------------------------------------------------------------------------------------------
    def state(self) -> str:
        """UNSET (first start), OK, or why administration is locked: MISSING, DAMAGED, MISMATCH, and for a
        single kiosk UNGUARDED, UNAUTHENTICATED, NO_KEY (a fleet's store adds its own,
        kiosk.storage.fleet.pin.UNSYNCED)."""
        return self.store.read()[0]

    @property
    def is_set(self) -> bool:
        """True once a PIN is set; PinRecordError if it was set but its record is missing or damaged (the
        kiosk must not offer a stranger the first-start page)."""
        state = self.state()
        if state == UNSET:
            return False
        self._guarded()  # raises with the reason
        return True

    def locked_for(self) -> float:
        """Seconds until PIN entry is allowed again (0 when not locked). Capped at the current lock's length
        so a clock turned back cannot lock the kiosk for ever."""
        guard, _ = self._guarded()
        now = self.clock()
        length = self.rule.length(guard["lockouts"])
        remaining = guard["locked_until"] - now
        if remaining > length:  # the clock went back: restart the lock from now
            self.store.save_guard(dict(guard, locked_until=now + length))
            return length
        return max(remaining, 0.0)

    # -- actions --------------------------------------------------------------------------------------------
    def set_pin(self, new_pin: str, repeat: str | None = None, current: str | None = None) -> None:
        """First run: no current PIN needed. Afterwards the current PIN must be given (and right)."""
        check_pin_format(new_pin)
        if repeat is not None and repeat != new_pin:
            raise PinError("the two PINs differ")
        if self.is_set:
            if current is None:
                raise PinError("a PIN is already set; give the current PIN to change it")
            result = self.check(current)
            if not result.ok:
                raise PinError(f"the current PIN is not right: {result.message}")
        guard = self.store.load_guard()
        self.store.write_record(self._new_record(new_pin), guard)

    def reset(self, new_pin: str, repeat: str | None = None) -> None:
        """Set a new PIN whatever the state of the old one, and clear the lockout: ``kiosk admin
        reset-pin``, for the owner of the data folder only (checked by the caller). A fleet's store refuses."""
        self.store.check_reset()
        check_pin_format(new_pin)
        if repeat is not None and repeat != new_pin:
            raise PinError("the two PINs differ")
        self.store.reset(self._new_record(new_pin))

    def check(self, pin: str) -> PinResult:
        locked = self.locked_for()
        if locked > 0:
            return PinResult(False, 0, locked)
        guard, record = self._guarded()
        ok = self._verify(pin, record)
        now = self.clock()
        guard = self.store.count_entry(guard, ok, now)
        if guard["locked_until"] > now:  # this entry began a lock (or another kiosk of the fleet did meanwhile)
            return PinResult(False, 0, min(guard["locked_until"] - now, self.rule.length(guard["lockouts"])))
        if ok:
            after_good_entry = getattr(self.store, "after_good_entry", None)
            if after_good_entry is not None:
                after_good_entry(pin, record, guard)  # e.g. an older record re-hashed with the pepper
            return PinResult(True, self.max_attempts)
        return PinResult(False, self.max_attempts - guard["failures"])
