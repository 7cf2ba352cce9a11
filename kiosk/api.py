"""The public Python API: a kiosk's people and verdicts in a few calls, in the spirit of face_recognition.

    import kiosk.api as ka

    with ka.open_kiosk("site-folder") as site:       # the kiosk's data folder and the face engine, loaded once
        site.enrol("E1", "Ann", ["ann1.jpg"])         # files or BGR arrays; audited like the admin's enrolment
        decision = site.verify("E1", ["door.jpg"])    # a kiosk.rules.decision.Decision: ACCEPT or REJECT, reason, score
        found = site.identify(["door.jpg"])           # the walk-up rule (1:N): also a Decision, found.claimed_id

Everything goes through the kiosk's own code path (kiosk.app): enrolment is ``Kiosk.admin.enrol``, and
``verify`` and ``identify`` are attempts of ``VerificationService``, with a clock of their own under which the
photos given are frames captured within the attempt's window. So the verdict is the one the kiosk would give
at the door for those frames: the same quality gate, the same number of frames fused (the settings': the first
``frames`` usable photos decide; fewer decide when the window closes), the same threshold in force (the admin's or
the model's, the site's), the insider check, the walk-up rule, the same liveness rule, and each decision is
written to the kiosk's audit log. There is one verdict type, :class:`kiosk.rules.decision.Decision`.

Liveness: with it on, every frame must look live; a photo of a photo (a printed picture, held up to the camera)
is what it refuses ("presentation attack suspected"). Photos on disk that were taken of people (not of
pictures) are often refused too, since the detector judges camera frames: pass ``liveness=False`` to
:func:`open_kiosk` to judge the face only. The default is the kiosk's setting (on unless the admin turned it off).

Bad input raises, before any attempt begins (nothing is audited), a :class:`kiosk.errors.KioskError`:
:class:`~kiosk.errors.ImageReadError` for a file that is missing or not a readable image (or an array that is
not a BGR image), :class:`~kiosk.errors.FaceNotUsableError` for a photo without one usable face (the reasons in
``.reasons``; ``skip_unusable=True`` lets such frames pass uncounted, as the kiosk's camera does), and
:class:`UnknownEmployeeError` for an ID nobody is enrolled under. Not thread-safe: one thread per Site.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kiosk.app import Employee, Kiosk, Settings
from kiosk.app.attempt import VerificationService
from kiosk.errors import FaceNotUsableError, ImageReadError, KioskError
from kiosk.io.imageio import check_image_array, read_image
from kiosk.paths import DEFAULT_WEIGHTS, LIVENESS_WEIGHTS
from kiosk.rules.decision import Decision, LivenessPolicy

if TYPE_CHECKING:  # torch is loaded by open_kiosk, not by importing this module
    from kiosk.vision.engine import FaceAnalysis, FaceEngine

__all__ = ["Decision", "FaceNotUsableError", "ImageReadError", "KioskError", "Site", "UnknownEmployeeError",
           "open_kiosk"]

log = logging.getLogger(__name__)

Photo = str | os.PathLike | np.ndarray  # a file, or a BGR uint8 array (H, W, 3) as OpenCV reads it
Photos = Photo | Iterable[Photo]  # one photo, or several (a list, or frames stacked in an (N, H, W, 3) array)


class UnknownEmployeeError(KioskError):
    """No employee is enrolled under the ID given."""


class _PhotoClock:
    """The attempts' clock: each attempt's photos are frames captured at its start, then time jumps past its
    deadline (monotonic, as the service expects)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def open_kiosk(folder: str | Path | None = None, *, liveness: bool | None = None,
               weights: str | Path = DEFAULT_WEIGHTS, engine: FaceEngine | None = None,
               database: str | None = None) -> Site:
    """A kiosk's data folder (created if new; default: the platform's data folder) with the face engine.

    ``liveness``: True or False overrides the kiosk's setting for this Site's attempts (None: the setting, on
    by default). On, it refuses photos of photos (a printed picture held up to a camera), and often photos on
    disk too: it judges camera frames. False judges the face only, and skips loading the liveness model.
    ``weights``: the face model, or ``engine``, one already loaded (FaceEngine). ``database``: a fleet
    registry's postgresql:// URL (the folder then holds this kiosk's local copy). Use it as a context manager,
    or call ``close()``; the data folder is held (one writer) until then."""
    if engine is None:
        from kiosk.vision.engine import FaceEngine  # noqa: PLC0415 (torch loads here, not on importing kiosk.api)
        engine = FaceEngine(weights, liveness_weights=None if liveness is False else LIVENESS_WEIGHTS)
    return Site(Kiosk.open(folder, database=database), engine, liveness, own_kiosk=True)


class Site:
    """One kiosk (``kiosk``: kiosk.app.Kiosk) and the face engine (``engine``). See :func:`open_kiosk`."""

    def __init__(self, kiosk: Kiosk, engine: FaceEngine, liveness: bool | None = None, own_kiosk: bool = False):
        self.kiosk = kiosk
        self.engine = engine
        self.liveness = liveness  # None: the kiosk's setting
        self._own_kiosk = own_kiosk
        self._clock = _PhotoClock()
        self._service: VerificationService | None = None

    # -- people ---------------------------------------------------------------------------------------------------
    def enrol(self, employee_id: str, name: str, photos: Photos, replace: bool = True) -> Employee:
        """Enrol (or re-enrol: ``replace`` drops the old reference photos, else they are kept) from photos, each
        of which must hold one face passing the quality checks (else nothing is stored); audited as the admin's."""
        return self.kiosk.admin.enrol(self.engine, employee_id, name, _read(photos), replace=replace)

    def delete(self, employee_id: str) -> bool:
        """Delete an employee, their photos and features (audited); False when nobody has that ID."""
        return self.kiosk.admin.delete(employee_id)

    def employee(self, employee_id: str) -> Employee | None:
        return self.kiosk.employees.get(employee_id.strip())

    # -- verdicts -------------------------------------------------------------------------------------------------
    def verify(self, employee_id: str, photos: Photos, skip_unusable: bool = False) -> Decision:
        """The kiosk's 1:1 attempt of ``employee_id`` with these photos as its camera frames: a Decision
        (``decision.accepted``, ``.verdict`` ACCEPT/REJECT, ``.reason``, ``.score``, ``.liveness``, ``.name``)."""
        if self.employee(employee_id) is None:
            raise UnknownEmployeeError(f"{employee_id.strip()!r}: nobody is enrolled under this ID")
        frames = self._analyse(photos, skip_unusable)
        service = self._prepared_service()
        return self._run(service, service.begin(employee_id), frames)

    def identify(self, photos: Photos, skip_unusable: bool = False) -> Decision:
        """The kiosk's walk-up attempt (no ID: the face searched among everyone enrolled, kiosk.rules.identification):
        a Decision whose ``claimed_id`` (and ``name``) is the person found when accepted."""
        frames = self._analyse(photos, skip_unusable)
        service = self._prepared_service()
        return self._run(service, service.begin_walk_up(), frames)

    # -- the attempt ------------------------------------------------------------------------------------------------
    def liveness_policy(self, settings: Settings | None = None) -> LivenessPolicy:
        """The liveness rule of this Site's attempts: the kiosk's, switched on or off by ``open_kiosk(liveness=)``."""
        policy = (settings or self.kiosk.settings()).liveness_policy
        return policy if self.liveness is None else replace(policy, enabled=bool(self.liveness))

    def _prepared_service(self) -> VerificationService:
        """The one service of this Site (its gallery and site calibration kept between attempts), with the
        settings in force now."""
        settings = self.kiosk.settings()
        if self._service is None:
            self._service = self.kiosk.verification(self.engine, liveness=self.liveness_policy(settings),
                                                    clock=self._clock)
        else:
            self._service.set_threshold(settings.threshold)
            self._service.set_fusion(settings.fusion)
            self._service.set_liveness(self.liveness_policy(settings))
        return self._service

    def _analyse(self, photos: Photos, skip_unusable: bool) -> list[FaceAnalysis]:
        analyses = []
        for image, label in _read(photos):
            analysis = self.engine.analyse(image)
            if not (analysis.crop is not None and analysis.quality.ok) and not skip_unusable:
                raise FaceNotUsableError(f"{label}: {analysis.quality.describe()}", analysis.quality.reasons)
            analyses.append(analysis)
        return analyses

    def _run(self, service: VerificationService, started: Decision | None, frames: Sequence[FaceAnalysis]) -> Decision:
        """Feed the frames (captured now, within the window) until the service decides, else close the window."""
        decision = started
        for analysis in frames:
            if decision is not None:
                break
            decision = service.add_analysis(analysis, self._clock.now)
        if decision is None:
            self._clock.now += (service.remaining() or 0.0) + 1.0  # past the deadline: decide on the frames so far
            decision = service.expire()
        else:
            self._clock.now += 1.0
        if decision is None:  # the service always decides past the deadline; never leave an attempt open
            decision = service.fail()
        assert decision is not None
        return decision

    # -- life -------------------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._service is not None:
            self._service.cancel()
        if self._own_kiosk:
            self.kiosk.close()

    def __enter__(self) -> Site:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read(photos: Photos) -> list[tuple[np.ndarray, str]]:
    """(BGR image, label) for each photo: a file (read safely, kiosk.io.imageio) or an array (checked alike)."""
    if isinstance(photos, (str, os.PathLike)) or (isinstance(photos, np.ndarray) and photos.ndim != 4):
        photos = [photos]
    items = list(photos)
    if not items:
        raise KioskError("no photos given")
    images = []
    for number, photo in enumerate(items, start=1):
        if isinstance(photo, (str, os.PathLike)):
            images.append((read_image(photo), str(photo)))
        else:
            label = f"photo {number}"
            images.append((check_image_array(photo, label), label))
    return images
