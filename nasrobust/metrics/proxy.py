"""The proxy metric: a zero-cost proxy (:mod:`nasrobust.proxies`) of ``space.build(arch)`` at initialisation."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from nasrobust.data import ImageData, load_dataset
from nasrobust.metrics.base import MetricError, MetricValue, RobustnessMetric
from nasrobust.metrics.spec import SpecProblem, register_kind
from nasrobust.models import ImageClassifier
from nasrobust.options import option
from nasrobust.proxies import PROXIES, get_proxy
from nasrobust.space import Arch, get_space
from nasrobust.supernet import recalibrate_bn

log = logging.getLogger(__name__)


class ProxyMetric(RobustnessMetric):
    """A zero-cost proxy of ``space.build(arch)`` at initialisation as a :class:`RobustnessMetric`.

    The network is built for ``dataset`` (its classes and image size; the architecture's own
    resolution where the space fixes one), initialised under ``torch.manual_seed(seed)``, and
    scored on ``batch_size`` training images drawn with ``seed``. ``build_kwargs`` go to
    ``space.build`` (e.g. ``channels=8, cells_per_stage=1`` for a cheaper nb201 network).
    """

    cost = 1.0

    def __init__(self, proxy: str, *, dataset: Any = "mnist5k", batch_size: int = 64, seed: int = 0,
                 device: Any = "cpu", build_kwargs: Mapping[str, Any] | None = None, data_root: str | None = None,
                 cache: bool = True):
        super().__init__(cache=cache)
        self.proxy = get_proxy(proxy)
        self.higher_is_better = self.proxy.higher_is_better
        self.dataset, self.data_root = dataset, data_root
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.device = torch.device(device)
        self.build_kwargs = dict(build_kwargs or {})
        data_name = dataset if isinstance(dataset, str) else dataset.info.name
        extra = "".join(f"&{k}={v}" for k, v in sorted(self.build_kwargs.items()))
        self.name = f"proxy:{proxy}?dataset={data_name}&batch={batch_size}&seed={seed}{extra}"
        self._data: ImageData | None = None
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def data(self) -> ImageData:
        if self._data is None:
            self._data = load_dataset(self.dataset, root=self.data_root) if isinstance(self.dataset, str) else self.dataset
        return self._data

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed data batch: ``batch_size`` training images drawn with ``seed``."""
        if self._batch is None:
            from nasrobust.data import stack

            with torch.random.fork_rng(devices=[]):  # DataLoader draws a base seed from the global RNG
                images, labels = stack(self.data.train_subset(self.batch_size, torch.Generator().manual_seed(self.seed)))
            self._batch = images.to(self.device), labels.to(self.device)
        return self._batch

    def model(self, arch: Arch) -> ImageClassifier:
        """``ImageClassifier(space.build(arch))`` initialised under the fixed seed."""
        space = get_space(arch.space)
        info = self.data.info
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            try:
                net = space.build(arch, num_classes=info.num_classes, input_size=info.image_size, **self.build_kwargs)
            except TypeError as exc:
                raise MetricError(f"proxy {self.proxy.name}: {space.name}.build does not take the options "
                                  f"{self.build_kwargs} ({exc})") from None
        model = ImageClassifier(net, space.resolution(arch, info.image_size), info.mean, info.std)
        return model.to(self.device)

    def evaluate(self, arch: Arch) -> float:
        """The raw proxy value (``nan`` when undefined)."""
        model = self.model(arch)
        x, y = self.batch()
        if self.proxy.bn == "batch":
            recalibrate_bn(model, [x])
            model.eval()
        else:
            model.train()
        if self.proxy.pixel_space:
            return self.proxy.fn(model, x, y)
        with torch.no_grad():
            inputs = model.preprocess(x)
        return self.proxy.fn(model.net, inputs, y)

    def _measure(self, arch: Arch) -> MetricValue:
        value = self.evaluate(arch)
        if math.isfinite(value):
            return MetricValue(value, False, "proxy")
        log.debug("%s is undefined for %s; reporting the worst value", self.proxy.name, arch.encoding)
        return MetricValue(-math.inf if self.higher_is_better else math.inf, False, "proxy-undefined")


@dataclass(frozen=True)
class ProxyOptions:
    """``?KEY=VALUE`` options of a ``proxy:`` atom (other keys go to ``space.build``)."""

    dataset: str = option("mnist5k", "dataset whose training images make the batch")
    batch: int = option(64, "images in the batch", ge=1)
    seed: int = option(0, "seed of the initialisation and the batch")
    device: str = option("cpu", "torch device")


@register_kind("proxy", "NAME ['?' OPTS]", "zero-cost proxy at init (" + ", ".join(PROXIES) + ")",
               options=ProxyOptions, extra="space.build options (channels=8)")
def _proxy_atom(body: str, opts: ProxyOptions, extra: dict[str, Any], context: Mapping[str, Any]) -> RobustnessMetric:
    if body not in PROXIES:
        raise SpecProblem(f"unknown proxy {body!r}; valid: {', '.join(PROXIES)}")
    return ProxyMetric(body, dataset=opts.dataset, batch_size=opts.batch, seed=opts.seed, device=opts.device,
                       build_kwargs=extra)


__all__ = ["ProxyMetric", "ProxyOptions"]
