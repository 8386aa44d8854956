"""Elastic (dynamic) layers for weight-sharing supernets.

An elastic layer holds the weights of its largest configuration and runs any smaller one by
slicing them, as in Once-for-All (Cai et al., "Once-for-All: Train One Network and Specialize
it for Efficient Deployment", ICLR 2020; ``elastic_nn/modules/dynamic_op.py``) and BigNAS (Yu
et al., "BigNAS: Scaling Up Neural Architecture Search with Big Single-Stage Models", ECCV
2020). The slicing rules, shared by every supernet of the toolkit:

* **channels**: the first ``k`` channels (output filters and input channels alike), so a
  narrower layer is a prefix of a wider one and the important filters migrate to the front.
  Channels that feed or leave a conv with a *fixed number of groups* ``G`` are instead taken
  as the first ``k / G`` channels of each of the ``G`` equal groups of the max layer
  (:func:`channel_index` with ``split=G``), so every weight keeps connecting the same pair of
  channels whatever the width -- narrowing slices within each group, the groups stay;
* **kernel**: the centre ``k x k`` crop of the largest kernel, used as is, as BigNAS does (Once-for-All
  additionally passes the crop through learned kernel-transformation matrices);
* **input channels** are read from the input tensor, so only the output side of a layer is
  configured (:meth:`DynamicConv2d.set_active`); batch norm and linear layers need no
  configuration at all.

Every layer copies its active slice into a static ``nn.Conv2d`` / ``nn.BatchNorm2d`` /
``nn.Linear`` of the matching shape (``copy_to``), which is how a supernet's ``extract``
fills the stand-alone network that ``space.build(arch)`` makes: the static module's shape
says which slice to take, so the outputs agree exactly (:func:`copy_into`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["DynamicBatchNorm2d", "DynamicConv2d", "DynamicLinear", "centre_crop", "channel_index", "copy_into"]

Selection = slice | torch.Tensor


def centre_crop(max_kernel: int, kernel: int) -> slice:
    """The index range of the centre ``kernel`` taps of a ``max_kernel`` kernel (odd sizes)."""
    if kernel > max_kernel or kernel % 2 == 0 or max_kernel % 2 == 0:
        raise ValueError(f"kernel {kernel} is not an odd size at most {max_kernel}")
    start = (max_kernel - kernel) // 2
    return slice(start, start + kernel)


def channel_index(max_channels: int, channels: int, split: int = 1, device: torch.device | None = None) -> Selection:
    """Which of ``max_channels`` channels a ``channels``-wide layer uses.

    ``split == 1``: the first ``channels`` (a slice, so tensors are sliced as views). Otherwise
    the max channels form ``split`` equal consecutive groups and the first ``channels / split``
    of each are used, in order (an index tensor).
    """
    if not 0 < channels <= max_channels:
        raise ValueError(f"{channels} channels do not fit in {max_channels}")
    if split == 1 or channels == max_channels:
        return slice(0, channels)
    if max_channels % split or channels % split:
        raise ValueError(f"{channels} of {max_channels} channels cannot be split in {split} equal groups")
    per_max, per = max_channels // split, channels // split
    return (torch.arange(split, device=device)[:, None] * per_max + torch.arange(per, device=device)).flatten()


def _take(t: torch.Tensor, sel: Selection, dim: int = 0) -> torch.Tensor:
    """``t`` restricted to ``sel`` along ``dim``: a view for slices, a copy for index tensors."""
    if isinstance(sel, slice):
        return t if sel.stop == t.shape[dim] else t.narrow(dim, 0, sel.stop)
    return t.index_select(dim, sel.to(t.device))


class DynamicConv2d(nn.Module):
    """A ``Conv2d`` with elastic output channels and kernel size; input channels follow the input.

    ``groups`` is a fixed number of groups (it does not change with the width): the sub-layer
    ``cin -> cout`` has ``groups`` groups, uses the first ``cout / groups`` filters of each max
    group and, per filter, the first ``cin / groups`` taps (OFA's ``DynamicGroupConv2d`` with a
    constant group count, slicing within each group). ``depthwise=True`` makes a depthwise conv
    (OFA's ``DynamicSeparableConv2d``): one group per channel, output channels = input channels.

    ``in_split`` / ``out_split`` say how the input / output channels are laid out when a
    neighbouring layer is grouped (see :func:`channel_index`); they default to ``groups`` for a
    grouped conv and to 1 (first channels) otherwise. A depthwise conv's outputs are laid out
    like its inputs. Padding is "same" (``dilation * (k - 1) // 2``) for every kernel.
    """

    def __init__(self, max_in: int, max_out: int, max_kernel: int, stride: int = 1, groups: int = 1,
                 depthwise: bool = False, dilation: int = 1, bias: bool = False,
                 in_split: int | None = None, out_split: int | None = None):
        super().__init__()
        if depthwise and max_in != max_out:
            raise ValueError(f"a depthwise conv needs max_in == max_out, got {max_in} and {max_out}")
        if not depthwise and (max_in % groups or max_out % groups):
            raise ValueError(f"channels {max_in}->{max_out} are not divisible by groups={groups}")
        self.max_in, self.max_out, self.max_kernel = max_in, max_out, max_kernel
        self.stride, self.dilation, self.groups, self.depthwise = stride, dilation, groups, depthwise
        self.in_split = in_split or groups
        self.out_split = self.in_split if depthwise else (out_split or groups)
        if groups > 1 and not depthwise and self.in_split != groups:
            raise ValueError(f"a conv with {groups} groups reads its input per group (in_split={groups})")
        per_group_in = 1 if depthwise else max_in // groups
        self.weight = nn.Parameter(torch.empty(max_out, per_group_in, max_kernel, max_kernel))
        self.bias = nn.Parameter(torch.empty(max_out)) if bias else None
        self.reset_parameters()
        self.active_out = max_out
        self.active_kernel = max_kernel

    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s initialisation on the max-size weight."""
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / fan_in**0.5
            nn.init.uniform_(self.bias, -bound, bound)

    def set_active(self, out_channels: int | None = None, kernel: int | None = None) -> None:
        """Configure the next forward passes (``None`` keeps the current value).

        Depthwise convs ignore ``out_channels``: they output as many channels as they receive.
        """
        if out_channels is not None:
            if not 0 < out_channels <= self.max_out or out_channels % self.out_split:
                raise ValueError(f"out_channels={out_channels} invalid for max {self.max_out} in {self.out_split} groups")
            self.active_out = out_channels
        if kernel is not None:
            centre_crop(self.max_kernel, kernel)  # validates
            self.active_kernel = kernel

    def _rows(self, in_channels: int, out_channels: int) -> Selection:
        if self.depthwise:
            return channel_index(self.max_in, in_channels, self.in_split)
        return channel_index(self.max_out, out_channels, self.out_split)

    def active_weight(self, in_channels: int, out_channels: int, kernel: int) -> torch.Tensor:
        """The weight slice of the sub-layer ``in_channels -> out_channels``, ``kernel x kernel``."""
        if in_channels > self.max_in or (not self.depthwise and out_channels > self.max_out):
            raise ValueError(f"sub-layer {in_channels}->{out_channels} exceeds the max {self.max_in}->{self.max_out}")
        w = _take(self.weight, self._rows(in_channels, out_channels))
        if not self.depthwise:
            if in_channels % self.groups:
                raise ValueError(f"{in_channels} input channels are not divisible by groups={self.groups}")
            per_group = in_channels // self.groups
            cols = slice(0, per_group) if self.groups > 1 else channel_index(self.max_in, in_channels, self.in_split)
            w = _take(w, cols, dim=1)
        if kernel != self.max_kernel:
            k = centre_crop(self.max_kernel, kernel)
            w = w[:, :, k, k]
        return w

    def active_bias(self, in_channels: int, out_channels: int) -> torch.Tensor | None:
        return None if self.bias is None else _take(self.bias, self._rows(in_channels, out_channels))

    def _active_groups(self, in_channels: int) -> int:
        return in_channels if self.depthwise else self.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin = x.shape[1]
        w = self.active_weight(cin, self.active_out, self.active_kernel)
        pad = self.dilation * (self.active_kernel - 1) // 2
        return F.conv2d(x, w, self.active_bias(cin, self.active_out), self.stride, pad, self.dilation, self._active_groups(cin))

    @torch.no_grad()
    def copy_to(self, conv: nn.Conv2d) -> nn.Conv2d:
        """Copy the slice matching ``conv``'s shape into ``conv`` (its groups, stride must agree)."""
        k = conv.kernel_size[0]
        expected = (self._active_groups(conv.in_channels), (self.stride, self.stride), (self.dilation, self.dilation))
        if (conv.groups, conv.stride, conv.dilation) != expected or conv.kernel_size != (k, k):
            raise ValueError(f"{conv} does not match this elastic conv (groups, stride, dilation {expected})")
        if (conv.bias is None) != (self.bias is None):
            raise ValueError(f"{conv} and this elastic conv disagree on having a bias")
        conv.weight.copy_(self.active_weight(conv.in_channels, conv.out_channels, k))
        if conv.bias is not None:
            conv.bias.copy_(self.active_bias(conv.in_channels, conv.out_channels))
        return conv

    def extra_repr(self) -> str:
        kind = "depthwise" if self.depthwise else f"groups={self.groups}"
        return (f"max {self.max_in}->{self.max_out}, max_kernel={self.max_kernel}, stride={self.stride}, {kind}, "
                f"active out={self.active_out} kernel={self.active_kernel}")


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` over ``C`` channels of its max-size state, ``C`` from the input.

    The channels are the first ``C`` (or, with ``split > 1``, the first ``C / split`` of each of
    ``split`` groups: :func:`channel_index`). Weight, bias and running statistics are sliced,
    and the running statistics of the active channels are updated in place. Momentum
    (including ``momentum=None``, cumulative averaging over ``num_batches_tracked``) behaves
    exactly as in ``nn.BatchNorm2d``: it is one, so :func:`nasrobust.supernet.recalibrate_bn`
    finds it and re-computes a subnet's statistics (OFA's ``DynamicBatchNorm2d``; BigNAS
    re-calibrates the statistics of each child after training).
    """

    def __init__(self, num_features: int, *args, split: int = 1, **kwargs):
        super().__init__(num_features, *args, **kwargs)
        if num_features % split:
            raise ValueError(f"{num_features} channels cannot be split in {split} equal groups")
        self.split = split

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        sel = channel_index(self.num_features, x.shape[1], self.split, x.device)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or self.running_mean is None
        track = (not self.training or self.track_running_stats) and self.running_mean is not None
        mean = _take(self.running_mean, sel) if track else None
        var = _take(self.running_var, sel) if track else None
        weight = None if self.weight is None else _take(self.weight, sel)
        bias = None if self.bias is None else _take(self.bias, sel)
        out = F.batch_norm(x, mean, var, weight, bias, use_batch_stats, factor, self.eps)
        if track and self.training and not isinstance(sel, slice):  # index copies: write the update back
            with torch.no_grad():
                self.running_mean.index_copy_(0, sel, mean)
                self.running_var.index_copy_(0, sel, var)
        return out

    @torch.no_grad()
    def copy_to(self, bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
        """Copy affine parameters, running statistics and the batch counter of ``bn``'s channels."""
        sel = channel_index(self.num_features, bn.num_features, self.split)
        for name in ("weight", "bias", "running_mean", "running_var"):
            src, dst = getattr(self, name), getattr(bn, name)
            if (src is None) != (dst is None):
                raise ValueError(f"{bn} and this elastic batch norm disagree on {name}")
            if dst is not None:
                dst.copy_(_take(src, sel))
        if bn.num_batches_tracked is not None and self.num_batches_tracked is not None:
            bn.num_batches_tracked.copy_(self.num_batches_tracked)
        bn.eps, bn.momentum = self.eps, self.momentum
        return bn


class DynamicLinear(nn.Linear):
    """A ``Linear`` layer over the first ``F`` of its max input features, ``F`` from the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.shape[-1]
        if f > self.in_features:
            raise ValueError(f"{f} features exceed this elastic linear layer's {self.in_features}")
        return F.linear(x, _take(self.weight, slice(0, f), dim=1), self.bias)

    @torch.no_grad()
    def copy_to(self, linear: nn.Linear) -> nn.Linear:
        """Copy the columns of ``linear``'s input features (and the bias) into ``linear``."""
        if linear.out_features != self.out_features or linear.in_features > self.in_features:
            raise ValueError(f"{linear} does not fit this elastic linear layer (max {self.in_features}->{self.out_features})")
        if (linear.bias is None) != (self.bias is None):
            raise ValueError(f"{linear} and this elastic linear layer disagree on having a bias")
        linear.weight.copy_(self.weight[:, : linear.in_features])
        if linear.bias is not None:
            linear.bias.copy_(self.bias)
        return linear


def _has_own_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


@torch.no_grad()
def copy_into(source: nn.Module, target: nn.Module) -> int:
    """Fill ``target`` (a stand-alone network) from the same-named layers of ``source``.

    Every module of ``target`` that owns parameters or buffers must have a counterpart of the
    same qualified name in ``source``: an elastic layer (``copy_to`` copies the slice matching
    the static module's shape) or a fixed layer of the same type and shapes (its state is
    copied). Returns the number of layers copied.
    """
    mine = dict(source.named_modules())
    copied = 0
    for name, module in target.named_modules():
        if not _has_own_state(module):
            continue
        src = mine.get(name)
        if hasattr(src, "copy_to"):
            src.copy_to(module)
        elif type(src) is type(module):  # a fixed (non-elastic) layer: same shapes
            module.load_state_dict(src.state_dict())
        else:
            raise RuntimeError(f"the supernet has no layer named {name!r} to copy into {type(module).__name__}")
        copied += 1
    return copied


def configure_stages(stages: nn.ModuleList, stage_specs) -> tuple[int, ...]:
    """Give each stage's first blocks their specs; returns the active depth of every stage."""
    for blocks, specs in zip(stages, stage_specs):
        for block, spec in zip(blocks, specs):
            block.configure(spec)
    return tuple(len(specs) for specs in stage_specs)


def run_stages(x: torch.Tensor, stages: nn.ModuleList, depths: tuple[int, ...]) -> torch.Tensor:
    """Forward through the first ``depths[i]`` blocks of each stage (elastic depth)."""
    for blocks, depth in zip(stages, depths):
        for j in range(depth):
            x = blocks[j](x)
    return x
