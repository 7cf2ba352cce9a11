"""Logging for the kiosk app and the command line: a rotating file in log_dir() plus stderr."""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

from .paths import log_dir

LOG_NAME = "kiosk.log"
FORMAT = "%(asctime)s %(levelname)-7s [%(threadName)s] %(name)s: %(message)s"
_MARK = "_kiosk_handler"


def setup_logging(level: int | str = logging.INFO, console: bool = True, filename: str = LOG_NAME) -> Path | None:
    """Configure the root logger once (calling again replaces this module's handlers, not others').

    Returns the log file, or None when the log folder cannot be written (then only stderr is used).
    Logs may name employee IDs, so the folder is owner-only.
    """
    root = logging.getLogger()
    root.setLevel(level)
    for handler in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(FORMAT)
    path: Path | None = log_dir() / filename
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        file_handler = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=5,
                                                            encoding="utf-8")
        os.chmod(path, 0o600)
        file_handler.setFormatter(formatter)
        setattr(file_handler, _MARK, True)
        root.addHandler(file_handler)
    except OSError as exc:
        path = None
        logging.getLogger(__name__).warning("cannot write logs to %s (%s); logging to stderr only", log_dir(), exc)
    if console:
        stream = logging.StreamHandler()
        stream.setFormatter(formatter)
        setattr(stream, _MARK, True)
        root.addHandler(stream)
    logging.captureWarnings(True)
    return path
