"""Progress display for long runs: frames of a batch, tiles of one huge warp.

Progress is shown only on a terminal (stderr is a TTY), only when enabled (the CLI
enables it unless ``--quiet``; library calls stay silent unless
:func:`configure` ``(enabled=True)``), and only one display at a time: a tile bar
asked for inside a batch is a no-op. It uses `rich` when installed and falls back
to plain lines on stderr otherwise. While a rich display is live, the log handlers
that write to stderr are pointed at rich's console, so log records print above the
bar instead of through it.

Two interfaces:

``BatchProgress(total)``
    frames done / failed with an estimate of the time left (``update(ok)``).
``progress(total, description)``
    a context manager yielding ``advance(n=1)``, thread-safe, for a loop over
    ``total`` units (the warp's tiles)::

        from gpualign._progress import progress
        with progress(len(starts), "warp", unit="tiles") as advance:
            for y0 in starts:
                do_tile(y0)
                advance(1)
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["BatchProgress", "configure", "is_enabled", "progress", "suppressed"]

_lock = threading.Lock()
_state: dict[str, Any] = {"enabled": False, "active": False}


def configure(*, enabled: bool) -> None:
    """Switch progress displays on or off for this process.

    Parameters
    ----------
    enabled : bool
        True: show progress when stderr is a terminal (the CLI, unless ``--quiet``);
        False: never (library default, batch workers).
    """
    _state["enabled"] = bool(enabled)


def _stream() -> TextIO:
    return sys.stderr


def is_enabled(stream: TextIO | None = None) -> bool:
    """Whether a progress display would be shown now.

    True when enabled by :func:`configure`, ``GPUALIGN_NO_PROGRESS`` is not set,
    no other display is live, and ``stream`` (default stderr) is a terminal.
    """
    return bool(_state["enabled"]) and _can_show(stream)


def _can_show(stream: TextIO | None = None) -> bool:
    """No other display live, not disabled by the environment, and a terminal."""
    if _state["active"] or os.environ.get("GPUALIGN_NO_PROGRESS"):
        return False
    stream = _stream() if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a file
        return False


@contextmanager
def suppressed() -> Iterator[None]:
    """No progress display inside this block (e.g. per-frame work inside a batch bar)."""
    with _lock:
        was = _state["active"]
        _state["active"] = True
    try:
        yield
    finally:
        with _lock:
            _state["active"] = was


def _rich() -> Any:
    try:
        import rich.progress
    except ImportError:
        return None
    return rich.progress


@contextmanager
def _logs_to(stream: TextIO) -> Iterator[None]:
    """Point the stderr/stdout log handlers at ``stream`` (rich's proxy) for the block."""
    swapped = []
    for logger in (logging.getLogger("gpualign"), logging.getLogger()):
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            ) and handler.stream in (sys.__stderr__, sys.__stdout__):
                swapped.append((handler, handler.setStream(stream)))
    try:
        yield
    finally:
        for handler, old in swapped:
            handler.setStream(old)


def _fmt_seconds(s: float) -> str:
    s = max(0.0, s)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


class _Display:
    """One live display: a rich Progress or plain lines; a no-op when not shown."""

    def __init__(self, total: int, description: str, unit: str, *, show: bool,
                 failures: bool, transient: bool, plain_every: float) -> None:
        self.total = max(int(total), 0)
        self.description = description
        self.unit = unit
        self.show = show
        self.failures = failures
        self.transient = transient
        self.plain_every = plain_every
        self.done = 0
        self.failed = 0
        self._t0 = time.perf_counter()
        self._last_line = 0.0
        self._lock = threading.Lock()
        self._rich: Any = None
        self._task: Any = None
        self._logs: Any = None

    def __enter__(self) -> _Display:
        if not self.show:
            return self
        with _lock:
            if _state["active"]:
                self.show = False
                return self
            _state["active"] = True
        rp = _rich()
        if rp is not None:
            from rich.console import Console

            cols = [rp.TextColumn("{task.description}"), rp.BarColumn(),
                    rp.MofNCompleteColumn(), rp.TextColumn(self.unit)]
            if self.failures:
                cols.append(rp.TextColumn("[red]{task.fields[failed]} failed"))
            cols += [rp.TimeElapsedColumn(), rp.TextColumn("eta"), rp.TimeRemainingColumn()]
            self._rich = rp.Progress(*cols, console=Console(file=_stream()),
                                     transient=self.transient, redirect_stdout=False,
                                     redirect_stderr=True)
            self._rich.start()
            self._task = self._rich.add_task(self.description, total=self.total, failed=0)
            self._logs = _logs_to(sys.stderr)  # rich's proxy while live
            self._logs.__enter__()
        return self

    def advance(self, n: int = 1, *, failed: bool = False, label: str = "") -> None:
        """Count ``n`` more units (thread-safe); ``failed`` counts them as failures too."""
        with self._lock:
            self.done += n
            self.failed += n if failed else 0
            if not self.show:
                return
            if self._rich is not None:
                self._rich.update(self._task, advance=n, failed=self.failed)
                return
            now = time.perf_counter()
            if now - self._last_line < self.plain_every and self.done < self.total:
                return
            self._last_line = now
            self._plain_line(now, label)

    def _plain_line(self, now: float, label: str) -> None:
        elapsed = now - self._t0
        left = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        parts = [f"gpualign: {self.description} {self.done}/{self.total} {self.unit}"]
        if self.failures:
            parts.append(f"{self.failed} failed")
        if label:
            parts.append(label)
        if self.done < self.total and left == left:
            parts.append(f"about {_fmt_seconds(left)} left")
        try:
            print(", ".join(parts), file=_stream(), flush=True)
        except (OSError, ValueError):
            self.show = False

    def __exit__(self, *exc: object) -> None:
        if not self.show:
            return
        try:
            if self._rich is not None:
                self._logs.__exit__(None, None, None)
                self._rich.stop()
        finally:
            with _lock:
                _state["active"] = False


class BatchProgress(_Display):
    """Frames done and failed, with an estimate of the time left.

    Parameters
    ----------
    total : int
        Frames in the batch.
    enabled : bool, optional
        True: shown on a terminal; False: never; default: :func:`is_enabled`
        (a terminal, and switched on by :func:`configure`).

    Examples
    --------
    >>> with BatchProgress(3, enabled=False) as bar:
    ...     bar.update(True, "a.fits")
    ...     bar.update(False, "b.fits")
    >>> bar.done, bar.failed
    (2, 1)
    """

    def __init__(self, total: int, *, enabled: bool | None = None) -> None:
        show = is_enabled() if enabled is None else bool(enabled) and _can_show()
        super().__init__(total, "aligning", "frames", show=show, failures=True,
                         transient=False, plain_every=0.0)

    def __enter__(self) -> BatchProgress:
        super().__enter__()
        return self

    def update(self, ok: bool, name: str = "") -> None:
        """Record one finished frame (``ok`` False: it failed)."""
        label = f"{name} {'ok' if ok else 'FAILED'}" if name else ""
        self.advance(1, failed=not ok, label=label)


@contextmanager
def progress(total: int, description: str = "warp", *, unit: str = "tiles",
             min_total: int = 2) -> Iterator[Callable[..., None]]:
    """Progress of one long loop, as a thread-safe ``advance(n=1)`` callable.

    Shown (transient: the bar disappears when done) only if :func:`is_enabled` and
    ``total >= min_total``; otherwise ``advance`` is a cheap no-op, so callers need
    no condition of their own.

    Parameters
    ----------
    total : int
        Units of work (e.g. tiles).
    description : str
        Label of the bar.
    unit : str
        Name of a unit.
    min_total : int
        Smaller loops show nothing.

    Yields
    ------
    callable
        ``advance(n=1)``.
    """
    show = total >= min_total and is_enabled()
    display = _Display(total, description, unit, show=show, failures=False,
                       transient=True, plain_every=2.0)
    with display:
        yield display.advance
