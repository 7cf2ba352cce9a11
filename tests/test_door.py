"""The door (issue #26): an audited ACCEPT unlocks it, a REJECT never does; events reach the door's system
once and in order, also across an outage. Against a real Mosquitto broker started here on 127.0.0.1 (skipped,
with the reason, where it cannot start), a local HTTP server, and a pseudo-terminal standing in for a USB
relay board."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from kiosk.app.door import Door, DoorOutbox, DoorSettings
from kiosk.io.door import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    UNLOCK,
    DoorMessage,
    SerialRelayDoor,
    WebhookDoor,
    sign_webhook,
    verify_webhook,
)
from kiosk.rules.decision import MODE_ID, REASON_ATTACK, REASON_MATCH, REASON_NO_MATCH, Decision

pytestmark = pytest.mark.slow  # threads, servers and real time

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def decision(accepted: bool, employee: str = "E1", reason: str | None = None) -> Decision:
    return Decision(employee, accepted, reason or (REASON_MATCH if accepted else REASON_NO_MATCH), 0.9, 0.6,
                    mode=MODE_ID)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A throw-away Mosquitto on 127.0.0.1 with persistence (sessions survive its restart)."""

    def __init__(self, folder):
        if not os.path.exists(MOSQUITTO):
            pytest.skip("mosquitto is not installed (Debian's 'mosquitto' package; .ci/run installs it)")
        self.port, self.folder = free_port(), folder
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o777)  # mosquitto started as root runs as the 'mosquitto' user
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {folder}/\nautosave_interval 1\n")
        self.process = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if self.process.poll() is not None:
                pytest.skip(f"mosquitto could not start: {self.process.stderr.read().decode()[-300:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.skip("mosquitto did not listen within 10 s")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker")
    yield b
    if b.process.poll() is None:
        b.stop()


class Listener:
    """The door's system: a persistent QoS 2 subscriber that records every message, in arrival order."""

    def __init__(self, port: int, topic: str = "siamese-kiosk/door/#"):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, dict, float]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="door-system", clean_session=False)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=2)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.messages.append(
            (m.topic.rsplit("/", 1)[-1], json.loads(m.payload), time.monotonic()))
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(5)

    def of(self, channel: str) -> list[dict]:
        return [body for kind, body, _ in self.messages if kind == channel]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def mqtt_door(port: int, tmp_path, audit=None, validity_s: float = 1.0) -> Door:
    settings = DoorSettings("mqtt", 3.0, validity_s, {"host": "127.0.0.1", "port": port})
    return Door(settings.output("door-1"), DoorOutbox(tmp_path / "outbox.sqlite3"), audit, "door-1", 3.0, validity_s)


def wait(condition, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_an_accept_publishes_exactly_one_unlock_and_a_reject_or_an_attack_none(broker, tmp_path):
    listener = Listener(broker.port)
    door = mqtt_door(broker.port, tmp_path)
    try:
        door.decided(decision(True))
        door.decided(decision(False))
        door.decided(decision(False, reason=REASON_ATTACK))
        assert door.drained(10) and wait(lambda: len(listener.of("event")) == 3)
        time.sleep(0.3)  # anything else would have arrived by now
        unlocks = listener.of(UNLOCK)
        assert len(unlocks) == 1 and unlocks[0]["employee_id"] == "E1" and unlocks[0]["unlock_s"] == 3.0
        assert [e["kind"] for e in listener.of("event")] == ["accept", "reject", "attack"]
        assert unlocks[0]["decision_id"] == listener.of("event")[0]["decision_id"]
    finally:
        door.close()
        listener.close()


def test_with_the_broker_away_for_30_s_every_event_arrives_once_in_order_and_no_stale_unlock(broker, tmp_path):
    class Audit:
        def __init__(self):
            self.failed = []

        def record_event(self, kind, detail="", reason=""):
            self.failed.append((kind, detail))

    audit = Audit()
    listener = Listener(broker.port)
    door = mqtt_door(broker.port, tmp_path, audit)
    sent_at: dict[str, float] = {}
    try:
        for i in range(200):
            if i == 50:
                broker.stop()
                down_at = time.monotonic()
            if i == 150:
                while time.monotonic() - down_at < 30.0:
                    time.sleep(0.1)
                broker.start()
            door.decided(decision(i % 3 == 0, f"E{i}"))
            sent_at[f"E{i}"] = time.monotonic()
            time.sleep(0.01)
        assert door.drained(60)
        assert wait(lambda: len(listener.of("event")) >= 200, 30)
        time.sleep(0.5)
        events = listener.of("event")
        assert [e["employee_id"] for e in events] == [f"E{i}" for i in range(200)]  # once each, in order
        for body, (kind, message, arrived) in zip(listener.of(UNLOCK), [m for m in listener.messages
                                                                         if m[0] == UNLOCK]):
            assert arrived - sent_at[body["employee_id"]] <= 1.0 + 0.5  # none after its validity
        accepted_while_down = {f"E{i}" for i in range(50, 150) if i % 3 == 0}
        assert not accepted_while_down & {u["employee_id"] for u in listener.of(UNLOCK)}
        assert {detail for _, detail in audit.failed} == accepted_while_down  # each failed unlock is audited
    finally:
        door.close()
        listener.close()


# -- webhook -----------------------------------------------------------------------------------------------------
def webhook_receiver() -> tuple[list, HTTPServer]:
    """A local HTTP receiver on 127.0.0.1 (started; the caller shuts it down and closes it) and the list of
    (body, timestamp, signature) of each POST it answered with 204."""
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((body, self.headers[TIMESTAMP_HEADER], self.headers[SIGNATURE_HEADER]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return received, server


def test_the_webhook_is_signed_and_the_shipped_verifier_refuses_a_changed_body_or_an_old_timestamp(tmp_path):
    secret = os.urandom(32)
    received, server = webhook_receiver()
    try:
        hook = WebhookDoor(f"http://127.0.0.1:{server.server_port}/door", secret)
        assert hook.send(DoorMessage(UNLOCK, {"kind": "accept", "employee_id": "E1", "unlock_s": 3.0}), 2.0)
        body, stamp, signature = received[0]
        assert json.loads(body)["channel"] == UNLOCK and verify_webhook(secret, body, stamp, signature)
        assert not verify_webhook(secret, body.replace(b"E1", b"E2"), stamp, signature)  # changed body
        assert not verify_webhook(os.urandom(32), body, stamp, signature)  # another key
        old = f"{time.time() - 300:.3f}"
        assert not verify_webhook(secret, body, old, sign_webhook(secret, body, old))  # a replay, re-signed or not
        server.shutdown()
        assert not hook.send(DoorMessage(UNLOCK, {"kind": "accept"}), 0.5)  # nobody there: False, no exception
    finally:
        server.server_close()


# -- serial relay --------------------------------------------------------------------------------------------------
def test_the_relay_gets_its_on_bytes_at_an_accept_and_its_off_bytes_after_the_unlock_time(tmp_path):
    controller, relay = os.openpty()
    port = os.ttyname(relay)
    door = Door(SerialRelayDoor(port, bytes.fromhex("A00101A2"), bytes.fromhex("A00100A1")),
                DoorOutbox(tmp_path / "outbox.sqlite3"), None, "door-1", unlock_s=0.5, validity_s=1.0)
    try:
        door.decided(decision(False))
        door.decided(decision(True))
        got = b""
        end = time.monotonic() + 5
        while len(got) < 8 and time.monotonic() < end:
            got += os.read(controller, 64)
        assert got[:4] == bytes.fromhex("A00101A2") and got[4:8] == bytes.fromhex("A00100A1")
    finally:
        door.close()
        os.close(controller)
        os.close(relay)


def test_test_door_is_behind_the_admin_use_case_and_audited(broker, tmp_path):
    from kiosk.app import Admin
    from kiosk.storage import EVENT_LABELS, SettingsStore, Storage

    listener = Listener(broker.port)
    storage = Storage.open(tmp_path / "data")
    door = mqtt_door(broker.port, tmp_path, storage.audit)
    try:
        admin = Admin(storage, SettingsStore(), door)
        assert admin.test_door() and wait(lambda: len(listener.of(UNLOCK)) == 1)
        entry = storage.audit.entries()[0]
        assert (entry.label, entry.reason) == (EVENT_LABELS["door_test"], "delivered")
    finally:
        door.close()
        storage.close()
        listener.close()
