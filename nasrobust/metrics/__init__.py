"""Robustness metrics: the plug between measurements and searchers (DESIGN.md, *RobustnessMetric*).

A :class:`RobustnessMetric` is a callable ``Arch -> float`` with metadata -- its ``name``,
whether higher is better, and a rough ``cost`` in seconds per call -- so that any searcher
taking a ``Callable[[Arch], float]`` can optimise robustness, and the searchers of this
package can record where every number came from (NASLib's lesson,
``optimizers/discrete/re/optimizer.py``: never hard-code the metric).

* :mod:`~nasrobust.metrics.base` -- the metric base, values with provenance, selectors;
* :mod:`~nasrobust.metrics.composition` -- :class:`Oriented`, :class:`WeightedSum`,
  :class:`Constrained` (FLOPs / params budgets), :class:`MultiObjective`;
* backends, each one registered metric kind of the spec grammar: :mod:`~nasrobust.metrics.store`
  (lookup in a result store, optional surrogate fallback), :mod:`~nasrobust.metrics.live`
  (evaluate now), :mod:`~nasrobust.metrics.proxy` (zero-cost proxies at initialisation),
  :mod:`~nasrobust.metrics.cost` (analytic FLOPs / params); any callable is a
  :class:`FunctionMetric`;
* :mod:`~nasrobust.metrics.spec` -- :func:`parse_metric` reads ``nasrobust search --metric``
  specs; its grammar is made from the registered kinds (:func:`grammar`).
"""

from __future__ import annotations

from nasrobust.metrics.base import (
    FunctionMetric,
    MetricError,
    MetricUnavailableError,
    MetricValue,
    Predictor,
    RobustnessMetric,
    Selector,
    as_metric,
    parse_number,
)
from nasrobust.metrics.composition import Constrained, MultiObjective, Objective, Oriented, WeightedSum, as_objectives
from nasrobust.metrics.cost import COST_KINDS, CostMetric
from nasrobust.metrics.live import LiveMetric
from nasrobust.metrics.proxy import ProxyMetric
from nasrobust.metrics.spec import (
    METRIC_KINDS,
    MetricKind,
    MetricSpecError,
    grammar,
    parse_metric,
    register_kind,
)
from nasrobust.metrics.store import StoreMetric, surrogate_fallback

#: The spec grammar of the built-in kinds (:func:`grammar` also lists kinds that plug-ins register).
GRAMMAR = grammar()

__all__ = [
    "COST_KINDS", "Constrained", "CostMetric", "FunctionMetric", "GRAMMAR", "LiveMetric", "METRIC_KINDS",
    "MetricError", "MetricKind", "MetricSpecError", "MetricUnavailableError", "MetricValue", "MultiObjective",
    "Objective", "Oriented", "Predictor", "ProxyMetric", "RobustnessMetric", "Selector", "StoreMetric", "WeightedSum",
    "as_metric", "as_objectives", "grammar", "parse_metric", "parse_number", "register_kind",
    "surrogate_fallback",
]
