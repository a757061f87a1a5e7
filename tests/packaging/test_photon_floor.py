"""benchmarks/_photon.py, the yardstick of the thin-overlap benchmark, against theory.

The centroid bound must reach the textbook limits: sqrt(8 pi) s^2 b / F for a faint
star on a sky of RMS b per pixel (a Gaussian of width s, pixels small against it), and
s / sqrt(N) for a bright star without sky (N detected photons); the floor of a fit must
scale with the centroids' errors and shrink with more stars.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "_photon.py"
if not SCRIPT.is_file():  # the tests shipped in the CUDA image, without benchmarks/
    pytest.skip("benchmarks/_photon.py is not in this tree (the CUDA image ships tests/ "
                "without benchmarks/)", allow_module_level=True)


@pytest.fixture(scope="module")
def photon(load_script):
    return load_script(SCRIPT, "_photon")


def test_a_faint_star_on_the_sky_reaches_the_background_limit(photon):
    fwhm, sky, gain = 8.0, 1e4, 1.0  # wide PSF: pixelation negligible; sky-dominated
    s = fwhm / 2.3548
    flux = np.array([300.0, 1000.0])
    bound = photon.centroid_bound(flux, fwhm, sky=sky, gain=gain, read_noise=0.0)
    expected = np.sqrt(8 * np.pi) * s**2 * np.sqrt(sky / gain) / flux
    np.testing.assert_allclose(bound, expected, rtol=0.02)


def test_a_bright_star_without_sky_reaches_the_photon_limit(photon):
    fwhm, gain, flux = 8.0, 2.0, 1e6
    bound = photon.centroid_bound(np.array([flux]), fwhm, sky=0.0, gain=gain,
                                  read_noise=1e-6)
    np.testing.assert_allclose(bound, fwhm / 2.3548 / np.sqrt(flux * gain), rtol=0.03)


def test_the_floor_scales_with_the_centroid_errors_and_the_star_count(photon):
    rng = np.random.default_rng(1)
    t = rng.uniform(0, 2000, (400, 2))
    s = t + [3.0, -2.0]
    ev = rng.uniform(0, 2000, (50, 2))
    one = photon.similarity_floor(t, s, np.full(400, 0.1), np.full(400, 0.1), ev, ev + [3, -2])
    two = photon.similarity_floor(t, s, np.full(400, 0.2), np.full(400, 0.2), ev, ev + [3, -2])
    # linear in the noise (but for the template errors inside the design matrix)
    assert two["median"] == pytest.approx(2 * one["median"], rel=2e-3)
    assert one["p10"] < one["median"] < one["p90"]
    few = photon.similarity_floor(t[:100], s[:100], np.full(100, 0.1), np.full(100, 0.1),
                                  ev, ev + [3, -2])
    # four times fewer stars: about twice the error (4 parameters, uniform field)
    assert 1.6 < few["median"] / one["median"] < 2.5
    # a fit of N stars with per-axis errors e in both images lands within ~ e sqrt(2)
    # sqrt(4 / N) x O(1) of the truth: 0.1 * 1.41 * 0.1 = 0.014 px for 400 stars
    assert 0.005 < one["median"] < 0.03
