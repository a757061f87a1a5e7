"""Typed failures and warnings: each carries a one-line message and a hint for the user."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from astropy.utils.exceptions import AstropyUserWarning


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


class GpuAlignWarning(AstropyUserWarning):
    """A result that was produced but deserves a look: one line, with what to do.

    Raised through ``gpualign._errors.warn`` where the condition is known (a weak fit in the
    pipeline, an unusable CuPy in the backend, an inexact output WCS in the products).
    Silence it with ``warnings.simplefilter("ignore", gpualign.GpuAlignWarning)``.
    """


def warn(message: str, hint: str = "", stacklevel: int = 2) -> None:
    """Issue a :class:`GpuAlignWarning` of one line, with a hint like the errors'.

    Parameters
    ----------
    message : str
        What is doubtful, one line.
    hint : str, optional
        What the user can check or change.
    stacklevel : int
        As for :func:`warnings.warn`, counted from the caller of this function.
    """
    text = f"{message} (hint: {hint})" if hint else message
    warnings.warn(" ".join(text.split()), GpuAlignWarning, stacklevel=stacklevel + 1)


@contextmanager
def record_warnings() -> Iterator[list[str]]:
    """Collect the messages of the :class:`GpuAlignWarning` shown inside, still showing them.

    Each warning goes on to the ``warnings.showwarning`` in place (the CLI's one stderr
    line, a batch worker's log record) at the moment it is issued; its message is also
    appended to the yielded list. The filters in place decide what is shown, and so
    what is recorded. Not thread-safe (as :class:`warnings.catch_warnings`): use it
    where one frame runs at a time in the process.

    Yields
    ------
    list of str
        The messages, in the order they were shown.
    """
    caught: list[str] = []
    with warnings.catch_warnings():
        previous = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], *args: Any,
                 **kwargs: Any) -> None:
            if isinstance(category, type) and issubclass(category, GpuAlignWarning):
                caught.append(str(message))
            previous(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield caught
