"""The aligned image and everything it carries (:class:`AlignResult`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gpualign.products._solution import Solution
from gpualign.transform import Transform

__all__ = ["AlignResult"]


@dataclass
class AlignResult:
    """The source resampled onto the template grid, with the fit that did it.

    Attributes
    ----------
    data : ndarray
        Aligned image on the template grid (float32 by default).
    footprint : ndarray of bool
        Pixels that came from valid source data.
    mask : ndarray or None
        The source mask resampled (OR of contributing pixels' bits).
    solution : Solution
        Transform, matched pairs and statistics.
    backend : str
        Name of the backend the warp ran on.
    weight : ndarray or None
        The source weight/variance map resampled (:mod:`gpualign._variance`), of
        ``weight_type``.
    weight_type : str or None
        ``"variance"``, ``"inverse_variance"`` or ``"stddev"``.
    wcs : astropy.wcs.WCS or None
        WCS of the output: the template's, or the source's composed with the mapping.
    header : astropy.io.fits.Header or None
        Template header cards with the output WCS and ``GA_*`` keywords.
    offset : tuple of int
        ``(ox, oy)``: output position of the template's pixel (0, 0) (non-zero with
        ``preserve_footprints``).
    meta : dict
        The source's NDData meta.
    unit : object
        The source's NDData unit.
    conserve_flux : bool
        Whether the data were multiplied by ``|det J|``.
    """

    data: np.ndarray
    footprint: np.ndarray
    mask: np.ndarray | None
    solution: Solution
    backend: str
    weight: np.ndarray | None = None
    weight_type: str | None = None
    wcs: Any = None
    header: Any = None
    offset: tuple[int, int] = (0, 0)
    meta: Any = None
    unit: Any = None
    conserve_flux: bool = False

    def to_nddata(self) -> Any:
        """As astropy NDData (mask, VarianceUncertainty, WCS, meta carried)."""
        from gpualign.products._finish import to_nddata

        return to_nddata(self)

    def to_ccddata(self) -> Any:
        """As astropy CCDData (unit ``adu`` when the source had none)."""
        from astropy.nddata import CCDData

        from gpualign.products._finish import to_nddata

        return to_nddata(self, CCDData)

    @property
    def transform(self) -> Transform:
        """Template pixel -> source pixel mapping."""
        return self.solution.transform

    @property
    def stats(self) -> dict[str, float]:
        """Fit statistics."""
        return self.solution.stats
