"""Analytic parameter and FLOP counting, and the measurement it is checked against.

Convention: ``flops`` counts multiply-accumulates (MACs) of convolutions, linear layers and
matrix products, the convention of BigNAS, Once-for-All and RobustART ("600M FLOPs" = 600M
MACs). Bias additions, normalisation, activations, pooling and element-wise adds are not
counted. This is exactly half of what ``torch.utils.flop_counter`` reports, so
:func:`measure_cost` divides by two and the two can be compared directly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn


@dataclass(frozen=True)
class Cost:
    """Parameter count and multiply-accumulate count of one network at one input size."""

    params: int
    flops: int

    @property
    def mparams(self) -> float:
        return self.params / 1e6

    @property
    def mflops(self) -> float:
        return self.flops / 1e6


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class CostCounter:
    """Accumulates params and MACs layer by layer while tracking the feature-map size.

    Spaces describe their network to a counter in the same order they build it, so the
    analytic cost needs no torch and costs microseconds.
    """

    def __init__(self, height: int, width: int | None = None):
        self.h = height
        self.w = height if width is None else width
        self.params = 0
        self.flops = 0

    # -- layers -------------------------------------------------------------------------
    def conv(
        self,
        cin: int,
        cout: int,
        kernel: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | None = None,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> "CostCounter":
        """A Conv2d; ``padding=None`` means the usual ``dilation * (k - 1) // 2``."""
        kh, kw = _pair(kernel)
        sh, sw = _pair(stride)
        ph, pw = _pair(padding) if padding is not None else (dilation * (kh - 1) // 2, dilation * (kw - 1) // 2)
        if cin % groups or cout % groups:
            raise ValueError(f"channels {cin}->{cout} not divisible by groups={groups}")
        self.h = (self.h + 2 * ph - dilation * (kh - 1) - 1) // sh + 1
        self.w = (self.w + 2 * pw - dilation * (kw - 1) - 1) // sw + 1
        per_output = (cin // groups) * kh * kw
        self.params += cout * per_output + (cout if bias else 0)
        self.flops += cout * self.h * self.w * per_output
        return self

    def norm(self, channels: int, affine: bool = True) -> "CostCounter":
        """BatchNorm / LayerNorm / GroupNorm with a weight and a bias per channel."""
        self.params += 2 * channels if affine else 0
        return self

    def linear(self, cin: int, cout: int, bias: bool = True, tokens: int = 1) -> "CostCounter":
        """A Linear layer applied to ``tokens`` vectors."""
        self.params += cin * cout + (cout if bias else 0)
        self.flops += tokens * cin * cout
        return self

    def pool(self, kernel: int, stride: int | None = None, padding: int = 0, ceil_mode: bool = False) -> "CostCounter":
        """Max/avg pooling: changes the size, adds no params or MACs."""
        stride = kernel if stride is None else stride
        span = lambda n: (n + 2 * padding - kernel + (stride - 1 if ceil_mode else 0)) // stride + 1  # noqa: E731
        self.h, self.w = span(self.h), span(self.w)
        return self

    def global_pool(self) -> "CostCounter":
        self.h = self.w = 1
        return self

    def resize(self, height: int, width: int | None = None) -> "CostCounter":
        self.h, self.w = height, height if width is None else width
        return self

    def add_params(self, n: int) -> "CostCounter":
        """Parameters outside conv/linear/norm layers (e.g. a class token, position embedding)."""
        self.params += n
        return self

    def add_flops(self, n: int) -> "CostCounter":
        """MACs of matrix products outside layers (e.g. attention ``q @ k^T``)."""
        self.flops += n
        return self

    # -- branches -----------------------------------------------------------------------
    def branch(self) -> "CostCounter":
        """A counter at the current size with zero cost, for a parallel path."""
        other = copy.copy(self)
        other.params = other.flops = 0
        return other

    def merge(self, *branches: "CostCounter") -> "CostCounter":
        """Add the cost of parallel paths; the size becomes that of the last branch."""
        for b in branches:
            self.params += b.params
            self.flops += b.flops
            self.h, self.w = b.h, b.w
        return self

    def result(self) -> Cost:
        return Cost(params=self.params, flops=self.flops)


def measure_cost(model: nn.Module, resolution: int | tuple[int, int], in_chans: int = 3) -> Cost:
    """Count a built module's parameters and MACs with ``torch.utils.flop_counter``.

    Runs one forward pass of a batch of one. Works on the ``meta`` device, so huge models
    cost no memory or compute: build them under ``torch.device("meta")``.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    h, w = _pair(resolution)
    params = sum(p.numel() for p in model.parameters())
    device = next(iter(model.parameters())).device if params else torch.device("cpu")
    x = torch.zeros(1, in_chans, h, w, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return Cost(params=int(params), flops=int(counter.get_total_flops()) // 2)
