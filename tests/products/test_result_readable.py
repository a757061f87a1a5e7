"""A result people can read (issue 12, item 2): unpacking, a one-line repr, the residuals."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

import gpualign


@pytest.fixture(scope="module")
def result(make_pair):
    pair = make_pair((384, 384), shift=(20.5, -12.3), rotation_deg=31.0, n_stars=300, seed=4,
                     corner_distortion_px=2.0)
    return gpualign.align(pair.source, pair.template, backend="numpy")


def test_unpacks_as_reproject(result):
    data, footprint = result
    assert data is result.data and footprint is result.footprint
    assert footprint.dtype == bool and footprint.shape == data.shape
    # 1 = valid (as reproject): the corners the rotated source does not cover are 0, NaN
    assert 0.5 < footprint.mean() < 0.99
    assert np.isfinite(data[footprint]).all() and np.isnan(data[~footprint]).all()


def test_repr_is_one_line(result):
    text = repr(result)
    sol = result.solution
    assert "\n" not in text and len(text) < 160, text
    assert text.startswith("AlignResult(384x384 float32, ")
    assert f"{sol.stats['n_match']} matches" in text
    assert f"rms {sol.stats['rms']:.4f} px" in text
    model = sol.model if sol.degree == 1 else f"{sol.model}+{sol.distortion}"
    assert f"{model} degree {sol.degree}, numpy, " in text
    assert text.endswith(f"{sum(sol.timings.values()):.2f} s)")
    assert sol.degree > 1 and "+poly degree" in text  # the distorted field's model


def test_residuals_table(result):
    sol = result.solution
    table = result.residuals_table()
    assert isinstance(table, Table)
    assert table.colnames == ["x_template", "y_template", "x_source", "y_source",
                              "dx_source", "dy_source", "dx_template", "dy_template",
                              "weight"]
    assert len(table) == sol.stats["n_match"] > 50
    np.testing.assert_array_equal(table["x_template"], sol.template_xy[:, 0])
    np.testing.assert_array_equal(table["y_source"], sol.source_xy[:, 1])
    rms_t = np.sqrt(np.mean(table["dx_template"] ** 2 + table["dy_template"] ** 2))
    assert rms_t == pytest.approx(sol.stats["rms"], rel=1e-12)
    assert np.mean(table["dx_template"]) == pytest.approx(sol.stats["x_mean"], abs=1e-15)
    # The forward mapping's residuals, in source pixels, by hand:
    pred = sol.transform.map_points(sol.template_xy)
    np.testing.assert_allclose(table["dx_source"], pred[:, 0] - sol.source_xy[:, 0])
    rms_s = np.sqrt(np.mean(table["dx_source"] ** 2 + table["dy_source"] ** 2))
    assert 0.8 < rms_s / rms_t < 1.25  # the two frames share a scale of ~1 here
    assert (table["weight"] == 1.0).all() and "1 for every pair" in table.meta["weight"]
