"""The analysis table: one row per evaluated network, its architecture factors beside its metrics.

The result store keeps one row per ``(space, encoding, weights_id, dataset, suite, noise,
level, metric)``. Every analysis here wants the wide form instead: architectures x
(factors, params, FLOPs, metrics). :func:`build_table` makes it:

* a metric column is named ``"<suite>/<noise>/<metric>@<level>"`` (``"@<level>"`` dropped
  when the only stored level of that triple is 0), e.g. ``adversarial/pgd_linf/accuracy@8/255``,
  ``natural/gaussian_noise/accuracy@3``, ``system/summary/worst``; adversarial budgets that
  are whole multiples of 1/255 are written ``k/255`` as in the papers;
* ``metrics`` / ``exclude`` select columns by shell-style globs on those names; by default
  the metrics a suite declares ``diagnostic`` (0/1 check flags such as the adversarial
  suite's sanity checks, not measurements) are excluded;
* each metric's direction (higher or lower is more robust) is what its suite declares
  (:func:`nasrobust.noise.base.metric_info`); columns no registered suite declares count as
  higher-is-better;
* factors come from ``space.factors(arch)`` plus ``params`` and ``flops`` from
  ``space.cost(arch)`` (analytic, at the dataset's class count and image size);
* a column with no variance, or measured on fewer than ``min_archs`` networks, is not
  analysed: it is listed in :attr:`ResultTable.skipped` with the reason, never silently dropped.

``--space bignas`` also finds a store written with ``bignas-small`` (the space's
``small_variant``, used for 28/32-px data); a store without that space is a
:class:`~nasrobust.errors.NasRobustError` that lists the spaces it does hold.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import pandas as pd

from nasrobust.errors import NasRobustError
from nasrobust.space import get_space, list_spaces

if TYPE_CHECKING:  # pragma: no cover
    from nasrobust.noise.base import MetricInfo
    from nasrobust.store import ResultStore

log = logging.getLogger(__name__)

Source = Union["ResultStore", str, os.PathLike]

#: Cost factors added to every space's own factors.
COST_FACTORS: tuple[str, ...] = ("params", "flops")
#: Key columns of every row (not analysed).
ID_COLUMNS: tuple[str, ...] = ("encoding", "weights_id")


def format_level(level: float) -> str:
    """``3.0 -> "3"``, ``8/255 -> "8/255"``, ``0.5 -> "0.5"`` (6 significant digits otherwise)."""
    level = float(level)
    if level.is_integer():
        return str(int(level))
    k = level * 255.0
    if abs(k - round(k)) < 1e-9 * max(1.0, abs(k)):
        return f"{int(round(k))}/255"
    return format(level, ".6g")


def metric_column(suite: str, noise: str, metric: str, level: float | None) -> str:
    """The wide-table name of a stored metric (``level=None``: the level-free form)."""
    base = f"{suite}/{noise}/{metric}"
    return base if level is None else f"{base}@{format_level(level)}"


def column_key(column: str) -> tuple[str, str, str] | None:
    """``(suite, noise, metric)`` of a metric column name, ``None`` for other names (factors, custom)."""
    parts = column.split("@", 1)[0].split("/")
    if len(parts) < 3:
        return None
    return parts[0], "/".join(parts[1:-1]), parts[-1]


@functools.lru_cache(maxsize=4096)
def column_info(column: str) -> "MetricInfo | None":
    """What the suite that wrote ``column`` declares about it; ``None`` when no registered suite does."""
    from nasrobust.noise.base import SUITES

    key = column_key(column)
    if key is None or key[0] not in SUITES:
        return None
    try:
        return SUITES.get(key[0]).metric_info(key[1], key[2])
    except NasRobustError:
        return None


def direction(column: str) -> int:
    """+1 when higher values of a metric column mean more robust, -1 when lower do (as its suite declares)."""
    info = column_info(column)
    return -1 if info is not None and not info.higher_is_better else 1


def is_diagnostic(column: str) -> bool:
    """A 0/1 check flag (declared ``diagnostic``), not a measurement: left out of tables by default."""
    info = column_info(column)
    return info is not None and info.diagnostic


def matches(name: str, patterns: Sequence[str] | None) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns or ())


@dataclass(frozen=True, eq=False)
class ResultTable:
    """Architectures x (factors, metrics) of one space and dataset, ready for analysis.

    ``frame`` is indexed by a model label (the encoding, or ``encoding@weights_id`` when one
    architecture was stored with several weights) and holds :data:`ID_COLUMNS`, then
    ``factors``, then ``metrics``. ``skipped`` lists columns left out (``column``, ``kind``,
    ``reason``); ``notes`` says what else the reader should know (mixed protocols, ...).
    """

    space: str
    dataset: str
    frame: pd.DataFrame
    factors: tuple[str, ...]
    metrics: tuple[str, ...]
    skipped: pd.DataFrame
    notes: tuple[str, ...] = ()
    n_records: int = 0
    directions: Mapping[str, int] = field(default_factory=dict)

    @property
    def n_archs(self) -> int:
        return len(self.frame)

    def factor_frame(self) -> pd.DataFrame:
        return self.frame[list(self.factors)]

    def metric_frame(self) -> pd.DataFrame:
        return self.frame[list(self.metrics)]

    def select_metrics(self, patterns: Sequence[str] | None) -> list[str]:
        """Metric columns matching any glob (all when ``patterns`` is None); an empty match is an error."""
        if patterns is None:
            return list(self.metrics)
        out = [m for m in self.metrics if matches(m, patterns)]
        if not out:
            raise NasRobustError(
                f"no metric matches {', '.join(patterns)}; the table has {len(self.metrics)} metrics, e.g. "
                f"{', '.join(self.metrics[:5])}"
            )
        return out

    def select_factors(self, names: Sequence[str] | None) -> list[str]:
        if names is None:
            return list(self.factors)
        out = [f for f in self.factors if matches(f, names)]
        if not out:
            raise NasRobustError(f"no factor matches {', '.join(names)}; factors: {', '.join(self.factors)}")
        return out

    def resolve(self, name: str) -> str:
        """A column name, or an alias: ``"clean"`` (clean accuracy), ``"params"``, ``"flops"``."""
        if name in self.frame.columns and name not in ID_COLUMNS:
            return name
        if name == "clean":
            found = self.clean_column()
            if found:
                return found
            raise NasRobustError(
                "no clean-accuracy column (adversarial/clean/accuracy) in the table; evaluate the adversarial "
                "suite or name the covariate column explicitly"
            )
        skipped = self.skipped[self.skipped["column"] == name] if len(self.skipped) else self.skipped
        if len(skipped):
            raise NasRobustError(f"column {name!r} was skipped: {skipped['reason'].iloc[0]}")
        raise NasRobustError(
            f"unknown column {name!r}; use a factor ({', '.join(self.factors)}), 'clean', or a metric such as "
            f"{', '.join(self.metrics[:3])}"
        )

    def clean_column(self) -> str | None:
        """The clean-accuracy column: one a suite declares in the ``clean`` rank group (a suite scoring every
        test example before one scoring a subset, then by suite name), or ``None``."""
        from nasrobust.noise.base import CLEAN

        clean = [(info.rank_fallback, m) for m in self.metrics
                 if (info := column_info(m)) is not None and info.rank_group == CLEAN]
        return min(clean)[1] if clean else None


# ----------------------------------------------------------------------------- opening
def open_source(source: Source) -> tuple["ResultStore", bool]:
    """A store object and whether we opened it (and must close it)."""
    from nasrobust.store import ResultStore, open_results

    if isinstance(source, ResultStore):
        return source, False
    return open_results(Path(source), readonly=True), True


def resolve_space(store_spaces: Sequence[str], space: str | None, path: Any = "the store") -> str:
    """The space name as stored: ``space`` itself, else its ``small_variant``, or the store's only space.

    Raises a :class:`NasRobustError` that lists the spaces in the store when none matches.
    """
    if not store_spaces:
        raise NasRobustError(
            f"{path} holds no results; fill it with `nasrobust evaluate ... --db {path}` first"
        )
    held = ", ".join(store_spaces)
    if space is None:
        if len(store_spaces) == 1:
            return store_spaces[0]
        raise NasRobustError(f"{path} holds results of several spaces ({held}); pass --space one of them")
    if space in store_spaces:  # the exact name wins over its small variant
        return space
    if space in list_spaces():
        small = get_space(space).small_variant
        if small and small in store_spaces:
            log.info("space %s: analysing its small-input variant %s, which the store holds", space, small)
            return small
    raise NasRobustError(f"{path} has no results for space {space!r} (nor its small-input variant); it holds: {held}")


@functools.lru_cache(maxsize=16)
def _dataset_dims(name: str) -> tuple[int, int]:
    """Class count and image size of a registered dataset (read once per process)."""
    from nasrobust.data import dataset_info

    info = dataset_info(name)
    return info.num_classes, info.image_size


def _cost_context(dataset: str, num_classes: int | None, input_size: int | None, space) -> tuple[int, int, str | None]:
    """Class count and image size for the analytic cost: given, else the dataset's, else the space's."""
    if num_classes is not None and input_size is not None:
        return int(num_classes), int(input_size), None
    try:
        classes, size = _dataset_dims(dataset)
        return int(num_classes or classes), int(input_size or size), None
    except (NasRobustError, OSError) as exc:
        note = (f"params/FLOPs at the space defaults ({space.num_classes} classes, {space.input_size} px): "
                f"dataset {dataset!r} could not be read ({exc})")
        log.warning(note)
        return int(num_classes or space.num_classes), int(input_size or space.input_size), note


# ----------------------------------------------------------------------------- the table
def _column_names(long: pd.DataFrame) -> pd.Series:
    """Wide column name of each long row (``@level`` dropped where a triple has only level 0)."""
    triple = long["suite"] + "/" + long["noise"] + "/" + long["metric"]
    only_zero = long.groupby(triple)["level"].transform(lambda s: bool((s == 0.0).all()))
    levels = {lv: format_level(lv) for lv in long["level"].unique()}
    names = triple + "@" + long["level"].map(levels)
    names[only_zero.astype(bool)] = triple[only_zero.astype(bool)]
    # levels that print alike (beyond 6 digits) keep their exact repr
    clash = long.assign(_name=names).groupby("_name")["level"].transform("nunique") > 1
    if clash.any():
        names[clash] = triple[clash] + "@" + long.loc[clash, "level"].map(repr)
    return names


def build_table(
    source: Source,
    space: str | None = None,
    *,
    dataset: str | None = None,
    weights_id: str | Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    min_archs: int = 3,
    num_classes: int | None = None,
    input_size: int | None = None,
) -> ResultTable:
    """Read a result store into a :class:`ResultTable` (see the module docstring).

    ``exclude``: globs of columns to leave out; ``None`` leaves out the declared diagnostic
    metrics, ``()`` nothing.
    """
    store, opened = open_source(source)
    try:
        name = resolve_space(store.spaces(), space, store.path)
        long = store.to_pandas(space=name, dataset=dataset, weights_id=weights_id)
    finally:
        if opened:
            store.close()
    if long.empty:
        what = ", ".join(f"{k}={v}" for k, v in (("dataset", dataset), ("weights_id", weights_id)) if v)
        raise NasRobustError(f"{store.path} has no {name} results{' with ' + what if what else ''}")
    datasets = sorted(long["dataset"].unique())
    if len(datasets) > 1:
        raise NasRobustError(f"{store.path} holds {name} results on several datasets ({', '.join(datasets)}); pass --dataset")
    dataset = datasets[0]

    long = long.assign(column=_column_names(long))
    wanted = {c: (metrics is None or matches(c, metrics)) and not _excluded(c, exclude) for c in long["column"].unique()}
    keep = long["column"].map(wanted)
    if not keep.any():
        sample = ", ".join(sorted(long["column"].unique())[:6])
        raise NasRobustError(
            f"no stored metric of {name} matches --metrics {', '.join(metrics or ['*'])} "
            f"(excluding {'diagnostic metrics' if exclude is None else ', '.join(exclude)}); stored metrics include {sample}"
        )
    long = long[keep]
    notes: list[str] = []
    mixed = long.groupby("column")["protocol_hash"].nunique()
    for col in mixed[mixed > 1].index:
        note = f"{col}: values measured under {mixed[col]} different protocols across architectures"
        notes.append(note)
        log.warning(note)

    wide = long.pivot(index=["encoding", "weights_id"], columns="column", values="value")
    wide = wide.reset_index()
    repeated = wide["encoding"].duplicated(keep=False)
    if repeated.any():
        note = (f"{int(repeated.sum())} rows share an architecture with different weights; each (encoding, weights) "
                "pair is one row")
        notes.append(note)
        log.warning(note)
    labels = np.where(repeated, wide["encoding"] + "@" + wide["weights_id"], wide["encoding"])
    wide.index = pd.Index(labels, name="model")

    space_obj = get_space(name)
    n_classes, size, cost_note = _cost_context(dataset, num_classes, input_size, space_obj)
    if cost_note:
        notes.append(cost_note)
    factor_rows = []
    for enc in wide["encoding"]:
        try:
            arch = space_obj.decode(enc)
        except NasRobustError as exc:
            raise NasRobustError(f"stored encoding {enc!r} does not decode in space {name!r}: {exc}") from None
        cost = space_obj.cost(arch, num_classes=n_classes, input_size=size)
        factor_rows.append({**{k: float(v) for k, v in space_obj.factors(arch).items()},
                            "params": float(cost.params), "flops": float(cost.flops)})
    factor_frame = pd.DataFrame(factor_rows, index=wide.index, dtype=np.float64)
    metric_cols = sorted(c for c in wide.columns if c not in ID_COLUMNS)
    frame = pd.concat([wide[list(ID_COLUMNS)], factor_frame, wide[metric_cols].astype(np.float64)], axis=1)

    if len(frame) < min_archs:
        raise NasRobustError(
            f"{store.path} holds {len(frame)} {name} architecture(s) on {dataset}; the analysis needs at least {min_archs}"
        )
    skipped: list[dict[str, str]] = []
    factors = _usable(frame, list(factor_frame.columns), "factor", min_archs, skipped)
    kept_metrics = _usable(frame, metric_cols, "metric", min_archs, skipped)
    if not kept_metrics:
        reasons = "; ".join(f"{s['column']}: {s['reason']}" for s in skipped if s["kind"] == "metric")
        raise NasRobustError(f"no metric of {name} on {dataset} can be analysed ({reasons})")
    if not factors:
        raise NasRobustError(f"every factor of {name} is constant across the {len(frame)} stored architectures")
    frame = frame[[*ID_COLUMNS, *factors, *kept_metrics]]
    log.info("analysis table: %d architectures x %d factors x %d metrics (%d columns skipped)",
             len(frame), len(factors), len(kept_metrics), len(skipped))
    return ResultTable(
        space=name, dataset=dataset, frame=frame, factors=tuple(factors), metrics=tuple(kept_metrics),
        skipped=pd.DataFrame(skipped, columns=["column", "kind", "reason"]), notes=tuple(notes),
        n_records=int(len(long)), directions={m: direction(m) for m in kept_metrics},
    )


def _excluded(column: str, exclude: Sequence[str] | None) -> bool:
    return is_diagnostic(column) if exclude is None else matches(column, exclude)


def _usable(frame: pd.DataFrame, columns: list[str], kind: str, min_archs: int, skipped: list[dict[str, str]]) -> list[str]:
    """Columns with enough values and some variance; the others are appended to ``skipped`` with the reason."""
    out = []
    for c in columns:
        values = frame[c].dropna()
        if len(values) < min_archs:
            reason = f"measured on {len(values)} architecture(s), fewer than {min_archs}"
            skipped.append({"column": c, "kind": kind, "reason": reason})
        elif values.nunique() < 2:
            skipped.append({"column": c, "kind": kind, "reason": f"no variance (every value is {values.iloc[0]:.6g})"})
        else:
            out.append(c)
    return out


def table_from_frame(frame: pd.DataFrame, factors: Sequence[str], metrics: Sequence[str], *, space: str = "custom",
                     dataset: str = "custom", min_archs: int = 3) -> ResultTable:
    """A :class:`ResultTable` from an in-memory frame (e.g. results read elsewhere), same checks as :func:`build_table`."""
    frame = frame.copy()
    for c in ID_COLUMNS:
        if c not in frame.columns:
            frame[c] = frame.index.astype(str) if c == "encoding" else ""
    skipped: list[dict[str, str]] = []
    f = _usable(frame, list(factors), "factor", min_archs, skipped)
    m = _usable(frame, list(metrics), "metric", min_archs, skipped)
    if not m:
        raise NasRobustError("no metric column can be analysed: " + "; ".join(s["reason"] for s in skipped))
    frame = frame[[*ID_COLUMNS, *f, *m]]
    return ResultTable(space, dataset, frame, tuple(f), tuple(m), pd.DataFrame(skipped, columns=["column", "kind", "reason"]),
                       directions={c: direction(c) for c in m})
