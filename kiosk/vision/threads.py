"""How many threads torch and OpenCV use: one home for the rule, applied by the app and the CLI at start and
measured by the speed benchmark, idle and with one core kept busy (benchmarks/speed.py --busy-core).

A kiosk PC also runs the GUI, the capture thread and whatever else its owner installed. torch's OpenMP threads
wait for each other at every layer: with one of 2 cores taken by another process, 2 torch threads took 139 ms
a frame against 34 ms with 1. OpenCV's own pool (detection) does not collapse that way and halves detection on
an idle machine. Measured on this 2-core machine (median per frame, 30 LFW frames):

    torch / OpenCV threads     1/1     1/2     2/1     2/2
    idle                      32.2    25.1    30.7    21.7 ms
    one core busy             33.9    33.5    86.9   139.0 ms

So: one torch thread (KIOSK_THREADS sets another count, e.g. on a dedicated many-core box), and OpenCV on
every core this process may use.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

DEFAULT_TORCH_THREADS = 1
THREADS_VARIABLE = "KIOSK_THREADS"


def app_threads() -> int:
    """torch's intra-op threads in the app: KIOSK_THREADS when it is a positive whole number, else 1."""
    value = os.environ.get(THREADS_VARIABLE, "").strip()
    if not value:
        return DEFAULT_TORCH_THREADS
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        log.warning("%s=%r is not a positive whole number: using %d torch thread", THREADS_VARIABLE, value,
                    DEFAULT_TORCH_THREADS)
        return DEFAULT_TORCH_THREADS
    return threads


def opencv_threads() -> int:
    """OpenCV's threads: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def set_threads(torch_threads: int | None = None) -> int:
    """Apply the rule (torch: ``torch_threads`` or app_threads(); OpenCV: opencv_threads()); returns torch's count."""
    import cv2
    import torch

    torch_threads = torch_threads or app_threads()
    torch.set_num_threads(torch_threads)
    cv2.setNumThreads(opencv_threads())
    log.debug("threads: torch %d, OpenCV %d", torch_threads, opencv_threads())
    return torch_threads
