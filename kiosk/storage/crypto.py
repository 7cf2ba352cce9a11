"""Sealing biometric data: AES-256-GCM from the ``cryptography`` package.

A sealed item is ``FORMAT + nonce (12 random bytes) + ciphertext + tag (16 bytes)``. The GCM tag is the
item's checksum: a keyed one, so whoever can change the data folder cannot make a changed item pass, and
every read verifies it. The associated data names what the item is and whose it is (purpose, employee ID,
photo file name), so a sealed photo or feature vector moved to another row or another employee, or a
feature vector put where a photo belongs, does not open.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kiosk.storage.db import StorageError

FORMAT = b"SKE1"   # Siamese Kiosk Encrypted, version 1
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


class DamagedDataError(StorageError):
    """A sealed item does not open: changed, truncated, moved from another row, or another key."""


class KeyMissingError(StorageError):
    """The data key cannot be had: its file is missing, unreadable or wrong, or the place its file names (the OS
    keyring, a passphrase, a systemd credential) does not give it (kiosk.storage.keys, kiosk.storage.keyproviders)."""


def photo_aad(employee_id: str, file: str) -> bytes:
    return b"siamese-kiosk/photo/1\0" + employee_id.encode("utf-8") + b"\0" + file.encode("utf-8")


def features_aad(employee_id: str, file: str) -> bytes:
    return b"siamese-kiosk/features/1\0" + employee_id.encode("utf-8") + b"\0" + file.encode("utf-8")


def key_id(key: bytes) -> str:
    """A public name for a key (recorded in the database, so a wrong key file is recognised as such)."""
    return hmac.new(key, b"siamese-kiosk key id", hashlib.sha256).hexdigest()[:16]


class Sealer:
    def __init__(self, key: bytes):
        if len(key) != KEY_BYTES:
            raise ValueError(f"the data key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(key)
        self.key_id = key_id(key)

    def seal(self, data: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return FORMAT + nonce + self._aead.encrypt(nonce, data, aad)

    def open(self, sealed: bytes, aad: bytes, what: str = "data") -> bytes:
        """The plain bytes; DamagedDataError naming ``what`` if the item was changed or is not ours."""
        sealed = bytes(sealed)
        head = len(FORMAT) + NONCE_BYTES
        if len(sealed) < head + TAG_BYTES or not sealed.startswith(FORMAT):
            raise DamagedDataError(f"{what} is damaged (not a sealed item)")
        try:
            return self._aead.decrypt(sealed[len(FORMAT):head], sealed[head:], aad)
        except InvalidTag:
            raise DamagedDataError(f"{what} is damaged or was altered (its checksum does not match)") from None
