"""The live metric: evaluate an architecture now (a BN re-calibrated supernet subnet, or any model builder)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasrobust.metrics.base import MetricError, MetricUnavailableError, MetricValue, RobustnessMetric, Selector
from nasrobust.metrics.spec import SpecProblem, register_kind, selector
from nasrobust.options import option
from nasrobust.space import Arch

if TYPE_CHECKING:  # pragma: no cover
    import torch
    import torch.nn as nn

    from nasrobust.data import ImageData
    from nasrobust.noise.base import EvalContext, NoiseSuite
    from nasrobust.store import ResultStore


class LiveMetric(RobustnessMetric):
    """Evaluate an architecture now: subnet of a supernet, BN re-calibrated, one suite on N examples.

    ``model`` is a :class:`~nasrobust.supernet.SupernetClassifier` (the subnet is activated,
    re-calibrated on ``recalib_images`` training images as BigNAS/RobustART do, and extracted)
    or any callable ``Arch -> nn.Module`` returning a ready :class:`~nasrobust.models.ImageClassifier`.
    The suite (``selector.suite``, created with ``suite_options`` plus the options the selector
    implies, e.g. ``attacks=pgd_linf, eps_linf=level``; the level must be explicit) runs on the first
    ``n_examples`` test images and the first measurement matching the selector is the value (later
    ones are not computed). With ``store`` (and ``weights_id``), :func:`nasrobust.evaluate` runs
    the whole suite and writes every record, so later searches can use a store metric.
    """

    cost = 30.0

    def __init__(self, model: Any, data: ImageData, selector: Selector | str, *,
                 suite_options: Mapping[str, Any] | None = None, n_examples: int = 200, recalib_images: int = 500,
                 batch_size: int = 200, seed: int = 0, device: Any = None, store: ResultStore | None = None,
                 weights_id: str | None = None, cache_dir: str | Path | None = None, name: str | None = None,
                 higher_is_better: bool | None = None, cache: bool = True):
        super().__init__(cache=cache)
        self.model = model
        self.data = data
        self.selector = Selector.parse(selector) if isinstance(selector, str) else selector
        if self.selector.level is None:
            raise MetricError(f"live metric {self.selector}: give the level explicitly (e.g. @8/255, or @0 for clean "
                              "accuracy); a suite may measure the same noise at several levels")
        from nasrobust.noise.base import SUITES

        implied = SUITES.get_class(self.selector.suite).selector_options(self.selector.noise, self.selector.level)
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
        self._suite: NoiseSuite | None = None
        self._ctx: EvalContext | None = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, selector: Selector | str, *, dataset: str | None = None,
                        data_root: str | None = None, device: Any = None, db: str | Path | None = None,
                        **kwargs: Any) -> LiveMetric:
        """A live metric on a trained supernet checkpoint (dataset from the checkpoint by default)."""
        from nasrobust.evaluation import load_checkpoint

        loaded = load_checkpoint(path, data=dataset, data_root=data_root, kind="supernet", device=device or "cpu")
        store = None
        if db is not None:
            from nasrobust.store import open_results

            store = open_results(db, create=True)
        kwargs.setdefault("name", f"live:{path}#{Selector.parse(selector) if isinstance(selector, str) else selector}")
        return cls(loaded.model, loaded.data, selector, device=device, store=store, weights_id=loaded.weights_id,
                   **kwargs)

    # ------------------------------------------------------------------ pieces
    def _device(self) -> torch.device:
        import torch

        if self.device is not None:
            return torch.device(self.device)
        params = getattr(self.model, "parameters", None)
        first = next(params(), None) if params else None
        return first.device if first is not None else torch.device("cpu")

    def _is_supernet(self) -> bool:
        return hasattr(self.model, "set_active") and hasattr(self.model, "extract")

    def subnet(self, arch: Arch) -> nn.Module:
        """The model scored for ``arch`` (re-calibrated subnet, or the callable's module), in eval mode."""
        if self._is_supernet():
            from nasrobust.supernet import recalibrated_subnet

            return recalibrated_subnet(self.model, arch, self.data, self.recalib_images, seed=self.seed)
        if callable(self.model):
            return self.model(arch).eval()
        raise MetricError("live metric model must be a supernet classifier or a callable Arch -> module, "
                          f"got {type(self.model).__name__}")

    def suite(self) -> NoiseSuite:
        if self._suite is None:
            from nasrobust.evaluator import make_suites

            self._suite = make_suites([self.selector.suite], {self.selector.suite: self.suite_options})[0]
        return self._suite

    def context(self) -> EvalContext:
        """The evaluation context: the first ``n_examples`` test images, shared by every call."""
        if self._ctx is None:
            from nasrobust.evaluator import eval_context

            self._ctx = eval_context(self.data, self.n_examples, cache_dir=self.cache_dir, device=self._device(),
                                     batch_size=self.batch_size, seed=self.seed)
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
        from nasrobust.evaluation import EvalProtocol, evaluate
        from nasrobust.metrics.store import StoreMetric

        assert self.store is not None and self.weights_id is not None
        protocol = EvalProtocol(n_examples=self.n_examples, suite_options={self.selector.suite: self.suite_options},
                                seed=self.seed, recalib_images=self.recalib_images)
        model = self.model if self._is_supernet() else self.subnet(arch)
        evaluate(model, db=self.store, suites=[self.selector.suite], protocol=protocol, archs=[arch], data=self.data,
                 weights_id=self.weights_id, reference=None, batch_size=self.batch_size, cache_dir=self.cache_dir,
                 device=self._device(), shard=False)
        lookup = StoreMetric(self.store, self.selector, weights_id=self.weights_id, dataset=self.data.info.name,
                             cache=False)
        value = lookup.lookup(arch)
        if value is None:
            raise MetricUnavailableError(f"the {self.selector.suite} suite wrote no {self.selector} for {arch.encoding}")
        return value


@dataclass(frozen=True)
class LiveOptions:
    """``?KEY=VALUE`` options of a ``live:`` atom (other keys are options of the selector's suite)."""

    n: int = option(200, "test images scored", ge=1)
    recalib: int = option(500, "training images for BN re-calibration", ge=1)
    batch: int = option(200, "batch size", ge=1)
    seed: int = option(0, "seed of the suite and the re-calibration images")
    device: str | None = option(None, "torch device (default: the checkpoint's)")
    dataset: str | None = option(None, "dataset (default: the checkpoint's)")
    data_root: str | None = option(None, "folder of a dataset that is not bundled")
    db: str | None = option(None, "a result store to write every record into")
    cache_dir: str | None = option(None, "where model-independent perturbed data is cached")


@register_kind("live", "CKPT '#' SEL ['?' OPTS]", "evaluate now on a supernet checkpoint (SEL with @LEVEL, @0 for clean)",
               options=LiveOptions, extra="suite options (steps=10)")
def _live_atom(body: str, opts: LiveOptions, extra: dict[str, Any], context: Mapping[str, Any]) -> RobustnessMetric:
    ckpt, hash_, sel = body.partition("#")
    if not hash_ or not ckpt or not sel:
        raise SpecProblem("a live atom is live:CHECKPOINT#SUITE/NOISE[/METRIC][@LEVEL]")
    chosen = selector(sel)
    return LiveMetric.from_checkpoint(ckpt, chosen, dataset=opts.dataset, data_root=opts.data_root, device=opts.device,
                                      db=opts.db, suite_options=extra, name=f"live:{ckpt}#{chosen}",
                                      n_examples=opts.n, recalib_images=opts.recalib, batch_size=opts.batch,
                                      seed=opts.seed, cache_dir=opts.cache_dir)


__all__ = ["LiveMetric", "LiveOptions"]
