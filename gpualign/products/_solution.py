"""The found mapping and its evidence (:class:`Solution`), and its JSON file.

A file holds the template -> source :class:`~gpualign.transform.Transform` (linear
part and distortion model), its inverse, the image shapes it belongs to, the
parity, degree, linear and distortion models, and the fit statistics and matched
pairs. Every float64 loads back identical (:mod:`gpualign.transform._serialise`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpualign._errors import InputError
from gpualign.transform import Transform
from gpualign.transform._polynomial import MAX_FILE_DEGREE
from gpualign.transform._serialise import (
    FORMAT,
    VERSION,
    check_file_dict,
    decode_numbers,
    encode,
    read_json,
    write_json,
)

__all__ = ["Solution", "save_solution", "load_solution", "save_transform", "load_transform",
           "solution_to_dict", "solution_from_dict", "fit_statistics"]


@dataclass
class Solution:
    """A found mapping and the evidence for it.

    Attributes
    ----------
    transform : Transform
        Template pixel -> source pixel (what the warp uses).
    inverse : Transform
        Source pixel -> template pixel, fitted on the same pairs.
    template_xy, source_xy : ndarray, shape (N, 2)
        The matched star pairs used in the final fit (inliers).
    stats : dict
        Fit statistics (see ``gpualign.products.fit_statistics``).
    degree : int
        Degree of the distortion polynomial (1 = affine only).
    mirrored : bool
        Whether the source is a mirror image of the template.
    cv_scores : dict
        Held-out RMS (source px) per degree tried, from the final iteration.
    source_shape, template_shape : tuple of int or None
    timings : dict
        Seconds per stage.
    model : str
        Linear part: ``"similarity"`` or ``"affine"``.
    model_scores : dict
        Held-out RMS per linear model tried.
    distortion : str
        Distortion model (``"poly"``, ``"tps"``; see :class:`gpualign.DistortionModel`).
    distortion_scores : dict
        Held-out RMS per distortion model tried (``distortion="auto"``).
    thresholds : tuple of (float or None), optional
        Detection thresholds (sigma) of the source's and the template's catalogues
        (deeper than asked where automatic depth went deeper; None for a catalogue
        given by the user); None when neither was detected here.
    prior : str, optional
        How the initial mapping was found: ``"wcs"`` (the two images' WCSs, verified),
        ``"blind"`` (quad matching; no WCS prior tried) or ``"blind-fallback"`` (quad
        matching after the WCS prior failed verification); None when no matching ran
        (a bare transform, a file of an earlier version).
    """

    transform: Transform
    inverse: Transform
    template_xy: np.ndarray
    source_xy: np.ndarray
    stats: dict[str, float]
    degree: int
    mirrored: bool
    cv_scores: dict[int, float]
    source_shape: tuple[int, int] | None
    template_shape: tuple[int, int] | None
    timings: dict[str, float] = field(default_factory=dict)
    model: str = "affine"
    model_scores: dict[str, float] = field(default_factory=dict)
    distortion: str = "poly"
    distortion_scores: dict[str, float] = field(default_factory=dict)
    thresholds: tuple[float | None, float | None] | None = None
    prior: str | None = None

    def save(self, path: Any) -> None:
        """Write this solution to a JSON file (exact round trip, see :meth:`load`)."""
        save_solution(self, path)

    @classmethod
    def load(cls, path: Any) -> Solution:
        """Read a solution written by :meth:`save` (or a bare transform file)."""
        return load_solution(path)

    def plot(self, path: str | os.PathLike | None = None, **kw: Any) -> Any:
        """The diagnostic figure of this fit, saved to ``path`` when given.

        Parameters
        ----------
        path : str or path, optional
            Write the figure there, atomically, in the format its suffix names
            (``.png``, ``.pdf``, ``.svg``, ...).
        **kw
            ``fig``, ``exaggerate``: see :func:`gpualign.products.plot_solution`.

        Returns
        -------
        matplotlib.figure.Figure
            Matched stars, residual vectors, residuals against x and y, the
            distortion surface and the held-out errors.

        Raises
        ------
        PlottingUnavailable
            Without matplotlib (``pip install "gpualign[plot]"``).
        """
        from gpualign.products._plot import plot_solution, save_figure

        fig = plot_solution(self, **kw)
        if path is not None:
            save_figure(fig, path)
        return fig


def fit_statistics(inverse: Transform, template_xy: np.ndarray, source_xy: np.ndarray) -> dict:
    """Residuals of the matched pairs in template pixels (as spalipy's log_transform_stats)."""
    r = inverse.map_points(source_xy) - template_xy
    stats = {"n_match": int(len(r))}
    for k, axis in enumerate("xy"):
        stats[f"{axis}_mean"] = float(np.mean(r[:, k])) if len(r) else np.nan
        stats[f"{axis}_median"] = float(np.median(r[:, k])) if len(r) else np.nan
        stats[f"{axis}_std"] = float(np.std(r[:, k])) if len(r) else np.nan
    stats["rms"] = float(np.sqrt(np.mean(np.sum(r**2, axis=1)))) if len(r) else np.nan
    return stats


def _short(v: Any) -> str:
    """``repr(v)``, cut to a length a one-line message can hold."""
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _transform_from(d: Any, key: str = "transform") -> Transform:
    if not isinstance(d, dict):
        raise ValueError(f"{key} must be an object, got {_short(d)}")
    try:
        return Transform.from_dict({k: decode_numbers(v) for k, v in d.items()})
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _shape(v: Any, key: str) -> tuple[int, int] | None:
    if v is None:
        return None
    if not isinstance(v, list) or len(v) != 2 or not all(_integer(n) and n > 0 for n in v):
        raise ValueError(f"{key} must be two positive integers (ny, nx), got {_short(v)}")
    return v[0], v[1]


def _field(d: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    """``d[key]`` (``default`` if absent); ValueError unless it is a ``kind``."""
    v = d.get(key, default)
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise ValueError(f"{key} must be {kind.__name__}, got {_short(v)}")
    return v


def _thresholds(v: Any) -> tuple[float | None, float | None] | None:
    """The detection thresholds of a file (absent in files of earlier versions)."""
    def sigma(t: Any) -> float | None:
        if t is None:
            return None
        if isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < 1e300:
            return float(t)
        raise ValueError

    if v is None:
        return None
    try:
        if not isinstance(v, list) or len(v) != 2:
            raise ValueError
        return sigma(v[0]), sigma(v[1])
    except ValueError:
        raise ValueError(f"thresholds must be two positive numbers or nulls (source, "
                         f"template), got {_short(v)}") from None


def _prior(v: Any) -> str | None:
    """How the initial mapping was found (absent in files of earlier versions)."""
    if v is None or (isinstance(v, str) and 0 < len(v) <= 40 and v.isprintable()):
        return v
    raise ValueError(f"prior must be a short string or null, got {_short(v)}")


def solution_to_dict(solution: Any) -> dict[str, Any]:
    """A Solution (or a bare Transform) as a JSON-serialisable dict."""
    if isinstance(solution, Transform):
        return {"format": FORMAT, "version": VERSION, "transform": encode(solution.to_dict())}
    if not isinstance(solution, Solution):
        raise TypeError(f"cannot save a {type(solution).__name__}")
    return {
        "format": FORMAT,
        "version": VERSION,
        "direction": "template pixel -> source pixel (0-based, x = column, y = row)",
        "transform": encode(solution.transform.to_dict()),
        "inverse": encode(solution.inverse.to_dict()),
        "source_shape": encode(solution.source_shape),
        "template_shape": encode(solution.template_shape),
        "degree": int(solution.degree),
        "mirrored": bool(solution.mirrored),
        "model": getattr(solution, "model", "affine"),
        "model_scores": encode(getattr(solution, "model_scores", {})),
        **({"distortion": solution.distortion,
            "distortion_scores": encode(solution.distortion_scores)}
           if solution.distortion != "poly" else {}),
        **({"thresholds": [None if v is None else float(v) for v in solution.thresholds]}
           if getattr(solution, "thresholds", None) is not None else {}),
        **({"prior": solution.prior} if getattr(solution, "prior", None) is not None else {}),
        "stats": encode(solution.stats),
        "cv_scores": encode({str(k): v for k, v in solution.cv_scores.items()}),
        "template_xy": encode(np.asarray(solution.template_xy, dtype=np.float64)),
        "source_xy": encode(np.asarray(solution.source_xy, dtype=np.float64)),
        "timings": encode(solution.timings),
    }


def solution_from_dict(d: dict[str, Any]) -> Any:
    """Inverse of :func:`solution_to_dict` (a bare transform gets an empty Solution)."""
    check_file_dict(d)
    t = _transform_from(d["transform"])
    if "inverse" in d:
        inv = _transform_from(d["inverse"], "inverse")
    else:  # a bare transform: the inverse of its affine part
        full = np.vstack([t.matrix, [0.0, 0.0, 1.0]])
        inv = Transform.from_matrix(np.linalg.inv(full))
    pairs = [np.array(decode_numbers(d.get(k, [])), dtype=np.float64).reshape(-1, 2)
             for k in ("template_xy", "source_xy")]
    if len(pairs[0]) != len(pairs[1]):
        raise ValueError(f"template_xy holds {len(pairs[0])} points but source_xy "
                         f"{len(pairs[1])}")
    degree = _field(d, "degree", int, t.degree)
    if not 0 <= degree <= MAX_FILE_DEGREE:
        raise ValueError(f"degree must be from 0 to {MAX_FILE_DEGREE}, got {degree}")
    scores = {key: {k: decode_numbers(v) for k, v in _field(d, key, dict, {}).items()}
              for key in ("stats", "cv_scores", "timings", "model_scores", "distortion_scores")}
    return Solution(
        transform=t,
        inverse=inv,
        template_xy=pairs[0],
        source_xy=pairs[1],
        stats=scores["stats"],
        degree=degree,
        mirrored=_field(d, "mirrored", bool, bool(np.linalg.det(t.matrix[:, :2]) < 0)),
        cv_scores={int(k): v for k, v in scores["cv_scores"].items()},
        source_shape=_shape(d.get("source_shape"), "source_shape"),
        template_shape=_shape(d.get("template_shape"), "template_shape"),
        timings=scores["timings"],
        model=_field(d, "model", str, "affine"),
        model_scores=scores["model_scores"],
        distortion=_field(d, "distortion", str, t.distortion.name),
        distortion_scores=scores["distortion_scores"],
        thresholds=_thresholds(d.get("thresholds")),
        prior=_prior(d.get("prior")),
    )


def save_solution(solution: Any, path: str | os.PathLike) -> None:
    """Write a Solution (or Transform) as JSON, atomically.

    Parameters
    ----------
    solution : Solution or Transform
        What to save.
    path : str or path
        Destination file (replaced if it exists).
    """
    write_json(solution_to_dict(solution), path)


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
    d = read_json(p)
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
