"""One-shot machinery for cell spaces: mixed ops, single-path / differentiable modes, weight copy.

A one-shot cell supernet puts every candidate op on every edge (Bender et al., "Understanding
and Simplifying One-Shot Architecture Search", ICML 2018). It runs in one of two modes:

* **single** -- one op per edge, chosen by an :class:`~nasrobust.space.Arch` with
  ``set_active(arch)`` (single-path one-shot, Guo et al., "Single Path One-Shot Neural
  Architecture Search with Uniform Sampling", ECCV 2020; what sandwich training uses). Only the
  active ops run, so only they get gradients, and the network computes exactly what
  ``space.build(arch)`` computes with the same weights (``extract``).
* **soft** -- every edge outputs ``sum_o softmax(alpha)_o * op(x)`` (DARTS, Liu, Simonyan &
  Yang, "DARTS: Differentiable Architecture Search", ICLR 2019, eq. 2). The architecture
  parameters ``alpha`` get gradients alongside every op's weights. With
  ``partial_channels=K > 1`` an edge mixes only the first ``1/K`` of the channels and passes the
  rest through, followed by a channel shuffle (PC-DARTS, Xu et al., "PC-DARTS: Partial Channel
  Connections for Memory-Efficient Architecture Search", ICLR 2020, eq. 2), which cuts the
  memory of the mixed ops by about ``K``.

The two modes share the op weights on purpose (that is weight sharing); they never share the
architecture parameters: ``arch_parameters()`` (alphas, PC-DARTS betas) and
``weight_parameters()`` (everything else) are disjoint, and the architecture parameters have
``requires_grad=False`` outside soft mode, so optimisers and gradient all-reduces that look at
``requires_grad`` (the trainer's) never touch them during single-path training. A PC-DARTS
supernet holds ops of ``C / K`` channels, which no stand-alone network has, so it runs in soft
mode only (``set_active`` and ``extract`` raise).

:func:`copy_weights` fills a stand-alone op from a supernet op of the same layout, including
DARTS' ``affine=False`` batch norm (identity scale and shift) and NAS-Bench-201's conv bias in
front of it (folded into the BN running mean), so extraction is exact in both settings.
"""

from __future__ import annotations

import abc
import enum
import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from nasrobust.errors import NasRobustError
from nasrobust.space import Arch, SearchSpace
from nasrobust.supernet import Supernet

log = logging.getLogger(__name__)

__all__ = ["MixedOp", "Mode", "OneShotSupernet", "channel_shuffle", "check_partial_channels", "copy_weights"]

#: DARTS and PC-DARTS initialise every architecture parameter as ``1e-3 * N(0, 1)``.
ALPHA_INIT_STD = 1e-3


class Mode(str, enum.Enum):
    """How a one-shot supernet computes an edge: one active op, or the softmax-weighted sum of all."""

    SINGLE = "single"
    SOFT = "soft"


def parse_mode(mode: "str | Mode") -> Mode:
    try:
        return Mode(mode)
    except ValueError:
        raise NasRobustError(f"unknown supernet mode {mode!r}; valid: {', '.join(m.value for m in Mode)}") from None


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle (Zhang et al., CVPR 2018), as PC-DARTS applies it after each edge.

    Channel ``g * (C / groups) + i`` moves to ``i * groups + g``: the mixed and the bypassed
    channels interleave, so the next edge samples a different subset.
    """
    n, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"channel_shuffle: {c} channels are not divisible into {groups} groups")
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def check_partial_channels(partial_channels: Any, widths: Sequence[int], space: str) -> int:
    """Validate PC-DARTS' ``K`` against every width that carries mixed ops."""
    if isinstance(partial_channels, bool) or not isinstance(partial_channels, int) or partial_channels < 1:
        raise NasRobustError(f"{space} supernet: partial_channels must be a positive integer (PC-DARTS uses 4), got {partial_channels!r}")
    bad = [c for c in widths if c % partial_channels]
    if bad:
        raise NasRobustError(
            f"{space} supernet: partial_channels={partial_channels} does not divide the cell widths {sorted(set(bad))}; "
            f"pick channels divisible by {partial_channels}"
        )
    return partial_channels


class MixedOp(nn.Module):
    """Every candidate op of one edge, in the space's op order.

    ``soft_post`` maps op positions to modules applied after that op in soft mode only: DARTS
    and PC-DARTS put an ``affine=False`` BN after the parameter-free pooling ops of the search
    network so that their scale is comparable with the conv ops' (``model_search.py``). Single
    mode never applies it, as the stand-alone network has no such BN.
    """

    def __init__(
        self,
        ops: Sequence[nn.Module],
        *,
        stride: int = 1,
        partial_channels: int = 1,
        soft_post: Mapping[int, nn.Module] | None = None,
    ):
        super().__init__()
        self.ops = nn.ModuleList(ops)
        self.soft_post = nn.ModuleDict({str(i): m for i, m in (soft_post or {}).items()})
        self.stride = stride
        self.partial_channels = partial_channels

    def single(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """The output of op ``index`` alone (single-path mode)."""
        return self.ops[index](x)

    def soft(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``sum_o weights[o] * op_o(x)``; with ``K = partial_channels > 1``, PC-DARTS' partial edge.

        PC-DARTS mixes the first ``C / K`` channels, passes the others through (2x2 max-pooled on a
        stride-2 edge, ``ceil_mode`` so odd sizes match the ops' ``ceil(H / 2)``; equal to
        PC-DARTS' floor pooling on even sizes), concatenates and shuffles the channels.
        """
        k = self.partial_channels
        part = x if k == 1 else x[:, : x.shape[1] // k]
        mixed = sum(w * self._soft_op(i, part) for i, w in enumerate(weights))
        if k == 1:
            return mixed
        rest = x[:, x.shape[1] // k :]
        if self.stride > 1:
            rest = F.max_pool2d(rest, self.stride, self.stride, ceil_mode=True)
        return channel_shuffle(torch.cat([mixed, rest], dim=1), k)

    def _soft_op(self, i: int, x: torch.Tensor) -> torch.Tensor:
        y = self.ops[i](x)
        key = str(i)
        return self.soft_post[key](y) if key in self.soft_post else y

    def extra_repr(self) -> str:
        return f"stride={self.stride}, partial_channels={self.partial_channels}"


# --------------------------------------------------------------------------- weight copy
def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    """Copy ``src``'s parameters and BN statistics into ``dst``, a module of the same layout.

    Both must list the same module types in ``modules()`` order. Two differences are converted
    exactly, so that ``dst`` computes what ``src`` computes in train and eval mode alike:

    * a BN without affine parameters (DARTS' search setting) becomes weight 1, bias 0;
    * conv biases that ``dst`` lacks (NAS-Bench-201's ``affine=False`` convs have one) are folded
      into the next BN's running mean: BN subtracts the batch mean in training, which removes a
      constant bias, and in evaluation ``(conv(x) + b - m) = (conv(x) - (m - b))``. The biases of
      the convs before one BN are concatenated in module order (FactorizedReduce's two halves);
      any other placement raises.
    """
    src_mods, dst_mods = list(src.modules()), list(dst.modules())
    if [type(m) for m in src_mods] != [type(m) for m in dst_mods]:
        raise ValueError(f"cannot copy {type(src).__name__} into {type(dst).__name__}: the module layouts differ")
    pending: list[torch.Tensor] = []
    with torch.no_grad():
        for s, d in zip(src_mods, dst_mods):
            if isinstance(s, nn.modules.batchnorm._BatchNorm):
                _copy_bn(s, d, pending)
                pending = []
            else:
                pending.extend(_copy_plain(s, d))
    if pending:
        raise ValueError(f"{type(src).__name__}: a conv bias has no following batch norm to fold into")


def _copy_plain(s: nn.Module, d: nn.Module) -> list[torch.Tensor]:
    """Copy a module's own tensors; return the conv bias ``d`` lacks (to fold into the next BN)."""
    src_state = dict(s.named_parameters(recurse=False)) | dict(s.named_buffers(recurse=False))
    dst_state = dict(d.named_parameters(recurse=False)) | dict(d.named_buffers(recurse=False))
    for name, t in dst_state.items():
        if src_state.get(name) is None or src_state[name].shape != t.shape:
            raise ValueError(f"{type(d).__name__}.{name}: the source has no tensor of shape {tuple(t.shape)}")
        t.copy_(src_state[name])
    extra = [name for name, t in src_state.items() if t is not None and name not in dst_state]
    if not extra:
        return []
    if isinstance(s, nn.Conv2d) and extra == ["bias"]:
        return [s.bias]
    raise ValueError(f"{type(s).__name__} has tensors {extra} that the target lacks")


def _copy_bn(s: nn.modules.batchnorm._BatchNorm, d: nn.modules.batchnorm._BatchNorm, biases: list[torch.Tensor]) -> None:
    if s.num_features != d.num_features or s.eps != d.eps:
        raise ValueError(f"batch norms differ: {s} vs {d}")
    if s.running_mean is None or d.running_mean is None:
        raise ValueError("batch norms must track running statistics to be copied")
    shift = torch.cat(biases) if biases else torch.zeros_like(s.running_mean)
    if shift.shape != s.running_mean.shape:
        raise ValueError(f"cannot fold conv biases of {shift.numel()} channels into a BN of {s.num_features}")
    d.running_mean.copy_(s.running_mean - shift)
    d.running_var.copy_(s.running_var)
    d.num_batches_tracked.copy_(s.num_batches_tracked)
    if d.affine and s.affine:
        d.weight.copy_(s.weight)
        d.bias.copy_(s.bias)
    elif d.affine:
        d.weight.fill_(1.0)
        d.bias.zero_()
    elif s.affine:
        raise ValueError("cannot copy an affine batch norm into one without affine parameters")


# --------------------------------------------------------------------------- the supernet base
class OneShotSupernet(Supernet):
    """A cell supernet with a single-path and a differentiable (soft) mode.

    Subclasses build the network, give the shapes of their architecture parameters
    (``alpha_shapes``), and implement :meth:`_forward_single`, :meth:`_forward_soft`,
    :meth:`derive` and the :class:`~nasrobust.supernet.Supernet` hooks. The architecture
    parameters live in ``self.arch_params`` (saved in ``state_dict``, moved by ``.to``).
    """

    _FORWARD: ClassVar[dict[Mode, str]] = {Mode.SINGLE: "_forward_single", Mode.SOFT: "_forward_soft"}

    def __init__(
        self,
        space: SearchSpace,
        num_classes: int,
        config: dict[str, Any],
        alpha_shapes: Mapping[str, tuple[int, ...]],
        partial_channels: int = 1,
        alpha_seed: int = 0,
    ):
        super().__init__(space, num_classes, config)
        self.partial_channels = partial_channels
        self.arch_params = nn.ParameterDict({name: nn.Parameter(torch.zeros(shape)) for name, shape in alpha_shapes.items()})
        self.reset_alphas(torch.Generator().manual_seed(int(alpha_seed)))
        self._mode = Mode.SINGLE
        self._alphas_trainable(False)

    # ------------------------------------------------------------------ modes
    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: "str | Mode") -> None:
        """``"soft"``: DARTS' weighted sum on every edge; ``"single"``: the active architecture only.

        Soft mode makes the architecture parameters trainable; single mode freezes them and
        needs an active architecture (``set_active`` switches to single mode itself).
        """
        mode = parse_mode(mode)
        if mode is Mode.SINGLE:
            self._require_full_channels("single-path mode")
            if self._active is None:
                raise NasRobustError("single-path mode needs an architecture: call set_active(arch)")
        self._mode = mode
        self._alphas_trainable(mode is Mode.SOFT)
        log.debug("%s supernet: %s mode", self.space.name, mode.value)

    def set_active(self, arch: Arch) -> None:
        """Run ``arch`` alone (single-path mode)."""
        self._require_full_channels("set_active")
        super().set_active(arch)
        self._mode = Mode.SINGLE
        self._alphas_trainable(False)

    def extract(self, arch: Arch | None = None) -> nn.Module:
        self._require_full_channels("extract")
        return super().extract(arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._mode is Mode.SINGLE and self._active is None:
            raise NasRobustError("no active architecture: call set_active(arch), or set_mode('soft')")
        return getattr(self, self._FORWARD[self._mode])(x)

    @abc.abstractmethod
    def _forward_single(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the active architecture."""

    @abc.abstractmethod
    def _forward_soft(self, x: torch.Tensor) -> torch.Tensor:
        """Logits with every edge a softmax(alpha)-weighted mixture."""

    @abc.abstractmethod
    def derive(self) -> Arch:
        """The discrete architecture the architecture parameters select (canonical)."""

    # ------------------------------------------------------------------ parameters
    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture parameters (alphas, and PC-DARTS' edge betas), for the arch optimiser."""
        return list(self.arch_params.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every other parameter (op weights, stem, classifier), for the weight optimiser."""
        arch = {id(p) for p in self.arch_params.values()}
        return [p for p in self.parameters() if id(p) not in arch]

    def arch_weights(self) -> dict[str, torch.Tensor]:
        """The softmax of every architecture parameter over its last axis (detached), for logging."""
        return {name: F.softmax(p.detach(), dim=-1) for name, p in self.arch_params.items()}

    @torch.no_grad()
    def reset_alphas(self, generator: torch.Generator, std: float = ALPHA_INIT_STD) -> None:
        """DARTS' initialisation: every architecture parameter ``std * N(0, 1)``, drawn with ``generator``."""
        for p in self.arch_params.values():
            p.copy_(std * torch.randn(p.shape, generator=generator).to(p.device))

    def _alphas_trainable(self, on: bool) -> None:
        for p in self.arch_params.values():
            p.requires_grad_(on)

    def _require_full_channels(self, what: str) -> None:
        if self.partial_channels > 1:
            raise NasRobustError(
                f"{what} is not available on a PC-DARTS supernet (partial_channels={self.partial_channels}): its ops hold "
                f"1/{self.partial_channels} of the channels, which no stand-alone network has. Use it in soft mode and "
                f"derive(); build the supernet with partial_channels=1 for single-path training and extraction"
            )
