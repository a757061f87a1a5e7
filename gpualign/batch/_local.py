"""Frames of a batch in a pool of local worker processes.

One worker per core (as memory allows), forked while this process has a single
thread (fast start: the workers inherit the imports). A worker that dies takes the
pool down; the frames it took with it run again one by one, so that a death is
charged to the frame that caused it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gpualign._system import available_memory, limit_blas_threads, mp_context, usable_cores
from gpualign.batch._types import BatchContext, FrameResult, FrameTask, failed_result
from gpualign.batch._worker import backend_for, worker_setup

log = logging.getLogger("gpualign")

__all__ = ["auto_processes", "start_pool", "run_pool", "FrameFn"]

FrameFn = Callable[[FrameTask, BatchContext], FrameResult]


# ---------------------------------------------------------------- engines

_pool_state: dict[str, Any] = {}


def _pool_init(ctx: BatchContext, frame_fn: FrameFn) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    limit_blas_threads(1)
    worker_setup(ctx.log_level)
    _pool_state.update(ctx=ctx, fn=frame_fn)


def _pool_frame(task: FrameTask) -> FrameResult:
    return _pool_state["fn"](task, _pool_state["ctx"])


def auto_processes(n_frames: int, shape: tuple[int, int], backend: str) -> int:
    """Local worker processes for a batch: one per core, as memory allows (1 on a GPU)."""
    if backend not in ("numpy", "auto") or n_frames < 2:
        return 1
    if backend == "auto" and backend_for("auto").name != "numpy":
        return 1
    per_frame = 64 * int(shape[0]) * int(shape[1])  # source, spline, coordinates, output
    return max(1, min(usable_cores(), n_frames, available_memory() // max(per_frame, 1)))


def start_pool(n: int, ctx: BatchContext, frame_fn: FrameFn) -> Any:
    """A pool of ``n`` worker processes, launched now.

    Forking is fast (the workers inherit the imports) but safe only while this process
    runs no other thread, so the pool is started before any progress display (whose
    refresh runs in a thread); with threads, workers come from a fork server.
    """
    import warnings
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(n, mp_context=mp_context(), initializer=_pool_init,
                               initargs=(ctx, frame_fn))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork + native (BLAS) threads
        pool.submit(int).result()  # launches every worker (fork start: all at once)
    return pool


def run_pool(tasks: list[FrameTask], ctx: BatchContext, frame_fn: FrameFn, pool: Any,
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
