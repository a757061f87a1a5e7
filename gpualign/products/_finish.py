"""Everything an aligned image carries besides its pixels.

:class:`TileExtras` does, for any block of output rows, what an extra asks of the
warped pixels: flux conservation (``|J|``, :mod:`gpualign.products._flux`) and the
resampled weight or variance map (:mod:`gpualign.products._variance`). The same
code serves an output held in memory (:func:`finish_result`, over row blocks) and
one streamed tile by tile into a file, so an extra never forces a whole-frame warp.
:func:`finish_result` also sets the output WCS, the canvas offset and the source's
NDData meta and unit. :func:`source_extras` reads an NDData/CCDData source's
uncertainty (as a variance), meta and unit; :func:`to_nddata` builds NDData/CCDData
from a result (mask, uncertainty as ``VarianceUncertainty``, WCS and meta carried).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits

from gpualign._errors import InputError
from gpualign.products._flux import jacobian_det_grid
from gpualign.products._variance import (
    WEIGHT_TYPES,
    VarianceResampler,
    from_variance,
    to_variance,
)
from gpualign.transform import Transform

__all__ = ["source_extras", "finish_result", "to_nddata", "TileExtras", "source_variance",
           "check_weight_type"]


def _is_nddata(obj: Any) -> bool:
    return hasattr(obj, "data") and hasattr(obj, "unit") and not isinstance(obj, np.ndarray)


def source_extras(obj: Any) -> dict[str, Any]:
    """Uncertainty (as variance), meta and unit of an NDData-like input (else empty)."""
    out: dict[str, Any] = {"variance": None, "meta": {}, "unit": None}
    if not _is_nddata(obj):
        return out
    out["unit"] = getattr(obj, "unit", None)
    meta = getattr(obj, "meta", None)
    out["meta"] = copy.deepcopy(meta) if meta is not None else {}
    unc = getattr(obj, "uncertainty", None)
    if unc is not None and getattr(unc, "array", None) is not None:
        kind = getattr(unc, "uncertainty_type", "std")
        arr = np.asarray(unc.array, dtype=np.float64)
        if kind == "var":
            out["variance"] = arr
        elif kind == "ivar":
            with np.errstate(divide="ignore"):
                out["variance"] = np.where(arr > 0, 1.0 / arr, np.inf)
        elif kind == "std":
            out["variance"] = arr * arr
        else:
            raise InputError(f"unsupported uncertainty type {kind!r}",
                             hint="use StdDevUncertainty, VarianceUncertainty or "
                             "InverseVariance")
        out["uncertainty_type"] = kind
    return out


def check_weight_type(weight_type: str) -> str:
    """Validate a weight type (InputError listing the accepted ones)."""
    if weight_type not in WEIGHT_TYPES:
        raise InputError(f"weight_type must be one of {', '.join(WEIGHT_TYPES)}, "
                         f"got {weight_type!r}",
                         hint="what the weight map holds (a variance by default)")
    return weight_type


def source_variance(weight: np.ndarray | None, weight_type: str, source: Any,
                    source_shape: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """The source's variance map and the weight type of the output.

    ``weight`` (as :func:`gpualign.io.load_weight` reads it: float64, of the source's
    shape) wins; otherwise an NDData ``source``'s uncertainty, as a variance;
    otherwise none.
    """
    check_weight_type(weight_type)
    if weight is not None:
        return to_variance(weight, weight_type), weight_type
    variance = source_extras(source)["variance"]
    if variance is None:
        return None, weight_type
    if variance.shape != tuple(source_shape):
        raise InputError(f"the weight map's shape {variance.shape} differs from the "
                         f"image's {tuple(source_shape)}")
    return variance, "variance"


#: Output rows per block when the extras run over an output held in memory.
ROWS = 256
#: Output columns per block of the flux's Jacobian (same values as whole rows; its
#: float64 temporaries then stay in the CPU cache: 2.5x faster at 16384 columns).
FLUX_COLS = 2048


@dataclass
class TileExtras:
    """Flux conservation and weight resampling for blocks of output rows.

    Parameters
    ----------
    transform : Transform
        Output pixel -> source pixel mapping the warp used (on the canvas).
    order : int
        Interpolation order of the warp.
    variance : ndarray or None
        Source variance map.
    weight_type : str
        Type of the output weight map.
    conserve_flux : bool
        Multiply the data by ``|det J|`` (the variance by ``det J**2``).
    """

    transform: Transform
    order: int
    variance: np.ndarray | None = None
    weight_type: str = "variance"
    conserve_flux: bool = False

    def __post_init__(self) -> None:
        self._resampler = (None if self.variance is None
                           else VarianceResampler(self.variance, self.transform, self.order))

    @property
    def active(self) -> bool:
        """Whether there is anything to do."""
        return self.conserve_flux or self._resampler is not None

    @property
    def has_weight(self) -> bool:
        """Whether a weight map is produced."""
        return self._resampler is not None

    def rows(self, y0: int, data: np.ndarray, footprint: np.ndarray) -> np.ndarray | None:
        """Apply the extras to output rows ``y0:y0+len(data)``; return their weight rows.

        ``data`` is scaled in place when fluxes are conserved.
        """
        y1, nx = y0 + data.shape[0], data.shape[1]
        out_var = None if self._resampler is None else self._resampler.rows(y0, y1, nx)
        if self.conserve_flux:
            if not self.transform.has_distortion:  # one |det J| for every pixel
                m = self.transform.matrix
                jc = abs(float(m[0, 0]) * float(m[1, 1]) - float(m[0, 1]) * float(m[1, 0]))
                np.multiply(data, data.dtype.type(jc), out=data, where=footprint)
                if out_var is not None:
                    np.multiply(out_var, jc * jc, out=out_var, where=footprint)
            else:  # in column blocks: the Jacobian's temporaries stay in the cache
                for x0 in range(0, nx, FLUX_COLS):
                    x1 = min(x0 + FLUX_COLS, nx)
                    j = jacobian_det_grid(self.transform, np, x0, x1, y0, y1)
                    np.abs(j, out=j)
                    j[~footprint[:, x0:x1]] = 1.0
                    block = data[:, x0:x1]
                    block *= j.astype(data.dtype, copy=False)
                    if out_var is not None:
                        j *= j
                        out_var[:, x0:x1] *= j
        if out_var is None:
            return None
        return from_variance(out_var, self.weight_type, footprint)

    def apply(self, data: np.ndarray, footprint: np.ndarray) -> np.ndarray | None:
        """:meth:`rows` over a whole output held in memory; return the weight map."""
        if not self.active:
            return None
        ny = data.shape[0]
        weight = np.empty(data.shape, np.float32) if self.has_weight else None
        for y0 in range(0, ny, ROWS):
            y1 = min(y0 + ROWS, ny)
            w = self.rows(y0, data[y0:y1], footprint[y0:y1])
            if weight is not None:
                weight[y0:y1] = w
        return weight


def finish_result(
    result: Any,
    extras: TileExtras,
    *,
    wcs: Any = None,
    offset: tuple[int, int] = (0, 0),
    source: Any = None,
) -> Any:
    """Add weights, flux conservation, WCS, offset, meta and unit to an AlignResult.

    Parameters
    ----------
    result : AlignResult
        Fresh from the warp (modified and returned).
    extras : TileExtras
        What to do to the pixels.
    wcs : astropy.wcs.WCS or None
        World coordinates of the output.
    offset : tuple of int
        Canvas position of the template's pixel (0, 0).
    source : object
        The source as given (NDData meta and unit are carried).

    Returns
    -------
    AlignResult
    """
    weight = extras.apply(result.data, result.footprint)
    if weight is not None:
        result.weight = weight
        result.weight_type = extras.weight_type
    result.wcs = wcs
    result.offset = (int(offset[0]), int(offset[1]))
    info = source_extras(source)
    result.meta = info["meta"]
    result.unit = info["unit"]
    result.conserve_flux = bool(extras.conserve_flux)
    return result


def to_nddata(result: Any, cls: Any = None) -> Any:
    """An NDData (or ``cls``, e.g. CCDData) of a result: mask, variance, WCS, meta.

    The mask is True where the output has no valid data or the resampled source mask
    is non-zero; the uncertainty is the resampled variance (``VarianceUncertainty``)
    when a weight map was resampled.
    """
    from astropy.nddata import (
        CCDData,
        InverseVariance,
        NDData,
        StdDevUncertainty,
        VarianceUncertainty,
    )

    cls = NDData if cls is None else cls
    mask = ~result.footprint
    if result.mask is not None:
        mask = mask | (np.asarray(result.mask) != 0)
    unc = None
    if result.weight is not None:
        kind = {"variance": VarianceUncertainty, "inverse_variance": InverseVariance,
                "stddev": StdDevUncertainty}[result.weight_type]
        unc = kind(result.weight)
    meta = copy.deepcopy(result.meta) if result.meta else {}
    unit = result.unit
    if cls is CCDData or (isinstance(cls, type) and issubclass(cls, CCDData)):
        unit = unit if unit is not None else "adu"
        meta = fits.Header(meta) if not isinstance(meta, fits.Header) else meta
        for card in result.header.cards if result.header is not None else []:
            if card.keyword.startswith("GA_"):
                meta[card.keyword] = (card.value, card.comment)
    else:
        meta = dict(meta)
        if result.header is not None:
            meta.update({k: result.header[k] for k in result.header if k.startswith("GA_")})
    return cls(result.data, mask=mask, uncertainty=unc, wcs=result.wcs, meta=meta, unit=unit)
