"""The model interface every suite and trainer sees.

Networks built by spaces take normalised 3-channel images at their own resolution. Noise
suites, on the other hand, must perturb images in ``[0, 1]`` at the dataset's native size
(an Linf ball of 8/255 is defined there). :class:`ImageClassifier` bridges the two: it
repeats grey channels, resizes to the architecture's resolution and normalises, all inside
the model, so attacks need no ``set_normalization_used`` and every suite treats every model
the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from nasrobust.io import format_table

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageClassifier(nn.Module):
    """``[0, 1]`` images of any size and 1 or 3 channels -> logits of ``net``."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        net: nn.Module,
        resolution: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        super().__init__()
        if len(mean) != 3 or len(std) != 3:
            raise ValueError("mean and std need 3 values (grey images are repeated to 3 channels)")
        self.net = net
        self.resolution = int(resolution)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected images shaped (N, 1|3, H, W), got {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(x))


def layer_summary(model: nn.Module, depth: int = 2) -> str:
    """Modules down to ``depth`` levels with their type and parameter count (``nasrobust describe``)."""
    rows = []
    for name, module in model.named_modules():
        level = name.count(".") + 1 if name else 0
        if 0 < level <= depth:
            n = sum(p.numel() for p in module.parameters())
            rows.append(("  " * (level - 1) + name.rsplit(".", 1)[-1], type(module).__name__, f"{n:,}"))
    return format_table(rows, ["module", "type", "params"])
