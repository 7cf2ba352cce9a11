"""The admin PIN: salted scrypt hash, constant-time comparison, lockout after repeated wrong entries.

The failure count and lock time live in the settings file, so restarting the kiosk does not reset them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from typing import Callable

from .db import StorageError
from .settings import SettingsStore

SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 2 ** 14, 8, 1, 32
MIN_PIN, MAX_PIN = 4, 12


class PinError(StorageError):
    """A PIN that cannot be set (format, mismatch, wrong current PIN)."""


def check_pin_format(pin: str) -> str:
    if not (pin.isdigit() and pin.isascii() and MIN_PIN <= len(pin) <= MAX_PIN):
        raise PinError(f"the PIN must be {MIN_PIN} to {MAX_PIN} digits")
    return pin


def _scrypt(pin: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(pin.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=length, maxmem=128 * 1024 * 1024)


def hash_pin(pin: str) -> dict:
    """A storable record: algorithm, parameters, random salt and hash (hex)."""
    salt = os.urandom(16)
    digest = _scrypt(pin, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN)
    return {"algorithm": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
            "salt": salt.hex(), "hash": digest.hex()}


def verify_pin(pin: str, record: dict) -> bool:
    try:
        if record.get("algorithm") != "scrypt":
            return False
        expected = bytes.fromhex(record["hash"])
        actual = _scrypt(pin, bytes.fromhex(record["salt"]), int(record["n"]), int(record["r"]), int(record["p"]),
                         len(expected))
    except (KeyError, TypeError, ValueError):
        raise StorageError("the stored admin PIN record is damaged; delete 'pin' from the settings file "
                           "to set a new PIN") from None
    return hmac.compare_digest(actual, expected)


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
    return f"{seconds // 60}:{seconds % 60:02d} min" if seconds >= 60 else f"{seconds} s"


class PinManager:
    def __init__(self, settings: SettingsStore, max_attempts: int = 5, lockout_s: float = 300.0,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.max_attempts = max_attempts
        self.lockout_s = lockout_s
        self.clock = clock

    @property
    def is_set(self) -> bool:
        return self.settings.load().pin is not None

    def locked_for(self) -> float:
        """Seconds until PIN entry is allowed again (0 when not locked). Capped at the lockout length
        so a clock turned back cannot lock the kiosk for ever."""
        now = self.clock()
        remaining = self.settings.load().pin_locked_until - now
        if remaining > self.lockout_s:  # the clock went back: restart the lock from now
            self.settings.update(pin_locked_until=now + self.lockout_s)
            return self.lockout_s
        return max(remaining, 0.0)

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
        self.settings.update(pin=hash_pin(new_pin), pin_failures=0, pin_locked_until=0.0)

    def check(self, pin: str) -> PinResult:
        settings = self.settings.load()
        if settings.pin is None:
            raise PinError("no admin PIN is set yet")
        locked = self.locked_for()
        if locked > 0:
            return PinResult(False, 0, locked)
        failures = settings.pin_failures if settings.pin_locked_until <= 0 else 0  # an expired lock resets
        if verify_pin(pin, settings.pin):
            if failures or settings.pin_locked_until:
                self.settings.update(pin_failures=0, pin_locked_until=0.0)
            return PinResult(True, self.max_attempts)
        failures += 1
        if failures >= self.max_attempts:
            self.settings.update(pin_failures=0, pin_locked_until=self.clock() + self.lockout_s)
            return PinResult(False, 0, self.lockout_s)
        self.settings.update(pin_failures=failures, pin_locked_until=0.0)
        return PinResult(False, self.max_attempts - failures)
