"""Carlini & Wagner L2 (S&P 2017) as a minimal-perturbation attack, on torchattacks' ``CW``.

Registered as ``cw_l2``: it runs once per model and an example counts as broken at an L2 eps iff
the smallest adversarial distance found is <= eps; the suite records the median distance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import torch
import torch.nn as nn

from nasrobust.noise.attacks.base import AttackSettings, AttackSpec, Perturb, lp_norms, register_attack, sanitize


class MinNormCW:
    """Carlini & Wagner L2 as a minimal-perturbation attack, on torchattacks' ``CW``.

    C&W (S&P 2017, Sec. V-A) search the constant ``c`` per example; torchattacks' ``CW`` takes
    one fixed ``c`` (its docstring: binary search not implemented). Here: run ``CW`` over an
    ascending grid of ``c`` on the examples not yet fooled (a smaller ``c`` weighs distance
    more, so the first success is the smallest), then ``search_steps`` rounds of log-space
    bisection between each example's last failing and first succeeding ``c`` (examples that
    share a midpoint run together). Each example keeps its smallest-L2 adversarial example.

    :meth:`distances` returns per-example L2 distances (``inf`` where nothing was found).
    """

    def __init__(self, model: nn.Module, c_grid: Sequence[float] = (0.1, 1.0, 10.0, 100.0), steps: int = 100,
                 lr: float = 0.1, search_steps: int = 2, kappa: float = 0.0):
        self.model, self.c_grid, self.steps, self.lr = model, tuple(sorted(c_grid)), int(steps), float(lr)
        self.search_steps, self.kappa = int(search_steps), float(kappa)

    def _run(self, c: float, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        adv = _cw_class()(self.model, c=c, kappa=self.kappa, steps=self.steps, lr=self.lr)(x, y)
        adv = sanitize(adv, x)
        with torch.no_grad():
            wrong = self.model(adv).argmax(dim=1) != y
        dist = lp_norms(adv - x, "l2").to(x.device)
        return adv, torch.where(wrong, dist, torch.full_like(dist, math.inf))

    def distances(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = images.detach(), labels.to(images.device)
        n = len(x)
        best = torch.full((n,), math.inf, dtype=torch.float64, device=x.device)
        best_adv = x.clone()
        lo = torch.zeros(n, dtype=torch.float64, device=x.device)  # largest c known to fail
        hi = torch.full((n,), math.inf, dtype=torch.float64, device=x.device)  # smallest c that succeeded

        def update(idx: torch.Tensor, c: float) -> None:
            adv, dist = self._run(c, x[idx], y[idx])
            ok = torch.isfinite(dist)
            better = dist < best[idx]
            best[idx[better]] = dist[better]
            best_adv[idx[better]] = adv[better]
            hi[idx[ok]] = torch.minimum(hi[idx[ok]], torch.full_like(hi[idx[ok]], c))
            lo[idx[~ok]] = torch.maximum(lo[idx[~ok]], torch.full_like(lo[idx[~ok]], c))

        for c in self.c_grid:
            todo = torch.isinf(best).nonzero().flatten()
            if len(todo) == 0:
                break
            update(todo, c)
        for _ in range(self.search_steps):
            found = torch.isfinite(hi).nonzero().flatten()
            if len(found) == 0:
                break
            mids = torch.where(lo[found] > 0, torch.sqrt(lo[found] * hi[found]), hi[found] / 10.0)
            for mid in torch.unique(mids).tolist():
                update(found[mids == mid], float(mid))
        self.last_adv = best_adv
        return best_adv, best

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.distances(images, labels)[0]


@lru_cache(maxsize=1)
def _cw_class() -> type:
    """torchattacks' ``CW`` with the change of variables kept finite at the box edges.

    torchattacks maps a pixel to ``w = atanh(2x - 1)``, which is ``+-inf`` for pixels at
    exactly 0 or 1 (most of MNIST): ``tanh`` has zero gradient there and those pixels can
    never move, so CW leaves the background untouched and fails. C&W's reference code
    (``l2_attack.py``) scales by 0.999999 before ``arctanh``; the same here.
    """
    import torchattacks

    class FiniteTanhCW(torchattacks.CW):
        def inverse_tanh_space(self, x: torch.Tensor) -> torch.Tensor:
            return torch.atanh(torch.clamp(x * 2 - 1, min=-1.0, max=1.0) * 0.999999)

    return FiniteTanhCW


def build_cw_l2(model: nn.Module, eps: float, s: AttackSettings, num_classes: int, seed: int) -> list[tuple[str, Perturb]]:
    return [("cw_l2", MinNormCW(model, s.cw_c_grid, s.cw_steps, s.cw_lr, s.cw_search_steps, s.cw_kappa))]


def _params(s: AttackSettings, num_classes: int) -> Mapping[str, Any]:
    return {"cw_c_grid": s.cw_c_grid, "cw_search_steps": s.cw_search_steps, "cw_steps": s.cw_steps,
            "cw_lr": s.cw_lr, "cw_kappa": s.cw_kappa}


CW_L2 = register_attack(AttackSpec("cw_l2", "l2", build_cw_l2, order=60, doc="Carlini-Wagner L2, minimal perturbation",
                                   minimal=True, params=_params))
