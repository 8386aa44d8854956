"""Minimum-norm radius by bisection over eps with PGD early-stopped per example (Linf and L2).

Registered as ``minnorm_linf`` and ``minnorm_l2`` (minimal-perturbation attacks, not in the
default set): per example, the smallest eps at which PGD broke it, so the suite records a
continuous radius (``median_linf`` / ``median_l2``) instead of accuracy at one fixed eps,
which sits at the floor for weak subnets (issue 11, item 3).

Why bisection with PGD rather than FAB/FMN: it reuses the threat model the suite already
validates (PGD matches torchattacks), and its radius brackets PGD accuracy by construction: an
example with radius r was broken by PGD at eps r. Each bisection round attacks every example at
its own eps (a per-example ball), and an example leaves the PGD loop as soon as it is
misclassified, so the cost is a few PGD runs on the examples still standing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from nasrobust.noise.attacks.base import AttackSettings, AttackSpec, Perturb, derive_seed, lp_norms, register_attack

#: Upper end of the search per norm on [0, 1] images: Linf 1 is the whole box; L2 10 is far
#: beyond MNIST's 2 (Tramer & Boneh) while staying a real perturbation, not a new image.
EPS_MAX: Mapping[str, float] = {"linf": 1.0, "l2": 10.0}


def _view(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)


def _project(delta: torch.Tensor, norm: str, eps: torch.Tensor) -> torch.Tensor:
    """Projection onto per-example eps-balls (``eps`` has one entry per example)."""
    if norm == "linf":
        e = _view(eps, delta)
        return torch.maximum(torch.minimum(delta, e), -e)
    norms = delta.reshape(len(delta), -1).norm(dim=1).clamp_min(1e-12)
    return delta * _view((eps.to(norms.dtype) / norms).clamp(max=1.0), delta)


class MinNormPGD:
    """Per-example smallest eps PGD needs, by bisection in ``[0, eps_max]``.

    ``steps`` PGD steps on the CW margin (max other logit - true logit; cross-entropy gave radii
    1.2-1.5x FAB's) of ``step_fraction * eps`` per trial, random start from a generator seeded
    by ``seed`` (deterministic); ``rounds`` bisection rounds give a bracket of width
    ``eps_max / 2**rounds``; the reported radius is the upper end (an eps where PGD succeeded).
    :meth:`distances` returns ``(adv, radius)`` with ``inf`` where PGD failed at ``eps_max``.
    """

    def __init__(self, model: nn.Module, norm: str, steps: int = 10, step_fraction: float = 0.25, rounds: int = 12,
                 eps_max: float | None = None, seed: int = 0):
        self.model, self.norm, self.steps, self.step_fraction = model, norm, int(steps), float(step_fraction)
        self.rounds, self.seed = int(rounds), int(seed)
        self.eps_max = float(EPS_MAX[norm] if eps_max is None else eps_max)

    def _pgd(self, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """PGD at per-example ``eps``; an example stops at its first misclassified iterate."""
        noise = torch.rand(x.shape, generator=gen, dtype=x.dtype, device="cpu").to(x.device) * 2 - 1
        if self.norm == "l2":
            noise = noise / noise.reshape(len(x), -1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
            noise = noise * _view(torch.rand(len(x), generator=gen, dtype=torch.float64).to(x.device), x)
        delta = (noise * _view(eps, x)).clamp(-x, 1 - x)
        adv, done = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
        alpha = eps * self.step_fraction
        for _ in range(self.steps + 1):
            live = (~done).nonzero().flatten()
            if len(live) == 0:
                break
            d = delta[live].detach().requires_grad_(True)
            logits = self.model(x[live] + d)
            wrong = logits.argmax(dim=1) != y[live]
            adv[live[wrong]] = (x[live] + d).detach()[wrong]
            done[live[wrong]] = True
            if _ == self.steps:
                break
            true = logits.gather(1, y[live][:, None]).squeeze(1)
            other = logits.masked_fill(F.one_hot(y[live], logits.shape[1]).bool(), -math.inf).amax(dim=1)
            grad, = torch.autograd.grad((other - true).sum(), d)  # CW margin: aims at the nearest boundary
            if self.norm == "linf":
                step = grad.sign() * _view(alpha[live], grad)
            else:
                g = grad.reshape(len(live), -1).norm(dim=1).clamp_min(1e-12)
                step = grad * _view(alpha[live].to(g.dtype) / g, grad)
            new = _project(d.detach() + step, self.norm, eps[live])
            delta[live] = (x[live] + new).clamp(0, 1) - x[live]
        return adv, done

    def distances(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = images.detach(), labels.to(images.device)
        n = len(x)
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "minnorm", self.norm, n))
        lo = torch.zeros(n, dtype=torch.float64)
        hi = torch.full((n,), self.eps_max, dtype=torch.float64)
        best_adv = x.clone()
        adv, ok = self._pgd(x, y, hi.to(x.device), gen)
        ok = ok.cpu()
        best_adv[ok.to(x.device)] = adv[ok.to(x.device)]
        found = ok.clone()
        for _ in range(self.rounds):
            idx = found.nonzero().flatten()
            if len(idx) == 0:
                break
            mid = (lo[idx] + hi[idx]) / 2
            adv, ok = self._pgd(x[idx.to(x.device)], y[idx.to(x.device)], mid.to(x.device), gen)
            ok = ok.cpu()
            hi[idx[ok]] = mid[ok]
            lo[idx[~ok]] = mid[~ok]
            best_adv[idx[ok].to(x.device)] = adv[ok.to(x.device)]
        radius = torch.where(found, lp_norms(best_adv - x, self.norm).cpu().clamp(max=hi), torch.full_like(hi, math.inf))
        self.last_adv = best_adv
        return best_adv, radius.to(x.device)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.distances(images, labels)[0]


def _builder(norm: str) -> Any:
    def build(model: nn.Module, eps: float, s: AttackSettings, num_classes: int, seed: int) -> list[tuple[str, Perturb]]:
        return [(f"minnorm_{norm}", MinNormPGD(model, norm, steps=10, step_fraction=s.step_fraction,
                                               rounds=s.minnorm_rounds, seed=seed))]
    return build


def _params(norm: str) -> Any:
    def params(s: AttackSettings, num_classes: int) -> Mapping[str, Any]:
        return {"minnorm_steps": 10, "minnorm_rounds": s.minnorm_rounds, "minnorm_eps_max": EPS_MAX[norm], "step_fraction": s.step_fraction}
    return params


MINNORM_LINF = register_attack(AttackSpec("minnorm_linf", "linf", _builder("linf"), order=62, default=False, minimal=True,
                                          doc="minimum Linf radius: bisection over eps with early-stopped PGD",
                                          params=_params("linf")))
MINNORM_L2 = register_attack(AttackSpec("minnorm_l2", "l2", _builder("l2"), order=63, default=False, minimal=True,
                                        doc="minimum L2 radius: bisection over eps with early-stopped PGD",
                                        params=_params("l2")))
