"""The worker side of a batch: one frame, and the local engines that run many.

:func:`process_frame` aligns one source against the batch's template catalogue and
writes its output atomically; it never raises for a frame-level failure. In a
worker process, the frame's gpualign log records are collected and sent back with
its result, so the parent prints them (above its progress bar) in one stream.
:func:`run_frames` runs the frames in this process, in a pool of local worker
processes, or on a Dask cluster (:mod:`gpualign._dask`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpualign import _progress
from gpualign.batch._batch import BatchContext, FrameResult, FrameTask
from gpualign._errors import InputError

log = logging.getLogger("gpualign")

__all__ = ["auto_processes", "failed_result", "limit_blas_threads", "process_frame",
           "run_frames", "start_pool"]

FrameFn = Callable[[FrameTask, BatchContext], FrameResult]


class _Collector(logging.Handler):
    """Keeps the gpualign records of each frame's thread, to send them to the parent."""

    def __init__(self) -> None:
        super().__init__()
        self.lists: dict[int, list[dict[str, Any]]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        sink = self.lists.get(record.thread or 0)
        if sink is not None:
            d = dict(record.__dict__, msg=record.getMessage(), args=None, exc_info=None)
            sink.append(d)


_collector: _Collector | None = None
_backends: dict[str, Any] = {}


def _worker_setup(log_level: int) -> None:
    """In a worker process: no progress display, gpualign records collected per frame."""
    global _collector
    _progress.configure(enabled=False)
    if _collector is None:
        _collector = _Collector()
        logger = logging.getLogger("gpualign")
        logger.handlers[:] = [_collector]
        logger.propagate = False
    logging.getLogger("gpualign").setLevel(log_level)


def _backend(name: str) -> Any:
    from gpualign.backend import get_backend

    if name not in _backends:
        _backends[name] = get_backend(name)
    return _backends[name]


def _existing(out: Path, ctx: BatchContext) -> tuple[str, Any]:
    """Classify an existing output: "ours" (this batch), "same" template, or "other"."""
    from astropy.io import fits

    try:
        hdr = fits.getheader(out)
    except Exception:
        return "other", None
    if hdr.get("GA_BATCH") == ctx.batch_id:
        return "ours", hdr
    tmpl = hdr.get("GA_TMPL")
    return ("same" if tmpl in (None, ctx.template_key) else "other"), hdr


def _from_header(res: FrameResult, hdr: Any) -> None:
    res.n_match = int(hdr.get("GA_NMAT", 0))
    res.rms = float(hdr.get("GA_RMS", float("nan")))
    res.degree = int(hdr.get("GA_DEG", 0))


def _clean_temporaries(out: Path) -> None:
    """Remove what a killed earlier attempt may have left of this output's temp file."""
    for tmp in out.parent.glob(f".{out.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def process_frame(task: FrameTask, ctx: BatchContext) -> FrameResult:
    """Align one source of a batch; every failure becomes a ``"failed"`` result.

    Parameters
    ----------
    task : FrameTask
        The source (read here, by whichever worker runs the frame) and its output.
    ctx : BatchContext
        The template catalogue and the options of the batch.

    Returns
    -------
    FrameResult
    """
    from gpualign.cli._align import result_hdus, streamed
    from gpualign.detect._sep import detect
    from gpualign.io._read import load_image, write_fits_atomic
    from gpualign.pipeline._api import AlignResult, solve
    from gpualign.warp._resample import warp

    t0 = time.perf_counter()
    out = Path(task.output) if task.output else None
    res = FrameResult(task.index, task.name, out, worker=f"{socket.gethostname()}:{os.getpid()}")
    sink: list[dict[str, Any]] = []
    if _collector is not None:
        _collector.lists[threading.get_ident()] = sink
    try:
        if out is not None and out.exists():
            state, hdr = _existing(out, ctx)
            if state == "ours":  # an earlier attempt of this batch wrote it, then died
                res.status, res.message = "ok", "written by an earlier attempt"
                _from_header(res, hdr)
                return res
            if ctx.skip_existing and state == "same":
                res.status, res.message = "skipped", "output exists"
                _from_header(res, hdr)
                return res
            if not ctx.overwrite:
                why = "" if state == "same" else " (made against another template)"
                raise InputError(f"output {out} exists{why}",
                                 hint="use --overwrite or --skip-existing")
        opts = dict(ctx.options)
        opts.pop("flux_col", None)
        sep_thresh = opts.pop("sep_thresh", 5.0)
        data, _, mask = load_image(task.source, ctx.source_ext, name="source")
        cat = detect(data, sep_thresh=sep_thresh, mask=mask)
        timings = {"read+detect": time.perf_counter() - t0}
        solution = solve(cat, ctx.template, timings=timings, **opts)
        backend = _backend(ctx.backend)
        t1 = time.perf_counter()
        if out is not None and streamed(ctx.shape, mask):  # a mosaic: tiles to the file
            _write_streamed(task, ctx, out, data, mask, solution, backend, res)
            return res
        w = warp(data, solution.transform, ctx.shape, backend=backend, order=ctx.interp_order,
                 cval=ctx.cval, mask=mask, threads=ctx.threads, dtype=np.dtype(ctx.dtype),
                 overwrite_input=True)
        del data
        solution.timings["warp"] = time.perf_counter() - t1
        result = AlignResult(w.data, w.footprint, w.mask, solution, backend.name)
        s = solution.stats
        res.n_match, res.rms, res.degree = int(s["n_match"]), float(s["rms"]), solution.degree
        res.solution = solution
        if out is not None:
            t2 = time.perf_counter()
            hdr = _stamped_header(task, ctx, solution, backend)
            _clean_temporaries(out)
            write_fits_atomic(out, result_hdus(result, hdr), overwrite=ctx.overwrite)
            res.written = True
            solution.timings["write"] = time.perf_counter() - t2
        else:
            res.result = result
        res.status = "ok"
        res.message = f"{res.n_match} matches, rms {res.rms:.3f} px"
        log.info("%s: %s; %s", task.name, res.message,
                 ", ".join(f"{k} {v:.2f}s" for k, v in solution.timings.items()))
    except Exception as exc:  # one bad frame must not abort the batch
        res.status, res.error = "failed", type(exc).__name__
        res.message = (str(exc).splitlines() or [type(exc).__name__])[0]
        log.debug("%s failed", task.name, exc_info=True)
    finally:
        res.seconds = time.perf_counter() - t0
        if _collector is not None:
            _collector.lists.pop(threading.get_ident(), None)
        res.logs = sink
    return res


def _stamped_header(task: FrameTask, ctx: BatchContext, solution: Any, backend: Any) -> Any:
    from gpualign.cli._align import output_header

    hdr = output_header(ctx.header, solution, task.name, backend.name, ctx.interp_order)
    hdr["GA_TMPL"] = (ctx.template_key, "fingerprint of the template catalogue")
    hdr["GA_BATCH"] = (ctx.batch_id, "id of the batch that wrote this file")
    return hdr


def _write_streamed(task: FrameTask, ctx: BatchContext, out: Path, data: np.ndarray,
                    mask: Any, solution: Any, backend: Any, res: FrameResult) -> None:
    """The warp of a big frame, written tile by tile into its output file."""
    from gpualign.io._tiled import warp_to_fits

    t1 = time.perf_counter()
    s = solution.stats
    res.n_match, res.rms, res.degree = int(s["n_match"]), float(s["rms"]), solution.degree
    res.solution = solution
    _clean_temporaries(out)
    warp_to_fits(data, solution.transform, ctx.shape, out,
                 _stamped_header(task, ctx, solution, backend), backend=backend,
                 order=ctx.interp_order, cval=ctx.cval, mask=mask, threads=ctx.threads,
                 dtype=np.dtype(ctx.dtype), overwrite=ctx.overwrite, overwrite_input=True)
    res.written = True
    solution.timings["warp+write"] = time.perf_counter() - t1
    res.status = "ok"
    res.message = f"{res.n_match} matches, rms {res.rms:.3f} px"
    log.info("%s: %s; %s", task.name, res.message,
             ", ".join(f"{k} {v:.2f}s" for k, v in solution.timings.items()))


def failed_result(task: FrameTask, message: str, error: str) -> FrameResult:
    """A failure that happened outside :func:`process_frame` (lost worker, timeout)."""
    out = Path(task.output) if task.output else None
    return FrameResult(task.index, task.name, out, "failed", message, error)


# ---------------------------------------------------------------- engines

_pool_state: dict[str, Any] = {}


_BLAS_SETTERS = ("openblas_set_num_threads", "openblas_set_num_threads64_",
                 "scipy_openblas_set_num_threads", "scipy_openblas_set_num_threads64_",
                 "MKL_Set_Num_Threads")


def limit_blas_threads(n: int = 1) -> int:
    """Set the thread count of every BLAS loaded in this process; return how many were set.

    A pool runs one frame per core already; BLAS threads on top (the fit's products,
    the warp's separable surfaces) only oversubscribe the cores. This is what
    ``OPENBLAS_NUM_THREADS=1`` does (Dask's nanny sets it for its workers), for the
    libraries a forked worker inherits already loaded.
    """
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "blas" in line.lower()
                     or "mkl_rt" in line.lower()}
    except OSError:  # not Linux
        return 0
    count = 0
    for path in sorted(p for p in paths if p.startswith("/")):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _BLAS_SETTERS:
            setter = getattr(lib, name, None)
            if setter is not None:
                setter(ctypes.c_int(n))
                count += 1
                break
    return count


def _pool_init(ctx: BatchContext, frame_fn: FrameFn) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    limit_blas_threads(1)
    _worker_setup(ctx.log_level)
    _pool_state.update(ctx=ctx, fn=frame_fn)


def _pool_frame(task: FrameTask) -> FrameResult:
    return _pool_state["fn"](task, _pool_state["ctx"])


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def auto_processes(n_frames: int, shape: tuple[int, int], backend: str) -> int:
    """Local worker processes for a batch: one per core, as memory allows (1 on a GPU)."""
    if backend not in ("numpy", "auto") or n_frames < 2:
        return 1
    if backend == "auto" and _backend("auto").name != "numpy":
        return 1
    per_frame = 64 * int(shape[0]) * int(shape[1])  # source, spline, coordinates, output
    return max(1, min(_cores(), n_frames, _available_memory() // max(per_frame, 1)))


def _mp_context() -> Any:
    import multiprocessing as mp

    # fork shares the parent's imports (fast start); only safe with no other thread.
    if threading.active_count() == 1 and "fork" in mp.get_all_start_methods():
        return mp.get_context("fork")
    return mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods()
                          else "spawn")


def start_pool(n: int, ctx: BatchContext, frame_fn: FrameFn) -> Any:
    """A pool of ``n`` worker processes, launched now.

    Forking is fast (the workers inherit the imports) but safe only while this process
    runs no other thread, so the pool is started before any progress display (whose
    refresh runs in a thread); with threads, workers come from a fork server.
    """
    import warnings
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(n, mp_context=_mp_context(), initializer=_pool_init,
                               initargs=(ctx, frame_fn))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork + native (BLAS) threads
        pool.submit(int).result()  # launches every worker (fork start: all at once)
    return pool


def _run_pool(tasks: list[FrameTask], ctx: BatchContext, frame_fn: FrameFn, pool: Any,
              emit: Callable[[FrameResult], None], max_deaths: int = 2) -> None:
    """All frames in ``pool``; the frames a dead worker took down run again one by one.

    A worker that dies (out of memory, a crash in native code) breaks the whole pool
    and every frame not yet finished is lost with it, most of them innocent. They
    are run again one at a time in a one-worker pool, so that a death is then
    charged to the frame that caused it; a frame whose worker dies ``max_deaths``
    times that way fails, the others complete (an output an attempt already wrote
    is recognised, :func:`process_frame`, and not written again).
    """
    from concurrent.futures import as_completed
    from concurrent.futures.process import BrokenProcessPool

    lost: list[FrameTask] = []
    try:
        futures = {pool.submit(_pool_frame, t): t for t in tasks}
        for fut in as_completed(futures):
            try:
                emit(fut.result())
            except BrokenProcessPool:
                lost.append(futures[fut])
            except Exception as exc:
                emit(failed_result(futures[fut], str(exc), type(exc).__name__))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    if not lost:
        return
    log.warning("a worker process died; %d frame(s) to run again, one at a time", len(lost))
    single = None
    try:
        for t in sorted(lost, key=lambda t: t.index):
            for death in range(1, max_deaths + 1):
                single = single or start_pool(1, ctx, frame_fn)
                try:
                    emit(single.submit(_pool_frame, t).result())
                    break
                except BrokenProcessPool:
                    single.shutdown(wait=False)
                    single = None
                    if death == max_deaths:
                        emit(failed_result(t, f"its worker process died {max_deaths} times "
                                              "(out of memory?)", "WorkerDied"))
                except Exception as exc:
                    emit(failed_result(t, str(exc), type(exc).__name__))
                    break
    except BaseException:
        if single is not None:
            single.shutdown(wait=False, cancel_futures=True)
        raise
    if single is not None:
        single.shutdown(wait=True)


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
        from gpualign.batch._dask import run_on_dask

        run_on_dask(client, tasks, ctx, frame_fn, emit, timeout=timeout)
    elif pool is not None or (processes > 1 and len(tasks) > 1):
        pool = pool or start_pool(min(processes, len(tasks)), ctx, frame_fn)
        _run_pool(tasks, ctx, frame_fn, pool, emit)
    else:
        with _progress.suppressed():
            for t in tasks:
                emit(frame_fn(t, ctx))
    return [done[t.index] for t in tasks]


