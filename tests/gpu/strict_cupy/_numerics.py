"""GPU-like numerics for the stand-in: last-bit differences where CuPy's results differ.

With ``strict_cupy.configure(perturb=seed)`` the stand-in stops giving NumPy's and
SciPy's results bit for bit, in the places where CuPy on a GPU does not give them
either. IEEE-exact operations stay exact: ``+ - * /``, ``sqrt``, comparisons,
min/max, casts, indexing, integer maths, sorting, nearest-neighbour (order-0)
sampling and the rank filters. What changes, each element by a pseudo-random
fraction in ``[-1, 1]`` of ``perturb_ulps`` (default 2) units of its rounding:

* reductions and products (``sum``, ``mean``, ``dot``, ``matmul``, ``var``...): the
  GPU sums in a tree, not left to right, and cuBLAS blocks differently (and uses
  FMA). The unit is ``eps x`` the same operation on absolute values (the bound of a
  different summation order), so a cancelling sum moves by more than its own ulp;
* transcendental functions (``sin``, ``exp``, ``log``, ``power``, ``arctan2``...):
  CUDA's libdevice is within 1-2 ulp of the correctly rounded result, glibc's
  differently so. The unit is one ulp of the result (``numpy.spacing``);
* ``cupyx.scipy.ndimage`` interpolation and linear filters (``map_coordinates``,
  ``spline_filter1d``, ``zoom``, ``uniform_filter``...): CuPy's kernels accumulate in
  a different order and, for float32 coordinates, in float32. The unit is
  ``eps(float32) x |result|`` (at least the result's own ulp); nearest-pixel
  (order 0) sampling stays exact, and so does a spline prefilter of order 0 or 1;
* raw kernels (:mod:`._rawkernel`) are compiled with FMA contraction, as NVRTC does
  by default (``--fmad=true``), when the CPU has FMA.

A test then states the tolerance the pipeline's answers keep under these; where a
result is exact by design (an IEEE-exact path) it stays bit for bit.
"""

from __future__ import annotations

import functools
import inspect
import threading
from typing import Any

import numpy as np

from ._cuda import STATE

__all__ = ["perturb_result", "COUNTS"]

#: Reductions whose bound is the same operation on absolute values.
_ABS_REDUCTIONS = frozenset({"sum", "nansum", "mean", "nanmean", "dot", "vdot", "inner",
                             "matmul", "tensordot", "average", "trapezoid", "cumsum",
                             "nancumsum"})
#: Reductions bounded by their own magnitude (second moments, solvers, norms).
_REL_REDUCTIONS = frozenset({"var", "std", "nanvar", "nanstd", "prod", "nanprod",
                             "cumprod", "norm", "solve", "lstsq", "inv", "det", "pinv",
                             "cholesky", "qr", "svd", "eigh", "eigvalsh", "einsum"})
_TRANSCENDENTAL = frozenset({"sin", "cos", "tan", "arcsin", "arccos", "arctan", "arctan2",
                             "sinh", "cosh", "tanh", "arcsinh", "arccosh", "arctanh",
                             "exp", "exp2", "expm1", "log", "log2", "log10", "log1p",
                             "power", "float_power", "hypot", "cbrt", "logaddexp",
                             "logaddexp2", "deg2rad", "rad2deg", "radians", "degrees",
                             "sinc"})
_NDIMAGE = frozenset({"map_coordinates", "spline_filter", "spline_filter1d", "zoom",
                      "shift", "rotate", "affine_transform", "geometric_transform",
                      "convolve", "convolve1d", "correlate", "correlate1d",
                      "uniform_filter", "uniform_filter1d", "gaussian_filter",
                      "gaussian_filter1d", "gaussian_gradient_magnitude",
                      "gaussian_laplace", "laplace", "sobel", "prewitt"})

_lock = threading.Lock()
_counter = [0]
#: Calls perturbed so far, by operation name (for tests of the option itself).
COUNTS: dict[str, int] = {}


def _category(where: str) -> str | None:
    name = where.rsplit(".", 1)[-1]
    if where.startswith("cupyx.scipy.ndimage."):
        return "ndimage" if name in _NDIMAGE else None
    if name in _ABS_REDUCTIONS:
        return "abs"
    if name in _REL_REDUCTIONS:
        return "rel"
    if name in _TRANSCENDENTAL:
        return "ulp"
    return None


def _floats(res: Any) -> list[np.ndarray]:
    items = res if isinstance(res, (tuple, list)) else (res,)
    out = []
    for r in items:
        if isinstance(r, np.ndarray) and r.dtype.kind in "fc" and r.size:
            out.append(r)
    return out


def _abs_scale(func: Any, where: str, args: tuple, kwargs: dict[str, Any]) -> Any:
    """The operation on absolute values (the bound of a different summation order)."""
    name = where.rsplit(".", 1)[-1]
    k = {key: v for key, v in kwargs.items() if key not in ("out", "dtype")}
    if where.startswith("cupy.ndarray."):
        base = getattr(func, "__self__", None)
        if not isinstance(base, np.ndarray):
            return None
        return getattr(np.abs(base), name)(*args, **k)
    absargs = tuple(np.abs(a) if isinstance(a, np.ndarray) and a.dtype.kind in "fc"
                    else a for a in args)
    return func(*absargs, **k)


@functools.cache
def _signature(func: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


def _order(func: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
    sig = _signature(func)
    if sig is None:
        return kwargs.get("order")
    try:
        return sig.bind_partial(*args, **kwargs).arguments.get("order")
    except TypeError:
        return kwargs.get("order")


def perturb_result(func: Any, where: str, args: tuple, kwargs: dict[str, Any],
                   res: Any) -> Any:
    """``res`` with GPU-like last-bit differences if ``where`` has them (else unchanged).

    NumPy arrays are changed in place (an ``out=`` array included); a NumPy scalar
    (a full reduction) is returned as a new scalar.
    """
    seed = STATE.perturb
    if not seed:
        return res
    category = _category(where)
    if category is None:
        return res
    if category == "ndimage" and _order(func, args, kwargs) in (0, 1) and (
            "spline_filter" in where):
        return res  # orders 0 and 1 have no prefilter: a copy
    if category == "ndimage" and _order(func, args, kwargs) == 0:
        return res  # nearest-pixel sampling is exact
    scalar = isinstance(res, np.generic)
    if scalar:
        res = np.array(res)
    targets = _floats(res)
    if not targets:
        return res[()] if scalar else res
    scale: Any = None
    if category == "abs":
        try:
            scale = _abs_scale(func, where, args, kwargs)
        except Exception:  # an argument form the abs version cannot take
            scale = None
    with _lock:
        _counter[0] += 1
        count = _counter[0]
        COUNTS[where] = COUNTS.get(where, 0) + 1
    rng = np.random.default_rng([int(seed), count])
    ulps = float(STATE.perturb_ulps)
    for r in targets:
        real = r.real if r.dtype.kind == "c" else r
        eps = float(np.finfo(real.dtype).eps)
        if category == "ndimage":
            eps = max(eps, float(np.finfo(np.float32).eps))
        if scale is not None and np.shape(scale) == real.shape:
            unit = eps * np.abs(np.asarray(scale, dtype=np.float64).real)
        elif category == "ulp":
            unit = np.spacing(np.abs(real)).astype(np.float64)
        else:
            unit = eps * np.abs(real.astype(np.float64))
            if category == "ndimage":
                unit = np.maximum(unit, np.spacing(np.abs(real)))
        delta = rng.uniform(-1.0, 1.0, size=real.shape) * ulps * unit
        finite = np.isfinite(real)
        new = np.where(finite, real + delta.astype(real.dtype, copy=False), real)
        np.copyto(real, new.astype(real.dtype, copy=False))
    return res[()] if scalar else res
