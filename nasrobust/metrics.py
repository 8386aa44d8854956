"""Robustness metrics: the plug between measurements and searchers (DESIGN.md, *RobustnessMetric*).

A :class:`RobustnessMetric` is a callable ``Arch -> float`` with metadata -- its ``name``,
whether higher is better, and a rough ``cost`` in seconds per call -- so that any searcher
taking a ``Callable[[Arch], float]`` can optimise robustness, and the searchers of this
package can record where every number came from. :meth:`RobustnessMetric.measure` returns a
:class:`MetricValue` saying whether the value was *measured* or *predicted* (a surrogate);
``metric(arch)`` returns the bare float and leaves the full answer in ``metric.last``.

Kinds (NASLib's lesson, ``optimizers/discrete/re/optimizer.py``: never hard-code the metric):

* :class:`StoreMetric` -- exact lookup in a :class:`~nasrobust.store.ResultStore` by encoding
  and a ``(suite, noise, level, metric)`` :class:`Selector`, optionally falling back to a
  surrogate (any object with ``predict(arch) -> float``; its answers are marked predicted);
* :class:`LiveMetric` -- evaluate the architecture now: extract it from a supernet, re-calibrate
  its BN statistics, run one noise suite on N test examples (cached per encoding);
* :class:`~nasrobust.proxies.ProxyMetric` -- zero-cost proxies at initialisation;
* :class:`CostMetric` -- analytic FLOPs / params (:meth:`SearchSpace.cost`);
* composition: :class:`WeightedSum` of oriented scores, :class:`Oriented` (force a direction),
  :class:`Constrained` (FLOPs / params budgets) and :class:`MultiObjective` (a vector with a
  direction per objective).

:func:`parse_metric` reads the compact spec grammar of ``nasrobust search --metric`` (no
``eval``; :data:`GRAMMAR`).
"""

from __future__ import annotations

import abc
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Union, runtime_checkable

from nasrobust.arch import Arch
from nasrobust.errors import NasRobustError
from nasrobust.space import get_space

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

    from nasrobust.data import ImageData
    from nasrobust.store import ResultStore

log = logging.getLogger(__name__)

#: Metric names whose stored value is better when lower (corruption error, flip probability).
LOWER_IS_BETTER = frozenset({"mce", "relative_mce", "ce", "relative_ce", "fp", "mfp", "error", "loss", "flip_rate"})


class MetricError(NasRobustError):
    """A metric that cannot be built or evaluated as asked; the message says how to fix it."""


class MetricUnavailableError(MetricError):
    """The metric has no value for an architecture (e.g. not in the store and no surrogate)."""


class MetricSpecError(MetricError, ValueError):
    """A ``--metric`` spec that does not parse; the message shows the grammar."""

    def __init__(self, spec: str, problem: str):
        self.spec, self.problem = spec, problem
        super().__init__(f"bad metric spec {spec!r}: {problem}\n{GRAMMAR}")


# ----------------------------------------------------------------------------- values
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
        return self.metric not in LOWER_IS_BETTER

    @classmethod
    def parse(cls, text: str) -> "Selector":
        """``suite/noise[/metric][@level]``; noise may contain ``/`` when the metric is given."""
        body, at, level_text = text.strip().partition("@")
        parts = [p for p in body.split("/")]
        if len(parts) < 2 or any(not p.strip() for p in parts):
            raise ValueError(f"selector {text!r} must be SUITE/NOISE[/METRIC][@LEVEL], e.g. adversarial/pgd_linf/accuracy@8/255")
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


# ----------------------------------------------------------------------------- store
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


# ----------------------------------------------------------------------------- live
#: Suite options implied by a selector, per suite (so a live PGD metric runs one attack at one eps).
def _adversarial_options(selector: Selector) -> dict[str, Any]:
    from nasrobust.noise._attacks import NORM_OF

    if selector.noise not in NORM_OF or not selector.level:
        return {}
    key = "eps_autoattack" if selector.noise == "autoattack" else f"eps_{NORM_OF[selector.noise]}"
    return {"attacks": selector.noise, key: float(selector.level)}


SELECTOR_OPTIONS: dict[str, Callable[[Selector], dict[str, Any]]] = {"adversarial": _adversarial_options}


class LiveMetric(RobustnessMetric):
    """Evaluate an architecture now: subnet of a supernet, BN re-calibrated, one suite on N examples.

    ``model`` is a :class:`~nasrobust.supernet.SupernetClassifier` (the subnet is activated,
    re-calibrated on ``recalib_images`` training images as BigNAS/RobustART do, and extracted)
    or any callable ``Arch -> nn.Module`` returning a ready :class:`~nasrobust.models.ImageClassifier`.
    The suite (``selector.suite``, created with ``suite_options`` plus the options the selector
    implies, e.g. ``attacks=pgd_linf, eps_linf=level``; the level must be explicit) runs on the first ``n_examples`` test
    images and the first measurement matching the selector is the value (later ones are not
    computed). With ``store`` (and ``weights_id``), the :class:`~nasrobust.evaluator.Evaluator`
    runs the whole suite and writes every record, so later searches can use a store metric.
    """

    cost = 30.0

    def __init__(self, model: Any, data: "ImageData", selector: Selector | str, *, suite_options: Mapping[str, Any] | None = None,
                 n_examples: int = 200, recalib_images: int = 500, batch_size: int = 200, seed: int = 0,
                 device: Any = None, store: "ResultStore | None" = None, weights_id: str | None = None,
                 cache_dir: str | Path | None = None, name: str | None = None, higher_is_better: bool | None = None,
                 cache: bool = True):
        super().__init__(cache=cache)
        self.model = model
        self.data = data
        self.selector = Selector.parse(selector) if isinstance(selector, str) else selector
        if self.selector.level is None:
            raise MetricError(f"live metric {self.selector}: give the level explicitly (e.g. @8/255, or @0 for clean "
                              "accuracy); a suite may measure the same noise at several levels")
        implied = SELECTOR_OPTIONS.get(self.selector.suite, lambda s: {})(self.selector)
        self.suite_options = {**implied, **dict(suite_options or {})}
        self.n_examples, self.recalib_images = int(n_examples), int(recalib_images)
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.device = device
        self.store, self.weights_id = store, weights_id
        if store is not None and not weights_id:
            raise MetricError("a live metric that writes into a store needs the weights_id of the supernet")
        self.cache_dir = cache_dir
        self.name = name or f"live:{self.selector}"
        self.higher_is_better = self.selector.higher_is_better if higher_is_better is None else higher_is_better
        self._suite = None
        self._ctx = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, selector: Selector | str, *, dataset: str | None = None,
                        data_root: str | None = None, device: Any = None, db: str | Path | None = None,
                        **kwargs: Any) -> "LiveMetric":
        """A live metric on a trained supernet checkpoint (dataset from the checkpoint by default)."""
        from nasrobust import checkpoint
        from nasrobust.data import load_dataset

        model, payload = checkpoint.load_supernet(path, device or "cpu")
        meta = checkpoint.meta_of(payload)
        data = load_dataset(dataset or meta.dataset["name"], root=data_root or meta.data_root)
        store = None
        if db is not None:
            from nasrobust.store import open_results

            store = open_results(db, create=True)
        kwargs.setdefault("name", f"live:{path}#{Selector.parse(selector) if isinstance(selector, str) else selector}")
        return cls(model, data, selector, device=device, store=store, weights_id=payload["weights_id"], **kwargs)

    # ------------------------------------------------------------------ pieces
    def _device(self):
        import torch

        if self.device is not None:
            return torch.device(self.device)
        params = getattr(self.model, "parameters", None)
        first = next(params(), None) if params else None
        return first.device if first is not None else torch.device("cpu")

    def subnet(self, arch: Arch) -> "nn.Module":
        """The model scored for ``arch`` (re-calibrated subnet, or the callable's module), in eval mode."""
        if hasattr(self.model, "set_active") and hasattr(self.model, "extract"):
            from nasrobust.train.api import recalibrated_subnet

            return recalibrated_subnet(self.model, arch, self.data, self.recalib_images, seed=self.seed)
        if callable(self.model):
            return self.model(arch).eval()
        raise MetricError(f"live metric model must be a supernet classifier or a callable Arch -> module, got {type(self.model).__name__}")

    def suite(self):
        if self._suite is None:
            from nasrobust.noise.base import SUITES

            self._suite = SUITES.create(self.selector.suite, **self.suite_options)
        return self._suite

    def context(self):
        """The evaluation context: the first ``n_examples`` test images, shared by every call."""
        if self._ctx is None:
            from nasrobust.data import stack
            from nasrobust.evaluator import DEFAULT_CACHE
            from nasrobust.noise.base import EvalContext

            images, labels = stack(self.data.test_subset(self.n_examples))
            self._ctx = EvalContext(data=self.data, images=images, labels=labels,
                                    cache_dir=Path(self.cache_dir).expanduser() if self.cache_dir else DEFAULT_CACHE,
                                    device=self._device(), batch_size=self.batch_size, seed=self.seed)
            self.suite().prepare(self._ctx)
        return self._ctx

    def _measure(self, arch: Arch) -> MetricValue:
        if self.store is not None:
            return MetricValue(self._via_store(arch), False, "live")
        ctx = self.context()
        module = self.subnet(arch).to(ctx.device)
        seen = []
        for m in self.suite().run(module, ctx):
            if (m.noise, m.metric) == (self.selector.noise, self.selector.metric) and self.selector.matches_level(m.level):
                return MetricValue(float(m.value), False, "live")
            seen.append(f"{m.noise}/{m.metric}@{m.level:g}")
        raise MetricUnavailableError(
            f"suite {self.selector.suite!r} measured no {self.selector} for {arch.encoding} "
            f"(it measured: {', '.join(seen[:12]) or 'nothing'}); fix the selector or the suite options")

    def _via_store(self, arch: Arch) -> float:
        from nasrobust.evaluator import Evaluator

        evaluator = Evaluator(self.store, self.data, [self.suite()], n_examples=self.n_examples,
                              cache_dir=self.cache_dir, device=self._device(), batch_size=self.batch_size,
                              seed=self.seed, recalib_images=self.recalib_images, progress=False)
        if hasattr(self.model, "set_active"):
            evaluator.evaluate_supernet(self.model, [arch], self.weights_id, shard=False)
        else:
            evaluator.evaluate(self.subnet(arch), arch, self.weights_id)
        lookup = StoreMetric(self.store, self.selector, weights_id=self.weights_id, dataset=self.data.info.name, cache=False)
        value = lookup.lookup(arch)
        if value is None:
            raise MetricUnavailableError(f"the {self.selector.suite} suite wrote no {self.selector} for {arch.encoding}")
        return value


# ----------------------------------------------------------------------------- analytic cost
COST_KINDS = ("flops", "params")


class CostMetric(RobustnessMetric):
    """Analytic MACs or parameters from :meth:`SearchSpace.cost` (lower is better)."""

    higher_is_better = False
    cost = 1e-5

    def __init__(self, kind: str = "flops", *, num_classes: int | None = None, input_size: int | None = None, cache: bool = True):
        super().__init__(cache=cache)
        if kind not in COST_KINDS:
            raise MetricError(f"cost metric {kind!r} is unknown; use one of {', '.join(COST_KINDS)}")
        self.kind, self.num_classes, self.input_size = kind, num_classes, input_size
        self.name = f"cost:{kind}"

    def _measure(self, arch: Arch) -> MetricValue:
        c = get_space(arch.space).cost(arch, self.num_classes, self.input_size)
        return MetricValue(float(getattr(c, self.kind)), False, "analytic")


# ----------------------------------------------------------------------------- composition
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
        if over == 0:
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
    if isinstance(obj, (list, tuple)):
        return MultiObjective(obj)
    return MultiObjective([as_metric(obj)])


# ----------------------------------------------------------------------------- spec grammar
GRAMMAR = """metric spec grammar (no spaces needed; quote it in the shell):
  SPEC  := TERM ('+' TERM)*                 weighted sum of oriented scores (higher is better)
  TERM  := [WEIGHT '*'] [DIR] ATOM          WEIGHT a number (0.5, -1e-3)
  DIR   := 'max:' | 'min:' | '-'            force higher-/lower-is-better ('-' means 'min:')
  ATOM  := 'store:' DB ':' SEL ['?' OPTS]   lookup in a result store; OPTS weights=ID, dataset=NAME, fallback=surrogate
         | 'live:' CKPT '#' SEL ['?' OPTS]  evaluate now on a supernet checkpoint (SEL with @LEVEL, @0 for clean);
                                            OPTS n=200, recalib=500, batch=200,
                                            seed=0, device=cpu, dataset=NAME, data_root=DIR, db=STORE, any other KEY=VALUE
                                            is a suite option (steps=10)
         | 'proxy:' NAME ['?' OPTS]         zero-cost proxy at init (jacobian, input_grad, synflow, snip, grad_norm,
                                            jacob_cov); OPTS dataset=mnist5k, batch=64, seed=0, other KEY=VALUE go to space.build
         | 'cost:' ('flops' | 'params')     analytic cost (lower is better)
  SEL   := SUITE '/' NOISE ['/' METRIC] ['@' LEVEL]   METRIC defaults to accuracy; NOISE may contain '/' when METRIC
                                            is given; LEVEL a number or fraction (8/255); no '@': the only stored level
  OPTS  := KEY '=' VALUE ('&' KEY '=' VALUE)*          VALUE a number, fraction, word or comma list
examples: store:results.db:adversarial/pgd_linf/accuracy@8/255   live:runs/sn#adversarial/pgd_linf@0.1?n=100
          -proxy:jacobian   0.5*store:r.db:adversarial/clean/accuracy+0.5*store:r.db:adversarial/pgd_linf/accuracy@0.1
constraints: --max-flops / --max-params (Constrained); several objectives: repeat --metric (MultiObjective);
on the command line write --metric=-SPEC (argparse reads a leading '-' as a flag) or use min:SPEC"""

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_KINDS_RE = r"(?:store|live|proxy|cost):"
#: '+' separates terms only where a new term starts (weights may carry exponents like 1e+3).
_SPLIT = re.compile(rf"(?<![0-9.][eE])\+(?=\s*(?:{_NUM}\s*\*|-|min:|max:|{_KINDS_RE}))")
_TERM = re.compile(rf"^\s*(?:(?P<w>{_NUM})\s*\*)?\s*(?P<dir>min:|max:|-)?\s*(?P<atom>.+?)\s*$", re.S)
_DIRS = {"min:": False, "-": False, "max:": True}


def parse_value(text: str) -> Any:
    """An option value: int, float, fraction, ``true``/``false``, comma list (tuple) or the word itself."""
    if "," in text:
        return tuple(parse_value(t) for t in text.split(",") if t.strip())
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    if re.fullmatch(r"[-+]?\d+", t):
        return int(t)
    try:
        return parse_number(t) if re.fullmatch(rf"{_NUM}(?:/{_NUM})?", t) else t
    except ValueError:
        return t


def _options(spec: str, text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in filter(None, text.split("&")):
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise MetricSpecError(spec, f"option {item!r} is not KEY=VALUE")
        out[key.strip()] = parse_value(value)
    return out


def _take(opts: dict[str, Any], key: str, typ: Callable[[Any], Any], default: Any = None) -> Any:
    if key not in opts:
        return default
    value = opts.pop(key)
    try:
        return typ(value)
    except (TypeError, ValueError):
        raise MetricError(f"option {key}={value!r} must be {getattr(typ, '__name__', typ)}") from None


def _selector(spec: str, text: str) -> Selector:
    try:
        return Selector.parse(text)
    except ValueError as exc:
        raise MetricSpecError(spec, str(exc)) from None


def _store_atom(spec: str, body: str, opts: dict[str, Any], context: Mapping[str, Any]) -> RobustnessMetric:
    path, colon, sel = body.rpartition(":")
    if not colon or not path:
        raise MetricSpecError(spec, "a store atom is store:DB:SUITE/NOISE[/METRIC][@LEVEL]")
    selector = _selector(spec, sel)
    kind = _take(opts, "fallback", str)
    weights, dataset = _take(opts, "weights", str), _take(opts, "dataset", str)
    if opts:
        raise MetricSpecError(spec, f"unknown store option(s) {', '.join(opts)}; use weights=, dataset=, fallback=surrogate")
    metric = StoreMetric(path, selector, weights_id=weights, dataset=dataset)
    if kind is not None:
        metric.fallback = _make_fallback(spec, kind, metric, context)
    return metric


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


def _surrogate_fallback(spec: str, metric: StoreMetric, context: Mapping[str, Any]) -> Predictor:
    if context.get("space") is None:
        raise MetricSpecError(spec, "fallback=surrogate needs the search space (pass space= / --space)")
    try:
        return surrogate_fallback(metric, context["space"])
    except ImportError as exc:
        raise MetricSpecError(spec, f"fallback=surrogate needs nasrobust.analysis.surrogate ({exc})") from None


_FALLBACKS: dict[str, Callable[[str, StoreMetric, Mapping[str, Any]], Predictor]] = {"surrogate": _surrogate_fallback}


def _make_fallback(spec: str, kind: str, metric: StoreMetric, context: Mapping[str, Any]) -> Predictor:
    if kind not in _FALLBACKS:
        raise MetricSpecError(spec, f"unknown fallback {kind!r}; valid: {', '.join(_FALLBACKS)}")
    return _FALLBACKS[kind](spec, metric, context)


def _live_atom(spec: str, body: str, opts: dict[str, Any], context: Mapping[str, Any]) -> RobustnessMetric:
    ckpt, hash_, sel = body.partition("#")
    if not hash_ or not ckpt or not sel:
        raise MetricSpecError(spec, "a live atom is live:CHECKPOINT#SUITE/NOISE[/METRIC][@LEVEL]")
    selector = _selector(spec, sel)
    kwargs = dict(
        n_examples=_take(opts, "n", int, 200), recalib_images=_take(opts, "recalib", int, 500),
        batch_size=_take(opts, "batch", int, 200), seed=_take(opts, "seed", int, 0),
        cache_dir=_take(opts, "cache_dir", str),
    )
    return LiveMetric.from_checkpoint(ckpt, selector, dataset=_take(opts, "dataset", str),
                                      data_root=_take(opts, "data_root", str), device=_take(opts, "device", str),
                                      db=_take(opts, "db", str), suite_options=opts, name=f"live:{ckpt}#{selector}", **kwargs)


def _proxy_atom(spec: str, body: str, opts: dict[str, Any], context: Mapping[str, Any]) -> RobustnessMetric:
    from nasrobust.proxies import PROXIES, ProxyMetric

    if body not in PROXIES:
        raise MetricSpecError(spec, f"unknown proxy {body!r}; valid: {', '.join(PROXIES)}")
    return ProxyMetric(body, dataset=_take(opts, "dataset", str, "mnist5k"), batch_size=_take(opts, "batch", int, 64),
                       seed=_take(opts, "seed", int, 0), device=_take(opts, "device", str, "cpu"), build_kwargs=opts)


def _cost_atom(spec: str, body: str, opts: dict[str, Any], context: Mapping[str, Any]) -> RobustnessMetric:
    if body not in COST_KINDS:
        raise MetricSpecError(spec, f"unknown cost {body!r}; use cost:flops or cost:params")
    return CostMetric(body, num_classes=_take(opts, "num_classes", int), input_size=_take(opts, "input_size", int))


#: Atom kind -> builder ``(spec, body, options, context) -> metric``.
ATOMS: dict[str, Callable[[str, str, dict[str, Any], Mapping[str, Any]], RobustnessMetric]] = {
    "store": _store_atom, "live": _live_atom, "proxy": _proxy_atom, "cost": _cost_atom,
}


def _atom(spec: str, text: str, context: Mapping[str, Any]) -> RobustnessMetric:
    kind, colon, rest = text.partition(":")
    if not colon or kind not in ATOMS:
        raise MetricSpecError(spec, f"{text!r} does not start with one of {', '.join(k + ':' for k in ATOMS)}")
    body, _, opt_text = rest.partition("?")
    if not body.strip():
        raise MetricSpecError(spec, f"{kind}: needs a body")
    return ATOMS[kind](spec, body.strip(), _options(spec, opt_text), context)


def parse_metric(spec: str, *, space: Any = None) -> RobustnessMetric:
    """Build a metric from a spec (see :data:`GRAMMAR`); ``space`` is needed by ``fallback=surrogate``."""
    if not isinstance(spec, str) or not spec.strip():
        raise MetricSpecError(str(spec), "empty spec")
    context = {"space": space}
    terms: list[tuple[float | None, RobustnessMetric]] = []
    for part in _SPLIT.split(spec.strip()):
        m = _TERM.match(part)
        if not m or not m.group("atom"):
            raise MetricSpecError(spec, f"term {part!r} does not parse")
        metric = _atom(spec, m.group("atom"), context)
        if m.group("dir"):
            metric = Oriented(metric, _DIRS[m.group("dir")])
        terms.append((float(m.group("w")) if m.group("w") else None, metric))
    if len(terms) == 1 and terms[0][0] is None:
        return terms[0][1]
    return WeightedSum([(1.0 if w is None else w, mt) for w, mt in terms], name=spec.strip())


__all__ = [
    "ATOMS", "COST_KINDS", "Constrained", "CostMetric", "FunctionMetric", "GRAMMAR", "LOWER_IS_BETTER", "LiveMetric",
    "MetricError", "MetricSpecError", "MetricUnavailableError", "MetricValue", "MultiObjective", "Objective",
    "Oriented", "Predictor", "RobustnessMetric", "Selector", "StoreMetric", "WeightedSum", "as_metric",
    "as_objectives", "parse_metric", "parse_number", "parse_value", "surrogate_fallback",
]
