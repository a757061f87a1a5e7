"""The signed-rank test without scipy.stats gives scipy.stats.wilcoxon's p-values."""

import numpy as np
import pytest
import scipy.stats

from gpualign.fit._signed_rank import signed_rank_greater


def _scipy_p(d: np.ndarray) -> float:
    return float(scipy.stats.wilcoxon(d, alternative="greater").pvalue)


@pytest.mark.parametrize("n", [1, 2, 5, 9, 13, 14, 30, 50, 51, 200, 3000])
@pytest.mark.parametrize("shift", [0.0, 0.3, -0.3])
def test_matches_scipy_continuous(n, shift):
    rng = np.random.default_rng(1000 + n)
    for _ in range(5):
        d = rng.standard_cauchy(n) * 0.2 + shift
        assert signed_rank_greater(d) == pytest.approx(_scipy_p(d), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("n", [4, 8, 13, 14, 40, 50, 51, 120])
def test_matches_scipy_with_ties_and_zeros(n):
    rng = np.random.default_rng(2000 + n)
    for _ in range(5):
        d = rng.integers(-3, 5, n).astype(float)  # many ties and zeros
        if not np.any(d != 0):
            continue
        assert signed_rank_greater(d) == pytest.approx(_scipy_p(d), rel=1e-12, abs=1e-15)


def test_decisions_at_the_thresholds_agree():
    # choose_degree and choose_model compare the p-value with 0.00135 and 0.05: the
    # decisions must match SciPy's on many small, weakly shifted samples
    rng = np.random.default_rng(7)
    for n in range(6, 60):
        d = rng.normal(0.35, 1.0, n)
        for alpha in (0.00135, 0.05):
            assert (signed_rank_greater(d) < alpha) == (_scipy_p(d) < alpha)


def test_all_zero_gives_nan():
    assert np.isnan(signed_rank_greater(np.zeros(7)))


def test_clear_shift_is_significant_and_none_is_not():
    rng = np.random.default_rng(3)
    assert signed_rank_greater(rng.normal(1.0, 1.0, 100)) < 1e-6
    assert signed_rank_greater(rng.normal(-1.0, 1.0, 100)) > 0.99
