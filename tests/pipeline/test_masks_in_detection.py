"""Masks leave their pixels out of detection (issue 12, item 1), and ``hdu_in``.

``source_mask`` / ``--source-mask`` used to act on the resampling only, so stars (or
artefacts) under a mask still became tie-points. Now a source mask and a template mask
(``template_mask`` / ``--template-mask``) keep every flagged pixel out of detection:
no matched star lies under a mask, the fit still lands on the truth, and a mask that
flags nothing changes nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

import gpualign
from gpualign._errors import InputError
from gpualign._simulate import bright_overlap_stars, error_stats, position_errors
from gpualign.cli import app
from gpualign.products import load_solution

SHAPE = (512, 512)
BOX = (slice(0, 512), slice(0, 256))  # the left half (rows, columns)


@pytest.fixture(scope="module")
def pair(make_pair):
    return make_pair(SHAPE, shift=(4.3, -2.6), rotation_deg=11.0, n_stars=500, seed=41)


def _half_mask(dtype=bool) -> np.ndarray:
    m = np.zeros(SHAPE, dtype)
    m[BOX] = 1 if dtype is not bool else True
    return m


def _inside_box(xy: np.ndarray, margin: float = 0.0) -> np.ndarray:
    return xy[:, 0] < BOX[1].stop - 0.5 - margin


def _accuracy(sol, pair) -> dict:
    """Landing errors of the bright stars outside the masked half (beyond the matched
    stars the mapping is extrapolated, as the solver warns)."""
    stars = bright_overlap_stars(pair, 200)
    stars = stars[~_inside_box(stars, margin=-20.0)][:100]
    return error_stats(position_errors(sol.transform, pair.mapping, stars))


def test_source_mask_keeps_its_pixels_out_of_detection(pair):
    plain = gpualign.find_transform(pair.source, pair.template, backend="numpy")
    assert _inside_box(plain.source_xy).sum() > 20  # without the mask: stars there
    sol = gpualign.find_transform(pair.source, pair.template, backend="numpy",
                                  source_mask=_half_mask())
    assert not _inside_box(sol.source_xy).any()
    assert sol.stats["n_match"] >= 30
    # half the stars: measured 0.012 px (0.016 without the mask, 125 matches)
    assert _accuracy(sol, pair)["rms"] <= 0.03


def test_template_mask_keeps_its_pixels_out_of_detection(pair):
    sol = gpualign.find_transform(pair.source, pair.template, backend="numpy",
                                  template_mask=_half_mask(np.uint16) * 4)  # a bitmask
    assert not _inside_box(sol.template_xy).any()
    assert sol.stats["n_match"] >= 30
    assert _accuracy(sol, pair)["rms"] <= 0.03  # measured 0.023 px, 69 matches


def test_an_empty_mask_changes_nothing(pair):
    plain = gpualign.find_transform(pair.source, pair.template, backend="numpy")
    empty = np.zeros(SHAPE, bool)
    sol = gpualign.find_transform(pair.source, pair.template, backend="numpy",
                                  source_mask=empty, template_mask=empty)
    np.testing.assert_array_equal(sol.source_xy, plain.source_xy)
    np.testing.assert_array_equal(sol.transform.matrix, plain.transform.matrix)


def test_align_source_mask_acts_on_detection_and_resampling(pair):
    res = gpualign.align(pair.source, pair.template, backend="numpy", source_mask=_half_mask())
    assert not _inside_box(res.solution.source_xy).any()
    assert res.mask is not None and res.mask.any()  # still resampled alongside


def test_align_batch_template_mask(pair, tmp_path):
    results = gpualign.align_batch([pair.source], pair.template, backend="numpy",
                                   template_mask=_half_mask(), processes=1)
    assert results[0].status == "ok", results[0].message
    assert not _inside_box(results[0].solution.template_xy).any()


def test_template_mask_needs_the_template_pixels(pair):
    cat = gpualign.detect.detect(pair.template)
    with pytest.raises(InputError, match="template mask"):
        gpualign.find_transform(pair.source, pair.template, template_det=cat,
                                template_mask=_half_mask(), backend="numpy")


def test_mask_of_another_shape_is_refused(pair):
    with pytest.raises(InputError, match="shape"):
        gpualign.find_transform(pair.source, pair.template, backend="numpy",
                                template_mask=np.zeros((10, 10), bool))


def test_cli_template_mask(pair, tmp_path):
    src, tmpl, mask = tmp_path / "s.fits", tmp_path / "t.fits", tmp_path / "m.fits"
    fits.writeto(src, pair.source)
    fits.writeto(tmpl, pair.template)
    fits.writeto(mask, _half_mask(np.uint8))
    before = mask.read_bytes()
    res = CliRunner().invoke(app, ["align", str(src), "-t", str(tmpl), "-o",
                                   str(tmp_path / "o.fits"), "--template-mask", str(mask),
                                   "--save-transform", str(tmp_path / "t.json"),
                                   "--backend", "numpy", "-q"])
    assert res.exit_code == 0, res.output
    sol = load_solution(tmp_path / "t.json")
    assert not _inside_box(sol.template_xy).any()
    assert mask.read_bytes() == before


def test_cli_refuses_writing_over_the_template_mask(pair, tmp_path):
    src, tmpl, mask = tmp_path / "s.fits", tmp_path / "t.fits", tmp_path / "m.fits"
    fits.writeto(src, pair.source)
    fits.writeto(tmpl, pair.template)
    fits.writeto(mask, _half_mask(np.uint8))
    before = mask.read_bytes()
    res = CliRunner().invoke(app, ["align", str(src), "-t", str(tmpl), "-o", str(mask),
                                   "--template-mask", str(mask), "--overwrite",
                                   "--backend", "numpy", "-q"])
    assert res.exit_code == 2, res.output
    assert mask.read_bytes() == before


def test_hdu_in_is_source_ext(pair):
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(pair.source, name="SCI")])
    by_ext = gpualign.find_transform(hdul, pair.template, source_ext="SCI", backend="numpy")
    by_hdu_in = gpualign.find_transform(hdul, pair.template, hdu_in=1, backend="numpy")
    np.testing.assert_array_equal(by_ext.transform.matrix, by_hdu_in.transform.matrix)
    res = gpualign.align(hdul, pair.template, hdu_in="SCI", backend="numpy")
    np.testing.assert_array_equal(res.solution.transform.matrix, by_ext.transform.matrix)
    with pytest.raises(InputError, match="hdu_in"):
        gpualign.find_transform(hdul, pair.template, source_ext=0, hdu_in=1,
                                backend="numpy")
