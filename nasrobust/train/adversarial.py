"""Adversarial examples for training: PGD-AT, fast FGSM-RS and TRADES.

Written here rather than taken from torchattacks because training needs an explicit
``torch.Generator`` for the random starts (reproducible runs), control of the model's mode
while the examples are made, and examples against the *active* subnet of a supernet.
Evaluation uses torchattacks (:mod:`nasrobust.noise.adversarial`).

Examples are made in eval mode (BN uses running statistics, so attack steps do not pollute
them, as in TRADES' reference code), then the model is put back in training mode.

* PGD-AT -- Madry et al., ICLR 2018: Linf PGD from a uniform random start.
* FGSM-RS -- Wong, Rice & Kolter, ICLR 2020 ("Fast is better than free"): one FGSM step of
  size 1.25 eps from a uniform random start.
* TRADES -- Zhang et al., ICML 2019: examples maximise KL(f(x) || f(x')) from x + 0.001 N(0, 1);
  the loss is CE(f(x), y) + beta KL(f(x) || f(x')).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from nasrobust.train.recipe import Recipe


def _uniform(x: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(x.shape, generator=generator, device="cpu").to(x.device) * 2 - 1) * eps


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0.0, 1.0)


def _ascend(
    model: nn.Module, x: torch.Tensor, start: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor],
    eps: float, alpha: float, steps: int,
) -> torch.Tensor:
    x_adv = _project(start, x, eps).detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            grad, = torch.autograd.grad(loss_fn(model(x_adv)), x_adv)
        x_adv = _project(x_adv.detach() + alpha * grad.sign(), x, eps).detach()
    return x_adv


class _EvalMode:
    """Context manager: eval mode inside, the previous mode restored after."""

    def __init__(self, model: nn.Module):
        self.model, self.was_training = model, model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


def pgd_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, generator: torch.Generator) -> torch.Tensor:
    with _EvalMode(model):
        return _ascend(model, x, x + _uniform(x, recipe.adv_eps, generator), lambda out: F.cross_entropy(out, y),
                       recipe.adv_eps, recipe.adv_step_size, recipe.adv_steps)


def fgsm_rs_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, generator: torch.Generator) -> torch.Tensor:
    with _EvalMode(model):
        return _ascend(model, x, x + _uniform(x, recipe.adv_eps, generator), lambda out: F.cross_entropy(out, y),
                       recipe.adv_eps, 1.25 * recipe.adv_eps, 1)


def trades_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, generator: torch.Generator) -> torch.Tensor:
    with _EvalMode(model):
        with torch.no_grad():
            clean = F.log_softmax(model(x), dim=-1)
        noise = 0.001 * torch.randn(x.shape, generator=generator, device="cpu").to(x.device)
        kl = lambda out: F.kl_div(F.log_softmax(out, dim=-1), clean, reduction="sum", log_target=True)  # noqa: E731
        return _ascend(model, x, x + noise, kl, recipe.adv_eps, recipe.adv_step_size, recipe.adv_steps)


def trades_loss(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    robust = F.kl_div(F.log_softmax(logits_adv, dim=-1), F.log_softmax(logits_clean, dim=-1), reduction="batchmean", log_target=True)
    return F.cross_entropy(logits_clean, y) + beta * robust


#: recipe.adversarial -> example maker
EXAMPLE_MAKERS: dict[str, Callable[..., torch.Tensor]] = {
    "pgd": pgd_examples,
    "fgsm-rs": fgsm_rs_examples,
    "trades": trades_examples,
}
