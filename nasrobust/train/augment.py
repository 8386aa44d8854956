"""Batch augmentation: random crop and flip, torchvision's RandAugment / AutoAugment, timm's Mixup / CutMix.

The crop and flip draw from the run's explicit generator. Library implementations draw from
the global torch / numpy generators, so the engine seeds those from the recipe's seed and
saves their state in checkpoints (a resumed run continues the same random stream).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from nasrobust.train.recipe import Recipe


def _random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """CIFAR-style pad-``pad`` random crop and horizontal flip, per image (offsets drawn on the CPU)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    return torch.where(flip.view(-1, 1, 1, 1).to(x.device), out.flip(-1), out)


def _policy(kind: str) -> Callable[[torch.Tensor], torch.Tensor]:
    from torchvision.transforms import v2

    transforms = {"randaugment": v2.RandAugment, "autoaugment": v2.AutoAugment}
    op = transforms[kind]()

    def apply(x: torch.Tensor) -> torch.Tensor:
        # the policies work on uint8 images; one draw per image (a batch call would share it)
        as_uint8 = (x * 255).round().to(torch.uint8)
        return torch.stack([op(img) for img in as_uint8]).to(x.dtype) / 255

    return apply


class BatchAugment:
    """Applies the recipe's augmentation to a batch; returns images and (maybe soft) targets."""

    def __init__(self, recipe: Recipe, num_classes: int, generator: torch.Generator):
        self.crop = recipe.random_crop
        self.generator = generator
        self.policy = _policy(recipe.augment) if recipe.augment != "none" else None
        self.mixup = None
        if recipe.mixup > 0 or recipe.cutmix > 0:
            from timm.data import Mixup

            self.mixup = Mixup(
                mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix,
                label_smoothing=recipe.label_smoothing, num_classes=num_classes,
            )

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.crop:
            x = _random_crop_flip(x, self.generator)
        if self.policy is not None:
            x = self.policy(x)
        if self.mixup is not None:
            x, y = self.mixup(x, y)  # y becomes smoothed soft targets
        return x, y
