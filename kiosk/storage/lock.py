"""One writer per data folder: an OS lock (``fcntl.flock``) on the data folder itself, and on ``kiosk.lock``
in it.

The lock that counts is the folder's: a folder that holds the database cannot be removed from under a writer,
whereas ``kiosk.lock`` can be deleted while its holder runs, and a second writer then created a new file and
locked that one. ``kiosk.lock`` still carries the holder's process ID (for the refusal message) and is locked
too, so that a kiosk of an older version, which locks only the file, and this one still exclude each other.

A process that writes (the kiosk app, a ``kiosk`` command that changes the store) takes the lock when it
opens the store and keeps it until the store is closed; the kernel drops it when the process dies, even
on ``kill -9``, so a crash never leaves a stale lock behind. A second writer is refused at once with the
holder's process ID (written into the lock file). Read-only users take no lock.

Several ``Storage`` objects of ONE process share the lock (a per-process count), because the lock is
about processes: flock would otherwise refuse the second open of the same file in the same process.

Plain ``fcntl`` rather than the ``filelock`` package: we need the holder's PID in the refusal message
(filelock's native lock does not record it), a lock held for the process's life rather than around a
block with time-outs, and nothing else; that is a few lines on the kiosk's platforms (Linux, macOS).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kiosk.io.files import PRIVATE_FILE
from kiosk.storage.db import StorageError

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows): no OS lock, said once in the log
    fcntl = None

log = logging.getLogger(__name__)

LOCK_NAME = "kiosk.lock"


class StoreInUseError(StorageError):
    """Another live process writes to the same data folder."""

    def __init__(self, folder: Path, pid: int | None):
        who = f"process {pid}" if pid else "another process"
        super().__init__(f"data folder {folder} is in use by {who} (another kiosk or a 'kiosk' command that "
                         f"writes); only one may write at a time: close it first, then try again")
        self.folder, self.pid = folder, pid


@dataclass
class _Held:
    fd: int           # kiosk.lock
    folder_fd: int    # the data folder: the lock that cannot be deleted from under us
    count: int
    acquired_ns: int  # files with an mtime up to this were written before we took the lock


_held: dict[str, _Held] = {}
_guard = threading.Lock()


class WriterLock:
    """This process's hold on a data folder's writer lock; ``release()`` once (later calls do nothing)."""

    def __init__(self, folder: Path, key: str, acquired_ns: int):
        self.folder, self._key, self.acquired_ns = folder, key, acquired_ns
        self._released = False

    def release(self) -> None:
        with _guard:
            if self._released:
                return
            self._released = True
            held = _held.get(self._key)
            if held is None:
                return
            held.count -= 1
            if held.count == 0:
                del _held[self._key]
                os.close(held.fd)  # closing the last descriptors drops the flocks
                if held.folder_fd >= 0:
                    os.close(held.folder_fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        return int(text.split()[0]) if text else None
    except (OSError, ValueError, IndexError):
        return None


def acquire_writer_lock(folder: str | Path) -> WriterLock:
    """Take the folder's writer lock (or share this process's hold); StoreInUseError if another has it."""
    folder = Path(folder)
    key = os.path.realpath(folder)
    with _guard:
        held = _held.get(key)
        if held is None:
            folder_fd = _lock_folder(folder)
            try:
                fd = _lock_file(folder)
            except BaseException:
                if folder_fd >= 0:
                    os.close(folder_fd)
                raise
            held = _Held(fd, folder_fd, 0, _clock_past(fd))
            _held[key] = held
        held.count += 1
        return WriterLock(folder, key, held.acquired_ns)


def _clock_past(fd: int) -> int:
    """The file-system time at which we hold the lock, returned only once that clock has moved past it: every
    file written before has an mtime up to the value, every file this process writes afterwards a later one
    (file times come from a coarse clock, so a file written just before could otherwise share our tick)."""
    taken = os.fstat(fd).st_mtime_ns
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        os.utime(fd)
        if os.fstat(fd).st_mtime_ns > taken:
            break
        time.sleep(0.001)
    return taken


def _holder(folder: Path) -> int | None:
    """The process ID written in ``kiosk.lock`` (None if the file is gone or says none); never creates it."""
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        return _read_pid(fd)
    finally:
        os.close(fd)


def _lock_folder(folder: Path) -> int:
    """A descriptor of the data folder, exclusively flocked; StoreInUseError if another process holds it. -1
    where there is no flock (Windows, which cannot open a folder as a file: _lock_file says what is missing)."""
    if fcntl is None:  # pragma: no cover
        return -1
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise StorageError(f"data folder {folder}: cannot open it ({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise StoreInUseError(folder, _holder(folder)) from None
        raise StorageError(f"data folder {folder}: cannot lock it ({exc.strerror or exc})") from None
    return fd


def _lock_file(folder: Path) -> int:
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), PRIVATE_FILE)
    if fcntl is None:  # pragma: no cover
        log.warning("no OS file lock on this platform: nothing stops two kiosks from writing to %s", folder)
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        pid = _read_pid(fd)
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise StoreInUseError(folder, pid) from None
        raise StorageError(f"data folder {folder}: cannot lock {LOCK_NAME} ({exc.strerror or exc})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)  # also sets the mtime that marks our start
    return fd
