"""How a kiosk reaches the fleet registry (PostgreSQL, through psycopg 3): the URL, the credentials, TLS.

- The URL names the server, the database and the role: ``postgresql://kiosk_a@db.example/kiosk``, from
  ``--database`` or ``KIOSK_DATABASE_URL``. A password written into the URL is refused: URLs end up in
  logs, shell histories and process lists. It comes from ``KIOSK_DATABASE_PASSWORD``, from the file named
  by ``KIOSK_DATABASE_PASSWORD_FILE`` (readable by its owner only, else refused), or from libpq's own
  ``~/.pgpass`` / ``PGPASSFILE`` (which libpq itself requires to be 0600).
- TLS: ``?sslmode=verify-full&sslrootcert=...`` in the URL, or ``KIOSK_DATABASE_SSLMODE``;
  ``KIOSK_DATABASE_REQUIRE_TLS=1`` refuses any sslmode weaker than ``require``.
- ``ConnectionConfig.safe_url`` is what logs and messages show: never a password.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from kiosk.storage.db import StorageError
from kiosk.storage.secretfile import read_secret_file

URL_ENV = "KIOSK_DATABASE_URL"
PASSWORD_ENV = "KIOSK_DATABASE_PASSWORD"
PASSWORD_FILE_ENV = "KIOSK_DATABASE_PASSWORD_FILE"
SSLMODE_ENV = "KIOSK_DATABASE_SSLMODE"
REQUIRE_TLS_ENV = "KIOSK_DATABASE_REQUIRE_TLS"
_TLS_MODES = ("require", "verify-ca", "verify-full")
CONNECT_TIMEOUT_S = 3


class RegistryUnavailableError(StorageError):
    """The fleet registry (PostgreSQL) cannot be reached now; the kiosk works on from its local copy."""


def is_registry_url(url: str | None) -> bool:
    return bool(url) and urlsplit(url).scheme in ("postgresql", "postgres")


def database_url(explicit: str | None = None) -> str | None:
    """The registry's URL: ``explicit`` (--database), else KIOSK_DATABASE_URL; None: the embedded store."""
    url = explicit or os.environ.get(URL_ENV) or None
    if url and not is_registry_url(url):
        raise StorageError(f"the database URL must start with postgresql:// (got {redact(url)!r}); leave it unset "
                           f"for the embedded store")
    return url


def redact(url: str) -> str:
    """The URL without any password (for logs and messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def read_password_file(path: str | Path) -> str:
    """The first line of an owner-only file; StorageError when others may read it or it cannot be read
    (kiosk.storage.secretfile)."""
    text = read_secret_file(Path(path).expanduser(), "the database password file")
    return text.splitlines()[0].strip() if text.strip() else ""


@dataclass(frozen=True)
class ConnectionConfig:
    url: str
    password: str | None = None
    sslmode: str | None = None

    @classmethod
    def from_url(cls, url: str) -> "ConnectionConfig":
        parts = urlsplit(url)
        if parts.password is not None:
            raise StorageError(f"{redact(url)}: do not put the password in the database URL (it would be shown in "
                               f"logs); set {PASSWORD_ENV} or {PASSWORD_FILE_ENV} (a file only its owner may read)")
        password = os.environ.get(PASSWORD_ENV) or None
        if password is None and os.environ.get(PASSWORD_FILE_ENV):
            password = read_password_file(os.environ[PASSWORD_FILE_ENV])
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        sslmode = query.get("sslmode") or os.environ.get(SSLMODE_ENV) or None
        if os.environ.get(REQUIRE_TLS_ENV, "").strip() in ("1", "true", "yes") and sslmode not in _TLS_MODES:
            raise StorageError(f"{REQUIRE_TLS_ENV} is set but the connection to {redact(url)} would not require TLS "
                               f"(sslmode={sslmode or 'prefer'}); use sslmode=verify-full (or require)")
        return cls(url, password, sslmode)

    @property
    def safe_url(self) -> str:
        return redact(self.url)

    def connect(self, autocommit: bool = False, timeout: int = CONNECT_TIMEOUT_S):
        """A new psycopg connection; RegistryUnavailableError when the server cannot be reached, StorageError
        when it refuses us (credentials, privileges)."""
        import psycopg  # noqa: PLC0415 -- only fleet kiosks need the driver loaded

        kwargs = {"connect_timeout": timeout, "application_name": "siamese-kiosk", "autocommit": autocommit}
        if self.password is not None:
            kwargs["password"] = self.password
        if self.sslmode is not None:
            kwargs["sslmode"] = self.sslmode
        try:
            return psycopg.connect(self.url, **kwargs)
        except psycopg.OperationalError as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "password authentication failed" in text or "no password supplied" in text or "permission" in text:
                raise StorageError(f"the registry {self.safe_url} refused this kiosk: {text}") from None
            raise RegistryUnavailableError(f"the registry {self.safe_url} cannot be reached: {text}") from None
