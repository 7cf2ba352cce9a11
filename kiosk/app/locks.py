"""Face-verification locks after repeated suspected photo attacks (kiosk.rules.retries), kept in the audit log.

The audit log is the lock's one record: the suspected attacks are its decisions (reason "presentation attack
suspected", the ID in ``claimed_id``), a lock and an admin's unlock are its events (the ID in ``detail``). So a
lock survives a restart, and at a fleet's kiosks, whose audit log is the registry's, it holds at every
entrance. Times are wall-clock seconds (``wall``, injected), as the audit log's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone

from kiosk.rules.decision import REASON_ATTACK, Decision
from kiosk.rules.retries import ATTACK, FACE_LOCK, FACE_UNLOCK, RetryRule
from kiosk.storage.audit import EVENT_FACE_LOCK, EVENT_FACE_UNLOCK

log = logging.getLogger(__name__)

HISTORY = 500  # the newest audit entries mentioning an ID that the rule reads (far more than a lock needs)


def _seconds(iso: str) -> float:
    stamp = datetime.fromisoformat(iso)
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()


class FaceLocks:
    def __init__(self, audit, rule: RetryRule = RetryRule(), wall: Callable[[], float] = time.time):
        self.audit = audit
        self.rule = rule
        self.wall = wall

    def history(self, employee_id: str) -> list[tuple[float, str]]:
        """The ID's suspected attacks, locks and unlocks, oldest first."""
        events = []
        for e in self.audit.entries(employee_id, limit=HISTORY):
            if not e.is_event and e.claimed_id == employee_id and e.reason == REASON_ATTACK:
                events.append((_seconds(e.time), ATTACK))
            elif e.kind in (EVENT_FACE_LOCK, EVENT_FACE_UNLOCK) and e.detail == employee_id:
                events.append((_seconds(e.time), FACE_LOCK if e.kind == EVENT_FACE_LOCK else FACE_UNLOCK))
        return sorted(events)

    def locked_until(self, employee_id: str) -> float | None:
        """When the ID's lock ends (wall-clock seconds), or None when it is not locked."""
        if not employee_id:
            return None
        return self.rule.locked_until(self.history(employee_id), self.wall())

    def after(self, decision: Decision) -> bool:
        """After an audited decision: a suspected attack that completes ``max_attacks`` locks its ID (audited).
        True when it did."""
        employee_id = decision.claimed_id
        if not decision.attack_suspected or not employee_id:
            return False
        if not self.rule.locks_now(self.history(employee_id), self.wall()):
            return False
        minutes = round(self.rule.window_s / 60)
        self.audit.record_event(EVENT_FACE_LOCK, employee_id,
                                f"{self.rule.max_attacks} suspected photo attacks within {minutes} min")
        log.warning("face verification of %s locked: repeated suspected photo attacks", employee_id)
        return True

    def active(self) -> dict[str, float]:
        """{ID: when its lock ends} for every ID locked now (for the admin's alert)."""
        locks, seen = {}, set()
        for e in self.audit.entries("", limit=HISTORY, kind=EVENT_FACE_LOCK):
            if e.detail not in seen:
                seen.add(e.detail)
                until = self.locked_until(e.detail)
                if until is not None:
                    locks[e.detail] = until
        return locks

    def unlock(self, employee_id: str) -> bool:
        """The admin lifts a lock (audited); False when the ID was not locked."""
        if self.locked_until(employee_id) is None:
            return False
        self.audit.record_event(EVENT_FACE_UNLOCK, employee_id, "unlocked by the admin")
        return True
