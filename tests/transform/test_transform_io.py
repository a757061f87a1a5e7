"""Reusable transforms: save, load (to the bit), apply (API and ``gpualign apply``).

The acceptance check: a solution saved and loaded back maps every output pixel to
the same source position as the original (1e-6 px; in fact bit-identical), and the
images resampled with it equal the original alignment's pixels.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

import gpualign
from gpualign.cli import app
from gpualign.transform._transform import Transform

S = (384, 384)


@pytest.fixture(autouse=True)
def _logger(restore_gpualign_logger):
    yield


@pytest.fixture(scope="module")
def pair(make_pair):
    return make_pair(S, shift=(6.2, -3.9), rotation_deg=-57.0, flip=True,
                     corner_distortion_px=4.0, n_stars=700, seed=31)


@pytest.fixture(scope="module")
def aligned(pair):
    return gpualign.align(pair.source, pair.template, backend="numpy")


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def test_solution_round_trip_is_exact(aligned, tmp_path):
    sol = aligned.solution
    assert sol.transform.has_distortion and sol.mirrored
    path = tmp_path / "t.json"
    sol.save(path)
    back = gpualign.Solution.load(path)
    for name in ("transform", "inverse"):
        a, b = getattr(sol, name), getattr(back, name)
        assert same_bits(a.matrix, b.matrix) and same_bits(a.coeffs, b.coeffs)
        assert a.norm == b.norm and a.clip == b.clip
    assert back.source_shape == sol.source_shape == S
    assert back.template_shape == sol.template_shape == S
    assert (back.degree, back.mirrored, back.model) == (sol.degree, sol.mirrored, sol.model)
    assert same_bits(back.template_xy, sol.template_xy)
    assert same_bits(back.source_xy, sol.source_xy)
    assert back.stats == sol.stats
    assert back.cv_scores == sol.cv_scores
    # standard JSON (no NaN/Infinity tokens), small
    text = path.read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard token {c}"))
    assert len(text) < 400_000


def test_affine_only_transform_round_trip(tmp_path):
    t = Transform.from_matrix([[np.pi / 3, -1e-17, 1 / 3], [2 / 7, 0.1 + 0.2, -5e300]])
    assert t.clip[0] == -np.inf
    t.save(tmp_path / "a.json")
    back = Transform.load(tmp_path / "a.json")
    assert same_bits(back.matrix, t.matrix) and back.clip == t.clip and back.norm == t.norm
    assert not back.has_distortion
    # a bare transform loads as a Solution too, its inverse the affine inverse
    t2 = Transform.from_matrix([[1.1, 0.1, 3.0], [0.2, 0.9, -1.0]])
    t2.save(tmp_path / "b.json")
    sol = gpualign.Solution.load(tmp_path / "b.json")
    assert sol.source_shape is None and sol.template_shape is None
    xy = np.array([[1.0, 2.0], [30.0, -4.0]])
    np.testing.assert_allclose(sol.inverse.map_points(sol.transform.map_points(xy)), xy,
                               atol=1e-12)
    with pytest.raises(gpualign.InputError, match="output_shape"):
        gpualign.apply_transform(sol, np.ones((16, 16)), backend="numpy")


def test_save_load_apply_equals_the_alignment(aligned, pair, tmp_path):
    aligned.solution.save(tmp_path / "t.json")
    loaded = gpualign.Solution.load(tmp_path / "t.json")
    yy, xx = np.mgrid[0:S[0]:5, 0:S[1]:5].astype(float)
    a = np.array(aligned.transform(xx, yy))
    b = np.array(loaded.transform(xx, yy))
    assert np.max(np.abs(a - b)) <= 1e-6
    assert same_bits(a, b)
    # the grid the warp evaluates, too
    assert same_bits(aligned.transform.source_coords(np, 0, S[1], 0, S[0]),
                     loaded.transform.source_coords(np, 0, S[1], 0, S[0]))
    res = gpualign.apply_transform(loaded, pair.source, backend="numpy")  # shape from file
    np.testing.assert_array_equal(res.data, aligned.data)
    np.testing.assert_array_equal(res.footprint, aligned.footprint)


def write(path, data, header=None):
    fits.writeto(path, np.asarray(data), header=header)
    return path


def run(*args, code=0):
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == code, (res.exit_code, res.output)
    return res


def test_cli_apply_equals_the_alignment(aligned, pair, tmp_path):
    aligned.solution.save(tmp_path / "t.json")
    src = write(tmp_path / "src.fits", pair.source)
    run("apply", tmp_path / "t.json", src, "-o", tmp_path / "out.fits", "--backend", "numpy")
    with fits.open(tmp_path / "out.fits") as hdul:
        np.testing.assert_array_equal(hdul[0].data, aligned.data)
        np.testing.assert_array_equal(hdul["FOOTPRINT"].data.astype(bool), aligned.footprint)
        assert hdul[0].header["GA_TRANS"] == "t.json"


def test_cli_apply_mask_weight_and_several_images(aligned, pair, tmp_path):
    aligned.solution.save(tmp_path / "t.json")
    src = write(tmp_path / "src.fits", pair.source)
    other = write(tmp_path / "band2.fits", pair.source * 0.5 + 3)
    mask = np.zeros(S, np.int16)
    mask[100:103, :] = 9
    write(tmp_path / "mask.fits", mask)
    var = np.full(S, 16.0, np.float32)
    write(tmp_path / "var.fits", var)
    run("apply", tmp_path / "t.json", src, "-o", tmp_path / "mw.fits", "--source-mask",
        tmp_path / "mask.fits", "--source-weight", tmp_path / "var.fits", "--backend", "numpy")
    api = gpualign.apply_transform(gpualign.Solution.load(tmp_path / "t.json"), pair.source,
                                   mask=mask, source_weight=var, backend="numpy")
    with fits.open(tmp_path / "mw.fits") as hdul:
        np.testing.assert_array_equal(hdul["MASK"].data, api.mask)
        assert hdul["MASK"].data.dtype.kind == "i" and set(np.unique(api.mask)) == {0, 9}
        np.testing.assert_array_equal(hdul["VARIANCE"].data, api.weight)
    # inverse variance -> WEIGHT extension
    write(tmp_path / "ivar.fits", 1 / var)
    run("apply", tmp_path / "t.json", src, "-o", tmp_path / "iv.fits", "--source-weight",
        tmp_path / "ivar.fits", "--weight-type", "inverse_variance", "--backend", "numpy")
    with fits.open(tmp_path / "iv.fits") as hdul:
        f = hdul["FOOTPRINT"].data.astype(bool)
        np.testing.assert_allclose(hdul["WEIGHT"].data[f], 1 / api.weight[f], rtol=1e-6)
    # several images into a directory
    outdir = tmp_path / "outs"
    outdir.mkdir()
    run("apply", tmp_path / "t.json", src, other, "-o", outdir, "--backend", "numpy")
    a = fits.getdata(outdir / "src_aligned.fits")
    b = fits.getdata(outdir / "band2_aligned.fits")
    f = aligned.footprint
    np.testing.assert_array_equal(a, aligned.data)
    np.testing.assert_allclose(b[f], aligned.data[f] * 0.5 + 3, rtol=1e-5, atol=1e-3)


def test_cli_apply_failures(aligned, pair, tmp_path):
    aligned.solution.save(tmp_path / "t.json")
    src = write(tmp_path / "src.fits", pair.source)
    (tmp_path / "bad.json").write_text('{"hello": 1}')
    res = run("apply", tmp_path / "bad.json", src, "-o", tmp_path / "o.fits", code=2)
    assert "not a gpualign transform file" in res.output
    small = write(tmp_path / "small.fits", pair.source[:200])
    res = run("apply", tmp_path / "t.json", small, "-o", tmp_path / "o.fits", code=2)
    assert "fitted" in res.output
    run("apply", tmp_path / "t.json", src, "-o", tmp_path / "o.fits", "--backend", "numpy")
    before = (tmp_path / "o.fits").read_bytes()
    res = run("apply", tmp_path / "t.json", src, "-o", tmp_path / "o.fits", code=2)
    assert "exists" in res.output and (tmp_path / "o.fits").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "o.fits", "small.fits",
                                                          "src.fits", "t.json"]


def test_real_jwst_transform_reused_for_another_image(tmp_path):
    """JWST epoch 2 onto epoch 1: the saved transform applied to a derived image (x2 + 1,
    standing for another band of the same frame) equals the aligned image transformed alike."""
    from pathlib import Path

    from gpualign.cli._demo import demo_image_path

    src = Path(__file__).resolve().parents[1] / "data" / "jwst_a2744_f200w_2022-11.fits"
    res = gpualign.align(src, demo_image_path(), backend="numpy", interp_order=1)
    res.solution.save(tmp_path / "jwst.json")
    data = fits.getdata(src).astype(np.float32)
    band = write(tmp_path / "band.fits", 2 * data + 1)
    run("apply", tmp_path / "jwst.json", band, "-o", tmp_path / "o.fits", "--interp-order", 1,
        "--backend", "numpy", "-t", demo_image_path())
    out = fits.getdata(tmp_path / "o.fits")
    f = res.footprint & np.isfinite(out)
    assert f.mean() > 0.9
    np.testing.assert_allclose(out[f], 2 * res.data[f] + 1, rtol=1e-5, atol=1e-4)
    assert fits.getheader(tmp_path / "o.fits")["GA_WCS"] == "template"


def test_cli_align_extras_then_apply(pair, tmp_path):
    """gpualign align --save-transform --source-mask --source-weight --conserve-flux, then
    gpualign apply with the saved file: the same pixels as the API, and as each other."""
    src = write(tmp_path / "src.fits", pair.source)
    tmpl = write(tmp_path / "tmpl.fits", pair.template)
    mask = np.zeros(S, np.uint16)
    mask[50:52, :] = 1 << 9
    write(tmp_path / "mask.fits", mask)
    var = np.full(S, 9.0, np.float32) + np.abs(pair.source) / 2
    write(tmp_path / "var.fits", var)
    run("align", src, "-t", tmpl, "-o", tmp_path / "al.fits", "--save-transform",
        tmp_path / "t.json", "--source-mask", tmp_path / "mask.fits", "--source-weight",
        tmp_path / "var.fits", "--conserve-flux", "--backend", "numpy", "-q")
    api = gpualign.align(pair.source, pair.template, backend="numpy", source_mask=mask,
                         source_weight=var, conserve_flux=True)
    with fits.open(tmp_path / "al.fits") as hdul:
        np.testing.assert_array_equal(hdul[0].data, api.data)
        np.testing.assert_array_equal(hdul["MASK"].data, api.mask)
        np.testing.assert_array_equal(hdul["VARIANCE"].data, api.weight)
        assert hdul[0].header["GA_FLUX"] is True
        assert hdul[0].header["GA_MODEL"] == api.solution.model
    sol = gpualign.Solution.load(tmp_path / "t.json")
    assert same_bits(sol.transform.matrix, api.transform.matrix)
    run("apply", tmp_path / "t.json", src, "-o", tmp_path / "ap.fits", "--conserve-flux",
        "--backend", "numpy")
    np.testing.assert_array_equal(fits.getdata(tmp_path / "ap.fits"), api.data)
    # preserve footprints from the CLI: the API's canvas and offset
    run("align", src, "-t", tmpl, "-o", tmp_path / "pf.fits", "--preserve-footprints",
        "--backend", "numpy", "-q")
    pf = gpualign.align(pair.source, pair.template, backend="numpy", preserve_footprints=True)
    with fits.open(tmp_path / "pf.fits") as hdul:
        np.testing.assert_array_equal(hdul[0].data, pf.data)
        assert (hdul[0].header["GA_OFFX"], hdul[0].header["GA_OFFY"]) == pf.offset
    # a mask file belongs to one source (flux and canvas options apply to every frame)
    res = run("align", src, src, "-t", tmpl, "-o", tmp_path, "--source-mask",
              tmp_path / "mask.fits", code=2)
    assert "single source" in res.output
