"""What every attack shares: the attack registry and spec, threat models, modes, seeds, the cascade.

An attack is one :class:`AttackSpec` registered in :data:`ATTACKS` by its own module in this
package (``fgsm.py``, ``pgd.py``, ``mim.py``, ``cw.py``, ``autoattack.py``): its name, the norm
whose ball it stays in, whether it draws a random start (restarts apply), whether its examples
transfer, its role in the adversarial suite's sanity checks, the settings it records in
protocols, and its builder. The suite (:mod:`nasrobust.noise.adversarial`) only reads specs,
so adding an attack is one new module here plus its test.

Shared here:

* :data:`FAMILY_DEFAULTS` -- eps per norm and dataset family (sources in :class:`EpsDefaults`).
* Projections and norms: :func:`project_l1` is the exact Euclidean projection onto the L1
  ball (Duchi, Shalev-Shwartz, Singer & Chandra, ICML 2008, Fig. 1), batched.
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Protocol as TypingProtocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from nasrobust.registry import Registry

log = logging.getLogger(__name__)

NORMS: tuple[str, ...] = ("linf", "l2", "l1")


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
    Minimum-norm attacks: ``minnorm_rounds`` bisection rounds over eps (a bracket of eps_max / 2**rounds).
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
    minnorm_rounds: int = 12


# ----------------------------------------------------------------------------- the spec and registry
class Perturb(TypingProtocol):
    """An attack bound to a model and budget: ``(images, labels) -> adversarial images``."""

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...


#: ``(model, eps, settings, num_classes, seed) -> [(stage name, attack)]``: one stage except ensembles.
Builder = Callable[[nn.Module, float, AttackSettings, int, int], list[tuple[str, Perturb]]]


def _no_params(settings: AttackSettings, num_classes: int) -> Mapping[str, Any]:
    return {}


@dataclass(frozen=True)
class AttackSpec:
    """One attack as the adversarial suite sees it; register with :func:`register_attack`.

    * ``order`` -- position in the run order (and in protocols): cheap attacks first.
    * ``default`` -- runs when the user does not choose ``attacks``. A new attack registered with
      ``default=False`` runs only when asked for, so it leaves every default protocol (and the
      stores written under it) as it was.
    * ``random_start`` -- draws a random start, so ``restarts`` repeats it with new seeds.
    * ``transferable`` -- eps-bounded gradient steps whose examples transfer to other models.
    * ``minimal`` -- a minimal-perturbation attack: its single stage has ``distances(x, y) ->
      (adv, dist)``; it runs once and an example counts as broken at eps iff its distance is
      <= eps; the suite records the median distance as ``median_<norm>``.
    * ``single_budget`` -- runs once, at the suite's ``eps_autoattack`` (a fixed-protocol ensemble).
    * ``strength`` -- rank in the ``aa_le_pgd_le_fgsm`` sanity check: at the same eps and norm
      it must not leave more accuracy than the attack one rank below (such attacks also run at
      the single budget, so the order can be checked there).
    * ``zero_budget_check`` -- also runs at eps 0, which must reproduce clean accuracy.
    * ``black_box_last_stage`` -- its last stage is black-box: it must break few points the
      gradient stages left (auto-attack's ``check_square_sr``).
    * ``params`` -- ``(settings, num_classes) -> {name: value}`` recorded in the suite's protocol.
    """

    name: str
    norm: str
    build: Builder
    order: int
    doc: str = ""
    default: bool = True
    random_start: bool = False
    transferable: bool = False
    minimal: bool = False
    single_budget: bool = False
    strength: int | None = None
    zero_budget_check: bool = False
    black_box_last_stage: bool = False
    params: Callable[[AttackSettings, int], Mapping[str, Any]] = _no_params

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"attack {self.name!r}: norm must be one of {', '.join(NORMS)}, got {self.norm!r}")

    def __call__(self, model: nn.Module, eps: float, settings: AttackSettings | None = None, num_classes: int = 10,
                 seed: int = 0) -> list[tuple[str, Perturb]]:
        """The stages of this attack against ``model`` at budget ``eps``."""
        return self.build(model, float(eps), settings or AttackSettings(), int(num_classes), int(seed))


#: Registered attacks: ``ATTACKS.get(name)`` is the :class:`AttackSpec`.
ATTACKS: Registry[list[tuple[str, Perturb]]] = Registry("attack", plugins="nasrobust.noise.attacks")


def register_attack(spec: AttackSpec) -> AttackSpec:
    """Add ``spec`` to :data:`ATTACKS` (call at import time of the attack's module)."""
    ATTACKS.register(spec.name, spec.doc)(spec)
    return spec


def attack_spec(name: str) -> AttackSpec:
    """The registered spec of ``name``; an unknown name lists the valid ones."""
    return ATTACKS.get(name)  # type: ignore[return-value]


def attack_names(default_only: bool = False) -> tuple[str, ...]:
    """Every registered attack (``default_only``: those run when none are chosen), in run order."""
    names = sorted(ATTACKS.names(), key=lambda n: (attack_spec(n).order, n))
    return tuple(n for n in names if attack_spec(n).default or not default_only)


def build_attack(name: str, model: nn.Module, eps: float, settings: AttackSettings | None = None,
                 num_classes: int = 10, seed: int = 0) -> list[tuple[str, Perturb]]:
    """The stages of attack ``name`` against ``model`` at budget ``eps`` (one stage except AutoAttack)."""
    return attack_spec(name)(model, eps, settings, num_classes, seed)


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


def sanitize(x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Replace examples with non-finite values by the clean image (e.g. MI-FGSM's ``0/0`` on zero gradients)."""
    bad = ~torch.isfinite(x_adv.reshape(len(x_adv), -1)).all(dim=1)
    if bool(bad.any()):
        log.warning("%d adversarial examples had non-finite values (zero or NaN gradients); "
                    "counting them as not attacked", int(bad.sum()))
        x_adv = torch.where(bad.view(-1, *([1] * (x.dim() - 1))), x, x_adv)
    return x_adv


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
