"""The shipped model files, pinned: their SHA-256 digests are constants of this release.

Each file also carries its own digest, but anyone who can edit the file can recompute that (a head that
accepts everyone, a threshold of 0.05, liveness set to "always live", a walk-up rule that lets strangers in:
issue #25). A file read from the shipped folder must therefore be byte for byte the one the code was
released with; a file elsewhere (``--weights``, a calibration's ``--out``) is checked as before. Retraining or
recalibrating with ``--replace-shipped`` means updating the digest here too (tests/test_pins.py says which).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from kiosk.errors import WeightsError
from kiosk.paths import WEIGHTS_DIR

PINNED: dict[str, str] = {
    "face_siamese.pt": "3f06bc9ef69fa6462746f39fac6a9e9e8441cf338ebc7c5c1aad243e261162c8",
    "identify.json": "570315a20b44b1227abaf60cc6d27547d94a9deee54b1405db5c17fef5620e7a",
    "site.json": "5e038b3697df6aa8e5edee7e1c82664ff9c7885f0e24cdf0c7c4f8763808265f",
    "liveness.npz": "44996f5c06150180f465c90318a7aba5b26f725adfc15fb42319c351aab41b18",
}


def pinned_digest(path: str | Path) -> str | None:
    """The digest this release pins for ``path``, or None when it is not a shipped file."""
    path = Path(path)
    try:
        shipped = path.resolve().parent == WEIGHTS_DIR.resolve()
    except OSError:
        return None
    return PINNED.get(path.name) if shipped else None


def read_model_file(path: str | Path) -> bytes:
    """The bytes of a model or calibration file, refused (WeightsError) when it sits in the shipped folder
    under a shipped name but is not the shipped file. OSError (e.g. FileNotFoundError) as Path.read_bytes."""
    data = Path(path).read_bytes()
    pin = pinned_digest(path)
    if pin is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != pin:
            raise WeightsError(f"{path}: not the file shipped with this release (SHA-256 {digest[:16]}..., pinned "
                               f"{pin[:16]}...): it was edited or replaced. Reinstall the kiosk, or restore "
                               f"weights/ from the release")
    return data
