"""Retries are an attack too: THE rule that locks an ID for face verification after repeated suspected
presentation attacks. Pure, clock-free (the caller brings the times, in seconds).

Liveness refuses most printed-photo attempts, not all (about 4 % of attempts on people it never saw, issue
#22): an attacker who simply tries again would get in after about 25 tries. So suspected attacks are counted
per employee ID (a typed ID, or the person a walk-up's photo was recognised as), and ``max_attacks`` within
``window_s`` lock that ID for face verification for ``lock_s`` or until an admin unlocks it. A locked ID is
refused without looking at the face, so nothing tried meanwhile can get in.
"""

from __future__ import annotations

from dataclasses import dataclass

FACE_LOCK = "lock"      # the kinds of history events (oldest first) the rule reads
FACE_UNLOCK = "unlock"
ATTACK = "attack"


@dataclass(frozen=True)
class RetryRule:
    max_attacks: int = 3       # suspected attacks on one ID ...
    window_s: float = 600.0    # ... within 10 minutes lock it ...
    lock_s: float = 1800.0     # ... for 30 minutes (or until an admin unlocks it)

    def __post_init__(self):
        if not (1 <= self.max_attacks <= 100 and 1.0 <= self.window_s <= 86400.0 and 1.0 <= self.lock_s <= 604800.0):
            raise ValueError(f"invalid retry rule {self}")

    def locked_until(self, history: list[tuple[float, str]], now: float) -> float | None:
        """When the ID's lock ends (None: not locked), from its history of (time, kind) events."""
        lock = None
        for at, kind in history:
            if kind == FACE_LOCK:
                lock = at
            elif kind == FACE_UNLOCK:
                lock = None
        if lock is None or now >= lock + self.lock_s:
            return None
        return lock + self.lock_s

    def locks_now(self, history: list[tuple[float, str]], now: float) -> bool:
        """Whether the history (with the attack just suspected in it) calls for a new lock: ``max_attacks``
        attacks within the window, none of them before the last lock or unlock (those were dealt with)."""
        if self.locked_until(history, now) is not None:
            return False
        since = now - self.window_s
        for at, kind in history:
            if kind in (FACE_LOCK, FACE_UNLOCK):
                since = max(since, at)
        return sum(1 for at, kind in history if kind == ATTACK and at >= since) >= self.max_attacks
