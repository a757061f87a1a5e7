"""Typed failures: each carries a one-line message and a hint for the user."""

from __future__ import annotations


class GpuAlignError(ValueError):
    """Base class of every failure gpualign reports to its user.

    Parameters
    ----------
    message : str
        What went wrong, one line.
    hint : str, optional
        What the user can change to make it work.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{msg} (hint: {self.hint})" if self.hint else msg


class InputError(GpuAlignError):
    """An input image, catalogue or option is unusable."""


class TooFewStars(GpuAlignError):
    """Too few usable detections in one of the images."""


class NoQuadMatch(GpuAlignError):
    """No quad of stars matched between the images."""


class NoOverlap(GpuAlignError):
    """The fitted mapping leaves no overlap between source and template."""


class OutputError(GpuAlignError):
    """The output could not be written (disk full, file size limit, permissions)."""


class BackendUnavailable(GpuAlignError):
    """The requested array backend cannot run on this machine."""
