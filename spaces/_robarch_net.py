"""Torch modules of the ``robarch`` space (imported lazily by ``RobArchSpace.build``).

The network follows RobArch's configurable model (Peng et al. 2023, ``robustarch/models/
model.py``): stem, four stages of bottleneck blocks ``conv1 (1x1) -> conv2 (kxk, grouped, the
stage's stride) -> [SE] -> conv3 (1x1)`` plus a shortcut, and a pooled linear head. With the
``resnet50`` genome its parameters are torchvision's ``resnet50``, tensor for tensor and in the
same order. Module names are regular (``stem``, ``stages[i][j].conv1 ...``, ``head.fc``) so the
elastic supernet can map onto them; every channel count comes from a
:class:`~nasrobust.spaces.robarch.NetPlan`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn as nn

from nasrobust.spaces.robarch import BlockPlan, NetPlan


class PSiLU(nn.Module):
    """``x * sigmoid(alpha x)`` with a learnable ``alpha`` (Dai et al. 2021, used by RobArch)."""

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), float(alpha)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.alpha * x)


class PSSiLU(nn.Module):
    """``x * (sigmoid(alpha x) - beta) / (1 - beta)``, ``beta`` in [0, 1] (Dai et al. 2021).

    RobArch clamps ``beta.data`` in place during the forward pass; here the clamp is part of
    the graph (same outputs, no in-place write to a parameter).
    """

    def __init__(self, alpha: float = 1.0, beta: float = 1e-4):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), float(alpha)))
        self.beta = nn.Parameter(torch.full((1,), float(beta)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.beta.clamp(0.0, 1.0)
        return x * (torch.sigmoid(self.alpha * x) - beta) / (1.0 - beta + 1e-6)


#: Activation name (the space's choice list) -> module factory.
ACTIVATION_MODULES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "psilu": PSiLU,
    "pssilu": PSSiLU,
}


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) as torchvision's: pool, 1x1, ReLU, 1x1, sigmoid gate."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


def _norm(channels: int, present: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if present else nn.Identity()


class Bottleneck(nn.Module):
    """``act3(shortcut(x) + conv3(se(act2(bn2(conv2(act1(bn1(conv1(x)))))))))``, bn3 after conv3."""

    def __init__(self, b: BlockPlan, kernel: int, act: str, norm: tuple[bool, bool, bool]):
        super().__init__()
        make_act = ACTIVATION_MODULES[act]
        self.conv1 = nn.Conv2d(b.cin, b.mid, 1, bias=False)
        self.bn1 = _norm(b.mid, norm[0])
        self.act1 = make_act()
        self.conv2 = nn.Conv2d(b.mid, b.mid, kernel, b.stride, padding=(kernel - 1) // 2, groups=b.groups, bias=False)
        self.bn2 = _norm(b.mid, norm[1])
        self.act2 = make_act()
        self.se = SqueezeExcite(b.mid, b.se) if b.se else nn.Identity()
        self.conv3 = nn.Conv2d(b.mid, b.cout, 1, bias=False)
        self.bn3 = _norm(b.cout, norm[2])
        self.shortcut = (
            nn.Sequential(nn.Conv2d(b.cin, b.cout, 1, b.stride, bias=False), nn.BatchNorm2d(b.cout))
            if b.projection
            else nn.Identity()
        )
        self.act3 = make_act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.act2(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(self.se(y)))
        return self.act3(y + self.shortcut(x))


class Head(nn.Module):
    """Global average pool and a linear classifier."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


class RobArchNet(nn.Module):
    """A stand-alone robarch network: normalised 3-channel images -> logits."""

    def __init__(self, plan: NetPlan, generator: torch.Generator | None = None):
        super().__init__()
        self.plan = plan
        padding = (plan.stem_kernel - 1) // 2 if plan.stem == "conv" else 0
        stem = [
            ("conv", nn.Conv2d(3, plan.stem_width, plan.stem_kernel, plan.stem_stride, padding=padding, bias=False)),
            ("bn", nn.BatchNorm2d(plan.stem_width)),
            ("act", nn.ReLU()),
        ]
        if plan.pool_stride:
            stem.append(("pool", nn.MaxPool2d(3, plan.pool_stride, padding=1)))
        self.stem = nn.Sequential(OrderedDict(stem))
        self.stages = nn.ModuleList(
            nn.Sequential(*(Bottleneck(b, plan.kernel, plan.act, plan.norm) for b in stage)) for stage in plan.stages
        )
        self.head = Head(plan.width, plan.num_classes)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """RobArch's "resnet" init: convs N(0, 2/fan_out), linear N(0, 0.01), biases 0, BN (1, 0)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01, generator=generator)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
