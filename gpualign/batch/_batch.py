"""Many sources against one template: one status per frame, a summary at the end.

The template is read and detected once; what the frames need of it (catalogue,
header, output shape, settings) travels in a small
:class:`~gpualign.batch._types.BatchContext`, never its pixels. Each frame is one
call of :func:`~gpualign.batch._worker.process_frame` (the frame runner of
:mod:`gpualign.pipeline`), which never raises for a frame-level failure: it returns
a :class:`~gpualign.batch._types.FrameResult` whose ``status`` is ``"ok"``,
``"skipped"`` or ``"failed"``. Frames run in this process, in a pool of local
worker processes (the default on a multi-core CPU, :mod:`gpualign.batch._local`),
or on a Dask cluster (:mod:`gpualign.batch._dask`).

Outputs are written atomically (temporary file + rename), named
``OUTDIR/<source stem>_aligned.fits``, and stamped with the template's fingerprint
(``GA_TMPL``) and the batch's id (``GA_BATCH``): a retried frame whose output an
earlier attempt already wrote is not written again, and ``skip_existing`` resumes an
interrupted batch by skipping outputs made against the same template.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpualign import _progress
from gpualign._errors import InputError, record_warnings
from gpualign._settings import split_settings
from gpualign._system import usable_cores
from gpualign.batch._dask import open_client, run_on_dask
from gpualign.batch._local import FrameFn, auto_processes, run_pool, start_pool
from gpualign.batch._types import (
    BatchContext,
    FrameResult,
    FrameTask,
    make_tasks,
    template_fingerprint,
)
from gpualign.batch._worker import process_frame
from gpualign.detect import Catalog, DetectSettings
from gpualign.fit import FitSettings
from gpualign.match import MatchSettings
from gpualign.pipeline import FrameOptions, batch_retry, detect_template, prepare_template

log = logging.getLogger("gpualign")

__all__ = ["align_batch", "output_directory", "run_batch", "run_frames"]

#: Keyword options of :func:`align_batch` that are detection, matching and fitting settings.
SETTING_NAMES = DetectSettings.names() + MatchSettings.names() + FitSettings.names()


def output_directory(outdir: str | Path | None) -> Path | None:
    """``outdir`` made absolute and created (InputError if it is a file; None stays None)."""
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
    fn = frame_fn or process_frame
    if scheduler is not None or workers is not None:
        with open_client(scheduler, workers, backend=ctx.backend) as (client, n_local):
            if ctx.threads is None and n_local:
                ctx.threads = max(1, usable_cores() // n_local)
            with _progress.BatchProgress(len(tasks), enabled=show) as bar:
                return run_frames(tasks, ctx, client=client, frame_fn=fn, timeout=timeout,
                                  on_result=lambda r: bar.update(r.ok, r.source))
    n = auto_processes(len(tasks), ctx.shape, ctx.backend) if processes is None else processes
    n = max(1, min(n, len(tasks)))
    if n > 1 and ctx.threads is None:
        ctx.threads = max(1, usable_cores() // n)
    pool = start_pool(n, ctx, fn) if n > 1 else None  # before the bar's thread: see start_pool
    with _progress.BatchProgress(len(tasks), enabled=show) as bar:
        return run_frames(tasks, ctx, pool=pool, frame_fn=fn,
                          on_result=lambda r: bar.update(r.ok, r.source))


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
    template_mask: Any = None,
    dtype: Any = np.float32,
    conserve_flux: bool = False,
    preserve_footprints: bool = False,
    max_memory: float | None = None,
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
    interp_order, cval, backend, threads, dtype, conserve_flux, preserve_footprints, max_memory :
        As in :func:`gpualign.align` (``max_memory`` for each frame); the frames' own
        masks (masked arrays, NDData) and NDData uncertainties are resampled as there.
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
    template_mask : ndarray, HDU or FITS path, optional
        Bad-pixel mask or bitmask of the template: its pixels are left out of the
        template's detection.
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
    if isinstance(sources, (str, bytes, os.PathLike)) or not hasattr(sources, "__len__"):
        raise InputError(f"sources must be a list of images, got {type(sources).__name__}",
                         hint="pass [path] or [array] for a single source")
    unknown = set(find_kwargs) - set(SETTING_NAMES)
    if unknown:
        raise TypeError(f"align_batch() got unexpected options: {', '.join(sorted(unknown))}")
    if overwrite and skip_existing:
        raise InputError("overwrite and skip_existing exclude each other")
    (det, mat, fit), _ = split_settings(find_kwargs, DetectSettings, MatchSettings, FitSettings)
    FrameOptions(interp_order=interp_order, cval=cval, dtype=dtype, threads=threads,
                 max_memory=max_memory)  # checks
    side = prepare_template(template, template_det=template_det, ext=template_ext,
                            output_shape=output_shape, flux_col=det.flux_col,
                            max_memory=max_memory, mask=template_mask)
    cat = detect_template(side, det, mat)
    return run_batch(sources, cat, side.header, side.shape, output_directory(outdir),
                     detect=det, match=mat, fit=fit, source_ext=source_ext,
                     interp_order=interp_order, cval=cval, backend=backend, threads=threads,
                     overwrite=overwrite, skip_existing=skip_existing,
                     dtype=np.dtype(dtype).name, conserve_flux=bool(conserve_flux),
                     preserve_footprints=bool(preserve_footprints), max_memory=max_memory,
                     processes=processes, scheduler=scheduler,
                     workers=workers, show=bool(progress), timeout=timeout,
                     protected=(template, template_det), **batch_retry(side, det))


def run_batch(sources: Sequence[Any], cat: Catalog, header: Any, shape: tuple[int, int],
              outdir: Path | None, *, processes: int | None = None, scheduler: Any = None,
              workers: int | None = None, show: bool | None = None,
              timeout: float | None = None, frame_fn: Any = None,
              **ctx_kw: Any) -> list[FrameResult]:
    """Run the frames of a batch against a detected template (see :func:`align_batch`).

    ``ctx_kw`` are the fields of :class:`BatchContext` after the template's;
    ``protected`` (input files no output may replace, e.g. the template) among them.
    """
    if cat.shape is None:
        cat = Catalog(cat.x, cat.y, cat.flux, cat.fwhm, cat.flag, cat.sigma, shape)
    protected = tuple(str(Path(p).absolute()) for p in ctx_kw.pop("protected", ())
                      if isinstance(p, (str, os.PathLike)))
    tasks = make_tasks(sources, outdir, protected)
    protected += tuple(t.source for t in tasks if isinstance(t.source, str))
    ctx = BatchContext(cat, header, shape, template_fingerprint(cat, shape),
                       uuid.uuid4().hex[:16], log_level=log.getEffectiveLevel(),
                       protected=protected, **ctx_kw)
    return _execute(tasks, ctx, processes=processes, scheduler=scheduler, workers=workers,
                    show=show, timeout=timeout, frame_fn=frame_fn)


def run_frames(tasks: Sequence[FrameTask], ctx: BatchContext, *, processes: int = 1,
               pool: Any = None, client: Any = None, frame_fn: FrameFn = process_frame,
               on_result: Callable[[FrameResult], None] | None = None,
               timeout: float | None = None) -> list[FrameResult]:
    """Run every frame; one result per task, in task order.

    Parameters
    ----------
    tasks : sequence of FrameTask
    ctx : BatchContext
    processes : int
        Local worker processes (1: in this process).
    pool : concurrent.futures.ProcessPoolExecutor, optional
        Already started (:func:`start_pool`); shut down here.
    client : distributed.Client, optional
        Run on this Dask cluster instead (see :mod:`gpualign._dask`).
    frame_fn : callable
        ``frame_fn(task, ctx) -> FrameResult`` (default :func:`process_frame`).
    on_result : callable, optional
        Called in this process with each result as it arrives.
    timeout : float, optional
        Seconds to wait for the whole batch on a Dask cluster.

    Returns
    -------
    list of FrameResult
    """
    done: dict[int, FrameResult] = {}

    def emit(r: FrameResult) -> None:
        for d in r.logs:  # records of a worker process, replayed here
            rec = logging.makeLogRecord(d)
            if log.isEnabledFor(rec.levelno):
                log.handle(rec)
        r.logs = []
        if r.status == "failed":
            log.warning("%s failed: %s", r.source, r.message)
        done[r.index] = r
        if on_result is not None:
            on_result(r)

    tasks = list(tasks)
    if client is not None:
        run_on_dask(client, tasks, ctx, frame_fn, emit, timeout=timeout)
    elif pool is not None or (processes > 1 and len(tasks) > 1):
        pool = pool or start_pool(min(processes, len(tasks)), ctx, frame_fn)
        run_pool(tasks, ctx, frame_fn, pool, emit)
    else:
        with _progress.suppressed():
            for t in tasks:
                with record_warnings() as caught:  # shown as they come, and kept
                    r = frame_fn(t, ctx)
                if not r.warnings:  # else a collector of this process kept them
                    r.warnings.extend(caught)
                emit(r)
    return [done[t.index] for t in tasks]


