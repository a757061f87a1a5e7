"""The one-sided Wilcoxon signed-rank test, without importing ``scipy.stats``.

``scipy.stats`` takes 0.4-0.9 s to import on a 2-core machine, more than the whole
fit; the model and degree choices need one p-value from it. This module computes the
same p-value as ``scipy.stats.wilcoxon(d, alternative="greater")`` (SciPy >= 1.13,
its defaults: zeros dropped, no continuity correction, ``method="auto"``), following
the test's textbook definition (Wilcoxon 1945, Biometrics Bulletin 1, 80; the normal
approximation with the tie correction of Hollander, Wolfe & Chicken 2014,
*Nonparametric Statistical Methods*, 3rd ed., section 3.1):

* more than 50 differences: the normal approximation;
* otherwise, no ties and no zeros: the exact null distribution of the statistic;
* otherwise, at most 13 differences: every sign assignment enumerated (an exact
  permutation test);
* otherwise the normal approximation.

``tests/fit/test_signed_rank.py`` checks it against SciPy.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

__all__ = ["signed_rank_greater"]

#: Up to this many differences (zeros included) the exact distributions are used.
EXACT_MAX_N = 50
#: Up to this many differences, with ties or zeros, every sign assignment is enumerated.
PERMUTATION_MAX_N = 13


def _average_ranks(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks 1..n of ``a`` with ties given their mean rank, and each tie group's size."""
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    starts = np.flatnonzero(np.r_[True, sorted_a[1:] != sorted_a[:-1]])
    sizes = np.diff(np.r_[starts, a.size])
    mean_rank = starts + (sizes + 1) / 2.0
    ranks = np.empty(a.size)
    ranks[order] = np.repeat(mean_rank, sizes)
    return ranks, sizes


def _exact_null(n: int) -> np.ndarray:
    """P(W+ = k), k = 0..n(n+1)/2, for n differences without ties (each sign 1/2)."""
    c = np.ones(1)
    for k in range(1, n + 1):
        prev = c
        c = np.zeros(k * (k + 1) // 2 + 1)
        c[:prev.size] = 0.5 * prev
        c[-prev.size:] += 0.5 * prev
    return c


def _exact_sf(r_plus: float, n: int) -> float:
    """P(W+ >= floor(r_plus)) under the exact null distribution."""
    pmf = _exact_null(n)
    k = int(np.floor(r_plus))
    if k <= n * (n + 1) / 4.0:
        return float(pmf[k:].sum())
    return float(1.0 - pmf[:k].sum())


def _permutation_sf(d: np.ndarray, ranks: np.ndarray, r_plus: float) -> float:
    """Share of the 2^n sign assignments with W+ at least the observed one."""
    n = d.size
    signs = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
    null = (signs * np.where(d != 0, ranks, 0.0)).sum(axis=1)
    gamma = abs(100 * np.finfo(np.float64).eps * r_plus)
    return float(np.count_nonzero(null >= r_plus - gamma) / null.size)


def signed_rank_greater(d: np.ndarray) -> float:
    """One-sided p-value that the differences ``d`` are centred above zero.

    Parameters
    ----------
    d : ndarray
        Paired differences (1-D, finite).

    Returns
    -------
    float
        The p-value of the Wilcoxon signed-rank test (alternative "greater"); NaN when
        every difference is zero.
    """
    d = np.asarray(d, dtype=np.float64).ravel()
    nonzero = d[d != 0]
    n = nonzero.size
    if n == 0:
        return float("nan")
    ranks_nz, tie_sizes = _average_ranks(np.abs(nonzero))
    r_plus = float(np.sum(ranks_nz[nonzero > 0]))
    has_ties = bool(np.any(tie_sizes > 1))
    has_zeros = n < d.size
    if d.size <= EXACT_MAX_N:
        if not (has_ties or has_zeros):
            return _exact_sf(r_plus, n)
        if d.size <= PERMUTATION_MAX_N:
            ranks = np.zeros(d.size)
            ranks[d != 0] = ranks_nz
            return _permutation_sf(d, ranks, r_plus)
    mean = n * (n + 1.0) * 0.25
    var = n * (n + 1.0) * (2.0 * n + 1.0)
    tie_correct = float(np.sum(tie_sizes.astype(np.float64) ** 3 - tie_sizes))
    se = np.sqrt((var - tie_correct / 2.0) / 24.0)
    return float(ndtr(-(r_plus - mean) / se))
