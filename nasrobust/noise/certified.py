"""The ``certified`` noise suite: certified radii by bound propagation and DSRNA's Jacobian bound.

What it measures on the evaluator's test subset (noise, level, metric), for every bound
``method`` (default ``ibp`` and ``crown-ibp``; ``crown-zono`` and ``crown`` on request, see
:mod:`nasrobust.bounds`) and ``norm`` (``linf``, ``l2``):

* the per-example certified radius: the largest ``eps`` (to relative precision ``rtol``) at
  which the lower bounds of all margins ``f_y - f_k`` over ``{||x' - x||_p <= eps} ∩ [0, 1]^d``
  are positive; 0 for misclassified points and below ``1e-6`` x the domain's width (Linf) /
  diagonal (L2). A lower bound on the minimal adversarial perturbation (DSRNA's first metric,
  Hosseini et al., CVPR 2021, computed here with bound propagation instead of their linear
  bound). Its distribution over the examples: ``<method>_<norm>`` / 0 / ``radius_mean``,
  ``radius_median``, ``radius_q10``, ``radius_q25``, ``radius_q75``, ``radius_q90``, and
  ``<method>_<norm>`` / eps / ``certified_accuracy_curve`` -- the fraction of examples whose
  radius is at least ``eps``, for every ``eps`` of the radius grid (``radius_grid_<norm>``).
* ``<method>_<norm>`` / eps / ``certified_accuracy`` -- the fraction of examples certified at
  the budget ``eps``: those whose radius reaches ``eps``, plus those the bound certifies when it
  is evaluated at ``eps`` itself.
* ``jacobian_<norm>`` / eps / ``jacobian_estimate`` -- mean over examples of DSRNA's Jacobian
  term ``-(eps / K) sum_k ||grad_x f_k(x)||_q`` (``q`` the dual norm, ``f_k`` the logits), a
  first-order *estimate* of the mean logit change at ``x``, not a bound over the set;
  ``jacobian_<norm>`` / 0 / ``jacobian_norm_mean`` -- the mean of ``(1/K) sum_k ||grad f_k||_q``
  (lower is more robust), so ``jacobian_estimate = -eps * jacobian_norm_mean``.
* ``clean`` / 0 / ``accuracy`` on the same examples.

Which method resolves differences between networks: on conv nets trained without a
certified loss IBP's intervals grow ~4-15x per convolution more than the outputs do, so IBP
and CROWN-IBP radii end up 1e4-1e8 below the attack radii and rank networks by depth and
kernel size; ``crown-zono`` (zonotope intermediate bounds) is within a small factor of the
attack radius but costs ``~d`` forward passes per example and bound (see :mod:`nasrobust.bounds`).

Budgets per dataset family are the adversarial suite's (:data:`nasrobust.noise.attacks.FAMILY_DEFAULTS`:
mnist Linf 0.1/0.2/0.3, L2 1/2/3; cifar Linf 1,4,8/255, L2 0.25/0.5/1; imagenet Linf 0.5,2,8/255,
L2 0.5/2/8), so certified and empirical robust accuracy line up column by column.

Networks with operations the bounds do not cover (SiLU/GELU/sigmoid gates, attention,
squeeze-excite products, data-dependent control flow) are reported by :meth:`not_applicable`
and skipped by the evaluator. Deterministic: no randomness is involved.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import torch
import torch.nn as nn

from nasrobust.allocator import reuse_freed_memory
from nasrobust.bounds import METHODS, NORMS, BoundGraph, jacobian_norms
from nasrobust.errors import NasRobustError
from nasrobust.noise.attacks import FAMILY_DEFAULTS
from nasrobust.noise.base import CLEAN, SUITES, EvalContext, Measurement, MetricInfo, NoiseSuite, saving_on
from nasrobust.options import option
from nasrobust.records import Protocol

log = logging.getLogger(__name__)

SUITE = "certified"
DEFAULT_METHODS = ("ibp", "crown-ibp")
DEFAULT_RTOL = 0.01
#: Radius grids of the certified-accuracy curve: half decades over the range certified radii span.
DEFAULT_RADIUS_GRID = {"linf": tuple(10 ** (k / 2) for k in range(-12, 1)), "l2": tuple(10 ** (k / 2) for k in range(-10, 3))}
#: Quantiles of the radius distribution stored besides its mean and median.
RADIUS_QUANTILES = (0.1, 0.25, 0.75, 0.9)
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
    rtol: float = option(DEFAULT_RTOL, "relative precision of the radius search", gt=0)
    radius_grid_linf: tuple[float, ...] | None = option(None, "eps of the Linf certified-accuracy curve "
                                                        "(default: half decades 1e-6..1)", gt=0, canonical=True,
                                                        example="0.001,0.01")
    radius_grid_l2: tuple[float, ...] | None = option(None, "eps of the L2 certified-accuracy curve "
                                                      "(default: half decades 1e-5..10)", gt=0, canonical=True,
                                                      example="0.01,0.1")

    def eps_of(self, norm: str) -> tuple[float, ...] | None:
        return {"linf": self.eps_linf, "l2": self.eps_l2}[norm]

    def grid_of(self, norm: str) -> tuple[float, ...]:
        return {"linf": self.radius_grid_linf, "l2": self.radius_grid_l2}[norm] or DEFAULT_RADIUS_GRID[norm]


@dataclass(frozen=True)
class CertifiedSettings:
    """The suite's options resolved for one dataset (family budgets filled in)."""

    methods: tuple[str, ...]
    norms: tuple[str, ...]
    eps: tuple[tuple[str, tuple[float, ...]], ...]
    n_examples: int
    batch_size: int
    rtol: float
    radius_grid: tuple[tuple[str, tuple[float, ...]], ...] = ()

    def budgets(self, norm: str) -> tuple[float, ...]:
        return dict(self.eps)[norm]

    def grid(self, norm: str) -> tuple[float, ...]:
        return dict(self.radius_grid)[norm]


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
        MetricInfo("radius_median", True, headline="CROWN-zono Linf radius (median)", noise="crown-zono_linf",
                   rank_group=SUITE, description="median certified Linf radius by CROWN with zonotope bounds"),
        MetricInfo("radius_mean", True, headline="IBP Linf radius", noise="ibp_linf", rank_group=SUITE,
                   description="mean certified Linf radius by IBP"),
        MetricInfo("jacobian_estimate", True, headline="Jacobian estimate (max eps)", noise="jacobian_linf",
                   rank_group=SUITE, description="DSRNA's Jacobian term -(eps/K) sum_k ||grad f_k||_1 at x (level = eps)"),
        MetricInfo("radius_mean", True, rank_group=SUITE, description="mean certified radius (0 if misclassified)"),
        MetricInfo("radius_median", True, rank_group=SUITE, description="median certified radius"),
        *(MetricInfo(f"radius_q{round(100 * q):02d}", True, rank_group=SUITE,
                     description=f"{round(100 * q)}% quantile of the certified radius") for q in RADIUS_QUANTILES),
        MetricInfo("certified_accuracy", True, rank_group=SUITE,
                   description="fraction of examples whose label the bound certifies at eps (level)"),
        MetricInfo("certified_accuracy_curve", True, rank_group=SUITE,
                   description="fraction of examples whose certified radius is >= eps (level), on the radius grid"),
        MetricInfo("jacobian_norm_mean", False, rank_group=SUITE,
                   description="mean input-gradient norm (1/K) sum_k ||grad f_k||_q (lower is more robust)"),
        MetricInfo("jacobian_estimate", True, rank_group=SUITE,
                   description="DSRNA's Jacobian term -(eps/K) sum_k ||grad f_k||_q, a first-order estimate at x "
                               "(level = eps)"),
    )
    #: Linf certified radius per image by CROWN with zonotope intermediate bounds: IBP and CROWN-IBP radii are
    #: 1e4-1e8 below the attack radii on these nets. ~d = 784 forward passes per image and bound, hence only
    #: the first 4 images (benchmarks/certified_radius.md).
    cpu_options = MappingProxyType({"methods": ("crown-zono",), "norms": ("linf",), "n_examples": 2, "rtol": 0.25,
                                    "eps_linf": (0.003,),
                                    "radius_grid_linf": (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02)})
    reads_reference = False  # no relative metric: workers need not wait for the reference model's unit

    def settings(self, ctx: EvalContext) -> CertifiedSettings:
        o = self.options
        defaults = FAMILY_DEFAULTS.get(ctx.family, FAMILY_DEFAULTS["imagenet"])
        eps = tuple((n, o.eps_of(n) or defaults.of_norm(n)) for n in o.norms)
        n = ctx.n_examples if o.n_examples is None else min(o.n_examples, ctx.n_examples)
        grid = tuple((norm, o.grid_of(norm)) for norm in o.norms)
        return CertifiedSettings(o.methods, o.norms, eps, n, o.batch_size or min(ctx.batch_size, DEFAULT_BATCH), o.rtol,
                                 grid)

    def protocol(self, ctx: EvalContext) -> Protocol:
        s = self.settings(ctx)
        return Protocol.make(
            n_examples=s.n_examples,
            params={
                "family": ctx.family, "methods": s.methods, "norms": s.norms,
                **{f"eps_{n}": e for n, e in s.eps},
                **{f"radius_grid_{n}": g for n, g in s.radius_grid},
                "radius": "largest certified eps per example: linear-bound search from the first-order radius "
                          "(IBP: bisection on log eps), relative precision rtol",
                "radius_quantiles": RADIUS_QUANTILES,
                "certified_accuracy": "radius >= eps, or the bound evaluated at eps certifies",
                "rtol": s.rtol, "eps_min": "1e-6 * eps_max", "eps_max": "linf 1, l2 sqrt(d)",
                "domain": "[0, 1]", "spec": "margins f_y - f_k, k != y",
                "ibp": "Gowal et al. 2018, spec folded into the last affine block",
                "crown-ibp": "IBP intermediate bounds, CROWN backward from the margins (Zhang et al. 2020)",
                "crown-zono": "zonotope (DeepZ, Singh et al. 2018) bounds at every ReLU/max-pool input, intersected "
                              "with IBP; CROWN backward from the margins",
                "crown": "CROWN bounds at every ReLU/max-pool input, intersected with IBP (Zhang et al. 2018)",
                "l2_intermediate": "clipped bounding box; final bound max(dual-norm ball, box)",
                "jacobian": "first-order estimate -(eps/K) sum_k ||grad_x f_k(x)||_q at x, f = logits, q dual to p "
                            "(Hosseini et al. 2021); not a bound over the set",
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
            grid = s.grid(norm)
            for method in s.methods:
                noise = f"{method}_{norm}"
                keys = {(noise, 0.0, m) for m in ("radius_mean", "radius_median", *map(_quantile_metric, RADIUS_QUANTILES))}
                keys |= {(noise, float(e), "certified_accuracy") for e in budgets}
                keys |= {(noise, float(e), "certified_accuracy_curve") for e in grid}
                if keys <= ctx.done:
                    continue
                radii, certified = [], {e: [] for e in budgets}
                with reuse_freed_memory(saving_on("NASROBUST_NO_HEAP_REUSE")):
                    for x, y in batches:
                        g = graph(x)
                        r = g.certified_radius(x, y, norm, method, rtol=s.rtol)
                        radii.append(r.cpu())
                        for e in budgets:  # a radius >= e certifies e; ask the bound at e only for the others
                            certified[e].append(((r >= e) | g.certified(x, y, e, norm, method, where=r < e)).cpu())
                yield from _radius_distribution(noise, torch.cat(radii).double(), grid)
                for e in budgets:
                    yield Measurement(noise, float(e), "certified_accuracy", float(torch.cat(certified[e]).double().mean()))

            noise = f"jacobian_{norm}"
            norms = torch.cat([jacobian_norms(model, x, norm).mean(dim=1).detach().cpu() for x, _ in batches]).double()
            mean = float(norms.mean())
            yield Measurement(noise, 0.0, "jacobian_norm_mean", mean)
            for e in budgets:
                yield Measurement(noise, float(e), "jacobian_estimate", -float(e) * mean)


def _quantile_metric(q: float) -> str:
    return f"radius_q{round(100 * q):02d}"


def _radius_distribution(noise: str, r: torch.Tensor, grid: Sequence[float]) -> Iterator[Measurement]:
    """Mean, median and quantiles of the per-example radii, and the fraction certified at each grid eps."""
    yield Measurement(noise, 0.0, "radius_mean", float(r.mean()))
    yield Measurement(noise, 0.0, "radius_median", float(r.quantile(0.5)))
    for q in RADIUS_QUANTILES:
        yield Measurement(noise, 0.0, _quantile_metric(q), float(r.quantile(q)))
    for e in grid:
        yield Measurement(noise, float(e), "certified_accuracy_curve", float((r >= e).double().mean()))
    log.info("certified %s: median radius %.3g, mean %.3g", noise, float(r.quantile(0.5)), float(r.mean()))


__all__ = ["CertifiedOptions", "CertifiedSettings", "CertifiedSuite", "DEFAULT_METHODS", "DEFAULT_RADIUS_GRID", "RADIUS_QUANTILES"]
