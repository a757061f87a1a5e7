"""The deeper second try of a blind match that found nothing (issue 11, items 1-2).

A thin overlap of a sparse field: two 2048^2 tiles of a 900-star sky (about 400
detected at 5 sigma) whose data overlap by 5% along x, with 20 px NaN borders. About
50 stars lie in the overlap, but 5 sigma leaves only 6-9 usable in both images: too
few for a quad and its verification, while each image's own star count (hundreds)
does not call for automatic depth. With ``auto_depth`` the match is tried once more
with both images detected at 3 sigma. On seeds 10-21 (x and y), 5 of 24 pairs failed
before and all 24 align now, the retried ones to 0.026-0.050 px
(``benchmarks/results/overlap_scale.md`` on other seeds).
"""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
from astropy.io import fits

import gpualign
from gpualign._simulate import (
    bright_overlap_stars,
    error_stats,
    make_mapping,
    position_errors,
    simulate_pair,
)
from gpualign.detect import RETRY_THRESH, detect_retry
from gpualign.pipeline import TemplateSide
from gpualign.pipeline._runner import TemplateReload

SHAPE = (2048, 2048)
BORDER = 20


def _nan_border(image: np.ndarray) -> None:
    for edge in (np.s_[:BORDER, :], np.s_[-BORDER:, :], np.s_[:, :BORDER], np.s_[:, -BORDER:]):
        image[edge] = np.nan


def _sparse_overlap(seed: int, *, other_sky: bool = False):
    shift = (-0.95 * (SHAPE[1] - 2 * BORDER) + 0.37, 2.61)  # 5% of the data, along x
    mapping = make_mapping(source_shape=SHAPE, template_shape=SHAPE, shift=shift,
                           rotation_deg=0.3)
    pair = simulate_pair(SHAPE, mapping=mapping, n_stars=900, seed=seed)
    source = pair.source
    if other_sky:  # a tile of another sky: nothing in common
        source = simulate_pair(SHAPE, mapping=mapping, n_stars=900, seed=seed + 1000).source
    for image in (pair.template, source):
        _nan_border(image)
    return pair, source


@pytest.fixture(scope="module")
def sparse_pair():
    return _sparse_overlap(14)[0]


def _accuracy(sol: gpualign.Solution, pair) -> dict:
    stars = bright_overlap_stars(pair, n=200, margin_fwhm=5.0)
    lim = BORDER + 10
    stars = stars[np.all((stars > lim) & (stars < SHAPE[0] - lim), axis=1)]
    return error_stats(position_errors(sol.transform, pair.mapping, stars))


def test_a_sparse_thin_overlap_aligns_at_the_second_try(sparse_pair, caplog):
    with pytest.raises(gpualign.NoQuadMatch):  # as before: the user's catalogues only
        gpualign.find_transform(sparse_pair.source, sparse_pair.template, auto_depth=False,
                                backend="numpy")
    with caplog.at_level(logging.INFO, logger="gpualign"):
        sol = gpualign.find_transform(sparse_pair.source, sparse_pair.template,
                                      backend="numpy")
    assert sol.thresholds == (RETRY_THRESH, RETRY_THRESH)
    said = [r.getMessage() for r in caplog.records if "detecting again" in r.getMessage()]
    assert len(said) == 1 and "no quad match" in said[0] and "3 sigma" in said[0]
    acc = _accuracy(sol, sparse_pair)
    assert acc["n"] >= 15
    assert acc["rms"] <= 0.08, acc  # measured 0.041 px (16 matches of ~50 common stars)


def test_the_header_records_the_retry_thresholds(sparse_pair):
    res = gpualign.align(sparse_pair.source, sparse_pair.template, backend="numpy")
    assert res.header["GA_THR"] == "3.0/3.0"


def test_a_batch_frame_equals_the_single_alignment(sparse_pair, tmp_path):
    """In memory the batch detects the template's retry catalogue up front; from a file
    each worker reads the template again: both give the single alignment, bit for bit."""
    single = gpualign.find_transform(sparse_pair.source, sparse_pair.template,
                                     backend="numpy")
    path = tmp_path / "template.fits"
    fits.writeto(path, sparse_pair.template)
    for template in (sparse_pair.template, str(path)):
        (res,) = gpualign.align_batch([sparse_pair.source], template, backend="numpy",
                                      processes=1)
        assert res.ok, res.message
        assert res.solution.thresholds == single.thresholds
        assert res.solution.transform.matrix.tobytes() == single.transform.matrix.tobytes()
        assert res.solution.transform.coeffs.tobytes() == single.transform.coeffs.tobytes()


def test_unrelated_sparse_tiles_still_fail():
    """The second try must not find what is not there (its false-match rate is a tenth
    of the first's)."""
    pair, other = _sparse_overlap(15, other_sky=True)
    with pytest.raises(gpualign.NoQuadMatch) as info:
        gpualign.find_transform(other, pair.template, backend="numpy")
    assert "\n" not in str(info.value)
    assert "nor with both images detected at 3 sigma" in str(info.value)


def test_no_second_try_without_pixels_or_auto_depth(sparse_pair, caplog):
    """A source catalogue given by the user is not detected again."""
    from astropy.table import Table

    cat = gpualign.detect.detect(sparse_pair.source)
    table = Table({"x": cat.x, "y": cat.y, "flux": cat.flux})
    with caplog.at_level(logging.INFO, logger="gpualign"):
        with pytest.raises(gpualign.NoQuadMatch):
            gpualign.find_transform(sparse_pair.source, sparse_pair.template, source_det=table,
                                    backend="numpy")
    assert not any("detecting again" in r.getMessage() for r in caplog.records)


def test_the_reload_handle_reads_the_same_pixels(sparse_pair, tmp_path):
    path = tmp_path / "t.fits"
    fits.writeto(path, sparse_pair.template)
    mask = np.zeros(SHAPE, np.uint8)
    mask[100:200, 300:400] = 4
    mpath = tmp_path / "m.fits"
    fits.writeto(mpath, mask)
    handle = TemplateReload(str(path), None, str(mpath))
    assert handle.small and pickle.loads(pickle.dumps(handle)).small
    assert not TemplateReload(sparse_pair.template).small
    data, bad = handle()
    np.testing.assert_array_equal(data, sparse_pair.template)
    assert bad[150, 350] and not bad[1000, 1000]  # the mask's pixels, no others
    side = TemplateSide(None, None, SHAPE, reload=handle)
    first = side.retry_catalog()
    assert side.retry_catalog() is first  # read and detected once
    direct = detect_retry(data, bad)
    np.testing.assert_array_equal(first.xy, direct.xy)
    assert first.thresh == RETRY_THRESH
    # a batch's worker makes a side per frame: the file is detected once per process...
    assert TemplateSide(None, None, SHAPE, reload=handle).retry_catalog() is first
    # ...as long as it is the same file
    fits.writeto(path, sparse_pair.template[::-1].astype(np.float64), overwrite=True)
    again = TemplateSide(None, None, SHAPE, reload=handle).retry_catalog()
    assert again is not first and not np.array_equal(again.xy, first.xy)
