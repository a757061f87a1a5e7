"""Scale ratios of 10x without a WCS (issue 11, item 4): multi-scale quads, blind.

The coarse image's pixels are ten times larger: the fine image covers a small part of
it. Quads of the fine image's whole-frame stars match quads of the coarse image's stars
in a cell of the fine image's footprint (``gpualign.match._multiscale``), and the
candidates are verified at matched depth: the coarse image's stars inside the footprint
against as many of the fine image's. Both directions: the source coarser than the
template (``scale=0.1`` source px per template px) and finer (``scale=10``). Accuracy:
landing errors of the common stars against the true mapping, converted to the coarse
image's pixels (an error of 0.1 template px is 0.01 coarse px when the template is
the fine one).
"""

from __future__ import annotations

import numpy as np
import pytest
from overlap_sky import similarity, sky_pair

import gpualign
from gpualign._simulate import (
    bright_overlap_stars,
    error_stats,
    make_mapping,
    position_errors,
    simulate_pair,
)

SHAPE = (2048, 2048)

pytestmark = pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")


def coarse_px(errors: np.ndarray, scale: float) -> dict:
    """Landing errors (template px) in the coarse image's pixels."""
    return error_stats(errors * min(scale, 1.0))


@pytest.mark.parametrize(("scale", "seed"), [(0.1, 2), (0.1, 4), (10.0, 1), (10.0, 3)])
def test_scale_ratio_10_catalogues(scale, seed):
    """3000 stars in each 2048^2 catalogue, rotation 37 deg: ~20-35 common stars."""
    shift = (123.4, -311.0) if scale < 1 else (0.0, 0.0)
    m = similarity(SHAPE, SHAPE, shift=shift, rotation_deg=37.0, scale=scale)
    pair = sky_pair(m, n_template=3000, n_source=3000, seed=seed)
    sol = gpualign.find_transform(None, None, source_det=pair.source,
                                  template_det=pair.template, backend="numpy")
    acc = coarse_px(position_errors(sol.transform, pair.truth, pair.common_template_xy), scale)
    assert acc["n_nonfinite"] == 0
    # measured 0.007-0.04 coarse px (0.1 px centroid noise at the faint end)
    assert acc["rms"] <= 0.06, acc
    assert sol.stats["n_match"] >= 0.5 * len(pair.common_template_xy)
    assert np.isclose(np.sqrt(abs(np.linalg.det(sol.transform.matrix[:, :2]))), scale,
                      rtol=1e-3)


def test_scale_ratio_10_mirrored():
    """A coarse mirror-image source (x flipped), rotation 20 deg."""
    m = similarity(SHAPE, SHAPE, shift=(123.4, -311.0), rotation_deg=20.0, scale=0.1,
                   flip=True)
    pair = sky_pair(m, n_template=3000, n_source=3000, seed=1)
    with pytest.warns(gpualign.GpuAlignWarning, match="mirror"):
        sol = gpualign.find_transform(None, None, source_det=pair.source,
                                      template_det=pair.template, backend="numpy")
    assert sol.mirrored
    acc = coarse_px(position_errors(sol.transform, pair.truth, pair.common_template_xy), 0.1)
    assert acc["rms"] <= 0.03, acc  # measured 0.011 coarse px


@pytest.mark.parametrize("scale", [0.1, 10.0])
def test_scale_ratio_10_rendered(scale):
    """A 2048^2 fine image and a 512^2 image with 10x larger pixels (2.5x wider).

    The coarse image is shallower (extra noise: its sky is 100x brighter per pixel), so
    it is not crowded: ~700 detections, ~50 of them inside the fine image's footprint.
    """
    fine, coarse = (2048, 2048), (512, 512)
    tmpl_shape, src_shape = (fine, coarse) if scale < 1 else (coarse, fine)
    mapping = make_mapping(source_shape=src_shape, template_shape=tmpl_shape,
                           shift=(6.3, -3.9) if scale < 1 else (61.3, -37.9),
                           rotation_deg=37.0, scale=scale)
    per_template = 6000 if scale < 1 else int(6000 * (10 * 512 / 2048) ** 2)
    pair = simulate_pair(tmpl_shape, src_shape, mapping=mapping, n_stars=per_template,
                         flux_range=(1000, 1e6), seed=1)
    noisy = pair.source if scale < 1 else pair.template
    noisy += np.random.default_rng(1).normal(0, 300, noisy.shape).astype(noisy.dtype)
    sol = gpualign.find_transform(pair.source, pair.template, backend="numpy")
    stars = bright_overlap_stars(pair, n=200)
    acc = coarse_px(position_errors(sol.transform, pair.mapping, stars), scale)
    assert acc["n"] >= 100
    assert acc["rms"] <= 0.03, acc  # measured 0.010 (scale 0.1) and 0.013 (scale 10)
