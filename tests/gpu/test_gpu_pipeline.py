"""The whole pipeline on a real GPU against the NumPy backend (marked ``gpu``).

Skipped without CuPy and a CUDA device (always so in CI, which has no GPU). On a
device it runs align() on both backends and compares the fitted mapping, the warped
pixels and the fused kernel against the cupyx reference path, as the GPU issue asks:
affine parameters to 1e-6, warped pixels to 1e-4 relative, fused vs cupyx to 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpualign
from gpualign._simulate import make_mapping, simulate_pair
from gpualign.warp._resample import warp

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_backend():
    try:
        return gpualign.get_backend("cupy")
    except gpualign.BackendUnavailable as exc:
        pytest.skip(f"no usable GPU: {exc}")


@pytest.fixture(scope="module")
def distorted_pair():
    shape = (1024, 1024)
    m = make_mapping(source_shape=shape, template_shape=shape, shift=(11.2, -6.3),
                     rotation_deg=63.0, scale=1.1, corner_distortion_px=8.0)
    return simulate_pair(shape, mapping=m, n_stars=2500, seed=11)


def test_pipeline_same_on_both_backends(gpu_backend, distorted_pair):
    p = distorted_pair
    ref = gpualign.align(p.source, p.template, backend="numpy")
    got = gpualign.align(p.source, p.template, backend=gpu_backend)
    assert got.backend == "cupy"
    np.testing.assert_allclose(got.transform.matrix, ref.transform.matrix, rtol=0, atol=1e-6)
    assert got.solution.degree == ref.solution.degree
    np.testing.assert_array_equal(got.footprint, ref.footprint)
    both = ref.footprint & got.footprint
    scale = np.nanmax(np.abs(ref.data[both]))
    np.testing.assert_allclose(got.data[both], ref.data[both], rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("order", [1, 3, 5])
def test_fused_kernel_matches_cupyx_path(gpu_backend, distorted_pair, order):
    p = distorted_pair
    t = gpualign.find_transform(p.source, p.template).transform
    fused = warp(p.source, t, p.template.shape, backend=gpu_backend, order=order,
                 method="fused")
    ndi = warp(p.source, t, p.template.shape, backend=gpu_backend, order=order,
               method="ndimage")
    np.testing.assert_array_equal(fused.footprint, ndi.footprint)
    f = fused.footprint
    scale = np.abs(ndi.data[f]).max()
    np.testing.assert_allclose(fused.data[f], ndi.data[f], rtol=1e-5, atol=1e-5 * scale)


def test_cli_cupy_backend(gpu_backend, distorted_pair, tmp_path):
    from astropy.io import fits
    from typer.testing import CliRunner

    from gpualign.cli import app

    p = distorted_pair
    fits.writeto(tmp_path / "s.fits", p.source)
    fits.writeto(tmp_path / "t.fits", p.template)
    outs = {}
    for be in ("numpy", "cupy"):
        out = tmp_path / f"{be}.fits"
        r = CliRunner().invoke(app, ["align", str(tmp_path / "s.fits"), "-t",
                                     str(tmp_path / "t.fits"), "-o", str(out), "--backend", be])
        assert r.exit_code == 0, r.output
        outs[be] = fits.getdata(out)
        assert fits.getheader(out)["GA_BACK"] == be
    ok = np.isfinite(outs["numpy"])
    np.testing.assert_array_equal(ok, np.isfinite(outs["cupy"]))
    scale = np.abs(outs["numpy"][ok]).max()
    np.testing.assert_allclose(outs["cupy"][ok], outs["numpy"][ok], rtol=1e-4, atol=1e-4 * scale)
