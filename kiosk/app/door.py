"""The door: an audited ACCEPT unlocks it, and every decision is told to the door's system. Qt-free.

``Door.decided(decision)`` is called by kiosk.app.attempt.VerificationService right after the decision's
audit entry is written, and never by the GUI. Two kinds of message (kiosk.io.door):

* **The unlock**, for an ACCEPT only (a REJECT or a suspected attack never sends one): tried until it is
  delivered or its short validity (``validity_s``, 2 s) has passed, on its own thread, so verification never
  waits for it. A late unlock is worse than none: one not delivered in time is written to the audit log as
  failed and never sent again.
* **Events** (accept, reject, attack suspected, out of service, back in service): written to a durable outbox
  (SQLite, in the data folder) and delivered once each, in order, by a sender thread, also after the broker
  or the endpoint was away for a while and after a restart.

The door's settings are ``door.json`` in the config folder (kiosk.app.door.DoorSettings); its secrets (the MQTT
password, the webhook key) are owner-only files named there, read as the kiosk's other secrets. The kiosk holds
its door through a :class:`DoorControl`, which Admin > Door (kiosk.app.door_admin) re-opens with new settings
while the kiosk runs.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from kiosk.errors import KioskError
from kiosk.io.door import EVENT, UNLOCK, DoorMessage, DoorOutput, MqttDoor, SerialRelayDoor, WebhookDoor
from kiosk.io.files import atomic_write_text, private_dir
from kiosk.rules.decision import Decision
from kiosk.storage.audit import EVENT_DOOR_FAILED
from kiosk.storage.secretfile import read_secret_file

log = logging.getLogger(__name__)

OUTBOX_NAME = "door_outbox.sqlite3"
SETTINGS_NAME = "door.json"  # in the config folder
BACKENDS = ("none", "mqtt", "webhook", "serial")
RETRY_S = (0.2, 5.0)  # the event sender's back-off while the door's system is away


class DoorOutbox:
    """Events not yet delivered, oldest first; durable (SQLite, one row per event, deleted once delivered)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL)")

    def put(self, body: dict) -> None:
        with self._lock:
            self._db.execute("INSERT INTO events (body) VALUES (?)", (json.dumps(body, sort_keys=True),))

    def oldest(self) -> tuple[int, dict] | None:
        with self._lock:
            row = self._db.execute("SELECT id, body FROM events ORDER BY id LIMIT 1").fetchone()
        return (int(row[0]), json.loads(row[1])) if row else None

    def done(self, event_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM events WHERE id = ?", (event_id,))

    def pending(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _kind(decision: Decision) -> str:
    return "accept" if decision.accepted else ("attack" if decision.attack_suspected else "reject")


class Door:
    def __init__(self, output: DoorOutput, outbox: DoorOutbox, audit=None, kiosk_id: str = "kiosk",
                 unlock_s: float = 3.0, validity_s: float = 2.0):
        if not (0.5 <= unlock_s <= 60.0 and 0.1 <= validity_s <= 10.0):
            raise KioskError("the door's unlock time must be 0.5-60 s and an unlock's validity 0.1-10 s")
        self.output, self.outbox, self.audit = output, outbox, audit
        self.kiosk_id, self.unlock_s, self.validity_s = kiosk_id, unlock_s, validity_s
        self.unlocks_sent = self.unlocks_failed = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sender = threading.Thread(target=self._send_events, name="door-events", daemon=True)
        self._sender.start()

    # -- from the attempts ----------------------------------------------------------------------------------
    def decided(self, decision: Decision) -> None:
        """An audited decision: an ACCEPT unlocks (within its validity), every decision becomes an event."""
        body = {"kind": _kind(decision), "kiosk_id": self.kiosk_id, "employee_id": decision.claimed_id,
                "decision_id": uuid.uuid4().hex, "time": _now_iso(), "mode": decision.mode}
        if decision.accepted:
            deadline = time.monotonic() + self.validity_s
            threading.Thread(target=self._unlock, args=(body, deadline), name="door-unlock", daemon=True).start()
        self._event(body)

    def service(self, available: bool, detail: str = "") -> None:
        """The kiosk went out of service (no picture) or came back."""
        self._event({"kind": "back_in_service" if available else "out_of_service", "kiosk_id": self.kiosk_id,
                     "decision_id": uuid.uuid4().hex, "time": _now_iso(), "detail": detail[:200]})

    def test(self) -> bool:
        """Admin > Door > Test door: one unlock now, as an ACCEPT would send it (the caller audits it)."""
        body = {"kind": "test", "kiosk_id": self.kiosk_id, "employee_id": "", "decision_id": uuid.uuid4().hex,
                "time": _now_iso(), "mode": "test"}
        return self._unlock(body, time.monotonic() + self.validity_s, audit_failure=False)

    # -- delivery -------------------------------------------------------------------------------------------
    def _unlock(self, body: dict, deadline: float, audit_failure: bool = True) -> bool:
        command = DoorMessage(UNLOCK, dict(body, unlock_s=self.unlock_s,
                                           valid_until=time.time() + max(0.0, deadline - time.monotonic())))
        delay = 0.05
        while (left := deadline - time.monotonic()) > 0 and not self._stop.is_set():
            if self.output.send(command, left):
                self.unlocks_sent += 1
                return True
            self._stop.wait(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.5)
        self.unlocks_failed += 1
        log.error("door: the unlock for %s was not delivered within %.1f s; it will not be sent later",
                  body.get("employee_id") or body["kind"], self.validity_s)
        if self.audit is not None and audit_failure:  # a test's outcome is audited by its caller
            try:
                self.audit.record_event(EVENT_DOOR_FAILED, body.get("employee_id", ""),
                                        f"unlock not delivered within {self.validity_s:g} s ({self.output.name}); "
                                        f"not sent later")
            except Exception:
                log.exception("door: the failed unlock could not be audited")
        return False

    def _event(self, body: dict) -> None:
        try:
            self.outbox.put(body)
        except sqlite3.Error:
            log.exception("door: an event could not be queued")
            return
        self._wake.set()

    def _send_events(self) -> None:
        delay = RETRY_S[0]
        while not self._stop.is_set():
            item = self.outbox.oldest()
            if item is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            event_id, body = item
            if self.output.send(DoorMessage(EVENT, body), 5.0):
                self.outbox.done(event_id)
                delay = RETRY_S[0]
                continue
            self._stop.wait(delay)  # the door's system is away: the same event again, later, in order
            delay = min(delay * 2, RETRY_S[1])

    def drained(self, timeout: float) -> bool:
        """Wait until every queued event was delivered (tests, shutdown)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.outbox.pending() == 0:
                return True
            time.sleep(0.05)
        return self.outbox.pending() == 0

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._sender.join(timeout=5.0)
        self.output.close()
        self.outbox.close()


# -- settings -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DoorSettings:
    """``door.json`` in the config folder. ``backend``: "none", "mqtt", "webhook" or "serial"."""

    backend: str = "none"
    unlock_s: float = 3.0
    validity_s: float = 2.0
    options: dict = field(default_factory=dict)  # the back end's: host/port/topic/username/password_file/tls,
    #                                              url/secret_file, or port/on_hex/off_hex/baud

    @classmethod
    def load(cls, path: str | Path) -> "DoorSettings":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise KioskError(f"{path}: the door settings cannot be read ({exc})") from None
        if not isinstance(data, dict) or data.get("backend", "none") not in BACKENDS:
            raise KioskError(f"{path}: backend must be one of none, mqtt, webhook, serial")
        try:
            return cls(str(data.get("backend", "none")), float(data.get("unlock_s", 3.0)),
                       float(data.get("validity_s", 2.0)), dict(data.get("options") or {}))
        except (TypeError, ValueError) as exc:
            raise KioskError(f"{path}: the door settings cannot be read ({exc})") from None

    def save(self, path: str | Path) -> None:
        """Write ``door.json`` whole or not at all, owner-only (it names the secret files, never a secret)."""
        path = Path(path)
        private_dir(path.parent)
        atomic_write_text(path, json.dumps({"backend": self.backend, "unlock_s": self.unlock_s,
                                            "validity_s": self.validity_s, "options": self.options},
                                           indent=2, sort_keys=True) + "\n")

    def output(self, kiosk_id: str) -> DoorOutput | None:
        o = self.options
        if self.backend == "mqtt":
            password = ""
            if o.get("password_file"):
                password = (read_secret_file(o["password_file"], "the door's MQTT password") or "").strip()
            return MqttDoor(str(o.get("host", "127.0.0.1")), int(o.get("port", 1883)),
                            str(o.get("topic", "siamese-kiosk/door")), str(o.get("username", "")), password,
                            bool(o.get("tls", False)), discovery=bool(o.get("discovery", False)), kiosk_id=kiosk_id)
        if self.backend == "webhook":
            secret = (read_secret_file(o["secret_file"], "the door's webhook key") or "").strip().encode()
            return WebhookDoor(str(o["url"]), secret)
        if self.backend == "serial":
            return SerialRelayDoor(str(o["port"]), bytes.fromhex(str(o.get("on_hex", "A00101A2"))),
                                   bytes.fromhex(str(o.get("off_hex", "A00100A1"))), int(o.get("baud", 9600)))
        return None


def open_door(config_dir: Path, data_dir: Path, audit, kiosk_id: str,
              settings: DoorSettings | None = None) -> Door | None:
    """The door of these settings (default: the config folder's door.json; None: no door configured)."""
    if settings is None:
        settings = DoorSettings.load(Path(config_dir) / SETTINGS_NAME)
    output = settings.output(kiosk_id)
    if output is None:
        return None
    try:
        return Door(output, DoorOutbox(Path(data_dir) / OUTBOX_NAME), audit, kiosk_id, settings.unlock_s,
                    settings.validity_s)
    except BaseException:
        output.close()
        raise


@dataclass(frozen=True)
class DoorState:
    """What Admin > Door shows of the door's connection."""

    configured: bool
    connected: bool | None  # None: not known yet (a webhook before its first message)
    detail: str = ""

    @property
    def text(self) -> str:
        if not self.configured:
            return "Not configured: an ACCEPT opens nothing" + (f" ({self.detail})" if self.detail else "")
        if self.connected is None:
            return self.detail
        return f"{'Connected' if self.connected else 'Not connected'}: {self.detail}"


class DoorControl:
    """The kiosk's door, whichever is configured now: the attempts tell it their decisions (``decided``), and
    Admin > Door replaces it with new settings (``reopen``) while the kiosk runs. Without a door configured
    it does nothing. A decision told while a door is being replaced goes to neither (the old one is closed
    first, so that two senders never deliver the same queued event)."""

    def __init__(self, config_dir: str | Path, data_dir: str | Path, audit=None, kiosk_id: str | None = None,
                 door: Door | None = None, settings: DoorSettings | None = None):
        self.config_dir, self.data_dir = Path(config_dir), Path(data_dir)
        self.audit = audit
        self.kiosk_id = kiosk_id or os.environ.get("KIOSK_ID", "kiosk")
        self.settings = settings if settings is not None else DoorSettings()
        self._door = door
        self._problem = ""  # why the configured door could not be opened
        self._lock = threading.Lock()  # decided() against the swap in reopen()

    @classmethod
    def open(cls, config_dir: str | Path, data_dir: str | Path, audit=None, kiosk_id: str | None = None):
        """The door of the config folder's door.json (KioskError when it cannot be read or opened)."""
        kiosk_id = kiosk_id or os.environ.get("KIOSK_ID", "kiosk")
        settings = DoorSettings.load(Path(config_dir) / SETTINGS_NAME)
        return cls(config_dir, data_dir, audit, kiosk_id, open_door(config_dir, data_dir, audit, kiosk_id, settings),
                   settings)

    @property
    def settings_path(self) -> Path:
        return self.config_dir / SETTINGS_NAME

    @property
    def door(self) -> Door | None:
        return self._door

    @property
    def output(self) -> DoorOutput | None:
        door = self._door
        return door.output if door is not None else None

    # -- what the attempts call (as on a Door) ---------------------------------------------------------------
    def decided(self, decision: Decision) -> None:
        with self._lock:
            if self._door is not None:
                self._door.decided(decision)

    def service(self, available: bool, detail: str = "") -> None:
        with self._lock:
            if self._door is not None:
                self._door.service(available, detail)

    def test(self) -> bool:
        door = self._door
        if door is None:
            raise KioskError("no door is configured (Admin > Door)")
        return door.test()

    # -- what Admin > Door calls ----------------------------------------------------------------------------
    def reopen(self, settings: DoorSettings) -> None:
        """Use the door of ``settings`` from now on (the old one is closed first; its queued events go to the
        new one). KioskError (no door then) when the new one cannot be opened."""
        with self._lock:
            old, self._door = self._door, None
        if old is not None:
            old.close()
        self.settings = settings
        try:
            door = open_door(self.config_dir, self.data_dir, self.audit, self.kiosk_id, settings)
        except Exception as exc:
            self._problem = f"the door could not be opened: {exc}"
            raise
        self._problem = ""
        with self._lock:
            self._door = door

    def state(self) -> DoorState:
        """The connection as it stands (lock-free: cheap enough for the GUI thread)."""
        door = self._door
        if door is None:
            if self.settings.backend == "none":
                return DoorState(False, None)
            return DoorState(True, False, self._problem or "the door is being opened")
        try:
            connected, detail = door.output.status()
        except Exception as exc:  # a back end's own failure must not break the admin page
            connected, detail = False, f"the state cannot be read ({exc})"
        return DoorState(True, connected, detail)

    def close(self) -> None:
        with self._lock:
            door, self._door = self._door, None
        if door is not None:
            door.close()
