"""Weight-sharing supernets: the protocol every space's supernet follows, and BN re-calibration.

A supernet holds every architecture of its space at once (elastic layers slice max-size
weights, as in Once-for-All and BigNAS; one-shot cells hold every op on every edge).
``set_active(arch)`` selects the sub-network the next forward pass runs, and
``extract(arch)`` returns the stand-alone module ``space.build(arch)`` would make, with the
supernet's weights copied in, so its outputs equal the supernet's active outputs.

Sub-networks share BN layers whose running statistics mix every subnet seen in training;
before a subnet is scored its BN statistics are re-computed on a few training batches
(:func:`recalibrate_bn`; :func:`recalibrated_subnet` for a subnet on a dataset's training
images), as BigNAS and RobustART do. Training, evaluation and the live metric all score
subnets this way, so it lives here rather than in any one of them.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from nasrobust.errors import NasRobustError, UnknownNameError
from nasrobust.models import ImageClassifier
from nasrobust.space import Arch, SearchSpace, get_space

if TYPE_CHECKING:  # pragma: no cover
    from nasrobust.data import ImageData


class Supernet(nn.Module, abc.ABC):
    """Base class of weight-sharing networks. Subclasses implement the four abstract methods."""

    def __init__(self, space: SearchSpace, num_classes: int, config: dict[str, Any] | None = None):
        super().__init__()
        self.space = space
        self.num_classes = num_classes
        #: keyword arguments that rebuild this supernet with ``space.supernet(**config)``
        self.config = {"num_classes": num_classes, **(config or {})}
        self._active: Arch | None = None

    @abc.abstractmethod
    def largest(self) -> Arch:
        """The largest architecture the supernet holds."""

    @abc.abstractmethod
    def smallest(self) -> Arch:
        """The smallest architecture the supernet holds."""

    @abc.abstractmethod
    def _activate(self, arch: Arch) -> None:
        """Configure the elastic layers for ``arch`` (already checked to be held)."""

    @abc.abstractmethod
    def _copy_weights(self, arch: Arch, net: nn.Module) -> None:
        """Copy the weights of ``arch`` into ``net``, a fresh ``space.build(arch)``."""

    def build_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``space.build`` that make the stand-alone twin (e.g. cell channels)."""
        return {}

    def contains(self, arch: Arch) -> bool:
        """Whether this supernet holds ``arch`` (default: every architecture of its space)."""
        return arch.space == self.space.name

    def sample(self, rng: np.random.Generator) -> Arch:
        """A random architecture held by the supernet (the space's sampling distribution)."""
        return self.space.arch(self.space.random_genome(rng))

    def _check(self, arch: Arch) -> None:
        if not self.contains(arch):
            raise NasRobustError(
                f"{arch.encoding} is not held by this {self.space.name} supernet "
                f"(largest: {self.largest().encoding}); pick an architecture of the supernet's space "
                f"within its elastic choices"
            )

    def set_active(self, arch: Arch) -> None:
        self._check(arch)
        self._activate(arch)
        self._active = arch

    @property
    def active(self) -> Arch:
        if self._active is None:
            raise RuntimeError("no active subnet: call set_active(arch) first")
        return self._active

    def extract(self, arch: Arch | None = None) -> nn.Module:
        """A stand-alone copy of ``arch`` (default: the active one) with the supernet's weights."""
        arch = arch or self.active
        self._check(arch)
        device = next(self.parameters()).device
        net = self.space.build(arch, num_classes=self.num_classes, **self.build_kwargs()).to(device)
        self._copy_weights(arch, net)
        return net


class SupernetClassifier(ImageClassifier):
    """:class:`ImageClassifier` around a supernet: ``set_active`` also sets the input resolution."""

    def __init__(self, supernet: Supernet, input_size: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__(supernet, resolution=input_size, mean=mean, std=std)
        self.input_size = input_size

    @property
    def supernet(self) -> Supernet:
        return self.net  # type: ignore[return-value]

    def set_active(self, arch: Arch) -> None:
        self.supernet.set_active(arch)
        self.resolution = self.supernet.space.resolution(arch, self.input_size)

    def extract(self, arch: Arch | None = None) -> ImageClassifier:
        arch = arch or self.supernet.active
        net = self.supernet.extract(arch)
        return ImageClassifier(net, self.supernet.space.resolution(arch, self.input_size), self.mean.flatten().tolist(), self.std.flatten().tolist())


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Recompute BN running statistics as the exact average over ``batches`` (BigNAS / OFA).

    Resets every BN layer, runs the batches in train mode with cumulative averaging
    (``momentum=None``) and without autograd (only the statistics are wanted), then restores
    the momenta and the model's mode. Returns the number of images seen. Works on a supernet
    (the active subnet) and on stand-alone models.
    """
    layers = _bn_layers(model)
    if not layers:
        return 0
    momenta = [bn.momentum for bn in layers]
    was_training = model.training
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    seen = 0
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
                seen += len(x)
    finally:
        for bn, m in zip(layers, momenta):
            bn.momentum = m
        model.train(was_training)
    if seen == 0:
        raise NasRobustError("BN re-calibration got no images")
    return seen


def recalibration_batches(data: ImageData, n_images: int, batch_size: int, seed: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Random training images (fixed by ``seed``) for BN re-calibration, in batches."""
    subset = data.train_subset(n_images, torch.Generator().manual_seed(seed))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False)
    for x, _ in loader:
        yield x.to(device)


def recalibrate(model: nn.Module, data: ImageData, n_images: int, batch_size: int = 200, seed: int = 0) -> int:
    """Re-estimate ``model``'s BN statistics on ``n_images`` random training images (fixed by ``seed``)."""
    device = next(model.parameters()).device
    return recalibrate_bn(model, recalibration_batches(data, n_images, batch_size, seed, device))


def recalibrated_subnet(model: SupernetClassifier, arch: Arch, data: ImageData, n_images: int = 2000,
                        batch_size: int = 200, seed: int = 0, extract: bool = True) -> nn.Module:
    """Activate ``arch``, re-calibrate its BN statistics on training images, and (by default) extract it.

    The recalibrated statistics are those of ``arch`` alone; the extracted module is an
    independent :class:`ImageClassifier` with the supernet's weights.
    """
    model.set_active(arch)
    recalibrate(model, data, n_images, batch_size, seed)
    return model.extract(arch).eval() if extract else model


def supernet_option_names(space: SearchSpace) -> list[str] | None:
    """The keyword options of ``space.supernet`` (what ``--supernet-option KEY=VALUE`` may set); ``None`` when it
    takes any (``**kwargs``: the space's own check decides)."""
    params = inspect.signature(space.supernet).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds]


def check_supernet_options(space: SearchSpace, options: Mapping[str, Any]) -> None:
    """Raise :class:`~nasrobust.errors.UnknownNameError` ("did you mean") for an option ``space.supernet`` does not take."""
    valid = supernet_option_names(space)
    for key in options:
        if valid is not None and key not in valid:
            raise UnknownNameError(f"{space.name} supernet option", key, valid)


def build_supernet(space_name: str, input_size: int, mean: Sequence[float], std: Sequence[float],
                   **config: Any) -> SupernetClassifier:
    """The space's supernet wrapped for ``[0, 1]`` images of ``input_size`` pixels.

    An option that ``space.supernet`` does not take is an :class:`~nasrobust.errors.UnknownNameError`
    ("did you mean"), raised before anything is built.
    """
    space = get_space(space_name)
    check_supernet_options(space, config)
    net = space.supernet(**config)
    if not isinstance(net, Supernet):
        raise TypeError(f"{space_name}.supernet() must return a nasrobust.supernet.Supernet")
    return SupernetClassifier(net, input_size, mean, std)
