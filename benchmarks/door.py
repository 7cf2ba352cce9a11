"""Latency from an audited ACCEPT to its unlock command at the MQTT broker (issue #26: <= 50 ms median).

Starts a throw-away Mosquitto on 127.0.0.1 (Debian's 'mosquitto'), a subscriber standing for the door's
system, and the kiosk's door (kiosk.app.door with kiosk.io.door.MqttDoor); each ACCEPT is written to a real
audit log first, as VerificationService does, and timed from there to the unlock's arrival.

    .venv/bin/python benchmarks/door.py [--accepts 100]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from kiosk.app.door import Door, DoorOutbox, DoorSettings
from kiosk.rules.decision import MODE_ID, REASON_MATCH, Decision
from kiosk.storage import Storage


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accepts", type=int, default=100)
    args = parser.parse_args()
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    folder = Path(tempfile.mkdtemp(prefix="door-bench-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (folder / "m.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    broker = subprocess.Popen([mosquitto, "-c", str(folder / "m.conf")], stderr=subprocess.DEVNULL)
    import paho.mqtt.client as mqtt
    arrived: dict[str, float] = {}
    ready = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, *_: c.subscribe("siamese-kiosk/door/unlock", qos=1)
    sub.on_subscribe = lambda *_: ready.set()
    sub.on_message = lambda _c, _u, m: arrived.setdefault(json.loads(m.payload)["employee_id"], time.perf_counter())
    for _ in range(100):
        try:
            sub.connect("127.0.0.1", port)
            break
        except OSError:
            time.sleep(0.05)
    sub.loop_start()
    ready.wait(5)
    storage = Storage.open(folder / "data")
    settings = DoorSettings("mqtt", 3.0, 2.0, {"host": "127.0.0.1", "port": port})
    door = Door(settings.output("bench"), DoorOutbox(folder / "outbox.sqlite3"), storage.audit, "bench")
    latencies = []
    try:
        for i in range(args.accepts):
            d = Decision(f"E{i}", True, REASON_MATCH, 0.95, 0.6, mode=MODE_ID)
            storage.audit.record(d.claimed_id, d.verdict, d.reason, d.score, mode=d.mode)  # the audited ACCEPT
            start = time.perf_counter()
            door.decided(d)
            end = time.monotonic() + 2
            while d.claimed_id not in arrived and time.monotonic() < end:
                time.sleep(0.0005)
            if d.claimed_id in arrived:
                latencies.append((arrived[d.claimed_id] - start) * 1000)
            time.sleep(0.02)
    finally:
        door.close()
        storage.close()
        sub.loop_stop()
        broker.terminate()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{len(latencies)}/{args.accepts} unlocks arrived; audited ACCEPT -> unlock at the broker's subscriber: "
          f"median {statistics.median(latencies):.1f} ms, 95th percentile "
          f"{sorted(latencies)[int(0.95 * (len(latencies) - 1))]:.1f} ms, max {max(latencies):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
