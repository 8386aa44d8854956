"""Learning-rate schedules, stepped once per iteration."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from nasrobust.train.recipe import Recipe


def lr_factor(recipe: Recipe, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the base lr at iteration ``t``: linear warm-up, then the recipe's decay.

    * ``cosine`` -- half-cosine from 1 to ``min_lr_ratio`` (Loshchilov & Hutter 2017).
    * ``bignas`` -- BigNAS's "exponentially decaying with constant ending" (Yu et al. 2020,
      sec. 3.1): exponential decay that reaches ``min_lr_ratio`` at 3/4 of training and then
      stays there. (The paper decays by 0.97 every 2.4 epochs down to 5% over its long
      schedule; tying the floor to 3/4 of the run keeps the shape for any epoch count.)
    * ``constant`` -- 1 after warm-up.
    * ``step`` -- piecewise constant (Rice et al. 2020, robust overfitting): ``lr_decay ** k`` after the
      ``k``-th of ``lr_milestones``, which are fractions of the whole run (warm-up included), each placed on
      iteration ``round(m * epochs * steps_per_epoch)``: with the defaults (0.5, 0.75) and 0.1, the lr is divided
      by 10 at the start of epochs 101 and 151 of 200. Warm-up takes precedence over a milestone inside it.
    """
    total = max(1, recipe.epochs * steps_per_epoch)
    warm = int(round(recipe.warmup_epochs * steps_per_epoch))
    floor = recipe.min_lr_ratio
    milestones = [int(round(m * total)) for m in recipe.lr_milestones]

    def decay(progress: float) -> float:
        if recipe.schedule == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if recipe.schedule == "bignas":
            if floor <= 0:
                raise ValueError("the bignas schedule needs min_lr_ratio > 0 (its constant ending)")
            return max(floor, floor ** (progress / 0.75))
        return 1.0

    def factor(t: int) -> float:
        if t < warm:
            return (t + 1) / warm
        if recipe.schedule == "step":
            return recipe.lr_decay ** sum(t >= m for m in milestones)
        return decay((t - warm) / max(1, total - warm))

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration scheduler of :func:`lr_factor` (its state is the iteration count, so a resumed run continues the
    same sequence)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(recipe, steps_per_epoch))
