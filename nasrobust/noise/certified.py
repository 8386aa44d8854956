"""The ``certified`` noise suite: certified radii by bound propagation and DSRNA's Jacobian bound.

What it measures on the evaluator's test subset (noise, level, metric), for every bound
``method`` (default ``ibp`` and ``crown-ibp``; ``crown`` on request, see
:mod:`nasrobust.bounds`) and ``norm`` (``linf``, ``l2``):

* ``<method>_<norm>`` / 0 / ``radius_mean`` and ``radius_median`` -- the per-example certified
  radius: the largest ``eps`` (log-bisection to relative precision ``rtol``) at which the
  lower bounds of all margins ``f_y - f_k`` over ``{||x' - x||_p <= eps} ∩ [0, 1]^d`` are
  positive; 0 for misclassified points and below ``1e-6`` x the domain's width (Linf) /
  diagonal (L2). A lower bound on the minimal adversarial perturbation (DSRNA's first
  metric, Hosseini et al., CVPR 2021, computed here with IBP / CROWN-IBP instead of their
  linear bound).
* ``<method>_<norm>`` / eps / ``certified_accuracy`` -- the fraction of examples whose label the
  bound certifies at ``eps`` (evaluated at ``eps`` itself, not read off the radii).
* ``jacobian_<norm>`` / eps / ``jacobian_bound`` -- mean over examples of DSRNA's Jacobian norm
  bound ``-(eps / K) sum_k ||grad_x f_k(x)||_q`` (``q`` the dual norm, ``f_k`` the logits);
  ``jacobian_<norm>`` / 0 / ``jacobian_norm_mean`` -- the mean of ``(1/K) sum_k ||grad f_k||_q``
  (lower is more robust), so ``jacobian_bound = -eps * jacobian_norm_mean``.
* ``clean`` / 0 / ``accuracy`` on the same examples.

Budgets per dataset family are the adversarial suite's (:data:`nasrobust.noise.attacks.FAMILY_DEFAULTS`:
mnist Linf 0.1/0.2/0.3, L2 1/2/3; cifar Linf 1,4,8/255, L2 0.25/0.5/1; imagenet Linf 0.5,2,8/255,
L2 0.5/2/8), so certified and empirical robust accuracy line up column by column.

Networks with operations the bounds do not cover (SiLU/GELU/sigmoid gates, attention,
squeeze-excite products, data-dependent control flow) are reported by :meth:`not_applicable`
and skipped by the evaluator. Deterministic: no randomness is involved.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from types import MappingProxyType

import torch
import torch.nn as nn

from nasrobust.bounds import METHODS, NORMS, BoundGraph, jacobian_norms
from nasrobust.errors import NasRobustError
from nasrobust.noise.attacks import FAMILY_DEFAULTS
from nasrobust.noise.base import CLEAN, SUITES, EvalContext, Measurement, MetricInfo, NoiseSuite
from nasrobust.options import option
from nasrobust.records import Protocol

log = logging.getLogger(__name__)

SUITE = "certified"
DEFAULT_METHODS = ("ibp", "crown-ibp")
DEFAULT_RTOL = 0.01
#: Examples per bound computation: CROWN holds ``(K - 1) x batch`` copies of the widest layer.
DEFAULT_BATCH = 64


@dataclass(frozen=True)
class CertifiedOptions:
    """Options of the certified suite (``None``: the default named in the help)."""

    methods: tuple[str, ...] = option(DEFAULT_METHODS, "bound methods", choices=METHODS, canonical=True)
    norms: tuple[str, ...] = option(NORMS, "threat-model norms", choices=NORMS, canonical=True)
    eps_linf: tuple[float, ...] | None = option(None, "Linf budgets (default: the family's)", gt=0, canonical=True,
                                                example="1/255,8/255")
    eps_l2: tuple[float, ...] | None = option(None, "L2 budgets (default: the family's)", gt=0, canonical=True,
                                              example="0.25,0.5")
    n_examples: int | None = option(None, "first n of the evaluator's test subset (default: all)", ge=1)
    batch_size: int | None = option(None, f"examples per bound computation (default {DEFAULT_BATCH})", ge=1)
    rtol: float = option(DEFAULT_RTOL, "relative precision of the radius bisection", gt=0)

    def eps_of(self, norm: str) -> tuple[float, ...] | None:
        return {"linf": self.eps_linf, "l2": self.eps_l2}[norm]


@dataclass(frozen=True)
class CertifiedSettings:
    """The suite's options resolved for one dataset (family budgets filled in)."""

    methods: tuple[str, ...]
    norms: tuple[str, ...]
    eps: tuple[tuple[str, tuple[float, ...]], ...]
    n_examples: int
    batch_size: int
    rtol: float

    def budgets(self, norm: str) -> tuple[float, ...]:
        return dict(self.eps)[norm]


@SUITES.register(SUITE)
class CertifiedSuite(NoiseSuite):
    """Certified radii and accuracies (IBP, CROWN-IBP; Linf, L2) and DSRNA's Jacobian norm bound.

    Options: :class:`CertifiedOptions`.
    """

    name = SUITE
    Options = CertifiedOptions
    metrics = (
        MetricInfo("accuracy", True, noise=CLEAN, rank_group=CLEAN, rank_fallback=True,
                   description="accuracy on the examples the bounds run on (maybe a subset)"),
        MetricInfo("radius_mean", True, headline="IBP Linf radius", noise="ibp_linf", rank_group=SUITE,
                   description="mean certified Linf radius by IBP"),
        MetricInfo("jacobian_bound", True, headline="Jacobian bound (max eps)", noise="jacobian_linf", rank_group=SUITE,
                   description="DSRNA's Jacobian bound -(eps/K) sum_k ||grad f_k||_1 (level = eps)"),
        MetricInfo("radius_mean", True, rank_group=SUITE, description="mean certified radius (0 if misclassified)"),
        MetricInfo("radius_median", True, rank_group=SUITE, description="median certified radius"),
        MetricInfo("certified_accuracy", True, rank_group=SUITE,
                   description="fraction of examples whose label the bound certifies at eps (level)"),
        MetricInfo("jacobian_norm_mean", False, rank_group=SUITE,
                   description="mean input-gradient norm (1/K) sum_k ||grad f_k||_q (lower is more robust)"),
        MetricInfo("jacobian_bound", True, rank_group=SUITE,
                   description="DSRNA's Jacobian bound -(eps/K) sum_k ||grad f_k||_q (level = eps)"),
    )
    #: IBP certified accuracy and radius under Linf, on the first 100 images
    cpu_options = MappingProxyType({"methods": ("ibp",), "norms": ("linf",), "n_examples": 100})

    def settings(self, ctx: EvalContext) -> CertifiedSettings:
        o = self.options
        defaults = FAMILY_DEFAULTS.get(ctx.family, FAMILY_DEFAULTS["imagenet"])
        eps = tuple((n, o.eps_of(n) or defaults.of_norm(n)) for n in o.norms)
        n = ctx.n_examples if o.n_examples is None else min(o.n_examples, ctx.n_examples)
        return CertifiedSettings(o.methods, o.norms, eps, n, o.batch_size or min(ctx.batch_size, DEFAULT_BATCH), o.rtol)

    def protocol(self, ctx: EvalContext) -> Protocol:
        s = self.settings(ctx)
        return Protocol.make(
            n_examples=s.n_examples,
            params={
                "family": ctx.family, "methods": s.methods, "norms": s.norms,
                **{f"eps_{n}": e for n, e in s.eps},
                "rtol": s.rtol, "eps_min": "1e-6 * eps_max", "eps_max": "linf 1, l2 sqrt(d)",
                "domain": "[0, 1]", "spec": "margins f_y - f_k, k != y",
                "ibp": "Gowal et al. 2018, spec folded into the last affine block",
                "crown-ibp": "IBP intermediate bounds, CROWN backward from the margins (Zhang et al. 2020)",
                "crown": "CROWN bounds at every ReLU/max-pool input, intersected with IBP (Zhang et al. 2018)",
                "l2_intermediate": "clipped bounding box; final bound max(dual-norm ball, box)",
                "jacobian": "-(eps/K) sum_k ||grad_x f_k||_q, f = logits, q dual to p (Hosseini et al. 2021)",
            },
        )

    # ------------------------------------------------------------------ applicability
    def not_applicable(self, model: nn.Module) -> str | None:
        """A reason when the network has ops the bound propagation does not handle."""
        size = int(getattr(model, "resolution", 32))
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
        reasons = BoundGraph(model, torch.full((2, 3, size, size), 0.5, device=device)).unsupported
        return "; ".join(reasons) if reasons else None

    # ------------------------------------------------------------------ run
    def run(self, model: nn.Module, ctx: EvalContext) -> Iterator[Measurement]:
        s = self.settings(ctx)
        if s.n_examples == 0:
            return
        device = torch.device(ctx.device)
        model = model.to(device).eval()
        images, labels = ctx.images[: s.n_examples], ctx.labels[: s.n_examples]
        batches = [(images[i:i + s.batch_size].to(device), labels[i:i + s.batch_size].to(device))
                   for i in range(0, s.n_examples, s.batch_size)]
        graphs: dict[tuple[int, ...], BoundGraph] = {}

        def graph(x: torch.Tensor) -> BoundGraph:
            key = tuple(x.shape)
            if key not in graphs:
                graphs[key] = BoundGraph(model, x)
                if graphs[key].unsupported:
                    raise NasRobustError("certified suite: " + "; ".join(graphs[key].unsupported))
            return graphs[key]

        with torch.no_grad():
            correct = torch.cat([(graph(x).forward(x).argmax(1) == y).cpu() for x, y in batches])
        yield Measurement("clean", 0.0, "accuracy", float(correct.double().mean()))

        for norm in s.norms:
            budgets = s.budgets(norm)
            for method in s.methods:
                noise = f"{method}_{norm}"
                keys = {(noise, 0.0, "radius_mean"), (noise, 0.0, "radius_median")}
                keys |= {(noise, float(e), "certified_accuracy") for e in budgets}
                if keys <= ctx.done:
                    continue
                radii, certified = [], {e: [] for e in budgets}
                for x, y in batches:
                    g = graph(x)
                    radii.append(g.certified_radius(x, y, norm, method, rtol=s.rtol).cpu())
                    for e in budgets:
                        certified[e].append(g.certified(x, y, e, norm, method).cpu())
                r = torch.cat(radii).double()
                yield Measurement(noise, 0.0, "radius_mean", float(r.mean()))
                yield Measurement(noise, 0.0, "radius_median", float(r.quantile(0.5)))
                for e in budgets:
                    yield Measurement(noise, float(e), "certified_accuracy", float(torch.cat(certified[e]).double().mean()))
                log.info("certified %s: mean radius %.3g", noise, float(r.mean()))

            noise = f"jacobian_{norm}"
            norms = torch.cat([jacobian_norms(model, x, norm).mean(dim=1).detach().cpu() for x, _ in batches]).double()
            mean = float(norms.mean())
            yield Measurement(noise, 0.0, "jacobian_norm_mean", mean)
            for e in budgets:
                yield Measurement(noise, float(e), "jacobian_bound", -float(e) * mean)


__all__ = ["CertifiedOptions", "CertifiedSettings", "CertifiedSuite", "DEFAULT_METHODS"]
