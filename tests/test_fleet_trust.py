"""A fleet that trusts nobody's word (#25 item 5), against a real throw-away PostgreSQL (tests/postgres_fixture.py;
skipped, with the reason, where no server can be started): with a kiosk's own database role an attacker cannot
write audit entries in another kiosk's name or with an ID of its choosing, cannot write the fleet's settings or
PIN record, and a silent network (a proxy that keeps the sockets open but passes nothing) turns the kiosk
OFFLINE within 10 s with admin operations answering within their deadline (kiosk.storage.fleet.trust, .pgconn,
.sync)."""

from __future__ import annotations

import select
import socket
import threading
import time

import pytest
from postgres_fixture import wait_for

from kiosk.storage import ConnectionState, Storage, StorageError

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.reliability]
PIN = "246810"


def _kiosk_conn(cluster, database, role):
    import psycopg
    return psycopg.connect(cluster.url(role, database), password=cluster.passwords[role], autocommit=True)


def _open(cluster, database, folder, role, kiosk_id, monkeypatch, port=None) -> Storage:
    monkeypatch.setenv("KIOSK_ID", kiosk_id)
    monkeypatch.setenv("KIOSK_DATABASE_PASSWORD", cluster.passwords[role])
    url = cluster.url(role, database)
    if port is not None:
        url = url.replace(f":{cluster.port}/", f":{port}/")
    return Storage.open(folder, url=url)


def _forge(conn, kiosk_id: str, rid: int | None = None) -> None:
    """One audit INSERT as an attacker would write it (any hash: it need not even verify to do harm)."""
    import uuid
    if rid is None:
        rid = conn.execute("SELECT nextval('audit_log_id')").fetchone()[0]
    conn.execute("INSERT INTO audit_log (id, entry_uuid, kiosk_id, time, kind, claimed_id, verdict, reason, hash) "
                 "VALUES (%s, %s, %s, '2030-01-01T00:00:00Z', 'decision', 'E1', 'ACCEPT', 'forged', %s)",
                 (rid, str(uuid.uuid4()), kiosk_id, "f" * 64))


def test_a_kiosk_role_writes_audit_entries_only_under_its_own_id_and_never_chooses_the_id(
        postgres_cluster, registry_db, tmp_path, monkeypatch):
    import psycopg
    a = _open(postgres_cluster, registry_db, tmp_path / "a", "kiosk_a", "door-A", monkeypatch)
    b = _open(postgres_cluster, registry_db, tmp_path / "b", "kiosk_b", "door-B", monkeypatch)
    try:
        a.audit.record("E1", "ACCEPT", "face matches", 0.9, mode="id")
        b.audit.record("E2", "REJECT", "no match", 0.1, mode="id")
        wait_for(lambda: not a.outbox_pending() and not b.outbox_pending(), 10.0)
        with _kiosk_conn(postgres_cluster, registry_db, "kiosk_b") as conn:  # the attacker: kiosk B's role
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
                _forge(conn, "door-A")  # in kiosk A's name
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("INSERT INTO kiosk_ids (kiosk_id, role_name) VALUES ('door-C', 'kiosk_a')")
            with pytest.raises(psycopg.errors.IntegrityError):
                conn.execute("INSERT INTO kiosk_ids (kiosk_id) VALUES ('door-A')")  # A's ID is A's role's
            for rid in (int(9e18), 2 ** 53, 1):  # past the range, and an ID the registry did not issue
                with pytest.raises(psycopg.errors.CheckViolation):
                    conn.execute("SELECT nextval('audit_log_id')")
                    _forge(conn, "door-B", rid)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT setval('audit_log_id', 9000000000000000000)")
        a.audit.record("E1", "ACCEPT", "face matches", 0.9, mode="id")  # later entries ...
        b.audit.record("E3", "ACCEPT", "face matches", 0.8, mode="id")
        wait_for(lambda: not a.outbox_pending() and not b.outbox_pending(), 10.0)
        assert a.audit.verify_chain() is None  # ... and the chain still verifies
        entries = a.audit.entries()
        assert sorted((e.kiosk_id, e.claimed_id) for e in entries if not e.is_event) == [
            ("door-A", "E1"), ("door-A", "E1"), ("door-B", "E2"), ("door-B", "E3")]
        assert all(e.reason != "forged" for e in entries)
    finally:
        a.close()
        b.close()


def test_the_kiosk_role_cannot_write_fleet_settings_or_the_pin_record_directly(
        postgres_cluster, registry_db, tmp_path, monkeypatch):
    import psycopg
    from psycopg.types.json import Jsonb
    a = _open(postgres_cluster, registry_db, tmp_path / "a", "kiosk_a", "door-A", monkeypatch)
    try:
        pins = a.pin_manager(a.settings_store())
        pins.set_pin(PIN, PIN)
        a.settings_store().update(threshold=0.7)  # the admin who set the PIN: with its proof
        with postgres_cluster.admin(registry_db) as conn:
            before = dict(conn.execute("SELECT key, value FROM settings").fetchall())
        assert before["threshold"] == 0.7 and before["liveness"] is True and "pin" in before
        with _kiosk_conn(postgres_cluster, registry_db, "kiosk_a") as conn:  # the attacker: the kiosk's role
            for key, value in (("threshold", 0.05), ("liveness", False), ("pin", {"algorithm": "scrypt"})):
                assert conn.execute("UPDATE settings SET value = %s WHERE key = %s",
                                    (Jsonb(value), key)).rowcount == 0
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("INSERT INTO settings (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
                                 "SET value = excluded.value", (key, Jsonb(value)))
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("DELETE FROM settings WHERE key = %s", (key,))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT verifier FROM pin_verifier")
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="proof"):  # the function, no proof
                conn.execute("SELECT fleet_change_settings(%s, NULL, gen_random_uuid())",
                             (Jsonb({"threshold": 0.05}),))
            assert conn.execute("SELECT fleet_seed_settings(%s)", (Jsonb({"threshold": 0.05}),)).fetchone()[0] == 0
        with postgres_cluster.admin(registry_db) as conn:
            assert dict(conn.execute("SELECT key, value FROM settings").fetchall()) == before
        other = _open(postgres_cluster, registry_db, tmp_path / "a2", "kiosk_a", "door-A2", monkeypatch)
        try:  # a kiosk whose admin has not given the PIN: refused by the registry, not only by the kiosk
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                other.settings_store().update(threshold=0.05)
            assert other.pin_manager(other.settings_store()).check(PIN).ok
            other.settings_store().update(threshold=0.65)  # with the proof: done, and audited
            from kiosk.app.admin import Pins
            Pins(other.pin_manager(other.settings_store())).end_session()  # the admin view locked
            with pytest.raises(psycopg.errors.InsufficientPrivilege):  # the proof went with the session
                other.settings_store().update(threshold=0.06)
        finally:
            other.close()
        with postgres_cluster.admin(registry_db) as conn:
            assert conn.execute("SELECT value FROM settings WHERE key = 'threshold'").fetchone()[0] == 0.65
            kinds = [k for (k,) in conn.execute("SELECT kind FROM audit_log ORDER BY id")]
        assert kinds.count("threshold") == 2 and "pin_set" in kinds
    finally:
        a.close()


class SilentProxy:
    """127.0.0.1:port -> the server, byte for byte, until ``silence()``: then every socket stays open and nothing
    passes either way (new connections are accepted and left hanging too)."""

    def __init__(self, upstream_port: int):
        self.upstream = upstream_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.silent = threading.Event()
        self.stopped = threading.Event()
        self.sockets: list[socket.socket] = [self.server]
        threading.Thread(target=self._accept, daemon=True).start()

    def silence(self) -> None:
        self.silent.set()

    def _accept(self) -> None:
        self.server.settimeout(0.1)
        while not self.stopped.is_set():
            try:
                client, _ = self.server.accept()
            except (TimeoutError, OSError):
                continue
            self.sockets.append(client)
            if self.silent.is_set():
                continue  # open, never answered
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            self.sockets.append(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while not self.stopped.is_set():
            if self.silent.is_set():
                self.stopped.wait(0.1)
                continue
            try:
                ready, _, _ = select.select([src], [], [], 0.1)
                if not ready or self.silent.is_set():
                    continue
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
            except OSError:
                break

    def close(self) -> None:
        self.stopped.set()
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass


def test_a_silent_network_turns_the_kiosk_offline_within_10_s_and_admin_operations_answer_in_time(
        postgres_cluster, registry_db, tmp_path, monkeypatch):
    proxy = SilentProxy(postgres_cluster.port)
    storage = None
    try:
        storage = _open(postgres_cluster, registry_db, tmp_path / "a", "kiosk_a", "door-A", monkeypatch, proxy.port)
        assert storage.connection.state is ConnectionState.ONLINE
        offline = threading.Event()
        storage.connection.subscribe(lambda info: offline.set() if info.state is ConnectionState.OFFLINE else None)
        store = storage.settings_store()
        store.update(threshold=0.7)  # works through the proxy (no PIN yet: first start)
        outcome: dict = {}

        def admin_operation():
            started = time.monotonic()
            try:
                store.update(threshold=0.75)
                outcome["result"] = "written"
            except StorageError as exc:
                outcome["result"] = exc
            outcome["seconds"] = time.monotonic() - started
        silenced = time.monotonic()
        proxy.silence()
        worker = threading.Thread(target=admin_operation, daemon=True)
        worker.start()
        assert offline.wait(10.0), f"still {storage.connection.state} 10 s after the network went silent"
        print(f"offline {time.monotonic() - silenced:.1f} s after the network went silent")
        worker.join(12.0)
        assert not worker.is_alive(), "the admin operation is still blocked after 12 s"
        assert isinstance(outcome["result"], StorageError) and outcome["seconds"] < 12.0, outcome
        started = time.monotonic()
        with pytest.raises(StorageError):  # refused at once now
            store.update(threshold=0.8)
        assert time.monotonic() - started < 1.0
        started = time.monotonic()
        assert storage.employees.count() == 0  # verification reads the local copy: never waits
        assert time.monotonic() - started < 1.0
        started = time.monotonic()
        storage.close()
        storage = None
        assert time.monotonic() - started < 8.0, "close() waited on the silent network"
    finally:
        if storage is not None:
            storage.close()
        proxy.close()
