"""The link between a fleet kiosk and the registry: one background thread that keeps the mirror and the
copy of the fleet's settings current and drains the audit outbox, and the connection the kiosk's own writes
(enrolment, deletion, shared settings) use.

The thread LISTENs on ``kiosk_registry``: a change made at another kiosk wakes it at once (a missed
notification is caught by comparing generations every ``poll_s``), and it pulls the change into the
mirror. Every ``poll_s`` it also pulls the fleet's settings (a few rows; kiosk.storage.fleet.settings) and
drains the outbox. When the registry goes away the state turns OFFLINE,
the thread retries every ``retry_s`` and, once back, pulls and drains first. Listeners of
``ConnectionStatus`` hear every change of state.

Nothing waits on a silent network for long (#25): the thread's every cycle and every foreground call
(``call``: enrolment, deletion, shared settings, PIN entries, the audit page) run under a Watchdog
(kiosk.storage.fleet.pgconn) that cuts the connection when no statement completed for ``stall_s``, and a
call has a deadline (``call_deadline_s``) over its attempts and the lock it waits for: it fails with the
offline message and the state turns OFFLINE. Verification never calls the link (it reads the mirror).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from kiosk.storage.connection import OFFLINE_REFUSAL, ConnectionState, ConnectionStatus
from kiosk.storage.db import StorageError
from kiosk.storage.fleet import registry
from kiosk.storage.fleet.mirror import Mirror
from kiosk.storage.fleet.outbox import Outbox
from kiosk.storage.fleet.pgconn import (
    CONNECT_TIMEOUT_S,
    STALL_S,
    ConnectionConfig,
    RegistryUnavailableError,
    Watchdog,
    sever,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
CALL_DEADLINE_S = 8.0  # a foreground call (an admin operation) returns within this, answered or refused


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _lost(exc: BaseException) -> bool:
    """A connection problem (the registry went away), as opposed to a refusal (a bug, a privilege)."""
    import psycopg  # noqa: PLC0415

    return isinstance(exc, (RegistryUnavailableError, psycopg.OperationalError, psycopg.InterfaceError))


class FleetLink:
    def __init__(self, config: ConnectionConfig, mirror: Mirror, outbox: Outbox, status: ConnectionStatus,
                 kiosk_id: str, chain_hash: Callable[[str | None, tuple], str], poll_s: float = 0.5,
                 retry_s: float = 1.0, stall_s: float = STALL_S, call_deadline_s: float = CALL_DEADLINE_S):
        self.stall_s, self.call_deadline_s = stall_s, call_deadline_s
        self.config, self.mirror, self.outbox, self.status = config, mirror, outbox, status
        self.kiosk_id, self.chain_hash = kiosk_id, chain_hash  # kiosk.storage.audit.AuditLog.chain_hash
        self.poll_s, self.retry_s = poll_s, retry_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn = None                      # the kiosk's own (foreground) connection
        self._sync_conn = None                 # the thread's
        self._conn_lock = threading.RLock()
        self._drain_lock = threading.Lock()
        self.on_change: list[Callable[[], None]] = []  # told after a pull changed the mirror
        self.settings = None  # kiosk.storage.fleet.settings.FleetSettings (set by kiosk.storage.fleet.stores)
        self.on_settings_change: list[Callable[[], None]] = []  # told after a pull changed the settings' copy

    # -- the foreground connection -------------------------------------------------------------------------
    def _foreground(self, timeout: float = CONNECT_TIMEOUT_S):
        if self._conn is None or self._conn.closed:
            self._conn = self.config.connect(autocommit=True, timeout=min(CONNECT_TIMEOUT_S, max(timeout, 1.0)))
        return self._conn

    def call(self, fn: Callable[[object], T], refuse_offline: bool = True, offline_message: str = OFFLINE_REFUSAL,
             deadline_s: float | None = None) -> T:
        """Run ``fn(connection)`` against the registry; StorageError(``offline_message``) when it is away (at
        once while the state is OFFLINE and ``refuse_offline``), or when no answer came within ``deadline_s``
        (``call_deadline_s``; the state turns OFFLINE then). A connection broken since its last use (the server
        restarted) is replaced once, within the same deadline."""
        if refuse_offline and self.status.state is ConnectionState.OFFLINE:
            raise StorageError(offline_message)
        end = time.monotonic() + (self.call_deadline_s if deadline_s is None else deadline_s)
        if not self._conn_lock.acquire(timeout=max(end - time.monotonic(), 0.0)):
            raise StorageError(f"{offline_message} (another call to the registry is still waiting for it)")
        try:
            for attempt in (1, 2):
                fresh = self._conn is None or self._conn.closed
                left = end - time.monotonic()
                dog = None
                try:
                    if left <= 0:
                        raise RegistryUnavailableError(f"no answer from the registry {self.config.safe_url} in time")
                    conn = self._foreground(left)
                    with Watchdog(conn, self.stall_s, max(end - time.monotonic(), 0.1)) as dog:
                        return fn(conn)
                except Exception as exc:
                    if not _lost(exc):
                        raise
                    self._close_foreground()
                    if fresh or attempt == 2 or (dog is not None and dog.fired) or time.monotonic() >= end:
                        why = ("no answer within the deadline (the network is silent)" if dog is not None and dog.fired
                               else _first_line(exc))
                        self.status.update(ConnectionState.OFFLINE, why)
                        raise StorageError(offline_message) from None
        finally:
            self._conn_lock.release()
        raise AssertionError("unreachable")  # pragma: no cover

    def pull_now(self) -> bool:
        changed = self.call(self.mirror.pull)
        self.status.update(synced=True)
        if changed:
            self._changed()
        return changed

    @staticmethod
    def _idle(conn) -> bool:
        import psycopg  # noqa: PLC0415

        return conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE and not conn.pgconn.is_busy()

    def _close_foreground(self) -> None:
        with self._conn_lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:  # noqa: BLE001 -- a broken connection may fail to close
                    pass
                self._conn = None

    def _changed(self, listeners: list[Callable[[], None]] | None = None) -> None:
        for callback in list(self.on_change if listeners is None else listeners):
            try:
                callback()
            except Exception:  # noqa: BLE001 -- a listener's bug must not stop synchronisation
                log.exception("a registry-change listener failed")

    def pull_settings(self, conn) -> None:
        if self.settings is not None and self.settings.pull(conn):
            self._changed(self.on_settings_change)

    # -- the outbox -------------------------------------------------------------------------------------------
    def drain(self, conn, batch: int = 500) -> int:
        """Write the outbox to the registry, oldest first; returns how many entries left it."""
        moved = 0
        with self._drain_lock:
            while True:
                entries = self.outbox.oldest(batch)
                if not entries:
                    break
                registry.append_audit(conn, self.kiosk_id, entries, self.chain_hash)
                self.outbox.remove_upto(entries[-1].seq)  # after the registry committed them
                moved += len(entries)
        if moved:
            self.status.update(pending=self.outbox.pending())
        return moved

    # -- the background thread ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kiosk-fleet-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Within seconds whatever the network does: connections in use are cut, not waited for."""
        self._stop.set()
        for conn in (self._sync_conn, self._conn):
            if conn is not None and not conn.closed and not self._idle(conn):
                sever(conn)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._close_foreground()

    def _run(self) -> None:
        while not self._stop.is_set():
            conn = None
            try:
                conn = self._sync_conn = self.config.connect(autocommit=True)
                with Watchdog(conn, self.stall_s):
                    conn.execute(f"LISTEN {registry.CHANNEL}")
                    self._cycle(conn, force=True)
                self.status.update(ConnectionState.ONLINE, f"connected to {self.config.safe_url}")
                while not self._stop.is_set():
                    woken = any(True for _ in conn.notifies(timeout=self.poll_s, stop_after=1))
                    with Watchdog(conn, self.stall_s) as dog:
                        try:
                            self._cycle(conn, force=woken)
                        except Exception as exc:
                            if dog.fired:
                                raise RegistryUnavailableError(f"no answer from the registry {self.config.safe_url} "
                                                               f"for {self.stall_s:.0f} s (the network is silent)") from exc
                            raise
            except Exception as exc:  # noqa: BLE001
                if not _lost(exc):
                    log.exception("fleet synchronisation failed")
                text = _first_line(exc)
                if self.status.state is not ConnectionState.OFFLINE:
                    log.warning("registry %s offline: %s", self.config.safe_url, text)
                self.status.update(ConnectionState.OFFLINE, text, pending=self.outbox.pending())
            finally:
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
            self._stop.wait(self.retry_s)

    def _cycle(self, conn, force: bool) -> None:
        if force or registry.generation(conn) != self.mirror.generation:
            if self.mirror.pull(conn):
                self._changed()
        self.pull_settings(conn)
        self.status.update(synced=True)
        self.drain(conn)
