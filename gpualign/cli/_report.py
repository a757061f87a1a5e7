"""``gpualign align --report FILE.json``: what happened to each frame, as one JSON file.

Also the ``--plot FILE.png`` of a run (:func:`check_plot`, :func:`write_frame_plot`,
:func:`write_batch_plot`): checked with the report, before any work, and written
after the run, atomically, as the report.

The file is an object::

    {"gpualign": "<version>",
     "versions": {"python": ..., "numpy": ..., "scipy": ..., "astropy": ..., "sep": ...},
     "frames": [<frame>, ...]}

with one frame for a single source and one per source of a batch, in the order given.
A frame holds ``index``, ``source``, ``output``, ``status`` (``"ok"``, ``"skipped"``:
the output existed, ``"failed"``), ``message`` (one line: what was done or why it
failed), ``error`` (the exception class of a failure, else null), ``backend``,
``seconds`` (the frame's wall time), ``warnings`` (the messages of the
:class:`~gpualign.GpuAlignWarning` issued for the frame, also shown as they came) and,
from the solution (null where there is none: a failed frame, a skipped one):
``n_match``, ``rms`` (template px), ``stats`` (the residual statistics of
:func:`gpualign.products.fit_statistics`), ``model``, ``distortion``, ``degree``,
``mirrored``, ``cv_scores`` (held-out RMS per degree tried), ``model_scores`` and
``distortion_scores`` (held-out RMS per model tried), ``thresholds`` (the detection
depth, sigma, as ``{"source": ..., "template": ...}``; null for a catalogue given by
the user), ``prior`` (how the initial match was found: ``"wcs"``, ``"blind"`` or
``"blind-fallback"``, see ``gpualign.match._prior.PRIOR_CODES``) and ``timings``
(seconds per stage). A skipped frame keeps the ``n_match``,
``rms`` and ``degree`` its existing output's header records.

Non-finite numbers are written as the strings ``"nan"``, ``"inf"`` and ``"-inf"``
(as in transform files, :mod:`gpualign.transform._serialise`), so the file is
standard JSON.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from gpualign._errors import InputError
from gpualign._system import refuse_overwriting_inputs, write_text_atomic
from gpualign._version import __version__
from gpualign.batch import FrameResult
from gpualign.cli._info import _installed
from gpualign.products._plot import check_plot_format, plot_batch, plot_solution, save_figure
from gpualign.transform._serialise import encode

__all__ = ["check_report", "check_plot", "write_frame_plot", "write_batch_plot",
           "solution_fields", "frame_entry", "batch_entry", "build_report",
           "write_report"]

#: Packages whose installed version the report names.
_PACKAGES = ("numpy", "scipy", "astropy", "sep")


def _check_output_file(option: str, path: Path, inputs: list[Any], outputs: list[Any]) -> None:
    """InputError when the file of ``option`` cannot be written safely (see check_report)."""
    path = Path(path)
    if not path.absolute().parent.is_dir():
        raise InputError(f"{option.lstrip('-')} directory does not exist: {path.parent}",
                         hint="create it first")
    if path.is_dir():
        raise InputError(f"{option} {path} is a directory", hint="give a file name")
    refuse_overwriting_inputs([path], inputs)
    target = path.resolve()
    for out in outputs:
        if isinstance(out, (str, os.PathLike)) and Path(out).resolve() == target:
            raise InputError(f"{option} {path} is also an output of the run",
                             hint=f"give the {option.lstrip('-')} its own file name")


def check_report(report: Path, inputs: list[Any], outputs: list[Any]) -> None:
    """InputError, before any work, for a report path that cannot be written safely.

    Parameters
    ----------
    report : Path
        The ``--report`` file.
    inputs : list
        Every input of the run (paths; other entries are passed over): the report never
        replaces one.
    outputs : list
        The run's other outputs (image, saved transform, plot; paths or None): the
        report must not be written where one of them goes.

    Raises
    ------
    InputError
        When the report's directory does not exist, the report names a directory, an
        input, or another output of the run.
    """
    _check_output_file("--report", report, inputs, outputs)


def check_plot(plot: Path, inputs: list[Any], outputs: list[Any], *, replace: bool) -> None:
    """InputError, before any work, for a ``--plot`` file that cannot be written.

    Parameters
    ----------
    plot : Path
        The ``--plot`` file; its suffix names the format (``.png``, ``.pdf``, ...).
    inputs, outputs : list
        As for :func:`check_report`.
    replace : bool
        Whether an existing file may be replaced (``--overwrite``, or
        ``--skip-existing``: a resumed run redraws its plot).

    Raises
    ------
    InputError
        As :func:`check_report`; also when the file exists and ``replace`` is false,
        when the suffix names no image format, and (PlottingUnavailable) when
        matplotlib is not installed.
    """
    _check_output_file("--plot", plot, inputs, outputs)
    if Path(plot).exists() and not replace:
        raise InputError(f"--plot {plot} exists", hint="add --overwrite to replace it")
    check_plot_format(plot)


def write_frame_plot(solution: Any, path: Path) -> None:
    """Draw one frame's diagnostic figure and write it to ``path`` atomically."""
    save_figure(plot_solution(solution), path)


def write_batch_plot(results: list[FrameResult], path: Path) -> None:
    """Draw a batch's summary (RMS and matches per frame) and write it atomically."""
    save_figure(plot_batch(results), path)


def solution_fields(solution: Any) -> dict[str, Any]:
    """The report's fields taken from a :class:`~gpualign.products.Solution` (or None).

    Parameters
    ----------
    solution : Solution or None
        The frame's solution; None gives every field null.

    Returns
    -------
    dict
        ``n_match``, ``rms``, ``stats``, ``model``, ``distortion``, ``degree``,
        ``mirrored``, ``cv_scores``, ``model_scores``, ``distortion_scores``,
        ``thresholds``, ``prior`` and ``timings`` (not yet JSON-encoded).
    """
    keys = ("n_match", "rms", "stats", "model", "distortion", "degree", "mirrored",
            "cv_scores", "model_scores", "distortion_scores", "thresholds", "prior",
            "timings")
    if solution is None:
        return dict.fromkeys(keys)
    thresholds = solution.thresholds
    return {
        "n_match": int(solution.stats["n_match"]),
        "rms": float(solution.stats["rms"]),
        "stats": dict(solution.stats),
        "model": solution.model,
        "distortion": solution.distortion,
        "degree": int(solution.degree),
        "mirrored": bool(solution.mirrored),
        "cv_scores": dict(solution.cv_scores),
        "model_scores": dict(solution.model_scores),
        "distortion_scores": dict(solution.distortion_scores),
        "thresholds": None if thresholds is None else
        {"source": thresholds[0], "template": thresholds[1]},
        "prior": getattr(solution, "prior", None),
        "timings": dict(solution.timings),
    }


def frame_entry(source: Any, output: Any, solution: Any, *, backend: str, seconds: float,
                warnings: list[str], index: int = 0, status: str = "ok", message: str = "",
                error: str | None = None) -> dict[str, Any]:
    """One frame of the report (see the module's description), not yet JSON-encoded.

    Parameters
    ----------
    source, output : path or str or None
        The source and the output written for it.
    solution : Solution or None
        The frame's solution (None when it failed or was skipped).
    backend : str
        Name of the backend the frame ran on.
    seconds : float
        Wall time of the frame.
    warnings : list of str
        Messages of the GpuAlignWarnings issued for the frame.
    index : int
        Position of the frame in the run.
    status, message, error :
        ``"ok"``, ``"skipped"`` or ``"failed"``; one line on what was done or why it
        failed; the exception class of a failure.

    Returns
    -------
    dict
    """
    return {"index": int(index), "source": str(source),
            "output": None if output is None else str(output), "status": status,
            "message": message, "error": error, "backend": backend,
            "seconds": float(seconds), "warnings": list(warnings),
            **solution_fields(solution)}


def batch_entry(result: FrameResult, backend: str) -> dict[str, Any]:
    """The report's frame for one :class:`~gpualign.batch.FrameResult` of a batch.

    A frame without a solution (skipped: its existing output's header; failed) keeps
    the ``n_match``, ``rms`` and ``degree`` the result holds.
    """
    entry = frame_entry(result.source, result.output, result.solution, backend=backend,
                        seconds=result.seconds, warnings=result.warnings,
                        index=result.index, status=result.status, message=result.message,
                        error=result.error)
    if result.solution is None and result.status == "skipped":
        entry.update(n_match=int(result.n_match), rms=float(result.rms),
                     degree=int(result.degree))
    return entry


def _versions() -> dict[str, str]:
    """Python's version and those of the packages the run used (CuPy's when imported)."""
    versions = {"python": platform.python_version()}
    versions.update((name, _installed(name)) for name in _PACKAGES)
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        versions["cupy"] = str(getattr(cupy, "__version__", "unknown"))
    return versions


def build_report(frames: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole report: gpualign's version, the packages' versions and the frames."""
    return {"gpualign": __version__, "versions": _versions(), "frames": frames}


def write_report(report: dict[str, Any], path: Path) -> None:
    """Write ``report`` as indented, standard JSON (non-finite numbers as strings), atomically.

    Parameters
    ----------
    report : dict
        What :func:`build_report` returns.
    path : Path
        The file (replaced if it exists).
    """
    text = json.dumps(encode(report), indent=1, allow_nan=False)
    write_text_atomic(Path(path), text + "\n")
