"""The store metric: an exact lookup per architecture in a result store, optionally with a surrogate fallback.

Its direction is the one the suite declares for the selected metric
(:func:`nasrobust.noise.base.metric_info`), so ``store:DB:system/summary/std`` is minimised.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasrobust.errors import NasRobustError
from nasrobust.metrics.base import MetricError, MetricUnavailableError, MetricValue, Predictor, RobustnessMetric, Selector
from nasrobust.metrics.spec import SpecProblem, register_kind, selector
from nasrobust.options import option
from nasrobust.space import Arch

if TYPE_CHECKING:  # pragma: no cover
    from nasrobust.store import ResultStore


class StoreMetric(RobustnessMetric):
    """Exact lookup of one number per architecture in a result store.

    ``store`` is a :class:`~nasrobust.store.ResultStore` or the path of one (opened read-only on
    first use). When several rows match (several weights or datasets) pass ``weights_id`` /
    ``dataset``. An architecture without a row is answered by ``fallback.predict(arch)``
    (marked predicted) or raises :class:`MetricUnavailableError`.
    """

    cost = 1e-3

    def __init__(self, store: "ResultStore | str | Path", selector: Selector | str, *, weights_id: str | None = None,
                 dataset: str | None = None, fallback: Predictor | None = None, name: str | None = None,
                 higher_is_better: bool | None = None, cache: bool = True):
        super().__init__(cache=cache)
        self.selector = Selector.parse(selector) if isinstance(selector, str) else selector
        self._store = None if isinstance(store, (str, Path)) else store
        self.path = Path(store) if isinstance(store, (str, Path)) else Path(store.path)
        self.weights_id = weights_id
        self.dataset = dataset
        if fallback is not None and not callable(getattr(fallback, "predict", None)):
            raise MetricError(f"fallback must have a predict(arch) -> float method, got {type(fallback).__name__}")
        self.fallback = fallback
        self.name = name or f"store:{self.path}:{self.selector}"
        self.higher_is_better = self.selector.higher_is_better if higher_is_better is None else higher_is_better

    @property
    def store(self) -> "ResultStore":
        if self._store is None:
            from nasrobust.store import open_results

            self._store = open_results(self.path, readonly=True)
        return self._store

    def check(self) -> None:
        """A selector the store holds for no architecture at all is a typo: name the close ones."""
        import difflib

        s = self.selector
        if self.store.count(suite=s.suite, noise=s.noise, metric=s.metric, weights_id=self.weights_id,
                            dataset=self.dataset):
            return
        held = self.store.selectors()
        if not held:
            raise MetricError(f"{self.path} holds no results; evaluate architectures into it first (`nasrobust evaluate`)")
        close = difflib.get_close_matches(f"{s.suite}/{s.noise}/{s.metric}", held, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise MetricError(f"{self.path} holds no {s.suite}/{s.noise}/{s.metric} for any architecture"
                          f"{' with these weights/dataset' if self.weights_id or self.dataset else ''}.{hint} "
                          f"It holds {len(held)} suite/noise/metric selector(s), e.g. {', '.join(held[:5])}")

    def lookup(self, arch: Arch) -> float | None:
        """The stored value, or ``None`` when the store has no row for ``arch``."""
        s = self.selector
        rows = self.store.query(arch, suite=s.suite, noise=s.noise, metric=s.metric,
                                weights_id=self.weights_id, dataset=self.dataset)
        hits = [r for r in rows if s.matches_level(r.key.level)]
        if not hits and rows:
            levels = sorted({r.key.level for r in rows})
            raise MetricUnavailableError(
                f"{arch.encoding} has {s.suite}/{s.noise}/{s.metric} in {self.path} only at level(s) "
                f"{', '.join(f'{v:g}' for v in levels)}, not {s.level:g}; use one of them after '@'")
        groups = {(r.key.weights_id, r.key.dataset, r.key.level) for r in hits}
        if len(groups) > 1:
            listed = ", ".join(f"weights={w} dataset={d} level={lv:g}" for w, d, lv in sorted(groups))
            raise MetricError(
                f"{len(groups)} stored values match {s} for {arch.encoding} in {self.path} ({listed}); "
                "choose with ?weights=ID&dataset=NAME (or weights_id=/dataset=) and an explicit @level")
        return hits[0].value if hits else None

    def _measure(self, arch: Arch) -> MetricValue:
        value = self.lookup(arch)
        if value is not None:
            return MetricValue(value, False, "store")
        if self.fallback is not None:
            guess = self.fallback.predict(arch)
            return MetricValue(float(getattr(guess, "value", guess)), True, "surrogate")
        raise MetricUnavailableError(
            f"no {self.selector} for {arch.encoding} in {self.path}; evaluate it first (`nasrobust evaluate`), "
            "add a surrogate fallback (?fallback=surrogate), or use a live/proxy metric")


def surrogate_fallback(metric: StoreMetric, space: Any) -> Predictor:
    """``nasrobust.analysis.surrogate.Surrogate`` fitted on the store's architectures of ``space`` for the
    metric's selector (the analysis table names it ``suite/noise/metric@level``, without ``@level``
    when the quantity is stored only at level 0)."""
    from nasrobust.analysis.surrogate import Surrogate
    from nasrobust.analysis.table import metric_column

    s = metric.selector
    name = getattr(space, "name", space)
    fit = lambda column: Surrogate.fit(metric.store, name, column, dataset=metric.dataset,  # noqa: E731
                                       weights_id=metric.weights_id)
    try:
        return fit(metric_column(s.suite, s.noise, s.metric, s.level))
    except NasRobustError:
        if s.level:
            raise
    return fit(metric_column(s.suite, s.noise, s.metric, None))


def _surrogate_fallback(metric: StoreMetric, context: Mapping[str, Any]) -> Predictor:
    if context.get("space") is None:
        raise SpecProblem("fallback=surrogate needs the search space (pass space= / --space)")
    return surrogate_fallback(metric, context["space"])


#: ``?fallback=NAME`` -> what answers for architectures the store lacks.
FALLBACKS: dict[str, Callable[[StoreMetric, Mapping[str, Any]], Predictor]] = {"surrogate": _surrogate_fallback}


@dataclass(frozen=True)
class StoreOptions:
    """``?KEY=VALUE`` options of a ``store:`` atom."""

    weights: str | None = option(None, "weights id of the rows, when several weights are stored")
    dataset: str | None = option(None, "dataset of the rows, when several are stored")
    fallback: str | None = option(None, "what answers for architectures the store lacks", choices=lambda: FALLBACKS)


@register_kind("store", "DB ':' SEL ['?' OPTS]", "lookup in a result store", options=StoreOptions)
def _store_atom(body: str, opts: StoreOptions, extra: dict[str, Any], context: Mapping[str, Any]) -> RobustnessMetric:
    path, colon, sel = body.rpartition(":")
    if not colon or not path:
        raise SpecProblem("a store atom is store:DB:SUITE/NOISE[/METRIC][@LEVEL]")
    metric = StoreMetric(path, selector(sel), weights_id=opts.weights, dataset=opts.dataset)
    if opts.fallback is not None:
        metric.fallback = FALLBACKS[opts.fallback](metric, context)
    return metric


__all__ = ["FALLBACKS", "StoreMetric", "StoreOptions", "surrogate_fallback"]
