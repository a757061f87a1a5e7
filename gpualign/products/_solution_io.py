"""Saving and loading found mappings: small JSON files that load back to the bit.

A file holds the template -> source :class:`~gpualign._transform.Transform` (affine
matrix, distortion coefficients, normalisation and clip box), its inverse, the image
shapes it belongs to, the parity, degree and linear model, and the fit statistics
and matched pairs. Floats are written with Python's shortest round-trip repr, so
every float64 loads back identical; non-finite values (the clip box of an
affine-only transform is infinite) are written as the strings ``"inf"``, ``"-inf"``
and ``"nan"`` to stay standard JSON.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from gpualign._errors import InputError
from gpualign.transform._transform import Transform

__all__ = ["save_solution", "load_solution", "save_transform", "load_transform",
           "solution_to_dict", "solution_from_dict"]

FORMAT = "gpualign-transform"
VERSION = 1


def _enc(value: Any) -> Any:
    """JSON-safe copy: arrays to lists, non-finite floats to strings."""
    if isinstance(value, np.ndarray):
        return _enc(value.tolist())
    if isinstance(value, dict):
        return {str(k): _enc(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_enc(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else str(v)
    return value


def _num(value: Any) -> Any:
    """Inverse of the non-finite encoding, recursively, for numeric fields."""
    if isinstance(value, list):
        return [_num(v) for v in value]
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    return value


def _transform_from(d: dict[str, Any]) -> Transform:
    return Transform.from_dict({k: _num(v) for k, v in d.items()})


def _shape(v: Any) -> tuple[int, int] | None:
    return None if v is None else (int(v[0]), int(v[1]))


def solution_to_dict(solution: Any) -> dict[str, Any]:
    """A Solution (or a bare Transform) as a JSON-serialisable dict."""
    from gpualign.pipeline._api import Solution

    if isinstance(solution, Transform):
        return {"format": FORMAT, "version": VERSION, "transform": _enc(solution.to_dict())}
    if not isinstance(solution, Solution):
        raise TypeError(f"cannot save a {type(solution).__name__}")
    return {
        "format": FORMAT,
        "version": VERSION,
        "direction": "template pixel -> source pixel (0-based, x = column, y = row)",
        "transform": _enc(solution.transform.to_dict()),
        "inverse": _enc(solution.inverse.to_dict()),
        "source_shape": _enc(solution.source_shape),
        "template_shape": _enc(solution.template_shape),
        "degree": int(solution.degree),
        "mirrored": bool(solution.mirrored),
        "model": getattr(solution, "model", "affine"),
        "model_scores": _enc(getattr(solution, "model_scores", {})),
        "stats": _enc(solution.stats),
        "cv_scores": _enc({str(k): v for k, v in solution.cv_scores.items()}),
        "template_xy": _enc(np.asarray(solution.template_xy, dtype=np.float64)),
        "source_xy": _enc(np.asarray(solution.source_xy, dtype=np.float64)),
        "timings": _enc(solution.timings),
    }


def solution_from_dict(d: dict[str, Any]) -> Any:
    """Inverse of :func:`solution_to_dict` (a bare transform gets an empty Solution)."""
    from gpualign.pipeline._api import Solution

    if not isinstance(d, dict) or d.get("format") != FORMAT or "transform" not in d:
        raise InputError("not a gpualign transform file",
                         hint="write one with Solution.save() or gpualign align --save-transform")
    if int(d.get("version", 0)) > VERSION:
        raise InputError(f"transform file version {d.get('version')} is newer than this "
                         f"gpualign reads ({VERSION})", hint="upgrade gpualign")
    t = _transform_from(d["transform"])
    if "inverse" in d:
        inv = _transform_from(d["inverse"])
    else:  # a bare transform: the inverse of its affine part
        full = np.vstack([t.matrix, [0.0, 0.0, 1.0]])
        inv = Transform.from_matrix(np.linalg.inv(full))
    pairs = [np.array(_num(d.get(k, [])), dtype=np.float64).reshape(-1, 2)
             for k in ("template_xy", "source_xy")]
    return Solution(
        transform=t,
        inverse=inv,
        template_xy=pairs[0],
        source_xy=pairs[1],
        stats={k: _num(v) for k, v in d.get("stats", {}).items()},
        degree=int(d.get("degree", t.degree)),
        mirrored=bool(d.get("mirrored", np.linalg.det(t.matrix[:, :2]) < 0)),
        cv_scores={int(k): _num(v) for k, v in d.get("cv_scores", {}).items()},
        source_shape=_shape(d.get("source_shape")),
        template_shape=_shape(d.get("template_shape")),
        timings={k: _num(v) for k, v in d.get("timings", {}).items()},
        model=str(d.get("model", "affine")),
        model_scores={k: _num(v) for k, v in d.get("model_scores", {}).items()},
    )


def _write_atomic(path: Path, text: str) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise InputError(f"output directory does not exist: {directory}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        from gpualign.io._read import _umask

        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_solution(solution: Any, path: str | os.PathLike) -> None:
    """Write a Solution (or Transform) as JSON, atomically.

    Parameters
    ----------
    solution : Solution or Transform
        What to save.
    path : str or path
        Destination file (replaced if it exists).
    """
    text = json.dumps(solution_to_dict(solution), indent=1, allow_nan=False)
    _write_atomic(Path(path), text + "\n")


def load_solution(path: str | os.PathLike) -> Any:
    """Read a file written by :func:`save_solution`.

    Parameters
    ----------
    path : str or path
        The JSON file.

    Returns
    -------
    Solution
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"transform file not found: {p}")
    try:
        d = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {p} as a transform file ({exc})".splitlines()[0],
                         hint="write one with Solution.save()") from None
    try:
        return solution_from_dict(d)
    except InputError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputError(f"{p} is not a valid gpualign transform file ({exc})") from None


def save_transform(transform: Transform, path: str | os.PathLike) -> None:
    """Write a bare Transform as JSON (see :func:`save_solution`)."""
    save_solution(transform, path)


def load_transform(path: str | os.PathLike) -> Transform:
    """Read the template -> source Transform of a transform file."""
    return load_solution(path).transform
