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

Budgets per dataset family are the adversarial suite's (:data:`nasrobust.noise._attacks.FAMILY_DEFAULTS`:
mnist Linf 0.1/0.2/0.3, L2 1/2/3; cifar Linf 1,4,8/255, L2 0.25/0.5/1; imagenet Linf 0.5,2,8/255,
L2 0.5/2/8), so certified and empirical robust accuracy line up column by column.

Networks with operations the bounds do not cover (SiLU/GELU/sigmoid gates, attention,
squeeze-excite products, data-dependent control flow) are reported by :meth:`not_applicable`
and skipped by the evaluator. Deterministic: no randomness is involved.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
import torch.nn as nn

from nasrobust.bounds import METHODS, NORMS, BoundGraph, jacobian_norms
from nasrobust.errors import NasRobustError, UnknownNameError
from nasrobust.noise._attacks import FAMILY_DEFAULTS
from nasrobust.noise.base import CLEAN, SUITES, EvalContext, Measurement, MetricInfo, NoiseSuite
from nasrobust.records import Protocol

log = logging.getLogger(__name__)

SUITE = "certified"
DEFAULT_METHODS = ("ibp", "crown-ibp")
DEFAULT_RTOL = 0.01
#: Examples per bound computation: CROWN holds ``(K - 1) x batch`` copies of the widest layer.
DEFAULT_BATCH = 64


class CertifiedOptionError(NasRobustError, ValueError):
    """An option of the certified suite that cannot be used; says what to pass instead."""


def _names(value: Any, valid: Sequence[str], kind: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [str(i).strip() for i in items if str(i).strip()]
    if not items:
        raise CertifiedOptionError(f"{kind}s is empty; choose from {', '.join(valid)}")
    for i in items:
        if i not in valid:
            raise UnknownNameError(kind, i, valid)
    return tuple(v for v in valid if v in items)


def _budgets(value: Any, what: str) -> tuple[float, ...] | None:
    """Budgets from a number, a sequence or a CLI string such as ``"1/255,4/255"``."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else (list(value) if isinstance(value, (list, tuple)) else [value])
    out = []
    for item in items:
        try:
            num, _, den = str(item).strip().partition("/")
            eps = float(num) / float(den) if den else float(num)
        except (ValueError, ZeroDivisionError):
            raise CertifiedOptionError(f"{what}: cannot read {item!r} as a budget; pass numbers such as 0.3 or '8/255'") from None
        if not math.isfinite(eps) or eps <= 0:
            raise CertifiedOptionError(f"{what} must be finite and > 0, got {item!r}")
        out.append(eps)
    if not out:
        raise CertifiedOptionError(f"{what} is empty; give a budget or leave it unset for the family defaults")
    return tuple(sorted(set(out)))


def _positive(value: Any, what: str, kind: type = int) -> Any:
    if value is None:
        return None
    try:
        v = kind(value)
    except (TypeError, ValueError):
        v = None
    if isinstance(value, bool) or v is None or not v > 0 or (kind is int and str(value).strip() != str(v)):
        raise CertifiedOptionError(f"{what} must be a positive {kind.__name__}, got {value!r}")
    return v


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

    Options (``None`` = default): ``methods`` (subset of ibp, crown-ibp, crown; default
    ibp,crown-ibp), ``norms`` (linf, l2), ``eps_linf`` / ``eps_l2`` (budgets; default the
    family's), ``n_examples`` (first n of the evaluator's subset; default all), ``batch_size``
    (default 64), ``rtol`` (relative precision of the radius bisection, 0.01).
    """

    name = SUITE
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

    def __init__(self, methods: Any = None, norms: Any = None, eps_linf: Any = None, eps_l2: Any = None,
                 n_examples: Any = None, batch_size: Any = None, rtol: Any = None):
        self.methods = _names(methods, METHODS, "bound method") or DEFAULT_METHODS
        self.norms = _names(norms, NORMS, "norm") or NORMS
        self.eps = {"linf": _budgets(eps_linf, "eps_linf"), "l2": _budgets(eps_l2, "eps_l2")}
        self.n_examples = _positive(n_examples, "n_examples")
        self.batch_size = _positive(batch_size, "batch_size")
        self.rtol = _positive(rtol, "rtol", float) or DEFAULT_RTOL

    def settings(self, ctx: EvalContext) -> CertifiedSettings:
        defaults = FAMILY_DEFAULTS.get(ctx.family, FAMILY_DEFAULTS["imagenet"])
        eps = tuple((n, self.eps[n] or tuple(getattr(defaults, n))) for n in self.norms)
        n = ctx.n_examples if self.n_examples is None else min(self.n_examples, ctx.n_examples)
        return CertifiedSettings(self.methods, self.norms, eps, n, self.batch_size or min(ctx.batch_size, DEFAULT_BATCH),
                                 self.rtol)

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


__all__ = ["CertifiedOptionError", "CertifiedSettings", "CertifiedSuite", "DEFAULT_METHODS"]
