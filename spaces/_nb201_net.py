"""Torch modules of the NAS-Bench-201 network (Dong & Yang, ICLR 2020).

The layers follow the benchmark's own code, xautodl ``models/cell_operations.py``,
``cell_infers/cells.py`` (``InferCell``) and ``cell_infers/tiny_network.py`` (``TinyNetwork``):

* ``OPS[name](C_in, C_out, stride, affine=..., track_running_stats=...)`` builds one edge op.
  ``nor_conv_kxk`` is ReLU -> Conv(k, bias only without affine BN) -> BN. ``avg_pool_3x3`` is
  AvgPool(3, stride, pad 1, ``count_include_pad=False``), with a 1x1 ReLU-Conv-BN first when
  the widths differ. ``skip_connect`` is the identity, or ``FactorizedReduce`` when the shape
  changes. ``none`` gives zeros of the output shape, computed as ``x * 0`` so that gradients
  still reach every layer, as in the benchmark. A supernet or a DARTS-style mixed op builds
  one of each from this table (``affine=False`` is DARTS's setting).
* ``Cell`` holds one module per edge in ``EDGES`` order and computes node ``j`` as the sum
  of ``edge[j<-i](node i)`` over ``i < j``; the output is node 3. Any module mapping a tensor
  to a tensor can sit on an edge, so a mixed op can too.
* ``NB201Network``: stem (3x3 conv, C, + BN), then N cells at C, ``ResNetBasicBlock``
  (stride 2) to 2C, N cells, a residual block to 4C, N cells, then BN + ReLU, global average
  pool and a linear classifier. ``cell_factory(C)`` supplies the cells, so a supernet reuses
  the macro structure unchanged.

Module and attribute names (``stem``, ``cells``, ``layers``, ``op``, ``conv_a``, ``conv_b``,
``downsample``, ``lastact``, ``classifier``) copy xautodl's, so the state-dict keys have the same
layout as the benchmark's ``TinyNetwork``. Loading an official checkpoint is untested.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from nasrobust.spaces.nb201 import DEFAULT_CELLS_PER_STAGE, DEFAULT_CHANNELS, EDGES, NUM_NODES, OP_NAMES, stage_plan

OpFactory = Callable[..., nn.Module]


class ReLUConvBN(nn.Module):
    """ReLU -> Conv2d -> BatchNorm2d (the conv has a bias only when the BN is not affine)."""

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        affine: bool = True,
        track_running_stats: bool = True,
    ):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=not affine),
            nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class AvgPool(nn.Module):
    """3x3 average pool, stride 1 or 2, padding 1, ``count_include_pad=False``."""

    def __init__(self, C_in: int, C_out: int, stride: int, affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.preprocess = (
            ReLUConvBN(C_in, C_out, 1, 1, 0, affine, track_running_stats) if C_in != C_out else None
        )
        self.op = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preprocess is not None:
            x = self.preprocess(x)
        return self.op(x)


class Zero(nn.Module):
    """The ``none`` op: zeros shaped like the op's output, still attached to the graph."""

    def __init__(self, C_in: int, C_out: int, stride: int):
        super().__init__()
        self.C_in, self.C_out, self.stride = C_in, C_out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x[:, :, :: self.stride, :: self.stride].mul(0.0)
        if self.C_out != self.C_in:
            out = out[:, :1].expand(-1, self.C_out, -1, -1).contiguous()
        return out

    def extra_repr(self) -> str:
        return f"C_in={self.C_in}, C_out={self.C_out}, stride={self.stride}"


class FactorizedReduce(nn.Module):
    """``skip_connect`` when the shape changes: 1x1 conv (stride 1), or two 1x1/2 convs, the
    second on the input shifted by one pixel, concatenated (stride 2); then BN."""

    def __init__(self, C_in: int, C_out: int, stride: int, affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"FactorizedReduce supports stride 1 or 2, got {stride}")
        self.stride = stride
        self.relu = nn.ReLU(inplace=False)
        if stride == 2:
            halves = (C_out // 2, C_out - C_out // 2)
            self.convs = nn.ModuleList(nn.Conv2d(C_in, h, 1, stride=2, bias=not affine) for h in halves)
            self.pad = nn.ConstantPad2d((0, 1, 0, 1), 0.0)
        else:
            self.conv = nn.Conv2d(C_in, C_out, 1, bias=not affine)
        self.bn = nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            x = self.relu(x)
            shifted = self.pad(x)[:, :, 1:, 1:]
            out = torch.cat([self.convs[0](x), self.convs[1](shifted)], dim=1)
        else:  # the benchmark applies no ReLU here
            out = self.conv(x)
        return self.bn(out)


def _skip(C_in: int, C_out: int, stride: int, affine: bool = True, track_running_stats: bool = True) -> nn.Module:
    if stride == 1 and C_in == C_out:
        return nn.Identity()
    return FactorizedReduce(C_in, C_out, stride, affine, track_running_stats)


def _relu_conv_bn(kernel: int) -> OpFactory:
    def make(C_in: int, C_out: int, stride: int, affine: bool = True, track_running_stats: bool = True) -> nn.Module:
        return ReLUConvBN(C_in, C_out, kernel, stride, kernel // 2, affine, track_running_stats)

    return make


#: Edge operations by name; ``OPS[name](C_in, C_out, stride, affine=True, track_running_stats=True)``.
OPS: dict[str, OpFactory] = {
    "none": lambda C_in, C_out, stride, affine=True, track_running_stats=True: Zero(C_in, C_out, stride),
    "skip_connect": _skip,
    "nor_conv_1x1": _relu_conv_bn(1),
    "nor_conv_3x3": _relu_conv_bn(3),
    "avg_pool_3x3": AvgPool,
}
if tuple(OPS) != OP_NAMES:  # the space owns the op list; this table must follow it
    raise RuntimeError(f"_nb201_net.OPS {tuple(OPS)} out of sync with nb201.OP_NAMES {OP_NAMES}")


class ResNetBasicBlock(nn.Module):
    """The reduction block between stages: ReLU-Conv-BN 3x3/s, ReLU-Conv-BN 3x3, plus a shortcut
    (2x2 average pool then 1x1 conv when striding; 1x1 ReLU-Conv-BN when only widening)."""

    def __init__(self, C_in: int, C_out: int, stride: int, affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ResNetBasicBlock supports stride 1 or 2, got {stride}")
        self.conv_a = ReLUConvBN(C_in, C_out, 3, stride, 1, affine, track_running_stats)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, affine, track_running_stats)
        self.downsample: nn.Module | None
        if stride == 2:
            self.downsample = nn.Sequential(
                nn.AvgPool2d(kernel_size=2, stride=2, padding=0), nn.Conv2d(C_in, C_out, 1, bias=False)
            )
        elif C_in != C_out:
            self.downsample = ReLUConvBN(C_in, C_out, 1, 1, 0, affine, track_running_stats)
        else:
            self.downsample = None
        self.in_dim, self.out_dim = C_in, C_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return residual + self.conv_b(self.conv_a(x))


class Cell(nn.Module):
    """The 4-node DAG: ``layers[k]`` is the op on edge ``EDGES[k] = (to, from)``."""

    def __init__(self, layers: Sequence[nn.Module]):
        super().__init__()
        if len(layers) != len(EDGES):
            raise ValueError(f"a cell needs {len(EDGES)} edge modules, got {len(layers)}")
        self.layers = nn.ModuleList(layers)

    @classmethod
    def from_genome(
        cls,
        genome: Sequence[str],
        C_in: int,
        C_out: int,
        stride: int = 1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> "Cell":
        """Edges leaving node 0 map ``C_in -> C_out`` with ``stride``; the others ``C_out -> C_out``."""
        return cls(
            [
                OPS[op](C_in if src == 0 else C_out, C_out, stride if src == 0 else 1, affine, track_running_stats)
                for (_, src), op in zip(EDGES, genome)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for to in range(1, NUM_NODES):
            nodes.append(sum(layer(nodes[src]) for layer, (dst, src) in zip(self.layers, EDGES) if dst == to))
        return nodes[-1]


class NB201Network(nn.Module):
    """NAS-Bench-201's macro skeleton around cells made by ``cell_factory(C)``; returns logits."""

    def __init__(
        self,
        cell_factory: Callable[[int], nn.Module],
        num_classes: int,
        channels: int = DEFAULT_CHANNELS,
        cells_per_stage: int = DEFAULT_CELLS_PER_STAGE,
    ):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.cells = nn.ModuleList(
            ResNetBasicBlock(cin, cout, 2) if kind == "reduce" else cell_factory(cout)
            for kind, cin, cout in stage_plan(channels, cells_per_stage)
        )
        c_last = channels * 4
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_last), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        x = self.global_pooling(self.lastact(x)).flatten(1)
        return self.classifier(x)


def build_network(
    genome: Sequence[str],
    num_classes: int,
    channels: int = DEFAULT_CHANNELS,
    cells_per_stage: int = DEFAULT_CELLS_PER_STAGE,
) -> NB201Network:
    """The stand-alone network of one cell (every cell of the network is that cell)."""
    return NB201Network(lambda C: Cell.from_genome(genome, C, C), num_classes, channels, cells_per_stage)
