"""Fleet benchmark (#14): two kiosks on one throw-away PostgreSQL registry.

Prints (1) the propagation delay: enrol at kiosk A, until kiosk B's copy accepts the employee (and a deletion
until B refuses them); (2) the storage side of verification with 2 kiosk processes on one server: attempts a
second, each reading the employee's references from its copy and logging the verdict through its outbox into
the registry (the face network's time, benchmarks/speed.py, comes on top); (3) the outage bar: the server
killed for OUTAGE s (default 60) while two kiosk processes log 500 attempts each: the audit trail must then
hold exactly 1,000 entries, each kiosk's in order, none twice.

    .venv/bin/python benchmarks/fleet.py [--outage 60] [--rounds 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from postgres_fixture import KIOSKS, PgCluster, audit_rows, outage_run, start_kiosk, wait_for  # noqa: E402

from kiosk.storage import NewPhoto, Storage  # noqa: E402


def propagation(cluster: PgCluster, database: str, root: Path, rounds: int) -> None:
    url = cluster.url(KIOSKS[0], database)
    a, b = Storage.open(root / "a", url=url), Storage.open(root / "b", url=url)
    rng = np.random.default_rng(0)
    enrol, delete = [], []
    try:
        for i in range(rounds):
            photo = NewPhoto(rng.integers(0, 255, (160, 120, 3), dtype=np.uint8), rng.standard_normal(128).astype("f4"))
            start = time.monotonic()
            a.employees.enrol(f"E{i}", "Bench", [photo], "model")
            enrol.append(time.monotonic() - start + wait_for(lambda: b.employees.reference_features(f"E{i}").size > 0))
            start = time.monotonic()
            a.employees.delete(f"E{i}")
            delete.append(time.monotonic() - start + wait_for(lambda: b.employees.get(f"E{i}") is None))
    finally:
        a.close()
        b.close()
    for name, values in (("enrolled at A, accepted at B", enrol), ("deleted at A, refused at B", delete)):
        print(f"propagation, {name}: median {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms "
              f"({len(values)} rounds; bar 5 s)")


def throughput(cluster: PgCluster, database: str, root: Path, attempts: int) -> None:
    url = cluster.url(KIOSKS[0], database)
    seed = Storage.open(root / "seed", url=url)
    rng = np.random.default_rng(1)
    seed.employees.enrol("E1", "Bench", [NewPhoto(rng.integers(0, 255, (160, 120, 3), dtype=np.uint8),
                                                  rng.standard_normal(128).astype("f4"))], "model")
    seed.close()
    before = len(audit_rows(cluster, database))
    start = time.monotonic()
    procs = [start_kiosk(cluster, database, root / f"t{label}", role, f"T{label}", attempts)
             for label, role in (("A", KIOSKS[0]), ("B", KIOSKS[1]))]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    wall = time.monotonic() - start
    logged = [float(line.split()[3]) for out in outputs for line in out.splitlines() if line.startswith("logged")]
    written = len(audit_rows(cluster, database)) - before
    print(f"throughput, 2 kiosk processes: {attempts} attempts each; logging took {logged[0]:.2f} s and "
          f"{logged[1]:.2f} s ({attempts / logged[0]:.0f} and {attempts / logged[1]:.0f} attempts/s per kiosk); "
          f"all {written} in the registry {wall:.2f} s after start ({written / wall:.0f} entries/s end to end, "
          f"process start-up included)")


def outage(cluster: PgCluster, database: str, root: Path, seconds: float) -> None:
    start = time.monotonic()
    rows = outage_run(cluster, database, root, seconds, 500)
    uuids = {r[1] for r in rows}
    in_order = all([r[3] for r in rows if r[2] == f"door-{k}"] == [f"{k}-{i:05d}" for i in range(500)] for k in "AB")
    print(f"outage of {seconds:g} s while 2 kiosks logged 500 attempts each: {len(rows)} entries in the registry, "
          f"{len(uuids)} distinct, each kiosk's in order: {in_order} ({time.monotonic() - start:.0f} s in all)")
    if len(rows) != 1000 or len(uuids) != 1000 or not in_order:
        raise SystemExit("the outage bar is NOT met")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=60.0, help="seconds the server is down (default 60)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--attempts", type=int, default=2000, help="attempts per kiosk for the throughput")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kiosk-fleet-bench-"))
    for var in ("KIOSK_DATA_DIR", "KIOSK_CONFIG_DIR", "KIOSK_LOG_DIR"):
        os.environ[var] = str(root / var.lower())
    cluster = PgCluster().start()
    try:
        os.environ["KIOSK_DATABASE_PASSWORD"] = cluster.passwords[KIOSKS[0]]
        propagation(cluster, cluster.new_database(), root, args.rounds)
        throughput(cluster, cluster.new_database(), root, args.attempts)
        outage(cluster, cluster.new_database(), root, args.outage)
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
