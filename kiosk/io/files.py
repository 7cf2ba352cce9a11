"""Owner-only folders and files, and atomic writes (temp file in the same folder, fsync, rename)."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

# private_dir: creates folders 0700; an existing wider folder gets a logged warning, not a silent chmod
from kiosk.paths import PRIVATE_DIR, PRIVATE_FILE, private_dir  # noqa: F401 (re-exported)


def make_private(path: str | Path) -> None:
    """chmod 0600 if the file exists (SQLite side files come and go)."""
    try:
        os.chmod(path, PRIVATE_FILE)
    except FileNotFoundError:
        pass


def fsync_path(path: Path) -> None:
    """Flush a file's or folder's contents to disk (best effort: some filesystems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: str | Path, mode: int = PRIVATE_FILE, replace: bool = True) -> Iterator[BinaryIO]:
    """``with atomic_writer(path) as handle: ...`` writes a binary file that readers see whole or not at
    all (a temp file in the same folder, fsync, rename), owner-only by default; for writers that stream
    (np.savez), so the data is not held twice in memory. ``replace=False`` never writes over an existing
    file: FileExistsError then, and the file there is kept (a data key, say)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mkstemp: 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # atomic, and fails if the file appeared meanwhile
    finally:
        Path(tmp).unlink(missing_ok=True)
    fsync_path(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = PRIVATE_FILE) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the complete new one, never a part."""
    with atomic_writer(path, mode) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, mode: int = PRIVATE_FILE) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), mode)
