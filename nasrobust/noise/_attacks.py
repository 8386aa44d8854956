"""Attack construction for the ``adversarial`` suite: threat models, PGD-L1, AutoAttack, helpers.

What lives here (the suite in :mod:`nasrobust.noise.adversarial` only orchestrates):

* :data:`FAMILY_DEFAULTS` -- eps per norm and dataset family (sources in :class:`EpsDefaults`).
* Projections and norms: :func:`project_l1` is the exact Euclidean projection onto the L1
  ball (Duchi, Shalev-Shwartz, Singer & Chandra, ICML 2008, Fig. 1), batched.
* :class:`SparseL1Descent` -- PGD for L1 (Tramer & Boneh, "Adversarial Training and
  Robustness for Multiple Perturbations", NeurIPS 2019, Alg. 1 "SLIDE"; the variant
  advertorch ships as ``SparseL1DescentAttack``). torchattacks has no L1 PGD.
* :class:`MinNormCW` -- Carlini & Wagner L2 (S&P 2017) as a minimal-perturbation attack:
  torchattacks' ``CW`` runs one fixed ``c``; the paper searches ``c`` per example. Here an
  ascending grid of ``c`` plus log-space bisection per example, each run being torchattacks'
  ``CW`` on the examples that share a ``c``.
* :func:`autoattack_stages` -- AutoAttack "standard" (Croce & Hein, ICML 2020) exactly as
  the official ``autoattack/autoattack.py`` (``_set_version('standard')``) and RobustBench
  run it, built from torchattacks' APGD / APGDT / FAB / Square with explicit arguments
  (torchattacks' own ``AutoAttack`` wrapper keeps their defaults: 10 iterations instead of
  100, ``n_classes - 1`` targets instead of 9, and Square's rescaled schedule).
* :data:`ATTACK_BUILDERS` -- name -> factory ``(model, eps, settings, num_classes, seed)``.
* :func:`attack_mode`, :func:`seeded_global_rng`, :func:`run_cascade`: eval mode and fp32
  gradients without touching parameter gradients, deterministic seeding of torchattacks'
  global-RNG draws without disturbing the caller's RNG state, and a worst-case cascade over
  stages that attacks only the examples still standing (torchattacks' ``MultiAttack`` and
  auto-attack's ``run_standard_evaluation`` semantics) while never counting a "success"
  outside the threat model.

torchattacks is imported inside the builders: it pulls in scipy and costs seconds, and
``import nasrobust.noise`` must stay cheap.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Mapping, Protocol as TypingProtocol

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)

#: Every attack the suite knows, in the order it runs them.
ATTACK_NAMES: tuple[str, ...] = ("fgsm", "pgd_linf", "pgd_l2", "pgd_l1", "mim", "cw_l2", "autoattack")
#: The norm whose ball each attack stays in.
NORM_OF: Mapping[str, str] = MappingProxyType({
    "fgsm": "linf", "pgd_linf": "linf", "pgd_l2": "l2", "pgd_l1": "l1", "mim": "linf",
    "cw_l2": "l2", "autoattack": "linf",
})
NORMS: tuple[str, ...] = ("linf", "l2", "l1")
#: Attacks whose examples can be transferred (eps-bounded, made by gradient steps).
#: CW (minimal perturbation: stops at the boundary of the source) and AutoAttack (stops as
#: soon as the source is fooled) make examples that do not transfer meaningfully.
TRANSFERABLE: tuple[str, ...] = ("fgsm", "pgd_linf", "pgd_l2", "pgd_l1", "mim")
#: Attacks that draw a random start (restarts apply to them only).
RANDOM_START: tuple[str, ...] = ("pgd_linf", "pgd_l2", "pgd_l1")


# ----------------------------------------------------------------------------- defaults
@dataclass(frozen=True)
class EpsDefaults:
    """Budgets of one dataset family: three tiers per norm plus AutoAttack's single eps.

    * ``mnist`` -- Linf {0.1, 0.2, 0.3}: 0.3 is Madry et al. (ICLR 2018) and RobustBench's
      MNIST setting; L2 {1, 2, 3} and L1 {5, 10, 15} bracket Tramer & Boneh's (NeurIPS 2019)
      MNIST budgets L2 = 2 and L1 = 10 (tiers at 1/2, 1, 3/2 of them).
    * ``cifar`` -- Linf {1, 4, 8}/255 and L2 0.5 from DESIGN.md / RobustBench (CIFAR-10 Linf
      8/255, L2 0.5); L2 {0.25, 0.5, 1.0} halves and doubles RobustBench's 0.5; L1
      {3, 6, 12}: 12 is Croce & Hein's CIFAR-10 L1 budget ("Mind the box: l1-APGD", ICML
      2021), halved twice. AutoAttack at RobustBench's 8/255.
    * ``imagenet`` -- RobustART's tiers (Tang et al., 2021): Linf {0.5, 2, 8}/255,
      L2 {0.5, 2, 8}, L1 {100, 400, 1600}; AutoAttack at RobustBench's ImageNet 4/255.
    """

    linf: tuple[float, ...]
    l2: tuple[float, ...]
    l1: tuple[float, ...]
    autoattack: float

    def of_norm(self, norm: str) -> tuple[float, ...]:
        return {"linf": self.linf, "l2": self.l2, "l1": self.l1}[norm]


FAMILY_DEFAULTS: Mapping[str, EpsDefaults] = MappingProxyType({
    "mnist": EpsDefaults(linf=(0.1, 0.2, 0.3), l2=(1.0, 2.0, 3.0), l1=(5.0, 10.0, 15.0), autoattack=0.3),
    "cifar": EpsDefaults(linf=(1 / 255, 4 / 255, 8 / 255), l2=(0.25, 0.5, 1.0), l1=(3.0, 6.0, 12.0), autoattack=8 / 255),
    "imagenet": EpsDefaults(linf=(0.5 / 255, 2 / 255, 8 / 255), l2=(0.5, 2.0, 8.0), l1=(100.0, 400.0, 1600.0), autoattack=4 / 255),
})


@dataclass(frozen=True)
class AttackSettings:
    """Iteration budgets shared by the builders (the suite fills them from its options).

    PGD (Linf, L2, L1) and MIM: ``steps`` steps of size ``step_fraction * eps`` (DESIGN.md:
    20 steps, eps/4, random start); MIM decays momentum by ``mim_decay`` (Dong et al., CVPR
    2018: 1.0) and uses the same eps/4 step as PGD (torchattacks' default ratio, 2/255 for
    8/255). PGD-L1 keeps the top ``1 - l1_sparsity`` fraction of gradient coordinates per
    step (advertorch's default 0.95). CW: ``cw_c_grid`` ascending, ``cw_search_steps``
    bisection rounds, ``cw_steps`` Adam steps at ``cw_lr`` per run, confidence ``cw_kappa``.
    """

    steps: int = 20
    step_fraction: float = 0.25
    mim_decay: float = 1.0
    l1_sparsity: float = 0.95
    cw_c_grid: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
    cw_search_steps: int = 2
    cw_steps: int = 100
    cw_lr: float = 0.1
    cw_kappa: float = 0.0


#: AutoAttack "standard" as the official code sets it (autoattack.py ``_set_version``):
#: APGD-CE 100 iterations 1 restart, APGD-T 100 iterations 9 targets, FAB-T 100 iterations
#: 9 targets, Square 5,000 queries (p_init 0.8, no schedule rescaling).
AUTOATTACK_STANDARD: Mapping[str, Any] = MappingProxyType({
    "apgd_iters": 100, "apgd_restarts": 1, "apgd_rho": 0.75, "targets": 9, "fab_iters": 100,
    "fab_alpha_max": 0.1, "fab_eta": 1.05, "fab_beta": 0.9, "square_queries": 5000, "square_p_init": 0.8,
})
AUTOATTACK_STAGES: tuple[str, ...] = ("apgd-ce", "apgd-t", "fab-t", "square")


# ----------------------------------------------------------------------------- norms
def lp_norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example norm of ``delta`` (N, ...), computed in float64 (exact enough to check budgets)."""
    flat = delta.detach().reshape(len(delta), -1).double()
    if norm == "linf":
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(len(delta))
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")


def budget_tolerance(eps: float) -> float:
    """Slack for float32 rounding when checking ``||delta|| <= eps`` (1e-6 + 1e-6 eps)."""
    return 1e-6 + 1e-6 * float(eps)


def within_budget(x_adv: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """True per example when ``x_adv`` is in the eps-ball around ``x`` and in the [0, 1] box."""
    tol = budget_tolerance(eps)
    flat = x_adv.detach().reshape(len(x_adv), -1)
    in_box = (flat >= -tol).all(dim=1) & (flat <= 1 + tol).all(dim=1)
    return (lp_norms(x_adv - x, norm) <= eps + tol).to(in_box.device) & in_box


def project_l1(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Euclidean projection of each example of ``delta`` onto ``{||d||_1 <= eps}``.

    Duchi et al. 2008, Fig. 1: sort ``|v|`` descending, ``rho = max{j: u_j > (cumsum_j - eps)/j}``,
    ``theta = (cumsum_rho - eps)/rho``, soft-threshold by ``theta``. Sums run in float64 so
    the projected norm does not exceed ``eps`` by float32 rounding; examples already inside
    are returned unchanged.
    """
    n = len(delta)
    flat = delta.reshape(n, -1)
    a = flat.abs().double()
    outside = a.sum(dim=1) > eps
    if not bool(outside.any()):
        return delta
    u, _ = torch.sort(a[outside], dim=1, descending=True)
    css = u.cumsum(dim=1)
    j = torch.arange(1, u.shape[1] + 1, device=u.device, dtype=u.dtype)
    cond = u * j > (css - eps)
    rho = cond.to(torch.int64).cumsum(dim=1).argmax(dim=1)  # last index where cond holds
    theta = ((css.gather(1, rho[:, None]) - eps) / (rho[:, None] + 1).to(u.dtype)).clamp_min(0)
    shrunk = (a[outside] - theta).clamp_min(0)
    out = flat.clone()
    out[outside] = (torch.sign(flat[outside]).double() * shrunk).to(flat.dtype)
    return out.reshape(delta.shape)


def project(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Projection of ``delta`` onto the eps-ball of ``norm`` (exact for all three norms)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        norms = delta.reshape(len(delta), -1).norm(p=2, dim=1).clamp_min(1e-12)
        factor = (eps / norms).clamp(max=1.0).to(delta.dtype)
        return delta * factor.view(-1, *([1] * (delta.dim() - 1)))
    if norm == "l1":
        return project_l1(delta, eps)
    raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")


# ----------------------------------------------------------------------------- modes and seeds
@contextmanager
def attack_mode(*models: nn.Module) -> Iterator[None]:
    """Eval mode, fp32 (autocast off) and gradients enabled, parameters frozen; restored after.

    Attacks need gradients with respect to the input only. Freezing the parameters skips the
    weight-gradient kernels and keeps attacks that call ``backward()`` (torchattacks' CW and
    FAB) from accumulating ``.grad`` into the model. Autocast is disabled because attacks need
    fp32 gradients (DESIGN.md); an enclosing ``inference_mode``/``no_grad`` is lifted.
    """
    states = [(m, m.training, [(p, p.requires_grad) for p in m.parameters()]) for m in models]
    device_types = {p.device.type for m in models for p in m.parameters()} or {"cpu"}
    try:
        for m, _, params in states:
            m.eval()
            for p, _ in params:
                p.requires_grad_(False)
        with torch.inference_mode(False), torch.enable_grad():
            with _autocast_off(sorted(device_types)):
                yield
    finally:
        for m, training, params in states:
            m.train(training)
            for p, flag in params:
                p.requires_grad_(flag)


@contextmanager
def _autocast_off(device_types: Sequence[str]) -> Iterator[None]:
    if not device_types:
        yield
        return
    with torch.autocast(device_type=device_types[0], enabled=False):
        with _autocast_off(device_types[1:]):
            yield


def derive_seed(base: int, *parts: Any) -> int:
    """A 63-bit seed from ``base`` and labels (attack, eps, restart): stable across runs and versions."""
    digest = hashlib.sha256(repr((int(base),) + tuple(parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG inside a fork, so the caller's RNG state is left untouched.

    torchattacks draws random starts from the global RNG (``uniform_``/``normal_`` on
    tensors) and its APGD/FAB/Square call ``torch.random.manual_seed(seed)`` themselves;
    forking makes both reproducible from the suite's seed without side effects.
    """
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# ----------------------------------------------------------------------------- attacks
class Perturb(TypingProtocol):
    """An attack bound to a model and budget: ``(images, labels) -> adversarial images``."""

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...


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
                 random_start: bool = True, generator: torch.Generator | None = None):
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        self.model, self.eps, self.alpha, self.steps = model, float(eps), float(alpha), int(steps)
        self.sparsity, self.random_start = float(sparsity), random_start
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

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


def sanitize(x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Replace examples with non-finite values by the clean image (e.g. MI-FGSM's ``0/0`` on zero gradients)."""
    bad = ~torch.isfinite(x_adv.reshape(len(x_adv), -1)).all(dim=1)
    if bool(bad.any()):
        log.warning("%d adversarial examples had non-finite values (zero or NaN gradients); "
                    "counting them as not attacked", int(bad.sum()))
        x_adv = torch.where(bad.view(-1, *([1] * (x.dim() - 1))), x, x_adv)
    return x_adv


def autoattack_stages(model: nn.Module, eps: float, num_classes: int, seed: int,
                      norm: str = "Linf") -> list[tuple[str, Perturb]]:
    """AutoAttack "standard" as ``(stage name, attack)`` pairs, torchattacks classes, official arguments.

    torchattacks' APGDT and FAB take ``n_classes`` and attack ``n_classes - 1`` targets (the
    classes ranked 2nd..n_classes by the clean logits); the official code attacks 9 targets for
    every dataset. So ``n_classes = min(10, num_classes)``: 9 targets for CIFAR-10 *and*
    CIFAR-100/ImageNet, ``num_classes - 1`` only when fewer than 10 classes exist. Every
    stage gets the same seed, as the official ``get_seed()`` does. Square uses
    ``resc_schedule=False`` (the official AutoAttack sets it; torchattacks defaults to True).
    """
    import torchattacks

    s = AUTOATTACK_STANDARD
    n_cls = min(s["targets"] + 1, int(num_classes))
    return [
        ("apgd-ce", torchattacks.APGD(model, norm=norm, eps=eps, steps=s["apgd_iters"], n_restarts=s["apgd_restarts"],
                                      seed=seed, loss="ce", eot_iter=1, rho=s["apgd_rho"])),
        ("apgd-t", torchattacks.APGDT(model, norm=norm, eps=eps, steps=s["apgd_iters"], n_restarts=1, seed=seed,
                                      eot_iter=1, rho=s["apgd_rho"], n_classes=n_cls)),
        ("fab-t", torchattacks.FAB(model, norm=norm, eps=eps, steps=s["fab_iters"], n_restarts=1,
                                   alpha_max=s["fab_alpha_max"], eta=s["fab_eta"], beta=s["fab_beta"], seed=seed,
                                   multi_targeted=True, n_classes=n_cls)),
        ("square", torchattacks.Square(model, norm=norm, eps=eps, n_queries=s["square_queries"], n_restarts=1,
                                       p_init=s["square_p_init"], loss="margin", resc_schedule=False, seed=seed)),
    ]


# Builders: (model, eps, settings, num_classes, seed) -> list of (stage name, attack).
Builder = Callable[[nn.Module, float, AttackSettings, int, int], list[tuple[str, Perturb]]]


def _fgsm(model: nn.Module, eps: float, s: AttackSettings, num_classes: int, seed: int) -> list[tuple[str, Perturb]]:
    import torchattacks

    return [("fgsm", torchattacks.FGSM(model, eps=eps))]


def _pgd_linf(model: nn.Module, eps: float, s: AttackSettings, num_classes: int, seed: int) -> list[tuple[str, Perturb]]:
    import torchattacks

    return [("pgd_linf", torchattacks.PGD(model, eps=eps, alpha=s.step_fraction * eps, steps=s.steps, random_start=True))]


def _pgd_l2(model: nn.Module, eps: float, s: AttackSettings, num_classes: int, seed: int) -> list[tuple[str, Perturb]]:
    import torchattacks

    return [("pgd_l2", torchattacks.PGDL2(model, eps=eps, alpha=s.step_fraction * eps, steps=s.steps, random_start=True))]


def _pgd_l1(model: nn.Module, eps: float, s: AttackSettings, num_classes: int, seed: int) -> list[tuple[str, Perturb]]:
    gen = torch.Generator().manual_seed(seed)
    return [("pgd_l1", SparseL1Descent(model, eps, s.step_fraction * eps, s.steps, s.l1_sparsity, True, gen))]


def _mim(model: nn.Module, eps: float, s: AttackSettings, num_classes: int, seed: int) -> list[tuple[str, Perturb]]:
    import torchattacks

    return [("mim", torchattacks.MIFGSM(model, eps=eps, alpha=s.step_fraction * eps, steps=s.steps, decay=s.mim_decay))]


def _cw_l2(model: nn.Module, eps: float, s: AttackSettings, num_classes: int, seed: int) -> list[tuple[str, Perturb]]:
    return [("cw_l2", MinNormCW(model, s.cw_c_grid, s.cw_steps, s.cw_lr, s.cw_search_steps, s.cw_kappa))]


def _autoattack(model: nn.Module, eps: float, s: AttackSettings, num_classes: int, seed: int) -> list[tuple[str, Perturb]]:
    return autoattack_stages(model, eps, num_classes, seed)


ATTACK_BUILDERS: Mapping[str, Builder] = MappingProxyType({
    "fgsm": _fgsm, "pgd_linf": _pgd_linf, "pgd_l2": _pgd_l2, "pgd_l1": _pgd_l1, "mim": _mim,
    "cw_l2": _cw_l2, "autoattack": _autoattack,
})


def build_attack(name: str, model: nn.Module, eps: float, settings: AttackSettings | None = None,
                 num_classes: int = 10, seed: int = 0) -> list[tuple[str, Perturb]]:
    """The stages of attack ``name`` against ``model`` at budget ``eps`` (one stage except AutoAttack)."""
    from nasrobust.errors import UnknownNameError

    if name not in ATTACK_BUILDERS:
        raise UnknownNameError("attack", name, ATTACK_BUILDERS)
    return ATTACK_BUILDERS[name](model, float(eps), settings or AttackSettings(), int(num_classes), int(seed))


# ----------------------------------------------------------------------------- running
@dataclass(frozen=True)
class CascadeResult:
    """Outcome of :func:`run_cascade` over all N examples.

    ``robust[i]`` -- example ``i`` was attacked and every stage failed inside the budget
    (False for examples not attacked, i.e. clean-misclassified); ``survivors`` -- how many
    attacked examples were still standing before the first stage and after each stage;
    ``outside_budget`` -- misclassified outputs discarded for leaving the ball or the box.
    """

    robust: torch.Tensor
    survivors: tuple[int, ...]
    outside_budget: int


def _batches(idx: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(idx), batch_size):
        yield idx[start:start + batch_size]


def run_cascade(model: nn.Module, stages: Sequence[Perturb], images: torch.Tensor, labels: torch.Tensor,
                attacked: torch.Tensor, norm: str, eps: float, device: torch.device, batch_size: int,
                on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> CascadeResult:
    """Run ``stages`` in turn; each sees only the examples that survived the previous ones.

    ``images``/``labels`` hold all N examples (any device); ``attacked`` (bool, N) says which to
    attack (the clean-correct ones: misclassified examples are broken already, as in
    RobustBench/AutoAttack). An output counts as adversarial only if it is misclassified *and*
    within ``norm``-ball ``eps`` and the [0, 1] box (:func:`within_budget`). ``on_batch(idx, x_adv)``
    sees every stage's output (tests use it to check budgets). Call inside :func:`attack_mode`.
    """
    robust = attacked.clone().cpu()
    survivors = [int(robust.sum())]
    outside = 0
    for stage in stages:
        idx = robust.nonzero().flatten()
        for b in _batches(idx, batch_size):
            x = images[b].to(device, non_blocking=True)
            y = labels[b].to(device, non_blocking=True)
            x_adv = sanitize(stage(x, y).detach(), x)
            if on_batch is not None:
                on_batch(b, x_adv)
            with torch.no_grad():
                wrong = model(x_adv).argmax(dim=1) != y
            ok = within_budget(x_adv, x, norm, eps)
            outside += int((wrong & ~ok).sum())
            robust[b[(wrong & ok).cpu()]] = False
        survivors.append(int(robust.sum()))
        if survivors[-1] == 0:
            survivors.extend([0] * (len(stages) - len(survivors) + 1))
            break
    if outside:
        log.warning("%d adversarial examples left the %s ball of %.6g or the [0, 1] box and were not counted", outside, norm, eps)
    return CascadeResult(robust, tuple(survivors), outside)


def predict_labels(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int) -> torch.Tensor:
    """Argmax predictions (CPU, int64) for all ``images`` in eval mode, batched on ``device``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = [model(images[i:i + batch_size].to(device)).argmax(dim=1).cpu() for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.int64)


def zero_gradient_mask(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor,
                       device: torch.device, batch_size: int) -> torch.Tensor:
    """Examples (among ``idx``) whose cross-entropy input gradient is exactly zero.

    auto-attack's ``checks.check_zero_gradients``: gradient-based attacks cannot move such
    points, a classic sign of gradient masking (Athalye et al., ICML 2018). Call inside
    :func:`attack_mode`.
    """
    out = torch.zeros(len(images), dtype=torch.bool)
    for b in _batches(idx, batch_size):
        x = images[b].to(device).requires_grad_(True)
        loss = F.cross_entropy(model(x), labels[b].to(device), reduction="sum")
        grad, = torch.autograd.grad(loss, x)
        out[b] = (grad.reshape(len(b), -1).abs().sum(dim=1) == 0).cpu()
    return out
