"""Statistics shared by the analyses: vectorised correlations, bootstrap CIs, p-value corrections.

Every analysis in this package answers "does factor X go with metric Y across architectures?"
for tens of factors times hundreds of metrics, each with a bootstrap confidence interval.
Calling scipy once per pair and resample would take hours at RobustART's scale (1,200
architectures), so the point estimates and the resamples are computed here as matrix
products over all pairs at once; the tests check every number against scipy's one-pair
functions.

* Pearson and Spearman: standardised (ranked) columns, one matrix product.
* Kendall's tau-b (Kendall 1945, the variant with tie correction that scipy returns):
  ``sum_{i<j} sgn(x_i - x_j) sgn(y_i - y_j) / sqrt(n_x n_y)`` with ``n_x`` the pairs not tied
  in x. A bootstrap resample that draws example ``i`` ``c_i`` times contains each original
  pair ``(i, j)`` ``c_i c_j`` times and no informative self-pairs, so a resample's tau-b is the
  same sum with weights ``c_i c_j`` -- no resampled pair list is ever built.
* Bootstrap: the percentile interval of Efron & Tibshirani ("An Introduction to the
  Bootstrap", 1993, ch. 13) over ``n_boot`` resamples of the architectures, drawn from an
  explicit, seeded generator.
* Multiple testing: Benjamini & Hochberg (1995) step-up FDR control, or Holm (1979)
  step-down family-wise control, written out here (statsmodels is not a dependency); the
  tests check BH against :func:`scipy.stats.false_discovery_control`.
"""

from __future__ import annotations

import itertools
import logging
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from nasrobust.errors import NasRobustError

log = logging.getLogger(__name__)

#: Correlation methods this package computes.
METHODS: tuple[str, ...] = ("spearman", "kendall", "pearson")
#: Upper bound on multiply-adds spent on Kendall bootstrap resamples; above it the Kendall CI
#: falls back to the jackknife (stated in the ``ci_method`` column).
KENDALL_BOOT_BUDGET = 4e10
#: Elements per chunk of stacked resamples (bounds memory at ~ 8 bytes x this).
_CHUNK_ELEMENTS = 4_000_000


# ----------------------------------------------------------------------------- p-value corrections
def _adjust_non_nan(p: np.ndarray, adjust_sorted: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply ``adjust_sorted`` (ascending p-values -> adjusted) to the non-NaN entries; NaN stays NaN."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    if q.size == 0:
        return out
    order = np.argsort(q, kind="mergesort")
    res = np.empty(q.size)
    res[order] = adjust_sorted(q[order])
    out[ok] = res
    return out


def bh_adjust(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (NaN entries are left out of the family and stay NaN)."""

    def step_up(q: np.ndarray) -> np.ndarray:
        scaled = q * q.size / np.arange(1, q.size + 1)
        return np.clip(np.minimum.accumulate(scaled[::-1])[::-1], 0.0, 1.0)  # min over j >= i

    return _adjust_non_nan(p, step_up)


def holm_adjust(p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (NaN entries are left out of the family and stay NaN)."""

    def step_down(q: np.ndarray) -> np.ndarray:
        return np.maximum.accumulate(np.minimum(1.0, q * (q.size - np.arange(q.size))))  # max over j <= i

    return _adjust_non_nan(p, step_down)


#: Multiple-testing corrections by name (``--correction``).
CORRECTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"bh": bh_adjust, "holm": holm_adjust}
CORRECTION_NAMES: dict[str, str] = {
    "bh": "Benjamini-Hochberg (FDR)",
    "holm": "Holm (family-wise error)",
}


def adjust(p: np.ndarray, correction: str) -> np.ndarray:
    """Adjusted p-values with the named correction (``"bh"`` or ``"holm"``)."""
    try:
        fn = CORRECTIONS[correction]
    except KeyError:
        raise NasRobustError(f"unknown correction {correction!r}; use one of {', '.join(CORRECTIONS)}") from None
    return fn(p)


# ----------------------------------------------------------------------------- point estimates
def _standardise(a: np.ndarray, axis: int) -> np.ndarray:
    """Centre and scale to unit norm along ``axis``; constant vectors become NaN."""
    a = a - a.mean(axis=axis, keepdims=True)
    norm = np.sqrt((a * a).sum(axis=axis, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = a / norm
    out[np.broadcast_to(norm == 0, out.shape)] = np.nan
    return out


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of every column of ``x`` (..., n, F) with every column of ``y`` (..., n, M)."""
    r = np.einsum("...nf,...nm->...fm", _standardise(x, -2), _standardise(y, -2))
    return np.clip(r, -1.0, 1.0)


def _rank(a: np.ndarray) -> np.ndarray:
    return sps.rankdata(a, axis=-2, method="average")


def _small_gemms():
    """One BLAS thread for loops of small matrix products: threads only add synchronisation there
    (on a busy 2-core machine OpenBLAS's threads made each 24 x 1200 x 60 product hundreds of times slower)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _kendall_weighted(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """Kendall tau-b of all column pairs, each example ``i`` weighted ``weights[..., i]`` (resample counts).

    Loops over examples ``i`` and adds ``sum_j c_i c_j sgn(x_i - x_j) sgn(y_i - y_j)``; every
    unordered pair is met twice, which cancels in the ratio.
    """
    n, f = x.shape
    m = y.shape[1]
    lead = () if weights is None else weights.shape[:-1]
    num = np.zeros((*lead, f, m))
    den_x = np.zeros((*lead, f))
    den_y = np.zeros((*lead, m))
    with _small_gemms():
        _kendall_loop(x, y, weights, num, den_x, den_y)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = num / np.sqrt(den_x[..., :, None] * den_y[..., None, :])
    return np.clip(tau, -1.0, 1.0)


def _kendall_loop(x, y, weights, num, den_x, den_y) -> None:
    for i in range(x.shape[0]):
        sx = np.sign(x[i] - x)  # (n, F)
        sy = np.sign(y[i] - y)  # (n, M)
        if weights is None:
            num += sx.T @ sy
            den_x += (sx * sx).sum(0)
            den_y += (sy * sy).sum(0)
        else:
            w = weights * weights[..., i : i + 1]  # (B, n): c_i c_j
            num += np.einsum("bn,nf,nm->bfm", w, sx, sy, optimize=True)
            den_x += w @ (sx * sx)
            den_y += w @ (sy * sy)


def corr_matrix(x: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    """Correlation (``F x M``) of every column of ``x`` (n x F) with every column of ``y`` (n x M).

    Equal to scipy's ``pearsonr`` / ``spearmanr`` / ``kendalltau`` (tau-b) per pair; a constant
    column gives NaN.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if method == "pearson":
        return _pearson(x, y)
    if method == "spearman":
        return _pearson(_rank(x), _rank(y))
    if method == "kendall":
        return _kendall_weighted(x, y, None)
    raise NasRobustError(f"unknown correlation method {method!r}; use one of {', '.join(METHODS)}")


def t_test_p(r: np.ndarray, n: int, k: int = 0) -> np.ndarray:
    """Two-sided p-value of a (partial) correlation ``r`` from ``n`` points, ``k`` covariates.

    ``t = r sqrt((n - 2 - k) / (1 - r^2))`` with ``n - 2 - k`` degrees of freedom: the test of
    :func:`scipy.stats.pearsonr` and :func:`scipy.stats.spearmanr` (``k = 0``) and of the
    usual partial-correlation test (Fisher 1924).
    """
    df = n - 2 - k
    r = np.asarray(r, dtype=np.float64)
    if df < 1:
        return np.full(r.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = r * np.sqrt(df / ((1.0 - r) * (1.0 + r)))
    p = np.minimum(1.0, 2.0 * sps.t.sf(np.abs(t), df))
    p[np.abs(r) >= 1.0] = 0.0
    p[np.isnan(r)] = np.nan
    return p


#: Up to this many points a Spearman p is exact (every permutation, 40,320 at 8): the t approximation gives
#: p = 0 for |rho| = 1 however few the points (a suite scored on 4 subnets read "significant" at rho -1).
EXACT_SPEARMAN_MAX_N = 8


def exact_spearman_p(x: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Two-sided exact permutation p of Spearman's rho for every column pair (small ``n``; ties kept)."""
    n = x.shape[0]
    perms = np.array(list(itertools.permutations(range(n))))  # (P, n)
    rx = _standardise(_rank(np.asarray(x, dtype=np.float64)), 0)  # (n, F)
    ry = _standardise(_rank(np.asarray(y, dtype=np.float64)), 0)  # (n, M)
    p = np.full(r.shape, np.nan)
    for m in range(ry.shape[1]):
        if np.isnan(ry[0, m]):
            continue
        null = ry[perms, m] @ rx  # (P, F): rho of every permutation of this metric with every factor
        p[:, m] = np.mean(np.abs(null) >= np.abs(r[:, m]) - 1e-12, axis=0)
    p[np.isnan(r)] = np.nan
    return p


def p_values(x: np.ndarray, y: np.ndarray, r: np.ndarray, method: str) -> np.ndarray:
    """Two-sided p-values of ``r = corr_matrix(x, y, method)``, as scipy computes them.

    Pearson: :func:`scipy.stats.pearsonr` (exact under normality, same as the t test);
    Spearman: the t approximation of :func:`scipy.stats.spearmanr`, exact by permutation up to
    :data:`EXACT_SPEARMAN_MAX_N` points; Kendall: scipy's
    ``kendalltau`` per pair (exact null distribution for small samples without ties,
    normal approximation with the tie-corrected variance otherwise).
    """
    n = x.shape[0]
    if method == "spearman" and n <= EXACT_SPEARMAN_MAX_N:
        return exact_spearman_p(x, y, r)
    if method in ("pearson", "spearman"):
        return t_test_p(r, n)
    p = np.full(r.shape, np.nan)
    for f in range(x.shape[1]):
        for m in range(y.shape[1]):
            if not np.isnan(r[f, m]):
                p[f, m] = sps.kendalltau(x[:, f], y[:, m]).pvalue
    return p


# ----------------------------------------------------------------------------- bootstrap
def resample_rng(seed: int, key: bytes) -> np.random.Generator:
    """The generator of one block of resamples: ``seed`` and a stable digest of what is resampled.

    Deriving it from the data block (not from a running stream) makes a metric's interval
    independent of which other metrics were analysed alongside it.
    """
    return np.random.default_rng([int(seed), zlib.crc32(key)])


def bootstrap_indices(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` resamples of ``n`` examples with replacement, shape ``(n_boot, n)``."""
    return rng.integers(0, n, size=(n_boot, n))


def _chunks(n_boot: int, per_resample: int) -> list[slice]:
    size = max(1, _CHUNK_ELEMENTS // max(1, per_resample))
    return [slice(i, min(n_boot, i + size)) for i in range(0, n_boot, size)]


def boot_corr(x: np.ndarray, y: np.ndarray, method: str, idx: np.ndarray) -> np.ndarray:
    """Correlations of every resample ``idx[b]``: shape ``(n_boot, F, M)``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n_boot, n = idx.shape
    out = np.empty((n_boot, x.shape[1], y.shape[1]))
    if method == "kendall":
        counts = np.zeros((n_boot, n))
        np.add.at(counts, (np.arange(n_boot)[:, None], idx), 1.0)
        for sl in _chunks(n_boot, x.shape[1] * y.shape[1] + n):
            out[sl] = _kendall_weighted(x, y, counts[sl])
        return out
    with _small_gemms():
        for sl in _chunks(n_boot, n * (x.shape[1] + y.shape[1])):
            xb, yb = x[idx[sl]], y[idx[sl]]  # (b, n, F), (b, n, M)
            if method == "spearman":
                xb, yb = _rank(xb), _rank(yb)
            out[sl] = _pearson(xb, yb)
    return out


def jackknife_kendall(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Leave-one-out Kendall tau-b of all pairs, shape ``(n, F, M)`` (the fallback CI of large tables).

    Dropping example ``i`` removes its pairs from the concordance sum and from both tie-corrected
    pair counts, so every leave-one-out estimate follows from per-example row sums: O(n^2 F M)
    in total, the cost of one point estimate.
    """
    n, f = x.shape
    m = y.shape[1]
    rows = np.empty((n, f, m))
    rows_x = np.empty((n, f))
    rows_y = np.empty((n, m))
    with _small_gemms():
        for i in range(n):
            sx = np.sign(x[i] - x)
            sy = np.sign(y[i] - y)
            rows[i] = sx.T @ sy
            rows_x[i] = (sx * sx).sum(0)
            rows_y[i] = (sy * sy).sum(0)
    # each unordered pair appears in two rows; removing i removes its row and its column
    num = rows.sum(0)[None] - 2.0 * rows
    den_x = rows_x.sum(0)[None] - 2.0 * rows_x
    den_y = rows_y.sum(0)[None] - 2.0 * rows_y
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = num / np.sqrt(den_x[:, :, None] * den_y[:, None, :])
    return np.clip(tau, -1.0, 1.0)


def kendall_boot_cost(n: int, f: int, m: int, n_boot: int) -> float:
    """Multiply-adds of the weighted Kendall bootstrap (n^2 F M per resample)."""
    return float(n) * n * f * m * n_boot


@dataclass(frozen=True)
class Interval:
    """Lower and upper bounds (arrays) and how they were obtained."""

    low: np.ndarray
    high: np.ndarray
    method: str


def percentile_interval(samples: np.ndarray, level: float = 0.95, min_valid: float = 0.5) -> Interval:
    """Percentile bootstrap interval along axis 0; NaN where fewer than ``min_valid`` resamples are defined."""
    alpha = (1.0 - level) / 2.0
    valid = np.mean(~np.isnan(samples), axis=0)
    with warnings.catch_warnings():  # all-NaN slices (constant resamples) are expected
        warnings.simplefilter("ignore", RuntimeWarning)
        low = np.nanquantile(samples, alpha, axis=0)
        high = np.nanquantile(samples, 1.0 - alpha, axis=0)
    low[valid < min_valid] = np.nan
    high[valid < min_valid] = np.nan
    return Interval(low, high, "bootstrap-percentile")


def jackknife_interval(estimate: np.ndarray, loo: np.ndarray, level: float = 0.95) -> Interval:
    """Normal interval with the jackknife standard error (Efron & Tibshirani ch. 11), clipped to [-1, 1]."""
    n = loo.shape[0]
    se = np.sqrt((n - 1) / n * np.nansum((loo - np.nanmean(loo, axis=0)) ** 2, axis=0))
    z = sps.norm.ppf(0.5 + level / 2.0)
    return Interval(np.clip(estimate - z * se, -1, 1), np.clip(estimate + z * se, -1, 1), "jackknife-normal")


# ----------------------------------------------------------------------------- partial correlation
def residualise(a: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Residuals of the columns of ``a`` (..., n, F) after least squares on ``[1, z]`` (..., n, k)."""
    ones = np.ones((*z.shape[:-1], 1))
    design = np.concatenate([ones, z], axis=-1)
    gram = np.swapaxes(design, -1, -2) @ design
    coef = np.linalg.pinv(gram) @ (np.swapaxes(design, -1, -2) @ a)
    return a - design @ coef


def partial_corr_matrix(x: np.ndarray, y: np.ndarray, z: np.ndarray, method: str) -> np.ndarray:
    """Partial correlation of every x column with every y column given all columns of ``z``.

    Pearson: correlation of the least-squares residuals on ``[1, z]``; Spearman: the same on
    ranks (x, y and z ranked first), the usual definition (e.g. Conover, "Practical
    Nonparametric Statistics", 1999). Works on stacked resamples ``(..., n, .)`` too.
    """
    if method == "spearman":
        x, y, z = _rank(x), _rank(y), _rank(z)
    elif method != "pearson":
        raise NasRobustError(f"partial correlations support spearman and pearson, not {method!r}")
    return _pearson(residualise(x, z), residualise(y, z))


def boot_partial(x: np.ndarray, y: np.ndarray, z: np.ndarray, method: str, idx: np.ndarray) -> np.ndarray:
    n_boot, n = idx.shape
    out = np.empty((n_boot, x.shape[1], y.shape[1]))
    with _small_gemms():
        for sl in _chunks(n_boot, n * (x.shape[1] + y.shape[1] + z.shape[1])):
            out[sl] = partial_corr_matrix(x[idx[sl]], y[idx[sl]], z[idx[sl]], method)
    return out


def group_columns_by_mask(mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Columns of a boolean (n, M) availability mask grouped by identical pattern: ``[(rows, cols), ...]``."""
    groups: dict[bytes, list[int]] = {}
    for j in range(mask.shape[1]):
        groups.setdefault(np.packbits(mask[:, j]).tobytes() + mask.shape[0].to_bytes(4, "little"), []).append(j)
    out = []
    for cols in groups.values():
        rows = np.flatnonzero(mask[:, cols[0]])
        out.append((rows, np.asarray(cols)))
    return out


def mean_ci(values: np.ndarray, n_boot: int, rng: np.random.Generator, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float("nan"), float("nan")
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def unique_sorted(values: Sequence[str]) -> list[str]:
    """Category labels sorted numerically when they all parse as numbers, else alphabetically."""
    vals = list(dict.fromkeys(values))
    try:
        return sorted(vals, key=float)
    except (TypeError, ValueError):
        return sorted(vals, key=str)
