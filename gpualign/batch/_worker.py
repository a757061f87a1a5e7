"""One frame in whichever process runs it: the frame function and its log collection.

:func:`process_frame` aligns one source against the batch's template catalogue
through the frame runner and writes its output atomically; it never raises for a
frame-level failure. In a worker process, the frame's gpualign log records are
collected and sent back with its result, so the parent prints them (above its
progress bar) in one stream.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from gpualign import _progress
from gpualign._errors import GpuAlignWarning, InputError
from gpualign.batch._types import BatchContext, FrameResult, FrameTask

log = logging.getLogger("gpualign")

__all__ = ["backend_for", "process_frame", "worker_setup"]


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


def worker_setup(log_level: int) -> None:
    """In a worker process: no progress display, gpualign records collected per frame.

    A :class:`~gpualign.GpuAlignWarning` becomes a WARNING record of the frame (sent to
    the parent with its other records, where it is one line), every time it occurs.
    """
    global _collector
    _progress.configure(enabled=False)
    if _collector is None:
        _collector = _Collector()
        logger = logging.getLogger("gpualign")
        logger.handlers[:] = [_collector]
        logger.propagate = False
        warnings.filterwarnings("always", category=GpuAlignWarning)
        warnings.showwarning = _warning_to_log(warnings.showwarning)
    logging.getLogger("gpualign").setLevel(log_level)


def _warning_to_log(previous: Any) -> Any:
    """A ``warnings.showwarning`` logging a GpuAlignWarning at WARNING (others as before)."""

    def show(message: Warning | str, category: type[Warning], *args: Any,
             **kwargs: Any) -> None:
        if isinstance(category, type) and issubclass(category, GpuAlignWarning):
            log.warning("%s", (str(message).splitlines() or [category.__name__])[0],
                        extra={"gpualign_warning": str(message)})
        else:
            previous(message, category, *args, **kwargs)

    return show


def backend_for(name: str) -> Any:
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

    The frame goes through the same runner as a single alignment
    (:func:`gpualign.pipeline.run_frame`), with the batch's template catalogue.

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
    from gpualign.pipeline import FrameOptions, TemplateSide, run_frame

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
            _clean_temporaries(out)
        elif out is not None:
            _clean_temporaries(out)
        side = TemplateSide(ctx.template, ctx.header, ctx.shape, reload=ctx.template_reload,
                            retry=ctx.template_retry)
        options = FrameOptions(
            interp_order=ctx.interp_order, cval=ctx.cval, dtype=np.dtype(ctx.dtype),
            threads=ctx.threads, source_ext=ctx.source_ext, output=out,
            conserve_flux=ctx.conserve_flux, preserve_footprints=ctx.preserve_footprints,
            protected=ctx.protected, max_memory=ctx.max_memory,
            overwrite=ctx.overwrite, stamps=[
                ("GA_TMPL", ctx.template_key, "fingerprint of the template catalogue"),
                ("GA_BATCH", ctx.batch_id, "id of the batch that wrote this file")])
        frame = run_frame(task.source, side, detect=ctx.detect, match=ctx.match, fit=ctx.fit,
                          backend=backend_for(ctx.backend), options=options,
                          source_name=task.name)
        solution = frame.solution
        s = solution.stats
        res.n_match, res.rms, res.degree = int(s["n_match"]), float(s["rms"]), solution.degree
        res.solution = solution
        res.written = out is not None
        if out is None:
            res.result = frame.result
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
        res.warnings.extend(d["gpualign_warning"] for d in sink if "gpualign_warning" in d)
    return res
