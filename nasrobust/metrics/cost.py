"""The cost metric: analytic MACs or parameters from :meth:`SearchSpace.cost` (lower is better)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nasrobust.metrics.base import MetricError, MetricValue, RobustnessMetric
from nasrobust.metrics.spec import SpecProblem, register_kind
from nasrobust.options import option
from nasrobust.space import Arch, get_space

COST_KINDS = ("flops", "params")


class CostMetric(RobustnessMetric):
    """Analytic MACs or parameters from :meth:`SearchSpace.cost` (lower is better)."""

    higher_is_better = False
    cost = 1e-5

    def __init__(self, kind: str = "flops", *, num_classes: int | None = None, input_size: int | None = None,
                 cache: bool = True):
        super().__init__(cache=cache)
        if kind not in COST_KINDS:
            raise MetricError(f"cost metric {kind!r} is unknown; use one of {', '.join(COST_KINDS)}")
        self.kind, self.num_classes, self.input_size = kind, num_classes, input_size
        self.name = f"cost:{kind}"

    def _measure(self, arch: Arch) -> MetricValue:
        c = get_space(arch.space).cost(arch, self.num_classes, self.input_size)
        return MetricValue(float(getattr(c, self.kind)), False, "analytic")


@dataclass(frozen=True)
class CostOptions:
    """``?KEY=VALUE`` options of a ``cost:`` atom."""

    num_classes: int | None = option(None, "classifier size (the space's default when omitted)", ge=1)
    input_size: int | None = option(None, "input size for spaces without a resolution choice", ge=1)


@register_kind("cost", "('flops' | 'params') ['?' OPTS]", "analytic cost (lower is better)", options=CostOptions)
def _cost_atom(body: str, opts: CostOptions, extra: dict[str, Any], context: Mapping[str, Any]) -> RobustnessMetric:
    if body not in COST_KINDS:
        raise SpecProblem(f"unknown cost {body!r}; use cost:flops or cost:params")
    return CostMetric(body, num_classes=opts.num_classes, input_size=opts.input_size)


__all__ = ["COST_KINDS", "CostMetric", "CostOptions"]
