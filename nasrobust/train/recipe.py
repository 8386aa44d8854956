"""Training recipes: every technique RobustART compares is one field.

A :class:`Recipe` is a frozen, JSON-serialisable value stored in every checkpoint, so a
later step (evaluation, fine-tuning, resuming) knows exactly how the weights were made.
Named presets (:data:`PRESETS`) hold documented settings such as the CPU-sized ``quick``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from nasrobust.errors import NasRobustError, UnknownNameError
from nasrobust.fieldtypes import check_fields

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "bignas", "constant", "step")
ADVERSARIAL = ("none", "pgd", "fgsm-rs", "trades")
AUGMENTS = ("none", "randaugment", "autoaugment")


@dataclass(frozen=True)
class SandwichConfig:
    """BigNAS sandwich rule (Yu et al., ECCV 2020): largest + smallest + ``num_random`` subnets per step."""

    num_random: int = 2
    inplace_distill: bool = True  # smaller subnets learn the largest's soft predictions
    reg_largest_only: bool = True  # label smoothing / mixup only on the largest (BigNAS sec. 3.1)
    kd_temperature: float = 1.0
    #: Adversarial examples for sandwich training: made against each sampled subnet ("each")
    #: or once against the largest and reused ("largest").
    adv_target: str = "each"


@dataclass(frozen=True)
class Recipe:
    """How to train: optimiser, schedule, regularisation, augmentation, adversarial training."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1  # for batch_size; scaled linearly with the global batch size under torchrun
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0  # cosine floor / BigNAS constant ending, as a fraction of lr
    #: ``step`` schedule: the lr is multiplied by ``lr_decay`` at each milestone, given as a fraction of the whole
    #: run (Rice et al. 2020's piecewise decay at epochs 100 and 150 of 200 by default).
    lr_milestones: tuple[float, ...] = (0.5, 0.75)
    lr_decay: float = 0.1
    grad_clip: float | None = None
    label_smoothing: float = 0.0
    mixup: float = 0.0  # Beta(alpha, alpha); 0 disables (timm Mixup)
    cutmix: float = 0.0
    augment: str = "none"  # torchvision RandAugment / AutoAugment
    random_crop: bool = False  # pad-4 random crop + flip (CIFAR style); off for digits
    ema_decay: float | None = None  # timm ModelEmaV3
    kd_teacher: str | None = None  # checkpoint path of a teacher for knowledge distillation
    kd_alpha: float = 0.5
    kd_temperature: float = 4.0
    adversarial: str = "none"
    adv_eps: float = 8 / 255
    adv_steps: int = 10
    adv_alpha: float | None = None  # step size; default 2.5 * eps / steps (Madry et al.)
    trades_beta: float = 6.0
    amp: bool = True  # used on CUDA only
    channels_last: bool = True  # used on CUDA only
    sandwich: SandwichConfig = field(default_factory=SandwichConfig)
    bn_recalib_images: int = 2000  # images used to re-calibrate BN of a subnet before scoring
    #: Stand-alone runs: re-estimate BN statistics on ``bn_recalib_images`` clean training images
    #: before each epoch's evaluation and checkpoint ("precise BN"). None = on when fine-tuning from
    #: a supernet without adversarial training, the convention every supernet subnet is scored by.
    precise_bn: bool | None = None
    seed: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        checks = {
            "optimizer": (self.optimizer, OPTIMIZERS),
            "schedule": (self.schedule, SCHEDULES),
            "adversarial": (self.adversarial, ADVERSARIAL),
            "augment": (self.augment, AUGMENTS),
            "sandwich.adv_target": (self.sandwich.adv_target, ("each", "largest")),
        }
        for name, (value, valid) in checks.items():
            if value not in valid:
                raise NasRobustError(f"recipe {name}={value!r} is not one of {', '.join(valid)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise NasRobustError("recipe epochs and batch_size must be positive")
        if self.lr <= 0:
            raise NasRobustError(f"recipe lr must be positive, got {self.lr}")
        self._check_step_schedule()
        if (self.mixup or self.cutmix) and self.batch_size % 2:
            raise NasRobustError("mixup/cutmix need an even batch size")

    def _check_step_schedule(self) -> None:
        """Milestones: increasing fractions of the run in (0, 1); decay factor in (0, 1]. A list (JSON, CLI) becomes a
        tuple, so recipes stay hashable and equal to their round trip."""
        ms = self.lr_milestones
        example = "e.g. lr_milestones = [0.5, 0.75] (--lr-milestones 0.5 0.75)"
        if not isinstance(ms, (list, tuple)) or not all(isinstance(m, (int, float)) and not isinstance(m, bool) for m in ms):
            raise NasRobustError(f"recipe lr_milestones={ms!r} must be a list of numbers, {example}")
        object.__setattr__(self, "lr_milestones", tuple(float(m) for m in ms))
        if not all(0 < m < 1 for m in ms) or any(a >= b for a, b in zip(ms, ms[1:])):
            raise NasRobustError(f"recipe lr_milestones={list(ms)} must be increasing fractions of the run strictly "
                                 f"between 0 and 1, {example}")
        if not 0 < self.lr_decay <= 1:
            raise NasRobustError(f"recipe lr_decay={self.lr_decay} must be in (0, 1], e.g. 0.1 (the lr is multiplied "
                                 "by it at each milestone)")

    @property
    def adv_step_size(self) -> float:
        return self.adv_alpha if self.adv_alpha is not None else 2.5 * self.adv_eps / self.adv_steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise NasRobustError(f"unknown recipe fields: {', '.join(sorted(unknown))}")
        check_fields(cls, data, "recipe")
        if isinstance(data.get("sandwich"), dict):
            data["sandwich"] = SandwichConfig(**data["sandwich"])
        return cls(**data)

    def replace(self, **changes: Any) -> "Recipe":
        """A copy with ``changes``; ``None`` values are ignored (CLI flags left unset)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        sandwich = {k[len("sandwich_"):]: changes.pop(k) for k in list(changes) if k.startswith("sandwich_")}
        if sandwich:
            changes["sandwich"] = dataclasses.replace(self.sandwich, **sandwich)
        return dataclasses.replace(self, **changes)


def stored_recipe(data: dict[str, Any]) -> dict[str, Any]:
    """A recipe as stored by a run (checkpoint, study config) with the fields added since it was written at their
    defaults, so an earlier run of the same recipe still compares equal; unchanged if it is not a valid recipe."""
    try:
        return Recipe.from_dict(data).to_dict()
    except (NasRobustError, TypeError):
        return dict(data)


#: Documented presets. ``quick`` is sized for a 2-core CPU on mnist5k (minutes, not hours).
PRESETS: dict[str, Recipe] = {
    # CPU-sized: ten epochs of SGD with cosine decay on 28-px digits (~630 sandwich steps on mnist5k).
    # Batch 64 / lr 0.05 rather than 128 / 0.1: at 6 epochs of batch 128 (188 steps) the bignas-small
    # supernet stopped at 96.6% largest / 92.2% smallest (benchmarks/supernet_quick.md).
    "quick": Recipe(epochs=10, batch_size=64, lr=0.05, weight_decay=5e-4, warmup_epochs=0.5),
    # Stand-alone CIFAR-style training (e.g. NAS-Bench-201's 200-epoch recipe uses lr 0.1, wd 5e-4).
    "cifar": Recipe(epochs=200, batch_size=256, lr=0.1, weight_decay=5e-4, random_crop=True, warmup_epochs=0),
    # BigNAS ImageNet recipe: RMSProp in the paper; SGD + the exponential schedule with constant ending here.
    "bignas": Recipe(
        epochs=120, batch_size=1024, lr=0.4, weight_decay=1e-5, schedule="bignas", warmup_epochs=5,
        min_lr_ratio=0.05, label_smoothing=0.1, augment="randaugment", random_crop=True,
    ),
    # Madry PGD-AT on CIFAR-10 (eps 8/255, 10 steps of 2/255).
    "pgd-at": Recipe(epochs=100, batch_size=128, lr=0.1, weight_decay=5e-4, adversarial="pgd", adv_eps=8 / 255, adv_steps=10, adv_alpha=2 / 255, random_crop=True),
}


def get_preset(name: str) -> Recipe:
    try:
        return PRESETS[name]
    except KeyError:
        raise NasRobustError(f"unknown recipe preset {name!r}; valid: {', '.join(PRESETS)}") from None


#: Named training techniques (the study's technique axis, ``nasrobust study --techniques``): recipe options
#: put on top of the study's recipe, so two techniques differ only in these options and share everything
#: else (preset, epochs, seed). Any preset name is a technique too (its whole recipe, the study's seed).
#: ``pgd-at`` is Madry PGD-AT at the CPU protocol's Linf eps 0.1 on [0, 1] digits (5 steps of 0.025);
#: it costs ~6 forward/backward passes per training step where ``standard`` costs one.
TECHNIQUES: dict[str, dict[str, Any]] = {
    "standard": {"adversarial": "none"},
    "pgd-at": {"adversarial": "pgd", "adv_eps": 0.1, "adv_steps": 5, "adv_alpha": 0.025},
    "fgsm-rs": {"adversarial": "fgsm-rs", "adv_eps": 0.1},
    "trades": {"adversarial": "trades", "adv_eps": 0.1, "adv_steps": 5, "adv_alpha": 0.025},
}


def check_technique(name: str) -> None:
    """Raise a did-you-mean error for a name that is neither a named technique nor a preset."""
    if name not in TECHNIQUES and name not in PRESETS:
        raise UnknownNameError("technique", name, {*TECHNIQUES, *PRESETS})


def technique_recipe(base: dict[str, Any], name: str) -> Recipe:
    """The recipe of technique ``name`` built on a study's resolved ``base`` recipe (a named technique wins over
    the preset of the same name)."""
    check_technique(name)
    if name in TECHNIQUES:
        return Recipe.from_dict({**base, **TECHNIQUES[name]})
    return Recipe.from_dict({**PRESETS[name].to_dict(), "seed": base.get("seed", 0)})
