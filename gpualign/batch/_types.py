"""What a batch is made of: tasks, their results, the context every frame shares."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpualign._errors import InputError
from gpualign._system import refuse_overwriting_inputs
from gpualign.detect import Catalog, DetectSettings
from gpualign.fit import FitSettings
from gpualign.match import MatchSettings

__all__ = ["BatchContext", "FrameResult", "FrameTask", "failed_result", "make_tasks",
           "output_name", "summary_table", "template_fingerprint"]


@dataclass
class FrameResult:
    """Outcome of one frame of a batch.

    Attributes
    ----------
    index : int
        Position of the frame in the batch.
    source : str
        Source path (or ``"<array N>"``).
    output : Path or None
        Output file (None when results are kept in memory).
    status : {"ok", "skipped", "failed"}
        ``"skipped"``: the output existed (``skip_existing``).
    message : str
        One line: what was done, or why it failed.
    error : str or None
        Exception class name of a failure.
    n_match, rms, degree :
        Matched stars, fit RMS (template px) and distortion degree.
    seconds : float
        Time spent on the frame by its worker.
    worker : str
        ``host:pid`` of the process that ran it.
    written : bool
        Whether this attempt wrote the output.
    solution : Solution or None
        The fit (in memory only).
    result : AlignResult or None
        The aligned image, when no output directory is given.
    warnings : list of str
        The messages of the :class:`~gpualign.GpuAlignWarning` issued for this frame
        and shown (a worker process's are sent back with its result).
    """

    index: int
    source: str
    output: Path | None
    status: str = "failed"
    message: str = ""
    error: str | None = None
    n_match: int = 0
    rms: float = float("nan")
    degree: int = 0
    seconds: float = 0.0
    worker: str = ""
    written: bool = False
    solution: Any = field(default=None, repr=False)
    result: Any = field(default=None, repr=False)
    logs: list[dict[str, Any]] = field(default_factory=list, repr=False)
    warnings: list[str] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        """True unless the frame failed (a skipped frame is fine)."""
        return self.status != "failed"


@dataclass
class FrameTask:
    """One frame to align: its source (path or array) and output path."""

    index: int
    source: Any
    output: str | None
    name: str


@dataclass
class BatchContext:
    """Everything a frame needs of the batch: small, sent once to each worker."""

    template: Catalog
    header: Any
    shape: tuple[int, int]
    template_key: str
    batch_id: str
    detect: DetectSettings = field(default_factory=DetectSettings)
    match: MatchSettings = field(default_factory=MatchSettings)
    fit: FitSettings = field(default_factory=FitSettings)
    source_ext: int | str | None = None
    interp_order: int = 3
    cval: float = float("nan")
    backend: str = "auto"
    threads: int | None = None
    overwrite: bool = False
    skip_existing: bool = False
    dtype: str = "float32"
    conserve_flux: bool = False
    preserve_footprints: bool = False
    protected: tuple[str, ...] = ()
    log_level: int = logging.WARNING
    max_memory: float | None = None
    #: the deeper second try of a blind match (``gpualign.pipeline.batch_retry``): the
    #: template's path to read again, or its retry catalogue; both None: no such try
    template_reload: Any = None
    template_retry: Catalog | None = None


def output_name(source: Path | str, outdir: Path) -> Path:
    """Predictable output name: ``OUTDIR/<source stem>_aligned.fits``."""
    name = Path(source).name
    for ext in (".fits.gz", ".fits.fz", ".fits", ".fit", ".fts"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return outdir / f"{name}_aligned.fits"


def template_fingerprint(cat: Catalog, shape: tuple[int, int]) -> str:
    """Short hash of the template catalogue and grid (stamped as ``GA_TMPL``)."""
    h = hashlib.sha256(repr(tuple(int(v) for v in shape)).encode())
    for a in (cat.x, cat.y, cat.flux):
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def summary_table(results: Sequence[FrameResult]) -> str:
    """The end-of-batch table: one line per frame, then the counts."""
    lines = [f"{'frame':32s} {'status':7s} {'matches':>7s} {'rms px':>7s} {'sec':>6s}  detail"]
    for r in results:
        rms = f"{r.rms:7.3f}" if np.isfinite(r.rms) and r.n_match else f"{'-':>7s}"
        name = Path(r.source).name  # names are unique in a batch (make_tasks)
        name = name if len(name) <= 32 else name[:31] + "~"
        lines.append(f"{name:32s} {r.status.upper() if not r.ok else r.status:7s} "
                     f"{r.n_match:7d} {rms} {r.seconds:6.1f}  {r.message}")
    n = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    lines.append(f"{n['ok']} aligned, {n['skipped']} skipped, {n['failed']} failed")
    return "\n".join(lines)


def make_tasks(sources: Sequence[Any], outdir: Path | None,
               protected: Sequence[Any] = ()) -> list[FrameTask]:
    """One task per source, with its predictable output name (unique, or InputError).

    Paths are made absolute, so that workers with another working directory (a Dask
    cluster on a shared file system) find them. No output may be one of the sources
    or of the ``protected`` files (the template): InputError before any frame runs.
    """
    tasks = []
    for i, src in enumerate(sources):
        if isinstance(src, (str, os.PathLike)):
            path = Path(src).absolute()
            out = output_name(path, outdir) if outdir is not None else None
            tasks.append(FrameTask(i, str(path), str(out) if out else None, str(src)))
        else:  # an in-memory image
            out = outdir / f"frame{i:04d}_aligned.fits" if outdir is not None else None
            tasks.append(FrameTask(i, src, str(out) if out else None, f"<array {i}>"))
    seen: dict[str, str] = {}
    for t in tasks:
        if t.output is not None and t.output in seen:
            raise InputError(f"{seen[t.output]} and {t.name} would both be written to "
                             f"{t.output}", hint="give sources distinct file names")
        if t.output is not None:
            seen[t.output] = t.name
    refuse_overwriting_inputs([t.output for t in tasks],
                              [t.source for t in tasks] + list(protected))
    return tasks


def failed_result(task: FrameTask, message: str, error: str) -> FrameResult:
    """A failure that happened outside :func:`process_frame` (lost worker, timeout)."""
    out = Path(task.output) if task.output else None
    return FrameResult(task.index, task.name, out, "failed", message, error)
