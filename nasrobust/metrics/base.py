"""The metric base: a callable ``Arch -> float`` with its direction, cost and provenance.

A :class:`RobustnessMetric` answers with a :class:`MetricValue` that says whether the value
was *measured* or *predicted* (a surrogate) and where it came from; ``metric(arch)`` returns
the bare float and leaves the full answer in ``metric.last``. A :class:`Selector` names one
stored or measured number (``suite/noise/metric@level``).
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from nasrobust.errors import NasRobustError
from nasrobust.space import Arch


class MetricError(NasRobustError):
    """A metric that cannot be built or evaluated as asked; the message says how to fix it."""


class MetricUnavailableError(MetricError):
    """The metric has no value for an architecture (e.g. not in the store and no surrogate)."""


@dataclass(frozen=True)
class MetricValue:
    """One answer of a metric: the value, whether it was predicted, and where it came from."""

    value: float
    predicted: bool = False
    source: str = "measured"  # store, surrogate, live, proxy, analytic, function, infeasible, ...
    seconds: float = 0.0  # wall time of the call that produced it (0 for cache hits)


@runtime_checkable
class Predictor(Protocol):
    """What a store metric falls back to, e.g. ``nasrobust.analysis.surrogate.Surrogate``: ``predict``
    returns a float or an object with a ``value`` (the surrogate's ``Prediction``)."""

    def predict(self, arch: Arch) -> Any: ...


class RobustnessMetric(abc.ABC):
    """A callable ``Arch -> float`` with ``name``, ``higher_is_better`` and ``cost`` (seconds per call).

    Subclasses implement :meth:`_measure`; results are cached per architecture when
    ``cache=True`` (a search asks again for architectures it has met).
    """

    name: str = "metric"
    higher_is_better: bool = True
    #: Rough wall time of one uncached call, in seconds (lookup 1e-3, proxy ~1, live ~10-100).
    cost: float = 0.0

    def __init__(self, *, cache: bool = True):
        self._cache: dict[Arch, MetricValue] | None = {} if cache else None
        self.last: MetricValue | None = None
        self.calls = 0  # uncached evaluations

    @abc.abstractmethod
    def _measure(self, arch: Arch) -> MetricValue:
        """Evaluate ``arch`` (uncached)."""

    def measure(self, arch: Arch) -> MetricValue:
        """The value for ``arch`` with its provenance (cached per architecture)."""
        if not isinstance(arch, Arch):
            raise TypeError(f"a metric takes an Arch, got {type(arch).__name__}")
        if self._cache is not None and arch in self._cache:
            self.last = self._cache[arch]
            return self.last
        t0 = time.perf_counter()
        out = self._measure(arch)
        out = MetricValue(float(out.value), out.predicted, out.source, time.perf_counter() - t0)
        self.calls += 1
        if self._cache is not None:
            self._cache[arch] = out
        self.last = out
        return out

    def __call__(self, arch: Arch) -> float:
        return self.measure(arch).value

    @property
    def last_predicted(self) -> bool:
        """Whether the most recent answer was predicted rather than measured."""
        return bool(self.last and self.last.predicted)

    def orient(self, value: float) -> float:
        """``value`` as a score where higher is better."""
        return value if self.higher_is_better else -value

    def score(self, arch: Arch) -> float:
        return self.orient(self(arch))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "higher_is_better": self.higher_is_better, "cost": self.cost,
                "kind": type(self).__name__}

    def parts(self) -> tuple["RobustnessMetric", ...]:
        """The metrics this one is built from (composites)."""
        return ()

    def check(self) -> None:
        """Raise now, with the fix, what would otherwise fail only at the first evaluation (a typo)."""
        for part in self.parts():
            part.check()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {'max' if self.higher_is_better else 'min'})"


class FunctionMetric(RobustnessMetric):
    """Any ``Callable[[Arch], float]`` as a metric (e.g. a synthetic objective in a test)."""

    def __init__(self, fn: Callable[[Arch], float], name: str | None = None, *, higher_is_better: bool = True,
                 cost: float = 0.0, predicted: bool = False, cache: bool = True):
        super().__init__(cache=cache)
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", None) or type(fn).__name__
        self.higher_is_better = higher_is_better
        self.cost = cost
        self.predicted = predicted

    def _measure(self, arch: Arch) -> MetricValue:
        return MetricValue(float(self.fn(arch)), self.predicted, "function")


def as_metric(obj: RobustnessMetric | Callable[[Arch], float]) -> RobustnessMetric:
    """A metric as is; a plain callable as a higher-is-better :class:`FunctionMetric`."""
    if isinstance(obj, RobustnessMetric):
        return obj
    if callable(obj):
        return FunctionMetric(obj)
    raise TypeError(f"expected a RobustnessMetric or a callable Arch -> float, got {type(obj).__name__}")


# ----------------------------------------------------------------------------- selectors
@dataclass(frozen=True)
class Selector:
    """Which stored/measured number: ``suite/noise/metric@level`` (``level=None``: the only one stored)."""

    suite: str
    noise: str
    metric: str = "accuracy"
    level: float | None = None

    def matches_level(self, level: float) -> bool:
        return self.level is None or math.isclose(level, self.level, rel_tol=1e-9, abs_tol=1e-12)

    def __str__(self) -> str:
        at = "" if self.level is None else f"@{self.level:g}"
        return f"{self.suite}/{self.noise}/{self.metric}{at}"

    @property
    def higher_is_better(self) -> bool:
        """The direction the suite declares for this metric (:func:`nasrobust.noise.base.metric_info`)."""
        from nasrobust.noise.base import metric_info

        return metric_info(self.suite, self.noise, self.metric).higher_is_better

    @classmethod
    def parse(cls, text: str) -> Selector:
        """``suite/noise[/metric][@level]``; noise may contain ``/`` when the metric is given."""
        body, at, level_text = text.strip().partition("@")
        parts = body.split("/")
        if len(parts) < 2 or any(not p.strip() for p in parts):
            raise ValueError(f"selector {text!r} must be SUITE/NOISE[/METRIC][@LEVEL], "
                             "e.g. adversarial/pgd_linf/accuracy@8/255")
        level = parse_number(level_text) if at else None
        if len(parts) == 2:
            return cls(parts[0].strip(), parts[1].strip(), "accuracy", level)
        return cls(parts[0].strip(), "/".join(p.strip() for p in parts[1:-1]), parts[-1].strip(), level)


def parse_number(text: str) -> float:
    """``"0.1"``, ``"8/255"``, ``"1e-3"``, ``"300M"`` (K/M/G suffixes) -> float."""
    t = text.strip()
    scale = {"K": 1e3, "M": 1e6, "G": 1e9}.get(t[-1:].upper(), 1.0) if t[-1:].isalpha() else 1.0
    if scale != 1.0:
        t = t[:-1]
    num, slash, den = t.partition("/")
    try:
        value = float(num) / float(den) if slash else float(num)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{text!r} is not a number (use 0.1, 8/255, 1e-3 or 300M)") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value * scale


__all__ = [
    "FunctionMetric", "MetricError", "MetricUnavailableError", "MetricValue", "Predictor", "RobustnessMetric",
    "Selector", "as_metric", "parse_number",
]
