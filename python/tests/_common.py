"""Shared helpers of the dfm package tests."""
import math
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
_pkg = os.path.normpath(os.path.join(_here, ".."))
if _pkg not in sys.path:
    sys.path.insert(0, _pkg)

import numpy as np  # noqa: E402

import dfm  # noqa: E402,F401


def chi2_bound(k):
    """Upper 1e-4 quantile of chi-square with k dof (Wilson-Hilferty, as tests/testutil.h)."""
    z, a = 3.719, 2.0 / (9.0 * k)
    c = 1.0 - a + z * math.sqrt(a)
    return k * c * c * c


def chi2(counts, p):
    """Pearson statistic of counts against probabilities p (cells with expectation < 5 pooled).
    Returns (stat, dof)."""
    counts = np.asarray(counts, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    n = counts.sum()
    e = p * n
    if np.any((p < 1e-12) & (counts > 0)):
        return math.inf, 1
    big = e >= 5
    stat = float(np.sum((counts[big] - e[big]) ** 2 / e[big]))
    k = int(big.sum())
    pe, po = e[~big & (p >= 1e-12)].sum(), counts[~big & (p >= 1e-12)].sum()
    if pe > 0:
        stat += (po - pe) ** 2 / pe
        k += 1
    return stat, max(1, k - 1)
