"""The admin PIN: salted scrypt hash, constant-time comparison, escalating lockouts, and failing closed.

Two places hold it, on purpose:

- the PIN record (algorithm, salt, scrypt hash) in the settings file, in the config folder;
- the PIN guard, ``pin_guard.json`` (0600) in the data folder: a fingerprint (SHA-256) of the record set
  last, the wrong entries since the last good one, and the lockout state.

Someone who can change the settings file but not the data folder can therefore neither reset the
lockout nor get in by deleting the record, breaking it or writing a record of their own: once a PIN has
been set, a record that is missing, damaged or not the one the guard knows keeps the admin tab locked,
and only ``kiosk admin reset-pin``, run in a terminal by the owner of the data folder, sets a new one.

Lockouts escalate: ``max_attempts`` wrong entries lock for ``lockout_s``, each further lockout before a
good entry lasts twice as long (at most ``max_lockout_s``); a restart changes nothing (``LockoutRule``).

A fleet kiosk keeps the same rules with the record and the guard in the registry (kiosk.storage.fleet.pin).
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
from kiosk.storage.settings import SettingsStore

SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 2 ** 14, 8, 1, 32
MIN_PIN, MAX_PIN = 6, 12
GUARD_NAME = "pin_guard.json"
RESET_COMMAND = "kiosk admin reset-pin"
_SCRYPT_MAXMEM = 128 * 1024 * 1024

# what PinManager.state() says
UNSET, OK, MISSING, DAMAGED, MISMATCH = "unset", "ok", "missing", "damaged", "mismatch"
_LOCKED_REASONS = {
    MISSING: "the admin PIN record is missing from the settings file (was the file deleted or replaced?)",
    DAMAGED: "the admin PIN record in the settings file is damaged",
    MISMATCH: "the admin PIN record in the settings file is not the one set on this kiosk (was the file changed?)",
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


def hash_pin(pin: str) -> dict:
    """A storable record: algorithm, parameters, random salt and hash (hex)."""
    salt = os.urandom(16)
    digest = _scrypt(pin, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN)
    return {"algorithm": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
            "salt": salt.hex(), "hash": digest.hex()}


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


def verify_pin(pin: str, record: dict) -> bool:
    if not valid_record(record):
        raise PinRecordError(f"{_LOCKED_REASONS[DAMAGED]}; run '{RESET_COMMAND}' in a terminal to set a new PIN")
    expected = bytes.fromhex(record["hash"])
    actual = _scrypt(pin, bytes.fromhex(record["salt"]), record["n"], record["r"], record["p"], len(expected))
    return hmac.compare_digest(actual, expected)


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
    folder). One of the two state stores of the PIN state machine (PinManager); the fleet's is
    kiosk.storage.fleet.pin.FleetPinStore."""

    def __init__(self, settings: SettingsStore, guard_path: Path):
        self.settings = settings
        self.guard_path = guard_path
        self.rule = LockoutRule()
        self.clock: Callable[[], float] = time.time

    def bind(self, rule: LockoutRule, clock: Callable[[], float]) -> None:
        """The state machine's lockout rule and clock (called once by PinManager)."""
        self.rule, self.clock = rule, clock

    # -- the guard file ---------------------------------------------------------------------------------------
    def _damaged_guard(self, why: str) -> StorageError:
        return PinRecordError(f"{self.guard_path}: the admin PIN guard is {why}; the admin tab stays locked "
                              f"until the owner of the data folder runs '{RESET_COMMAND}' in a terminal")

    def load_guard(self) -> dict | None:
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
        private_dir(self.guard_path.parent)
        atomic_write_text(self.guard_path, json.dumps(guard, indent=2, sort_keys=True) + "\n")

    # -- the state ------------------------------------------------------------------------------------------
    def read(self) -> tuple[str, dict | None, object]:
        """(state, guard, record): UNSET, OK, or why administration is locked (MISSING, DAMAGED, MISMATCH)."""
        settings = self.settings.load()
        record, guard = settings.pin, self.load_guard()
        if guard is None:
            if record is None:
                return UNSET, None, None
            if not valid_record(record):  # set by a version without the guard, since damaged
                return DAMAGED, None, record
            # a PIN set by a version without the guard (or a first PIN whose guard a crash kept from being
            # written): trusted once, guarded from now on; an old lock still holds
            old_lock = settings.extra.get("pin_locked_until", 0.0)
            old_lock = old_lock if isinstance(old_lock, (int, float)) and not isinstance(old_lock, bool) else 0.0
            now = self.clock()
            guard = new_guard(record, min(old_lock, now + self.rule.lockout_s), lockouts=int(old_lock > now))
            self.save_guard(guard)
            return OK, guard, record
        if record is None:
            return MISSING, guard, record
        if not valid_record(record):
            return DAMAGED, guard, record
        if fingerprint(record) == guard["next"]:  # a change interrupted after the record was written
            guard = dict(guard, fingerprint=guard["next"], next=None)
            self.save_guard(guard)
        if fingerprint(record) != guard["fingerprint"]:
            return MISMATCH, guard, record
        return OK, guard, record

    def locked_message(self, state: str) -> str:
        """Why administration is locked, and the way back."""
        return (f"{_LOCKED_REASONS[state]}. The admin tab stays locked: the owner of the data folder must run "
                f"'{RESET_COMMAND}' in a terminal to set a new PIN.")

    # -- changes --------------------------------------------------------------------------------------------
    def count_entry(self, guard: dict, ok: bool, now: float) -> dict:
        """Count one entry into the guard (LockoutRule) and keep it; returns the guard now."""
        changed = self.rule.after_entry(guard, ok, now)
        if changed != guard:
            self.save_guard(changed)
        return changed

    def write_record(self, record: dict, guard: dict | None) -> None:
        """Record first, guard second; the guard names the new record as 'next' beforehand, so a crash in
        between leaves a kiosk that opens with the new PIN (the old one if the record was not yet written)."""
        if guard is not None:
            self.save_guard(dict(guard, next=fingerprint(record)))
        extra = self.settings.load().extra
        stale = {k: v for k, v in extra.items() if k not in ("pin_failures", "pin_locked_until")}  # pre-guard
        self.settings.update(pin=record, extra=stale)
        self.save_guard(new_guard(record))

    def check_reset(self) -> None:
        """Whether this store may be reset from here (a single kiosk's may: its owner runs the command)."""

    def reset(self, record: dict) -> None:
        self.settings.load()  # a settings file that cannot be read is reported before anything changes
        # whatever guard there was (damaged, or another record's) is replaced; until the new record is in
        # place this one matches no record, so an interruption leaves administration locked, never open
        self.write_record(record, new_guard(None))


class PinManager:
    """The PIN state machine, one for a single kiosk and a fleet alike: the state (UNSET, OK or why it is
    locked), setting and changing the PIN, entries counted by the LockoutRule, the reset. Where the record and
    its guard are kept is its ``store``: LocalPinStore (the default: settings.json and ``guard_path``) or the
    fleet's (kiosk.storage.fleet.pin)."""

    def __init__(self, settings: SettingsStore, max_attempts: int = 5, lockout_s: float = 300.0,
                 clock: Callable[[], float] = time.time, guard_path: str | Path | None = None,
                 max_lockout_s: float = 24 * 3600.0, store=None):
        self.settings = settings
        self.rule = LockoutRule(max_attempts, lockout_s, max(max_lockout_s, lockout_s))
        self.max_attempts = max_attempts
        self.lockout_s = lockout_s
        self.max_lockout_s = self.rule.max_lockout_s
        self.clock = clock
        self.guard_path = Path(guard_path) if guard_path else data_dir() / GUARD_NAME
        self.store = store if store is not None else LocalPinStore(settings, self.guard_path)
        self.store.bind(self.rule, clock)

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
        """UNSET (first start), OK, or why administration is locked: MISSING, DAMAGED, MISMATCH (a fleet's
        store adds its own, kiosk.storage.fleet.pin.UNSYNCED)."""
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
        self.store.write_record(hash_pin(new_pin), guard)

    def reset(self, new_pin: str, repeat: str | None = None) -> None:
        """Set a new PIN whatever the state of the old one, and clear the lockout: ``kiosk admin
        reset-pin``, for the owner of the data folder only (checked by the caller). A fleet's store refuses."""
        self.store.check_reset()
        check_pin_format(new_pin)
        if repeat is not None and repeat != new_pin:
            raise PinError("the two PINs differ")
        self.store.reset(hash_pin(new_pin))

    def check(self, pin: str) -> PinResult:
        locked = self.locked_for()
        if locked > 0:
            return PinResult(False, 0, locked)
        guard, record = self._guarded()
        ok = verify_pin(pin, record)
        now = self.clock()
        guard = self.store.count_entry(guard, ok, now)
        if guard["locked_until"] > now:  # this entry began a lock (or another kiosk of the fleet did meanwhile)
            return PinResult(False, 0, min(guard["locked_until"] - now, self.rule.length(guard["lockouts"])))
        if ok:
            return PinResult(True, self.max_attempts)
        return PinResult(False, self.max_attempts - guard["failures"])
