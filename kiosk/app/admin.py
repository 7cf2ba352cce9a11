"""The admin's use cases, each one method that does the work and writes its audit entry. Qt-free.

Every client (the Qt admin tab, the command line, a Python program) calls these; none writes an admin audit
entry itself. A method runs on the caller's thread: the Qt layer runs it off the GUI thread
(``Background.run(lambda: kiosk.admin.delete(employee_id))``, as Anki's ``CollectionOp`` wraps
``Collection`` methods). A change that was made but whose audit entry could not be written raises
:class:`AuditNotRecorded` (the change stands; the caller says so).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kiosk.app.enrolment import enrol_images
from kiosk.app.locks import FaceLocks
from kiosk.errors import KioskError
from kiosk.rules.decision import KIOSK_MODES, LivenessPolicy, ThresholdPolicy
from kiosk.storage import (
    EVENT_DELETE,
    EVENT_ENROL,
    EVENT_LIVENESS,
    EVENT_LOCKOUT,
    EVENT_MODE,
    EVENT_MODEL,
    EVENT_PIN_CHANGED,
    EVENT_PIN_SET,
    EVENT_PIN_WRONG,
    EVENT_RE_ENROL,
    EVENT_START,
    EVENT_STOP,
    EVENT_THRESHOLD,
    EVENT_UNLOCK,
    AuditEntry,
    Employee,
    PinManager,
    PinResult,
    Settings,
    SettingsStore,
    Storage,
)
from kiosk.storage.audit import EVENT_DOOR_TEST, EVENT_LABELS
from kiosk.storage.pin import RESET_COMMAND, PinError, PinRecordError, check_pin_format, format_duration

log = logging.getLogger(__name__)

CONFIRMED = "applied by the admin, confirmed"


class AuditNotRecorded(KioskError):
    """The change was made, but its audit entry could not be written (the message says which and why)."""


def describe_threshold(policy: ThresholdPolicy, model_default: float | None) -> str:
    """How a threshold policy reads on the admin page and in the audit log: "0.624 (model default)"."""
    value = policy.threshold(model_default)
    return f"{value:.3f} (model default)" if policy.follows_model() else f"{value:.3f}"


def describe_liveness(policy: LivenessPolicy, model_default: float | None) -> str:
    """How a liveness policy reads: "off", "on at 0.500 (model default)", "on at the model's threshold"."""
    if not policy.enabled:
        return "off"
    value = policy.threshold(model_default)
    shown = "the model's threshold" if value is None else f"{value:.3f}"
    return f"on at {shown}" + (" (model default)" if policy.saved is None and value is not None else "")


class Admin:
    """Enrol, re-enrol, delete, the threshold, liveness, the mode and sounds, the audit export, and the
    kiosk's own start, stop and model events."""

    def __init__(self, storage: Storage, settings: SettingsStore, door=None):
        self.storage = storage
        self.settings = settings
        self.locks = FaceLocks(storage.audit)
        self.door = door  # kiosk.app.door.Door, or None

    def _record(self, kind: str, detail: str = "", reason: str = "") -> None:
        try:
            self.storage.audit.record_event(kind, detail, reason)
        except Exception as exc:
            log.error("audit event %s %s not recorded: %s", kind, detail, exc)
            raise AuditNotRecorded(f"the audit log could not record it: {exc}") from exc

    # -- employees ------------------------------------------------------------------------------------------
    def enrol(self, engine, employee_id: str, name: str, images: Sequence[tuple[np.ndarray, str]],
              replace: bool = True) -> Employee:
        """Enrol (or, for an ID already enrolled, re-enrol) from photos; audited as enrol or re-enrol."""
        existed = self.storage.employees.get(employee_id.strip()) is not None
        employee = enrol_images(engine, self.storage.employees, employee_id, name, list(images), replace)
        self._record(EVENT_RE_ENROL if existed else EVENT_ENROL, employee.id,
                     f"{employee.photo_count} photo(s), by the admin")
        return employee

    def delete(self, employee_id: str) -> bool:
        """Delete an employee with their photos and features; False (nothing audited) when not enrolled."""
        found = self.storage.employees.delete(employee_id)
        if found:
            self._record(EVENT_DELETE, employee_id, "deleted by the admin, confirmed")
        return found

    def face_locks(self) -> dict[str, float]:
        """{employee ID: when the lock ends, wall-clock seconds}: IDs locked for face verification after repeated
        suspected photo attacks (kiosk.rules.retries), for the admin's alert."""
        return self.locks.active()

    def unlock_face(self, employee_id: str) -> bool:
        """Lift an ID's lock (audited by kiosk.app.locks); False when it was not locked."""
        return self.locks.unlock(employee_id)

    def test_door(self) -> bool:
        """Admin > Door > Test door: one unlock now (audited with its outcome); True when it was delivered."""
        if self.door is None or self.door.output is None:
            raise KioskError("no door is configured (Admin > Door, or door.json in the config folder)")
        delivered = self.door.test()
        self._record(EVENT_DOOR_TEST, self.door.output.name, "delivered" if delivered else "not delivered in time")
        return delivered

    # -- settings -------------------------------------------------------------------------------------------
    def set_threshold(self, new: ThresholdPolicy, old: ThresholdPolicy, model_default: float | None) -> Settings:
        """Save the threshold; a change is audited "old -> new"."""
        settings = self.settings.update(threshold=new.saved)
        if new != old:
            self._record(EVENT_THRESHOLD, f"{describe_threshold(old, model_default)} -> "
                                          f"{describe_threshold(new, model_default)}", CONFIRMED)
        return settings

    def set_liveness(self, new: LivenessPolicy, old: LivenessPolicy, model_default: float | None) -> Settings:
        """Save the liveness policy (on/off, threshold); a change is audited "old -> new"."""
        settings = self.settings.update(liveness=new.enabled, liveness_threshold=new.saved)
        if new != old:
            self._record(EVENT_LIVENESS, f"{describe_liveness(old, model_default)} -> "
                                         f"{describe_liveness(new, model_default)}", CONFIRMED)
        return settings

    def set_mode(self, mode: str, old: str) -> Settings:
        """How people identify (kiosk.rules.decision.KIOSK_MODES); a change is audited."""
        if mode not in KIOSK_MODES:
            raise KioskError(f"unknown kiosk mode {mode!r}: one of {', '.join(KIOSK_MODES)}")
        settings = self.settings.update(kiosk_mode=mode)
        if mode != old:
            self._record(EVENT_MODE, f"{old} -> {mode}", "changed by the admin, confirmed")
        return settings

    def set_sounds(self, on: bool) -> Settings:
        """Accept and reject sounds (not a security setting: not audited)."""
        return self.settings.update(sounds=bool(on))

    # -- the audit trail --------------------------------------------------------------------------------------
    def export_audit(self, path: str | Path, entries: list[AuditEntry] | None = None) -> int:
        """Write entries (default: all) to a CSV file; the export itself is audited. Returns the rows written."""
        return self.storage.audit.export_csv(path, entries)  # it writes the EVENT_EXPORT entry itself

    # -- the kiosk's life ------------------------------------------------------------------------------------
    def started(self, detail: str, reason: str = "") -> None:
        self._record(EVENT_START, detail, reason)

    def stopped(self, reason: str) -> None:
        self._record(EVENT_STOP, "", reason)

    def model_changed(self, detail: str, reason: str = "the model changed: stored photos re-embedded") -> None:
        self._record(EVENT_MODEL, detail, reason)


class Pins:
    """The admin PIN's use cases: first PIN, unlock, change, reset; each audited (a wrong PIN and a lockout
    it begins too)."""

    def __init__(self, manager: PinManager, audit=None):
        self.manager = manager
        self.audit = audit  # kiosk.storage.AuditLog (None: a PIN with no audit trail, e.g. a test's)
        self.session_open = False  # the PIN opened the admin view and it has not locked since (end_session)

    def _record(self, kind: str, detail: str = "", reason: str = "") -> None:
        if self.audit is None:
            return
        try:
            self.audit.record_event(kind, detail, reason)
        except Exception as exc:  # the PIN decision stands; the log says what was lost
            log.error("audit event %s not recorded: %s", kind, exc)

    @property
    def is_set(self) -> bool:
        """True once a PIN is set; PinRecordError where it cannot be checked, and where the record and its guard
        are both gone although the audit log shows a PIN set on this kiosk (or fleet): deleting both files must
        not bring back the first-start page for a stranger."""
        if self.manager.is_set:
            return True
        past = self._pin_history()
        if past is not None:
            raise PinRecordError(
                f"the admin PIN record and its guard are both missing, yet the audit log shows a PIN set here "
                f"({EVENT_LABELS[past.kind]}, {past.time}): were the settings and data files deleted? The admin "
                f"tab stays locked: the owner of the data folder must run '{RESET_COMMAND}' in a terminal to set "
                f"a new PIN.")
        return False

    def _pin_history(self):
        """The newest audit entry of a PIN set or changed (None: none, or no audit log to ask)."""
        if self.audit is None:
            return None
        found = [e for kind in (EVENT_PIN_SET, EVENT_PIN_CHANGED) for e in self.audit.entries(kind=kind, limit=1)]
        return max(found, key=lambda e: e.id) if found else None

    def locked_for(self) -> float:
        return self.manager.locked_for()

    @property
    def locked_out(self) -> bool:
        """No PIN entry possible now: a lockout running, or the PIN record cannot be checked."""
        try:
            return self.is_set and self.manager.locked_for() > 0
        except KioskError:
            return True

    def _wrong(self, reason: str) -> None:
        self._record(EVENT_PIN_WRONG, reason=reason)
        try:
            locked = self.manager.locked_for()
        except KioskError:
            return
        if locked > 0:
            self._record(EVENT_LOCKOUT, format_duration(locked), reason="too many wrong PINs")

    def set_first(self, pin: str, repeat: str | None = None) -> None:
        """First start: choose the PIN (PinError when a PIN is set already, or the PIN is not acceptable)."""
        if self.is_set:  # PinRecordError where the PIN's files are gone but the audit log knows a PIN
            raise PinError("a PIN is already set; give the current PIN to change it")
        self.manager.set_pin(pin, repeat)
        self.session_open = True
        self._record(EVENT_PIN_SET, reason="first start")
        self._record(EVENT_UNLOCK, reason="admin tab opened with the PIN")  # the first PIN opens the tab

    def unlock(self, pin: str) -> PinResult:
        """Check the PIN at the admin gate: a right one opens (audited), a wrong one counts towards a lockout."""
        if self.manager.locked_for() > 0:  # locked out: the PIN is not even checked (nor audited again)
            return self.manager.check(pin)
        result = self.manager.check(pin)
        if result.ok:
            self.session_open = True
            self._record(EVENT_UNLOCK, reason="admin tab opened with the PIN")
        else:
            log.warning("wrong admin PIN (%s)", result.message)
            self._wrong(result.message)
        return result

    def end_session(self) -> None:
        """The admin view locked: forget what the PIN gave this session (a fleet's proof for the registry)."""
        self.session_open = False
        forget = getattr(self.manager, "end_session", None)  # FleetPinManager; a kiosk's PIN keeps nothing
        if forget is not None:
            forget()

    def change(self, current: str, new: str, repeat: str | None = None) -> None:
        """Change the PIN: the current one must be right (a wrong one is audited and counts towards a lockout)."""
        check_pin_format(new)
        if repeat is not None and repeat != new:
            raise PinError("the two PINs differ")
        result = self.manager.check(current)
        if not result.ok:
            self._wrong(f"changing the PIN: the current PIN is not right: {result.message}")
            raise PinError(f"the current PIN is not right: {result.message}")
        self.manager.set_pin(new, repeat, current=current)
        self._record(EVENT_PIN_CHANGED, reason="changed by the admin")

    def reset(self, new: str, repeat: str | None = None, reason: str = "reset from the command line") -> None:
        """A new PIN whatever the old one's state, lockouts cleared (``kiosk admin reset-pin``; the caller has
        checked that this account owns the data folder)."""
        self.manager.reset(new, repeat)
        log.warning("admin PIN reset (%s)", reason)
        self._record(EVENT_PIN_SET, reason=reason)
