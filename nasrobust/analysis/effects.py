"""Grouped effects of categorical architecture choices on robustness.

Counts (how many 5x5 kernels, how many conv ops) hide *where* a choice is made. RobustART
(Tang et al. 2021) and Huang et al. ("Exploring Architectural Ingredients of Adversarially
Robust Deep Neural Networks", NeurIPS 2021) compare choices per stage; NAS-Bench-201-R
(Jung et al., ICLR 2023) per edge. So the categorical choices are read from the genome where
the space allows: :func:`categorical_choices` looks up a per-family hook in
:data:`CHOICE_EXTRACTORS` (``bignas``: per-stage depth / width / kernel / expand ratio,
resolution, stem; ``nb201``: the op on each edge; ``darts``: the op on each (node, input)
edge of both cells, ``none`` where DARTS kept no edge; ``ofa-mbv3``: per-stage depth and
per-block kernel / expand; ``robarch``: every genome field). Small-input variants use their
family's hook. A space without one falls back to its factors: every integer-valued factor with
at most ``max_levels`` distinct values becomes a categorical choice.

For every choice x metric, :func:`grouped_effects` reports the mean of the metric for each
choice value with a percentile-bootstrap 95% interval, and one test of "all values have the
same distribution": Kruskal-Wallis H (default; rank-based, no normality assumption, with
epsilon-squared = H / (n - 1) as effect size, Tomczak & Tomczak 2014) or one-way ANOVA
(``test="anova"``, eta-squared). p-values are adjusted over all choice x metric tests of the
call (Benjamini-Hochberg by default).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from nasrobust.analysis import stats
from nasrobust.analysis.table import ResultTable
from nasrobust.arch import Arch
from nasrobust.errors import NasRobustError
from nasrobust.registry import Registry
from nasrobust.space import SearchSpace, get_space, list_spaces

log = logging.getLogger(__name__)

ChoiceFn = Callable[[SearchSpace, Arch], dict[str, str]]

#: Space family -> hook reading an architecture's categorical choices (name -> value label).
CHOICE_EXTRACTORS: Registry[ChoiceFn] = Registry("choice extractor")


def register_choices(*families: str) -> Callable[[ChoiceFn], ChoiceFn]:
    """Register a categorical-choice hook for one or more space families."""

    def add(fn: ChoiceFn) -> ChoiceFn:
        for family in families:
            CHOICE_EXTRACTORS.register(family)(fn)
        return fn

    return add


def _label(value: object) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


@register_choices("bignas", "bignas-r50")
def _bignas_choices(space: SearchSpace, arch: Arch) -> dict[str, str]:
    """Resolution, stem and per-stage depth / width / kernel / expand ratio (BigNAS-ResNet genomes)."""
    g = arch.genome
    out = {"resolution": _label(g.resolution), "stem_kernel": _label(g.stem_kernel), "stem_width": _label(g.stem_width)}
    for i, s in enumerate(g.stages, start=1):
        for name in ("depth", "width", "kernel", "expand"):
            out[f"stage{i}.{name}"] = _label(getattr(s, name))
    return out


@register_choices("nb201")
def _nb201_choices(space: SearchSpace, arch: Arch) -> dict[str, str]:
    """The op on each edge ``edge<to><-<from>``, read from the official cell string ``|op~src|+|...|``."""
    body = arch.encoding.partition(":")[2]
    out = {}
    for node, part in enumerate(body.split("+"), start=1):
        for item in part.strip("|").split("|"):
            op, _, src = item.rpartition("~")
            out[f"edge{node}<-{src}"] = op
    return out


@register_choices("darts")
def _darts_choices(space: SearchSpace, arch: Arch) -> dict[str, str]:
    """The op on each (node, input) edge of both cells (DARTS' alpha layout), ``none`` where no edge was kept."""
    out = {}
    for cell, nodes in arch.genome.cells().items():
        for i, node in enumerate(nodes):
            ops = {j: op for op, j in node}
            for j in range(i + 2):
                out[f"{cell}.{i + 2}<-{j}"] = ops.get(j, "none")
    return out


@register_choices("ofa-mbv3")
def _ofa_choices(space: SearchSpace, arch: Arch) -> dict[str, str]:
    """Resolution, per-stage depth and the kernel / expand ratio of each present block."""
    g = arch.genome
    out = {"resolution": _label(g.resolution)}
    for i, stage in enumerate(g.stages, start=1):
        out[f"stage{i}.depth"] = str(len(stage))
        for j, block in enumerate(stage, start=1):
            out[f"stage{i}.block{j}.kernel"] = _label(block.kernel)
            out[f"stage{i}.block{j}.expand"] = _label(block.expand)
    return out


@register_choices("robarch")
def _dataclass_choices(space: SearchSpace, arch: Arch) -> dict[str, str]:
    """Every field of a dataclass genome (tuples per position, ``depths_1`` ...)."""
    out = {}
    for f in dataclasses.fields(arch.genome):
        value = getattr(arch.genome, f.name)
        if isinstance(value, tuple):
            out.update({f"{f.name}_{i}": _label(v) for i, v in enumerate(value, start=1)})
        else:
            out[f.name] = _label(value)
    return out


def family_of(space_name: str) -> str | None:
    """The registered choice family of a space: its own name, or the family whose small variant it is."""
    if space_name in CHOICE_EXTRACTORS:
        return space_name
    for family in CHOICE_EXTRACTORS.names():
        if family in list_spaces() and get_space(family).small_variant == space_name:
            return family
    return None


def categorical_choices(space: SearchSpace, arch: Arch) -> dict[str, str]:
    """An architecture's categorical choices (name -> value label) from its family's hook; ``{}`` without one."""
    family = family_of(space.name)
    if family is None:
        return {}
    return CHOICE_EXTRACTORS.get(family)(space, arch)


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

    From the space family's hook when there is one, else :func:`factor_choices`. Choices
    that take one value on every architecture are dropped.
    """
    frame: pd.DataFrame
    if table.space in list_spaces() and family_of(table.space):
        space = get_space(table.space)
        rows = [categorical_choices(space, space.decode(enc)) for enc in table.frame["encoding"]]
        frame = pd.DataFrame(rows, index=table.frame.index)
    else:
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
