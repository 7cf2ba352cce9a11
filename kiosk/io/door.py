"""Door outputs: what an ACCEPT does at an entrance. Qt-free; the kiosk never listens on a port.

Three back ends behind one interface (:class:`DoorOutput`), chosen by the door settings (kiosk.app.door):

* :class:`MqttDoor` (paho-mqtt, TLS and credentials supported): ``<topic>/unlock`` carries the unlock
  command, ``<topic>/event`` every other event; optional Home Assistant discovery of a lock entity.
* :class:`WebhookDoor`: a POST of the JSON body, signed with HMAC-SHA256 over ``timestamp.body``
  (headers ``X-Kiosk-Timestamp`` and ``X-Kiosk-Signature``); the receiver checks it with
  :func:`verify_webhook`, which refuses a changed body, a forged signature and an old timestamp (a replay).
* :class:`SerialRelayDoor`: the common USB relay boards, on and off byte sequences configurable.

``send(message, timeout)`` returns True once the message is delivered (to the broker, the endpoint or the
port) within ``timeout`` seconds, else False; it never raises for a transport failure. ``status()`` says
whether the door's system can be reached now, and why not: (True, what) connected, (False, why) not, (None,
what) not known yet (a webhook before its first message). Credentials and secrets are never logged or shown.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

UNLOCK, EVENT = "unlock", "event"  # the two channels
SIGNATURE_HEADER, TIMESTAMP_HEADER = "X-Kiosk-Signature", "X-Kiosk-Timestamp"
MAX_WEBHOOK_AGE_S = 30.0  # the verifier refuses a message older than this (or from further in the future)


@dataclass(frozen=True)
class DoorMessage:
    channel: str        # UNLOCK or EVENT
    body: dict          # {kind, kiosk_id, employee_id, decision_id, time, ...}

    def payload(self) -> bytes:
        return json.dumps(self.body, sort_keys=True, separators=(",", ":")).encode()


class DoorOutput(Protocol):
    name: str

    def send(self, message: DoorMessage, timeout: float) -> bool: ...

    def status(self) -> tuple[bool | None, str]: ...

    def close(self) -> None: ...


def _clock() -> str:
    return time.strftime("%H:%M:%S")


def _why(exc: BaseException | None) -> str:
    """An OSError's words without its errno ("Connection refused"); never a URL or a credential."""
    if exc is None:
        return "unknown error"
    reason = getattr(exc, "reason", None)  # urllib's URLError wraps the socket's error
    if isinstance(reason, BaseException):
        exc = reason
    elif isinstance(reason, str) and reason:
        return reason
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


# -- MQTT ------------------------------------------------------------------------------------------------------
class _Connection:
    """One paho client, connected in the background (reconnects by itself)."""

    def __init__(self, settings: dict, client_id: str, persistent: bool, on_connect=None):
        import paho.mqtt.client as mqtt  # noqa: PLC0415 -- only for kiosks with an MQTT door

        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not persistent, protocol=mqtt.MQTTv311)
        if settings["username"]:
            self.client.username_pw_set(settings["username"], settings["password"])
        if settings["tls"]:
            self.client.tls_set()
        self.client.reconnect_delay_set(0.1, 1.0)
        self.connected = threading.Event()
        where = f"{settings['host']}:{settings['port']}"
        self.problem = f"connecting to the broker {where}"  # why it is not connected (status())
        self._extra = on_connect

        def connected(_client, _userdata, _flags, reason_code, _properties=None):
            if getattr(reason_code, "is_failure", False):
                log.warning("door: the MQTT broker refused the connection (%s)", reason_code)
                self.problem = f"the broker {where} refused the connection ({reason_code})"
                return
            self.connected.set()
            if self._extra is not None:
                self._extra(self.client)

        def connect_failed(_client, _userdata):  # called by paho inside its "except OSError:"
            self.problem = f"cannot reach the broker {where} ({_why(sys.exc_info()[1])})"

        def disconnected(_client, _userdata, *args):
            if self.connected.is_set():
                self.problem = f"the connection to the broker {where} was lost ({args[1] if len(args) > 1 else ''})"
            self.connected.clear()

        self.client.on_connect = connected
        self.client.on_connect_fail = connect_failed
        self.client.on_disconnect = disconnected
        self.client.connect_async(settings["host"], settings["port"], keepalive=5)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, qos: int, deadline: float, retain: bool = False):
        """(the message's info or None when not connected in time, delivered within the deadline)."""
        if not self.connected.wait(max(0.0, deadline - time.monotonic())):
            return None, False
        try:
            info = self.client.publish(topic, payload, qos=qos, retain=retain)
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            return info, info.is_published()
        except (RuntimeError, ValueError, OSError) as exc:  # not queued, or the connection went meanwhile
            log.debug("door: MQTT publish failed: %s", exc)
            return None, False

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class MqttDoor:
    """Events go out with QoS 2 on a persistent session (each once, in order, also across a broker restart);
    unlocks with QoS 1 on a connection of their own, dropped and made again whenever an unlock was not
    acknowledged in time, so that no stale unlock waits in a queue to be sent after its validity."""

    name = "mqtt"

    def __init__(self, host: str, port: int = 1883, topic: str = "siamese-kiosk/door", username: str = "",
                 password: str = "", tls: bool = False, client_id: str = "", discovery: bool = False,
                 kiosk_id: str = "kiosk"):
        self.topic = topic.rstrip("/")
        self._settings = {"host": host, "port": int(port), "username": username, "password": password, "tls": tls}
        self._id = client_id or f"siamese-kiosk-{kiosk_id}"
        self.kiosk_id = kiosk_id
        self._events = _Connection(self._settings, f"{self._id}-events", True,
                                   self._announce if discovery else None)
        self._unlocks = _Connection(self._settings, f"{self._id}-unlock", False)
        self._inflight: tuple[bytes, object] | None = None  # the event being delivered, kept across retries
        log.info("door: MQTT broker %s:%d, topic %s%s", host, port, self.topic, " (TLS)" if tls else "")

    def _announce(self, client) -> None:  # Home Assistant's MQTT discovery: a lock that follows the unlocks
        config = {"name": f"Siamese Kiosk {self.kiosk_id}", "unique_id": f"siamese-kiosk-{self.kiosk_id}-door",
                  "command_topic": f"{self.topic}/{UNLOCK}", "state_topic": f"{self.topic}/state"}
        client.publish(f"homeassistant/lock/siamese_kiosk_{self.kiosk_id}/config", json.dumps(config), qos=1,
                       retain=True)

    @property
    def connected(self) -> bool:
        return self._events.connected.is_set()

    def status(self) -> tuple[bool | None, str]:
        for connection in (self._events, self._unlocks):
            if not connection.connected.is_set():
                return False, connection.problem
        s = self._settings
        return True, f"broker {s['host']}:{s['port']}{' (TLS)' if s['tls'] else ''}, topic {self.topic}"

    def send(self, message: DoorMessage, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        payload = message.payload()
        if message.channel == UNLOCK:
            info, delivered = self._unlocks.publish(f"{self.topic}/{UNLOCK}", payload, 1, deadline)
            if info is not None and not delivered:  # queued but not acknowledged: never let it go out late
                self._unlocks.close()
                self._unlocks = _Connection(self._settings, f"{self._id}-unlock", False)
            return delivered
        if self._inflight is not None and self._inflight[0] == payload:  # the same event again: paho still
            info = self._inflight[1]                                      # holds it (and resends it itself)
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            delivered = info.is_published()
        else:
            info, delivered = self._events.publish(f"{self.topic}/{EVENT}", payload, 2, deadline)
        self._inflight = None if delivered or info is None else (payload, info)
        return delivered

    def close(self) -> None:
        self._events.close()
        self._unlocks.close()


# -- webhook ---------------------------------------------------------------------------------------------------
def sign_webhook(secret: bytes, body: bytes, timestamp: str) -> str:
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_webhook(secret: bytes, body: bytes, timestamp: str, signature: str, now: float | None = None,
                   max_age_s: float = MAX_WEBHOOK_AGE_S) -> bool:
    """THE receiver's check of a kiosk webhook: the signature over ``timestamp.body`` with the shared secret,
    and a timestamp within ``max_age_s`` of ``now`` (a replayed old message is refused; so is one from the
    future). Keep the decision_ids seen within that window to refuse a replay inside it too."""
    try:
        sent = float(timestamp)
    except (TypeError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - sent) > max_age_s:
        return False
    return hmac.compare_digest(sign_webhook(secret, body, timestamp), str(signature))


class WebhookDoor:
    name = "webhook"

    def __init__(self, url: str, secret: bytes):
        if not url.startswith(("https://", "http://")):
            raise ValueError("the door webhook needs an http:// or https:// URL")
        if len(secret) < 16:
            raise ValueError("the door webhook secret needs at least 16 bytes")
        self.url, self._secret = url, secret
        self.host = urllib.parse.urlsplit(url).hostname or "?"  # shown; the path and query may hold a token
        self._last: tuple[bool, str] | None = None  # the last message's outcome (status())

    def status(self) -> tuple[bool | None, str]:
        if self._last is None:
            return None, f"endpoint {self.host}: no message sent yet (Test door sends one)"
        return self._last

    def send(self, message: DoorMessage, timeout: float) -> bool:
        body = dict(message.body, channel=message.channel)
        data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        stamp = f"{time.time():.3f}"
        request = urllib.request.Request(self.url, data=data, method="POST", headers={
            "Content-Type": "application/json", TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: sign_webhook(self._secret, data, stamp)})
        try:
            with urllib.request.urlopen(request, timeout=max(0.05, timeout)) as response:  # noqa: S310 (http/https only)
                ok = 200 <= response.status < 300
                self._last = (ok, f"endpoint {self.host} answered HTTP {response.status} at {_clock()}")
                return ok
        except urllib.error.HTTPError as exc:
            self._last = (False, f"endpoint {self.host} answered HTTP {exc.code} at {_clock()}")
        except (OSError, ValueError) as exc:
            log.debug("door: webhook failed: %s", _why(exc))
            self._last = (False, f"endpoint {self.host}: {_why(exc)} at {_clock()}")
        return False

    def close(self) -> None:
        pass


# -- serial relay ----------------------------------------------------------------------------------------------
class SerialRelayDoor:
    """A USB relay board on a serial port: ``on`` bytes at an unlock, ``off`` bytes ``unlock_s`` later. Other
    events are not the relay's business (they count as delivered)."""

    name = "serial"

    def __init__(self, port: str, on: bytes = bytes.fromhex("A00101A2"), off: bytes = bytes.fromhex("A00100A1"),
                 baud: int = 9600):
        self.port, self.on, self.off, self.baud = port, on, off, baud
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._problem = ""  # the last write's failure ("" once a write worked)

    def status(self) -> tuple[bool | None, str]:
        if not os.path.exists(self.port):
            return False, f"{self.port} does not exist (is the relay board plugged in?)"
        if not os.access(self.port, os.R_OK | os.W_OK):
            return False, f"{self.port}: permission denied (the kiosk's user needs the dialout group)"
        if self._problem:
            return False, self._problem
        return True, f"relay port {self.port} at {self.baud} baud"

    def _write(self, data: bytes) -> bool:
        try:
            fd = os.open(self.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            log.warning("door: cannot open the relay port %s: %s", self.port, exc)
            self._problem = f"cannot open {self.port} ({_why(exc)})"
            return False
        try:
            try:
                import termios  # noqa: PLC0415 -- POSIX only
                attrs = termios.tcgetattr(fd)
                speed = getattr(termios, f"B{self.baud}", termios.B9600)
                attrs[4] = attrs[5] = speed
                attrs[3] &= ~(termios.ICANON | termios.ECHO)
                termios.tcsetattr(fd, termios.TCSANOW, attrs)
            except (ImportError, OSError):  # not a terminal (a test's file): write anyway
                pass
            written = os.write(fd, data) == len(data)
            self._problem = "" if written else f"{self.port}: the bytes were not all written"
            return written
        except OSError as exc:
            log.warning("door: writing to the relay port %s failed: %s", self.port, exc)
            self._problem = f"writing to {self.port} failed ({_why(exc)})"
            return False
        finally:
            os.close(fd)

    def send(self, message: DoorMessage, timeout: float) -> bool:
        if message.channel != UNLOCK:
            return True
        with self._lock:
            if not self._write(self.on):
                return False
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(float(message.body.get("unlock_s", 3.0)), self._relock)
            self._timer.daemon = True
            self._timer.start()
        return True

    def _relock(self) -> None:
        with self._lock:
            self._timer = None
            if not self._write(self.off):
                log.error("door: the relay could not be switched off on %s", self.port)

    def close(self) -> None:
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            self._write(self.off)  # never leave the door open behind a closing kiosk
