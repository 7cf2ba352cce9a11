"""The PIN tied to the data key (issue #25 item 6): the PIN guard (pin_guard.json) carries a MAC made with a key
derived from the data key, so deleting or editing it, or replacing the PIN record in settings.json, locks
administration until `kiosk admin reset-pin`; the PIN's hash is peppered with another key derived from it, so
settings.json alone no longer lets anyone try the 10^6 six-digit PINs offline.

The problem as reported: deleting or editing pin_guard.json lifted a lockout; a replaced PIN record with the
guard deleted let the attacker's PIN in; from settings.json alone every six-digit PIN could be tried offline
(7.6 h on 2 cores). Each test here failed on the code before the change.

Run alone with ``pytest -m reliability``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import sys
from pathlib import Path

import pytest

from kiosk import cli
from kiosk.app import Kiosk
from kiosk.paths import config_dir, data_dir
from kiosk.storage import EVENT_PIN_SET, PinManager, SettingsStore
from kiosk.storage.keys import create_key, key_path, read_key
from kiosk.storage.pin import GUARD_NAME, OK, PinRecordError, fingerprint, hash_pin, verify_pin

pytestmark = pytest.mark.reliability

PIN = "246810"
ATTACKER = "000000"
NEW = "135790"
# the states of kiosk.storage.pin added by this change (their names, so that the tests run on the old code too)
UNGUARDED, UNAUTHENTICATED, NO_KEY = "unguarded", "unauthenticated", "no-key"


def guard_file() -> Path:
    return data_dir() / GUARD_NAME


def settings_file() -> Path:
    return config_dir() / "settings.json"


def read_guard() -> dict:
    return json.loads(guard_file().read_text())


def write_guard(guard: dict) -> None:
    guard_file().write_text(json.dumps(guard))


def set_record(record: dict) -> None:
    data = json.loads(settings_file().read_text())
    data["pin"] = record
    settings_file().write_text(json.dumps(data))


def record() -> dict:
    return json.loads(settings_file().read_text())["pin"]


def state() -> str:
    """The PIN's state as the kiosk sees it after a restart (the real Kiosk, its store's own PIN manager)."""
    with Kiosk.open() as kiosk:
        return kiosk.pins.manager.state()


def unlock(pin: str):
    with Kiosk.open() as kiosk:
        return kiosk.pins.unlock(pin)


def assert_admin_locked(expected: str, *pins: str) -> None:
    """Administration locked for ``expected``: no PIN opens it (not even the right one), no stranger's first-start
    PIN is taken, and the way back is named."""
    with Kiosk.open() as kiosk:
        manager = kiosk.pins.manager
        assert manager.state() == expected
        assert kiosk.pins.locked_out
        with pytest.raises(PinRecordError, match="kiosk admin reset-pin"):
            kiosk.pins.is_set  # noqa: B018 (the property raises)
        for pin in pins or (PIN,):
            with pytest.raises(PinRecordError):
                kiosk.pins.unlock(pin)
        with pytest.raises(PinRecordError):
            kiosk.pins.set_first(ATTACKER, ATTACKER)


def lock_out() -> None:
    with Kiosk.open() as kiosk:
        results = [kiosk.pins.unlock("999999") for _ in range(5)]
        assert results[-1].locked_for > 0 and kiosk.pins.locked_for() > 0
    assert unlock(PIN).locked_for > 0  # even the right PIN waits


@pytest.fixture
def pin_set() -> None:
    with Kiosk.open() as kiosk:
        kiosk.pins.set_first(PIN, PIN)
    assert state() == OK and guard_file().is_file()


def reset_pin(monkeypatch, pin: str) -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{pin}\n{pin}\n"))
    return cli.main(["admin", "reset-pin"])


def other_kiosks_pin(tmp_path: Path) -> tuple[dict, dict]:
    """The record and the authentic guard of the attacker's PIN on a kiosk of their own (its own data key)."""
    with Kiosk.open(tmp_path / "other-data", config=tmp_path / "other-config") as other:
        other.pins.set_first(ATTACKER, ATTACKER)
    settings = json.loads((tmp_path / "other-config" / "settings.json").read_text())
    return settings["pin"], json.loads((tmp_path / "other-data" / GUARD_NAME).read_text())


# -- the guard --------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_deleting_the_guard_during_a_lockout_keeps_admin_locked(pin_set):
    lock_out()
    guard_file().unlink()
    assert_admin_locked(UNGUARDED)


@pytest.mark.slow
@pytest.mark.parametrize("edit", ["lock cleared, MAC kept", "lock cleared, MAC removed",
                                  "lock cleared, attacker's record, fingerprint recomputed"])
def test_editing_the_guard_locks_admin(pin_set, edit):
    lock_out()
    guard = dict(read_guard(), failures=0, lockouts=0, locked_until=0.0)
    if "MAC removed" in edit:
        guard.pop("mac", None)
    if "attacker's record" in edit:
        attackers = hash_pin(ATTACKER)
        set_record(attackers)
        guard.update(fingerprint=fingerprint(attackers), next=None)
    write_guard(guard)
    assert_admin_locked(UNAUTHENTICATED, PIN, ATTACKER)


@pytest.mark.slow
@pytest.mark.parametrize("forgery", ["a MAC made with another key", "another kiosk's guard and record"])
def test_a_guard_authenticated_with_another_key_locks_admin(pin_set, tmp_path, forgery):
    lock_out()
    if forgery == "a MAC made with another key":
        body = {k: v for k, v in read_guard().items() if k != "mac"}
        body.update(failures=0, lockouts=0, locked_until=0.0)
        text = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        write_guard(dict(body, mac=hmac.new(os.urandom(32), text, hashlib.sha256).hexdigest()))
    else:
        attackers, guard = other_kiosks_pin(tmp_path)
        assert "mac" in guard
        set_record(attackers)
        write_guard(guard)
    assert_admin_locked(UNAUTHENTICATED, PIN, ATTACKER)


# -- the record -------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("attackers", ["plain scrypt", "a pepper of their own"])
def test_the_attackers_record_with_the_guard_deleted_is_refused(pin_set, attackers):
    """The report: a replaced PIN record with the guard deleted let the attacker's PIN in."""
    set_record(hash_pin(ATTACKER) if attackers == "plain scrypt" else _peppered_elsewhere(ATTACKER))
    guard_file().unlink()
    assert_admin_locked(UNGUARDED, ATTACKER, PIN)
    assert not guard_file().exists()  # nothing was "trusted once" and guarded from then on


def _peppered_elsewhere(pin: str) -> dict:
    from kiosk.storage.pin import pepper_key  # noqa: PLC0415 (new in this change)
    return hash_pin(pin, pepper_key(os.urandom(32)))


def test_settings_json_alone_does_not_let_anyone_try_the_pins_offline(pin_set):
    """The report: from settings.json alone all 10^6 six-digit PINs could be tried offline (7.6 h on 2 cores).
    The record's hash is now of HMAC(pepper key, PIN): without the data key no PIN, not even the right one,
    can be checked against it."""
    stolen = record()
    assert stolen.get("pepper")  # the record says it needs the pepper ...
    plain = hashlib.scrypt(PIN.encode(), salt=bytes.fromhex(stolen["salt"]), n=stolen["n"], r=stolen["r"],
                           p=stolen["p"], dklen=len(bytes.fromhex(stolen["hash"])), maxmem=128 * 1024 * 1024)
    assert plain.hex() != stolen["hash"]  # ... scrypt of the right PIN is not the hash ...
    try:
        assert not verify_pin(PIN, stolen)  # ... and the kiosk's own check refuses to run without it
    except PinRecordError:
        pass
    from kiosk.storage.pin import pepper_key  # noqa: PLC0415 (new in this change)
    assert not verify_pin(PIN, stolen, pepper_key(os.urandom(32)))  # a guessed key does not do either
    assert verify_pin(PIN, stolen, pepper_key(read_key(key_path())))  # the data key does: it is the secret
    text = settings_file().read_text()  # the secret is kept apart from the settings file
    assert base64.b64encode(read_key(key_path())).decode() not in text and pepper_key(read_key(key_path())).hex() not in text


@pytest.mark.slow
def test_an_older_unpeppered_record_with_an_authentic_guard_opens_and_is_re_hashed(pin_set):
    legacy = hash_pin(PIN)  # plain scrypt, as an older version (or the fleet's code) writes it
    with Kiosk.open() as kiosk:
        store = kiosk.pins.manager.store
        set_record(legacy)
        store.save_guard(dict(read_guard(), fingerprint=fingerprint(legacy), next=None))  # vouched for, with the key
    assert state() == OK
    assert not unlock("999999").ok  # a wrong PIN is still wrong
    assert unlock(PIN).ok
    rehashed = record()
    assert rehashed.get("pepper") and rehashed["salt"] != legacy["salt"]
    assert fingerprint(rehashed) == read_guard()["fingerprint"] and state() == OK
    assert unlock(PIN).ok and not unlock(ATTACKER).ok


# -- the key ----------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_without_its_key_the_pin_cannot_be_checked_and_admin_stays_locked(tmp_path):
    key_file = tmp_path / "removable" / "data.key"
    create_key(key_file)

    def manager() -> PinManager:
        return PinManager(SettingsStore(), key_file=key_file)

    manager().set_pin(PIN, PIN)
    assert manager().check(PIN).ok
    saved = key_file.read_bytes()
    key_file.unlink()  # the medium is not there
    assert manager().state() == NO_KEY
    with pytest.raises(PinRecordError, match="data key.*missing.*key file is back"):
        manager().is_set  # noqa: B018
    with pytest.raises(PinRecordError):
        manager().check(PIN)
    with pytest.raises(PinRecordError):
        manager().set_pin(ATTACKER, ATTACKER)
    create_key(key_file)  # another key in its place: the guard does not check out with it
    assert manager().state() == UNAUTHENTICATED
    key_file.unlink()
    key_file.write_bytes(saved)
    key_file.chmod(0o600)
    assert manager().state() == OK and manager().check(PIN).ok  # the key back: as before


def test_storage_gives_the_pin_the_key_it_was_opened_with(tmp_path):
    """Storage.pin_manager: the key of the store's own places, not of the environment."""
    elsewhere = tmp_path / "elsewhere.key"
    with Kiosk.open(tmp_path / "d", config=tmp_path / "c", key_file=elsewhere) as kiosk:
        kiosk.pins.set_first(PIN, PIN)
        assert kiosk.pins.manager.store._key() == read_key(elsewhere)
    assert not key_path().exists()  # the default place was not used
    from kiosk.storage.pin import guard_authentic, guard_key  # noqa: PLC0415 (new in this change)
    assert guard_authentic(guard_key(read_key(elsewhere)), json.loads((tmp_path / "d" / GUARD_NAME).read_text()))


# -- the way back -----------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("damage", ["guard deleted", "guard edited", "record replaced, guard deleted",
                                    "guard without a MAC (an older version)", "guard with another key's MAC",
                                    "locked out"])
def test_reset_pin_recovers_with_an_authenticated_guard(pin_set, monkeypatch, capsys, damage):
    lock_out()
    guard = read_guard()
    if damage == "guard deleted":
        guard_file().unlink()
    elif damage == "guard edited":
        write_guard(dict(guard, failures=0, lockouts=0, locked_until=0.0))
    elif damage == "record replaced, guard deleted":
        set_record(hash_pin(ATTACKER))
        guard_file().unlink()
    elif damage == "guard without a MAC (an older version)":
        write_guard({k: v for k, v in guard.items() if k != "mac"})
    elif damage == "guard with another key's MAC":
        write_guard(dict(guard, mac=hashlib.sha256(b"forged").hexdigest()))
    assert reset_pin(monkeypatch, NEW) == 0
    assert "admin PIN set" in capsys.readouterr().out
    assert "mac" in read_guard() and record().get("pepper")
    from kiosk.storage.pin import guard_authentic, guard_key  # noqa: PLC0415 (new in this change)
    assert guard_authentic(guard_key(read_key(key_path())), read_guard())
    assert state() == OK
    assert unlock(NEW).ok and not unlock(PIN).ok and not unlock(ATTACKER).ok
    with Kiosk.open() as kiosk:
        assert kiosk.pins.locked_for() == 0
        assert (EVENT_PIN_SET, "reset from the command line") in [(e.kind, e.reason) for e in kiosk.audit.entries()]


@pytest.mark.slow
def test_deleting_both_the_record_and_the_guard_does_not_bring_back_the_first_start_page(pin_set, monkeypatch):
    """Whoever can write both folders deletes the record and the guard: the kiosk would look new, but its audit log
    (chained with the key) shows a PIN was set, so administration stays locked until the reset."""
    guard_file().unlink()
    data = json.loads(settings_file().read_text())
    del data["pin"]
    settings_file().write_text(json.dumps(data))
    with Kiosk.open() as kiosk:
        assert kiosk.pins.manager.state() == "unset"  # the files alone say "first start"
        assert kiosk.pins.locked_out
        with pytest.raises(PinRecordError, match="audit log shows a PIN set here.*kiosk admin reset-pin"):
            kiosk.pins.is_set  # noqa: B018 (the property raises)
        with pytest.raises(PinRecordError):
            kiosk.pins.set_first(ATTACKER, ATTACKER)
        assert kiosk.pins.manager.state() == "unset"  # nothing written
    assert reset_pin(monkeypatch, NEW) == 0
    assert unlock(NEW).ok and not unlock(ATTACKER).ok


def test_a_new_kiosk_still_gets_the_first_start_page():
    with Kiosk.open() as kiosk:
        assert kiosk.pins.is_set is False and not kiosk.pins.locked_out
        kiosk.pins.set_first(PIN, PIN)
        assert kiosk.pins.is_set
