"""How a kiosk reaches the fleet registry (PostgreSQL, through psycopg 3): the URL, the credentials, TLS.

- The URL names the server, the database and the role: ``postgresql://kiosk_a@db.example/kiosk``, from
  ``--database`` or ``KIOSK_DATABASE_URL``. A password written into the URL is refused: URLs end up in
  logs, shell histories and process lists. It comes from ``KIOSK_DATABASE_PASSWORD``, from the file named
  by ``KIOSK_DATABASE_PASSWORD_FILE`` (readable by its owner only, else refused), or from libpq's own
  ``~/.pgpass`` / ``PGPASSFILE`` (which libpq itself requires to be 0600).
- TLS: ``?sslmode=verify-full&sslrootcert=...`` in the URL, or ``KIOSK_DATABASE_SSLMODE``;
  ``KIOSK_DATABASE_REQUIRE_TLS=1`` refuses any sslmode weaker than ``require``.
- ``ConnectionConfig.safe_url`` is what logs and messages show: never a password.
- A silent network never hangs a caller (#25): every connection has a connect timeout, TCP keepalives and
  ``tcp_user_timeout`` (a dead peer), a server-side ``statement_timeout`` and
  ``idle_in_transaction_session_timeout``; and since a path that stays open but passes nothing (a stuck proxy,
  a half-dead NAT) answers the kernel's keepalives, the kiosk's own work on a connection runs under a
  ``Watchdog`` that cuts the socket when no statement completed for ``stall_s``: the blocked call then fails
  with psycopg.OperationalError (the registry is away) instead of waiting for ever.
"""

from __future__ import annotations

import os
import socket
import threading
import time
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
STATEMENT_TIMEOUT_MS = 5000        # server side: no statement of a kiosk runs longer (locks waited for included)
IDLE_IN_TRANSACTION_MS = 15000     # server side: a kiosk gone mid-transaction releases its locks
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 3, "keepalives_interval": 1, "keepalives_count": 3,
              "tcp_user_timeout": 6000}  # libpq: a peer gone silent at the TCP level is noticed in ~6 s
STALL_S = 5.0                      # the Watchdog: no statement completed for this long, the connection is cut


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

    def connect(self, autocommit: bool = False, timeout: float = CONNECT_TIMEOUT_S,
                statement_timeout_ms: int = STATEMENT_TIMEOUT_MS):
        """A new psycopg connection; RegistryUnavailableError when the server cannot be reached, StorageError
        when it refuses us (credentials, privileges). ``statement_timeout_ms`` 0: none (migrations)."""
        import psycopg  # noqa: PLC0415 -- only fleet kiosks need the driver loaded

        kwargs = {"connect_timeout": max(1, int(round(timeout))), "application_name": "siamese-kiosk",
                  "autocommit": autocommit, **KEEPALIVES, "cursor_factory": _watched_cursor,
                  "options": f"-c statement_timeout={int(statement_timeout_ms)} "
                             f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"}
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


_WATCHED: list = []


def _watched_cursor(*args, **kwargs):
    """The connections' cursor factory: a psycopg.Cursor that tells the connection's Watchdog of each completed
    statement (the class is made on first use: psycopg is loaded lazily)."""
    if not _WATCHED:
        import psycopg  # noqa: PLC0415

        class WatchedCursor(psycopg.Cursor):
            def execute(self, *a, **k):
                result = super().execute(*a, **k)
                Watchdog.progress(self.connection)
                return result

            def executemany(self, *a, **k):
                result = super().executemany(*a, **k)
                Watchdog.progress(self.connection)
                return result
        _WATCHED.append(WatchedCursor)
    return _WATCHED[0](*args, **kwargs)


def sever(conn) -> None:
    """Cut ``conn``'s socket (shutdown, not close: libpq still owns the descriptor), so that a call blocked on
    it returns with an error at once."""
    try:
        fd = conn.pgconn.socket
        dup = socket.socket(fileno=os.dup(fd))
    except Exception:  # noqa: BLE001 -- already closed
        return
    try:
        dup.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        dup.close()


class Watchdog:
    """``with Watchdog(conn, stall_s=5, deadline_s=None):`` cuts the connection when no statement completed
    for ``stall_s`` or the block ran past ``deadline_s`` (``fired`` says so). One thread per block."""

    _active: dict[int, "Watchdog"] = {}
    _lock = threading.Lock()

    def __init__(self, conn, stall_s: float = STALL_S, deadline_s: float | None = None):
        self.conn, self.stall_s = conn, stall_s
        self.deadline = None if deadline_s is None else time.monotonic() + deadline_s
        self.fired = False
        self._last = time.monotonic()
        self._done = threading.Event()

    @classmethod
    def progress(cls, conn) -> None:
        dog = cls._active.get(id(conn))
        if dog is not None:
            dog._last = time.monotonic()

    def __enter__(self) -> "Watchdog":
        with Watchdog._lock:
            Watchdog._active[id(self.conn)] = self
        threading.Thread(target=self._watch, name="kiosk-registry-watchdog", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        with Watchdog._lock:
            if Watchdog._active.get(id(self.conn)) is self:
                del Watchdog._active[id(self.conn)]

    def _watch(self) -> None:
        while not self._done.wait(0.1):
            now = time.monotonic()
            if now - self._last > self.stall_s or (self.deadline is not None and now > self.deadline):
                self.fired = True
                sever(self.conn)
                return
