"""Logging for the kiosk app and the command line: a rotating file in log_dir() plus stderr."""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

from kiosk.paths import PRIVATE_FILE, log_dir, private_dir

LOG_NAME = "kiosk.log"
FORMAT = "%(asctime)s %(levelname)-7s [%(threadName)s] %(name)s: %(message)s"
_MARK = "_kiosk_handler"


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose files are owner-only (0600) from the moment they exist: the current file when
    it is opened (created 0600, never briefly wider; an older, wider file is narrowed), and every rotated
    file (kiosk.log.1, ...) after a rollover, whatever the umask."""

    def _open(self):
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
        try:
            os.fchmod(fd, PRIVATE_FILE)
            return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)
        except BaseException:
            os.close(fd)
            raise

    def doRollover(self) -> None:
        super().doRollover()
        for i in range(1, self.backupCount + 1):
            try:
                os.chmod(f"{self.baseFilename}.{i}", PRIVATE_FILE)
            except FileNotFoundError:
                pass


def setup_logging(level: int | str = logging.INFO, console: bool = True, filename: str = LOG_NAME) -> Path | None:
    """Configure the root logger once (calling again replaces this module's handlers, not others').

    Returns the log file, or None when the log folder cannot be written (then only stderr is used).
    Logs may name employee IDs, so the folder and every log file are owner-only.
    """
    root = logging.getLogger()
    root.setLevel(level)
    for handler in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(FORMAT)
    path: Path | None = log_dir() / filename
    try:
        private_dir(path.parent)
        file_handler = PrivateRotatingFileHandler(path, maxBytes=2_000_000, backupCount=5, encoding="utf-8")
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
