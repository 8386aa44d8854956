"""What one optimisation step does: a single network, or a BigNAS sandwich of subnets.

A step computes losses and calls ``backward``; the engine owns zeroing, gradient
synchronisation, clipping and the optimiser step, so both strategies share them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from nasrobust.space import Arch
from nasrobust.train.adversarial import EXAMPLE_MAKERS, trades_loss
from nasrobust.train.losses import classification_loss, correct_count, distillation_loss
from nasrobust.train.recipe import Recipe


@dataclass
class StepResult:
    """Tensors on the step's device (0-dim; loss in float64), so a step never waits for the GPU."""

    loss: torch.Tensor
    correct: torch.Tensor  # of the (largest) network on the training batch
    count: int


class StandaloneStep:
    """One network: (adversarial) examples, loss with label smoothing / soft targets / KD."""

    def __init__(self, recipe: Recipe, generator: torch.Generator, teacher: nn.Module | None = None,
                 autocast: Callable[[], object] | None = None):
        self.recipe = recipe
        self.generator = generator
        self.teacher = teacher
        self.autocast = autocast or _no_autocast

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, scale: Callable[[torch.Tensor], torch.Tensor]) -> StepResult:
        r = self.recipe
        attacked = getattr(model, "module", model)  # make examples on the bare model, not a DDP wrapper
        if r.adversarial == "trades":
            x_adv = EXAMPLE_MAKERS["trades"](attacked, x, y, r, self.generator)
            with self.autocast():
                logits = model(x)
                loss = trades_loss(logits, model(x_adv), y, r.trades_beta)
        else:
            if r.adversarial != "none":
                x = EXAMPLE_MAKERS[r.adversarial](attacked, x, y, r, self.generator)
            with self.autocast():
                logits = model(x)
                loss = classification_loss(logits, y, r.label_smoothing)
                if self.teacher is not None:
                    with torch.no_grad():
                        soft = self.teacher(x)
                    loss = (1 - r.kd_alpha) * loss + r.kd_alpha * distillation_loss(logits, soft, r.kd_temperature)
        scale(loss).backward()
        return StepResult(loss.detach().double(), correct_count(logits.detach(), y), len(y))


class SandwichStep:
    """BigNAS sandwich rule (Yu et al., ECCV 2020, sec. 3.1) on a supernet classifier.

    Per step: the largest subnet, the smallest, and ``num_random`` random ones, gradients
    summed over all of them. The largest learns from the labels (with label smoothing /
    mixup targets: the only one regularised when ``reg_largest_only``); the others learn from
    the largest's detached predictions (in-place distillation) or, without it, from the
    labels with no regularisation. Adversarial training makes examples against each subnet or
    once against the largest (``sandwich.adv_target``).
    """

    def __init__(self, recipe: Recipe, generator: torch.Generator, rng: np.random.Generator,
                 autocast: Callable[[], object] | None = None):
        self.recipe = recipe
        self.generator = generator
        self.rng = rng
        self.autocast = autocast or _no_autocast

    def subnets(self, model) -> list[Arch]:
        sn = model.supernet
        return [sn.largest(), sn.smallest(), *(sn.sample(self.rng) for _ in range(self.recipe.sandwich.num_random))]

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, scale: Callable[[torch.Tensor], torch.Tensor]) -> StepResult:
        r, s = self.recipe, self.recipe.sandwich
        hard_y = y.argmax(-1) if y.dtype.is_floating_point else y
        teacher_logits = None
        x_largest_adv = None
        total = torch.zeros((), dtype=torch.float64, device=x.device)  # the sum float() gave, without a sync per subnet
        correct = torch.zeros((), dtype=torch.int64, device=x.device)
        for i, arch in enumerate(self.subnets(model)):
            model.set_active(arch)
            x_in = x
            if r.adversarial in ("pgd", "fgsm-rs", "trades"):
                if s.adv_target == "each" or x_largest_adv is None:
                    x_in = EXAMPLE_MAKERS[r.adversarial](model, x, hard_y, r, self.generator)
                    if i == 0:
                        x_largest_adv = x_in
                else:
                    x_in = x_largest_adv
            with self.autocast():
                if r.adversarial == "trades":
                    logits = model(x)
                    adv_logits = model(x_in)
                    loss = trades_loss(logits, adv_logits, hard_y, r.trades_beta)
                else:
                    logits = model(x_in)
                    if i == 0:
                        loss = classification_loss(logits, y, r.label_smoothing)
                    elif s.inplace_distill:
                        loss = distillation_loss(logits, teacher_logits, s.kd_temperature)
                    else:
                        plain = hard_y if s.reg_largest_only else y
                        loss = classification_loss(logits, plain, 0.0 if s.reg_largest_only else r.label_smoothing)
            if i == 0:
                teacher_logits = logits.detach()
                correct = correct_count(teacher_logits, hard_y)
            scale(loss).backward()
            total = total + loss.detach().double()
        return StepResult(total, correct, len(y))


def _no_autocast():
    import contextlib

    return contextlib.nullcontext()
