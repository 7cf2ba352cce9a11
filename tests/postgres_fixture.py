"""A throw-away PostgreSQL cluster for the fleet tests and benchmarks/fleet.py.

``PgCluster.start()`` runs initdb and postgres from the server binaries found (KIOSK_PG_BINDIR, pg_config,
/usr/lib/postgresql/*/bin) on a free local port, with password (SCRAM) authentication; as root it runs
them as the unprivileged user ``nobody`` (PostgreSQL refuses to run as root). It creates the roles of the
README's recipe (docs/fleet_readme_section.md): the owner, the group role kiosk_fleet and two kiosk roles.
Where no server can be started the ``postgres_cluster`` fixture skips, saying why.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

ADMIN, OWNER, KIOSKS = "kiosk_admin", "kiosk_owner", ("kiosk_a", "kiosk_b")


def _bindir() -> Path | None:
    candidates = [os.environ.get("KIOSK_PG_BINDIR", "")]
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "postgres").is_file():
            return Path(c)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgUnavailable(RuntimeError):
    pass


class PgCluster:
    def __init__(self):
        self.bindir = _bindir()
        if self.bindir is None:
            raise PgUnavailable("no PostgreSQL server binaries (initdb, postgres) found: install Debian's 'postgresql' "
                                "package or set KIOSK_PG_BINDIR")
        self.prefix: list[str] = []
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            runuser = shutil.which("runuser") or shutil.which("setpriv")
            if runuser is None:
                raise PgUnavailable("running as root and neither runuser nor setpriv is there to start PostgreSQL as "
                                    "an unprivileged user")
            self.prefix = ([runuser, "-u", "nobody", "--"] if runuser.endswith("runuser")
                           else [runuser, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        self.root = Path(tempfile.mkdtemp(prefix="kiosk-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = _free_port()
        self.admin_password = uuid.uuid4().hex
        self.passwords = {name: uuid.uuid4().hex for name in (OWNER, *KIOSKS)}
        if self.prefix:
            os.chmod(self.root, 0o700)
            shutil.chown(self.root, "nobody", "nogroup")

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(self.prefix + [str(self.bindir / args[0]), *args[1:]], capture_output=True, text=True,
                                cwd=self.root, timeout=120)
        if check and result.returncode != 0:
            raise PgUnavailable(f"{args[0]} failed: {(result.stderr or result.stdout).strip()[-500:]}")
        return result

    def start(self) -> "PgCluster":
        pwfile = self.root / "pw"
        pwfile.write_text(self.admin_password + "\n")
        if self.prefix:
            shutil.chown(pwfile, "nobody", "nogroup")
        self._run("initdb", "-D", str(self.data), "-U", ADMIN, "--auth=scram-sha-256", f"--pwfile={pwfile}",
                  "-E", "UTF8", "--no-sync", "--locale=C")
        pwfile.unlink()
        self.start_server()
        self._roles()
        return self

    def start_server(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                  f"-c full_page_writes=off -c max_connections=60", "start")

    def stop_server(self, mode: str = "immediate") -> None:
        """``immediate``: as a crash (no clean shut-down); the connections drop at once."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def destroy(self) -> None:
        self.stop_server()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, user: str, database: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def admin(self, database: str = "postgres"):
        import psycopg
        return psycopg.connect(self.url(ADMIN, database), password=self.admin_password, autocommit=True)

    def _roles(self) -> None:
        from psycopg import sql
        with self.admin() as conn:
            for statement in setup_statements(OWNER, KIOSKS):
                conn.execute(statement)
            for name, password in self.passwords.items():
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))

    def new_database(self) -> str:
        """A fresh registry (database owned by the owner role, migrated): its name."""
        from kiosk.storage.fleet.pgconn import ConnectionConfig
        from kiosk.storage.fleet.registry import migrate
        name = f"kiosk_{uuid.uuid4().hex[:10]}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {OWNER}")
            conn.execute(f"REVOKE ALL ON DATABASE {name} FROM PUBLIC")
            conn.execute(f"GRANT CONNECT ON DATABASE {name} TO kiosk_fleet")
        with self.admin(name) as conn:  # as in the recipe: the owner owns the schema, kiosks only use it
            conn.execute(f"ALTER SCHEMA public OWNER TO {OWNER}")
            conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            conn.execute("GRANT USAGE ON SCHEMA public TO kiosk_fleet")
        migrate(ConnectionConfig(self.url(OWNER, name), self.passwords[OWNER]))
        return name


def setup_statements(owner: str, kiosks: tuple[str, ...]) -> list[str]:
    """The roles of the recipe in docs/fleet_readme_section.md (passwords are set apart, never in a URL)."""
    return [f"CREATE ROLE {owner} LOGIN", "CREATE ROLE kiosk_fleet NOLOGIN",
            *[f"CREATE ROLE {k} LOGIN IN ROLE kiosk_fleet" for k in kiosks]]


@pytest.fixture(scope="session")
def postgres_cluster():
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[test]')")
    try:
        cluster = PgCluster().start()
    except (PgUnavailable, OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"no PostgreSQL server could be started: {exc}")
    yield cluster
    cluster.destroy()


@pytest.fixture
def registry_db(postgres_cluster, monkeypatch):
    """A fresh registry; this process's kiosks connect as kiosk_a (the password from the environment)."""
    name = postgres_cluster.new_database()
    monkeypatch.setenv("KIOSK_DATABASE_PASSWORD", postgres_cluster.passwords["kiosk_a"])
    monkeypatch.delenv("KIOSK_DATABASE_URL", raising=False)
    return name


def wait_for(condition, timeout: float = 10.0, poll_s: float = 0.002) -> float:
    """Seconds until ``condition()`` held; AssertionError after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s")
        time.sleep(poll_s)
    return time.monotonic() - start


def audit_rows(cluster: PgCluster, database: str) -> list[tuple]:
    """(id, entry_uuid, kiosk_id, claimed_id) of every audit entry in the registry, in chain order."""
    with cluster.admin(database) as conn:
        return conn.execute("SELECT id, entry_uuid, kiosk_id, claimed_id FROM audit_log ORDER BY id").fetchall()


def start_kiosk(cluster: PgCluster, database: str, folder: Path, role: str, label: str, attempts: int,
                interval_s: float = 0.0, hold: bool = False) -> subprocess.Popen:
    """A kiosk process (kiosk_process below) logging as ``role`` with KIOSK_ID door-<label>."""
    import sys
    env = dict(os.environ, KIOSK_DATABASE_PASSWORD=cluster.passwords[role], KIOSK_ID=f"door-{label}")
    command = [sys.executable, __file__, str(folder), cluster.url(role, database), str(attempts), "--label", label,
               "--interval", str(interval_s)] + (["--hold"] if hold else [])
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)


def outage_run(cluster: PgCluster, database: str, root: Path, outage_s: float, attempts: int = 500) -> list[tuple]:
    """Two kiosk processes log ``attempts`` each, spread over the outage and 3 s more; the server is stopped
    (as a crash) 1 s in, for ``outage_s``; returns the registry's audit rows once both outboxes drained."""
    procs = [start_kiosk(cluster, database, root / label, role, label, attempts, (outage_s + 3) / attempts)
             for label, role in (("A", KIOSKS[0]), ("B", KIOSKS[1]))]
    for proc in procs:
        first = proc.stdout.readline()
        assert first.startswith("open online"), first
    time.sleep(1)
    cluster.stop_server()
    time.sleep(outage_s)
    cluster.start_server()
    for proc in procs:
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0 and "drained 0" in out, out
    return audit_rows(cluster, database)


# -- a kiosk process (tests and benchmarks/fleet.py start it as `python tests/postgres_fixture.py ...`) --------
def kiosk_process(folder: str, url: str, attempts: int, interval_s: float, label: str, hold: bool) -> None:
    """Open a fleet kiosk in ``folder``, verify-and-log ``attempts`` times (claimed IDs label-00000, ...),
    then wait until its outbox is empty (or, with ``hold``, sleep until killed)."""
    import sys

    import numpy as np

    from kiosk.storage import Storage
    storage = Storage.open(folder, url=url)
    print("open", storage.connection.state.value, flush=True)
    started = time.monotonic()
    for i in range(attempts):
        employee = storage.employees.get("E1")  # what verification reads: the local mirror
        refs = storage.employees.reference_features("E1") if employee else np.zeros((0, 0))
        verdict = "ACCEPT" if refs.size else "REJECT"
        storage.audit.record(f"{label}-{i:05d}", verdict, "face matches" if refs.size else "unknown ID", 0.9, mode="id")
        if interval_s:
            time.sleep(max(0.0, started + (i + 1) * interval_s - time.monotonic()))
    print(f"logged {attempts} in {time.monotonic() - started:.3f} s", flush=True)
    if hold:
        time.sleep(3600)
    deadline = time.monotonic() + 120
    while storage.outbox_pending() and time.monotonic() < deadline:
        time.sleep(0.1)
    print("drained", storage.outbox_pending(), flush=True)
    storage.close()
    sys.exit(0)


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("url")
    parser.add_argument("attempts", type=int)
    parser.add_argument("--interval", type=float, default=0.0)
    parser.add_argument("--label", default="K")
    parser.add_argument("--hold", action="store_true")
    a = parser.parse_args()
    kiosk_process(a.folder, a.url, a.attempts, a.interval, a.label, a.hold)
