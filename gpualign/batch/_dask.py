"""Frames of a batch on a Dask distributed cluster.

``gpualign align SRC... --scheduler ADDRESS`` sends the frames to an existing
cluster; ``--workers N`` starts a local one (dask-cuda's one-worker-per-GPU
``LocalCUDACluster`` when the backend is CuPy and dask-cuda is installed; a
``distributed.LocalCluster`` of N single-threaded processes on loopback otherwise).

What travels: the :class:`~gpualign.batch._types.BatchContext` (template catalogue,
header, options: kilobytes, never the template pixels) once, as a task of its own
that every frame depends on, so a worker that joins or restarts fetches it from a
peer or recomputes it, never losing it; and one small task per frame, naming its
source file, which the worker reads itself (the sources and the output directory
must be on a file system the workers share). Results (or failures) come back per
frame.

A worker that dies mid-frame: the scheduler gives the frame to another worker
(``distributed.scheduler.allowed-failures`` times at most, then the frame is
reported failed with ``KilledWorker``). Outputs are written atomically, so the dead
attempt leaves no partial file, and an output already written by an earlier
attempt of the same batch is recognised (``GA_BATCH``) and not written again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from gpualign._errors import InputError
from gpualign.batch._types import BatchContext, FrameResult, FrameTask, failed_result
from gpualign.batch._worker import worker_setup

log = logging.getLogger("gpualign")

__all__ = ["open_client", "run_on_dask"]


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise InputError("Dask distributed is not installed",
                         hint='pip install "gpualign[dask]"') from None
    return distributed


def _gpu_count(backend: str) -> int:
    """GPUs visible here when the batch would run on CuPy (0 otherwise)."""
    if backend == "numpy":
        return 0
    from gpualign.backend import get_backend

    chosen = get_backend(backend)
    if chosen.name != "cupy":
        return 0
    # the backend's own CuPy (gpualign._backend is the only place that imports it)
    return int(chosen.xp.cuda.runtime.getDeviceCount())


def _local_cluster(workers: int, backend: str) -> Any:
    distributed = _distributed()
    # No dashboard; the scheduler's HTTP routes (health, metrics) on a free port, not
    # on 8787, which another cluster of this machine may hold.
    common = dict(threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                  silence_logs=logging.ERROR)
    n_gpu = _gpu_count(backend)
    if n_gpu:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            log.warning("dask-cuda is not installed: %d workers share GPU 0%s (pip install "
                        "gpualign[cuda12,dask] for one worker per GPU)", workers,
                        f"; the other {n_gpu - 1} stay idle" if n_gpu > 1 else "")
        else:
            return LocalCUDACluster(n_workers=min(workers, n_gpu), **common)
    return distributed.LocalCluster(n_workers=workers, processes=True, **common)


@contextmanager
def open_client(scheduler: Any = None, workers: int | None = None, *, backend: str = "auto",
                timeout: float | None = None) -> Iterator[tuple[Any, int]]:
    """A Dask client for a batch: an existing one, a scheduler's, or a local cluster's.

    Parameters
    ----------
    scheduler : str or distributed.Client, optional
        Address of a running scheduler (``tcp://host:8786``) or a client.
    workers : int, optional
        Start a local cluster of this many worker processes (when no scheduler).
    backend : str
        The batch's backend: on CuPy with dask-cuda, one worker per GPU.
    timeout : float, optional
        Seconds to wait for the scheduler (default: Dask's
        ``distributed.comm.timeouts.connect``, 30 s unless configured).

    Yields
    ------
    (client, n_local)
        ``n_local``: workers of a cluster started here (0 for an existing cluster).
    """
    distributed = _distributed()
    if scheduler is not None and workers is not None:
        raise InputError("--scheduler and --workers exclude each other",
                         hint="--workers starts a local cluster; --scheduler uses yours")
    if isinstance(scheduler, distributed.Client):
        yield scheduler, 0
        return
    if scheduler is not None:
        try:
            if timeout is None:
                import dask

                timeout = dask.config.get("distributed.comm.timeouts.connect")
            client = distributed.Client(str(scheduler), timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler} ({exc})",
                             hint="check the address, or use --workers N for a local cluster"
                             ) from None
        try:
            yield client, 0
        finally:
            client.close()
        return
    if workers is None or int(workers) < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    cluster = _local_cluster(int(workers), backend)
    try:
        with distributed.Client(cluster) as client:
            n = len(client.scheduler_info().get("workers", {})) or int(workers)
            log.info("started a local Dask cluster of %d workers", n)
            yield client, n
    finally:
        cluster.close()


def _hold(ctx: BatchContext) -> BatchContext:
    """The context as a task result: fetched by workers from each other, recomputable."""
    return ctx


def _run_frame(frame_fn: Callable[[FrameTask, BatchContext], FrameResult], task: FrameTask,
               ctx: BatchContext) -> FrameResult:
    worker_setup(ctx.log_level)
    return frame_fn(task, ctx)


def run_on_dask(client: Any, tasks: Sequence[FrameTask], ctx: BatchContext,
                frame_fn: Callable[[FrameTask, BatchContext], FrameResult],
                emit: Callable[[FrameResult], None], *, timeout: float | None = None,
                retries: int = 1) -> None:
    """Submit one task per frame and ``emit`` each result (or failure) as it arrives.

    Parameters
    ----------
    client : distributed.Client
    tasks : sequence of FrameTask
    ctx : BatchContext
        Sent once, as a task every frame depends on.
    frame_fn : callable
        ``frame_fn(task, ctx) -> FrameResult``, run on the workers.
    emit : callable
        Called here with each :class:`FrameResult`.
    timeout : float, optional
        Seconds for the whole batch; frames not done by then are cancelled and failed.
    retries : int
        Extra attempts of a frame whose function raised (frame failures are
        results, not exceptions; a lost worker is handled by the scheduler).
    """
    distributed = _distributed()

    ctx_future = client.submit(_hold, ctx, key=f"gpualign-template-{ctx.batch_id}",
                               pure=False)
    pending = {}
    for t in tasks:
        fut = client.submit(_run_frame, frame_fn, t, ctx_future, pure=False, retries=retries,
                            key=f"gpualign-frame-{ctx.batch_id}-{t.index}")
        pending[fut] = t
    try:
        for fut in distributed.as_completed(list(pending), timeout=timeout):
            t = pending.pop(fut)
            try:
                r = fut.result()
            except Exception as exc:  # KilledWorker, CancelledError, a raising frame_fn
                first = (str(exc).splitlines() or [""])[0]
                r = failed_result(t, f"{type(exc).__name__}: {first}", type(exc).__name__)
            fut.release()
            emit(r)
    except (TimeoutError, asyncio.TimeoutError):
        for t in sorted(pending.values(), key=lambda t: t.index):
            emit(failed_result(t, f"not done after {timeout:g} s", "Timeout"))
    finally:
        if pending:
            client.cancel(list(pending))
        ctx_future.release()
