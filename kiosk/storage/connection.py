"""The store's connection state, Qt-free: what the status bar and the admin tab show.

EMBEDDED: a single kiosk on its own SQLite store (nothing to connect to). ONLINE: the fleet registry
(PostgreSQL) answers; changes made elsewhere arrive, audit entries are written there. OFFLINE: it does
not; the kiosk verifies against its last synchronised copy, audit entries wait in its outbox, and
enrolment and deletion are refused. Listeners are called (from the sync thread) on every change.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable


class ConnectionState(enum.Enum):
    EMBEDDED = "embedded"
    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True)
class ConnectionInfo:
    state: ConnectionState
    message: str
    last_sync: float | None = None  # time.time() of the last complete synchronisation with the registry
    pending: int = 0                # audit entries waiting in the outbox

    @property
    def last_sync_text(self) -> str:
        if self.last_sync is None:
            return "never"
        return datetime.fromtimestamp(self.last_sync, timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")

    @property
    def summary(self) -> str:
        """One line for the status bar."""
        if self.state is ConnectionState.EMBEDDED:
            return "Local database"
        if self.state is ConnectionState.ONLINE:
            return f"Registry online (synchronised {self.last_sync_text})"
        waiting = f"; {self.pending} audit entr{'y' if self.pending == 1 else 'ies'} waiting" if self.pending else ""
        return f"Registry OFFLINE: verifying with the copy of {self.last_sync_text}{waiting}"


OFFLINE_REFUSAL = ("the fleet registry cannot be reached, so employees cannot be enrolled or deleted now "
                   "(verification goes on with this kiosk's last copy); try again when the status bar says online")


class ConnectionStatus:
    """Thread-safe holder of the current ConnectionInfo; ``subscribe(callback)`` hears every change."""

    def __init__(self, state: ConnectionState = ConnectionState.EMBEDDED, message: str = "",
                 last_sync: float | None = None):
        self._lock = threading.Lock()
        self._info = ConnectionInfo(state, message or "this kiosk's own database", last_sync)
        self._listeners: list[Callable[[ConnectionInfo], None]] = []

    @property
    def info(self) -> ConnectionInfo:
        with self._lock:
            return self._info

    @property
    def state(self) -> ConnectionState:
        return self.info.state

    @property
    def online(self) -> bool:
        return self.info.state is ConnectionState.ONLINE

    def subscribe(self, listener: Callable[[ConnectionInfo], None]) -> Callable[[], None]:
        """Call ``listener(info)`` on every change (from whichever thread made it); returns an unsubscribe."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)
        return unsubscribe

    def update(self, state: ConnectionState | None = None, message: str | None = None, synced: bool = False,
               pending: int | None = None) -> None:
        with self._lock:
            old = self._info
            info = ConnectionInfo(state or old.state, old.message if message is None else message,
                                  time.time() if synced else old.last_sync, old.pending if pending is None else pending)
            self._info = info
            listeners = list(self._listeners) if info != old else []
        for listener in listeners:
            listener(info)
