"""The aligned image and everything it carries (:class:`AlignResult`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpualign.products._solution import Solution
from gpualign.transform import Transform

__all__ = ["AlignResult"]


@dataclass
class AlignResult:
    """The source resampled onto the template grid, with the fit that did it.

    ``data, footprint = result`` unpacks it as reproject's ``(array, footprint)``
    (footprint true/1 where the pixel came from valid source data); ``repr`` is one
    line; :meth:`residuals_table` lists the matched stars and their residuals.

    Attributes
    ----------
    data : ndarray
        Aligned image on the template grid (float32 by default).
    footprint : ndarray of bool
        Pixels that came from valid source data (True = 1 = valid, as reproject).
    mask : ndarray or None
        The source mask resampled (OR of contributing pixels' bits).
    solution : Solution
        Transform, matched pairs and statistics.
    backend : str
        Name of the backend the warp ran on.
    weight : ndarray or None
        The source weight/variance map resampled (``gpualign.products._variance``), of
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

    def __iter__(self) -> Iterator[np.ndarray]:
        """``data, footprint = result``, as reproject returns ``(array, footprint)``."""
        return iter((self.data, self.footprint))

    def __repr__(self) -> str:
        """One line: shape, matches, RMS, model, degree, backend and time."""
        sol = self.solution
        ny, nx = np.shape(self.data)[:2]
        n = int(sol.stats.get("n_match", len(sol.template_xy)))
        rms = float(sol.stats.get("rms", float("nan")))
        model = sol.model if sol.degree <= 1 else f"{sol.model}+{sol.distortion}"
        seconds = sum(float(v) for v in sol.timings.values())
        mirrored = ", mirrored" if sol.mirrored else ""
        return (f"AlignResult({nx}x{ny} {np.asarray(self.data).dtype}, {n} matches, "
                f"rms {rms:.4f} px, {model} degree {sol.degree}{mirrored}, {self.backend}, "
                f"{seconds:.2f} s)")

    def plot(self, path: str | os.PathLike | None = None, **kw: Any) -> Any:
        """The diagnostic figure of the fit behind this image: :meth:`Solution.plot`.

        ``path`` (saved there atomically, the format from its suffix) and ``**kw``
        (``fig``, ``exaggerate``) are those of :meth:`Solution.plot`; returns the
        matplotlib Figure.
        """
        return self.solution.plot(path, **kw)

    def residuals_table(self) -> Any:
        """The matched star pairs of the final fit and their residuals, as a Table.

        Returns
        -------
        astropy.table.Table
            One row per pair: ``x_template``, ``y_template``, ``x_source``,
            ``y_source`` (0-based pixels); ``dx_source``, ``dy_source``: the fitted
            mapping of the template position minus the source position (source
            pixels); ``dx_template``, ``dy_template``: the inverse mapping of the
            source position minus the template position (template pixels, the
            residuals ``stats`` summarises: their RMS is ``stats["rms"]``);
            ``weight``: 1 for every pair, since a :class:`Solution` does not keep the
            centroid errors the fit was weighted by (``meta["weight"]`` says so).
        """
        from astropy.table import Table

        sol = self.solution
        tmpl = np.asarray(sol.template_xy, dtype=np.float64).reshape(-1, 2)
        src = np.asarray(sol.source_xy, dtype=np.float64).reshape(-1, 2)
        d_src = sol.transform.map_points(tmpl) - src if len(tmpl) else np.empty((0, 2))
        d_tmpl = sol.inverse.map_points(src) - tmpl if len(src) else np.empty((0, 2))
        table = Table(
            [tmpl[:, 0], tmpl[:, 1], src[:, 0], src[:, 1], d_src[:, 0], d_src[:, 1],
             d_tmpl[:, 0], d_tmpl[:, 1], np.ones(len(tmpl))],
            names=("x_template", "y_template", "x_source", "y_source", "dx_source",
                   "dy_source", "dx_template", "dy_template", "weight"))
        table.meta["weight"] = ("1 for every pair: the solution does not keep the "
                                "centroid errors (weights 1/sigma^2) the fit used")
        return table
