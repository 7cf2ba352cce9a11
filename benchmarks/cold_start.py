"""Cold start, side by side: `kiosk verify A B` (a fresh process each time: Python, torch, the face network, two
photos, one verdict) against the same one-pair check with face_recognition (dlib), and `kiosk --help`.

Prints the median and the spread of ``--runs`` wall-clock runs of each (issue #24 asks for <= 1.5 s median of 5
for `kiosk verify`). Where the time goes: ``python -X importtime -m kiosk.cli verify A B``.

    python benchmarks/cold_start.py [--runs 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from kiosk.paths import datasets_dir

# face_recognition's own one-pair check, as its users write it (the peer has no one-shot CLI for two files)
_PEER = ("import sys, face_recognition as fr\n"
         "a, b = (fr.face_encodings(fr.load_image_file(p))[0] for p in sys.argv[1:3])\n"
         "print(fr.face_distance([a], b)[0])\n")


def photos() -> tuple[Path, Path]:
    folder = datasets_dir() / "lfw" / "lfw-deepfunneled" / "Colin_Powell"
    found = sorted(folder.glob("*.jpg"))[:2]
    if len(found) < 2:
        sys.exit(f"no LFW photos under {folder} (set KIOSK_DATASETS)")
    return found[0], found[1]


def wall(command: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        times.append(time.perf_counter() - start)
        if done.returncode not in (0, 1):  # 0 ACCEPT, 1 REJECT
            sys.exit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    a, b = photos()
    kiosk = [sys.executable, "-m", "kiosk.cli"]
    cases = {"kiosk verify A B": kiosk + ["verify", str(a), str(b)],
             "kiosk --help": kiosk + ["--help"],
             "python -c pass (the floor)": [sys.executable, "-c", "pass"],
             "import torch (our floor)": [sys.executable, "-c", "import torch"]}
    try:
        import face_recognition  # noqa: F401, PLC0415
        cases["face_recognition, one pair"] = [sys.executable, "-c", _PEER, str(a), str(b)]
    except ImportError:
        print("face_recognition not installed: the peer's row is left out (README: --peer)")
    results = {}
    print(f"machine {platform.machine()}, Python {platform.python_version()}, {args.runs} runs each, wall clock (s)")
    print(f"{'':<30}{'median':>8}{'min':>8}{'max':>8}")
    for name, command in cases.items():
        wall(command, 1)  # the first run fills the OS page cache; cold here means a fresh process
        times = wall(command, args.runs)
        results[name] = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
                         "runs": times}
        print(f"{name:<30}{results[name]['median_s']:>8.2f}{min(times):>8.2f}{max(times):>8.2f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.machine(), "runs": args.runs, "results": results},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
