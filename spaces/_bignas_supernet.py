"""The BigNAS-ResNet weight-sharing supernet of ``spaces/bignas.py``.

BigNAS (Yu et al., "BigNAS: Scaling Up Neural Architecture Search with Big Single-Stage
Models", ECCV 2020) trains one network that holds every child: each block keeps the weights
of its widest, deepest, largest-kernel configuration, and a child is a slice of them, as in
Once-for-All (Cai et al., ICLR 2020). Here the slicing rules are those of
:mod:`nasrobust.elastic` (first channels, centre kernel crop) and:

* **depth**: the first ``d`` blocks of each stage run (OFA's elastic depth); the others are
  skipped;
* **width / expand ratio / kernel**: every block reads its active shape from
  ``space.layout(arch)``, the same :class:`~nasrobust.spaces.bignas.NetLayout` the stand-alone
  network is built from, so the choice lists live only in the space;
* **shortcut**: block 0 of a stage keeps a 1x1 projection, used when the active block changes
  shape (stride 2, or input width != output width) and skipped (identity) otherwise, exactly
  like the stand-alone block;
* **resolution**: elastic through the data (``SupernetClassifier`` resizes the input).

Module names mirror ``spaces/_bignas_net.py`` (``stem.conv``, ``stages.<i>.<j>.conv1``, ...,
``head``), so :func:`~nasrobust.elastic.copy_into` fills ``space.build(arch)`` by name.
Initialisation follows torchvision's ResNet plus BigNAS's zero-initialised last BN scale of
each residual branch (sec. 3.1, "Initialization"), which keeps the big model trainable early.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from nasrobust.elastic import DynamicBatchNorm2d, DynamicConv2d, DynamicLinear, configure_stages, copy_into, run_stages
from nasrobust.space import Arch
from nasrobust.spaces.bignas import STAGE_STRIDES, BigNASResNetSpace, BlockSpec
from nasrobust.supernet import Supernet


def _shortcut_slot(max_spec: BlockSpec, projection_possible: bool) -> nn.Module:
    if not projection_possible:
        return nn.Identity()
    return nn.Sequential(OrderedDict(
        conv=DynamicConv2d(max_spec.cin, max_spec.cout, 1, max_spec.stride),
        bn=DynamicBatchNorm2d(max_spec.cout),
    ))


class ElasticBlock(nn.Module):
    """What the elastic basic block and bottleneck share: the optional projection shortcut."""

    def __init__(self, max_spec: BlockSpec, projection_possible: bool):
        super().__init__()
        self.shortcut = _shortcut_slot(max_spec, projection_possible)
        self.act = nn.ReLU()
        self.project = projection_possible

    def configure(self, spec: BlockSpec) -> None:
        """Set the active shape; ``spec`` is the block as ``space.layout(arch)`` describes it."""
        if spec.projection and isinstance(self.shortcut, nn.Identity):
            raise ValueError(f"block {spec} needs a projection shortcut this supernet block does not hold")
        self.project = spec.projection
        if spec.projection:
            self.shortcut.conv.set_active(spec.cout)

    def residual(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return self.act(out + (self.shortcut(x) if self.project else x))


class ElasticBasicBlock(ElasticBlock):
    """Elastic twin of ``_bignas_net.BasicBlock``: two k x k convs, middle width ``mid``."""

    last_bn = "bn2"

    def __init__(self, m: BlockSpec, projection_possible: bool):
        super().__init__(m, projection_possible)
        self.conv1 = DynamicConv2d(m.cin, m.mid, m.kernel, m.stride)
        self.bn1 = DynamicBatchNorm2d(m.mid)
        self.conv2 = DynamicConv2d(m.mid, m.cout, m.kernel)
        self.bn2 = DynamicBatchNorm2d(m.cout)

    def configure(self, spec: BlockSpec) -> None:
        super().configure(spec)
        self.conv1.set_active(spec.mid, spec.kernel)
        self.conv2.set_active(spec.cout, spec.kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        return self.residual(x, self.bn2(self.conv2(out)))


class ElasticBottleneck(ElasticBlock):
    """Elastic twin of ``_bignas_net.Bottleneck``: 1x1 reduce, k x k (strided), 1x1 expand."""

    last_bn = "bn3"

    def __init__(self, m: BlockSpec, projection_possible: bool):
        super().__init__(m, projection_possible)
        self.conv1 = DynamicConv2d(m.cin, m.mid, 1)
        self.bn1 = DynamicBatchNorm2d(m.mid)
        self.conv2 = DynamicConv2d(m.mid, m.mid, m.kernel, m.stride)
        self.bn2 = DynamicBatchNorm2d(m.mid)
        self.conv3 = DynamicConv2d(m.mid, m.cout, 1)
        self.bn3 = DynamicBatchNorm2d(m.cout)

    def configure(self, spec: BlockSpec) -> None:
        super().configure(spec)
        self.conv1.set_active(spec.mid)
        self.conv2.set_active(spec.mid, spec.kernel)
        self.conv3.set_active(spec.cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        return self.residual(x, self.bn3(self.conv3(out)))


ELASTIC_BLOCKS: dict[str, type[ElasticBlock]] = {"basic": ElasticBasicBlock, "bottleneck": ElasticBottleneck}


def _max_blocks(space: BigNASResNetSpace) -> list[list[tuple[BlockSpec, bool]]]:
    """Per stage, per block position: the max-size spec and whether a projection can occur there."""
    c = space.choice_lists
    stages = []
    previous = c.stem_widths
    for s, stride in zip(c.stages, STAGE_STRIDES):
        mid = max(space.middle_width(w * e) for w in s.widths for e in s.expands)
        blocks = []
        for j in range(max(s.depths)):
            cin = max(previous) if j == 0 else max(s.widths)
            block_stride = stride if j == 0 else 1
            # widths never decrease, so block 0 changes shape iff it strides or some p < w is allowed
            projection = j == 0 and (block_stride != 1 or any(p < w for p in previous for w in s.widths))
            blocks.append((BlockSpec(cin, max(s.widths), mid, max(s.kernels), block_stride), projection))
        stages.append(blocks)
        previous = s.widths
    return stages


class BigNASSupernet(Supernet):
    """Every architecture of a BigNAS-ResNet space in one network (``space.supernet()``)."""

    def __init__(self, space: BigNASResNetSpace, num_classes: int):
        super().__init__(space, num_classes)
        c = space.choice_lists
        big = space.layout(space.largest())
        stem = OrderedDict(
            conv=DynamicConv2d(3, max(c.stem_widths), max(c.stem_kernels), big.stem_stride),
            bn=DynamicBatchNorm2d(max(c.stem_widths)),
            act=nn.ReLU(),
        )
        if big.stem_pool:
            stem["pool"] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.stem = nn.Sequential(stem)
        block = ELASTIC_BLOCKS[space.block]
        self.stages = nn.ModuleList(
            nn.ModuleList(block(spec, projection) for spec, projection in stage) for stage in _max_blocks(space)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = DynamicLinear(max(c.stages[-1].widths), num_classes)
        self._depths = tuple(len(s) for s in self.stages)
        self._init_weights()
        self.set_active(self.largest())

    def _init_weights(self) -> None:
        """torchvision's ResNet init (He fan-out convs, BN 1/0) with BigNAS's zero last-BN scale."""
        for m in self.modules():
            if isinstance(m, DynamicConv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for stage in self.stages:
            for b in stage:
                nn.init.zeros_(getattr(b, b.last_bn).weight)

    # ------------------------------------------------------------------ Supernet protocol
    def largest(self) -> Arch:
        return self.space.largest()

    def smallest(self) -> Arch:
        return self.space.smallest()

    def _activate(self, arch: Arch) -> None:
        lay = self.space.layout(arch)
        self.stem.conv.set_active(lay.stem_width, lay.stem_kernel)
        self._depths = configure_stages(self.stages, lay.stages)

    def _copy_weights(self, arch: Arch, net: nn.Module) -> None:
        copy_into(self, net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = run_stages(x, self.stages, self._depths)
        return self.head(torch.flatten(self.pool(x), 1))
