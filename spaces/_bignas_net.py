"""The stand-alone BigNAS-ResNet network that ``spaces/bignas.py`` builds.

It follows torchvision's ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR
2016, v1.5: in bottlenecks the stride sits on the k x k conv) with the BigNAS choices (elastic
width, depth, kernel, middle width, resolution). The module names are part of the contract with
the weight-sharing supernet. Its ``extract(arch)`` slices the max-size weights into exactly these
modules, as Once-for-All does: first channels, centre crop of the kernel, first blocks of each
stage. The names:

``stem.{conv,bn,act[,pool]}``, ``stages.<i>.<j>.{conv1,bn1,conv2,bn2[,conv3,bn3],shortcut}``
(``shortcut`` is ``Sequential(conv, bn)`` or ``Identity``), ``pool``, ``head``.

Everything is described by a :class:`~nasrobust.spaces.bignas.NetLayout`, the same object the
analytic cost walks, so the two cannot drift apart.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from nasrobust.spaces.bignas import BlockSpec, NetLayout


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)


def _shortcut(b: BlockSpec) -> nn.Module:
    if not b.projection:
        return nn.Identity()
    return nn.Sequential(OrderedDict(conv=_conv(b.cin, b.cout, 1, b.stride), bn=nn.BatchNorm2d(b.cout)))


class BasicBlock(nn.Module):
    """Two k x k convs (the first one strides), middle width ``b.mid``, residual + ReLU."""

    def __init__(self, b: BlockSpec):
        super().__init__()
        self.conv1 = _conv(b.cin, b.mid, b.kernel, b.stride)
        self.bn1 = nn.BatchNorm2d(b.mid)
        self.conv2 = _conv(b.mid, b.cout, b.kernel)
        self.bn2 = nn.BatchNorm2d(b.cout)
        self.shortcut = _shortcut(b)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce to ``b.mid``, k x k (strided), 1x1 expand to ``b.cout``, residual + ReLU."""

    def __init__(self, b: BlockSpec):
        super().__init__()
        self.conv1 = _conv(b.cin, b.mid, 1)
        self.bn1 = nn.BatchNorm2d(b.mid)
        self.conv2 = _conv(b.mid, b.mid, b.kernel, b.stride)
        self.bn2 = nn.BatchNorm2d(b.mid)
        self.conv3 = _conv(b.mid, b.cout, 1)
        self.bn3 = nn.BatchNorm2d(b.cout)
        self.shortcut = _shortcut(b)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act(out + self.shortcut(x))


BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class BigNASResNet(nn.Module):
    """Stem, 4 stages of residual blocks, global average pool and a linear head."""

    def __init__(self, layout: NetLayout, num_classes: int):
        super().__init__()
        self.layout = layout
        stem = OrderedDict(
            conv=_conv(3, layout.stem_width, layout.stem_kernel, layout.stem_stride),
            bn=nn.BatchNorm2d(layout.stem_width),
            act=nn.ReLU(),
        )
        if layout.stem_pool:
            stem["pool"] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.stem = nn.Sequential(stem)
        block = BLOCKS[layout.block]
        self.stages = nn.ModuleList(nn.Sequential(*(block(b) for b in stage)) for stage in layout.stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(layout.out_width, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's ResNet initialisation: He (fan-out) convs, unit BN scale, zero BN shift."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.forward_features(x)), 1))
