"""Once-for-All's MobileNetV3 search space (``ofa-mbv3``) and its small-input variant.

Cai et al., "Once-for-All: Train One Network and Specialize it for Efficient Deployment",
ICLR 2020; layer definitions read from github.com/mit-han-lab/once-for-all
(``ofa/imagenet_classification/elastic_nn/networks/ofa_mbv3.py``,
``elastic_nn/modules/dynamic_layers.py``, ``ofa/utils/layers.py``,
``ofa/utils/pytorch_modules.py``). The space is the one OFA trains, so analyses here speak
about the networks OFA (and the work built on it) deploys.

Choice lists (one place; the supernet reads them from here):

* kernel size per block: ``KERNELS = (3, 5, 7)``  (OFA ``ks_list``)
* expand ratio per block: ``EXPANDS = (3, 4, 6)``  (OFA ``expand_ratio_list``)
* depth per stage: ``DEPTHS = (2, 3, 4)``  (OFA ``depth_list``; the first ``d`` blocks run)
* resolution: 128, 132, ..., 224 (25 sizes; "128 to 224 with a stride 4", OFA Sec. 3.1)

Fixed skeleton at width multiplier 1.0: ``first_conv`` 3x3/2, 16 channels, h-swish; the first
MBConv block (k3, e1, ReLU, 16 -> 16, residual); five elastic stages of widths
24/40/80/112/160, first-block strides 2/2/2/1/2, activations relu/relu/h-swish/h-swish/h-swish,
squeeze-excitation in stages 2, 4, 5; ``final_expand`` 1x1 conv to 960 (BN, h-swish), global
average pooling, ``feature_mix`` 1x1 conv to 1280 (no BN, no bias, h-swish), dropout 0.1 and
the linear classifier. An MBConv block with input ``c_in`` and expand ratio ``e`` has
``mid = make_divisible(round(c_in * e), 8)`` channels; its SE module has
``make_divisible(mid // 4, 8)`` hidden channels and an h-sigmoid gate, exactly as OFA.

``size()`` counts distinct networks: a stage of depth ``d`` has ``(3*3)**d`` kernel/expand
settings, so the space holds ``(9**2 + 9**3 + 9**4)**5 * 25`` ~ 5.4e20 architectures -- the
paper's "> 10^19 sub-networks" times the 25 resolutions.

``ofa-mbv3-small`` is the same family for 24--32 pixel inputs: the first conv has stride 1
(no early down-sampling), so the final feature map is 2x2 at resolutions 24, 28 and 32.

Encoding body: ``r<res>-<stage>-<stage>-<stage>-<stage>-<stage>``, each stage
``k<kernel digits>e<expand digits>`` with one digit per active block, e.g. the largest network
``r224-k7777e6666-k7777e6666-k7777e6666-k7777e6666-k7777e6666``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from nasrobust.cost import Cost, CostCounter
from nasrobust.errors import SpaceError
from nasrobust.space import Arch, SearchSpace, check_choice, choice_label, register_space

if TYPE_CHECKING:  # pragma: no cover
    import torch
    import torch.nn as nn

    from nasrobust.supernet import Supernet

KERNELS: tuple[int, ...] = (3, 5, 7)
EXPANDS: tuple[int, ...] = (3, 4, 6)
DEPTHS: tuple[int, ...] = (2, 3, 4)
RESOLUTIONS: tuple[int, ...] = tuple(range(128, 225, 4))
SMALL_RESOLUTIONS: tuple[int, ...] = (24, 28, 32)

#: OFA's ``MyNetwork.CHANNEL_DIVISIBLE``.
CHANNEL_DIVISIBLE = 8
#: OFA's ``SEModule.REDUCTION``.
SE_REDUCTION = 4


def make_divisible(v: float, divisor: int = CHANNEL_DIVISIBLE, min_val: int | None = None) -> int:
    """Round ``v`` to a multiple of ``divisor``, never more than 10% down.

    The rule of the TensorFlow MobileNet code that OFA (``ofa/utils/pytorch_modules.py``) and
    timm (``round_channels``) both use; channel counts must match theirs exactly.
    """
    min_val = divisor if min_val is None else min_val
    new_v = max(min_val, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


# ---------------------------------------------------------------------------- genome
@dataclass(frozen=True)
class MBBlock:
    """One active elastic MBConv block: depthwise kernel size and expand ratio."""

    kernel: int
    expand: int


@dataclass(frozen=True)
class OFAGenome:
    """Resolution and, per stage, the active blocks (their count is the stage depth).

    Only active blocks are stored, so two genomes are equal exactly when the networks are.
    """

    resolution: int
    stages: tuple[tuple[MBBlock, ...], ...]

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.stages)

    @property
    def blocks(self) -> tuple[MBBlock, ...]:
        return tuple(b for s in self.stages for b in s)

    @classmethod
    def uniform(cls, resolution: int, depth: int, kernel: int, expand: int, n_stages: int = 5) -> "OFAGenome":
        """Every stage ``depth`` blocks of ``kernel`` x ``expand`` (OFA's ``(D, W, K)`` notation)."""
        stage = (MBBlock(kernel, expand),) * depth
        return cls(resolution, (stage,) * n_stages)


# ---------------------------------------------------------------------------- skeleton and plan
@dataclass(frozen=True)
class StageSpec:
    """One elastic stage: output width, stride of its first block, activation, SE."""

    width: int
    stride: int
    act: str
    se: bool


@dataclass(frozen=True)
class Skeleton:
    """The fixed macro structure around the elastic stages (OFA ``OFAMobileNetV3.__init__``)."""

    stem_width: int = 16
    stem_stride: int = 2
    stem_act: str = "h_swish"
    first_block_act: str = "relu"
    stages: tuple[StageSpec, ...] = (
        StageSpec(24, 2, "relu", False),
        StageSpec(40, 2, "relu", True),
        StageSpec(80, 2, "h_swish", False),
        StageSpec(112, 1, "h_swish", True),
        StageSpec(160, 2, "h_swish", True),
    )
    final_expand: int = 960
    feature_mix: int = 1280
    head_act: str = "h_swish"
    dropout: float = 0.1


@dataclass(frozen=True)
class MBConvPlan:
    """Resolved shapes of one MBConv block as built (``expand == 1``: no inverted bottleneck)."""

    in_ch: int
    mid_ch: int
    out_ch: int
    kernel: int
    stride: int
    expand: int
    act: str
    se_ch: int  # hidden SE channels; 0 = no SE

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_ch == self.out_ch


@dataclass(frozen=True)
class NetPlan:
    """Every layer shape of one network; :meth:`build` and :meth:`cost` both read it."""

    resolution: int
    num_classes: int
    stem_width: int
    stem_stride: int
    stem_act: str
    first_block: MBConvPlan
    stages: tuple[tuple[MBConvPlan, ...], ...]
    final_expand: int
    feature_mix: int
    head_act: str
    dropout: float


def _mbconv(in_ch: int, out_ch: int, kernel: int, stride: int, expand: int, act: str, se: bool) -> MBConvPlan:
    # Elastic blocks: OFA DynamicMBConvLayer.active_middle_channel; the fixed first block
    # (expand 1) uses round(in * 1) = in, which is the same number.
    mid = make_divisible(round(in_ch * expand)) if expand != 1 else in_ch
    se_ch = make_divisible(mid // SE_REDUCTION) if se else 0
    return MBConvPlan(in_ch, mid, out_ch, kernel, stride, expand, act, se_ch)


def _count_mbconv(c: CostCounter, b: MBConvPlan) -> None:
    if b.expand != 1:
        c.conv(b.in_ch, b.mid_ch, 1).norm(b.mid_ch)
    c.conv(b.mid_ch, b.mid_ch, b.kernel, stride=b.stride, groups=b.mid_ch).norm(b.mid_ch)
    if b.se_ch:
        se = c.branch().global_pool().conv(b.mid_ch, b.se_ch, 1, bias=True).conv(b.se_ch, b.mid_ch, 1, bias=True)
        c.add_params(se.params).add_flops(se.flops)
    c.conv(b.mid_ch, b.out_ch, 1).norm(b.out_ch)


def count_plan(plan: NetPlan) -> Cost:
    """Analytic params and MACs of a plan, layer by layer in build order (pure Python)."""
    c = CostCounter(plan.resolution)
    c.conv(3, plan.stem_width, 3, stride=plan.stem_stride).norm(plan.stem_width)
    _count_mbconv(c, plan.first_block)
    for stage in plan.stages:
        for b in stage:
            _count_mbconv(c, b)
    last = plan.stages[-1][-1].out_ch
    c.conv(last, plan.final_expand, 1).norm(plan.final_expand)
    c.global_pool().conv(plan.final_expand, plan.feature_mix, 1)
    c.linear(plan.feature_mix, plan.num_classes)
    return c.result()


# ---------------------------------------------------------------------------- the space
_STAGE_RE = re.compile(r"k(\d+)e(\d+)")


@register_space("ofa-mbv3")
class OFAMobileNetV3Space(SearchSpace):
    """Once-for-All MobileNetV3: elastic kernel, expand, depth and resolution (Cai et al. 2020)."""

    name = "ofa-mbv3"
    description = "Once-for-All MobileNetV3 (k3/5/7, e3/4/6, d2/3/4 x 5 stages, res 128-224)"
    num_classes = 1000
    input_size = 224
    small_variant = "ofa-mbv3-small"
    elastic_resolution = True

    kernels: tuple[int, ...] = KERNELS
    expands: tuple[int, ...] = EXPANDS
    depths: tuple[int, ...] = DEPTHS
    resolutions: tuple[int, ...] = RESOLUTIONS
    skeleton: Skeleton = Skeleton()

    grammar = (
        "r<res>-<stage>-<stage>-<stage>-<stage>-<stage>; <stage> = k<kernels>e<expands> with one "
        "digit per active block (depth 2-4), kernels in {3,5,7}, expands in {3,4,6}, res in "
        "128..224 step 4; e.g. r224-k7777e6666-k33e44-k555e666-k35e63-k7777e3333"
    )

    @property
    def n_stages(self) -> int:
        return len(self.skeleton.stages)

    # ------------------------------------------------------------------ genome hooks
    def encode_genome(self, genome: Hashable) -> str:
        g: OFAGenome = genome  # type: ignore[assignment]
        stages = (
            "k" + "".join(str(b.kernel) for b in s) + "e" + "".join(str(b.expand) for b in s) for s in g.stages
        )
        return "-".join([f"r{g.resolution}", *stages])

    def parse_genome(self, body: str) -> OFAGenome:
        parts = body.split("-")
        if len(parts) != 1 + self.n_stages:
            raise self.encoding_error(
                body, f"expected a resolution and {self.n_stages} stages separated by '-', got {len(parts)} parts"
            )
        head, *stage_texts = parts
        if not re.fullmatch(r"r\d+", head):
            raise self.encoding_error(body, f"first part {head!r} is not a resolution like 'r224'")
        stages = []
        for i, text in enumerate(stage_texts, 1):
            m = _STAGE_RE.fullmatch(text)
            if not m:
                raise self.encoding_error(body, f"stage {i} {text!r} is not 'k<kernel digits>e<expand digits>'")
            ks, es = m.groups()
            if len(ks) != len(es):
                raise self.encoding_error(
                    body, f"stage {i} {text!r} has {len(ks)} kernel sizes but {len(es)} expand ratios"
                )
            stages.append(tuple(MBBlock(int(k), int(e)) for k, e in zip(ks, es)))
        return OFAGenome(int(head[1:]), tuple(stages))

    def validate(self, genome: Hashable) -> None:
        if not isinstance(genome, OFAGenome):
            raise SpaceError(f"{self.name} genomes are OFAGenome values, got {type(genome).__name__}")
        check_choice(genome.resolution, self.resolutions, "resolution")
        if not isinstance(genome.stages, tuple):
            raise SpaceError(f"genome stages must be a tuple of tuples, got {type(genome.stages).__name__}")
        if len(genome.stages) != self.n_stages:
            raise SpaceError(f"{self.name} has {self.n_stages} stages, the genome has {len(genome.stages)}")
        for i, stage in enumerate(genome.stages, 1):
            if not isinstance(stage, tuple):
                raise SpaceError(f"stage {i} must be a tuple of MBBlock, got {type(stage).__name__}")
            check_choice(len(stage), self.depths, f"stage {i} depth")
            for j, b in enumerate(stage, 1):
                if not isinstance(b, MBBlock):
                    raise SpaceError(f"stage {i} block {j} is {b!r}, not an MBBlock(kernel, expand)")
                check_choice(b.kernel, self.kernels, f"stage {i} block {j} kernel")
                check_choice(b.expand, self.expands, f"stage {i} block {j} expand")

    def random_genome(self, rng: np.random.Generator) -> OFAGenome:
        """OFA's sampling: a depth per stage, then kernel and expand per active block (uniform).

        OFA (``sample_active_subnet``) draws kernel/expand for all 20 slots and a depth per stage;
        the kernel/expand of inactive slots are discarded, so this draws the same distribution.
        The resolution is drawn uniformly first (OFA draws it per batch in its data loader).
        """
        resolution = self.resolutions[int(rng.integers(len(self.resolutions)))]
        depths = [self.depths[int(i)] for i in rng.integers(len(self.depths), size=self.n_stages)]
        stages = []
        for d in depths:
            ks = rng.integers(len(self.kernels), size=d)
            es = rng.integers(len(self.expands), size=d)
            stages.append(tuple(MBBlock(self.kernels[int(k)], self.expands[int(e)]) for k, e in zip(ks, es)))
        return OFAGenome(resolution, tuple(stages))

    def uniform_genome(self, rng: np.random.Generator) -> OFAGenome:
        """Uniform over distinct architectures: depth ``d`` with weight ``(kernels x expands) ** d``.

        That weight is the number of distinct stages of depth ``d``, so every architecture is
        equally likely; :meth:`random_genome` (uniform depth) makes a given depth-2 stage 81x more
        likely than a given depth-4 one.
        """
        resolution = self.resolutions[int(rng.integers(len(self.resolutions)))]
        per_depth = np.array([(len(self.kernels) * len(self.expands)) ** d for d in self.depths], dtype=np.float64)
        depths = rng.choice(len(self.depths), size=self.n_stages, p=per_depth / per_depth.sum())
        stages = []
        for i in depths:
            d = self.depths[int(i)]
            ks = rng.integers(len(self.kernels), size=d)
            es = rng.integers(len(self.expands), size=d)
            stages.append(tuple(MBBlock(self.kernels[int(k)], self.expands[int(e)]) for k, e in zip(ks, es)))
        return OFAGenome(resolution, tuple(stages))

    # ------------------------------------------------------------------ named points
    def largest(self) -> Arch:
        """Max depth, kernel, expand and resolution (the sandwich rule's ``max`` network)."""
        return self.arch(
            OFAGenome.uniform(max(self.resolutions), max(self.depths), max(self.kernels), max(self.expands), self.n_stages)
        )

    def smallest(self) -> Arch:
        """Min depth, kernel, expand and resolution (the sandwich rule's ``min`` network)."""
        return self.arch(
            OFAGenome.uniform(min(self.resolutions), min(self.depths), min(self.kernels), min(self.expands), self.n_stages)
        )

    def named(self) -> Mapping[str, Arch]:
        return {"largest": self.largest(), "smallest": self.smallest()}

    # ------------------------------------------------------------------ size and enumeration
    def _stage_size(self) -> int:
        per_block = len(self.kernels) * len(self.expands)
        return sum(per_block**d for d in self.depths)

    def size(self) -> int:
        return self._stage_size() ** self.n_stages * len(self.resolutions)

    def _stage_options(self) -> list[tuple[MBBlock, ...]]:
        block_choices = [MBBlock(k, e) for k in self.kernels for e in self.expands]
        return [s for d in self.depths for s in itertools.product(block_choices, repeat=d)]

    def enumerate(self) -> Iterator[Arch]:
        """Every architecture once (resolution outermost, then stage 1 .. stage 5); lazy."""
        options = self._stage_options()
        for resolution in self.resolutions:
            for stages in itertools.product(options, repeat=self.n_stages):
                yield Arch(self.name, OFAGenome(resolution, stages))

    # ------------------------------------------------------------------ analysis and search
    def choices(self, arch: Arch) -> dict[str, str]:
        """Resolution, per-stage depth and the kernel / expand ratio of each present block."""
        self._check_space(arch)
        g = arch.genome
        out = {"resolution": choice_label(g.resolution)}
        for i, stage in enumerate(g.stages, start=1):
            out[f"stage{i}.depth"] = str(len(stage))
            for j, block in enumerate(stage, start=1):
                out[f"stage{i}.block{j}.kernel"] = choice_label(block.kernel)
                out[f"stage{i}.block{j}.expand"] = choice_label(block.expand)
        return out

    def factors(self, arch: Arch) -> dict[str, float]:
        """Depths, kernel-size and expand-ratio histograms, mean expand per stage, resolution."""
        g = self._genome(arch)
        blocks = g.blocks
        out: dict[str, float] = {f"depth_s{i}": len(s) for i, s in enumerate(g.stages, 1)}
        out["depth_total"] = len(blocks)
        for k in self.kernels:
            out[f"k{k}"] = sum(b.kernel == k for b in blocks)
        for i, s in enumerate(g.stages, 1):
            out[f"expand_mean_s{i}"] = sum(b.expand for b in s) / len(s)
        out["expand_mean"] = sum(b.expand for b in blocks) / len(blocks)
        for e in self.expands:
            out[f"e{e}"] = sum(b.expand == e for b in blocks)
        out["resolution"] = g.resolution
        return out

    def to_vector(self, arch: Arch) -> np.ndarray:
        """OFA's accuracy-predictor features (``MobileNetArchEncoder.arch2feature``).

        Same layout as OFA's: a one-hot resolution, then a one-hot kernel size for each of the
        ``5 * max(depths)`` block slots, then a one-hot expand ratio per slot; an inactive slot
        is all zeros. Surrogates trained on OFA's features read ours unchanged.
        """
        g = self._genome(arch)
        depth, nr, nk, ne = max(self.depths), len(self.resolutions), len(self.kernels), len(self.expands)
        slots = self.n_stages * depth
        v = np.zeros(nr + slots * (nk + ne))
        v[self.resolutions.index(g.resolution)] = 1.0
        for i, stage in enumerate(g.stages):
            for j, b in enumerate(stage):
                slot = i * depth + j
                v[nr + slot * nk + self.kernels.index(b.kernel)] = 1.0
                v[nr + slots * nk + slot * ne + self.expands.index(b.expand)] = 1.0
        return v

    def neighbors(self, arch: Arch) -> list[Arch]:
        """One choice changed: resolution, a stage's depth, or one block's kernel or expand.

        A deeper stage repeats its last block (the extra blocks of OFA's supernet); a shallower
        one keeps its first blocks, as OFA's elastic depth does.
        """
        g = self._genome(arch)
        out: list[OFAGenome] = [OFAGenome(r, g.stages) for r in self.resolutions if r != g.resolution]
        for i, stage in enumerate(g.stages):
            for d in self.depths:
                if d != len(stage):
                    new = stage[:d] + (stage[-1],) * max(0, d - len(stage))
                    out.append(self._replace_stage(g, i, new))
        for i, stage in enumerate(g.stages):
            for j, b in enumerate(stage):
                for k in self.kernels:
                    if k != b.kernel:
                        out.append(self._replace_stage(g, i, stage[:j] + (MBBlock(k, b.expand),) + stage[j + 1 :]))
                for e in self.expands:
                    if e != b.expand:
                        out.append(self._replace_stage(g, i, stage[:j] + (MBBlock(b.kernel, e),) + stage[j + 1 :]))
        return [Arch(self.name, n) for n in out]

    @staticmethod
    def _replace_stage(g: OFAGenome, i: int, stage: tuple[MBBlock, ...]) -> OFAGenome:
        return OFAGenome(g.resolution, g.stages[:i] + (stage,) + g.stages[i + 1 :])

    def _genome(self, arch: Arch) -> OFAGenome:
        self._check_space(arch)
        return arch.genome  # type: ignore[return-value]

    # ------------------------------------------------------------------ models and cost
    def resolution(self, arch: Arch, input_size: int | None = None) -> int:
        """The architecture's own resolution (``input_size`` does not apply: it is elastic)."""
        return self._genome(arch).resolution

    def plan(self, arch: Arch, num_classes: int | None = None) -> NetPlan:
        """Every layer's shape for ``arch``: the single source for :meth:`build` and :meth:`cost`."""
        g = self._genome(arch)
        sk = self.skeleton
        first = _mbconv(sk.stem_width, sk.stem_width, 3, 1, 1, sk.first_block_act, False)
        stages = []
        c_in = sk.stem_width
        for spec, blocks in zip(sk.stages, g.stages):
            stage = []
            for j, b in enumerate(blocks):
                stage.append(_mbconv(c_in, spec.width, b.kernel, spec.stride if j == 0 else 1, b.expand, spec.act, spec.se))
                c_in = spec.width
            stages.append(tuple(stage))
        return NetPlan(
            resolution=g.resolution,
            num_classes=int(num_classes or self.num_classes),
            stem_width=sk.stem_width,
            stem_stride=sk.stem_stride,
            stem_act=sk.stem_act,
            first_block=first,
            stages=tuple(stages),
            final_expand=sk.final_expand,
            feature_mix=sk.feature_mix,
            head_act=sk.head_act,
            dropout=sk.dropout,
        )

    def cost(self, arch: Arch, num_classes: int | None = None, input_size: int | None = None) -> Cost:
        """Params and MACs at the architecture's resolution (pure Python, microseconds)."""
        return count_plan(self.plan(arch, num_classes))

    def build(
        self,
        arch: Arch,
        num_classes: int | None = None,
        input_size: int | None = None,
        *,
        generator: "torch.Generator | None" = None,
    ) -> "nn.Module":
        """A stand-alone OFA MobileNetV3 subnet, initialised as OFA does (``he_fout``).

        ``generator`` makes the initial weights reproducible without touching the global RNG.
        """
        from nasrobust.spaces._ofa_mbv3_net import OFAMobileNetV3

        return OFAMobileNetV3(self.plan(arch, num_classes), generator=generator)

    def supernet(self, num_classes: int | None = None) -> "Supernet":
        """The weight-sharing supernet holding every architecture of this space (OFA's elastic
        kernel, expand ratio and depth; resolution through the data)."""
        from nasrobust.spaces._ofa_mbv3_supernet import OFAMobileNetV3Supernet

        return OFAMobileNetV3Supernet(self, int(num_classes or self.num_classes))


@register_space("ofa-mbv3-small")
class OFAMobileNetV3SmallSpace(OFAMobileNetV3Space):
    """Once-for-All MobileNetV3 for 24-32 px inputs: stride-1 first conv, final map 2x2."""

    name = "ofa-mbv3-small"
    description = "Once-for-All MobileNetV3 for 32-px inputs (stride-1 stem, res 24/28/32)"
    num_classes = 10
    input_size = 32
    small_variant = None
    resolutions = SMALL_RESOLUTIONS
    skeleton = Skeleton(stem_stride=1)
    grammar = OFAMobileNetV3Space.grammar.replace("128..224 step 4", "{24,28,32}").replace("r224", "r32")


__all__ = [
    "DEPTHS",
    "EXPANDS",
    "KERNELS",
    "RESOLUTIONS",
    "SMALL_RESOLUTIONS",
    "MBBlock",
    "MBConvPlan",
    "NetPlan",
    "OFAGenome",
    "OFAMobileNetV3Space",
    "OFAMobileNetV3SmallSpace",
    "Skeleton",
    "StageSpec",
    "count_plan",
    "make_divisible",
]
