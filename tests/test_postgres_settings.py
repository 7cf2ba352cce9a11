"""Fleet-wide settings (#14) against a real PostgreSQL (tests/postgres_fixture.py; skipped, with the reason,
where no server can be started): the threshold, liveness, the admin PIN and its lockout are the fleet's;
offline a kiosk keeps its last copy (across a restart too), refuses to change them, and counts wrong PINs,
which reach the registry when it is back; a kiosk's local files cannot reset the fleet's PIN. The fixtures
postgres_cluster, registry_db, fleet and make_window come from tests/conftest.py."""

from __future__ import annotations

import io
import json
import time

import pytest
from helpers import wait_ready
from postgres_fixture import wait_for

from kiosk import cli
from kiosk.storage import ConnectionState, Settings, SettingsStore, Storage, StorageError
from kiosk.storage.fleet.pin import UNSYNCED, FleetPinManager
from kiosk.storage.pin import OK, UNSET, PinError, PinRecordError

pytestmark = [pytest.mark.postgres, pytest.mark.slow]  # a server, and the kiosks' sync threads
PIN, OTHER = "246810", "135790"


def pins(storage: Storage, **options) -> FleetPinManager:
    manager = storage.pin_manager(storage.settings_store(), **options)
    assert isinstance(manager, FleetPinManager)
    return manager


def registry_settings(cluster, database) -> dict:
    with cluster.admin(database) as conn:
        return dict(conn.execute("SELECT key, value FROM settings").fetchall())


def test_a_threshold_set_at_one_kiosk_is_read_at_another_within_5_s(fleet):
    a, b = fleet("a"), fleet("b")
    told = []
    b.on_settings_change(lambda: told.append(1))
    assert b.settings_store().load().threshold is None
    set_at = time.monotonic()
    a.settings_store().update(threshold=0.71)
    delay = wait_for(lambda: b.settings_store().load().threshold == 0.71, 5.0)
    print(f"threshold propagation: {delay * 1000:.0f} ms after the write ({time.monotonic() - set_at:.3f} s in all)")
    assert told, "the kiosk's listener hears of it"
    a.settings_store().update(liveness=False, liveness_threshold=0.4, sounds=False)
    wait_for(lambda: not b.settings_store().load().liveness, 5.0)
    assert b.settings_store().load().liveness_threshold == 0.4
    assert SettingsStore().load().threshold is None  # shared ones never go into settings.json ...
    assert SettingsStore().load().sounds is False     # ... a kiosk's own ones do


def test_a_pin_set_at_one_kiosk_unlocks_another_and_only_its_hash_is_in_the_registry(
        fleet, postgres_cluster, registry_db):
    a, b = fleet("a"), fleet("b")
    pa, pb = pins(a), pins(b)
    assert pa.state() == UNSET and not pb.is_set  # a new fleet: first start (online only)
    pa.set_pin(PIN, PIN)
    wait_for(lambda: pb.is_set, 5.0)
    assert pb.check(PIN).ok and not pb.check(OTHER).ok
    stored = registry_settings(postgres_cluster, registry_db)
    assert stored["pin"]["algorithm"] == "scrypt" and PIN not in json.dumps(stored)
    with pytest.raises(PinError, match="already set"):
        pb.set_pin(OTHER, OTHER)  # first start is over at every kiosk
    pb.set_pin(OTHER, OTHER, current=PIN)  # changed at B: A takes it
    wait_for(lambda: pa.check(OTHER).ok, 5.0)


def test_five_wrong_pins_at_one_kiosk_lock_every_kiosk(fleet):
    a, b = fleet("a"), fleet("b")
    pa, pb = pins(a), pins(b)
    pa.set_pin(PIN, PIN)
    wait_for(lambda: pb.is_set, 5.0)
    results = [pa.check("000000") for _ in range(5)]
    assert [r.attempts_left for r in results[:4]] == [4, 3, 2, 1] and results[4].locked_for == 300
    delay = wait_for(lambda: pb.locked_for() > 0, 5.0)
    print(f"lockout propagation: {delay * 1000:.0f} ms")
    assert not pb.check(PIN).ok  # even the right PIN, at the other kiosk


def test_wrong_pins_at_two_kiosks_add_up(fleet):
    a, b = fleet("a"), fleet("b")
    pa, pb = pins(a), pins(b)
    pa.set_pin(PIN, PIN)
    wait_for(lambda: pb.is_set, 5.0)
    pa.check("000000"), pa.check("000000")
    assert pb.check("000000").attempts_left == 2  # counted atomically in the registry, whatever B's copy says
    pa.check("000000")
    assert pb.check("000000").locked_for > 0


def test_offline_the_copy_is_used_changes_are_refused_and_wrong_pins_count_and_merge(
        fleet, postgres_cluster, registry_db):
    a, b = fleet("a"), fleet("b")
    pa, pb = pins(a), pins(b)
    a.settings_store().update(threshold=0.66, liveness=True)
    pa.set_pin(PIN, PIN)
    wait_for(lambda: pb.is_set and b.settings_store().load().threshold == 0.66, 5.0)
    postgres_cluster.stop_server()
    try:
        wait_for(lambda: a.connection.state is ConnectionState.OFFLINE, 10)
        store = a.settings_store()
        assert store.load().threshold == 0.66 and pa.is_set  # the last copy
        for change in ({"threshold": 0.5}, {"liveness": False}):
            with pytest.raises(StorageError, match="settings .* cannot be changed now"):
                store.update(**change)
        assert store.load().threshold == 0.66
        with pytest.raises(StorageError, match="cannot be changed now"):
            pa.set_pin(OTHER, OTHER, current=PIN)
        store.update(sounds=False)  # a kiosk's own setting: still its own to change
        assert pa.check(PIN).ok  # the copy's PIN opens it
        for _ in range(3):
            assert not pa.check("000000").ok  # counted here ...
        assert pa.check("000000").attempts_left == 1
    finally:
        postgres_cluster.start_server()
    # ... and added to the fleet's count when the registry is back: one more wrong PIN at B locks every kiosk
    wait_for(lambda: a.connection.state is ConnectionState.ONLINE and a.link.settings.offline_wrong_entries() == 0, 20)
    wait_for(lambda: b.link.settings.values()["pin_guard"]["failures"] == 4, 5)
    assert pb.check("000000").locked_for > 0
    wait_for(lambda: pa.locked_for() > 0, 5)


def test_an_offline_lockout_reaches_the_fleet_when_the_registry_is_back(fleet, postgres_cluster):
    a, b = fleet("a"), fleet("b")
    pa, pb = pins(a), pins(b)
    pa.set_pin(PIN, PIN)
    wait_for(lambda: pb.is_set, 5.0)
    postgres_cluster.stop_server()
    try:
        wait_for(lambda: a.connection.state is ConnectionState.OFFLINE, 10)
        for _ in range(5):
            pa.check("000000")
        assert pa.locked_for() > 0  # locked here at once
    finally:
        postgres_cluster.start_server()
    wait_for(lambda: pb.locked_for() > 0, 20)  # the stricter state wins


def test_a_restart_while_offline_keeps_the_copy_and_never_opens_first_start(fleet, postgres_cluster, registry_db,
                                                                            tmp_path):
    a = fleet("a")
    a.settings_store().update(threshold=0.62)
    pins(a).set_pin(PIN, PIN)
    a.close()
    postgres_cluster.stop_server()
    try:
        again = Storage.open(tmp_path / "kiosk-a", url=postgres_cluster.url("kiosk_a", registry_db))
        try:
            assert again.connection.state is ConnectionState.OFFLINE
            assert again.settings_store().load().threshold == 0.62
            manager = pins(again)
            assert manager.state() == OK and manager.is_set and manager.check(PIN).ok
        finally:
            again.close()
        new = Storage.open(tmp_path / "kiosk-new", url=postgres_cluster.url("kiosk_a", registry_db))
        try:  # a kiosk that never reached the registry: locked, never "first start", safe defaults
            manager = pins(new)
            assert manager.state() == UNSYNCED
            with pytest.raises(PinRecordError, match="not had the fleet's settings"):
                manager.is_set
            assert new.settings_store().load().liveness is True
        finally:
            new.close()
    finally:
        postgres_cluster.start_server()


def test_a_kiosks_local_files_cannot_reset_the_fleet_pin_or_its_lockout(fleet, postgres_cluster, registry_db,
                                                                        monkeypatch, capsys, tmp_path):
    a, b = fleet("a"), fleet("b")
    pa, pb = pins(a), pins(b)
    pa.set_pin(PIN, PIN)
    for _ in range(5):
        pa.check("000000")
    assert pa.locked_for() > 0
    SettingsStore().save(Settings())  # settings.json emptied: no PIN there
    with a.local.transaction() as conn:  # the copy in the data folder cleared too
        conn.execute("DELETE FROM fleet_settings")
    with pytest.raises(PinError):  # "first start" on a cleared copy cannot set a PIN the registry has
        pa.set_pin(OTHER, OTHER)
    wait_for(lambda: pa.state() == OK and pa.locked_for() > 0, 5)  # the registry's state comes back
    assert not pb.check(PIN).ok
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{OTHER}\n{OTHER}\n"))
    url = postgres_cluster.url("kiosk_a", registry_db)
    assert cli.main(["--database", url, "admin", "reset-pin"]) == 2  # a kiosk's role: refused
    assert "only the registry's owner" in capsys.readouterr().err
    # a fleet kiosk's data folder without --database: refused too (its PIN is not settings.json's)
    monkeypatch.setenv("KIOSK_DATA_DIR", str(a.folder))
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{OTHER}\n{OTHER}\n"))
    assert cli.main(["admin", "reset-pin"]) == 2
    assert "belongs to a fleet" in capsys.readouterr().err
    monkeypatch.setenv("KIOSK_DATABASE_PASSWORD", postgres_cluster.passwords["kiosk_owner"])
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{OTHER}\n{OTHER}\n"))
    assert cli.main(["--database", postgres_cluster.url("kiosk_owner", registry_db), "admin", "reset-pin"]) == 0
    wait_for(lambda: pb.locked_for() == 0 and pa.locked_for() == 0, 5)  # the owner's reset: every kiosk
    assert pb.check(OTHER).ok and pa.check(OTHER).ok


def test_a_threshold_applied_at_one_kiosks_window_is_used_by_anothers(
        qtbot, make_window, postgres_cluster, registry_db, trained_weights, tmp_path, monkeypatch):
    url = postgres_cluster.url("kiosk_a", registry_db)
    window_a = make_window(trained_weights, database=url)
    monkeypatch.setenv("KIOSK_DATA_DIR", str(tmp_path / "kiosk-b"))
    window_b = make_window(trained_weights, database=url)
    wait_ready(qtbot, window_a, timeout=30000)
    wait_ready(qtbot, window_b, timeout=30000)
    assert window_b.worker.service.threshold != pytest.approx(0.812)
    window_a.threshold_page.set_threshold(0.812)  # applied by A's admin (confirmed), saved off the GUI thread
    qtbot.waitUntil(lambda: not window_a.threshold_page.saving, timeout=5000)
    applied = time.monotonic()
    qtbot.waitUntil(lambda: window_b.worker.service.threshold == pytest.approx(0.812), timeout=5000)
    print(f"window B uses A's threshold {time.monotonic() - applied:.2f} s later")
    page = window_b.threshold_page
    assert page.threshold == pytest.approx(0.812) and not page.pending and "another kiosk" in page.status.text()
    assert "0.812" in window_b.model_status.text()
