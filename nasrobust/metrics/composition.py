"""Metrics made of metrics: a forced direction, weighted sums, cost budgets, several objectives.

* :class:`Oriented` -- force a direction (``min:`` / ``max:`` in a spec);
* :class:`WeightedSum` -- ``sum_i w_i * score_i`` over oriented scores;
* :class:`Constrained` -- analytic FLOPs / params budgets, hard or with a penalty;
* :class:`MultiObjective` -- a vector of values with a direction per objective.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Union

from nasrobust.metrics.base import MetricError, MetricValue, RobustnessMetric, as_metric
from nasrobust.space import Arch, get_space


class Oriented(RobustnessMetric):
    """``metric`` with its direction forced (``min:`` / ``max:`` in a spec); values unchanged."""

    def __init__(self, metric: RobustnessMetric, higher_is_better: bool):
        super().__init__(cache=False)
        self.inner = metric
        self.higher_is_better = higher_is_better
        self.cost = metric.cost
        self.name = f"{'max' if higher_is_better else 'min'}:{metric.name}"

    def _measure(self, arch: Arch) -> MetricValue:
        return self.inner.measure(arch)

    def parts(self) -> tuple[RobustnessMetric, ...]:
        return (self.inner,)


class WeightedSum(RobustnessMetric):
    """``sum_i w_i * score_i`` over oriented scores (each term's higher-is-better form); higher is better.

    ``0.5*acc + 0.5*-proxy:jacobian`` is ``0.5 acc - 0.5 jacobian``. Predicted when any term is.
    """

    higher_is_better = True

    def __init__(self, terms: Sequence[tuple[float, RobustnessMetric]], name: str | None = None):
        super().__init__(cache=False)
        if not terms:
            raise MetricError("a weighted sum needs at least one term")
        self.terms = tuple((float(w), as_metric(m)) for w, m in terms)
        self.cost = sum(m.cost for _, m in self.terms)
        self.name = name or "+".join(f"{w:g}*{'' if m.higher_is_better else 'min:'}{m.name}" for w, m in self.terms)

    def _measure(self, arch: Arch) -> MetricValue:
        total, predicted, sources = 0.0, False, []
        for w, m in self.terms:
            v = m.measure(arch)
            total += w * m.orient(v.value)
            predicted |= v.predicted
            sources.append(v.source)
        return MetricValue(total, predicted, "+".join(dict.fromkeys(sources)))

    def parts(self) -> tuple[RobustnessMetric, ...]:
        return tuple(m for _, m in self.terms)


class Constrained(RobustnessMetric):
    """``metric`` subject to analytic budgets ``flops <= max_flops`` and ``params <= max_params``.

    Infeasible architectures are not evaluated by ``metric``: with ``penalty=None`` they get the
    worst value (``-inf`` when higher is better, ``+inf`` otherwise), so every searcher ranks
    them last. With a ``penalty`` ``lam`` they are evaluated and their score drops by
    ``lam * sum(max(0, used/budget - 1))`` (relative overshoot per budget), a soft constraint.
    """

    def __init__(self, metric: RobustnessMetric, *, max_flops: float | None = None, max_params: float | None = None,
                 penalty: float | None = None, num_classes: int | None = None, input_size: int | None = None):
        super().__init__(cache=False)
        if max_flops is None and max_params is None:
            raise MetricError("a constraint needs max_flops and/or max_params")
        if penalty is not None and not (math.isfinite(penalty) and penalty >= 0):
            raise MetricError(f"penalty must be a finite number >= 0, got {penalty}")
        self.inner = as_metric(metric)
        self.limits = {k: float(v) for k, v in (("flops", max_flops), ("params", max_params)) if v is not None}
        self.penalty = penalty
        self.num_classes, self.input_size = num_classes, input_size
        self.higher_is_better = self.inner.higher_is_better
        self.cost = self.inner.cost
        bounds = ",".join(f"{k}<={v:g}" for k, v in self.limits.items())
        self.name = f"{self.inner.name}|{bounds}" + (f"|penalty={penalty:g}" if penalty is not None else "")

    def violation(self, arch: Arch) -> float:
        """``sum(max(0, used/budget - 1))`` over the budgets (0 when feasible)."""
        c = get_space(arch.space).cost(arch, self.num_classes, self.input_size)
        return sum(max(0.0, getattr(c, k) / v - 1.0) for k, v in self.limits.items())

    def _measure(self, arch: Arch) -> MetricValue:
        over = self.violation(arch)
        if over > 0 and self.penalty is None:
            return MetricValue(-math.inf if self.higher_is_better else math.inf, False, "infeasible")
        v = self.inner.measure(arch)
        if over == 0 or self.penalty is None:
            return v
        return MetricValue(self.orient(self.inner.orient(v.value) - self.penalty * over), v.predicted, v.source + "+penalty")

    def parts(self) -> tuple[RobustnessMetric, ...]:
        return (self.inner,)


class MultiObjective:
    """Several metrics evaluated together: a tuple of values, one direction per objective."""

    def __init__(self, metrics: Sequence[RobustnessMetric | Callable[[Arch], float]]):
        if not metrics:
            raise MetricError("a multi-objective needs at least one metric")
        self.metrics = tuple(as_metric(m) for m in metrics)

    def __len__(self) -> int:
        return len(self.metrics)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    @property
    def directions(self) -> tuple[bool, ...]:
        """``higher_is_better`` per objective."""
        return tuple(m.higher_is_better for m in self.metrics)

    @property
    def cost(self) -> float:
        return sum(m.cost for m in self.metrics)

    def measure(self, arch: Arch) -> tuple[MetricValue, ...]:
        return tuple(m.measure(arch) for m in self.metrics)

    def __call__(self, arch: Arch) -> tuple[float, ...]:
        return tuple(v.value for v in self.measure(arch))

    def scores(self, arch: Arch) -> tuple[float, ...]:
        """Oriented values (higher is better for every objective)."""
        return tuple(m.orient(v.value) for m, v in zip(self.metrics, self.measure(arch)))

    @property
    def last_predicted(self) -> tuple[bool, ...]:
        return tuple(m.last_predicted for m in self.metrics)

    def describe(self) -> list[dict[str, Any]]:
        return [m.describe() for m in self.metrics]


Objective = Union[RobustnessMetric, MultiObjective, Callable[[Arch], float], Sequence[Any]]


def as_objectives(obj: Objective) -> MultiObjective:
    """Any objective (metric, callable, list of them, multi-objective) as a :class:`MultiObjective`."""
    if isinstance(obj, MultiObjective):
        return obj
    if isinstance(obj, RobustnessMetric) or callable(obj):
        return MultiObjective([as_metric(obj)])
    return MultiObjective(obj)


__all__ = ["Constrained", "MultiObjective", "Objective", "Oriented", "WeightedSum", "as_objectives"]
