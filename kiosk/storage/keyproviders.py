"""Where the data key is kept: four providers, and the key file that says which (issue #25 item 3).

The key file (``data.key`` in the config folder, or ``KIOSK_KEY_FILE``) holds either the key itself, base64 (the
``file`` provider: the kiosk's only way before), or, after its header comment, one JSON line naming where the key
is (a *locator*; nothing in it opens the data without the place it names):

============  ==========================================================  ======================================
provider      the key itself                                              a copy of the data and config folders
============  ==========================================================  ======================================
file          in the key file, base64                                     decrypts everything (same disk)
keyring       in the OS keyring, through the ``keyring`` package: Secret  decrypts nothing: the key is in the
              Service on Linux (GNOME Keyring, KWallet), the macOS        user's keyring, itself encrypted under
              Keychain, the Windows Credential Manager; entry             their login password (or the Keychain/
              ``siamese-kiosk`` / ``data-key-<key ID>``                   DPAPI), and only reachable in their session
passphrase    in the key file, AES-256-GCM under a key derived from a     decrypts nothing without the passphrase
              passphrase with scrypt (N=2^17, r=8, p=1)                   (unless a passphrase file is copied too)
systemd       in ``$CREDENTIALS_DIRECTORY/siamese-kiosk-data-key``, a     decrypts nothing when the credential is
              systemd credential (``LoadCredentialEncrypted=``, sealed    sealed to the machine's TPM2 (the chip
              with ``systemd-creds encrypt --with-key=tpm2``); read-only  stays behind); with the host key only,
                                                                          a copy of the whole root disk does
============  ==========================================================  ======================================

A new key goes to ``KIOSK_KEY_PROVIDER`` (default ``file``; ``systemd`` adopts the credential the unit passes);
``kiosk key migrate --to PROVIDER`` moves an existing key (kiosk.storage.keymigration). A key that cannot be had
is a KeyMissingError naming the provider and the way back (most often: the copy exported with ``kiosk key
export``, put back with ``kiosk key import``).

The passphrase comes from, in this order: the file named by ``KIOSK_KEY_PASSPHRASE_FILE`` (owner-only, its first
line), the systemd credential ``siamese-kiosk-key-passphrase``, or a prompt when the process runs at a terminal.
Never from an environment variable's value (child processes and ``/proc/PID/environ`` would carry it). An
unwrapped passphrase key is remembered for the life of the process (one prompt per start, one scrypt).
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from kiosk.storage.crypto import KEY_BYTES, KeyMissingError, key_id
from kiosk.storage.secretfile import read_secret_file

log = logging.getLogger(__name__)

FILE, KEYRING, PASSPHRASE, SYSTEMD = "file", "keyring", "passphrase", "systemd"
PROVIDERS = (FILE, KEYRING, PASSPHRASE, SYSTEMD)
LABELS = {FILE: "a plain key file", KEYRING: "the OS keyring", PASSPHRASE: "a passphrase-wrapped key file",
          SYSTEMD: "a systemd credential"}
PROVIDER_ENV = "KIOSK_KEY_PROVIDER"            # where a new key goes (default: file)
PASSPHRASE_FILE_ENV = "KIOSK_KEY_PASSPHRASE_FILE"
SERVICE = "siamese-kiosk"                      # the keyring's service name
CREDENTIAL = "siamese-kiosk-data-key"          # the systemd credential holding the key
PASSPHRASE_CREDENTIAL = "siamese-kiosk-key-passphrase"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 17, 8, 1   # 128 MiB, about 0.5-1 s: once per start
MIN_PASSPHRASE = 12
IMPORT_HINT = "kiosk key import COPY (the copy written by 'kiosk key export')"

FILE_HEADER = ("# Siamese Kiosk data key: keep it apart from the data folder and keep a copy of it in a safe place;\n"
               "# without it the reference photos and features cannot be read.\n")
_LOCATOR_HEADERS = {
    KEYRING: "# Siamese Kiosk data key: kept in the OS keyring, not in this file; this line says where.\n",
    PASSPHRASE: "# Siamese Kiosk data key, wrapped with a passphrase (scrypt, AES-256-GCM); without the passphrase\n"
                "# this file opens nothing.\n",
    SYSTEMD: "# Siamese Kiosk data key: a systemd credential, not in this file; this line says which.\n",
}
_COPY_HINT = "# Keep a copy of the key itself apart (kiosk key export); a lost key cannot be recovered.\n"
_WRAP_AAD = b"siamese-kiosk/data-key/1\0"

# the prompt (replaced in tests); asked only when stdin is a terminal
prompt = getpass.getpass
_unwrapped: dict[tuple[str, str], bytes] = {}   # (key file, its text) -> key: one passphrase per process
_unwrapped_lock = threading.Lock()


def forget_unwrapped() -> None:
    """Forget the passphrase-unwrapped keys of this process (tests; a re-read after a change of passphrase)."""
    with _unwrapped_lock:
        _unwrapped.clear()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text, what: str, path: Path) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError):
        raise KeyMissingError(f"the data key {path} is damaged ({what} is not base64); put back the copy you kept "
                              f"of it") from None


# -- the key file's text ---------------------------------------------------------------------------------------
def key_text(key: bytes) -> str:
    """The key file of the ``file`` provider: the key itself, base64."""
    return FILE_HEADER + _b64(key) + "\n"


def locator_text(locator: dict) -> str:
    """The key file of another provider: a header and one JSON line saying where the key is."""
    return _LOCATOR_HEADERS[locator["provider"]] + _COPY_HINT + json.dumps(locator, sort_keys=True) + "\n"


def parse(text: str, path: Path) -> tuple[str, bytes | dict]:
    """(FILE, the key) or (provider, its locator); KeyMissingError when the text is neither."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    last = lines[-1] if lines else ""
    if last.startswith("{"):
        try:
            locator = json.loads(last)
        except ValueError:
            locator = None
        if (not isinstance(locator, dict) or locator.get("provider") not in (KEYRING, PASSPHRASE, SYSTEMD)
                or not isinstance(locator.get("key_id"), str)):
            raise KeyMissingError(f"the data key {path} is damaged (it names no known key provider); put back the "
                                  f"copy you kept of it")
        return locator["provider"], locator
    try:
        key = base64.b64decode(last, validate=True) if last else b""
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyMissingError(f"the data key {path} is damaged (not a {KEY_BYTES}-byte key); put back the copy "
                              f"you kept of it")
    return FILE, key


def provider_of(text: str, path: Path) -> str:
    return parse(text, path)[0]


# -- loading and storing ----------------------------------------------------------------------------------------
def load(path: Path, text: str, passphrase: str | None = None, remembered: bool = True) -> bytes:
    """The key that the key file ``path`` (its ``text``) holds or names; KeyMissingError naming the provider and
    the way back when it cannot be had. ``remembered``: a passphrase key unwrapped earlier in this process is
    not unwrapped again (False: always from the place itself, to verify it)."""
    provider, value = parse(text, path)
    if provider == FILE:
        return value
    cache_key = (str(Path(path).absolute()), text)
    if provider == PASSPHRASE and remembered:
        with _unwrapped_lock:
            if cache_key in _unwrapped:
                return _unwrapped[cache_key]
    if provider == KEYRING:
        key = _keyring_load(path, value)
    elif provider == PASSPHRASE:
        key = _passphrase_load(path, value, passphrase)
    else:
        key = _systemd_load(path, value)
    if key_id(key) != value["key_id"]:
        raise KeyMissingError(f"{describe_place(value)} holds another key (ID {key_id(key)}) than the one the key "
                              f"file {path} names (ID {value['key_id']}); put back the right key: {IMPORT_HINT}")
    if provider == PASSPHRASE:
        with _unwrapped_lock:
            _unwrapped[cache_key] = key
    return key


def store(provider: str, key: bytes, path: Path, passphrase: str | None = None,
          credential: str = CREDENTIAL) -> str:
    """Put ``key`` in ``provider`` and return the key file's new text (not written here). The keyring gets its
    entry now; a passphrase wraps the key into the text; a systemd credential is only checked (read-only)."""
    if provider == FILE:
        return key_text(key)
    if provider == KEYRING:
        return locator_text(_keyring_store(key, path))
    if provider == PASSPHRASE:
        return locator_text(_passphrase_wrap(key, path, passphrase))
    if provider == SYSTEMD:
        locator = {"provider": SYSTEMD, "credential": credential, "key_id": key_id(key)}
        held = _systemd_load(path, locator)  # the credential must already hold this key (KeyMissingError says how)
        if held != key:
            raise KeyMissingError(f"the systemd credential '{credential}' holds another key (ID {key_id(held)}) than "
                                  f"this kiosk's (ID {key_id(key)}): encrypt this kiosk's key into it "
                                  f"({_systemd_encrypt_hint(credential)})")
        return locator_text(locator)
    raise KeyMissingError(f"unknown key provider {provider!r}; one of: {', '.join(PROVIDERS)}")


def discard(locator: dict | None) -> str:
    """Remove the key from the place ``locator`` names (None: the plain file, already replaced); returns a note
    for the admin (what was removed, or what they must remove themselves). Removing what is already gone is no
    error (a migration rerun after an interruption)."""
    provider = FILE if locator is None else locator["provider"]
    if provider == FILE:
        return ("the plain key file was replaced; copies made before (backups of the config folder, an old disk "
                "image) still hold the key")
    if provider == KEYRING:
        backend, name = _keyring_backend(None, locator)
        try:
            from keyring.errors import PasswordDeleteError  # noqa: PLC0415
            try:
                backend.delete_password(locator["service"], locator["entry"])
            except PasswordDeleteError:
                pass  # already gone
        except Exception as exc:  # noqa: BLE001 -- a backend's own error, named
            raise KeyMissingError(f"the old key's keyring entry '{locator['service']}' / '{locator['entry']}' could "
                                  f"not be removed ({_reason(exc)}); run the migration again") from None
        return f"the keyring entry '{locator['service']}' / '{locator['entry']}' ({name}) was removed"
    if provider == PASSPHRASE:
        return "the passphrase-wrapped key was replaced in the key file"
    name = locator.get("credential", CREDENTIAL)
    return (f"the systemd credential '{name}' is read-only here: remove its encrypted file (e.g. "
            f"/etc/credstore.encrypted/{name}) and the unit's LoadCredentialEncrypted= line yourself")


def describe_place(locator: dict | None) -> str:
    """Where a locator says the key is, in words."""
    if locator is None:
        return "the plain key file"
    provider = locator["provider"]
    if provider == KEYRING:
        return f"the OS keyring's entry '{locator.get('service')}' / '{locator.get('entry')}'"
    if provider == PASSPHRASE:
        return "the passphrase-wrapped key"
    return f"the systemd credential '{locator.get('credential', CREDENTIAL)}'"


# -- the OS keyring ---------------------------------------------------------------------------------------------
def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _trusted(backend) -> bool:
    """A keyring that keeps the key away from the disk's plain files: a recommended backend (priority 1 or more),
    not keyrings.alt's plain or password files, and for the chainer every backend it chains."""
    module = type(backend).__module__
    if module.startswith("keyrings.alt") or module.endswith((".fail", ".null")):
        return False
    if module.endswith(".chainer"):
        chained = list(getattr(backend, "backends", []))
        return bool(chained) and all(_trusted(b) for b in chained)
    try:
        return float(backend.priority) >= 1
    except Exception:  # noqa: BLE001 -- a backend that cannot say is not used
        return False


def _keyring_backend(path: Path | None, locator: dict | None = None, storing: bool = False):
    """(the keyring backend, its name); KeyMissingError where no trustworthy keyring can be reached."""
    where = describe_place(locator) if locator else "the OS keyring"
    of = f" of {path}" if path else ""
    unreachable = _unstorable if storing else _unreachable
    try:
        import keyring  # noqa: PLC0415 -- only kiosks whose key is in the keyring load it
        import keyring.core  # noqa: PLC0415
    except ImportError:
        raise KeyMissingError(f"the data key{of} is kept in {where}, and the 'keyring' package is not installed "
                              f"here: pip install keyring") from None
    try:
        keyring.core.init_backend()  # detected now: the session (D-Bus) may have come or gone since the last time
        backend = keyring.get_keyring()
    except Exception as exc:  # noqa: BLE001 -- a backend's own error, named
        raise KeyMissingError(unreachable(path, where, _reason(exc))) from None
    name = f"{type(backend).__module__}.{type(backend).__qualname__}"
    if not _trusted(backend):
        raise KeyMissingError(unreachable(path, where, f"the keyring package found no OS keyring, only {name}"))
    return backend, name


def _unreachable(path: Path | None, where: str, reason: str) -> str:
    of = f" of {path}" if path else ""
    return (f"the data key{of} is kept in {where}, and no OS keyring can be reached here ({reason}). Run the kiosk "
            f"in the session of the user whose keyring holds it (on Linux: a D-Bus session with an unlocked Secret "
            f"Service such as GNOME Keyring or KWallet; a copy of the disk alone opens nothing). If that keyring is "
            f"lost, put the key back from the copy you exported: {IMPORT_HINT}")


def _unstorable(path: Path | None, where: str, reason: str) -> str:
    return (f"the data key cannot be put in the OS keyring here ({reason}); nothing was changed. Run this in a "
            f"session with an unlocked keyring (on Linux: a D-Bus session with a Secret Service such as GNOME Keyring "
            f"or KWallet), or choose another provider ({PROVIDER_ENV}, kiosk key migrate --to)")


def _keyring_load(path: Path, locator: dict) -> bytes:
    backend, name = _keyring_backend(path, locator)
    service, entry = str(locator.get("service", SERVICE)), str(locator.get("entry", ""))
    try:
        value = backend.get_password(service, entry)
    except Exception as exc:  # noqa: BLE001 -- a locked keyring, a D-Bus error: named
        raise KeyMissingError(_unreachable(path, describe_place(locator), _reason(exc))) from None
    if value is None:
        raise KeyMissingError(
            f"the data key of {path} is kept in the OS keyring ({name}), and it holds no entry '{service}' / "
            f"'{entry}': the entry was deleted, or this is another user's or another machine's keyring (a copy of "
            f"the data and config folders opens nothing without the keyring it came from). Log in as the user whose "
            f"keyring holds it and start again, or put the key back from the copy you exported: {IMPORT_HINT}")
    key = _unb64(value, "the keyring's entry", path)
    if len(key) != KEY_BYTES:
        raise KeyMissingError(f"the keyring's entry '{service}' / '{entry}' is damaged (not a {KEY_BYTES}-byte "
                              f"key); put the key back from the copy you exported: {IMPORT_HINT}")
    return key


def _keyring_store(key: bytes, path: Path) -> dict:
    backend, name = _keyring_backend(path, storing=True)
    locator = {"provider": KEYRING, "service": SERVICE, "entry": f"data-key-{key_id(key)}", "key_id": key_id(key)}
    try:
        backend.set_password(SERVICE, locator["entry"], _b64(key))
    except Exception as exc:  # noqa: BLE001
        raise KeyMissingError(f"the data key could not be written to the OS keyring ({name}: {_reason(exc)}); "
                              f"nothing was changed") from None
    log.info("the data key %s is in the OS keyring (%s), entry %s / %s", key_id(key), name, SERVICE,
             locator["entry"])
    return locator


# -- a passphrase ------------------------------------------------------------------------------------------------
def _interactive() -> bool:
    stdin = sys.stdin
    try:
        return stdin is not None and stdin.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _credential_file(name: str) -> Path | None:
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(folder) / name if folder else None


def passphrase_source() -> str:
    """Where a passphrase would come from now, in words (for messages)."""
    if os.environ.get(PASSPHRASE_FILE_ENV):
        return f"the file {os.environ[PASSPHRASE_FILE_ENV]} ({PASSPHRASE_FILE_ENV})"
    file = _credential_file(PASSPHRASE_CREDENTIAL)
    if file is not None and file.exists():
        return f"the systemd credential '{PASSPHRASE_CREDENTIAL}'"
    return "the terminal" if _interactive() else "nowhere"


def _passphrase_from_file(file: Path, what: str) -> str:
    text = read_secret_file(file, what, KeyMissingError)
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise KeyMissingError(f"{what} {file} is empty: its first line is the passphrase")
    return lines[0]


def get_passphrase(path: Path, new: bool = False) -> str:
    """The passphrase for the key file ``path``: KIOSK_KEY_PASSPHRASE_FILE, the systemd credential, or the
    terminal (a new one asked twice); KeyMissingError when none can be had."""
    named = os.environ.get(PASSPHRASE_FILE_ENV)
    credential = _credential_file(PASSPHRASE_CREDENTIAL)
    if named:
        passphrase = _passphrase_from_file(Path(named).expanduser(), f"the data key's passphrase file "
                                                                     f"({PASSPHRASE_FILE_ENV})")
    elif credential is not None and credential.exists():
        passphrase = _passphrase_from_file(credential, "the systemd credential")
    elif _interactive():
        passphrase = prompt(f"{'New passphrase' if new else 'Passphrase'} for the kiosk's data key {path}: ")
        if new and prompt("Repeat the passphrase: ") != passphrase:
            raise KeyMissingError("the two passphrases differ; nothing was changed")
    else:
        raise KeyMissingError(
            f"the data key {path} is wrapped with a passphrase, and none was given: run at a terminal (it asks), or "
            f"name an owner-only file holding it in {PASSPHRASE_FILE_ENV}, or pass it as the systemd credential "
            f"'{PASSPHRASE_CREDENTIAL}'")
    if new and len(passphrase) < MIN_PASSPHRASE:
        raise KeyMissingError(f"a passphrase of at least {MIN_PASSPHRASE} characters is needed; nothing was changed")
    return passphrase


def _kdf(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def _passphrase_wrap(key: bytes, path: Path, passphrase: str | None) -> dict:
    passphrase = passphrase if passphrase is not None else get_passphrase(path, new=True)
    salt, nonce = os.urandom(16), os.urandom(12)
    kid = key_id(key)
    wrapped = AESGCM(_kdf(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)).encrypt(nonce, key,
                                                                                   _WRAP_AAD + kid.encode())
    return {"provider": PASSPHRASE, "key_id": kid, "kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
            "salt": _b64(salt), "nonce": _b64(nonce), "wrapped": _b64(wrapped), "cipher": "aes-256-gcm"}


def _passphrase_load(path: Path, locator: dict, passphrase: str | None) -> bytes:
    n, r, p = locator.get("n"), locator.get("r"), locator.get("p")
    if (locator.get("kdf") != "scrypt" or not all(isinstance(v, int) for v in (n, r, p))
            or not (2 <= n <= 2 ** 20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16)):
        raise KeyMissingError(f"the data key {path} is damaged (its key-derivation parameters); put back the copy "
                              f"you kept of it")
    salt, nonce, wrapped = (_unb64(locator.get(k, ""), k, path) for k in ("salt", "nonce", "wrapped"))
    given = passphrase is not None
    passphrase = passphrase if given else get_passphrase(path)
    try:
        return AESGCM(_kdf(passphrase, salt, n, r, p)).decrypt(nonce, wrapped,
                                                               _WRAP_AAD + locator["key_id"].encode())
    except (InvalidTag, ValueError):
        source = "the passphrase given" if given else f"the passphrase from {passphrase_source()}"
        raise KeyMissingError(
            f"{source} does not open the data key {path} (a wrong passphrase, or the file was altered). Give the "
            f"right one; a forgotten passphrase cannot be recovered: put the key back from the copy you exported: "
            f"{IMPORT_HINT}") from None


# -- a systemd credential -----------------------------------------------------------------------------------------
def _systemd_encrypt_hint(name: str) -> str:
    return (f"kiosk key export | systemd-creds encrypt --with-key=tpm2 --name={name} - "
            f"/etc/credstore.encrypted/{name}, and LoadCredentialEncrypted={name} in the kiosk's unit")


def _systemd_load(path: Path, locator: dict) -> bytes:
    name = str(locator.get("credential", CREDENTIAL))
    if "/" in name or name in ("", ".", ".."):
        raise KeyMissingError(f"the data key {path} is damaged (credential name {name!r})")
    file = _credential_file(name)
    if file is None:
        raise KeyMissingError(
            f"the data key of {path} is the systemd credential '{name}', and this process was not given it "
            f"(CREDENTIALS_DIRECTORY is not set): start the kiosk from its unit (LoadCredentialEncrypted={name}), or a "
            f"command with systemd-run --pipe --wait -p LoadCredentialEncrypted={name} ... If the credential is lost, "
            f"put the key back from the copy you exported: {IMPORT_HINT}")
    text = read_secret_file(file, "the data key's systemd credential", KeyMissingError, encoding="ascii",
                            missing_ok=True)
    if text is None:
        raise KeyMissingError(
            f"the data key of {path} is the systemd credential '{name}', and this process's credentials "
            f"({file.parent}) do not hold it: add LoadCredentialEncrypted={name} to the kiosk's unit "
            f"({_systemd_encrypt_hint(name)}). If the credential is lost, put the key back from the copy you "
            f"exported: {IMPORT_HINT}")
    provider, key = parse(text, file)
    if provider != FILE:
        raise KeyMissingError(f"the systemd credential {file} does not hold a key ({_systemd_encrypt_hint(name)})")
    return key


def systemd_credential_key(name: str = CREDENTIAL) -> bytes | None:
    """The key the systemd credential ``name`` holds, or None when this process has no such credential."""
    file = _credential_file(name)
    if file is None or not file.exists():
        return None
    return _systemd_load(file, {"provider": SYSTEMD, "credential": name, "key_id": ""})


# -- what the admin is told -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyPlace:
    """Where this store's data key is, for Admin and ``kiosk key status`` (nothing secret)."""

    provider: str          # FILE, KEYRING, PASSPHRASE, SYSTEMD, or "" (no key yet)
    same_disk: bool        # a copy of the disk with the data decrypts it
    line: str              # one line for the admin
    unfinished: str = ""   # a migration under way: its target provider


def same_filesystem(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` (or their nearest existing parents) are on one file system."""
    def device(path: Path) -> int | None:
        path = Path(path).absolute()
        for candidate in (path, *path.parents):
            try:
                return os.stat(candidate).st_dev
            except OSError:
                continue
        return None
    da, db = device(a), device(b)
    return da is None or db is None or da == db



def journal_path(key_file: Path) -> Path:
    """The record of a migration under way, beside the key file (kiosk.storage.keymigration)."""
    key_file = Path(key_file)
    return key_file.with_name(key_file.name + ".migration")


def describe(key_file: Path, data: Path) -> KeyPlace:
    """Where the data key of the store in ``data`` is, from its key file alone (no keyring or passphrase is asked:
    this says where, not whether it opens)."""
    key_file = Path(key_file)
    unfinished = ""
    try:
        unfinished = str(json.loads(journal_path(key_file).read_text(encoding="utf-8")).get("to", ""))
    except (OSError, ValueError, AttributeError):
        pass
    try:
        text = read_secret_file(key_file, "the data key", KeyMissingError, encoding="ascii", missing_ok=True)
        if text is None:
            return KeyPlace("", False, f"No data key yet at {key_file}.", unfinished)
        provider, locator = parse(text, key_file)
    except KeyMissingError as exc:
        return KeyPlace("", False, str(exc), unfinished)
    if provider == FILE:
        same = same_filesystem(key_file, data)
        if same:
            line = (f"A plain key file, {key_file}: the key is on the same disk as the data, so a copy of the disk "
                    f"decrypts every face. 'kiosk key migrate --to keyring' (or passphrase, systemd) moves it off.")
        else:
            line = (f"A plain key file on another file system than the data ({key_file}): it protects the data only "
                    f"while that medium is kept apart from the kiosk's disk.")
    elif provider == KEYRING:
        same = False
        line = (f"In the OS keyring, entry '{locator.get('service')}' / '{locator.get('entry')}': a copy of the data "
                f"and config folders decrypts nothing without this user's keyring.")
    elif provider == PASSPHRASE:
        named = os.environ.get(PASSPHRASE_FILE_ENV)
        same = bool(named) and same_filesystem(Path(named).expanduser(), data)
        line = (f"Wrapped with a passphrase (scrypt, AES-256-GCM) in {key_file}: a copy of the disk decrypts nothing "
                f"without the passphrase.")
        if same:
            line += (f" But the passphrase file {named} is on the same disk as the data: a copy of the disk with it "
                     f"decrypts everything.")
    else:
        same = False
        line = (f"The systemd credential '{locator.get('credential', CREDENTIAL)}': a copy of the disk decrypts "
                f"nothing when the credential is sealed to this machine's TPM2 (systemd-creds --with-key=tpm2).")
    wanted = os.environ.get(PROVIDER_ENV, "").strip().lower()
    if wanted and wanted != provider and wanted in PROVIDERS and not unfinished:
        line += f" {PROVIDER_ENV} asks for {wanted}: run 'kiosk key migrate --to {wanted}'."
    if unfinished:
        line += f" A move of the key to {unfinished} is unfinished: run 'kiosk key migrate --to {unfinished}' again."
    return KeyPlace(provider, same, line, unfinished)
