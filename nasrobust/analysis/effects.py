"""Grouped effects of categorical architecture choices on robustness.

Counts (how many 5x5 kernels, how many conv ops) hide *where* a choice is made. RobustART
(Tang et al. 2021) and Huang et al. ("Exploring Architectural Ingredients of Adversarially
Robust Deep Neural Networks", NeurIPS 2021) compare choices per stage; NAS-Bench-201-R
(Jung et al., ICLR 2023) per edge. So the categorical choices are read from the genome where
the space allows: each space declares them (:meth:`~nasrobust.space.SearchSpace.choices`; by
default a walk over the genome; ``bignas`` names per-stage depth / width / kernel / expand
ratio, ``nb201`` the op on each edge, ``darts`` the op on each (node, input) edge of both
cells). A space that declares none (the zoo) falls back to its factors: every integer-valued
factor with at most ``max_levels`` distinct values becomes a categorical choice.

For every choice x metric, :func:`grouped_effects` reports the mean of the metric for each
choice value with a percentile-bootstrap 95% interval, and one test of "all values have the
same distribution": Kruskal-Wallis H (default; rank-based, no normality assumption, with
epsilon-squared = H / (n - 1) as effect size, Tomczak & Tomczak 2014) or one-way ANOVA
(``test="anova"``, eta-squared). p-values are adjusted over all choice x metric tests of the
call (Benjamini-Hochberg by default).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from nasrobust.analysis import stats
from nasrobust.analysis.table import ResultTable
from nasrobust.errors import NasRobustError
from nasrobust.space import get_space, list_spaces

log = logging.getLogger(__name__)

def factor_choices(table: ResultTable, max_levels: int = 6) -> pd.DataFrame:
    """The fallback: integer-valued factors with 2..``max_levels`` distinct values, as labels."""
    cols = {}
    for f in table.factors:
        values = table.frame[f]
        if values.nunique() <= max_levels and np.all(np.mod(values.to_numpy(), 1.0) == 0):
            cols[f] = values.map(lambda v: str(int(v)))
    return pd.DataFrame(cols, index=table.frame.index)


def choice_frame(table: ResultTable, max_levels: int = 6) -> pd.DataFrame:
    """One row per table row, one column per categorical choice (labels; NaN where absent).

    From the space's :meth:`~nasrobust.space.SearchSpace.choices` when it declares any, else
    :func:`factor_choices`. Choices that take one value on every architecture are dropped.
    """
    frame = pd.DataFrame(index=table.frame.index)
    if table.space in list_spaces():
        space = get_space(table.space)
        rows = [space.choices(space.decode(enc)) for enc in table.frame["encoding"]]
        frame = pd.DataFrame(rows, index=table.frame.index)
    if frame.columns.empty:
        frame = factor_choices(table, max_levels)
    keep = [c for c in frame.columns if frame[c].nunique(dropna=True) >= 2]
    return frame[keep]


# ----------------------------------------------------------------------------- tests
@dataclass(frozen=True)
class GroupTest:
    """A k-sample test: statistic, p-value and effect size with its name."""

    statistic: float
    p: float
    effect: float
    effect_name: str


def _kruskal(groups: Sequence[np.ndarray]) -> GroupTest:
    n = sum(len(g) for g in groups)
    try:
        h, p = sps.kruskal(*groups)
    except ValueError:  # every value identical
        return GroupTest(float("nan"), float("nan"), float("nan"), "epsilon_sq")
    return GroupTest(float(h), float(p), float(h) / (n - 1), "epsilon_sq")


def _anova(groups: Sequence[np.ndarray]) -> GroupTest:
    allv = np.concatenate(groups)
    total = float(((allv - allv.mean()) ** 2).sum())
    if total == 0.0:
        return GroupTest(float("nan"), float("nan"), float("nan"), "eta_sq")
    f, p = sps.f_oneway(*groups)
    between = float(sum(len(g) * (g.mean() - allv.mean()) ** 2 for g in groups))
    return GroupTest(float(f), float(p), between / total, "eta_sq")


#: k-sample tests by name (``--test``).
GROUP_TESTS: Mapping[str, Callable[[Sequence[np.ndarray]], GroupTest]] = {"kruskal": _kruskal, "anova": _anova}
TEST_NAMES: Mapping[str, str] = {"kruskal": "Kruskal-Wallis H", "anova": "one-way ANOVA F"}


def _mean_intervals(values: np.ndarray, n_boot: int, rng: np.random.Generator,
                    level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap intervals of the column means of ``values`` (n x M), one set of resamples.

    A resample's means are ``counts @ values / n`` (counts: how often each row was drawn), so
    hundreds of metrics cost one matrix product. Columns with missing values get NaN.
    """
    n, m = values.shape
    if n < 2 or not n_boot:
        return np.full(m, np.nan), np.full(m, np.nan)
    idx = rng.integers(0, n, size=(n_boot, n))
    counts = np.bincount((np.arange(n_boot)[:, None] * n + idx).ravel(), minlength=n_boot * n).reshape(n_boot, n)
    means = counts @ np.nan_to_num(values) / n
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, alpha, axis=0), np.quantile(means, 1.0 - alpha, axis=0)
    missing = np.isnan(values).any(axis=0)
    low[missing] = high[missing] = np.nan
    return low, high


@dataclass(frozen=True, eq=False)
class Effects:
    """Per-value means (``levels``) and one test per choice x metric (``tests``)."""

    levels: pd.DataFrame
    tests: pd.DataFrame


def grouped_effects(
    table: ResultTable,
    *,
    metrics: Sequence[str] | None = None,
    choices: pd.DataFrame | None = None,
    test: str = "kruskal",
    n_boot: int = 1000,
    seed: int = 0,
    correction: str = "bh",
    alpha: float = 0.05,
    min_group: int = 2,
    max_levels: int = 6,
    level: float = 0.95,
) -> Effects:
    """Mean (with bootstrap CI) of each metric per value of each categorical choice, and a k-sample test.

    ``levels`` columns: ``choice, value, metric, n, mean, ci_low, ci_high, median, std``.
    ``tests`` columns: ``choice, metric, test, groups, n, statistic, p, effect, effect_name,
    p_adj, correction, significant``. Values seen on fewer than ``min_group`` architectures
    (for that metric) are left out; a choice with fewer than two values left is not tested.
    """
    if test not in GROUP_TESTS:
        raise NasRobustError(f"unknown test {test!r}; use one of {', '.join(GROUP_TESTS)}")
    if correction not in stats.CORRECTIONS:
        raise NasRobustError(f"unknown correction {correction!r}; use one of {', '.join(stats.CORRECTIONS)}")
    choices = choice_frame(table, max_levels) if choices is None else choices
    if choices.empty:
        raise NasRobustError(f"space {table.space}: no categorical choice varies across the stored architectures")
    m_names = table.select_metrics(metrics)
    data = table.frame[m_names].to_numpy(dtype=np.float64)
    nan = float("nan")
    level_rows: list[dict] = []
    test_rows: list[dict] = []
    for choice in choices.columns:
        labels = choices[choice].to_numpy(dtype=object)
        present = pd.notna(labels)
        members = {v: np.flatnonzero(present & (labels == v)) for v in stats.unique_sorted(labels[present].tolist())}
        # one set of resamples per choice value, shared by every metric measured on all its members
        shared = {v: _mean_intervals(data[rows], n_boot, stats.resample_rng(seed, f"{choice}\0{v}".encode()), level)
                  for v, rows in members.items()}
        for j, metric in enumerate(m_names):
            measured = ~np.isnan(data[:, j])
            groups: dict[str, np.ndarray] = {}
            for value, rows in members.items():
                rows_ok = rows[measured[rows]]
                if len(rows_ok) >= min_group:
                    groups[value] = rows_ok
            if len(groups) < 2:
                continue
            for value, rows_ok in groups.items():
                g = data[rows_ok, j]
                if not n_boot:
                    low = high = nan
                elif len(rows_ok) == len(members[value]):
                    low, high = shared[value][0][j], shared[value][1][j]
                else:  # some members lack this metric: resample the ones that have it
                    rng = stats.resample_rng(seed, f"{choice}\0{value}\0{metric}".encode())
                    low, high = stats.mean_ci(g, n_boot, rng, level)
                level_rows.append({"choice": choice, "value": value, "metric": metric, "n": len(g), "mean": g.mean(),
                                   "ci_low": low, "ci_high": high, "median": float(np.median(g)), "std": g.std(ddof=1)})
            result = GROUP_TESTS[test]([data[rows_ok, j] for rows_ok in groups.values()])
            test_rows.append({"choice": choice, "metric": metric, "test": TEST_NAMES[test], "groups": len(groups),
                              "n": int(sum(len(r) for r in groups.values())), "statistic": result.statistic,
                              "p": result.p, "effect": result.effect, "effect_name": result.effect_name})
    tests = pd.DataFrame(test_rows, columns=["choice", "metric", "test", "groups", "n", "statistic", "p", "effect",
                                             "effect_name"])
    if tests.empty:
        raise NasRobustError(
            f"no choice has two values with at least {min_group} architectures each; evaluate more architectures"
        )
    tests["p_adj"] = stats.adjust(tests["p"].to_numpy(dtype=np.float64), correction)
    tests["correction"] = stats.CORRECTION_NAMES[correction]
    tests["significant"] = tests["p_adj"] < alpha
    levels = pd.DataFrame(level_rows, columns=["choice", "value", "metric", "n", "mean", "ci_low", "ci_high", "median", "std"])
    return Effects(levels=levels, tests=tests)
