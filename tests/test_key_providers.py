"""The data key off the data disk (issue #25 item 3): key providers chosen by a setting, a resumable migration
between them, a lost key that says which provider and the way back, and a wrong key never recorded.

Reported: "A copied disk decrypts every face. The data key is a base64 line in the config folder (0600) on the
same disk. Fifteen lines of `cryptography` decrypted 3/3 photos and 3/3 features from the copied folders."
``attack`` below is those fifteen lines: every 32-byte base64 token in the copied folders tried as the AES-GCM
key of every sealed photo and feature vector. It opens everything of the plain file (the control) and nothing
of the keyring's or the passphrase's store.

The keyring test runs against a real Secret Service: GNOME Keyring on a throw-away D-Bus session bus, both started
here (Debian's gnome-keyring and dbus, installed by .ci/run), bounded in time, and skipped with the reason where
they cannot start.
"""

from __future__ import annotations

import base64
import os
import re
import select
import shutil
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kiosk import cli
from kiosk.app import Kiosk, key_place, key_place_line
from kiosk.paths import config_dir, data_dir
from kiosk.storage import KeyMissingError, NewPhoto, Storage, keymigration, keyproviders
from kiosk.storage.crypto import features_aad, key_id, photo_aad
from kiosk.storage.keys import create_key, key_path, read_key

pytestmark = pytest.mark.reliability

PASSPHRASE = "correct horse battery staple"
DIM = 16


@pytest.fixture(autouse=True)
def quick_scrypt(monkeypatch):
    """Scrypt at N=2^14 (the product's 2^17 is a second on a busy core); nothing remembered across tests."""
    monkeypatch.setattr(keyproviders, "SCRYPT_N", 2 ** 14)
    for var in (keyproviders.PROVIDER_ENV, keyproviders.PASSPHRASE_FILE_ENV, "CREDENTIALS_DIRECTORY", "KIOSK_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)
    keyproviders.forget_unwrapped()
    yield
    keyproviders.forget_unwrapped()


def secret(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.fixture
def passphrase_file(tmp_path, monkeypatch) -> Path:
    path = secret(tmp_path / "passphrase", PASSPHRASE + "\n")
    monkeypatch.setenv(keyproviders.PASSPHRASE_FILE_ENV, str(path))
    return path


def features_of(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def make_store(people: int = 3) -> None:
    storage = Storage.open()
    try:
        for i in range(people):
            image = np.random.default_rng(i).integers(0, 255, (40, 30, 3), dtype=np.uint8)
            storage.employees.enrol(f"E{i}", f"Person {i}", [NewPhoto(image, features_of(i))], "model-a")
    finally:
        storage.close()


def open_features(data: Path | None = None, config: Path | None = None) -> list[np.ndarray]:
    storage = Storage.open(data, readonly=True, config=config)
    try:
        return [storage.employees.reference_features(e.id)[0] for e in storage.employees.search()]
    finally:
        storage.close()


def attack(data: Path, config: Path) -> tuple[int, int, int]:
    """The issue's attacker on copied folders: (sealed references, photos opened, features opened)."""
    candidates = set()
    for file in [*data.rglob("*"), *config.rglob("*")]:
        if file.is_file():
            for token in re.findall(rb"[A-Za-z0-9+/]{43}=", file.read_bytes()):
                raw = base64.b64decode(token)
                if len(raw) == 32:
                    candidates.add(raw)
    conn = sqlite3.connect(f"file:{data / 'kiosk.sqlite3'}?mode=ro", uri=True)
    rows = conn.execute("SELECT employee_id, file, features FROM reference_photos WHERE encrypted = 1").fetchall()
    conn.close()

    def opens(sealed: bytes, aad: bytes) -> bool:
        for key in candidates:
            try:
                AESGCM(key).decrypt(sealed[4:16], sealed[16:], aad)
                return True
            except InvalidTag:
                continue
        return False
    photos = sum(opens((data / "photos" / file).read_bytes(), photo_aad(eid, file)) for eid, file, _ in rows)
    features = sum(opens(bytes(blob), features_aad(eid, file)) for eid, file, blob in rows)
    return len(rows), photos, features


def place_now() -> keyproviders.KeyPlace:
    return keyproviders.describe(key_path(), data_dir())


def copy_folders(tmp_path: Path) -> tuple[Path, Path]:
    data, config = tmp_path / "copy" / "data", tmp_path / "copy" / "config"
    shutil.copytree(data_dir(), data, ignore=shutil.ignore_patterns("kiosk.lock"))
    shutil.copytree(config_dir(), config)
    return data, config


# -- the plain file: the control, and what the admin is told -------------------------------------------------------
def test_the_plain_file_is_the_fallback_and_admin_says_the_key_is_on_the_same_disk(tmp_path):
    make_store()
    assert attack(*copy_folders(tmp_path)) == (3, 3, 3)  # the attack works on the plain file ...
    place = place_now()
    assert place.provider == "file" and place.same_disk
    assert "the key is on the same disk" in place.line and "kiosk key migrate --to keyring" in place.line
    with Kiosk.open(readonly=True) as kiosk:
        assert "the key is on the same disk" in key_place_line(kiosk.storage)
    assert cli.main(["key", "status"]) == 0


# -- a passphrase -------------------------------------------------------------------------------------------------
def test_with_a_passphrase_a_copy_decrypts_nothing_and_the_right_passphrase_opens_it(tmp_path, passphrase_file,
                                                                                      monkeypatch):
    monkeypatch.setenv(keyproviders.PROVIDER_ENV, "passphrase")
    make_store()
    text = key_path().read_text()
    assert '"provider": "passphrase"' in text and keyproviders.provider_of(text, key_path()) == "passphrase"
    data, config = copy_folders(tmp_path)
    assert attack(data, config) == (3, 0, 0)  # ... and opens nothing here
    place = place_now()  # the passphrase file of this test is on the data's disk: said so
    assert place.provider == "passphrase" and place.same_disk and "passphrase file" in place.line
    keyproviders.forget_unwrapped()
    monkeypatch.delenv(keyproviders.PASSPHRASE_FILE_ENV)
    place = place_now()
    assert place.provider == "passphrase" and not place.same_disk and "decrypts nothing" in place.line
    with pytest.raises(KeyMissingError, match="wrapped with a passphrase, and none was given.*KIOSK_KEY_PASSPHRASE"):
        Storage.open(data, config=config)
    secret(tmp_path / "wrong", "not the passphrase at all\n")
    monkeypatch.setenv(keyproviders.PASSPHRASE_FILE_ENV, str(tmp_path / "wrong"))
    with pytest.raises(KeyMissingError, match="does not open the data key.*forgotten passphrase.*kiosk key import"):
        Storage.open(data, config=config)
    (tmp_path / "wrong").chmod(0o644)
    with pytest.raises(KeyMissingError, match="may be read by others .*chmod 600"):
        Storage.open(data, config=config)
    monkeypatch.setenv(keyproviders.PASSPHRASE_FILE_ENV, str(passphrase_file))
    for got, want in zip(open_features(data, config), [features_of(i) for i in range(3)]):
        np.testing.assert_array_equal(got, want)


def test_the_passphrase_is_asked_once_at_a_terminal_and_as_a_systemd_credential(tmp_path, passphrase_file,
                                                                                monkeypatch):
    monkeypatch.setenv(keyproviders.PROVIDER_ENV, "passphrase")
    make_store(1)
    keyproviders.forget_unwrapped()
    monkeypatch.delenv(keyproviders.PASSPHRASE_FILE_ENV)
    asked = []
    monkeypatch.setattr(keyproviders, "_interactive", lambda: True)
    monkeypatch.setattr(keyproviders, "prompt", lambda text: asked.append(text) or PASSPHRASE)
    storage = Storage.open()  # reads the key twice (the sealer, the audit chain's key) and the PIN's: one prompt
    storage.close()
    assert len(asked) == 1 and str(key_path()) in asked[0]
    keyproviders.forget_unwrapped()
    monkeypatch.setattr(keyproviders, "_interactive", lambda: False)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    secret(credentials / keyproviders.PASSPHRASE_CREDENTIAL, PASSPHRASE)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    np.testing.assert_array_equal(open_features()[0], features_of(0))
    assert len(asked) == 1


def test_a_new_passphrase_must_be_long_enough_and_typed_twice_alike(tmp_path, monkeypatch):
    make_store(1)
    monkeypatch.setattr(keyproviders, "_interactive", lambda: True)
    answers = iter(["short", "short"])
    monkeypatch.setattr(keyproviders, "prompt", lambda text: next(answers))
    with pytest.raises(KeyMissingError, match="at least 12 characters"):
        keymigration.migrate(key_path(), "passphrase", data_dir())
    answers = iter([PASSPHRASE, PASSPHRASE + "!"])
    with pytest.raises(KeyMissingError, match="differ"):
        keymigration.migrate(key_path(), "passphrase", data_dir())
    assert keyproviders.provider_of(key_path().read_text(), key_path()) == "file"
    assert not keyproviders.journal_path(key_path()).exists()


# -- the migration: resumable, never losing the key -----------------------------------------------------------------
class Interrupted(BaseException):
    """The process dies here (a power cut, kill -9): nothing after this step runs."""


def interrupt_at(monkeypatch, step: str) -> None:
    def hook(done: str) -> None:
        if done == step:
            raise Interrupted(step)
    monkeypatch.setattr(keymigration, "after_step", hook)


def key_now() -> bytes:
    keyproviders.forget_unwrapped()
    return read_key(key_path())


@pytest.mark.parametrize("step", [keymigration.WRITTEN, keymigration.SWITCHED, keymigration.CLEANED])
def test_a_migration_file_to_passphrase_and_back_interrupted_at_each_step_resumes_and_never_loses_the_key(
        step, passphrase_file, monkeypatch):
    make_store(2)
    key = read_key(key_path())
    for target in ("passphrase", "file"):
        interrupt_at(monkeypatch, step)
        with pytest.raises(Interrupted):
            keymigration.migrate(key_path(), target, data_dir())
        assert keyproviders.journal_path(key_path()).exists()
        assert key_now() == key  # interrupted: the key file still gives the key (old place or new)
        np.testing.assert_array_equal(open_features()[1], features_of(1))
        other = "keyring" if target == "file" else "file"
        with pytest.raises(KeyMissingError, match=f"a move of the data key to {target} is unfinished.*"
                                                  f"kiosk key migrate --to {target}"):
            keymigration.migrate(key_path(), other, data_dir())
        assert f"A move of the key to {target} is unfinished" in place_now().line
        monkeypatch.setattr(keymigration, "after_step", lambda done: None)
        result = keymigration.migrate(key_path(), target, data_dir())  # run again: it finishes
        assert result.target == target and result.key_id == key_id(key)
        assert not keyproviders.journal_path(key_path()).exists()
        assert keyproviders.provider_of(key_path().read_text(), key_path()) == target
        assert key_now() == key
        assert (key_path().read_text().count(base64.b64encode(key).decode()) == 1) == (target == "file")
        Storage.open().close()
        assert keymigration.migrate(key_path(), target, data_dir()).notes[0].startswith("the key is already")


def test_the_cli_migrates_exports_and_imports_and_a_forgotten_passphrase_is_recovered_from_the_copy(
        tmp_path, passphrase_file, monkeypatch, capsys):
    make_store(2)
    key = read_key(key_path())
    copy = tmp_path / "safe" / "data.key"
    copy.parent.mkdir()
    assert cli.main(["key", "export", "--out", str(copy)]) == 0
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600 and read_key(copy) == key
    assert cli.main(["key", "export", "--out", str(copy)]) == cli.EXIT_BAD_INPUT  # never over a file
    assert cli.main(["key", "migrate", "--to", "passphrase"]) == 0
    assert "is in passphrase now" in capsys.readouterr().out
    assert cli.main(["key", "status"]) == 0 and "Wrapped with a passphrase" in capsys.readouterr().out
    # the passphrase forgotten: the kiosk names the way back, and the exported copy is put back under a new one
    keyproviders.forget_unwrapped()
    secret(passphrase_file, "a passphrase nobody remembers\n")
    assert cli.main(["check"]) == cli.EXIT_BAD_INPUT and "kiosk key import" in capsys.readouterr().err
    secret(passphrase_file, "the new passphrase, written down\n")
    assert cli.main(["key", "import", str(copy)]) == 0
    assert key_now() == key and keyproviders.provider_of(key_path().read_text(), key_path()) == "passphrase"
    np.testing.assert_array_equal(open_features()[0], features_of(0))
    other = tmp_path / "other.key"
    create_key(other, "file")
    assert cli.main(["key", "import", str(other)]) == cli.EXIT_BAD_INPUT  # another key is never put in place
    assert "not this store's" in capsys.readouterr().err
    assert key_now() == key


# -- a systemd credential -------------------------------------------------------------------------------------------
def test_a_systemd_credential_is_read_from_credentials_directory_and_its_absence_names_the_unit(tmp_path,
                                                                                                monkeypatch):
    make_store(2)
    key = read_key(key_path())
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    with pytest.raises(KeyMissingError, match="CREDENTIALS_DIRECTORY is not set"):
        keymigration.migrate(key_path(), "systemd", data_dir())  # read-only: the unit must give it first
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    with pytest.raises(KeyMissingError, match="do not hold it: add LoadCredentialEncrypted=siamese-kiosk-data-key"):
        keymigration.migrate(key_path(), "systemd", data_dir())
    secret(credentials / keyproviders.CREDENTIAL, keymigration.export_key(key_path(), data_dir()))
    result = keymigration.migrate(key_path(), "systemd", data_dir())
    assert "read-only here" not in " ".join(result.notes)  # from the plain file: nothing to remove by hand
    assert '"provider": "systemd"' in key_path().read_text() and base64.b64encode(key) not in key_path().read_bytes()
    np.testing.assert_array_equal(open_features()[1], features_of(1))
    assert "TPM2" in place_now().line
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(KeyMissingError, match="systemd credential 'siamese-kiosk-data-key', and this process was not "
                                              "given it.*kiosk key import"):
        Storage.open()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    secret(credentials / keyproviders.CREDENTIAL, keyproviders.key_text(os.urandom(32)))
    with pytest.raises(KeyMissingError, match="holds another key"):
        Storage.open()
    secret(credentials / keyproviders.CREDENTIAL, keyproviders.key_text(key))
    back = keymigration.migrate(key_path(), "file", data_dir())
    assert "remove its encrypted file" in back.notes[0] and read_key(key_path()) == key


def test_a_first_start_with_the_systemd_provider_adopts_the_credential_or_says_how_to_make_one(tmp_path,
                                                                                               monkeypatch):
    monkeypatch.setenv(keyproviders.PROVIDER_ENV, "systemd")
    with pytest.raises(KeyMissingError, match="makes no key.*systemd-creds encrypt"):
        Storage.open()
    assert not key_path().exists()
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    key = os.urandom(32)
    secret(credentials / keyproviders.CREDENTIAL, keyproviders.key_text(key))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    make_store(1)
    assert read_key(key_path()) == key and base64.b64encode(key) not in key_path().read_bytes()
    monkeypatch.setenv(keyproviders.PROVIDER_ENV, "tpm")
    with pytest.raises(KeyMissingError, match="is no key provider"):
        create_key(tmp_path / "another.key")


# -- the key file itself ----------------------------------------------------------------------------------------------
def test_a_damaged_locator_or_an_unknown_provider_is_a_damaged_key_file():
    make_store(1)
    for text in ('{"provider": "tpm", "key_id": "x"}\n', "{not json\n", '{"provider": "keyring"}\n'):
        secret(key_path(), text)
        with pytest.raises(KeyMissingError, match="is damaged"):
            Storage.open()


def test_a_wrong_key_is_never_recorded_and_the_right_key_still_opens_the_store():
    """Smaller things: "A wrong key gets its ID recorded, after which the right key is refused"."""
    make_store(2)
    right = key_path().read_bytes()
    conn = sqlite3.connect(data_dir() / "kiosk.sqlite3")
    conn.execute("DELETE FROM meta WHERE key = 'key_id'")  # a store that lost the record of its key's ID
    conn.commit()
    conn.close()
    key_path().unlink()
    create_key(key_path(), "file")  # a wrong key in place of the right one
    wrong = key_id(read_key(key_path()))
    for readonly in (True, False):
        with pytest.raises(KeyMissingError, match=rf"\(ID {wrong}\) does not open the 2 sealed .*was not recorded"):
            Storage.open(readonly=readonly)
    conn = sqlite3.connect(data_dir() / "kiosk.sqlite3")
    assert conn.execute("SELECT value FROM meta WHERE key = 'key_id'").fetchall() == []
    conn.close()
    key_path().write_bytes(right)  # the right key: accepted, and recorded now
    storage = Storage.open()
    try:
        assert storage.db.meta("key_id") == key_id(read_key(key_path())) != wrong
        np.testing.assert_array_equal(storage.employees.reference_features("E1")[0], features_of(1))
    finally:
        storage.close()


# -- the OS keyring, against a real Secret Service ------------------------------------------------------------------
_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""
START_S = 20.0  # the bus and the keyring daemon must be up within this, else the test skips


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def secret_service(tmp_path_factory):
    """A throw-away session bus (no service activation) with GNOME Keyring's Secret Service on it, its login
    keyring unlocked; the bus address. Skips, saying why, where either cannot start."""
    for program in ("dbus-daemon", "gnome-keyring-daemon"):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed (Debian: apt-get install gnome-keyring dbus; .ci/run does)")
    try:
        import secretstorage
        from jeepney.io.blocking import open_dbus_connection
    except ImportError as exc:
        pytest.skip(f"the keyring package's Secret Service client is missing ({exc}): pip install keyring")
    root = tmp_path_factory.mktemp("secret-service")
    for sub in ("home", "runtime"):
        (root / sub).mkdir(mode=0o700)
    config = root / "bus.conf"
    config.write_text(_BUS_CONFIG.format(socket=root / "bus"))
    bus = subprocess.Popen(["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    daemon = None
    try:
        ready, _, _ = select.select([bus.stdout], [], [], START_S)
        address = bus.stdout.readline().strip() if ready else ""
        if not address:
            pytest.skip(f"the D-Bus session bus did not start: {bus.stderr.read(2000) if bus.poll() else 'no address'}")
        env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS=address, HOME=str(root / "home"),
                   XDG_RUNTIME_DIR=str(root / "runtime"), XDG_DATA_HOME=str(root / "home" / "data"))
        daemon = subprocess.Popen(["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        daemon.stdin.write(b"throw-away login password")
        daemon.stdin.close()
        deadline = time.monotonic() + START_S
        while True:  # until the daemon owns org.freedesktop.secrets on our bus (or gives up)
            if daemon.poll() is not None:
                pytest.skip(f"gnome-keyring-daemon ended ({daemon.returncode}): {daemon.stderr.read(2000)!r}")
            conn = open_dbus_connection(bus=address)
            try:
                if secretstorage.check_service_availability(conn):
                    break
            finally:
                conn.close()
            if time.monotonic() > deadline:
                pytest.skip(f"gnome-keyring-daemon's Secret Service did not appear within {START_S:g} s")
            time.sleep(0.05)
        yield address
    finally:
        if daemon is not None:
            _stop(daemon)
        _stop(bus)


@pytest.fixture
def keyring_session(secret_service, monkeypatch) -> str:
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", secret_service)
    return secret_service


def keyring_entry(entry: str) -> str | None:
    import keyring
    keyring.core.init_backend()
    return keyring.get_password(keyproviders.SERVICE, entry)


@pytest.mark.slow
def test_with_the_keyring_a_copy_of_the_data_and_config_folders_alone_decrypts_nothing(
        keyring_session, untrained_engine, good_photos, tmp_path, monkeypatch):
    from kiosk.io.imageio import read_image

    monkeypatch.setenv(keyproviders.PROVIDER_ENV, "keyring")
    photos = good_photos("Tony_Blair", 2)
    with Kiosk.open() as kiosk:  # a real face enrolled, as Admin > Employees does
        kiosk.admin.enrol(untrained_engine, "0001", "Tony Blair", [(read_image(photos[0]), photos[0].name)])
        kiosk.admin.enrol(untrained_engine, "0002", "Tony Blair again", [(read_image(photos[1]), photos[1].name)])
        place = key_place(kiosk.storage)
        stored = kiosk.storage.employees.reference_features("0001")[0]
    assert place.provider == "keyring" and not place.same_disk and "decrypts nothing" in place.line
    key = read_key(key_path())
    entry = f"data-key-{key_id(key)}"
    assert keyring_entry(entry) == base64.b64encode(key).decode()
    data, config = copy_folders(tmp_path)
    assert base64.b64encode(key) not in b"".join(p.read_bytes() for p in [*data.rglob("*"), *config.rglob("*")]
                                                 if p.is_file())
    assert attack(data, config) == (2, 0, 0)  # the fifteen lines open nothing

    # the copy alone, where no Secret Service is: a clear error, naming the keyring and the way back
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")
    for readonly in (True, False):
        with pytest.raises(KeyMissingError, match=r"kept in the OS keyring's entry 'siamese-kiosk' / 'data-key-.*no "
                                                  r"OS keyring can be reached.*kiosk key import"):
            Storage.open(data, readonly=readonly, config=config)

    # with the keyring present, the same copy opens: photos and features decrypt
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", keyring_session)
    storage = Storage.open(data, readonly=True, config=config)
    try:
        assert storage.health.ok
        [reference] = storage.employees.references("0001")
        assert storage.employees.load_photo(reference).ndim == 3
        np.testing.assert_array_equal(storage.employees.reference_features("0001")[0], stored)
    finally:
        storage.close()


@pytest.mark.slow
def test_keyring_migration_and_a_lost_entry(keyring_session, tmp_path, capsys):
    make_store(2)
    key = read_key(key_path())
    copy = tmp_path / "kept.key"
    assert cli.main(["key", "export", "--out", str(copy)]) == 0
    assert cli.main(["key", "migrate", "--to", "keyring"]) == 0
    entry = f"data-key-{key_id(key)}"
    assert keyring_entry(entry) is not None and base64.b64encode(key) not in key_path().read_bytes()
    np.testing.assert_array_equal(open_features()[0], features_of(0))

    import keyring
    keyring.delete_password(keyproviders.SERVICE, entry)  # the entry lost (another user's keyring, a new machine)
    with pytest.raises(KeyMissingError, match=rf"holds no entry 'siamese-kiosk' / '{entry}'.*Log in as the user "
                                              r"whose keyring holds it.*kiosk key import"):
        Storage.open()
    assert cli.main(["key", "import", str(copy)]) == 0  # back into the keyring the key file names
    assert keyring_entry(entry) == base64.b64encode(key).decode()
    np.testing.assert_array_equal(open_features()[1], features_of(1))

    result = keymigration.migrate(key_path(), "file", data_dir())  # and back: the keyring's entry is removed
    assert read_key(key_path()) == key and keyring_entry(entry) is None
    assert "was removed" in result.notes[0]
    capsys.readouterr()


@pytest.mark.slow
def test_the_security_page_shows_where_the_key_is(qtbot):
    from PySide6.QtWidgets import QTabWidget

    from kiosk.qt.admin_tab import AdminTab

    with Kiosk.open() as kiosk:
        tab = AdminTab(kiosk.pins, QTabWidget(), admin=kiosk.admin)
        qtbot.addWidget(tab)
        assert "the key is on the same disk" in tab.key_place.text()
