"""Factor <-> robustness correlations, with bootstrap CIs and multiple-testing control.

For every architecture factor (depth per stage and in total, widths, expand ratios, kernel
counts, resolution, cell-op counts, params, FLOPs) and every stored metric, :func:`correlations`
reports Spearman's rho, Kendall's tau-b and Pearson's r over the architectures, each with a
percentile-bootstrap 95% interval (resampling architectures) and a two-sided p-value adjusted
for the number of tests. RobustART (Tang et al. 2021) and NAS-Bench-201-R (Jung et al.,
"Neural Architecture Design and Robustness: A Dataset", ICLR 2023) report such rank
correlations without intervals or a correction; with ~25 factors x ~200 metrics, about 250
pairs would pass p < 0.05 by chance alone, so the adjusted p-value is the one to read.

:func:`partial_correlations` answers the follow-up question: "robustness grows with width"
often only restates "robustness grows with capacity". It correlates the parts of a factor and
a metric that a covariate (params, FLOPs or clean accuracy) does not explain linearly (on ranks
for Spearman), with the t test on ``n - 2 - k`` degrees of freedom.

The family of a correction is every (factor, metric) pair of one method in one call; the
``correction`` column names it (Benjamini-Hochberg by default, Holm on request).
Missing values (a metric not measured for some architectures) are handled pairwise: each
metric uses the architectures that have it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from nasrobust.analysis import stats
from nasrobust.analysis.table import ResultTable
from nasrobust.errors import NasRobustError

log = logging.getLogger(__name__)

RESULT_COLUMNS = ("factor", "metric", "method", "n", "r", "ci_low", "ci_high", "ci_method", "p", "p_adj",
                  "correction", "significant")


def _check_methods(methods: Sequence[str], allowed: Sequence[str]) -> list[str]:
    bad = [m for m in methods if m not in allowed]
    if bad or not methods:
        raise NasRobustError(f"unknown correlation method(s) {', '.join(bad) or '(none)'}; use {', '.join(allowed)}")
    return list(methods)


def _finish(rows: list[dict], correction: str, alpha: float, extra: Sequence[str] = ()) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[c for c in RESULT_COLUMNS if c not in ("p_adj", "correction", "significant")]
                         + list(extra))
    frame["p_adj"] = np.nan
    for _, idx in frame.groupby("method").groups.items():
        frame.loc[idx, "p_adj"] = stats.adjust(frame.loc[idx, "p"].to_numpy(dtype=np.float64), correction)
    frame["correction"] = stats.CORRECTION_NAMES[correction]
    frame["significant"] = frame["p_adj"] < alpha
    return frame[[*RESULT_COLUMNS, *extra]]


def correlations(
    table: ResultTable,
    *,
    factors: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    methods: Sequence[str] = stats.METHODS,
    n_boot: int = 1000,
    seed: int = 0,
    correction: str = "bh",
    alpha: float = 0.05,
    level: float = 0.95,
    kendall_budget: float = stats.KENDALL_BOOT_BUDGET,
) -> pd.DataFrame:
    """Correlation of every factor with every metric: one row per (factor, metric, method).

    Columns: ``factor, metric, method, n, r, ci_low, ci_high, ci_method, p, p_adj, correction,
    significant``. ``r`` and ``p`` equal scipy's ``spearmanr`` / ``kendalltau`` (tau-b) /
    ``pearsonr`` on the same architectures; the interval is the bootstrap percentile interval
    over ``n_boot`` resamples drawn from a generator seeded by ``seed`` and the rows used, so
    reruns give identical numbers. Kendall's interval falls back to a jackknife normal interval
    when its bootstrap would exceed ``kendall_budget`` multiply-adds (``ci_method`` says so).
    """
    methods = _check_methods(methods, stats.METHODS)
    adjust_name = stats.CORRECTION_NAMES.get(correction)
    if adjust_name is None:
        raise NasRobustError(f"unknown correction {correction!r}; use one of {', '.join(stats.CORRECTIONS)}")
    if n_boot < 0:
        raise NasRobustError("n_boot must be >= 0")
    f_names = table.select_factors(factors)
    m_names = table.select_metrics(metrics)
    x_all = table.frame[f_names].to_numpy(dtype=np.float64)
    y_all = table.frame[m_names].to_numpy(dtype=np.float64)
    rows: list[dict] = []
    for sub, cols in stats.group_columns_by_mask(~np.isnan(y_all)):
        x, y = x_all[sub], y_all[np.ix_(sub, cols)]
        n = len(sub)
        idx = stats.bootstrap_indices(n, n_boot, stats.resample_rng(seed, sub.tobytes())) if n_boot else None
        for method in methods:
            r = stats.corr_matrix(x, y, method)
            p = stats.p_values(x, y, r, method)
            ci = _interval(x, y, r, method, idx, level, kendall_budget)
            for fi, f in enumerate(f_names):
                for mj, c in enumerate(cols):
                    rows.append({
                        "factor": f, "metric": m_names[c], "method": method, "n": n, "r": r[fi, mj],
                        "ci_low": ci.low[fi, mj], "ci_high": ci.high[fi, mj], "ci_method": ci.method, "p": p[fi, mj],
                    })
    out = _finish(rows, correction, alpha)
    order = {m: i for i, m in enumerate(m_names)}
    forder = {f: i for i, f in enumerate(f_names)}
    morder = {m: i for i, m in enumerate(methods)}
    return out.sort_values(["method", "metric", "factor"], key=lambda s: s.map({**order, **forder, **morder}),
                           kind="mergesort").reset_index(drop=True)


def _interval(x, y, r, method, idx, level, budget) -> stats.Interval:
    if idx is None:
        nan = np.full(r.shape, np.nan)
        return stats.Interval(nan, nan, "none")
    n = x.shape[0]
    if method == "kendall" and stats.kendall_boot_cost(n, x.shape[1], y.shape[1], idx.shape[0]) > budget:
        log.info("Kendall CI by jackknife: bootstrap of %d architectures x %d pairs exceeds the budget",
                 n, x.shape[1] * y.shape[1])
        return stats.jackknife_interval(r, stats.jackknife_kendall(x, y), level)
    return stats.percentile_interval(stats.boot_corr(x, y, method, idx), level)


def partial_correlations(
    table: ResultTable,
    covariates: Sequence[str] = ("params",),
    *,
    factors: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    methods: Sequence[str] = ("spearman",),
    n_boot: int = 1000,
    seed: int = 0,
    correction: str = "bh",
    alpha: float = 0.05,
    level: float = 0.95,
) -> pd.DataFrame:
    """Partial correlation of every factor with every metric given ``covariates``.

    ``covariates`` are column names or the aliases ``"params"``, ``"flops"``, ``"clean"``.
    Columns: those of :func:`correlations` plus ``covariates`` (joined with ``+``) and
    ``r_raw`` (the zero-order correlation on the same rows, for comparison). Pairs where the
    factor or the metric is itself a covariate, or is (numerically) a linear function of the
    covariates, have no partial correlation and are left out.
    """
    methods = _check_methods(methods, ("spearman", "pearson"))
    if correction not in stats.CORRECTIONS:
        raise NasRobustError(f"unknown correction {correction!r}; use one of {', '.join(stats.CORRECTIONS)}")
    if not covariates:
        raise NasRobustError("partial correlations need at least one covariate (params, flops, clean or a column)")
    z_names = [table.resolve(c) for c in covariates]
    f_names = [f for f in table.select_factors(factors) if f not in z_names]
    m_names = [m for m in table.select_metrics(metrics) if m not in z_names]
    if not f_names or not m_names:
        raise NasRobustError("nothing left to correlate once the covariates are removed")
    x_all = table.frame[f_names].to_numpy(dtype=np.float64)
    y_all = table.frame[m_names].to_numpy(dtype=np.float64)
    z_all = table.frame[z_names].to_numpy(dtype=np.float64)
    z_ok = ~np.isnan(z_all).any(axis=1)
    k = len(z_names)
    rows: list[dict] = []
    for sub, cols in stats.group_columns_by_mask(~np.isnan(y_all) & z_ok[:, None]):
        n = len(sub)
        if n < k + 4:
            continue
        x, y, z = x_all[sub], y_all[np.ix_(sub, cols)], z_all[sub]
        idx = stats.bootstrap_indices(n, n_boot, stats.resample_rng(seed, sub.tobytes())) if n_boot else None
        for method in methods:
            r = stats.partial_corr_matrix(x, y, z, method)
            r[_explained(x, z, method)[:, None] | _explained(y, z, method)[None, :]] = np.nan
            raw = stats.corr_matrix(x, y, method)
            p = stats.t_test_p(r, n, k)
            if idx is None:
                low = high = np.full(r.shape, np.nan)
            else:
                ci = stats.percentile_interval(stats.boot_partial(x, y, z, method, idx), level)
                low, high = ci.low, ci.high
            for fi, f in enumerate(f_names):
                for mj, c in enumerate(cols):
                    if np.isnan(r[fi, mj]):
                        continue
                    rows.append({
                        "factor": f, "metric": m_names[c], "method": method, "n": n, "r": r[fi, mj],
                        "ci_low": low[fi, mj], "ci_high": high[fi, mj],
                        "ci_method": "none" if idx is None else "bootstrap-percentile", "p": p[fi, mj],
                        "covariates": "+".join(z_names), "r_raw": raw[fi, mj],
                    })
    if not rows:
        raise NasRobustError(f"no partial correlation given {', '.join(z_names)} is defined on these architectures")
    return _finish(rows, correction, alpha, extra=("covariates", "r_raw"))


def _explained(a: np.ndarray, z: np.ndarray, method: str, tol: float = 1e-9) -> np.ndarray:
    """Columns of ``a`` that the covariates explain exactly (nothing left to correlate)."""
    if method == "spearman":
        a, z = stats._rank(a), stats._rank(z)
    centred = a - a.mean(axis=0)
    resid = stats.residualise(a, z)
    return np.linalg.norm(resid, axis=0) <= tol * np.maximum(np.linalg.norm(centred, axis=0), 1e-300)


def strongest(corr: pd.DataFrame, k: int = 6, method: str = "spearman", significant_only: bool = True) -> pd.DataFrame:
    """The ``k`` (factor, metric) pairs with the largest |r| of one method, at most one per metric."""
    sub = corr[corr["method"] == method].dropna(subset=["r"])
    if significant_only:
        sub = sub[sub["significant"]]
    sub = sub.assign(_abs=sub["r"].abs()).sort_values(["_abs", "factor", "metric"], ascending=[False, True, True])
    sub = sub.drop_duplicates("metric")
    return sub.head(k).drop(columns="_abs").reset_index(drop=True)
