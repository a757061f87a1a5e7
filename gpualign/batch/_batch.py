"""Many sources against one template: one status per frame, a summary at the end.

The template is read and detected once; what the frames need of it (catalogue,
header, output shape, options) travels in a small :class:`BatchContext`, never its
pixels. Each frame is one call of :func:`process_frame`, which never raises for a
frame-level failure: it returns a :class:`FrameResult` whose ``status`` is ``"ok"``,
``"skipped"`` or ``"failed"``. Frames run in this process, in a pool of local
worker processes (the default on a multi-core CPU), or on a Dask cluster
(:mod:`gpualign._dask`).

Outputs are written atomically (temporary file + rename), named
``OUTDIR/<source stem>_aligned.fits``, and stamped with the template's fingerprint
(``GA_TMPL``) and the batch's id (``GA_BATCH``): a retried frame whose output an
earlier attempt already wrote is not written again, and ``skip_existing`` resumes an
interrupted batch by skipping outputs made against the same template.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpualign import _progress
from gpualign.detect._catalog import Catalog
from gpualign._errors import InputError

log = logging.getLogger("gpualign")

__all__ = ["BatchContext", "FrameResult", "FrameTask", "align_batch", "make_tasks",
           "output_name", "run_cli_batch", "summary_table", "template_fingerprint"]


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
    options: dict[str, Any]
    source_ext: int | str | None = None
    interp_order: int = 3
    cval: float = float("nan")
    backend: str = "auto"
    threads: int | None = None
    overwrite: bool = False
    skip_existing: bool = False
    dtype: str = "float32"
    log_level: int = logging.WARNING


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


def make_tasks(sources: Sequence[Any], outdir: Path | None) -> list[FrameTask]:
    """One task per source, with its predictable output name (unique, or InputError).

    Paths are made absolute, so that workers with another working directory (a Dask
    cluster on a shared file system) find them.
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
    return tasks


def _outdir(outdir: str | Path | None) -> Path | None:
    if outdir is None:
        return None
    path = Path(outdir).absolute()
    if path.exists() and not path.is_dir():
        raise InputError(f"{outdir} is not a directory", hint="several sources need -o OUTDIR")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _execute(tasks: list[FrameTask], ctx: BatchContext, *, processes: int | None,
             scheduler: Any, workers: int | None, show: bool | None,
             timeout: float | None, frame_fn: Any = None) -> list[FrameResult]:
    """Pick the engine (Dask, local processes, this process) and run the frames."""
    from gpualign.batch._local import _cores, auto_processes, process_frame, run_frames, start_pool

    fn = frame_fn or process_frame
    if scheduler is not None or workers is not None:
        from gpualign.batch._dask import open_client

        with open_client(scheduler, workers, backend=ctx.backend) as (client, n_local):
            if ctx.threads is None and n_local:
                ctx.threads = max(1, _cores() // n_local)
            with _progress.BatchProgress(len(tasks), enabled=show) as bar:
                return run_frames(tasks, ctx, client=client, frame_fn=fn, timeout=timeout,
                                  on_result=lambda r: bar.update(r.ok, r.source))
    n = auto_processes(len(tasks), ctx.shape, ctx.backend) if processes is None else processes
    n = max(1, min(n, len(tasks)))
    if n > 1 and ctx.threads is None:
        ctx.threads = max(1, _cores() // n)
    pool = start_pool(n, ctx, fn) if n > 1 else None  # before the bar's thread: see start_pool
    with _progress.BatchProgress(len(tasks), enabled=show) as bar:
        return run_frames(tasks, ctx, pool=pool, frame_fn=fn,
                          on_result=lambda r: bar.update(r.ok, r.source))


def _solve_options() -> set[str]:
    from gpualign.pipeline._api import solve

    return set(inspect.signature(solve).parameters) - {"src_cat", "tmpl_cat", "timings"}


def align_batch(
    sources: Sequence[Any],
    template: Any,
    outdir: str | Path | None = None,
    *,
    template_det: Any = None,
    output_shape: tuple[int, int] | None = None,
    interp_order: int = 3,
    cval: float = float("nan"),
    backend: str = "auto",
    threads: int | None = None,
    overwrite: bool = False,
    skip_existing: bool = False,
    processes: int | None = None,
    scheduler: Any = None,
    workers: int | None = None,
    progress: bool = False,
    timeout: float | None = None,
    source_ext: int | str | None = None,
    template_ext: int | str | None = None,
    dtype: Any = np.float32,
    **find_kwargs: Any,
) -> list[FrameResult]:
    """Align many sources onto one template; one result per source, none raises.

    The template is read and detected once; each frame is read, detected, matched,
    fitted and warped on its own, so a failed frame never stops the others.

    Parameters
    ----------
    sources : sequence of FITS paths or arrays
        The images to resample.
    template : ndarray, NDData, FITS path or None
        The reference grid (None if ``template_det`` and ``output_shape`` are given).
    outdir : str or Path, optional
        Write ``OUTDIR/<source stem>_aligned.fits`` (arrays: ``frameNNNN_aligned.fits``);
        without it the aligned images come back in ``FrameResult.result``.
    template_det : astropy Table, Catalog or SExtractor file, optional
        Template detections instead of running sep.
    output_shape : tuple of int, optional
        ``(ny, nx)`` of the output (default: the template's).
    interp_order, cval, backend, threads, dtype :
        As in :func:`gpualign.align`.
    overwrite : bool
        Replace existing outputs.
    skip_existing : bool
        Skip sources whose output exists and was made against this template
        (resume an interrupted batch).
    processes : int, optional
        Local worker processes; default one per core as memory allows (1 on a GPU).
    scheduler : str or distributed.Client, optional
        Run the frames on this Dask cluster (address or client); sources and
        ``outdir`` must be reachable by its workers.
    workers : int, optional
        Start a local Dask cluster of this many worker processes (dask-cuda's
        one-worker-per-GPU cluster when the backend is CuPy and dask-cuda is installed).
    progress : bool
        Show a progress bar when stderr is a terminal.
    timeout : float, optional
        Seconds to wait for a Dask batch; frames not done by then are failed.
    source_ext, template_ext : int or str, optional
        FITS extensions.
    **find_kwargs
        Detection, matching and fitting options of :func:`gpualign.find_transform`.

    Returns
    -------
    list of FrameResult
        In the order of ``sources``; ``status`` is ``"ok"``, ``"skipped"`` or
        ``"failed"`` (with ``message``).

    Raises
    ------
    InputError
        For a problem with the template, the options or the output directory (before
        any frame starts).

    Examples
    --------
    >>> results = align_batch(["a.fits", "b.fits"], "ref.fits", "aligned/")  # doctest: +SKIP
    >>> [r.status for r in results]  # doctest: +SKIP
    ['ok', 'failed']
    """
    from gpualign.detect._catalog import as_catalog
    from gpualign.detect._sep import detect
    from gpualign.io._read import load_image

    unknown = set(find_kwargs) - _solve_options() - {"sep_thresh", "flux_col"}
    if unknown:
        raise TypeError(f"align_batch() got unexpected options: {', '.join(sorted(unknown))}")
    if overwrite and skip_existing:
        raise InputError("overwrite and skip_existing exclude each other")
    header = data = mask = None
    if template is not None:
        data, header, mask = load_image(template, template_ext, name="template")
    shape = tuple(int(v) for v in (output_shape or (data.shape if data is not None else ())))
    if len(shape) != 2:
        raise InputError("the template is a catalogue only, so the output grid is unknown",
                         hint="give output_shape")
    if template_det is not None:
        cat = as_catalog(template_det, flux_col=find_kwargs.get("flux_col"))
    elif data is not None:
        cat = detect(data, sep_thresh=find_kwargs.get("sep_thresh", 5.0), mask=mask)
    else:
        raise InputError("no template given", hint="pass a template image or template_det")
    del data, mask
    return _run_batch(sources, cat, header, shape, _outdir(outdir), options=find_kwargs,
                      source_ext=source_ext, interp_order=interp_order, cval=cval,
                      backend=backend, threads=threads, overwrite=overwrite,
                      skip_existing=skip_existing, dtype=np.dtype(dtype).name,
                      processes=processes, scheduler=scheduler, workers=workers,
                      show=bool(progress), timeout=timeout)


def _run_batch(sources: Sequence[Any], cat: Catalog, header: Any, shape: tuple[int, int],
               outdir: Path | None, *, processes: int | None = None, scheduler: Any = None,
               workers: int | None = None, show: bool | None = None,
               timeout: float | None = None, frame_fn: Any = None,
               **ctx_kw: Any) -> list[FrameResult]:
    if cat.shape is None:
        cat = Catalog(cat.x, cat.y, cat.flux, cat.fwhm, cat.flag, cat.sigma, shape)
    tasks = make_tasks(sources, outdir)
    ctx = BatchContext(cat, header, shape, template_fingerprint(cat, shape),
                       uuid.uuid4().hex[:16], log_level=log.getEffectiveLevel(), **ctx_kw)
    return _execute(tasks, ctx, processes=processes, scheduler=scheduler, workers=workers,
                    show=show, timeout=timeout, frame_fn=frame_fn)


def run_cli_batch(sources: Sequence[Path], outdir: Path, template_cat: Catalog, header: Any,
                  shape: tuple[int, int], *, options: dict[str, Any],
                  source_ext: str | None, interp_order: int, cval: float, backend: Any,
                  threads: int | None, overwrite: bool, skip_existing: bool = False,
                  scheduler: str | None = None, workers: int | None = None,
                  quiet: bool = False) -> list[FrameResult]:
    """``gpualign align SRC... -t T -o OUTDIR``: run, print the summary, exit 1 on failures.

    Raises
    ------
    typer.Exit
        With code 1 when any frame failed (after the summary).
    """
    import typer

    if overwrite and skip_existing:
        raise InputError("--overwrite and --skip-existing exclude each other")
    results = _run_batch(
        sources, template_cat, header, tuple(shape), _outdir(outdir), options=dict(options),
        source_ext=source_ext, interp_order=interp_order, cval=cval,
        backend=getattr(backend, "name", backend), threads=threads, overwrite=overwrite,
        skip_existing=skip_existing, scheduler=scheduler, workers=workers,
        show=False if quiet else None)
    if not quiet:
        typer.echo(summary_table(results))
    if any(not r.ok for r in results):
        raise typer.Exit(1)
    return results
