"""``zoo``: the human-designed, off-the-shelf ImageNet architectures RobustART benchmarks.

RobustART (Tang et al., "RobustART: Benchmarking Robustness on Architecture Design and
Training Techniques", arXiv:2109.05211) compares 44 hand-designed architectures -- CNNs,
vision Transformers and MLP-Mixers -- under adversarial, natural and system noise. Its model
dictionary (``get_model_robust_dcit`` in the RobustART prototype code) names them; this space
holds exactly those 44 (``ZooModel.robustart``) plus the neighbouring sizes of the same families
that its code base also defines (RegNetX 200M..6.4G, RepVGG A0..B3g4, MobileNetV3-small,
ViT-L/16, Swin-T/S/B, AlexNet), so that a family's size can be varied.

Each architecture is one model. Networks come from timm (``timm.create_model(name,
pretrained=False, num_classes=...)``); two families that timm lacks come from torchvision and
are marked ``source="torchvision"``: ShuffleNetV2 and AlexNet, and MobileNetV3, where timm has
only the x0.75/x1.0 (large) and x0.5/x0.75/x1.0 (small) widths and RobustART's x0.35..x1.4 are
built with torchvision's ``width_mult`` for the whole family, so all widths share one design.

Known differences from RobustART's own implementations (their code is SenseTime-internal):
ViT-B has no 768-d pre-logits layer (timm dropped ``representation_size``); RepVGG is the
training-time multi-branch form (RobustART also scores the re-parameterised "deploy" form);
torchvision's MobileNetV3 scales the 1280-d head with the width, RobustART's keeps 1280 for
widths <= 1; EfficientNet-B1..B4 use timm's native resolutions (240/256/288/320), RobustART
used the paper's 240/260/300/380 -- pass ``input_size`` to get those.

Cost is *measured*, not analytic: there is no formula for arbitrary timm models, so
``benchmarks/zoo_costs.py`` builds every model on the meta device, counts it with
:func:`nasrobust.cost.measure_cost` and writes ``zoo_costs.json`` next to this module. At the
native resolution the table answers instantly (the classifier's cost is linear in the number
of classes and stored per class); any other input size is measured on the meta device.
This module imports neither torch nor timm.
"""

from __future__ import annotations

import difflib
import json
import logging
import warnings
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import metadata, resources
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from nasrobust.cost import Cost
from nasrobust.errors import NasRobustError, SpaceError
from nasrobust.space import Arch, SearchSpace, register_space

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

log = logging.getLogger(__name__)

#: The measured cost table, package data of ``nasrobust.spaces``.
COST_TABLE = "zoo_costs.json"
#: Libraries whose model definitions the table depends on (a different version warns).
MODEL_LIBRARIES = ("timm", "torchvision")


@dataclass(frozen=True)
class Family:
    """What one architecture family is made of (the same for all its sizes)."""

    kind: str  # "cnn", "transformer" or "mlp"
    paper: str
    #: The network has a fixed token grid: timm must be told the input size (``img_size``).
    fixed_size: bool = False
    #: Depthwise(-separable) convolutions / squeeze-and-excitation somewhere in the network.
    depthwise: bool = False
    squeeze_excite: bool = False


FAMILIES: dict[str, Family] = {
    "alexnet": Family("cnn", "Krizhevsky et al. 2012, ImageNet classification with deep CNNs"),
    "resnet": Family("cnn", "He et al. 2016, Deep residual learning, arXiv:1512.03385"),
    "resnext": Family("cnn", "Xie et al. 2017, Aggregated residual transformations, arXiv:1611.05431"),
    "wide_resnet": Family("cnn", "Zagoruyko & Komodakis 2016, Wide residual networks, arXiv:1605.07146"),
    "densenet": Family("cnn", "Huang et al. 2017, Densely connected CNNs, arXiv:1608.06993"),
    "regnetx": Family("cnn", "Radosavovic et al. 2020, Designing network design spaces, arXiv:2003.13678"),
    "repvgg": Family("cnn", "Ding et al. 2021, RepVGG, arXiv:2101.03697"),
    "mobilenet_v2": Family("cnn", "Sandler et al. 2018, MobileNetV2, arXiv:1801.04381", depthwise=True),
    "mobilenet_v3": Family(
        "cnn", "Howard et al. 2019, Searching for MobileNetV3, arXiv:1905.02244", depthwise=True, squeeze_excite=True
    ),
    "shufflenet_v2": Family("cnn", "Ma et al. 2018, ShuffleNet V2, arXiv:1807.11164", depthwise=True),
    "efficientnet": Family(
        "cnn", "Tan & Le 2019, EfficientNet, arXiv:1905.11946", depthwise=True, squeeze_excite=True
    ),
    "vit": Family("transformer", "Dosovitskiy et al. 2021, An image is worth 16x16 words, arXiv:2010.11929", True),
    "deit": Family("transformer", "Touvron et al. 2021, Data-efficient image transformers, arXiv:2012.12877", True),
    "swin": Family("transformer", "Liu et al. 2021, Swin Transformer, arXiv:2103.14030", True),
    "mixer": Family("mlp", "Tolstikhin et al. 2021, MLP-Mixer, arXiv:2105.01601", True),
}

KINDS = ("cnn", "transformer", "mlp")


@dataclass(frozen=True)
class ZooModel:
    """One row of the zoo table: where the network comes from and what it is.

    ``blocks`` is filled in by hand from each paper's stage configuration: the number of
    repeated units (residual / bottleneck / inverted-residual / dense layers, transformer or
    mixer blocks; conv layers for the plain nets AlexNet and RepVGG). ``tests/test_space_zoo.py``
    checks it against the built module.
    """

    family: str
    source: str  # "timm" or "torchvision"
    model: str  # the model's name in ``source``
    blocks: int
    #: The width multiplier the family's paper names (MobileNet/ShuffleNet "x", EfficientNet's width
    #: coefficient, WRN's k, RepVGG's a); for token models the final embedding width / 768 (ViT-B's).
    width: float = 1.0
    patch: int = 0  # patch size of token-based models (0 for CNNs)
    robustart: bool = True  # one of RobustART's 44 benchmarked architectures
    kwargs: tuple[tuple[str, float], ...] = ()  # extra constructor arguments

    @property
    def pretrained_available(self) -> bool:
        """torchvision ships weights only for its default widths."""
        return self.source == "timm" or not self.kwargs


def _timm(family: str, model: str, blocks: int, **kw: Any) -> ZooModel:
    return ZooModel(family, "timm", model, blocks, **kw)


def _tv(family: str, model: str, blocks: int, width: float = 1.0, robustart: bool = True, **kw: float) -> ZooModel:
    return ZooModel(family, "torchvision", model, blocks, width, robustart=robustart, kwargs=tuple(sorted(kw.items())))


def _mbv3(size: str, width: float, robustart: bool) -> ZooModel:
    extra = {} if width == 1.0 else {"width_mult": width}
    return _tv("mobilenet_v3", f"mobilenet_v3_{size}", 15 if size == "large" else 11, width, robustart, **extra)


#: The zoo: RobustART-style name (the encoding body) -> model. Enumeration follows this order.
MODELS: dict[str, ZooModel] = {
    # -- residual CNNs: depths [2,2,2,2] [3,4,6,3] [3,4,6,3] [3,4,23,3] [3,8,36,3]
    "resnet18": _timm("resnet", "resnet18", 8),
    "resnet34": _timm("resnet", "resnet34", 16),
    "resnet50": _timm("resnet", "resnet50", 16),
    "resnet101": _timm("resnet", "resnet101", 33),
    "resnet152": _timm("resnet", "resnet152", 50),
    "resnext50_32x4d": _timm("resnext", "resnext50_32x4d", 16),
    "resnext101_32x8d": _timm("resnext", "resnext101_32x8d", 33),
    "wide_resnet50_2": _timm("wide_resnet", "wide_resnet50_2", 16, width=2.0),
    "wide_resnet101_2": _timm("wide_resnet", "wide_resnet101_2", 33, width=2.0),
    # -- DenseNet: dense layers [6,12,24,16] [6,12,32,32] [6,12,48,32]
    "densenet121": _timm("densenet", "densenet121", 58),
    "densenet169": _timm("densenet", "densenet169", 82),
    "densenet201": _timm("densenet", "densenet201", 98),
    # -- RegNetX (pycls depths), named by their MACs
    "regnetx_200m": _timm("regnetx", "regnetx_002", 13, robustart=False),
    "regnetx_400m": _timm("regnetx", "regnetx_004", 22),
    "regnetx_600m": _timm("regnetx", "regnetx_006", 16, robustart=False),
    "regnetx_800m": _timm("regnetx", "regnetx_008", 16),
    "regnetx_1600m": _timm("regnetx", "regnetx_016", 18),
    "regnetx_3200m": _timm("regnetx", "regnetx_032", 25),
    "regnetx_4000m": _timm("regnetx", "regnetx_040", 23, robustart=False),
    "regnetx_6400m": _timm("regnetx", "regnetx_064", 17),
    # -- RepVGG (training-time form): conv layers 1+2+4+14+1 (A) and 1+4+6+16+1 (B)
    "repvgg_a0": _timm("repvgg", "repvgg_a0", 22, width=0.75),
    "repvgg_a1": _timm("repvgg", "repvgg_a1", 22, width=1.0, robustart=False),
    "repvgg_a2": _timm("repvgg", "repvgg_a2", 22, width=1.5, robustart=False),
    "repvgg_b0": _timm("repvgg", "repvgg_b0", 28, width=1.0, robustart=False),
    "repvgg_b1": _timm("repvgg", "repvgg_b1", 28, width=2.0, robustart=False),
    "repvgg_b1g4": _timm("repvgg", "repvgg_b1g4", 28, width=2.0, robustart=False),
    "repvgg_b2": _timm("repvgg", "repvgg_b2", 28, width=2.5, robustart=False),
    "repvgg_b2g4": _timm("repvgg", "repvgg_b2g4", 28, width=2.5, robustart=False),
    "repvgg_b3": _timm("repvgg", "repvgg_b3", 28, width=3.0),
    "repvgg_b3g4": _timm("repvgg", "repvgg_b3g4", 28, width=3.0, robustart=False),
    # -- light-weight CNNs
    "mobilenet_v2_x0_5": _timm("mobilenet_v2", "mobilenetv2_050", 17, width=0.5),
    "mobilenet_v2_x0_75": _timm("mobilenet_v2", "mobilenetv2_075", 17, width=0.75),
    "mobilenet_v2_x1_0": _timm("mobilenet_v2", "mobilenetv2_100", 17, width=1.0),
    "mobilenet_v2_x1_4": _timm("mobilenet_v2", "mobilenetv2_140", 17, width=1.4),
    "mobilenet_v3_large_x0_35": _mbv3("large", 0.35, True),
    "mobilenet_v3_large_x0_5": _mbv3("large", 0.5, True),
    "mobilenet_v3_large_x0_75": _mbv3("large", 0.75, True),
    "mobilenet_v3_large_x1_0": _mbv3("large", 1.0, True),
    "mobilenet_v3_large_x1_4": _mbv3("large", 1.4, True),
    "mobilenet_v3_small_x0_35": _mbv3("small", 0.35, False),
    "mobilenet_v3_small_x0_5": _mbv3("small", 0.5, False),
    "mobilenet_v3_small_x0_75": _mbv3("small", 0.75, False),
    "mobilenet_v3_small_x1_0": _mbv3("small", 1.0, False),
    "mobilenet_v3_small_x1_4": _mbv3("small", 1.4, False),
    "shufflenet_v2_x0_5": _tv("shufflenet_v2", "shufflenet_v2_x0_5", 16, 0.5),
    "shufflenet_v2_x1_0": _tv("shufflenet_v2", "shufflenet_v2_x1_0", 16, 1.0),
    "shufflenet_v2_x1_5": _tv("shufflenet_v2", "shufflenet_v2_x1_5", 16, 1.5),
    "shufflenet_v2_x2_0": _tv("shufflenet_v2", "shufflenet_v2_x2_0", 16, 2.0),
    # EfficientNet: MBConv blocks [1,2,2,3,3,4,1] scaled by depth 1.0/1.1/1.2/1.4/1.8 (ceil per stage)
    "efficientnet_b0": _timm("efficientnet", "efficientnet_b0", 16, width=1.0),
    "efficientnet_b1": _timm("efficientnet", "efficientnet_b1", 23, width=1.0),
    "efficientnet_b2": _timm("efficientnet", "efficientnet_b2", 23, width=1.1),
    "efficientnet_b3": _timm("efficientnet", "efficientnet_b3", 26, width=1.2),
    "efficientnet_b4": _timm("efficientnet", "efficientnet_b4", 32, width=1.4),
    "alexnet": _tv("alexnet", "alexnet", 5, robustart=False),
    # -- vision Transformers and MLP-Mixers
    "vit_b16": _timm("vit", "vit_base_patch16_224", 12, patch=16),
    "vit_b32": _timm("vit", "vit_base_patch32_224", 12, patch=32),
    "vit_l16": _timm("vit", "vit_large_patch16_224", 24, patch=16, width=1024 / 768, robustart=False),
    "deit_tiny": _timm("deit", "deit_tiny_patch16_224", 12, patch=16, width=0.25),
    "deit_small": _timm("deit", "deit_small_patch16_224", 12, patch=16, width=0.5),
    "deit_base": _timm("deit", "deit_base_patch16_224", 12, patch=16, width=1.0),
    "swin_t": _timm("swin", "swin_tiny_patch4_window7_224", 12, patch=4, robustart=False),
    "swin_s": _timm("swin", "swin_small_patch4_window7_224", 24, patch=4, robustart=False),
    "swin_b": _timm("swin", "swin_base_patch4_window7_224", 24, patch=4, width=1024 / 768, robustart=False),
    "mixer_b16": _timm("mixer", "mixer_b16_224", 12, patch=16),
    "mixer_l16": _timm("mixer", "mixer_l16_224", 24, patch=16, width=1024 / 768),
}

#: RobustART's spellings that differ from ours by more than letter case (``get_model_robust_dcit``).
ALIASES: dict[str, str] = {
    "vit_b16_224": "vit_b16",
    "vit_b32_224": "vit_b32",
    "vit_base_patch16_224": "vit_b16",
    "vit_base_patch32_224": "vit_b32",
    "deit_tiny_b16_224": "deit_tiny",
    "deit_small_b16_224": "deit_small",
    "deit_base_b16_224": "deit_base",
    "deit_tiny_patch16_224": "deit_tiny",
    "deit_small_patch16_224": "deit_small",
    "deit_base_patch16_224": "deit_base",
    "mixer_b16_224": "mixer_b16",
    "mixer_l16_224": "mixer_l16",
    "swin_tiny": "swin_t",
    "swin_small": "swin_s",
    "swin_base_224": "swin_b",
}


@dataclass(frozen=True)
class Measured:
    """One model's row of ``zoo_costs.json`` (ImageNet head, native resolution)."""

    resolution: int
    params: int
    macs: int
    params_per_class: int
    macs_per_class: int
    weight_layers: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@cache
def cost_table() -> tuple[int, dict[str, Measured]]:
    """``(num_classes it was measured with, name -> Measured)`` from the shipped JSON."""
    path = resources.files(__package__).joinpath(COST_TABLE)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise NasRobustError(
            f"{COST_TABLE} is missing from nasrobust.spaces; regenerate it with `python benchmarks/zoo_costs.py`"
        ) from None
    for lib in MODEL_LIBRARIES:
        version, installed = data["versions"].get(lib), _installed_version(lib)
        if installed is not None and installed != version:
            warnings.warn(
                f"the zoo cost table was measured with {lib} {version}, {installed} is installed; "
                "rerun `python benchmarks/zoo_costs.py` if costs changed",
                stacklevel=2,
            )
    rows = {
        name: Measured(
            int(r["resolution"]), int(r["params"]), int(r["macs"]), int(r["params_per_class"]),
            int(r["macs_per_class"]), int(r["weight_layers"]), tuple(r["mean"]), tuple(r["std"]),
        )
        for name, r in data["models"].items()
    }
    missing = [n for n in MODELS if n not in rows]
    if missing:
        raise NasRobustError(f"{COST_TABLE} lacks {missing}; regenerate it with `python benchmarks/zoo_costs.py`")
    return int(data["num_classes"]), rows


def _installed_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@register_space("zoo")
class ZooSpace(SearchSpace):
    """RobustART's human-designed architectures (ResNet ... ViT, Swin, MLP-Mixer), built with timm."""

    name = "zoo"
    description = "RobustART's off-the-shelf ImageNet models (CNNs, ViT/DeiT/Swin, MLP-Mixer) via timm"
    grammar = (
        "zoo:<model>, e.g. zoo:resnet50, zoo:vit_b16, zoo:mobilenet_v3_large_x0_75 (case-insensitive; "
        "RobustART's spellings such as vit_b16_224 are accepted)"
    )
    num_classes = 1000
    input_size = 224
    small_variant = None
    #: Every model has its own native resolution (``resolution`` factor).
    elastic_resolution = True

    def __init__(self) -> None:
        self._names = tuple(MODELS)
        self._measured: dict[tuple[str, int, int], Cost] = {}
        self._named: Mapping[str, Arch] | None = None

    # ------------------------------------------------------------------ genome
    def encode_genome(self, genome: Hashable) -> str:
        return str(genome)

    def parse_genome(self, body: str) -> Hashable:
        key = body.strip().lower()
        key = ALIASES.get(key, key)
        if key not in MODELS:
            close = difflib.get_close_matches(key, self._names, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"valid: {', '.join(self._names)}"
            raise self.encoding_error(body, f"no zoo model {body!r}; {hint}")
        return key

    def random_genome(self, rng: np.random.Generator) -> Hashable:
        return self._names[int(rng.integers(len(self._names)))]

    def validate(self, genome: Hashable) -> None:
        if genome not in MODELS:
            raise SpaceError(f"{genome!r} is not a zoo model; valid: {', '.join(self._names)}")

    def named(self) -> Mapping[str, Arch]:
        if self._named is None:
            self._named = MappingProxyType({n: self.arch(n) for n in self._names})
        return self._named

    def entry(self, arch: Arch) -> ZooModel:
        """The table row of ``arch``."""
        self._check_space(arch)
        return MODELS[arch.genome]

    # ------------------------------------------------------------------ size, moves
    def size(self) -> int:
        return len(self._names)

    def enumerate(self) -> Iterator[Arch]:
        return iter(self.named().values())

    def neighbors(self, arch: Arch) -> list[Arch]:
        """The other sizes of the same family; every other model for single-member families."""
        family = self.entry(arch).family
        same = [a for n, a in self.named().items() if MODELS[n].family == family and a != arch]
        return same or [a for a in self.named().values() if a != arch]

    # ------------------------------------------------------------------ analysis
    def factors(self, arch: Arch) -> dict[str, float]:
        """Size, cost, depth and design factors; the same keys for every model.

        ``depth`` is the table's ``blocks`` column, ``weight_layers`` the measured number of conv
        and linear layers; ``family`` is an index into :data:`FAMILIES`, repeated as a one-hot
        ``family_<name>``. Cost factors are at the native resolution with the ImageNet head.
        """
        row = self.entry(arch)
        family = FAMILIES[row.family]
        m = cost_table()[1][arch.genome]
        out: dict[str, float] = {
            "params_m": m.params / 1e6,
            "macs_g": m.macs / 1e9,
            "resolution": float(m.resolution),
            "depth": float(row.blocks),
            "weight_layers": float(m.weight_layers),
            "width_mult": float(row.width),
            "patch_size": float(row.patch),
            "family": float(list(FAMILIES).index(row.family)),
            **{f"is_{k}": float(family.kind == k) for k in KINDS},
            "depthwise": float(family.depthwise),
            "squeeze_excite": float(family.squeeze_excite),
        }
        out.update({f"family_{f}": float(f == row.family) for f in FAMILIES})
        return out

    def resolution(self, arch: Arch, input_size: int | None = None) -> int:
        """``input_size`` if given, else the model's native size (timm's ``pretrained_cfg``)."""
        self._check_space(arch)
        if input_size:
            return int(input_size)
        return cost_table()[1][arch.genome].resolution

    def normalization(self, arch: Arch) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """``(mean, std)`` the pretrained weights expect (ViT and Mixer use 0.5, not ImageNet's)."""
        self._check_space(arch)
        m = cost_table()[1][arch.genome]
        return m.mean, m.std

    def pretrained(self, arch: Arch) -> tuple["nn.Module", str]:
        """The published ImageNet weights (timm or torchvision; downloaded on first use) with the normalisation
        they expect, keyed ``timm-pretrained:<model>`` in the store."""
        from nasrobust.models import ImageClassifier

        mean, std = self.normalization(arch)
        net = self.build(arch, num_classes=self.num_classes, pretrained=True)
        return ImageClassifier(net, self.resolution(arch), mean, std), f"timm-pretrained:{arch.encoding.partition(':')[2]}"

    # ------------------------------------------------------------------ models and cost
    def build(
        self,
        arch: Arch,
        num_classes: int | None = None,
        input_size: int | None = None,
        pretrained: bool = False,
    ) -> "nn.Module":
        """The timm (or torchvision) network; ``pretrained=True`` downloads its weights."""
        from nasrobust.spaces._zoo_net import create

        row = self.entry(arch)
        if pretrained and not row.pretrained_available:
            raise NasRobustError(
                f"torchvision has no pretrained weights for {arch.encoding} ({row.model} with {dict(row.kwargs)}); "
                "use pretrained=False or a width with weights (x1.0)"
            )
        img_size = int(input_size) if input_size and FAMILIES[row.family].fixed_size else None
        return create(row, num_classes or self.num_classes, img_size=img_size, pretrained=pretrained)

    def cost(self, arch: Arch, num_classes: int | None = None, input_size: int | None = None) -> Cost:
        """The measured params and MACs (table lookup at the native size, meta-device count otherwise)."""
        row = self.entry(arch)
        base_classes, table = cost_table()
        m = table[arch.genome]
        classes = int(num_classes or self.num_classes)
        res = self.resolution(arch, input_size)
        if res == m.resolution:
            extra = classes - base_classes
            return Cost(m.params + extra * m.params_per_class, m.macs + extra * m.macs_per_class)
        key = (arch.genome, classes, res)
        if key not in self._measured:
            from nasrobust.spaces._zoo_net import measure

            log.debug("measuring %s at %d px on the meta device", arch.encoding, res)
            img_size = res if FAMILIES[row.family].fixed_size else None
            self._measured[key] = measure(row, classes, res, img_size=img_size).cost
        return self._measured[key]
