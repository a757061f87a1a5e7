"""The PSF's Gaussian fit (no scipy.optimize at start-up) agrees with least_squares."""

import numpy as np
import pytest
from scipy.optimize import least_squares

from gpualign.detect._gauss_fit import fit_gaussian

OFF = np.arange(-8, 9)
YY, XX = np.meshgrid(OFF, OFF, indexing="ij")
LO, HI = [0, -2, -2, 0.4, -np.inf], [np.inf, 2, 2, 4.0, np.inf]


def _gauss(p):
    return p[0] * np.exp(-((XX - p[1]) ** 2 + (YY - p[2]) ** 2) / (2 * p[3] ** 2)) + p[4]


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_least_squares(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        truth = [rng.uniform(0.01, 100), *rng.uniform(-0.6, 0.6, 2), rng.uniform(0.6, 3.5), 0.0]
        truth[4] = rng.normal(0, 0.01 * truth[0])
        noise = truth[0] * rng.choice([0.0, 0.001, 0.02, 0.1])
        stamp = _gauss(truth) + rng.normal(0, 1, XX.shape) * noise
        start = [max(float(stamp.max()), 1e-9), 0.0, 0.0, 1.3, 0.0]
        ref = least_squares(lambda p, s=stamp: (_gauss(p) - s).ravel(), start, bounds=(LO, HI))
        mine = fit_gaussian(stamp, XX, YY, start, LO, HI)
        # at least as good a minimum, and the same width
        assert np.sum((_gauss(mine) - stamp) ** 2) <= np.sum(ref.fun**2) * (1 + 1e-9) + 1e-20
        assert mine[3] == pytest.approx(ref.x[3], rel=1e-4)
        if noise == 0.0:
            assert mine[3] == pytest.approx(truth[3], rel=1e-6)
            assert mine[1:3] == pytest.approx(truth[1:3], abs=1e-6)


def test_width_stops_at_its_bound():
    wide = _gauss([1.0, 0.0, 0.0, 9.0, 0.0])  # wider than the bound 4
    fit = fit_gaussian(wide, XX, YY, [1.0, 0, 0, 1.3, 0], LO, HI)
    assert fit[3] == pytest.approx(4.0)


def test_refuses_a_start_outside_the_bounds_and_non_finite_values():
    stamp = _gauss([1.0, 0.0, 0.0, 1.5, 0.0])
    assert fit_gaussian(stamp, XX, YY, [1.0, 0, 0, 0.1, 0], LO, HI) is None
    bad = stamp.copy()
    bad[3, 3] = np.nan
    assert fit_gaussian(bad, XX, YY, [1.0, 0, 0, 1.3, 0], LO, HI) is None


def test_psf_of_normalised_stamps_ignores_a_stamp_with_no_positive_sum():
    # A compact object on a dip of the sky has a stamp summing to <= 0; normalised by
    # its sum it used to swamp the stack (a JWST field's PSF came out 2.56 px or 2.90 px
    # depending on the fitter, for 2.73)
    from gpualign.detect._sep import _Pixels

    rng = np.random.default_rng(5)
    image = rng.normal(0.0, 0.05, (200, 200)).astype(np.float32)
    yy, xx = np.mgrid[0:200, 0:200]
    sig = 3.0 / 2.3548
    stars = [(30, 30), (30, 100), (30, 170), (100, 30), (170, 30), (170, 170)]
    for x, y in stars:
        image += 100.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sig**2))
    dip = (abs(xx - 100) <= 8) & (abs(yy - 100) <= 8)
    image[dip] -= 1.0
    image += 2.0 * np.exp(-((xx - 100) ** 2 + (yy - 100) ** 2) / (2 * 0.8**2))
    pixels = _Pixels(image, None)
    pixels.data = image.copy()  # exactly this sky: no background estimate in the way
    objects = np.zeros(len(stars) + 1, dtype=[("x", "f8"), ("y", "f8")])
    objects["x"] = [x for x, _ in stars] + [100]
    objects["y"] = [y for _, y in stars] + [100]
    assert image[dip].sum() < 0
    fwhm = pixels.psf_fwhm(objects, normalise=True, select=False)
    assert fwhm == pytest.approx(3.0, rel=0.03)
