"""preserve_footprints: a canvas that holds the whole source and the whole template.

For scales 0.5, 1.1 and 2 and a 90 degree rotation (and a flipped, distorted case),
with the truth mapping and through align() on simulated pairs:

* every source pixel (its whole area: the outline at -0.5 and W - 0.5) maps inside the
  canvas, mapped back through the truth;
* the canvas is no larger than needed (the union touches each side within a pixel);
* the template's pixels sit at the recorded offset: the canvas cut at the offset equals
  the ordinary (template-grid) output, and the canvas WCS is the template's shifted.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

import gpualign
from gpualign._simulate import make_mapping
from gpualign.products._canvas import grow_canvas, source_outline
from gpualign.transform._transform import Transform

T_SHAPE = (320, 300)

CASES = {
    "scale0.5": dict(scale=0.5, rotation_deg=10.0, shift=(40.0, -25.0)),
    "scale1.1": dict(scale=1.1, rotation_deg=-20.0, shift=(60.0, 30.0)),
    "scale2": dict(scale=2.0, rotation_deg=5.0, shift=(150.0, 90.0)),
    "rot90": dict(scale=1.0, rotation_deg=90.0, shift=(-70.0, 45.0)),
}
S_SHAPE = (300, 340)


def check_canvas(mapping, shape, offset, src_shape, slack: float) -> None:
    """Every source pixel inside the canvas; the canvas tight around both footprints."""
    ox, oy = offset
    bx, by = source_outline(src_shape, step=0.5)
    x, y = mapping.inverse(bx, by)  # template frame
    cx, cy = x + ox, y + oy
    ny, nx = shape
    assert cx.min() >= -0.5 - slack and cx.max() <= nx - 0.5 + slack
    assert cy.min() >= -0.5 - slack and cy.max() <= ny - 0.5 + slack
    # tight: the union of both footprints reaches within a pixel of every side
    lo_x = min(cx.min(), ox - 0.5)
    hi_x = max(cx.max(), ox + T_SHAPE[1] - 0.5)
    lo_y = min(cy.min(), oy - 0.5)
    hi_y = max(cy.max(), oy + T_SHAPE[0] - 0.5)
    assert lo_x < 0.5 + slack and hi_x > nx - 1.5 - slack
    assert lo_y < 0.5 + slack and hi_y > ny - 1.5 - slack
    # the template fits at the offset
    assert ox >= 0 and oy >= 0 and ox + T_SHAPE[1] <= nx and oy + T_SHAPE[0] <= ny


@pytest.mark.parametrize("name", list(CASES))
def test_canvas_with_the_truth_mapping(name):
    mapping = make_mapping(source_shape=S_SHAPE, template_shape=T_SHAPE, **CASES[name])
    t = Transform.from_matrix(mapping.matrix)
    t_canvas, shape, offset = grow_canvas(t, S_SHAPE, T_SHAPE)
    check_canvas(mapping, shape, offset, S_SHAPE, slack=1e-6)
    assert shape[0] > T_SHAPE[0] or shape[1] > T_SHAPE[1]  # the source sticks out
    # template pixel (x, y) is canvas pixel (x + ox, y + oy)
    yy, xx = np.mgrid[0:T_SHAPE[0]:7, 0:T_SHAPE[1]:7].astype(float)
    a = np.array(t(xx, yy))
    b = np.array(t_canvas(xx + offset[0], yy + offset[1]))
    np.testing.assert_allclose(a, b, atol=1e-9)
    # the output's pixels: the canvas cut at the offset is the ordinary output
    rng = np.random.default_rng(0)
    src = rng.normal(100, 10, S_SHAPE).astype(np.float32)
    plain = gpualign.apply_transform(t, src, T_SHAPE, backend="numpy")
    grown = gpualign.apply_transform(t, src, T_SHAPE, backend="numpy", preserve_footprints=True)
    assert grown.offset == offset and grown.data.shape == shape
    cut = grown.data[offset[1]:offset[1] + T_SHAPE[0], offset[0]:offset[0] + T_SHAPE[1]]
    f = plain.footprint & np.isfinite(cut)
    assert f.sum() >= 0.99 * plain.footprint.sum()
    np.testing.assert_allclose(cut[f], plain.data[f], rtol=1e-5, atol=1e-4)
    # every source pixel is somewhere on the canvas: the footprint has the source's area
    area = grown.footprint.sum() * abs(np.linalg.det(mapping.matrix[:, :2]))
    assert area == pytest.approx(S_SHAPE[0] * S_SHAPE[1], rel=0.01)


def test_canvas_with_a_distorted_flipped_mapping():
    th = np.deg2rad(200.0)
    lin = 0.8 * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) @ np.diag(
        [-1.0, 1.0])
    m = np.column_stack([lin, [200.0, 330.0]])
    coeffs = np.zeros((2, 4, 4))
    coeffs[0, 2, 0], coeffs[1, 0, 3], coeffs[1, 1, 1] = 6.0, -5.0, 3.0
    t = Transform(m, coeffs, (150.0, 160.0, 150.0, 160.0), (-1.0, 1.0, -1.0, 1.0))
    t_canvas, shape, offset = grow_canvas(t, S_SHAPE, T_SHAPE)
    # the outline maps back onto the source edges (the inversion is exact)
    bx, by = source_outline(S_SHAPE)
    from gpualign.products._canvas import invert_points

    x, y = invert_points(t, bx, by)
    sx, sy = t(x, y)
    np.testing.assert_allclose(sx, bx, atol=1e-8)
    np.testing.assert_allclose(sy, by, atol=1e-8)
    ny, nx = shape
    assert x.min() + offset[0] >= -0.5 - 1e-9 and x.max() + offset[0] <= nx - 0.5 + 1e-9
    assert y.min() + offset[1] >= -0.5 - 1e-9 and y.max() + offset[1] <= ny - 0.5 + 1e-9
    assert min(x.min() + offset[0], offset[0] - 0.5) < 0.5
    assert max(y.max() + offset[1], offset[1] + T_SHAPE[0] - 0.5) > ny - 1.5


@pytest.mark.parametrize("name", list(CASES))
def test_preserve_footprints_through_align(name, make_pair):
    kw = CASES[name]
    scale = kw["scale"]
    pair = make_pair(T_SHAPE, S_SHAPE, n_stars=500, fwhm_template=3.0,
                     fwhm_source=max(3.0 * scale, 2.0), seed=41, **kw)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [150.0, 160.0]
    w.wcs.crval = [10.0, -30.0]
    w.wcs.cdelt = [-1e-4, 1e-4]
    from astropy.nddata import NDData

    tmpl = NDData(pair.template, wcs=w)
    res = gpualign.align(pair.source, tmpl, backend="numpy", preserve_footprints=True)
    plain = gpualign.align(pair.source, tmpl, backend="numpy")
    check_canvas(pair.mapping, res.data.shape, res.offset, S_SHAPE, slack=0.1)
    ox, oy = res.offset
    cut = res.data[oy:oy + T_SHAPE[0], ox:ox + T_SHAPE[1]]
    f = plain.footprint & np.isfinite(cut)
    assert f.sum() >= 0.99 * plain.footprint.sum()
    np.testing.assert_allclose(cut[f], plain.data[f], rtol=1e-4, atol=1e-2)
    # the canvas WCS is the template's, shifted by the offset
    assert res.header["GA_OFFX"] == ox and res.header["GA_OFFY"] == oy
    gy, gx = np.mgrid[0:T_SHAPE[0]:31, 0:T_SHAPE[1]:29].astype(float)
    np.testing.assert_allclose(np.array(res.wcs.all_pix2world(gx + ox, gy + oy, 0)),
                               np.array(w.all_pix2world(gx, gy, 0)), atol=1e-10)
