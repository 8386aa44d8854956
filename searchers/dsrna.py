"""DSRNA: differentiable search of robust neural architectures (Jacobian, certified-bound, combined).

Hosseini, Yang & Xie, "DSRNA: Differentiable Search of Robust Neural Architectures", CVPR 2021.
DSRNA runs DARTS with the upper-level objective ``L_val - gamma * R`` (``gamma = 0.01``), where
``R`` is a differentiable robustness measure of the soft supernet evaluated on the validation
batch, so its gradient reaches the architecture parameters:

* ``dsrna-jacobian``: DSRNA's Jacobian norm "bound" ``R_J = -(eps / K) sum_k ||grad_x f_k(x)||_q``
  (dual norm ``q`` of the threat model's ``p``), a first-order estimate at ``x`` (not a bound over
  the ball) of how far the ``K`` logits move under a perturbation of norm ``eps``; from :func:`nasrobust.bounds.jacobian_estimate`, taken
  w.r.t. the ``[0, 1]`` input image (normalisation is inside the model) at the logit layer.
* ``dsrna-cb``: a certified lower bound. DSRNA computes a certified lower bound with linear
  relaxations of the network (CNN-Cert / Fast-Lin style) and maximises it. **Deviation**: the
  certified radius itself comes from a bisection, which has no useful gradient, so here
  ``R_CB`` is the certified lower bound of the worst-case margin, ``mean_x min_{k != y} lower(f_y -
  f_k)`` over the Linf (or L2) ball of radius ``eps`` (CROWN-IBP by default, from
  :class:`nasrobust.bounds.BoundGraph`, the evaluator's certified suite's engine): the quantity whose
  positivity certifies the example, linear in the same relaxations and differentiable in alpha.
  **Scale normalisation** (this project's fix, issue 15): on a barely trained supernet the raw bound is
  -4e6 .. -3e8, so ``gamma * R_CB`` swamps ``L_val`` and acts as a gain penalty that picks
  parameter-free operations. ``R_CB`` therefore enters the loss divided by its own detached batch
  magnitude ``mean |margin|`` (``normalize=True``, the default): the gradient keeps the bound's
  direction (which operations raise the worst-case margin relative to the others) but not its scale.
  **Limit** (measured 2026-12-06, ``benchmarks/robust_search_nb201.md``): on the 8-channel nb201 soft supernet the
  CROWN-IBP bound stays vacuous even after the supernet is trained (16 weights-only epochs on 1,000 mnist5k images,
  validation accuracy 0.89): 0 of 64 worst margins are positive at every ``eps`` from 1e-6 to 1e-2 (median
  -2.8e5 at 1e-6, -3.1e7 at 1e-4, -1.3e9 at 1e-2), against 95% positive at ``eps = 0``; crown-zono is tight there
  (95% positive at 1e-4) but takes ~4 s an image. So the normalised ``R_CB`` is -1 at any usable ``eps``, and its
  gradient is the relative gradient of the bound's looseness (IBP's growth through the mixed operations), not of
  a certified margin; no normaliser of the value changes that direction.
* ``dsrna-combined``: ``R = R_CB + R_J`` (both terms weighted by the same ``gamma``).

Both measures are computed in eval mode (BN running statistics; see :mod:`nasrobust.diffsearch`).
Defaults: ``gamma = 0.01``, ``eps = 0.1`` Linf (this project's MNIST threat model; the paper's
search ``eps`` is not restated here -- an assumption, documented), warm-up ``warmup_epochs = 1``
epoch of weight-only training (scale it with the budget; DSRNA warms up before the bilevel updates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from nasrobust.bounds import BoundGraph, jacobian_estimate
from nasrobust.diffsearch import DifferentiableSearcher, DiffOptions, Params, Regularizer, RegularizerSum, with_params
from nasrobust.search import register_searcher


@dataclass(frozen=True)
class JacobianRegularizer(Regularizer):
    """``R_J``: DSRNA's Jacobian norm bound, averaged over the batch (higher = logits move less)."""

    eps: float = 0.1
    norm: str = "linf"
    name: ClassVar[str] = "jacobian"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: Params | None = None) -> torch.Tensor:
        return jacobian_estimate(with_params(model, params), x, self.eps, self.norm, create_graph=True).mean()


class CertifiedMarginRegularizer(Regularizer):
    """``R_CB``: certified lower bound of the worst margin ``min_k f_y - f_k`` over the eps-ball, batch mean.

    One :class:`~nasrobust.bounds.BoundGraph` is traced per (model, input shape) and reused: it
    reads the current parameters at every call (``params`` substitute them, for second-order DARTS).
    """

    name: ClassVar[str] = "certified_margin"

    def __init__(self, eps: float = 0.1, norm: str = "linf", method: str = "crown-ibp", normalize: bool = True,
                 examples: int | None = None):
        self.eps, self.norm, self.method, self.normalize = float(eps), norm, method, bool(normalize)
        # a tight bound (crown-zono) costs seconds per image, so it can be asked on the batch's first images only
        self.examples = examples
        self._graphs: dict[tuple[int, tuple[int, ...]], BoundGraph] = {}

    def graph(self, model: nn.Module, x: torch.Tensor) -> BoundGraph:
        key = (id(model), tuple(x.shape))
        if key not in self._graphs:
            self._graphs[key] = BoundGraph(model, x.detach())
        return self._graphs[key]

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: Params | None = None) -> torch.Tensor:
        if self.examples is not None:
            x, y = x[: self.examples], y[: self.examples]
        graph = self.graph(model, x)
        with graph.using(dict(params or {})):
            margins = graph.margin_lower(x, y, self.eps, self.norm, self.method)
        worst = margins.min(dim=1).values
        if not self.normalize:
            return worst.mean()
        # scale-free: divide by the detached batch magnitude, so the regulariser's gradient has the
        # size of L_val's whatever the bound's raw scale (1e6..1e8 on an untrained supernet)
        return worst.mean() / worst.detach().abs().mean().clamp_min(1e-12)

    def __repr__(self) -> str:
        return (f"CertifiedMarginRegularizer(eps={self.eps}, norm={self.norm!r}, method={self.method!r}, "
                f"normalize={self.normalize}, examples={self.examples})")


@dataclass(frozen=True)
class DsrnaOptions(DiffOptions):
    """DSRNA's settings on top of DARTS': ``gamma = 0.01``, one warm-up epoch."""

    gamma: float = 0.01
    warmup_epochs: int = 1


class _Dsrna(DifferentiableSearcher):
    Options = DsrnaOptions

    def _jacobian(self) -> Regularizer:
        return JacobianRegularizer(self.options.eps, self.options.norm)

    def _certified(self) -> Regularizer:
        if not hasattr(self, "_cb"):  # one instance per searcher: it caches the traced bound graph
            self._cb = CertifiedMarginRegularizer(
                self.options.eps if self.options.cb_eps is None else self.options.cb_eps, self.options.norm, self.options.bound_method,
                examples=self.options.cb_examples)
        return self._cb


@register_searcher("dsrna-jacobian", "DSRNA-Jacobian: DARTS with L_val - gamma * Jacobian norm bound (Hosseini et al. 2021)")
class DsrnaJacobian(_Dsrna):
    name = "dsrna-jacobian"

    def regularizer(self) -> Regularizer:
        return self._jacobian()


@register_searcher("dsrna-cb", "DSRNA-CB: DARTS with L_val - gamma * certified margin lower bound (CROWN-IBP)")
class DsrnaCB(_Dsrna):
    name = "dsrna-cb"

    def regularizer(self) -> Regularizer:
        return self._certified()


@register_searcher("dsrna-combined", "DSRNA-Combined: DARTS with L_val - gamma * (certified bound + Jacobian bound)")
class DsrnaCombined(_Dsrna):
    name = "dsrna-combined"

    def regularizer(self) -> Regularizer:
        if not hasattr(self, "_sum"):
            self._sum = RegularizerSum(((1.0, self._certified()), (1.0, self._jacobian())))
        return self._sum
