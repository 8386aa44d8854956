"""Torch modules of the DARTS cell space: the eight candidate ops, the cell and NetworkCIFAR.

Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019, and Xu et al.,
"PC-DARTS: Partial Channel Connections for Memory-Efficient Architecture Search", ICLR 2020.
The ops and the evaluation network follow the published code (quark0/darts ``cnn/operations.py``
and ``cnn/model.py``), read and re-written here; only the network's public ``spaces/darts.py``
imports this module, lazily, inside ``build``.

Cell structure (shared with the one-shot supernet, which puts every op on every edge):

* A cell has two input states, ``s0 = preprocess0(c_{k-2})`` and ``s1 = preprocess1(c_{k-1})``,
  both with ``C`` channels: ``preprocess1`` is a ReLU-1x1 conv-BN; ``preprocess0`` is the same,
  or a :class:`FactorizedReduce` when the previous cell was a reduction cell (``c_{k-2}`` is
  then twice as large as ``c_{k-1}``).
* Intermediate node ``i`` (state ``i + 2``, ``i = 0..3``) sums two edges ``op(state[j])``
  with ``j < i + 2``. In a reduction cell, edges leaving the two input states have stride 2,
  all others stride 1.
* The output is the channel concatenation of the four intermediate nodes (``4 C`` channels).

``OPS[name](C, stride, affine)`` builds one candidate op mapping ``C`` to ``C`` channels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "OPS",
    "Cell",
    "DilConv",
    "FactorizedReduce",
    "NetworkCIFAR",
    "ReLUConvBN",
    "SepConv",
    "Zero",
    "drop_path",
]


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv -> BN: the 1x1 preprocessing of cell inputs."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU -> dilated depthwise conv -> pointwise conv -> BN (``dil_conv_*``)."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool = True
    ):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride=stride, padding=padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked (ReLU, depthwise, pointwise, BN) blocks, the first one strided (``sep_conv_*``).

    DARTS applies the separable convolution twice, following NASNet (Zoph et al., 2018).
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
            DilConv(c_in, c_out, kernel, 1, padding, 1, affine),
        )


class Zero(nn.Module):
    """The ``none`` op: zeros of the (strided) output shape; no parameters."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two 1x1 stride-2 convs on offset grids, concatenated, then BN.

    DARTS shifts the second conv's input by one pixel (``x[:, :, 1:, 1:]``), which breaks on odd
    sizes; here that input is zero-padded by one pixel at the bottom/right when a side is odd,
    so both halves have ``ceil(H / 2)`` rows like every other stride-2 op. Even sizes (the
    published networks) are computed exactly as in DARTS.
    """

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = x[:, :, 1:, 1:]
        odd_h, odd_w = x.shape[-2] % 2, x.shape[-1] % 2
        if odd_h or odd_w:
            shifted = F.pad(shifted, (0, odd_w, 0, odd_h))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


def _skip(c: int, stride: int, affine: bool) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)


#: The eight DARTS candidate ops: ``OPS[name](C, stride, affine)`` -> module, ``C`` -> ``C`` channels.
OPS: dict[str, Callable[[int, int, bool], nn.Module]] = {
    "none": lambda c, stride, affine: Zero(stride),
    "max_pool_3x3": lambda c, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "avg_pool_3x3": lambda c, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "skip_connect": _skip,
    "sep_conv_3x3": lambda c, stride, affine: SepConv(c, c, 3, stride, 1, affine),
    "sep_conv_5x5": lambda c, stride, affine: SepConv(c, c, 5, stride, 2, affine),
    "dil_conv_3x3": lambda c, stride, affine: DilConv(c, c, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda c, stride, affine: DilConv(c, c, 5, stride, 4, 2, affine),
}


def drop_path(x: torch.Tensor, drop_prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero whole examples of a path with probability ``drop_prob``, rescaling the rest (FractalNet / NASNet)."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep, generator=generator)
    return x * mask / keep


Edge = tuple[str, int]


class Cell(nn.Module):
    """One DARTS cell; ``nodes[i]`` lists the ``(op, input_state)`` edges of node ``i`` (state ``i + 2``)."""

    def __init__(
        self,
        nodes: Sequence[Sequence[Edge]],
        c_prev_prev: int,
        c_prev: int,
        c: int,
        reduction: bool,
        reduction_prev: bool,
        affine: bool = True,
    ):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (
            FactorizedReduce(c_prev_prev, c, affine) if reduction_prev else ReLUConvBN(c_prev_prev, c, 1, 1, 0, affine)
        )
        self.preprocess1 = ReLUConvBN(c_prev, c, 1, 1, 0, affine)
        self.inputs: list[list[int]] = []
        self.ops = nn.ModuleList()
        for i, node in enumerate(nodes):
            if len(node) < 1:
                raise ValueError(f"node {i} has no input edge")
            self.inputs.append([])
            for name, j in node:
                if not 0 <= j < i + 2:
                    raise ValueError(f"node {i} (state {i + 2}) cannot take state {j} as input")
                self.inputs[-1].append(int(j))
                self.ops.append(OPS[name](c, 2 if reduction and j < 2 else 1, affine))
        self.multiplier = len(nodes)

    def forward(
        self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        ops = iter(self.ops)
        for inputs in self.inputs:
            total = None
            for j in inputs:
                op = next(ops)
                h = op(states[j])
                if self.training and drop_prob > 0.0 and not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob, generator)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat(states[2:], dim=1)


class NetworkCIFAR(nn.Module):
    """DARTS' CIFAR evaluation network: 3x3 stem (``3 C`` channels) + BN, ``layers`` cells, pool, linear.

    Reduction cells sit at ``layers // 3`` and ``2 * layers // 3`` and double the channels. No
    auxiliary head (DARTS' parameter counts exclude it). ``drop_path_prob`` (default 0, DARTS
    trains with 0.2 rising linearly) and the optional ``drop_path_generator`` are read at every
    training forward.
    """

    def __init__(
        self,
        normal: Sequence[Sequence[Edge]],
        reduce: Sequence[Sequence[Edge]],
        num_classes: int = 10,
        channels: int = 36,
        layers: int = 20,
        stem_multiplier: int = 3,
    ):
        super().__init__()
        self.drop_path_prob = 0.0
        self.drop_path_generator: torch.Generator | None = None
        c_curr = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            cell = Cell(reduce if reduction else normal, c_prev_prev, c_prev, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.multiplier * c_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob, self.drop_path_generator)
        return self.classifier(torch.flatten(self.global_pooling(s1), 1))
