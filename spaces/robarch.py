"""``robarch``: a ResNet-style macro space over the factors RobArch studied.

Peng et al. 2023, "RobArch: Designing Robust Architectures against Adversarial Attacks"
(arXiv:2301.03110, code github.com/ShengYun-Peng/RobArch). The paper fixes a parameter
budget and varies one architecture component at a time, starting from ResNet-50, to see
which ones buy adversarial robustness; its configurable network (``robustarch/models/
model.py``) is a RegNet/AnyNet-style model (Radosavovic et al. 2020): a stem, four stages of
bottleneck blocks ``1x1 -> kxk (grouped) [-> SE] -> 1x1`` with a projection shortcut where the
shape changes, and a pooled linear head. This space makes each studied component a choice so
that robustness can be correlated with it across many architectures.

Choice lists (``robarch``; sources in brackets)
-----------------------------------------------
- depth per stage, stage 1..4: ``3..7``, ``4..11``, ``6..18``, ``1..3`` (every integer). The
  ends are ResNet-50's ``3-4-6-3`` and RobArch-M/L's ``7-11-18-1``; RobArch-S is ``5-8-13-1``
  [RobArch ``MODEL.mk``; He et al. 2016]. Elastic in the supernet.
- width per stage (block output channels): stage 1 ``256 288 336 512``, stage 2
  ``512 576 672 1024``, stage 3 ``1024 1120 1328 2016``, stage 4 ``2048 2160 2624 4032``: the
  stage widths of ResNet-50, RobArch-S, -M and -L [``MODEL.mk``]. Elastic in the supernet.
- groups of the kxk conv: ``1 2 4``. ResNet-50 has 1; RobArch-S/M/L set each stage's group
  width to half its bottleneck width, i.e. 2 groups [``MODEL.mk`` ``group_widths``]; 4 halves
  it again (ResNeXt/RegNet-style grouping). The group width is ``bottleneck width / groups``
  (a factor, per stage), as in RobArch's ``groups = w_b // group_width``.
- bottleneck ratio ``w_b / w_out``: ``0.25 0.5 1`` -- RegNet's bottleneck ratios 4, 2, 1
  written as RobArch's ``bottleneck_multipliers`` (0.25 in ResNet-50 and RobArch).
- kernel of the grouped conv: ``3 5 7`` -- 3 in ResNet-50 and RobArch (``kernel: 3``); 5 and
  7 are the larger kernels modern CNNs use (ConvNeXt, Liu et al. 2022).
- SE ratio: ``0 0.0625 0.25`` -- none (ResNet-50); 1/16, SENet's reduction ratio 16 (Hu et
  al. 2018); 1/4, RobArch's ``SE_0_25_RELU``. Both apply, as in RobArch (and RegNetY), to the
  block *input* width: squeeze width ``round(ratio * w_in)``; the SE activation is ReLU.
- activation (after conv1, conv2 and the residual add): ``relu silu gelu psilu pssilu`` --
  ReLU (ResNet-50), SiLU (RobArch ``ACT_SILU_SILU_SILU``), GELU (ViT/ConvNeXt), the parametric PSiLU
  and PSSiLU (Dai et al. 2021) that RobArch's ``utils.py`` defines (1 and 2 learnable
  scalars per activation module). The stem always uses ReLU, as RobArch's ``Stem``.
- stem type: ``conv`` (7x7/2 conv-BN-ReLU, plus a 3x3/2 max-pool when the stem down-samples
  by 4; ResNet) or ``patch`` (a non-overlapping ``p x p`` conv with stride ``p``, p = the stem
  down-sampling; ViT/ConvNeXt patchify) [RobArch ``Stem``: ``stem_patch_size``].
- stem width: ``32 64 96`` -- RegNet's 32, ResNet-50's 64, RobArch's 96 (``STEM_WIDTH_96``).
- stem down-sampling: ``4 2``. 4 is ResNet-50's stem (stage 1 then has stride 1); 2 is
  RobArch's ``MOVE_DOWN_DOWNSAMPLE_1`` (the second halving moves into stage 1's first block).
  The network always down-samples by 32 in total.
- norm placement, a mask of BN after conv1/conv2/conv3 of each block (``0`` = Identity):
  ``111`` (ResNet-50), ``011`` (RobArch's ``NORM_0_BN_BN``, the first BN removed), and the
  other one-BN-removed placements ``101`` and ``110`` [RobArch's per-conv ``norm_layer`` list].
  Convs never carry a bias (as RobArch with Identity norms); shortcut projections keep BN.

``robarch-small`` (28-32 px inputs: 10 classes, 32 px) keeps every list except: widths are
RobArch's divided by 4 and rounded up to a multiple of 16 (so every bottleneck width divides by
every group count): ``64 80 96 128``, ``128 144 176 256``, ``256 288 336 512``,
``512 544 656 1008``; stem widths ``16 32 48``; and no early down-sampling (CIFAR ResNets, He et
al. 2016 §4.2): the stem does not down-sample, so ``conv`` is a 3x3/1 conv-BN-ReLU and ``patch``
a 1x1/1 patchify conv, and stages 2-4 halve the map (32 -> 4).

Resolution is not a choice: :meth:`resolution` is the given ``input_size``.

Module structure (read by the elastic supernet)
------------------------------------------------
``net.stem``: ``conv``, ``bn``, ``act`` [, ``pool``]. ``net.stages[i][j]``: a
:class:`~nasrobust.spaces._robarch_net.Bottleneck` with ``conv1 bn1 act1 conv2 bn2 act2 se
conv3 bn3 shortcut act3`` (``bn*`` are Identity where the norm mask has 0, ``se`` is Identity
without SE, ``shortcut`` is ``Sequential(conv, bn)`` on the first block of a stage when the
shape changes, else Identity). ``net.head``: ``pool``, ``fc``. Only the first block of a stage
strides. Every first block has a projection shortcut whatever the elastic choices (stage-1
widths exceed every stem width; later stages stride), so the supernet's layout is fixed; with a
fixed group count, a narrower width keeps the groups and narrows each of them (slice per group).
:meth:`RobArchSpace.plan` gives every channel count without torch.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from nasrobust.cost import Cost, CostCounter
from nasrobust.errors import SpaceError
from nasrobust.space import Arch, SearchSpace, check_choice, register_space

if TYPE_CHECKING:  # pragma: no cover
    import torch
    import torch.nn as nn

    from nasrobust.supernet import Supernet

NUM_STAGES = 4
ACTIVATIONS = ("relu", "silu", "gelu", "psilu", "pssilu")
#: Learnable scalars per activation module (PSiLU: alpha; PSSiLU: alpha, beta; Dai et al. 2021).
ACTIVATION_PARAMS = {"relu": 0, "silu": 0, "gelu": 0, "psilu": 1, "pssilu": 2}
STEM_TYPES = ("conv", "patch")


@dataclass(frozen=True)
class RobArchGenome:
    """One robarch architecture; ``depths`` and ``widths`` are the elastic (supernet) choices."""

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    groups: int
    bottleneck: float
    kernel: int
    se_ratio: float
    act: str
    stem: str
    stem_width: int
    stem_down: int
    norm: str


@dataclass(frozen=True)
class BlockPlan:
    """Channel counts of one bottleneck block (``se == 0``: no SE)."""

    cin: int
    cout: int
    mid: int
    groups: int
    stride: int
    se: int

    @property
    def projection(self) -> bool:
        return self.cin != self.cout or self.stride != 1


@dataclass(frozen=True)
class NetPlan:
    """Everything :class:`~nasrobust.spaces._robarch_net.RobArchNet` needs, in plain numbers."""

    stem: str
    stem_width: int
    stem_kernel: int
    stem_stride: int
    pool_stride: int  # 0: no max-pool in the stem
    kernel: int
    act: str
    norm: tuple[bool, bool, bool]
    stages: tuple[tuple[BlockPlan, ...], ...]
    num_classes: int

    @property
    def width(self) -> int:
        """Channels entering the head."""
        return self.stages[-1][-1].cout


def _num(x: float) -> str:
    """0.25 -> '0.25', 1.0 -> '1', 0.0 -> '0' (the canonical text of a ratio)."""
    return format(x, "g")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split("-"))


@register_space("robarch")
class RobArchSpace(SearchSpace):
    """RobArch (Peng et al. 2023) macro space: depth/width per stage, block and stem design."""

    name = "robarch"
    description = "RobArch ResNet-style macro space: depth/width/groups/bottleneck/kernel/SE/act/stem/norm (ImageNet)"
    num_classes = 1000
    input_size = 224
    small_variant = "robarch-small"

    DEPTHS: tuple[tuple[int, ...], ...] = (
        tuple(range(3, 8)),
        tuple(range(4, 12)),
        tuple(range(6, 19)),
        tuple(range(1, 4)),
    )
    WIDTHS: tuple[tuple[int, ...], ...] = (
        (256, 288, 336, 512),
        (512, 576, 672, 1024),
        (1024, 1120, 1328, 2016),
        (2048, 2160, 2624, 4032),
    )
    GROUPS: tuple[int, ...] = (1, 2, 4)
    BOTTLENECKS: tuple[float, ...] = (0.25, 0.5, 1.0)
    KERNELS: tuple[int, ...] = (3, 5, 7)
    SE_RATIOS: tuple[float, ...] = (0.0, 0.0625, 0.25)
    ACTS: tuple[str, ...] = ACTIVATIONS
    STEMS: tuple[str, ...] = STEM_TYPES
    STEM_WIDTHS: tuple[int, ...] = (32, 64, 96)
    STEM_DOWNS: tuple[int, ...] = (4, 2)
    NORMS: tuple[str, ...] = ("111", "011", "101", "110")
    #: Down-sampling before stage 2 (stem x stage-1 stride); stages 2-4 each halve the map.
    FIRST_STRIDE = 4
    #: Kernel and stride of the conv stem's conv (ResNet: 7x7/2).
    STEM_CONV_KERNEL = 7
    STEM_CONV_STRIDE = 2

    grammar = (
        "robarch:d<D1>-<D2>-<D3>-<D4>_w<W1>-<W2>-<W3>-<W4>_g<groups>_b<bottleneck ratio>_k<kernel>"
        "_se<SE ratio>_<activation>_<conv|patch><stem width>s<stem down-sampling>_n<BN after conv1,conv2,conv3 as 0/1>"
        "  e.g. robarch:d5-8-13-1_w288-576-1120-2160_g2_b0.25_k3_se0.25_silu_conv96s2_n011 (RobArch-S); "
        "named points: resnet50, robarch-s, robarch-m, robarch-l"
    )

    # ------------------------------------------------------------------ choices
    @cached_property
    def _field_choices(self) -> dict[str, tuple]:
        """Scalar genome fields -> their choice lists (depths/widths are per stage)."""
        return {
            "groups": self.GROUPS,
            "bottleneck": self.BOTTLENECKS,
            "kernel": self.KERNELS,
            "se_ratio": self.SE_RATIOS,
            "act": self.ACTS,
            "stem": self.STEMS,
            "stem_width": self.STEM_WIDTHS,
            "stem_down": self.STEM_DOWNS,
            "norm": self.NORMS,
        }

    def size(self) -> int:
        lists = [*self.DEPTHS, *self.WIDTHS, *self._field_choices.values()]
        return math.prod(len(c) for c in lists)

    def enumerate(self) -> Iterator[Arch]:
        """Every architecture once, lazily (last field fastest); ``robarch`` holds ~7.8e9."""
        names = list(self._field_choices)
        for depths, widths, rest in itertools.product(
            itertools.product(*self.DEPTHS),
            itertools.product(*self.WIDTHS),
            itertools.product(*self._field_choices.values()),
        ):
            yield Arch(self.name, RobArchGenome(depths, widths, **dict(zip(names, rest))))

    def random_genome(self, rng: np.random.Generator) -> RobArchGenome:
        pick = lambda choices: choices[int(rng.integers(len(choices)))]  # noqa: E731
        depths = tuple(pick(c) for c in self.DEPTHS)
        widths = tuple(pick(c) for c in self.WIDTHS)
        return RobArchGenome(depths, widths, **{k: pick(c) for k, c in self._field_choices.items()})

    def validate(self, genome: Hashable) -> None:
        if not isinstance(genome, RobArchGenome):
            raise SpaceError(f"a {self.name} genome is a RobArchGenome, not {type(genome).__name__}")
        for what, values, lists in (("depth", genome.depths, self.DEPTHS), ("width", genome.widths, self.WIDTHS)):
            if not isinstance(values, tuple) or len(values) != NUM_STAGES:
                raise SpaceError(f"{what}s = {values!r}: expected a tuple of {NUM_STAGES} stage {what}s")
            for i, (v, choices) in enumerate(zip(values, lists), start=1):
                check_choice(v, choices, f"stage-{i} {what}")
        for name, choices in self._field_choices.items():
            check_choice(getattr(genome, name), choices, name)

    def canonical(self, genome: RobArchGenome) -> RobArchGenome:
        """Plain ints and floats (a genome built with ``2.0`` groups or numpy ints encodes the same)."""
        g = genome
        return RobArchGenome(
            tuple(int(d) for d in g.depths), tuple(int(w) for w in g.widths), int(g.groups), float(g.bottleneck),
            int(g.kernel), float(g.se_ratio), str(g.act), str(g.stem), int(g.stem_width), int(g.stem_down), str(g.norm),
        )

    # ------------------------------------------------------------------ encodings
    def encode_genome(self, genome: RobArchGenome) -> str:
        g = genome
        return "_".join(
            (
                "d" + "-".join(map(str, g.depths)),
                "w" + "-".join(map(str, g.widths)),
                f"g{g.groups}",
                f"b{_num(g.bottleneck)}",
                f"k{g.kernel}",
                f"se{_num(g.se_ratio)}",
                g.act,
                f"{g.stem}{g.stem_width}s{g.stem_down}",
                f"n{g.norm}",
            )
        )

    #: (what, token pattern, genome fields <- converter for each regex group)
    _TOKENS: tuple[tuple[str, str, tuple[tuple[str, Callable[[str], Any]], ...]], ...] = (
        ("stage depths d<D1>-<D2>-<D3>-<D4>", r"d(\d+(?:-\d+)*)", (("depths", _ints),)),
        ("stage widths w<W1>-<W2>-<W3>-<W4>", r"w(\d+(?:-\d+)*)", (("widths", _ints),)),
        ("groups g<n>", r"g(\d+)", (("groups", int),)),
        ("bottleneck ratio b<r>", r"b(\d+(?:\.\d+)?)", (("bottleneck", float),)),
        ("kernel k<k>", r"k(\d+)", (("kernel", int),)),
        ("SE ratio se<r>", r"se(\d+(?:\.\d+)?)", (("se_ratio", float),)),
        ("activation", r"([a-z]+)", (("act", str),)),
        (
            "stem <conv|patch><width>s<down-sampling>",
            r"([a-z]+)(\d+)s(\d+)",
            (("stem", str), ("stem_width", int), ("stem_down", int)),
        ),
        ("norm mask n<3 x 0|1>", r"n([01]{3})", (("norm", str),)),
    )

    def parse_genome(self, body: str) -> RobArchGenome:
        parts = body.split("_")
        if len(parts) != len(self._TOKENS):
            raise self.encoding_error(body, f"expected {len(self._TOKENS)} '_'-separated parts, got {len(parts)}")
        values: dict[str, Any] = {}
        for i, (part, (what, pattern, outs)) in enumerate(zip(parts, self._TOKENS), start=1):
            m = re.fullmatch(pattern, part)
            if m is None:
                raise self.encoding_error(body, f"part {i} {part!r} should be the {what}")
            for (name, convert), text in zip(outs, m.groups()):
                values[name] = convert(text)
        for what in ("depths", "widths"):
            if len(values[what]) != NUM_STAGES:
                got = values[what]
                text = "-".join(map(str, got))
                raise self.encoding_error(body, f"{what} {text!r}: expected {NUM_STAGES} stages, got {len(got)}")
        return RobArchGenome(**values)

    def named(self) -> Mapping[str, Arch]:
        """ResNet-50 (torchvision's, 25,557,032 params) and RobArch-S/M/L (``MODEL.mk``; 26M/46M/104M)."""
        return self._named

    @cached_property
    def _named(self) -> dict[str, Arch]:
        # MODEL.mk: group width = bottleneck width / 2, SE_0_25_RELU, ACT_SILU_SILU_SILU, STEM_WIDTH_96,
        # MOVE_DOWN_DOWNSAMPLE_1 (stem down-sampling 2), NORM_0_BN_BN
        robarch = dict(groups=2, bottleneck=0.25, kernel=3, se_ratio=0.25, act="silu")
        robarch.update(stem="conv", stem_width=96, stem_down=2, norm="011")
        points = {
            "resnet50": RobArchGenome(
                (3, 4, 6, 3), (256, 512, 1024, 2048), groups=1, bottleneck=0.25, kernel=3, se_ratio=0.0,
                act="relu", stem="conv", stem_width=64, stem_down=4, norm="111",
            ),
            "robarch-s": RobArchGenome((5, 8, 13, 1), (288, 576, 1120, 2160), **robarch),
            "robarch-m": RobArchGenome((7, 11, 18, 1), (336, 672, 1328, 2624), **robarch),
            "robarch-l": RobArchGenome((7, 11, 18, 1), (512, 1024, 2016, 4032), **robarch),
        }
        return {k: self.arch(g) for k, g in points.items()}

    # ------------------------------------------------------------------ elastic helpers
    def largest(self, arch: Arch) -> Arch:
        """``arch`` with the deepest and widest elastic choices in every stage (others kept)."""
        return self._with_elastic(arch, max)

    def smallest(self, arch: Arch) -> Arch:
        """``arch`` with the shallowest and narrowest elastic choices in every stage (others kept)."""
        return self._with_elastic(arch, min)

    def _with_elastic(self, arch: Arch, pick: Callable[[tuple[int, ...]], int]) -> Arch:
        self._check_space(arch)
        depths = tuple(pick(c) for c in self.DEPTHS)
        widths = tuple(pick(c) for c in self.WIDTHS)
        return self.arch(replace(arch.genome, depths=depths, widths=widths))

    # ------------------------------------------------------------------ analysis and search
    def factors(self, arch: Arch) -> dict[str, float]:
        self._check_space(arch)
        g: RobArchGenome = arch.genome
        mids = [_mid(w, g.bottleneck) for w in g.widths]
        out: dict[str, float] = {f"depth_{i}": d for i, d in enumerate(g.depths, start=1)}
        out["depth_total"] = sum(g.depths)
        out.update({f"width_{i}": w for i, w in enumerate(g.widths, start=1)})
        out["width_mean"] = sum(g.widths) / NUM_STAGES
        out["width_max"] = max(g.widths)
        out["groups"] = g.groups
        out["group_width_mean"] = sum(m / g.groups for m in mids) / NUM_STAGES
        out["bottleneck"] = g.bottleneck
        out["kernel"] = g.kernel
        out["se_ratio"] = g.se_ratio
        out.update({f"act_{a}": float(g.act == a) for a in ACTIVATIONS})
        out["stem_patchify"] = float(g.stem == "patch")
        out["stem_width"] = g.stem_width
        out["stem_down"] = g.stem_down
        out.update({f"norm_{i}": float(c == "1") for i, c in enumerate(g.norm, start=1)})
        out["norm_count"] = g.norm.count("1")
        return out

    def neighbors(self, arch: Arch) -> list[Arch]:
        """Every architecture with exactly one choice (one stage's depth or width, or one field) changed."""
        self._check_space(arch)
        g: RobArchGenome = arch.genome
        out: list[Arch] = []
        for attr, lists in (("depths", self.DEPTHS), ("widths", self.WIDTHS)):
            current = getattr(g, attr)
            for i, choices in enumerate(lists):
                for v in choices:
                    if v != current[i]:
                        out.append(self.arch(replace(g, **{attr: current[:i] + (v,) + current[i + 1 :]})))
        for name, choices in self._field_choices.items():
            for v in choices:
                if v != getattr(g, name):
                    out.append(self.arch(replace(g, **{name: v})))
        return out

    # ------------------------------------------------------------------ models and cost
    def plan(self, arch: Arch, num_classes: int | None = None) -> NetPlan:
        """The network's layout in plain numbers (shared by :meth:`build` and :meth:`cost`)."""
        self._check_space(arch)
        g: RobArchGenome = arch.genome
        stage_strides = (self.FIRST_STRIDE // g.stem_down,) + (2,) * (NUM_STAGES - 1)
        stages = []
        cin = g.stem_width
        for depth, width, stride in zip(g.depths, g.widths, stage_strides):
            mid = _mid(width, g.bottleneck)
            first = BlockPlan(cin, width, mid, g.groups, stride, int(round(g.se_ratio * cin)))
            rest = BlockPlan(width, width, mid, g.groups, 1, int(round(g.se_ratio * width)))
            stages.append((first,) + (rest,) * (depth - 1))  # frozen, so the repeats can share one
            cin = width
        if g.stem == "conv":
            stem_kernel, stem_stride = self.STEM_CONV_KERNEL, min(self.STEM_CONV_STRIDE, g.stem_down)
            pool_stride = g.stem_down // stem_stride if g.stem_down > stem_stride else 0
        else:
            stem_kernel, stem_stride, pool_stride = g.stem_down, g.stem_down, 0
        return NetPlan(
            stem=g.stem,
            stem_width=g.stem_width,
            stem_kernel=stem_kernel,
            stem_stride=stem_stride,
            pool_stride=pool_stride,
            kernel=g.kernel,
            act=g.act,
            norm=tuple(c == "1" for c in g.norm),
            stages=tuple(stages),
            num_classes=int(num_classes or self.num_classes),
        )

    def build(
        self,
        arch: Arch,
        num_classes: int | None = None,
        input_size: int | None = None,
        generator: "torch.Generator | None" = None,
    ) -> "nn.Module":
        """A fresh :class:`RobArchNet` (RobArch's ResNet init; ``generator`` makes it reproducible)."""
        from nasrobust.spaces._robarch_net import RobArchNet

        return RobArchNet(self.plan(arch, num_classes), generator=generator)

    def supernet(self, base: "str | Arch | None" = None, num_classes: int | None = None) -> "Supernet":
        """A weight-sharing supernet over the elastic depths and widths, the other factors fixed
        to those of ``base`` (an architecture, its encoding or a named point; default: ResNet-50's)."""
        from nasrobust.spaces._robarch_supernet import RobArchSupernet, default_base

        arch = default_base(self) if base is None else base if isinstance(base, Arch) else self.resolve(base)
        self._check_space(arch)
        return RobArchSupernet(self, int(num_classes or self.num_classes), arch)

    def cost(self, arch: Arch, num_classes: int | None = None, input_size: int | None = None) -> Cost:
        """Params and MACs of :meth:`build`, counted layer by layer in the order it builds them."""
        p = self.plan(arch, num_classes)
        c = CostCounter(self.resolution(arch, input_size))
        stem_padding = None if p.stem == "conv" else 0
        c.conv(3, p.stem_width, p.stem_kernel, p.stem_stride, padding=stem_padding).norm(p.stem_width)
        if p.pool_stride:
            c.pool(3, p.pool_stride, padding=1)
        for stage in p.stages:
            _count_block(c, stage[0], p)
            if len(stage) > 1:  # the other blocks are identical and keep the map size: count one
                rest = _count_block(c.branch(), stage[1], p)
                c.add_params(rest.params * (len(stage) - 1)).add_flops(rest.flops * (len(stage) - 1))
        c.global_pool().linear(p.width, p.num_classes)
        return c.result()


def _count_block(c: CostCounter, b: BlockPlan, p: NetPlan) -> CostCounter:
    """Add one bottleneck block (layers in build order) to ``c``."""
    n1, n2, n3 = p.norm
    shortcut = c.branch() if b.projection else None
    c.conv(b.cin, b.mid, 1)
    if n1:
        c.norm(b.mid)
    c.conv(b.mid, b.mid, p.kernel, b.stride, groups=b.groups)
    if n2:
        c.norm(b.mid)
    if b.se:
        se = c.branch().global_pool().conv(b.mid, b.se, 1, bias=True).conv(b.se, b.mid, 1, bias=True)
        c.add_params(se.params).add_flops(se.flops)
    c.conv(b.mid, b.cout, 1)
    if n3:
        c.norm(b.cout)
    if shortcut is not None:
        shortcut.conv(b.cin, b.cout, 1, b.stride).norm(b.cout)
        c.add_params(shortcut.params).add_flops(shortcut.flops)
    return c.add_params(3 * ACTIVATION_PARAMS[p.act])


def _mid(width: int, ratio: float) -> int:
    """Bottleneck width, ``int(round(w_out * multiplier))`` as RobArch's ``BottleneckTransform``."""
    return int(round(width * ratio))


@register_space("robarch-small")
class RobArchSmallSpace(RobArchSpace):
    """robarch for 28-32 px inputs: no early down-sampling, narrower widths (see module docstring)."""

    name = "robarch-small"
    description = "robarch for 28-32 px inputs (CIFAR/MNIST): no stem down-sampling, widths / 4"
    num_classes = 10
    input_size = 32
    small_variant = None

    WIDTHS = (
        (64, 80, 96, 128),
        (128, 144, 176, 256),
        (256, 288, 336, 512),
        (512, 544, 656, 1008),
    )
    STEM_WIDTHS = (16, 32, 48)
    STEM_DOWNS = (1,)
    FIRST_STRIDE = 1
    STEM_CONV_KERNEL = 3
    STEM_CONV_STRIDE = 1

    grammar = (
        "robarch-small:d<D1>-<D2>-<D3>-<D4>_w<W1>-<W2>-<W3>-<W4>_g<groups>_b<bottleneck ratio>_k<kernel>"
        "_se<SE ratio>_<activation>_<conv|patch><stem width>s1_n<BN after conv1,conv2,conv3 as 0/1>"
        "  e.g. robarch-small:d5-8-13-1_w80-144-288-544_g2_b0.25_k3_se0.25_silu_conv48s1_n011"
    )

    def named(self) -> Mapping[str, Arch]:
        return {}


__all__ = ["RobArchGenome", "RobArchSpace", "RobArchSmallSpace", "BlockPlan", "NetPlan", "ACTIVATIONS"]
