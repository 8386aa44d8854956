"""PGD in the Linf, L2 and L1 balls (Madry et al., "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018): ``steps`` steps of ``step_fraction * eps`` from a random start.

Linf and L2 are torchattacks' ``PGD`` / ``PGDL2``. torchattacks has no L1 PGD:
:class:`SparseL1Descent` is Tramer & Boneh's SLIDE ("Adversarial Training and Robustness for
Multiple Perturbations", NeurIPS 2019, Alg. 1), the variant advertorch ships as
``SparseL1DescentAttack``, with the exact L1 projection of :func:`~nasrobust.noise.attacks.base.project_l1`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from nasrobust.noise.attacks.base import AttackSettings, AttackSpec, Perturb, project_l1, register_attack


def early_exit_enabled() -> bool:
    """Per-example early exit in our own attacks; ``NASROBUST_NO_EARLY_EXIT=1`` turns it off (benchmarks)."""
    return os.environ.get("NASROBUST_NO_EARLY_EXIT", "") in ("", "0")


class SparseL1Descent:
    """PGD in the L1 ball: sparse steepest-ascent steps + exact L1 projection + box clip.

    Tramer & Boneh 2019, Alg. 1 (SLIDE), as advertorch's ``SparseL1DescentAttack``: per step
    the gradient of the cross-entropy is restricted to its largest ``1 - sparsity`` fraction of
    coordinates (by magnitude), signed, scaled to L1 length ``alpha``; ``x + delta`` is projected
    onto the L1 ball (Duchi et al. 2008) and clipped to [0, 1] (clipping only shrinks
    ``|delta|``, so the L1 budget holds). As in Tramer & Boneh's and foolbox's versions,
    coordinates sitting on the box boundary whose gradient points outside are dropped before
    the top-k selection (otherwise the step is wasted on them, e.g. MNIST's black background).
    The random start is uniform in the L1 ball (Laplace direction, radius ``eps U^(1/d)``),
    drawn from an explicit ``torch.Generator``. Like auto-attack's APGD, an example keeps the
    first misclassified iterate (checked on the logits each step computes anyway) rather than
    only the last one.

    RobustART's own L1 numbers come from ART's ``ProjectedGradientDescentPyTorch(norm=1)``
    (dense L1-normalised steps); the sparse variant is the stronger L1 PGD and is used here.
    """

    def __init__(self, model: nn.Module, eps: float, alpha: float, steps: int, sparsity: float = 0.95,
                 random_start: bool = True, generator: torch.Generator | None = None, early_exit: bool | None = None):
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        self.model, self.eps, self.alpha, self.steps = model, float(eps), float(alpha), int(steps)
        self.sparsity, self.random_start = float(sparsity), random_start
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.early_exit = early_exit_enabled() if early_exit is None else early_exit

    def _random_start(self, x: torch.Tensor) -> torch.Tensor:
        n, d = len(x), x[0].numel()
        g = self.generator
        u = torch.rand((n, d), generator=g, device=g.device)
        lap = -torch.log1p(-u.clamp(max=1 - 1e-7))  # Exp(1) magnitudes
        sign = torch.where(torch.rand((n, d), generator=g, device=g.device) < 0.5, -1.0, 1.0)
        direction = sign * lap
        direction = direction / direction.abs().sum(dim=1, keepdim=True).clamp_min(1e-12)
        radius = self.eps * torch.rand((n, 1), generator=g, device=g.device) ** (1.0 / d)
        return (direction * radius).to(device=x.device, dtype=x.dtype).reshape(x.shape)

    def _direction(self, grad: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        n = len(grad)
        blocked = ((x_adv <= 0) & (grad < 0)) | ((x_adv >= 1) & (grad > 0))
        g = grad.masked_fill(blocked, 0.0).reshape(n, -1)
        k = max(1, int(round((1.0 - self.sparsity) * g.shape[1])))
        _, idx = g.abs().topk(k, dim=1)
        e = torch.zeros_like(g).scatter_(1, idx, torch.sign(g.gather(1, idx)))
        e = e / e.abs().sum(dim=1, keepdim=True).clamp_min(1.0)  # all-zero rows stay zero
        return e.reshape(grad.shape)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = images.detach()
        y = labels.to(x.device)
        delta = self._random_start(x) if self.random_start and self.eps > 0 else torch.zeros_like(x)
        x_adv = (x + project_l1(delta, self.eps)).clamp(0.0, 1.0)
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        best = x_adv.clone()
        if self.early_exit:
            return self._attack_active(x, y, x_adv, found, best)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            logits = self.model(x_adv)
            grad, = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x_adv)
            x_adv = x_adv.detach()
            newly = (logits.detach().argmax(dim=1) != y) & ~found
            best[newly] = x_adv[newly]
            found |= newly
            step = x_adv + self.alpha * self._direction(grad, x_adv)
            x_adv = (x + project_l1(step - x, self.eps)).clamp(0.0, 1.0)
        with torch.no_grad():
            last_wrong = self.model(x_adv).argmax(dim=1) != y
        keep_last = ~found | last_wrong
        best[keep_last] = x_adv[keep_last]
        return best.detach()

    def _attack_active(self, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, found: torch.Tensor,
                       best: torch.Tensor) -> torch.Tensor:
        """Per-example early exit: an example keeps its first misclassified iterate and is not
        stepped further (the loss is a per-example sum, the model is in eval mode, so the other
        examples' steps do not depend on it). The random start was drawn for the full batch."""
        active = torch.arange(len(x), device=x.device)
        xa = x_adv
        for _ in range(self.steps):
            xa.requires_grad_(True)
            logits = self.model(xa)
            grad, = torch.autograd.grad(F.cross_entropy(logits, y[active], reduction="sum"), xa)
            xa = xa.detach()
            newly = logits.detach().argmax(dim=1) != y[active]
            best[active[newly]] = xa[newly]
            found[active[newly]] = True
            keep = ~newly
            active, xa, grad = active[keep], xa[keep], grad[keep]
            if len(active) == 0:
                return best.detach()
            step = xa + self.alpha * self._direction(grad, xa)
            xa = (x[active] + project_l1(step - x[active], self.eps)).clamp(0.0, 1.0)
        best[active] = xa  # never misclassified during the steps: the last iterate, as without early exit
        return best.detach()


def step_params(s: AttackSettings, num_classes: int) -> Mapping[str, Any]:
    """The step size every iterative attack records (PGD and MIM share it)."""
    return {"step_size": f"{s.step_fraction:g} * eps"}


def build_pgd_linf(model: nn.Module, eps: float, s: AttackSettings, num_classes: int, seed: int) -> list[tuple[str, Perturb]]:
    import torchattacks

    return [("pgd_linf", torchattacks.PGD(model, eps=eps, alpha=s.step_fraction * eps, steps=s.steps, random_start=True))]


def build_pgd_l2(model: nn.Module, eps: float, s: AttackSettings, num_classes: int, seed: int) -> list[tuple[str, Perturb]]:
    import torchattacks

    return [("pgd_l2", torchattacks.PGDL2(model, eps=eps, alpha=s.step_fraction * eps, steps=s.steps, random_start=True))]


def build_pgd_l1(model: nn.Module, eps: float, s: AttackSettings, num_classes: int, seed: int) -> list[tuple[str, Perturb]]:
    gen = torch.Generator().manual_seed(seed)
    return [("pgd_l1", SparseL1Descent(model, eps, s.step_fraction * eps, s.steps, s.l1_sparsity, True, gen))]


def _l1_params(s: AttackSettings, num_classes: int) -> Mapping[str, Any]:
    return {**step_params(s, num_classes), "pgd_l1_sparsity": s.l1_sparsity}


PGD_LINF = register_attack(AttackSpec("pgd_linf", "linf", build_pgd_linf, order=20, doc="PGD in the Linf ball",
                                      random_start=True, transferable=True, strength=2, zero_budget_check=True,
                                      params=step_params))
PGD_L2 = register_attack(AttackSpec("pgd_l2", "l2", build_pgd_l2, order=30, doc="PGD in the L2 ball",
                                    random_start=True, transferable=True, params=step_params))
PGD_L1 = register_attack(AttackSpec("pgd_l1", "l1", build_pgd_l1, order=40, doc="sparse L1 descent (SLIDE)",
                                    random_start=True, transferable=True, params=_l1_params))
