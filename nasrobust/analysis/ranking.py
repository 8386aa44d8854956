"""Do the same architectures win under every kind of noise? Ranking agreement and Pareto fronts.

RobustART (Tang et al. 2021, Sec. 5) asks whether robustness to one noise type predicts
robustness to another; for a NAS user the question is whether a search for adversarial
robustness also finds the architectures that survive corruptions and system noise.
:func:`ranking_agreement` ranks the architectures once per noise group and compares every
two rankings with Kendall's tau-b (p-value from scipy) and with the overlap of their top
``top_fraction`` (how many winners are shared, next to the ``k / n`` expected by chance).

A group's score is a Borda count: each of the group's metric columns is turned into
percentile ranks (oriented so that higher is more robust; mCE, flip probabilities and the
spread of system-noise accuracies count reversed), and the group score is their mean. That
weighs each attack/budget or corruption/severity equally whatever its scale, which a plain
mean of accuracies would not (hard corruptions spread accuracies more).

The groups are what the suites declare (:class:`~nasrobust.noise.base.MetricInfo`): a metric
joins its ``rank_group``; ``rank_fallback`` metrics (aggregates such as mCE) only when none of
the group's primary metrics is in the table. Clean accuracy, recorded by several suites on the
same images, counts once: the table's :meth:`~nasrobust.analysis.table.ResultTable.clean_column`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from nasrobust.analysis.table import ResultTable, column_info
from nasrobust.errors import NasRobustError


@dataclass(frozen=True)
class RankGroup:
    """One noise group: the suites and metrics that declare it (``fallback``: used only without ``primary``)."""

    name: str
    primary: tuple[tuple[str, str], ...]  # (suite, metric)
    fallback: tuple[tuple[str, str], ...] = ()

    @property
    def doc(self) -> str:
        text = _members_text(self.primary)
        return f"{text} (else {_members_text(self.fallback)})" if self.fallback else text


def _members_text(members: Sequence[tuple[str, str]]) -> str:
    by_suite: dict[str, list[str]] = {}
    for suite, metric in members:
        by_suite.setdefault(suite, [])
        if metric not in by_suite[suite]:
            by_suite[suite].append(metric)
    return "; ".join(f"{suite}: {', '.join(metrics)}" for suite, metrics in by_suite.items())


@functools.lru_cache(maxsize=1)
def _declared_groups() -> tuple[RankGroup, ...]:
    from nasrobust.noise.base import CLEAN, SUITES

    members: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {CLEAN: ([], [])}
    for suite in SUITES.names():
        for info in SUITES.get(suite).metrics:
            if info.rank_group is not None:
                members.setdefault(info.rank_group, ([], []))[info.rank_fallback].append((suite, info.metric))
    return tuple(RankGroup(name, tuple(primary), tuple(fallback)) for name, (primary, fallback) in members.items())


def rank_groups() -> dict[str, RankGroup]:
    """The noise groups the registered suites declare, clean accuracy first, then in suite order."""
    return {g.name: g for g in _declared_groups()}


def group_columns(table: ResultTable, group: RankGroup) -> list[str]:
    """The table's metric columns that make up ``group``."""
    from nasrobust.noise.base import CLEAN

    if group.name == CLEAN:  # measured by several suites on the same images: one column
        clean = table.clean_column()
        return [clean] if clean is not None else []
    declared = [(m, info) for m in table.metrics if (info := column_info(m)) is not None and info.rank_group == group.name]
    return [m for m, info in declared if not info.rank_fallback] or [m for m, _ in declared]


def percentile_ranks(values: pd.Series, orientation: int) -> pd.Series:
    """Average ranks scaled to (0, 1], oriented so that 1 is the most robust; NaN stays NaN."""
    ranks = (orientation * values).rank(method="average", na_option="keep")
    return ranks / values.notna().sum()


def rank_scores(table: ResultTable, groups: Sequence[str] | None = None,
                metrics: Sequence[str] = ()) -> pd.DataFrame:
    """Architectures x scores: one Borda score per noise group present, plus each column of ``metrics``
    as its oriented percentile rank."""
    declared = rank_groups()
    names = list(declared) if groups is None else list(groups)
    unknown = [g for g in names if g not in declared]
    if unknown:
        raise NasRobustError(f"unknown noise group(s) {', '.join(unknown)}; use {', '.join(declared)}")
    out = {}
    for name in names:
        cols = group_columns(table, declared[name])
        if cols:
            ranks = pd.concat([percentile_ranks(table.frame[c], table.directions.get(c, 1)) for c in cols], axis=1)
            out[name] = ranks.mean(axis=1, skipna=True)
    for col in metrics:
        col = table.resolve(col)
        out[col] = percentile_ranks(table.frame[col], table.directions.get(col, 1))
    if len(out) < 2:
        raise NasRobustError(
            f"ranking agreement needs two noise groups; the table has {', '.join(out) or 'none'} "
            f"(groups: {', '.join(rank_groups())})"
        )
    return pd.DataFrame(out, index=table.frame.index)


def ranking_agreement(table: ResultTable, groups: Sequence[str] | None = None, *, metrics: Sequence[str] = (),
                      top_fraction: float = 0.1) -> pd.DataFrame:
    """Kendall tau-b and top-k overlap between the architecture rankings of every two score columns.

    One row per unordered pair ``(a, b)``: ``n`` (architectures ranked by both), ``tau``, ``p``,
    ``top_k``, ``top_overlap`` (fraction of the top-k of ``a`` that is also top-k of ``b``; ties broken by
    table order) and
    ``chance_overlap`` (``k / n``).
    """
    if not 0 < top_fraction <= 1:
        raise NasRobustError(f"top_fraction must be in (0, 1], got {top_fraction}")
    scores = rank_scores(table, groups, metrics)
    cols = list(scores.columns)
    rows = []
    for i, a in enumerate(cols):
        for b in cols[i + 1:]:
            ok = scores[a].notna() & scores[b].notna()
            n = int(ok.sum())
            if n < 3:
                continue
            res = sps.kendalltau(scores.loc[ok, a], scores.loc[ok, b])
            k = max(1, int(round(top_fraction * n)))
            top_a = set(scores.loc[ok, a].sort_values(ascending=False, kind="mergesort").index[:k])
            top_b = set(scores.loc[ok, b].sort_values(ascending=False, kind="mergesort").index[:k])
            rows.append({"a": a, "b": b, "n": n, "tau": float(res.statistic), "p": float(res.pvalue), "top_k": k,
                         "top_overlap": len(top_a & top_b) / k, "chance_overlap": k / n})
    return pd.DataFrame(rows, columns=["a", "b", "n", "tau", "p", "top_k", "top_overlap", "chance_overlap"])


def agreement_matrix(agreement: pd.DataFrame, value: str = "tau") -> pd.DataFrame:
    """Square symmetric matrix of one column of :func:`ranking_agreement` (diagonal 1)."""
    names = list(dict.fromkeys([*agreement["a"], *agreement["b"]]))
    mat = pd.DataFrame(np.nan, index=names, columns=names)
    for _, row in agreement.iterrows():
        mat.loc[row["a"], row["b"]] = mat.loc[row["b"], row["a"]] = row[value]
    for n in names:
        mat.loc[n, n] = 1.0
    return mat


def pareto_front(points: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``points`` (n x d), each column maximised or minimised.

    A row is dominated when another is at least as good in every column and better in one;
    rows with NaN are never on the front.
    """
    pts = np.asarray(points, dtype=np.float64) * np.where(np.asarray(maximize, dtype=bool), 1.0, -1.0)
    ok = ~np.isnan(pts).any(axis=1)
    front = np.zeros(len(pts), dtype=bool)
    for i in np.flatnonzero(ok):
        others = pts[ok]
        dominated = np.any(np.all(others >= pts[i], axis=1) & np.any(others > pts[i], axis=1))
        front[i] = not dominated
    return front
