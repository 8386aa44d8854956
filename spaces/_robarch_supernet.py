"""The weight-sharing supernet of ``spaces/robarch.py``: elastic depth and width, other factors fixed.

RobArch (Peng et al. 2023) varies one design factor at a time; the factors that change the
*kind* of layer (groups, bottleneck ratio, kernel, SE ratio, activation, stem, norm placement)
cannot share weights meaningfully, so a supernet fixes them (its ``base``) and makes the
stage depths and widths elastic, as BigNAS / Once-for-All do for ResNets:

* **depth**: the first ``d`` blocks of each stage;
* **width**: first channels of the block outputs; the bottleneck (``mid``) channels, which feed
  and leave the grouped ``k x k`` conv, are sliced *within each group* -- the number of groups
  stays fixed while the width changes, so a narrower grouped conv keeps ``groups`` groups, each
  made of the first ``mid / groups`` channels of the max group (:func:`~nasrobust.elastic.channel_index`);
* **SE**: the squeeze width follows the block *input* width (``round(ratio * w_in)``, first
  channels), the excitation gates the active ``mid`` channels.

Shapes come from ``space.plan(arch)``, the plan the stand-alone network is built from, and module
names mirror ``spaces/_robarch_net.py`` so :func:`~nasrobust.elastic.copy_into` fills
``space.build(arch)`` by name. The stem is fixed (its type and width are not elastic) and so are
the activation modules, whose learnable PSiLU / PSSiLU scalars are shared by every subnet.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn

from nasrobust.elastic import DynamicBatchNorm2d, DynamicConv2d, DynamicLinear, configure_stages, copy_into, run_stages
from nasrobust.errors import NasRobustError
from nasrobust.space import Arch
from nasrobust.spaces._robarch_net import ACTIVATION_MODULES
from nasrobust.spaces.robarch import BlockPlan, NetPlan, RobArchGenome, RobArchSpace
from nasrobust.supernet import Supernet

#: Genome fields a robarch supernet makes elastic; every other field is fixed by its base.
ELASTIC_FIELDS = ("depths", "widths")


def fixed_factors(genome: RobArchGenome) -> dict[str, object]:
    """The non-elastic fields of a genome (groups, bottleneck, kernel, SE, activation, stem, norm)."""
    return {f.name: getattr(genome, f.name) for f in dataclasses.fields(genome) if f.name not in ELASTIC_FIELDS}


def default_base(space: RobArchSpace) -> Arch:
    """ResNet-50's design (the named ``resnet50`` point where the space has it; otherwise its
    factors: no groups, bottleneck 0.25, 3x3, no SE, ReLU, conv stem of the middle stem width
    with the first stem down-sampling, BN after every conv)."""
    named = space.named()
    if "resnet50" in named:
        return named["resnet50"]
    return space.arch(RobArchGenome(
        depths=tuple(d[0] for d in space.DEPTHS), widths=tuple(w[0] for w in space.WIDTHS),
        groups=1, bottleneck=0.25, kernel=3, se_ratio=0.0, act="relu", stem="conv",
        stem_width=space.STEM_WIDTHS[len(space.STEM_WIDTHS) // 2], stem_down=space.STEM_DOWNS[0], norm="111",
    ))


def _bn(channels: int, present: bool, split: int = 1) -> nn.Module:
    return DynamicBatchNorm2d(channels, split=split) if present else nn.Identity()


class ElasticSqueezeExcite(nn.Module):
    """Twin of ``_robarch_net.SqueezeExcite`` over per-group ``mid`` channels; squeeze width elastic."""

    def __init__(self, max_channels: int, max_squeeze: int, split: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = DynamicConv2d(max_channels, max_squeeze, 1, bias=True, in_split=split)
        self.act = nn.ReLU()
        self.fc2 = DynamicConv2d(max_squeeze, max_channels, 1, bias=True, out_split=split)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class ElasticBottleneck(nn.Module):
    """Twin of ``_robarch_net.Bottleneck`` with elastic input, bottleneck, output and SE widths."""

    def __init__(self, m: BlockPlan, plan: NetPlan, projection_possible: bool):
        super().__init__()
        g = m.groups
        make_act = ACTIVATION_MODULES[plan.act]
        n1, n2, n3 = plan.norm
        self.conv1 = DynamicConv2d(m.cin, m.mid, 1, out_split=g)
        self.bn1 = _bn(m.mid, n1, g)
        self.act1 = make_act()
        self.conv2 = DynamicConv2d(m.mid, m.mid, plan.kernel, m.stride, groups=g)
        self.bn2 = _bn(m.mid, n2, g)
        self.act2 = make_act()
        self.se = ElasticSqueezeExcite(m.mid, m.se, g) if m.se else nn.Identity()
        self.conv3 = DynamicConv2d(m.mid, m.cout, 1, in_split=g)
        self.bn3 = _bn(m.cout, n3)
        self.shortcut = (
            nn.Sequential(DynamicConv2d(m.cin, m.cout, 1, m.stride), DynamicBatchNorm2d(m.cout))
            if projection_possible else nn.Identity()
        )
        self.act3 = make_act()
        self.project = projection_possible

    def configure(self, b: BlockPlan) -> None:
        if b.projection and isinstance(self.shortcut, nn.Identity):
            raise ValueError(f"block {b} needs a projection shortcut this supernet block does not hold")
        self.conv1.set_active(b.mid)
        self.conv2.set_active(b.mid)
        if isinstance(self.se, ElasticSqueezeExcite):
            if not b.se:
                raise ValueError(f"block {b} has no SE but the supernet's base has one")
            self.se.fc1.set_active(b.se)
            self.se.fc2.set_active(b.mid)
        self.conv3.set_active(b.cout)
        self.project = b.projection
        if b.projection:
            self.shortcut[0].set_active(b.cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.act2(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(self.se(y)))
        return self.act3(y + (self.shortcut(x) if self.project else x))


class ElasticHead(nn.Module):
    """Twin of ``_robarch_net.Head``: global average pool and a linear layer over the active width."""

    def __init__(self, max_channels: int, num_classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = DynamicLinear(max_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


class RobArchSupernet(Supernet):
    """Every depth/width choice of a robarch space for the fixed factors of ``base``."""

    def __init__(self, space: RobArchSpace, num_classes: int, base: Arch, generator: torch.Generator | None = None):
        super().__init__(space, num_classes, {"base": base.encoding})
        self.base = base
        self._fixed = fixed_factors(base.genome)
        big = space.plan(space.largest(base), num_classes)
        small = space.plan(space.smallest(base), num_classes)
        padding = (big.stem_kernel - 1) // 2 if big.stem == "conv" else 0
        stem: list[tuple[str, nn.Module]] = [
            ("conv", nn.Conv2d(3, big.stem_width, big.stem_kernel, big.stem_stride, padding=padding, bias=False)),
            ("bn", nn.BatchNorm2d(big.stem_width)),
            ("act", nn.ReLU()),
        ]
        if big.pool_stride:
            stem.append(("pool", nn.MaxPool2d(3, big.pool_stride, padding=1)))
        self.stem = nn.Sequential(OrderedDict(stem))
        stages = []
        for i, (blocks_big, blocks_small) in enumerate(zip(big.stages, small.stages)):
            # only a stage's first block can change shape; whether it does is the same at both ends
            first = blocks_big[0].projection or blocks_small[0].projection
            stages.append(nn.ModuleList(ElasticBottleneck(b, big, j == 0 and first) for j, b in enumerate(blocks_big)))
        self.stages = nn.ModuleList(stages)
        self.head = ElasticHead(big.width, num_classes)
        self._init_weights(generator)
        self._depths = tuple(len(s) for s in self.stages)
        self.set_active(self.largest())

    def _init_weights(self, generator: torch.Generator | None) -> None:
        """RobArch's "resnet" init (as the stand-alone network) on the max-size weights."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, DynamicConv2d)):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, nn.BatchNorm2d):
                    m.weight.fill_(1.0)
                    m.bias.zero_()
                elif isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0.0, 0.01, generator=generator)
                    m.bias.zero_()

    # ------------------------------------------------------------------ Supernet protocol
    def largest(self) -> Arch:
        return self.space.largest(self.base)

    def smallest(self) -> Arch:
        return self.space.smallest(self.base)

    def contains(self, arch: Arch) -> bool:
        return arch.space == self.space.name and fixed_factors(arch.genome) == self._fixed

    def _check(self, arch: Arch) -> None:
        if arch.space == self.space.name and not self.contains(arch):
            differ = ", ".join(
                f"{k} {v!r} (supernet: {self._fixed[k]!r})" for k, v in fixed_factors(arch.genome).items() if v != self._fixed[k]
            )
            raise NasRobustError(
                f"{arch.encoding} is not held by this {self.space.name} supernet: only depths and widths are elastic, "
                f"and it differs in {differ}. Use a supernet built with base={arch.encoding!r} "
                f"(space.supernet(base=...)) for it"
            )
        super()._check(arch)

    def sample(self, rng: np.random.Generator) -> Arch:
        """Uniform stage depths and widths with the base's other factors."""
        pick = lambda choices: choices[int(rng.integers(len(choices)))]  # noqa: E731
        depths = tuple(pick(c) for c in self.space.DEPTHS)
        widths = tuple(pick(c) for c in self.space.WIDTHS)
        return self.space.arch(dataclasses.replace(self.base.genome, depths=depths, widths=widths))

    def _activate(self, arch: Arch) -> None:
        plan = self.space.plan(arch, self.num_classes)
        self._depths = configure_stages(self.stages, plan.stages)

    def _copy_weights(self, arch: Arch, net: nn.Module) -> None:
        copy_into(self, net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = run_stages(x, self.stages, self._depths)
        return self.head(x)
