"""Files that hold a secret (the data key, the fleet registry's password): one rule for all of them.

Such a file is used only when its owner alone may read it: a file that its group or others may read or
write is refused, with an error naming the file and the ``chmod`` that fixes it (never a silent chmod, and
never a warning that lets the kiosk go on with a secret anyone on the machine may have copied).
"""

from __future__ import annotations

import stat
from pathlib import Path

from kiosk.storage.db import StorageError


def read_secret_file(path: str | Path, what: str, error: type[StorageError] = StorageError,
                     encoding: str = "utf-8", missing_ok: bool = False) -> str | None:
    """The text of the secret file ``path`` (``what`` names it in messages: "the data key").

    ``error`` (a StorageError) when it cannot be read, or when its group or others may use it; a missing
    file is that error too, or None with ``missing_ok``."""
    path = Path(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if not mode & 0o077:
            return path.read_text(encoding=encoding)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise error(f"{what} {path} cannot be read (it does not exist)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    raise error(f"{what} {path} may be read by others (mode {mode:03o}); only its owner may read it: run "
                f"'chmod 600 {path}' and start again")
