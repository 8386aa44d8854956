"""DARTS: first-order and second-order (one-step unrolled) differentiable architecture search.

Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019: alternate an Adam
step on the architecture parameters (validation half of the training data) and an SGD step on
the weights (the other half). ``darts`` is the first-order approximation (``xi = 0`` in the
paper's eq. 7), ``darts-2nd`` the one-step unrolled hypergradient with the finite-difference
Hessian-vector product (eq. 8). The bilevel loop, warm-up and resume live in
:mod:`nasrobust.diffsearch`; the supernets are the spaces' one-shot networks in soft mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from nasrobust.diffsearch import DifferentiableSearcher, DiffOptions
from nasrobust.search import register_searcher


@dataclass(frozen=True)
class DartsOptions(DiffOptions):
    """DARTS' search hyper-parameters (lr 0.025 -> 0.001 cosine, momentum 0.9, wd 3e-4; Adam 3e-4, wd 1e-3)."""


@dataclass(frozen=True)
class Darts2ndOptions(DiffOptions):
    """As :class:`DartsOptions` with ``order=2`` (the unrolled approximation)."""

    order: int = 2


@register_searcher("darts", "DARTS, first order (Liu et al. 2019); budget = search epochs, needs --dataset")
class Darts(DifferentiableSearcher):
    """First-order DARTS: ``grad_alpha L_val(w, alpha)``."""

    name = "darts"
    Options = DartsOptions


@register_searcher("darts-2nd", "DARTS, second order: one-step unrolled hypergradient (Liu et al. 2019, eq. 7-8)")
class Darts2nd(DifferentiableSearcher):
    """Second-order DARTS: ``grad_alpha L_val(w - xi grad_w L_train, alpha)``, Hessian-vector by finite differences."""

    name = "darts-2nd"
    Options = Darts2ndOptions
