"""AdvRush: DARTS with an input-loss-curvature regulariser on the architecture parameters.

Mok, Na, Choe, Choi & Hwang, "AdvRush: Searching for Adversarially Robust Neural Architectures",
ICCV 2021. AdvRush adds ``gamma * L_curv`` to the upper-level (validation) loss, where ``L_curv``
penalises the curvature of the input loss landscape of the soft supernet, estimated with CURE's
finite difference (Moosavi-Dezfooli et al., "Robustness via Curvature Regularization, and Vice
Versa", CVPR 2019):

    z = h * sign(g) / ||sign(g)||_2,   g = grad_x l(x, y)
    L_curv = lambda * mean_x || grad_x l(x + z, y) - grad_x l(x, y) ||_2

(``l`` the per-example cross-entropy, gradients w.r.t. the ``[0, 1]`` input image, eval-mode
BN; ``z`` is a constant direction). The authors' code (``advrush/regularizer.py``,
``architect.py``, read, not copied) uses ``lambda = 4`` and a CURE step ``h = 3``; the regulariser
is switched on only after a warm-up of the bilevel search (epoch 50 of 60 in the paper), here
``reg_start_epoch`` (default 1; scale it with the budget). In this framework's convention the
regulariser is ``R = -L_curv`` (higher = flatter = more robust) so that the objective is
``L_val - gamma * R``, with AdvRush's ``gamma = 0.01``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from nasrobust.diffsearch import DifferentiableSearcher, DiffOptions, Params, Regularizer, with_params
from nasrobust.search import register_searcher


@dataclass(frozen=True)
class CurvatureRegularizer(Regularizer):
    """``R = -lambda * mean ||grad_x l(x + z) - grad_x l(x)||_2`` (CURE's curvature estimate, negated)."""

    h: float = 3.0
    lam: float = 4.0
    name: ClassVar[str] = "input_curvature"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: Params | None = None) -> torch.Tensor:
        net = with_params(model, params)
        with torch.enable_grad():
            x0 = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(net(x0), y, reduction="sum"), x0)
            s = torch.sign(g).detach()
            z = self.h * (s + 1e-7) / (s.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1)) + 1e-7)
            xi = x.detach().requires_grad_(True)
            diff = F.cross_entropy(net(xi + z), y, reduction="sum") - F.cross_entropy(net(xi), y, reduction="sum")
            (gd,) = torch.autograd.grad(diff, xi, create_graph=True)
        return -self.lam * gd.flatten(1).norm(dim=1).mean()


@dataclass(frozen=True)
class AdvRushOptions(DiffOptions):
    """AdvRush's settings: ``gamma = 0.01``, CURE ``h = 3``, regulariser from ``reg_start_epoch`` on."""

    gamma: float = 0.01
    warmup_epochs: int = 1
    reg_start_epoch: int = 1
    curvature_h: float = 3.0


@register_searcher("advrush", "AdvRush: DARTS + input loss curvature regulariser (Mok et al., ICCV 2021)")
class AdvRush(DifferentiableSearcher):
    name = "advrush"
    Options = AdvRushOptions

    def regularizer(self) -> Regularizer:
        return CurvatureRegularizer(h=self.options.curvature_h)
