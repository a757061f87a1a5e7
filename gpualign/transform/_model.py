"""The distortion-model interface and the registry that names the models.

A :class:`~gpualign.transform.Transform` is a linear part (a 2x3 matrix) plus an
optional *distortion model*: a smooth surface of offsets, in source pixels, added at
each template position. Every model answers the same questions, so the rest of the
engine (fitting, model selection, warp, flux, WCS, canvas, files) works with any of
them:

* ``evaluate(x, y)``: the offsets at template points (host, float64);
* ``grid_into(xp, out, xs, ys)``: the offsets on a block of the output grid, written
  into the ``[sy, sx]`` layout that ``map_coordinates`` takes, on any array module;
* ``jacobian_grid(xp, xs, ys)``: the surfaces' partial derivatives on a block;
* ``fit_transform(...)``: a weighted least-squares fit of linear part + surface;
* ``n_params``: free parameters (for model selection);
* ``shifted(ox, oy)``: the same surface seen from a grid whose origin moved;
* ``support_box()``: where the matched stars constrain it (template px);
* ``to_dict()`` / ``from_dict()``: exact JSON round trip.

Models register under a short name (``"poly"``, ``"tps"``); :func:`model_class`
finds one by name and :func:`model_from_dict` rebuilds a saved one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

__all__ = ["DistortionModel", "register_model", "model_class", "model_names",
           "model_from_dict"]

Box = tuple[float, float, float, float]


class DistortionModel(ABC):
    """A smooth surface of source-pixel offsets over the template grid.

    Subclasses set :attr:`name` and implement the abstract methods; they are
    immutable (a fit returns a new model).
    """

    #: Registry name (``--distortion NAME``).
    name: ClassVar[str] = ""

    @property
    @abstractmethod
    def n_params(self) -> int:
        """Free parameters of the surfaces (both axes)."""

    @property
    @abstractmethod
    def is_zero(self) -> bool:
        """Whether the surfaces are identically zero (the transform is linear)."""

    @abstractmethod
    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Offsets ``(dx, dy)`` at template points ``(x, y)`` (host arrays, float64)."""

    @abstractmethod
    def grid_into(self, xp: ModuleType, out: Any, xs: Any, ys: Any) -> None:
        """Write the offsets of the block ``ys x xs`` into ``out``.

        Parameters
        ----------
        xp : module
            Array module of ``out`` (NumPy or CuPy).
        out : array, shape (2, len(ys), len(xs)), float64
            ``out[0]`` receives ``dy`` and ``out[1]`` ``dx`` (``map_coordinates``'s
            ``[sy, sx]`` order); the caller adds the linear part afterwards.
        xs, ys : 1-D arrays of ``xp``, float64
            Template column and row coordinates of the block.
        """

    @abstractmethod
    def jacobian_grid(self, xp: ModuleType, xs: Any, ys: Any) -> tuple[Any, Any, Any, Any]:
        """``d(dx, dy)/d(x, y)`` of the surfaces on the block ``ys x xs``.

        The arrays are new (the caller may modify them in place).

        Returns
        -------
        ddx_dx, ddx_dy, ddy_dx, ddy_dy : arrays of shape (len(ys), len(xs)), float64
        """

    @abstractmethod
    def shifted(self, ox: float, oy: float) -> DistortionModel:
        """The surface seen from a grid whose template pixel (0, 0) sits at (ox, oy)."""

    @abstractmethod
    def support_box(self) -> Box | None:
        """``(x0, x1, y0, y1)`` in template px where stars constrain it (None: everywhere)."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (exact float64 round trip)."""

    @classmethod
    @abstractmethod
    def from_dict(cls, d: dict[str, Any]) -> DistortionModel:
        """Inverse of :meth:`to_dict`."""

    @classmethod
    @abstractmethod
    def fit_transform(
        cls, tmpl_xy: np.ndarray, src_xy: np.ndarray, weights: np.ndarray, *,
        complexity: Any, norm: Box, linear: str = "affine", mirrored: bool = False,
    ) -> Any:
        """Weighted least-squares fit of a linear part plus this kind of surface.

        Parameters
        ----------
        tmpl_xy, src_xy : ndarray, shape (N, 2)
            Matched positions (template -> source).
        weights : ndarray, shape (N,)
            Inverse variances of the pairs.
        complexity : object
            The model's own dial: the polynomial's degree, the spline's smoothing.
        norm : tuple
            ``(cx, cy, hx, hy)``: centre and half-size of the template grid.
        linear : {"affine", "similarity"}
            Linear part under the surface.
        mirrored : bool
            Parity of a similarity.

        Returns
        -------
        matrix : ndarray (2, 3)
            The linear part.
        distortion : DistortionModel
            The fitted surface (``Transform(matrix, distortion)``).
        """


_REGISTRY: dict[str, type[DistortionModel]] = {}


def register_model(cls: type[DistortionModel]) -> type[DistortionModel]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def model_names() -> tuple[str, ...]:
    """Names of the registered distortion models."""
    return tuple(_REGISTRY)


def model_class(name: str) -> type[DistortionModel]:
    """The model registered as ``name`` (KeyError with the known names otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown distortion model {name!r} "
                       f"(known: {', '.join(_REGISTRY)})") from None


def model_from_dict(d: dict[str, Any]) -> DistortionModel:
    """Rebuild a model saved with ``to_dict()`` (its ``"model"`` key names the class)."""
    return model_class(str(d["model"])).from_dict(d)
