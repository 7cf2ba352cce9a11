"""Admin > Door's use cases: read the door's settings, change them, test the door, its connection. Qt-free.

``DoorAdmin`` (``kiosk.door_admin``) works on the kiosk's kiosk.app.door.DoorControl:

* ``config()``: the settings of ``door.json`` as the page shows them; a secret is never returned, only
  whether it is set.
* ``save(...)``: checks every field (a list of clear problems, and nothing written, when one is wrong), writes
  the secrets (the MQTT password, the webhook's signing key) to owner-only files in the config folder (0600,
  read back as the kiosk's other secrets, kiosk.storage.secretfile) and ``door.json`` naming them, opens the
  new door in place of the old one and audits the change (what changed, never a secret).
* ``test()``: one unlock now, as an ACCEPT sends it, audited with its outcome.
* ``state()``: connected, not connected with the reason, or not configured.

Saving and testing need an open admin session (the PIN checked, the admin view not locked again): ``session``
says whether there is one. No secret is ever logged.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kiosk.app.admin import AuditNotRecorded
from kiosk.app.door import BACKENDS, DoorControl, DoorSettings, DoorState
from kiosk.errors import KioskError
from kiosk.io.files import atomic_write_text, private_dir
from kiosk.storage.audit import EVENT_DOOR_CONFIG, EVENT_DOOR_TEST
from kiosk.storage.secretfile import read_secret_file

log = logging.getLogger(__name__)

PASSWORD_NAME = "door_mqtt_password"  # in the config folder, 0600
WEBHOOK_KEY_NAME = "door_webhook.key"  # in the config folder, 0600
UNLOCK_RANGE = (0.5, 60.0)  # seconds the door stays unlocked (kiosk.app.door.Door's own limits)
BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
MIN_KEY_BYTES = 16  # kiosk.io.door.WebhookDoor's minimum
MAX_HEX_BYTES = 32
SET, NOT_SET = "set", "not set"
BACKEND_LABELS = {"none": "No door", "mqtt": "MQTT broker", "webhook": "Signed webhook",
                  "serial": "USB relay (serial)"}
LABELS = {"backend": "Back end", "unlock_s": "Unlock time", "host": "Broker host", "port": "Broker port",
          "tls": "TLS", "username": "User name", "password": "Password", "topic": "Topic",
          "discovery": "Home Assistant discovery", "url": "URL", "webhook_key": "Signing key",
          "device": "Serial device", "on_hex": "On bytes", "off_hex": "Off bytes", "baud": "Baud rate"}
FIELDS = {"none": (), "mqtt": ("host", "port", "tls", "username", "topic", "discovery"), "webhook": ("url",),
          "serial": ("device", "on_hex", "off_hex", "baud")}
DEFAULTS = {"host": "", "port": 1883, "tls": False, "username": "", "topic": "siamese-kiosk/door",
            "discovery": False, "url": "", "device": "/dev/ttyUSB0", "on_hex": "A00101A2", "off_hex": "A00100A1",
            "baud": 9600}
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                       r"[A-Za-z0-9])?)*\.?$")


class AdminLocked(KioskError):
    """Administration is locked: the door cannot be changed or tested."""


class DoorNotOpened(KioskError):
    """The new settings were saved (and audited) but their door could not be opened (the message says why)."""


class DoorConfigError(KioskError):
    """One or more fields are wrong; ``problems`` is [(field, message)], the message names the field."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = list(problems)
        super().__init__("; ".join(message for _, message in self.problems))


@dataclass(frozen=True)
class DoorView:
    """The door's settings for the page: the chosen back end's fields, never a secret."""

    backend: str = "none"
    unlock_s: float = 3.0
    fields: dict = field(default_factory=dict)   # FIELDS[backend] -> value
    secrets: dict = field(default_factory=dict)  # "password" / "webhook_key" -> SET or NOT_SET
    problem: str = ""                            # door.json cannot be read (the defaults are shown)


@dataclass(frozen=True)
class DoorTest:
    delivered: bool
    reason: str  # the audit entry's words: "delivered", "not delivered within 2 s (...)"


def _problem(name: str, text: str) -> tuple[str, str]:
    return name, f"{LABELS[name]}: {text}"


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def _flag(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def parse_hex(value) -> bytes:
    """'A0 01 01 A2', 'a00101a2' or 'A0:01:01:A2' -> bytes (ValueError when it is not whole hex bytes)."""
    text = re.sub(r"[\s:,]", "", _text(value))
    if text.lower().startswith("0x"):
        text = text[2:]
    if not text or len(text) % 2 or not re.fullmatch(r"[0-9A-Fa-f]+", text):
        raise ValueError("not hex")
    return bytes.fromhex(text)


def _secret_problem(name: str, value: str, minimum: int = 1) -> tuple[str, str] | None:
    if value != value.strip() or any(c in value for c in "\r\n\0"):
        return _problem(name, "must not begin or end with a space, nor hold a line break")
    if len(value.encode()) < minimum:
        return _problem(name, f"needs at least {minimum} characters" if minimum > 1 else "is empty")
    if len(value) > 1024:
        return _problem(name, "is longer than 1024 characters")
    return None


def check_fields(backend: str, unlock_s, fields: dict) -> tuple[dict, float, list[tuple[str, str]]]:
    """(door.json's options for ``backend``, the unlock time, problems) from the page's fields."""
    problems: list[tuple[str, str]] = []
    if backend not in BACKENDS:
        return {}, 3.0, [_problem("backend", f"unknown back end {backend!r} (one of {', '.join(BACKENDS)})")]
    try:
        unlock = float(unlock_s)
        if not UNLOCK_RANGE[0] <= unlock <= UNLOCK_RANGE[1]:
            raise ValueError
    except (TypeError, ValueError):
        unlock = 3.0
        problems.append(_problem("unlock_s", f"must be {UNLOCK_RANGE[0]:g} to {UNLOCK_RANGE[1]:g} seconds"))
    get = lambda name: fields.get(name, DEFAULTS[name])  # noqa: E731
    options: dict = {}
    if backend == "mqtt":
        host = _text(get("host"))
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not _HOSTNAME.match(host):
                problems.append(_problem("host", "give the broker's host name or IP address (e.g. broker.lan "
                                                 "or 192.168.1.20)" if not host else
                                         f"{host!r} is not a host name or an IP address"))
        port = _text(get("port"))
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            problems.append(_problem("port", "must be a whole number from 1 to 65535 (1883; 8883 with TLS)"))
        username = _text(get("username"))
        if len(username) > 256 or any(ord(c) < 32 for c in username):
            problems.append(_problem("username", "at most 256 characters, no control characters"))
        topic = _text(get("topic")).rstrip("/")
        if not topic:
            problems.append(_problem("topic", "is empty (e.g. siamese-kiosk/door)"))
        elif "+" in topic or "#" in topic:
            problems.append(_problem("topic", "must not hold the wildcards + or #"))
        elif topic.startswith("$") or len(topic) > 200 or any(ord(c) < 32 for c in topic) or " " in topic:
            problems.append(_problem("topic", "at most 200 characters, no spaces, not starting with $"))
        options = {"host": host, "port": int(port) if port.isdigit() else 0, "tls": _flag(get("tls")),
                   "username": username, "topic": topic, "discovery": _flag(get("discovery"))}
    elif backend == "webhook":
        url = _text(get("url"))
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 -- raises ValueError for a port out of range
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or " " in url:
            problems.append(_problem("url", "must be an http:// or https:// address with a host "
                                            "(e.g. https://door.lan/unlock)"))
        elif parts.username or parts.password:
            problems.append(_problem("url", "must not hold a user name or password (the signing key "
                                            "authenticates the kiosk)"))
        options = {"url": url}
    elif backend == "serial":
        device = _text(get("device"))
        if not device.startswith("/") or "\0" in device or len(device) > 200 or " " in device:
            problems.append(_problem("device", "give the relay board's device path (e.g. /dev/ttyUSB0 or "
                                               "/dev/serial/by-id/...)"))
        hexes = {}
        for name in ("on_hex", "off_hex"):
            try:
                data = parse_hex(get(name))
                if len(data) > MAX_HEX_BYTES:
                    raise ValueError
                hexes[name] = data.hex().upper()
            except ValueError:
                hexes[name] = ""
                problems.append(_problem(name, f"1 to {MAX_HEX_BYTES} bytes in hex, e.g. A0 01 01 A2"))
        baud = _text(get("baud"))
        if not baud.isdigit() or int(baud) not in BAUDS:
            problems.append(_problem("baud", f"one of {', '.join(map(str, BAUDS))}"))
        options = {"port": device, **hexes, "baud": int(baud) if baud.isdigit() else 0}
    return options, unlock, problems


def describe(settings: DoorSettings) -> str:
    """How a door's settings read in the audit log (never a secret): "MQTT broker.lan:8883 TLS, topic ...".
    A webhook shows its host only (its path or query may hold a token)."""
    o = settings.options
    if settings.backend == "mqtt":
        where = f"MQTT {o.get('host', '')}:{o.get('port', 1883)}{' TLS' if o.get('tls') else ''}, " \
                f"topic {o.get('topic', '')}"
    elif settings.backend == "webhook":
        where = f"webhook to {urllib.parse.urlsplit(str(o.get('url', ''))).hostname or '?'}"
    elif settings.backend == "serial":
        where = f"serial relay {o.get('port', '')}"
    else:
        return "no door"
    return f"{where}, unlock {settings.unlock_s:g} s"


def _view_fields(settings: DoorSettings) -> dict:
    o = dict(settings.options)
    if settings.backend == "serial":
        o["device"] = o.pop("port", DEFAULTS["device"])
    return {name: o.get(name, DEFAULTS[name]) for name in FIELDS.get(settings.backend, ())}


class DoorAdmin:
    def __init__(self, control: DoorControl, audit=None, session: Callable[[], bool] = lambda: True):
        self.control = control
        self.audit = audit          # kiosk.storage.AuditLog (None: nothing audited, e.g. a test's)
        self.session = session      # True while an admin session is open (the PIN checked, not locked again)

    @property
    def config_dir(self) -> Path:
        return self.control.config_dir

    def _record(self, kind: str, detail: str, reason: str) -> None:
        if self.audit is None:
            return
        try:
            self.audit.record_event(kind, detail, reason)
        except Exception as exc:
            log.error("audit event %s not recorded: %s", kind, exc)
            raise AuditNotRecorded(f"the audit log could not record it: {exc}") from exc

    def _require_session(self, what: str) -> None:
        if not self.session():
            raise AdminLocked(f"administration is locked: unlock it with the PIN to {what}")

    def _current(self) -> tuple[DoorSettings, str]:
        try:
            return DoorSettings.load(self.control.settings_path), ""
        except KioskError as exc:
            return DoorSettings(), str(exc)

    # -- reading ---------------------------------------------------------------------------------------------
    def config(self) -> DoorView:
        settings, problem = self._current()
        o = settings.options
        secrets = {"password": SET if settings.backend == "mqtt" and o.get("password_file") else NOT_SET,
                   "webhook_key": SET if settings.backend == "webhook" and o.get("secret_file") else NOT_SET}
        return DoorView(settings.backend, settings.unlock_s, _view_fields(settings), secrets, problem)

    def state(self) -> DoorState:
        return self.control.state()

    # -- changing --------------------------------------------------------------------------------------------
    def save(self, backend: str, unlock_s, fields: dict, password: str | None = None,
             webhook_key: str | None = None) -> DoorView:
        """Check, write (secrets in owner-only files), open the new door, audit. ``password`` and
        ``webhook_key``: None keeps the one set, "" removes it (the webhook needs one), else the new one.
        DoorConfigError (nothing written) when a field is wrong; AdminLocked outside an admin session."""
        self._require_session("change the door")
        old, _ = self._current()
        options, unlock, problems = check_fields(backend, unlock_s, fields)
        keep = old.options if old.backend == backend else {}
        new_secrets: dict[str, str] = {}  # file name -> secret to write
        if backend == "mqtt":
            self._secret_option("password", password, PASSWORD_NAME, "password_file", "the door's MQTT password", 1,
                                keep, options, new_secrets, problems)
        elif backend == "webhook":
            if not self._secret_option("webhook_key", webhook_key, WEBHOOK_KEY_NAME, "secret_file",
                                       "the door's webhook key", MIN_KEY_BYTES, keep, options, new_secrets, problems):
                problems.append(_problem("webhook_key", f"set one (at least {MIN_KEY_BYTES} characters; the "
                                                        f"receiver checks the signature with the same key)"))
        if problems:
            raise DoorConfigError(problems)
        settings = DoorSettings(backend, unlock, old.validity_s, options)
        if settings == old and not new_secrets:
            return self.config()  # nothing changed: nothing written, nothing audited

        private_dir(self.config_dir)
        for name, secret in new_secrets.items():
            atomic_write_text(self.config_dir / name, secret)  # 0600 from the start (mkstemp)
        settings.save(self.control.settings_path)
        for name, key in ((PASSWORD_NAME, "password_file"), (WEBHOOK_KEY_NAME, "secret_file")):
            own = self.config_dir / name  # a secret no longer named is not left behind
            if own.exists() and options.get(key) != str(own):
                own.unlink(missing_ok=True)
        log.info("door settings saved: %s -> %s", describe(old), describe(settings))

        opened: Exception | None = None
        try:
            self.control.reopen(settings)
        except Exception as exc:
            log.error("the door could not be opened with its new settings: %s", exc)
            opened = exc
        changed = [LABELS[name] for name in ("backend", "unlock_s") if
                   (name == "backend" and backend != old.backend) or (name == "unlock_s" and unlock != old.unlock_s)]
        if backend == old.backend:
            changed += [LABELS.get("device" if (backend, k) == ("serial", "port") else k, k)
                        for k in sorted(set(options) | set(old.options))
                        if k not in ("password_file", "secret_file") and options.get(k) != old.options.get(k)]
        changed += [f"{LABELS['password' if name == PASSWORD_NAME else 'webhook_key'].lower()} changed"
                    for name in new_secrets]
        if backend == "mqtt" and password == "" and old.options.get("password_file"):
            changed.append("password removed")
        self._record(EVENT_DOOR_CONFIG, f"{describe(old)} -> {describe(settings)}",
                     "changed by the admin" + (f": {', '.join(changed)}" if changed else "")
                     + (f"; the door could not be opened: {opened}" if opened else ""))
        if opened is not None:
            raise DoorNotOpened(f"the door could not be opened: {opened}")
        return self.config()

    def _secret_option(self, field: str, value: str | None, file_name: str, option: str, what: str, minimum: int,
                       keep: dict, options: dict, new_secrets: dict, problems: list) -> bool:
        """One back end's secret: a new ``value`` is checked and to be written to ``file_name``; None keeps the
        file set before (checked readable). ``options[option]`` names the file. False: no secret at all."""
        if value:
            if (bad := _secret_problem(field, value, minimum)) is not None:
                problems.append(bad)
            new_secrets[file_name] = value
            options[option] = str(self.config_dir / file_name)
            return True
        if value is None and keep.get(option):
            options[option] = keep[option]
            problems += self._readable(field, keep[option], what)
            return True
        return False

    @staticmethod
    def _readable(name: str, path: str, what: str) -> list[tuple[str, str]]:
        try:
            read_secret_file(path, what)
        except KioskError as exc:
            return [_problem(name, f"the one set cannot be used ({exc}); type it again")]
        return []

    # -- testing ---------------------------------------------------------------------------------------------
    def test(self) -> DoorTest:
        """One unlock now, as an ACCEPT sends it; audited with its outcome."""
        self._require_session("test the door")
        door = self.control.door
        if door is None:
            state = self.control.state()
            raise KioskError("no door is configured: choose a back end and save first" if not state.configured
                             else state.text)
        delivered = door.test()
        if delivered:
            reason = "delivered"
        else:
            connected, detail = door.output.status()
            reason = f"not delivered within {door.validity_s:g} s" + (f" ({detail})" if connected is False else "")
        log.info("door test: %s", reason)
        self._record(EVENT_DOOR_TEST, door.output.name, reason)
        return DoorTest(delivered, reason)
