"""Exceptions with messages meant for people: each names what went wrong and where."""


class KioskError(Exception):
    """Base class: a problem with input or environment that the user can act on."""


class ImageReadError(KioskError):
    """A file could not be read as an image (missing, corrupt, truncated, not an image)."""


class FaceNotUsableError(KioskError):
    """An image holds no usable face; ``reasons`` lists the quality problems found."""

    def __init__(self, message: str, reasons: list[str] | None = None):
        super().__init__(message)
        self.reasons = list(reasons or [])


class WeightsError(KioskError):
    """A weights file is missing, damaged or does not match this code."""


class NoTrainedWeightsError(WeightsError):
    """No trained weights are installed; the model must not run on random weights."""


class SourceError(KioskError):
    """A frame source (camera, video, image folder) could not be opened or read."""


class DatasetError(KioskError):
    """A dataset folder or pairs file is missing or malformed."""
