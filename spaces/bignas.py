"""BigNAS-ResNet search spaces: ``bignas`` (basic blocks), ``bignas-r50`` (bottlenecks) and
their small-input variants ``bignas-small`` / ``bignas-r50-small``.

BigNAS (Yu et al., "BigNAS: Scaling Up Neural Architecture Search with Big Single-Stage
Models", ECCV 2020) trains one weight-sharing supernet with the sandwich rule and in-place
distillation, then reads child networks out of it without retraining. RobustART (Tang et al.,
"RobustART: Benchmarking Robustness on Architecture Design and Training Techniques", 2021)
takes its 1200+ NAS networks from SenseTime's BigNAS-ResNet supernets; its model lists name
them ``bignas_resnet18_<MACs>`` and ``bignas_resnet50_<MACs>``. RobustART never published the
supernet configuration itself. The closest public ones come from the same group:

* ModelTC/United-Perception, ``up/tasks/nas/bignas/models/backbone/big_resnet_basic.py``
  (``big_resnet_basic_kwargs``): stem + 4 stages of basic blocks, output widths from
  min ``[32, 32, 64, 128, 256]`` to max ``[64, 96, 192, 384, 768]`` in steps of
  ``[16, 16, 32, 32, 64]`` (stem, stage 1..4), sampled ``ordered_stage_wise`` (a stage is never
  narrower than the one before), depth 1..3 per stage, stem kernel {3, 5, 7}, stage kernels 3.
* The prototype BigNAS-ResNet-D bottleneck space of the same code base (``big_resnetd_bottleneck``):
  widths from ``[48, 192, 384, 768, 1536]`` to ``[80, 320, 640, 1280, 2560]`` in steps of
  ``[8, 16, 16, 32, 32]``, stem kernel {3, 5, 7}.
* The released subnets (``bignas_resnet18_*``, ``bignas_resnet50_{2954,3145,3811}M``): basic
  blocks with per-block expand ratios 0.25/0.5/0.75/1 and input sizes 128/188/192/220/224;
  bottlenecks with depths up to [3, 5, 7, 3], expand 0.25, stem kernel 3 or 5.
* mmrazor's BigNAS-ResNet-50 config (``num_blocks_add``/``expand_ratio_mult``): ResNet-50
  depths -2..+1 per stage and bottleneck expand ratios {0.2, 0.25, 0.35}.

What this module uses, per stage (all choices are stage-wise: every block of a stage shares them):

=================  ===========================================  ===========================================
choice             ``bignas`` (basic block)                     ``bignas-r50`` (bottleneck)
=================  ===========================================  ===========================================
stem width         32, 48, 64                                   48, 56, ..., 80
stage widths       32..96 /16, 64..192 /32, 128..384 /32,       192..320 /16, 384..640 /16, 768..1280 /32,
                   256..768 /64                                 1536..2560 /32
width order        non-decreasing from the stem to stage 4      (holds automatically for these ranges)
depth              1, 2, 3 in every stage                       2-4, 2-5, 4-7, 2-4
stem kernel        3, 5, 7                                      3, 5, 7
stage kernel       3, 5                                         3, 5 (the middle k x k conv)
expand ratio       0.25, 0.5, 0.75, 1                           0.2, 0.25, 0.35
resolution         128, 132, ..., 224 (step 4)                  128, 132, ..., 224 (step 4)
=================  ===========================================  ===========================================

Why these. Widths and stem kernels are United-Perception's published lists. Depth 1..3 is UP's
basic-block range. The r50 depths are the union of mmrazor's ResNet-50 range and the released
``bignas_resnet50_*`` subnets, so those subnets and ResNet-50 are all in the space. The expand ratios
are the released basic-block ratios and mmrazor's bottleneck ratios. A block's middle width is
``make_divisible(width * expand, 8)``, UP's rule. The resolution step of 4 px is Once-for-All's. It
contains every input size the released subnets use. **One extension:** UP fixes stage kernels at 3.
The task asks for an elastic kernel per stage, so this space adds 5 (7 is left out so that the
largest subnet stays affordable). Replace ``STAGE_KERNELS`` by ``(3,)`` to get UP's space exactly.
The released ``bignas_resnet18_*`` subnets use widths outside UP's grid (e.g. ``[32, 64, 112, 256,
592]``), so they come from an earlier, unpublished supernet and are not in ``bignas``. All three
``bignas_resnet50_*`` subnets are in ``bignas-r50``.

Network (built by ``spaces/_bignas_net.py``; the names below are stable and the weight-sharing
supernet slices its max-size weights into exactly these modules):

* ``stem``: ``conv`` (k x k, stride 2, no bias), ``bn``, ``act`` and ``pool`` (3x3/2 max-pool,
  torchvision's). The small variants use stride 1 and have no ``pool``.

Small variants (``bignas-small``, ``bignas-r50-small``) keep every choice list of their large
space except two: resolutions {24, 28, 32} (MNIST, CIFAR) and **every width divided by 8**
(e.g. stem 4/6/8, stage 4 32..96). Without down-sampling in the stem the feature maps are 16x
larger than at ImageNet scale, and full widths would make the largest subnet 5.3 GMACs at 32 px,
far beyond the CPU budget of a study (supernet training plus 100+ subnets scored on every suite
in 30 minutes on 2 cores); at 1/8 width the largest costs ~0.1 GMACs, like the narrow ResNets
used on MNIST/CIFAR. Their middle width is ``ceil(width * expand)``: rounding to multiples of 8
would merge expand ratios at these widths.
* ``stages[i][j]``: block j of stage i. Basic: ``conv1`` (k, stride s) ``bn1`` ``conv2`` (k) ``bn2``.
  Bottleneck: ``conv1`` (1x1) ``bn1`` ``conv2`` (k, stride s) ``bn2`` ``conv3`` (1x1) ``bn3``
  (torchvision's ResNet v1.5). ``shortcut`` is ``Sequential(conv 1x1/s, bn)`` when the shape
  changes, else ``Identity``. Stage strides are 1, 2, 2, 2; only block 0 of a stage strides.
* ``pool`` (global average) and ``head`` (``Linear``).

With these rules ResNet-18 (``bignas``) and ResNet-50 (``bignas-r50``) are single points of the
space (``named()``), identical to torchvision's models, which the tests check.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from nasrobust.cost import Cost, CostCounter
from nasrobust.errors import SpaceError
from nasrobust.space import Arch, SearchSpace, choice_label, register_space

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

    from nasrobust.supernet import Supernet

__all__ = [
    "BigNASChoices",
    "BigNASGenome",
    "BigNASResNetSpace",
    "BlockSpec",
    "NetLayout",
    "StageChoices",
    "StageGene",
    "make_divisible",
]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor``, never down by more than 10%.

    The MobileNet/TF-slim rule that United-Perception's BigNAS blocks use for the middle width.
    """
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


# --------------------------------------------------------------------------- choice lists
@dataclass(frozen=True)
class StageChoices:
    """The choices of one stage (shared by all of its blocks)."""

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    kernels: tuple[int, ...]
    expands: tuple[float, ...]


@dataclass(frozen=True)
class BigNASChoices:
    """Every choice list of one BigNAS-ResNet space, in one place (the supernet reads them too)."""

    resolutions: tuple[int, ...]
    stem_kernels: tuple[int, ...]
    stem_widths: tuple[int, ...]
    stages: tuple[StageChoices, ...]

    def __post_init__(self) -> None:
        lists = [self.resolutions, self.stem_kernels, self.stem_widths]
        lists += [c for s in self.stages for c in (s.depths, s.widths, s.kernels, s.expands)]
        if not self.stages or any(not c or list(c) != sorted(set(c)) for c in lists):
            raise ValueError("every choice list must be non-empty, sorted and without repeats")


def _span(lo: int, hi: int, step: int) -> tuple[int, ...]:
    return tuple(range(lo, hi + 1, step))


#: Input sizes of the ImageNet-size spaces: 128..224 in Once-for-All's 4-px steps.
RESOLUTIONS = _span(128, 224, 4)
#: Input sizes of the small-input variants (MNIST 28 px, CIFAR 32 px).
SMALL_RESOLUTIONS = (24, 28, 32)
#: The small variants divide every width by this (see "Small variants" in the module docstring).
SMALL_WIDTH_DIVISOR = 8
STEM_KERNELS = (3, 5, 7)
#: UP fixes stage kernels at 3; 5 is this space's one extension (see the module docstring).
STAGE_KERNELS = (3, 5)

BASIC_CHOICES = BigNASChoices(
    resolutions=RESOLUTIONS,
    stem_kernels=STEM_KERNELS,
    stem_widths=_span(32, 64, 16),
    stages=tuple(
        StageChoices(depths=(1, 2, 3), widths=_span(lo, hi, step), kernels=STAGE_KERNELS, expands=(0.25, 0.5, 0.75, 1.0))
        for lo, hi, step in ((32, 96, 16), (64, 192, 32), (128, 384, 32), (256, 768, 64))
    ),
)

BOTTLENECK_CHOICES = BigNASChoices(
    resolutions=RESOLUTIONS,
    stem_kernels=STEM_KERNELS,
    stem_widths=_span(48, 80, 8),
    stages=tuple(
        StageChoices(depths=depths, widths=_span(lo, hi, step), kernels=STAGE_KERNELS, expands=(0.2, 0.25, 0.35))
        for depths, (lo, hi, step) in zip(
            ((2, 3, 4), (2, 3, 4, 5), (4, 5, 6, 7), (2, 3, 4)),
            ((192, 320, 16), (384, 640, 16), (768, 1280, 32), (1536, 2560, 32)),
        )
    ),
)


def small_choices(choices: BigNASChoices) -> BigNASChoices:
    """The small-input variant of a choice list: every width / SMALL_WIDTH_DIVISOR, 24-32 px inputs."""
    shrink = lambda widths: tuple(w // SMALL_WIDTH_DIVISOR for w in widths)  # noqa: E731
    return replace(
        choices,
        resolutions=SMALL_RESOLUTIONS,
        stem_widths=shrink(choices.stem_widths),
        stages=tuple(replace(st, widths=shrink(st.widths)) for st in choices.stages),
    )


def exact_middle_width(value: float) -> int:
    """The small variants' middle width: ``ceil(width * expand)`` (widths there are too narrow
    for rounding to multiples of 8, which would merge different expand ratios into one network)."""
    return max(1, math.ceil(value - 1e-9))


# --------------------------------------------------------------------------- genome
@dataclass(frozen=True)
class StageGene:
    """One stage: ``depth`` blocks of output ``width``, ``kernel`` x ``kernel`` convs, middle
    width ``make_divisible(width * expand)``."""

    depth: int
    width: int
    kernel: int
    expand: float


@dataclass(frozen=True)
class BigNASGenome:
    """A BigNAS-ResNet architecture: input resolution, stem and one :class:`StageGene` per stage."""

    resolution: int
    stem_kernel: int
    stem_width: int
    stages: tuple[StageGene, ...]

    @property
    def widths(self) -> tuple[int, ...]:
        """Stem width followed by the stage widths."""
        return (self.stem_width, *(s.width for s in self.stages))


# --------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class BlockSpec:
    """One residual block as built: channels, middle width, kernel and stride."""

    cin: int
    cout: int
    mid: int
    kernel: int
    stride: int

    @property
    def projection(self) -> bool:
        """True when the shortcut needs a 1x1 conv + BN (the shape changes)."""
        return self.stride != 1 or self.cin != self.cout


@dataclass(frozen=True)
class NetLayout:
    """Everything :mod:`spaces._bignas_net` needs to build a network, derived from a genome."""

    block: str
    stem_kernel: int
    stem_width: int
    stem_stride: int
    stem_pool: bool
    stages: tuple[tuple[BlockSpec, ...], ...]
    resolution: int

    @property
    def out_width(self) -> int:
        return self.stages[-1][-1].cout


def _shortcut_cost(c: CostCounter, b: BlockSpec) -> None:
    """The projection shortcut, counted from the block input (the size is restored after)."""
    if b.projection:
        h, w = c.h, c.w
        c.conv(b.cin, b.cout, 1, b.stride).norm(b.cout).resize(h, w)


def _basic_cost(c: CostCounter, b: BlockSpec) -> None:
    _shortcut_cost(c, b)
    c.conv(b.cin, b.mid, b.kernel, b.stride).norm(b.mid)
    c.conv(b.mid, b.cout, b.kernel).norm(b.cout)


def _bottleneck_cost(c: CostCounter, b: BlockSpec) -> None:
    _shortcut_cost(c, b)
    c.conv(b.cin, b.mid, 1).norm(b.mid)
    c.conv(b.mid, b.mid, b.kernel, b.stride).norm(b.mid)
    c.conv(b.mid, b.cout, 1).norm(b.cout)


#: Per block type: analytic cost, and how many of its convs use the stage kernel (for factors).
_BLOCK_COST: dict[str, Callable[[CostCounter, BlockSpec], None]] = {
    "basic": _basic_cost,
    "bottleneck": _bottleneck_cost,
}
_ELASTIC_KERNEL_CONVS = {"basic": 2, "bottleneck": 1}

#: Stride of the first block of each stage (the stem and its pool do the first /4).
STAGE_STRIDES = (1, 2, 2, 2)

_STAGE_RE = re.compile(r"d(\d+)w(\d+)k(\d+)e(\d+(?:\.\d+)?)")
_STEM_RE = re.compile(r"s(\d+)k(\d+)")
_RES_RE = re.compile(r"r(\d+)")


def _fmt_ratio(x: float) -> str:
    return format(x, "g")


# --------------------------------------------------------------------------- the space
class BigNASResNetSpace(SearchSpace):
    """BigNAS-ResNet: stem + 4 stages with elastic width, depth, kernel, expand ratio, resolution.

    Subclasses (the registered variants below) set the block type, the choice lists and whether
    the stem down-samples; tests may pass reduced ``choice_lists`` to count the space by brute force.
    """

    block: str = "basic"
    small: bool = False
    choice_lists: BigNASChoices = BASIC_CHOICES
    elastic_resolution = True
    #: The named point equal to torchvision's (or, small, the CIFAR) ResNet: name, depth, widths, expand.
    reference: tuple[str, tuple[int, ...], tuple[int, ...], float] = ("resnet18", (2, 2, 2, 2), (64, 64, 128, 256, 512), 1.0)

    def middle_width(self, value: float) -> int:
        """A block's middle width from ``width * expand``: UP's make_divisible(., 8), exact when small."""
        return exact_middle_width(value) if self.small else make_divisible(value)

    def __init__(self, choice_lists: BigNASChoices | None = None):
        if choice_lists is not None:
            self.choice_lists = choice_lists
        if self.block not in _BLOCK_COST:
            raise ValueError(f"unknown block type {self.block!r}; valid: {sorted(_BLOCK_COST)}")
        self._chain_counts = self._count_width_chains()
        c = self.choice_lists
        self._radices = np.array(
            [len(c.resolutions), len(c.stem_kernels), sum(self._chain_counts[0].values())]
            + [n for st in c.stages for n in (len(st.depths), len(st.kernels), len(st.expands))]
        )
        self.grammar = (
            "r<resolution>-s<stem width>k<stem kernel>"
            + "".join("-d<depth>w<width>k<kernel>e<expand>" for _ in self.choice_lists.stages)
            + f"  (one d..w..k..e.. part per stage, {len(self.choice_lists.stages)} stages), e.g. "
            + self.encode_genome(self.largest_genome())
        )

    # ------------------------------------------------------------------ width chains
    def _count_width_chains(self) -> list[dict[int, int]]:
        """``counts[i][w]``: non-decreasing width chains from position i (0 = stem) starting at w."""
        lists = [self.choice_lists.stem_widths, *(s.widths for s in self.choice_lists.stages)]
        counts: list[dict[int, int]] = [{} for _ in lists]
        counts[-1] = {w: 1 for w in lists[-1]}
        for i in range(len(lists) - 2, -1, -1):
            counts[i] = {w: sum(n for v, n in counts[i + 1].items() if v >= w) for w in lists[i]}
        return counts

    def _width_chains(self, i: int = 0, floor: int = 0) -> Iterator[tuple[int, ...]]:
        """Every valid (stem, stage widths...) tuple from position ``i``, in increasing order."""
        for w, n in self._chain_counts[i].items():
            if w < floor or n == 0:
                continue
            if i == len(self._chain_counts) - 1:
                yield (w,)
            else:
                for rest in self._width_chains(i + 1, w):
                    yield (w, *rest)

    def _unrank_chain(self, index: int) -> tuple[int, ...]:
        """The ``index``-th width chain in :meth:`_width_chains` order, without listing them."""
        out: list[int] = []
        floor = 0
        for counts in self._chain_counts:
            for w, n in counts.items():
                if w < floor or not n:
                    continue
                if index < n:
                    break
                index -= n
            out.append(w)
            floor = w
        return tuple(out)

    # ------------------------------------------------------------------ genome hooks
    def encode_genome(self, genome: BigNASGenome) -> str:
        parts = [f"r{genome.resolution}", f"s{genome.stem_width}k{genome.stem_kernel}"]
        parts += [f"d{s.depth}w{s.width}k{s.kernel}e{_fmt_ratio(s.expand)}" for s in genome.stages]
        return "-".join(parts)

    def parse_genome(self, body: str) -> BigNASGenome:
        parts = body.split("-")
        n = len(self.choice_lists.stages)
        if len(parts) != n + 2:
            raise self.encoding_error(
                body, f"expected {n + 2} parts separated by '-' (resolution, stem, {n} stages), got {len(parts)}"
            )
        res = _RES_RE.fullmatch(parts[0])
        if not res:
            raise self.encoding_error(body, f"resolution part {parts[0]!r} does not match r<resolution>")
        stem = _STEM_RE.fullmatch(parts[1])
        if not stem:
            raise self.encoding_error(body, f"stem part {parts[1]!r} does not match s<width>k<kernel>")
        stages = []
        for i, part in enumerate(parts[2:], start=1):
            m = _STAGE_RE.fullmatch(part)
            if not m:
                raise self.encoding_error(body, f"stage {i}: {part!r} does not match d<depth>w<width>k<kernel>e<expand>")
            stages.append(StageGene(int(m[1]), int(m[2]), int(m[3]), float(m[4])))
        return BigNASGenome(int(res[1]), int(stem[2]), int(stem[1]), tuple(stages))

    def random_genome(self, rng: np.random.Generator) -> BigNASGenome:
        """Uniform over the space: one draw per choice (the width chain by its index among all)."""
        c = self.choice_lists
        r = rng.integers(0, self._radices).tolist()
        widths = self._unrank_chain(r[2])
        stages = tuple(
            StageGene(s.depths[r[i]], w, s.kernels[r[i + 1]], s.expands[r[i + 2]])
            for s, w, i in zip(c.stages, widths[1:], range(3, len(r), 3))
        )
        return BigNASGenome(c.resolutions[r[0]], c.stem_kernels[r[1]], widths[0], stages)

    def validate(self, genome: Any) -> None:
        if not isinstance(genome, BigNASGenome):
            raise SpaceError(f"expected a BigNASGenome, got {type(genome).__name__}")
        c = self.choice_lists
        _check(genome.resolution, c.resolutions, "resolution")
        _check(genome.stem_kernel, c.stem_kernels, "stem: kernel")
        _check(genome.stem_width, c.stem_widths, "stem: width")
        if len(genome.stages) != len(c.stages):
            raise SpaceError(f"expected {len(c.stages)} stages, got {len(genome.stages)}")
        previous, where = genome.stem_width, "the stem's"
        for i, (g, s) in enumerate(zip(genome.stages, c.stages), start=1):
            _check(g.depth, s.depths, f"stage {i}: depth")
            _check(g.width, s.widths, f"stage {i}: width")
            _check(g.kernel, s.kernels, f"stage {i}: kernel")
            _check(g.expand, s.expands, f"stage {i}: expand ratio")
            if g.width < previous:
                raise SpaceError(
                    f"stage {i}: width {g.width} is narrower than {where} {previous}; "
                    "widths must not decrease from the stem to the last stage"
                )
            previous, where = g.width, f"stage {i}'s"

    # ------------------------------------------------------------------ size and order
    def size(self) -> int:
        """Width chains (non-decreasing) x the independent choices; absent blocks count once."""
        return math.prod(int(n) for n in self._radices)

    def enumerate(self) -> Iterator[Arch]:
        """Every architecture once: resolution, stem kernel, width chain, then per-stage (d, k, e)."""
        c = self.choice_lists
        per_stage = [list(itertools.product(s.depths, s.kernels, s.expands)) for s in c.stages]
        for res in c.resolutions:
            for stem_kernel in c.stem_kernels:
                for widths in self._width_chains():
                    for dke in itertools.product(*per_stage):
                        stages = tuple(StageGene(d, w, k, e) for (d, k, e), w in zip(dke, widths[1:]))
                        yield Arch(self.name, BigNASGenome(res, stem_kernel, widths[0], stages))

    def largest_genome(self) -> BigNASGenome:
        c = self.choice_lists
        stages = tuple(StageGene(s.depths[-1], s.widths[-1], s.kernels[-1], s.expands[-1]) for s in c.stages)
        return BigNASGenome(c.resolutions[-1], c.stem_kernels[-1], c.stem_widths[-1], stages)

    def smallest_genome(self) -> BigNASGenome:
        c = self.choice_lists
        stages = tuple(StageGene(s.depths[0], s.widths[0], s.kernels[0], s.expands[0]) for s in c.stages)
        return BigNASGenome(c.resolutions[0], c.stem_kernels[0], c.stem_widths[0], stages)

    def largest(self) -> Arch:
        """Every choice at its maximum (the sandwich rule's max subnet and the supernet's shape)."""
        return self.arch(self.largest_genome())

    def smallest(self) -> Arch:
        """Every choice at its minimum (the sandwich rule's min subnet)."""
        return self.arch(self.smallest_genome())

    def named(self) -> Mapping[str, Arch]:
        out = {"largest": self.largest(), "smallest": self.smallest()}
        name, depths, widths, expand = self.reference
        genome = BigNASGenome(
            resolution=self.input_size,
            stem_kernel=3 if self.small else 7,
            stem_width=widths[0],
            stages=tuple(StageGene(d, w, 3, expand) for d, w in zip(depths, widths[1:])),
        )
        try:
            out[name] = self.arch(genome)
        except SpaceError:  # a reduced copy of the space may not contain it
            pass
        return out

    # ------------------------------------------------------------------ analysis and search
    def choices(self, arch: Arch) -> dict[str, str]:
        """Resolution, stem and per-stage depth / width / kernel / expand ratio (RobustART compares per stage)."""
        g = self._genome(arch)
        out = {"resolution": choice_label(g.resolution), "stem_kernel": choice_label(g.stem_kernel),
               "stem_width": choice_label(g.stem_width)}
        for i, s in enumerate(g.stages, start=1):
            for name in ("depth", "width", "kernel", "expand"):
                out[f"stage{i}.{name}"] = choice_label(getattr(s, name))
        return out

    def factors(self, arch: Arch) -> dict[str, float]:
        """Depth, width, expand ratio per stage and overall, kernel-size counts, stem, resolution.

        ``width_mean`` and ``expand_mean`` are averaged over blocks (a deeper stage weighs more);
        ``k3``/``k5``/``k7`` count the conv layers whose kernel is a choice (the stem conv and
        the stage-kernel convs of every block).
        """
        g: BigNASGenome = self._genome(arch)
        f: dict[str, float] = {}
        for i, s in enumerate(g.stages, start=1):
            f[f"depth_{i}"] = s.depth
        blocks = sum(s.depth for s in g.stages)
        f["depth"] = blocks
        for i, s in enumerate(g.stages, start=1):
            f[f"width_{i}"] = s.width
        f["width_mean"] = sum(s.width * s.depth for s in g.stages) / blocks
        f["width_max"] = max(s.width for s in g.stages)
        for i, s in enumerate(g.stages, start=1):
            f[f"expand_{i}"] = s.expand
        f["expand_mean"] = sum(s.expand * s.depth for s in g.stages) / blocks
        per_block = _ELASTIC_KERNEL_CONVS[self.block]
        kernels = {3: 0, 5: 0, 7: 0}
        kernels[g.stem_kernel] += 1
        for s in g.stages:
            kernels[s.kernel] += per_block * s.depth
        f.update({f"k{k}": n for k, n in kernels.items()})
        f["stem_kernel"] = g.stem_kernel
        f["stem_width"] = g.stem_width
        f["resolution"] = g.resolution
        return f

    def neighbors(self, arch: Arch) -> list[Arch]:
        """Every valid architecture that differs in exactly one choice, in a fixed order."""
        g: BigNASGenome = self._genome(arch)
        c = self.choice_lists
        candidates = [replace(g, resolution=v) for v in c.resolutions if v != g.resolution]
        candidates += [replace(g, stem_kernel=v) for v in c.stem_kernels if v != g.stem_kernel]
        candidates += [replace(g, stem_width=v) for v in c.stem_widths if v != g.stem_width]
        for i, (s, sc) in enumerate(zip(g.stages, c.stages)):
            for field, options in (("depth", sc.depths), ("width", sc.widths), ("kernel", sc.kernels), ("expand", sc.expands)):
                for v in options:
                    if v != getattr(s, field):
                        stages = g.stages[:i] + (replace(s, **{field: v}),) + g.stages[i + 1 :]
                        candidates.append(replace(g, stages=stages))
        out = []
        for cand in candidates:
            try:
                out.append(self.arch(cand))
            except SpaceError:  # a width change that breaks the non-decreasing order
                continue
        return out

    # ------------------------------------------------------------------ models and cost
    def resolution(self, arch: Arch, input_size: int | None = None) -> int:
        """The architecture's own input size (resolution is a choice of this space)."""
        return self._genome(arch).resolution

    def layout(self, arch: Arch) -> NetLayout:
        """The block-by-block description that :meth:`build`, :meth:`cost` and the supernet share."""
        g: BigNASGenome = self._genome(arch)
        stages = []
        cin = g.stem_width
        for s, stride in zip(g.stages, STAGE_STRIDES):
            mid = self.middle_width(s.width * s.expand)
            blocks = []
            for j in range(s.depth):
                blocks.append(BlockSpec(cin, s.width, mid, s.kernel, stride if j == 0 else 1))
                cin = s.width
            stages.append(tuple(blocks))
        return NetLayout(
            block=self.block,
            stem_kernel=g.stem_kernel,
            stem_width=g.stem_width,
            stem_stride=1 if self.small else 2,
            stem_pool=not self.small,
            stages=tuple(stages),
            resolution=g.resolution,
        )

    def build(self, arch: Arch, num_classes: int | None = None, input_size: int | None = None) -> "nn.Module":
        from nasrobust.spaces._bignas_net import BigNASResNet

        return BigNASResNet(self.layout(arch), num_classes or self.num_classes)

    def cost(self, arch: Arch, num_classes: int | None = None, input_size: int | None = None) -> Cost:
        lay = self.layout(arch)
        c = CostCounter(lay.resolution)
        c.conv(3, lay.stem_width, lay.stem_kernel, lay.stem_stride).norm(lay.stem_width)
        if lay.stem_pool:
            c.pool(3, 2, 1)
        block_cost = _BLOCK_COST[lay.block]
        for stage in lay.stages:
            for b in stage:
                block_cost(c, b)
        c.global_pool().linear(lay.out_width, num_classes or self.num_classes)
        return c.result()

    def supernet(self, num_classes: int | None = None) -> "Supernet":
        """The weight-sharing supernet holding every architecture of this space (BigNAS / OFA slicing)."""
        from nasrobust.spaces._bignas_supernet import BigNASSupernet

        return BigNASSupernet(self, num_classes or self.num_classes)

    def _genome(self, arch: Arch) -> BigNASGenome:
        self._check_space(arch)
        return arch.genome


def _check(value: Any, choices: Sequence[Any], what: str) -> None:
    if value not in choices:
        raise SpaceError(f"{what} {value!r} not in {list(choices)}")


# --------------------------------------------------------------------------- registered variants
@register_space("bignas")
class BigNAS(BigNASResNetSpace):
    """BigNAS-ResNet, basic blocks (RobustART's bignas_resnet18_* family), ImageNet-size inputs."""

    name = "bignas"
    description = "BigNAS-ResNet basic blocks: elastic width/depth/kernel/expand/resolution (RobustART NAS models)"
    small_variant = "bignas-small"


@register_space("bignas-small")
class BigNASSmall(BigNASResNetSpace):
    """BigNAS-ResNet, basic blocks, for 24-32 px inputs (stride-1 stem, no max-pool)."""

    name = "bignas-small"
    description = "bignas for 24-32 px inputs: stride-1 stem, no max-pool, widths / 8"
    small = True
    num_classes = 10
    input_size = 32
    choice_lists = small_choices(BASIC_CHOICES)
    reference = ("resnet18-w0.125", (2, 2, 2, 2), (8, 8, 16, 32, 64), 1.0)


@register_space("bignas-r50")
class BigNASR50(BigNASResNetSpace):
    """BigNAS-ResNet, bottleneck blocks (RobustART's bignas_resnet50_* family), ImageNet-size inputs."""

    name = "bignas-r50"
    description = "BigNAS-ResNet bottlenecks: elastic width/depth/kernel/expand/resolution (bignas_resnet50_*)"
    block = "bottleneck"
    choice_lists = BOTTLENECK_CHOICES
    small_variant = "bignas-r50-small"
    reference = ("resnet50", (3, 4, 6, 3), (64, 256, 512, 1024, 2048), 0.25)


@register_space("bignas-r50-small")
class BigNASR50Small(BigNASResNetSpace):
    """BigNAS-ResNet, bottleneck blocks, for 24-32 px inputs (stride-1 stem, no max-pool)."""

    name = "bignas-r50-small"
    description = "bignas-r50 for 24-32 px inputs: stride-1 stem, no max-pool, widths / 8"
    block = "bottleneck"
    small = True
    num_classes = 10
    input_size = 32
    choice_lists = small_choices(BOTTLENECK_CHOICES)
    reference = ("resnet50-w0.125", (3, 4, 6, 3), (8, 32, 64, 128, 256), 0.25)
