"""Building and measuring the ``zoo`` models (imports torch, timm and torchvision).

Kept apart from :mod:`nasrobust.spaces.zoo` so that listing and sampling the zoo never imports
torch. :func:`create` is the one place a zoo network is made; :func:`measure` counts it on the
meta device (no memory, no initialisation compute), which is how ``zoo_costs.json`` is made
and how costs at non-native input sizes are answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from nasrobust.cost import Cost, measure_cost
from nasrobust.models import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:  # pragma: no cover
    from nasrobust.spaces.zoo import ZooModel

#: torchvision's classification weights are all trained on ImageNet-1k.
TORCHVISION_CLASSES = 1000


def _timm(row: "ZooModel", num_classes: int, img_size: int | None, pretrained: bool) -> nn.Module:
    import timm

    kwargs = dict(row.kwargs)
    if img_size is not None:
        kwargs["img_size"] = img_size
    return timm.create_model(row.model, pretrained=pretrained, num_classes=num_classes, **kwargs)


def _torchvision(row: "ZooModel", num_classes: int, img_size: int | None, pretrained: bool) -> nn.Module:
    from torchvision import models

    if img_size is not None:
        raise ValueError(f"torchvision's {row.model} takes any input size; img_size is for token-based models")
    kwargs = dict(row.kwargs)
    if not pretrained:
        return models.get_model(row.model, weights=None, num_classes=num_classes, **kwargs)
    weights = models.get_model_weights(row.model).DEFAULT
    net = models.get_model(row.model, weights=weights, **kwargs)
    if num_classes != TORCHVISION_CLASSES:
        _replace_head(net, num_classes)
    return net


def _replace_head(net: nn.Module, num_classes: int) -> None:
    """Swap the last ``Linear`` (the ImageNet classifier) for a fresh one, as timm does for its models."""
    name, head = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)][-1]
    parent, _, child = name.rpartition(".")
    new = nn.Linear(head.in_features, num_classes, bias=head.bias is not None)
    net.get_submodule(parent).add_module(child, new)  # replaces the module registered under that name


_BUILDERS = {"timm": _timm, "torchvision": _torchvision}


def create(row: "ZooModel", num_classes: int, img_size: int | None = None, pretrained: bool = False) -> nn.Module:
    """The network of one zoo row; ``img_size`` only for models with a fixed token grid."""
    return _BUILDERS[row.source](row, num_classes, img_size, pretrained)


@dataclass(frozen=True)
class Measurement:
    """What the meta-device count of one built model gives."""

    cost: Cost
    weight_layers: int


def weight_layers(net: nn.Module) -> int:
    """Convolutions and linear layers (attention projections included)."""
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in net.modules())


def measure(row: "ZooModel", num_classes: int, resolution: int, img_size: int | None = None) -> Measurement:
    """Build on the meta device and count params and MACs with :func:`nasrobust.cost.measure_cost`."""
    with torch.device("meta"):
        net = create(row, num_classes, img_size=img_size)
    return Measurement(measure_cost(net, resolution), weight_layers(net))


def native_config(row: "ZooModel") -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """``(resolution, mean, std)`` of the model's default pretrained weights.

    timm: the default ``pretrained_cfg`` (its ``input_size`` is the training resolution of those
    weights); torchvision: the default weights' evaluation transform (crop size, mean, std).
    """
    if row.source == "timm":
        import timm

        cfg = timm.get_pretrained_cfg(row.model)
        return int(cfg.input_size[-1]), tuple(cfg.mean), tuple(cfg.std)
    from torchvision import models

    weights = models.get_model_weights(row.model).DEFAULT
    t = weights.transforms()
    crop = t.crop_size[0] if isinstance(t.crop_size, (list, tuple)) else t.crop_size
    mean = tuple(getattr(t, "mean", IMAGENET_MEAN))
    std = tuple(getattr(t, "std", IMAGENET_STD))
    return int(crop), mean, std
