"""The ``adversarial`` noise suite: FGSM, PGD (Linf, L2, L1), MIM, CW-L2 and AutoAttack.

What it measures, per attack and budget ``eps`` (noise = attack name, level = eps):

* ``accuracy`` -- robust accuracy over all examples (RobustBench's number);
* ``ar`` -- RobustART's adversarial robustness: accuracy among the clean-correct examples
  (``RobustART/metrics/AR_evaluator.py``), i.e. ``accuracy / clean accuracy``;
* ``worst_case`` noise, level = tier 1, 2, 3 -- ``wcar`` (RobustART's worst-case adversarial
  robustness, ``WCAR_evaluator.py``: clean-correct examples that survive *every* attack, over
  the clean-correct ones) and ``accuracy`` (the same over all examples). **Tiers across
  norms**: tier ``t`` is the union of the balls Linf(eps_linf[t]), L2(eps_l2[t]),
  L1(eps_l1[t]) (each norm's budgets sorted; a norm with fewer budgets repeats its largest).
  Every run whose ball lies inside tier ``t``'s ball of the same norm counts -- a run at a
  smaller eps of that norm too (an example broken inside a smaller ball is broken inside
  the larger one), and AutoAttack's single eps joins the tiers whose Linf budget is at
  least its eps (ImageNet: AutoAttack at 4/255 joins tier 3 = 8/255). So the WCAR of a
  tier is the worst case over everything run inside that tier's threat model and cannot
  increase with the tier. Transfer attacks count too.
* ``clean`` / 0 / ``accuracy``; ``cw_l2`` / 0 / ``median_l2`` -- median minimal L2
  distance over all examples (0 for clean-misclassified, inf where CW found nothing; written
  only when finite). ``cw_l2`` accuracy at an L2 eps counts an example broken only if CW
  found an adversarial example within eps.
* ``sanity`` / 0 / check -- 1.0 pass, 0.0 violation (and a :class:`GradientMaskingWarning`
  naming it), following Carlini et al. "On Evaluating Adversarial Robustness" (2019) and
  auto-attack's ``checks.py``:

  - ``eps0_equals_clean`` -- PGD-Linf at eps 0 reproduces clean accuracy (to 0.1% or one
    example): catches randomised models and pipeline bugs;
  - ``monotonic_in_eps`` -- every attack's accuracy falls with eps (within tolerance);
  - ``aa_le_pgd_le_fgsm`` -- AutoAttack <= PGD-Linf at its eps, PGD-Linf <= FGSM at each
    Linf eps: a single step beating an iterative attack signals masking;
  - ``square_gain_small`` -- Square (black-box, last AutoAttack stage) breaks few points
    the gradient stages could not (auto-attack's ``check_square_sr``);
  - ``whitebox_le_transfer`` -- with ``transfer_from``: transferred examples are not
    stronger than white-box ones (black-box beating white-box signals masking);
  - ``no_zero_gradients`` -- clean-correct points with an exactly zero input gradient
    (auto-attack's ``check_zero_gradients``).

  **Tolerance**: ``max(sanity_tolerance, 2 / n)`` in accuracy (default 0.5 points, or two
  examples on small subsets) -- paired comparisons on the same examples differ by a few
  points through random starts and step schedules, not more.

Protocol (DESIGN.md; per family defaults in :data:`~nasrobust.noise._attacks.FAMILY_DEFAULTS`):
PGD 20 steps of eps/4 from a random start (torchattacks ``PGD``/``PGDL2``; our sparse-L1
PGD), MIM 20 steps of eps/4 with decay 1.0 (``MIFGSM``), FGSM (``FGSM``), CW-L2 min-norm
search over ``c`` on torchattacks' ``CW``, AutoAttack "standard" (official arguments on
torchattacks' APGD/APGDT/FAB/Square). PGD-Linf and FGSM also run at AutoAttack's eps so the
three can be compared. Only clean-correct examples are attacked (misclassified ones are
broken already -- RobustBench/auto-attack do the same); batches of ``ctx.batch_size`` on
``ctx.device``; attacks run in fp32 with autocast off and parameters frozen.

Determinism: torchattacks draws random starts from torch's *global* RNG and its APGD/FAB/
Square reseed it; every run (attack, eps) executes inside ``torch.random.fork_rng`` seeded
with a hash of ``(ctx.seed, attack, eps)``, so results repeat for a seed and the caller's
RNG state is untouched. PGD-L1 draws from an explicit ``torch.Generator``.

Transfer attacks: ``transfer_from=source_model`` makes FGSM/PGD/MIM examples on the source
(all test examples, cached on disk per source weights) and scores them on each model
(noise ``transfer/<attack>``); :func:`transfer_examples` is the same as a helper.
"""

from __future__ import annotations

import hashlib
import logging
import math
import numbers
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import torch
import torch.nn as nn

from nasrobust.errors import NasRobustError, UnknownNameError
from nasrobust.noise import _attacks as A
from nasrobust.noise.base import CLEAN, SUITES, EvalContext, Measurement, MetricInfo, NoiseSuite, cached_tensor
from nasrobust.records import Protocol

log = logging.getLogger(__name__)

SUITE = "adversarial"
DEFAULT_TOLERANCE = 0.005
#: The attack run at eps 0 (the ``eps0_equals_clean`` check) and those also run at AutoAttack's eps.
EPS0_ATTACK = "pgd_linf"
COMPARED_WITH_AUTOATTACK: tuple[str, ...] = ("pgd_linf", "fgsm")
SANITY_CHECKS: tuple[str, ...] = (
    "eps0_equals_clean", "monotonic_in_eps", "aa_le_pgd_le_fgsm", "square_gain_small",
    "whitebox_le_transfer", "no_zero_gradients",
)


class AdversarialOptionError(NasRobustError, ValueError):
    """An option of the adversarial suite that cannot be used; says what to pass instead."""


class GradientMaskingWarning(UserWarning):
    """A sanity check of the adversarial suite failed: the robust accuracy may be overestimated."""


# ----------------------------------------------------------------------------- options
def _parse_eps(value: Any, what: str) -> tuple[float, ...] | None:
    """Budgets from a float, a sequence, or a CLI string such as ``"1/255,4/255,8/255"``."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else (value if isinstance(value, (list, tuple)) else [value])
    out = []
    for item in items:
        try:
            if isinstance(item, str):
                num, _, den = item.strip().partition("/")
                eps = float(num) / float(den) if den else float(num)
            else:
                eps = float(item)
        except (TypeError, ValueError, ZeroDivisionError):
            raise AdversarialOptionError(f"{what}: cannot read {item!r} as a budget; pass numbers such as 0.3 or '8/255'") from None
        if not math.isfinite(eps) or eps <= 0:
            raise AdversarialOptionError(f"{what} must be finite and > 0, got {item!r} (eps 0 is run as a sanity check already)")
        out.append(eps)
    if not out:
        raise AdversarialOptionError(f"{what} is empty; give at least one budget or leave it unset for the defaults")
    return tuple(sorted(set(out)))


def _parse_attacks(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else [str(n) for n in value]
    names = [n for n in names if n]
    if not names:
        raise AdversarialOptionError(f"attacks is empty; choose from {', '.join(A.ATTACK_NAMES)}")
    for n in names:
        if n not in A.ATTACK_NAMES:
            raise UnknownNameError("attack", n, A.ATTACK_NAMES)
    return tuple(n for n in A.ATTACK_NAMES if n in names)  # canonical order


def _positive_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not (integral or (isinstance(value, str) and value.strip().isdigit())) or int(value) < 1:
        raise AdversarialOptionError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _fraction(value: Any, what: str) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = math.nan
    if isinstance(value, bool) or not 0 <= f < 1:
        raise AdversarialOptionError(f"{what} is a fraction of accuracy in [0, 1), got {value!r}")
    return f


@dataclass(frozen=True)
class Run:
    """One attack at one budget: ``noise`` is the record name (``transfer/`` prefix for transfers)."""

    noise: str
    attack: str
    norm: str
    eps: float


@dataclass(frozen=True)
class AdversarialSettings:
    """The suite's options resolved for one dataset (family defaults filled in)."""

    attacks: tuple[str, ...]
    eps_linf: tuple[float, ...]
    eps_l2: tuple[float, ...]
    eps_l1: tuple[float, ...]
    eps_autoattack: float
    restarts: int
    tolerance: float
    num_classes: int
    attack: A.AttackSettings = field(default_factory=A.AttackSettings)
    transfer_attacks: tuple[str, ...] = ()

    def eps_of(self, norm: str) -> tuple[float, ...]:
        return {"linf": self.eps_linf, "l2": self.eps_l2, "l1": self.eps_l1}[norm]

    def budgets(self, attack: str) -> tuple[float, ...]:
        """The eps an attack runs at: its norm's budgets (AutoAttack: its single eps), plus the
        extra points the sanity checks compare (eps 0 for PGD-Linf, AutoAttack's eps for PGD and FGSM)."""
        if attack == "autoattack":
            return (self.eps_autoattack,)
        eps = set(self.eps_of(A.NORM_OF[attack]))
        if attack in COMPARED_WITH_AUTOATTACK and "autoattack" in self.attacks:
            eps.add(self.eps_autoattack)
        if attack == EPS0_ATTACK:
            eps.add(0.0)
        return tuple(sorted(eps))

    def white_box_runs(self) -> list[Run]:
        """Every (attack, eps) in run order."""
        return [Run(a, a, A.NORM_OF[a], e) for a in self.attacks for e in self.budgets(a)]

    def transfer_runs(self) -> list[Run]:
        return [Run(f"transfer/{name}", name, A.NORM_OF[name], e) for name in self.transfer_attacks
                for e in self.eps_of(A.NORM_OF[name])]

    def tiers(self) -> list[dict[str, float]]:
        """Tier t -> per-norm budget (sorted budgets; a shorter list repeats its largest)."""
        norms = sorted({A.NORM_OF[a] for a in self.attacks + self.transfer_attacks})
        k = max((len(self.eps_of(n)) for n in norms), default=0)
        return [{n: self.eps_of(n)[min(t, len(self.eps_of(n)) - 1)] for n in norms} for t in range(k)]


@SUITES.register(SUITE)
class AdversarialSuite(NoiseSuite):
    """FGSM, PGD-Linf/L2/L1, MIM, CW-L2 and AutoAttack-standard at several budgets, with AR, WCAR and sanity checks.

    Options (``None`` = the dataset family's default): ``attacks`` (subset of
    fgsm, pgd_linf, pgd_l2, pgd_l1, mim, cw_l2, autoattack), ``eps_linf``/``eps_l2``/``eps_l1``
    (budgets per norm), ``eps_autoattack``, ``steps`` (PGD/MIM, 20), ``restarts`` (random-start
    attacks, 1), ``cw_steps`` (100), ``sanity_tolerance`` (0.005), ``transfer_from`` (a source
    model, or a stand-alone checkpoint path, for transfer attacks). On the CLI:
    ``--suite-option adversarial.attacks=pgd_linf,fgsm --suite-option adversarial.eps_linf=1/255,8/255``.

    A unit the evaluator left half-done is recomputed whole: WCAR and the sanity checks need
    the per-example results of every run.
    """

    name = SUITE
    metrics = (
        MetricInfo("accuracy", True, headline="clean acc", noise=CLEAN, rank_group=CLEAN,
                   description="accuracy on the unperturbed test examples (all of them)"),
        MetricInfo("accuracy", True, headline="PGD-Linf acc (max eps)", noise="pgd_linf", rank_group=SUITE,
                   description="robust accuracy under PGD-Linf, over all examples"),
        MetricInfo("accuracy", True, headline="worst-case acc", noise="worst_case", rank_group=SUITE,
                   description="accuracy under every attack of a tier at once, over all examples (level = tier)"),
        MetricInfo("accuracy", True, rank_group=SUITE,
                   description="robust accuracy over all examples (RobustBench), per attack and eps"),
        MetricInfo("ar", True, description="RobustART's AR: robust accuracy among the clean-correct examples"),
        MetricInfo("wcar", True, noise="worst_case",
                   description="RobustART's WCAR: clean-correct examples surviving every attack of the tier"),
        *(MetricInfo(f"median_{norm}", True, description=f"median minimal {norm} distance of a minimal-perturbation "
                     "attack (inf where none was found: not written)") for norm in ("linf", "l2", "l1")),
        *(MetricInfo(check, True, noise="sanity", diagnostic=True,
                     description="gradient-masking check: 1 passed, 0 failed") for check in SANITY_CHECKS),
    )
    #: FGSM and PGD-10 (Linf) at the MNIST budget 0.1 (the sanity checks add eps 0 and 0.3);
    #: no PGD-L2/L1, CW or AutoAttack: minutes per subnet on a CPU.
    cpu_options = MappingProxyType({"attacks": ("fgsm", "pgd_linf"), "eps_linf": (0.1,), "steps": 10})

    def __init__(self, attacks: str | Sequence[str] | None = None, eps_linf: Any = None, eps_l2: Any = None,
                 eps_l1: Any = None, eps_autoattack: Any = None, steps: int | None = None, restarts: int | None = None,
                 cw_steps: int | None = None, sanity_tolerance: float | None = None,
                 transfer_from: nn.Module | None = None):
        self.attacks = _parse_attacks(attacks)
        self.eps = {"linf": _parse_eps(eps_linf, "eps_linf"), "l2": _parse_eps(eps_l2, "eps_l2"),
                    "l1": _parse_eps(eps_l1, "eps_l1")}
        aa = _parse_eps(eps_autoattack, "eps_autoattack")
        if aa is not None and len(aa) != 1:
            raise AdversarialOptionError(f"eps_autoattack takes one budget (AutoAttack runs at a single eps), got {aa}")
        self.eps_autoattack = aa[0] if aa else None
        self.steps = _positive_int(steps, "steps")
        self.restarts = _positive_int(restarts, "restarts")
        self.cw_steps = _positive_int(cw_steps, "cw_steps")
        self.tolerance = DEFAULT_TOLERANCE if sanity_tolerance is None else _fraction(sanity_tolerance, "sanity_tolerance")
        if isinstance(transfer_from, (str, os.PathLike)):
            from nasrobust import checkpoint

            transfer_from, _ = checkpoint.load_model(transfer_from)  # raises a NasRobustError for a bad file
        if transfer_from is not None and not isinstance(transfer_from, nn.Module):
            raise AdversarialOptionError("transfer_from must be a source model (nn.Module taking [0, 1] images) "
                                         "or the path of a stand-alone checkpoint")
        self.transfer_from = transfer_from
        self._source_id: str | None = None

    @classmethod
    def selector_options(cls, noise: str, level: float | None) -> dict[str, Any]:
        """A live metric of one attack at one eps runs just that attack at that eps."""
        if noise not in A.NORM_OF or not level:
            return {}
        key = "eps_autoattack" if noise == "autoattack" else f"eps_{A.NORM_OF[noise]}"
        return {"attacks": noise, key: float(level)}

    # ------------------------------------------------------------------ protocol
    def settings(self, ctx: EvalContext) -> AdversarialSettings:
        """Options resolved for ``ctx``'s dataset family."""
        family = ctx.family
        defaults = A.FAMILY_DEFAULTS.get(family, A.FAMILY_DEFAULTS["imagenet"])
        attacks = self.attacks or A.ATTACK_NAMES
        base = A.AttackSettings()
        attack = replace(base, steps=self.steps or base.steps, cw_steps=self.cw_steps or base.cw_steps)
        transfer = tuple(a for a in attacks if a in A.TRANSFERABLE) if self.transfer_from is not None else ()
        return AdversarialSettings(
            attacks=attacks,
            eps_linf=self.eps["linf"] or defaults.linf, eps_l2=self.eps["l2"] or defaults.l2,
            eps_l1=self.eps["l1"] or defaults.l1, eps_autoattack=self.eps_autoattack or defaults.autoattack,
            restarts=self.restarts or 1, tolerance=self.tolerance, num_classes=int(ctx.data.info.num_classes),
            attack=attack, transfer_attacks=transfer,
        )

    def protocol(self, ctx: EvalContext) -> Protocol:
        s = self.settings(ctx)
        a = s.attack
        aa = A.AUTOATTACK_STANDARD
        return Protocol.make(
            steps=a.steps, restarts=s.restarts, seed=ctx.seed, n_examples=ctx.n_examples,
            params={
                "family": ctx.family, "attacks": s.attacks,
                "eps_linf": s.eps_linf, "eps_l2": s.eps_l2, "eps_l1": s.eps_l1, "eps_autoattack": s.eps_autoattack,
                "step_size": f"{a.step_fraction:g} * eps", "random_start": "pgd_linf,pgd_l2,pgd_l1",
                "mim_decay": a.mim_decay, "pgd_l1_sparsity": a.l1_sparsity,
                "cw_c_grid": a.cw_c_grid, "cw_search_steps": a.cw_search_steps, "cw_steps": a.cw_steps,
                "cw_lr": a.cw_lr, "cw_kappa": a.cw_kappa,
                "autoattack": "standard", "autoattack_targets": min(aa["targets"], s.num_classes - 1),
                "apgd_iters": aa["apgd_iters"], "fab_iters": aa["fab_iters"], "square_queries": aa["square_queries"],
                "attacked": "clean-correct only", "sanity_tolerance": s.tolerance,
                "rng": "per-run torch.random.fork_rng seeded from sha256(seed, attack, eps); pgd_l1 torch.Generator",
                "wcar_tiers": "union of per-norm balls at the t-th budget; runs of that norm with eps <= budget",
                "transfer_from": self._transfer_id() if self.transfer_from is not None else None,
                "transfer_attacks": s.transfer_attacks,
            },
        )

    # ------------------------------------------------------------------ transfer
    def _transfer_id(self) -> str:
        if self._source_id is None:
            self._source_id = model_digest(self.transfer_from)
        return self._source_id

    def prepare(self, ctx: EvalContext) -> None:
        """Make (or load) the transfer examples once per dataset: they do not depend on the scored model."""
        if self.transfer_from is not None:
            s = self.settings(ctx)
            for run in s.transfer_runs():
                self._transfer_images(ctx, s, run)

    def _transfer_images(self, ctx: EvalContext, s: AdversarialSettings, run: Run) -> torch.Tensor:
        identity = dict(kind="transfer", source=self._transfer_id(), attack=run.attack, eps=run.eps, seed=ctx.seed,
                        settings=repr(s.attack))
        return cached_tensor(ctx.cache_path(SUITE, **identity), lambda: transfer_examples(
            self.transfer_from, ctx.images, ctx.labels, run.attack, run.eps, device=ctx.device,
            batch_size=ctx.batch_size, seed=derive_run_seed(ctx.seed, "transfer", run), settings=s.attack,
            num_classes=s.num_classes))

    # ------------------------------------------------------------------ run
    def run(self, model: nn.Module, ctx: EvalContext) -> Iterator[Measurement]:
        if ctx.n_examples == 0:
            return
        s = self.settings(ctx)
        device = torch.device(ctx.device)
        model.to(device)
        labels = ctx.labels.cpu()
        clean_correct = A.predict_labels(model, ctx.images, device, ctx.batch_size) == labels
        yield Measurement("clean", 0.0, "accuracy", float(clean_correct.double().mean()))
        results: dict[Run, torch.Tensor] = {}
        extras: dict[str, Any] = {}
        for run in s.white_box_runs():
            if run.attack == "cw_l2":
                continue  # one min-norm run scored at every eps, below
            res = attack_run(model, ctx.images, labels, clean_correct, run.attack, run.eps, device=device,
                             batch_size=ctx.batch_size, seed=derive_run_seed(ctx.seed, "white-box", run),
                             settings=s.attack, num_classes=s.num_classes, restarts=s.restarts)
            results[run] = res.robust
            extras[f"{run.attack}_survivors"] = res.survivors
            yield from _robust_measurements(run, res.robust, clean_correct)
        if "cw_l2" in s.attacks:
            yield from self._cw(model, ctx, s, labels, clean_correct, results)
        for run in s.transfer_runs():
            x_adv = self._transfer_images(ctx, s, run)
            results[run] = transfer_robust(model, ctx.images, x_adv, labels, clean_correct, run.norm, run.eps,
                                           device=device, batch_size=ctx.batch_size)
            yield from _robust_measurements(run, results[run], clean_correct)
        yield from _worst_case_measurements(results, clean_correct, s.tiers())
        if clean_correct.any():
            with A.attack_mode(model):
                zero = A.zero_gradient_mask(model, ctx.images, labels, clean_correct.nonzero().flatten(), device, ctx.batch_size)
            extras["zero_gradients"] = int(zero.sum())
        for check in sanity_checks(results, float(clean_correct.double().mean()), ctx.n_examples, s, extras):
            if not check.passed:
                warnings.warn(f"adversarial sanity check {check.name} failed: {check.detail} -- possible gradient "
                              "masking; the robust accuracies may be overestimated", GradientMaskingWarning, stacklevel=2)
            yield Measurement("sanity", 0.0, check.name, 1.0 if check.passed else 0.0)

    def _cw(self, model: nn.Module, ctx: EvalContext, s: AdversarialSettings, labels: torch.Tensor,
            clean_correct: torch.Tensor, results: dict[Run, torch.Tensor]) -> Iterator[Measurement]:
        """One minimal-perturbation CW run; an example is broken at eps iff CW's distance is <= eps."""
        dist = cw_distances(model, ctx.images, labels, clean_correct, device=ctx.device, batch_size=ctx.batch_size,
                            seed=A.derive_seed(ctx.seed, "white-box", "cw_l2"), settings=s.attack)
        for run in (r for r in s.white_box_runs() if r.attack == "cw_l2"):
            results[run] = clean_correct & (dist > run.eps + A.budget_tolerance(run.eps))
            yield from _robust_measurements(run, results[run], clean_correct)
        median = finite_median(dist)
        if median is not None:
            yield Measurement("cw_l2", 0.0, "median_l2", median)


# ----------------------------------------------------------------------------- building blocks
def derive_run_seed(seed: int, kind: str, run: Run) -> int:
    return A.derive_seed(seed, kind, run.attack, float(run.eps))


def model_digest(model: nn.Module) -> str:
    """sha1 of a model's class and state (names, shapes, bytes): identifies transfer sources."""
    h = hashlib.sha1(type(model).__qualname__.encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def attack_run(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, clean_correct: torch.Tensor, attack: str,
               eps: float, *, device: torch.device | str = "cpu", batch_size: int = 256, seed: int = 0,
               settings: A.AttackSettings | None = None, num_classes: int = 10, restarts: int = 1,
               on_batch: Any = None) -> A.CascadeResult:
    """Robust mask of one eps-bounded attack: the suite's path for every run (also used by benchmarks).

    Attacks the ``clean_correct`` examples only; random-start attacks get ``restarts`` stages
    (each on the survivors of the previous, with its own seed). Deterministic in ``seed``.
    """
    device = torch.device(device)
    settings = settings or A.AttackSettings()
    n_stages = restarts if attack in A.RANDOM_START else 1
    with A.attack_mode(model), A.seeded_global_rng(seed, device):
        stages = [st for r in range(n_stages)
                  for _, st in A.build_attack(attack, model, eps, settings, num_classes, A.derive_seed(seed, r))]
        return A.run_cascade(model, stages, images, labels, clean_correct, A.NORM_OF[attack], eps, device, batch_size, on_batch)


def cw_distances(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, clean_correct: torch.Tensor, *,
                 device: torch.device | str = "cpu", batch_size: int = 256, seed: int = 0,
                 settings: A.AttackSettings | None = None) -> torch.Tensor:
    """Minimal L2 distance CW found per example (0 for clean-misclassified, inf where none was found)."""
    device = torch.device(device)
    s = settings or A.AttackSettings()
    dist = torch.zeros(len(images), dtype=torch.float64)
    dist[clean_correct] = math.inf
    idx = clean_correct.nonzero().flatten()
    with A.attack_mode(model), A.seeded_global_rng(seed, device):
        cw = A.MinNormCW(model, s.cw_c_grid, s.cw_steps, s.cw_lr, s.cw_search_steps, s.cw_kappa)
        for start in range(0, len(idx), batch_size):
            b = idx[start:start + batch_size]
            _, d = cw.distances(images[b].to(device), labels[b].to(device))
            dist[b] = d.cpu()
    return dist


def finite_median(dist: torch.Tensor) -> float | None:
    """Median (mean of the two middle values for even n) or None when it is infinite."""
    if len(dist) == 0:
        return None
    v, _ = torch.sort(dist.double())
    n = len(v)
    mid = float(v[n // 2]) if n % 2 else 0.5 * (float(v[n // 2 - 1]) + float(v[n // 2]))
    return mid if math.isfinite(mid) else None


def transfer_examples(source: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack: str, eps: float, *,
                      device: torch.device | str = "cpu", batch_size: int = 256, seed: int = 0,
                      settings: A.AttackSettings | None = None, num_classes: int = 10) -> torch.Tensor:
    """Adversarial examples for *all* ``images`` made on ``source`` (CPU tensor, same shape)."""
    if attack not in A.TRANSFERABLE:
        raise UnknownNameError("transferable attack", attack, A.TRANSFERABLE)
    device = torch.device(device)
    source.to(device)
    out = torch.empty_like(images)
    with A.attack_mode(source), A.seeded_global_rng(seed, device):
        (_, stage), = A.build_attack(attack, source, eps, settings, num_classes, seed)
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device)
            x_adv = A.sanitize(stage(x, labels[start:start + batch_size].to(device)).detach(), x)
            # the source attack keeps its ball; re-project guards float drift before caching
            out[start:start + batch_size] = (x + A.project(x_adv - x, A.NORM_OF[attack], eps)).clamp(0, 1).cpu()
    return out


def transfer_robust(model: nn.Module, images: torch.Tensor, x_adv: torch.Tensor, labels: torch.Tensor,
                    clean_correct: torch.Tensor, norm: str, eps: float, *, device: torch.device | str = "cpu",
                    batch_size: int = 256) -> torch.Tensor:
    """Robust mask of ``model`` on precomputed (transferred) examples, scored on its clean-correct ones."""
    device = torch.device(device)
    robust = clean_correct.clone()
    idx = clean_correct.nonzero().flatten()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(idx), batch_size):
                b = idx[start:start + batch_size]
                x, xa, y = images[b].to(device), x_adv[b].to(device), labels[b].to(device)
                broken = (model(xa).argmax(dim=1) != y) & A.within_budget(xa, x, norm, eps)
                robust[b[broken.cpu()]] = False
    finally:
        model.train(was_training)
    return robust


def robust_metrics(robust: torch.Tensor, clean_correct: torch.Tensor) -> dict[str, float]:
    """``accuracy`` over all examples and RobustART's ``ar`` over the clean-correct ones (absent if none)."""
    robust = robust & clean_correct  # a misclassified example is never robust
    out = {"accuracy": float(robust.double().mean())} if len(robust) else {}
    if clean_correct.any():
        out["ar"] = float(robust.sum()) / float(clean_correct.sum())
    return out


def worst_case(masks: Sequence[torch.Tensor], clean_correct: torch.Tensor) -> dict[str, float]:
    """WCAR (over clean-correct) and worst-case accuracy (over all) of per-attack robust masks."""
    robust = clean_correct.clone()
    for m in masks:
        robust &= m
    out = robust_metrics(robust, clean_correct)
    return {"accuracy": out["accuracy"], **({"wcar": out["ar"]} if "ar" in out else {})}


def _robust_measurements(run: Run, robust: torch.Tensor, clean_correct: torch.Tensor) -> Iterator[Measurement]:
    for metric, value in robust_metrics(robust, clean_correct).items():
        yield Measurement(run.noise, float(run.eps), metric, value)


def tier_members(results: dict[Run, torch.Tensor], budgets: dict[str, float]) -> list[Run]:
    """Runs inside a tier's threat model: same norm, eps at most the tier's budget for that norm."""
    return [r for r in results if r.norm in budgets and r.eps <= budgets[r.norm] + A.budget_tolerance(r.eps)]


def _worst_case_measurements(results: dict[Run, torch.Tensor], clean_correct: torch.Tensor,
                             tiers: list[dict[str, float]]) -> Iterator[Measurement]:
    for t, budgets in enumerate(tiers, start=1):
        members = tier_members(results, budgets)
        if members:
            for metric, value in worst_case([results[r] for r in members], clean_correct).items():
                yield Measurement("worst_case", float(t), metric, value)


# ----------------------------------------------------------------------------- sanity checks
@dataclass(frozen=True)
class SanityCheck:
    name: str
    passed: bool
    detail: str


def sanity_checks(results: dict[Run, torch.Tensor], clean_acc: float, n: int, s: AdversarialSettings,
                  extras: dict[str, Any]) -> list[SanityCheck]:
    """The checks that the runs allow (see the module docstring), each with what it compared."""
    tol = max(s.tolerance, 2.0 / n)
    acc = {(r.noise, r.eps): float(m.double().mean()) for r, m in results.items()}
    checks = []

    if ("pgd_linf", 0.0) in acc:
        diff = abs(acc["pgd_linf", 0.0] - clean_acc)
        ok = diff <= max(0.001, 1.0 / n) + 1e-12
        checks.append(SanityCheck("eps0_equals_clean", ok, f"PGD-Linf at eps 0 gives {acc['pgd_linf', 0.0]:.4f}, clean {clean_acc:.4f}"))

    bad = []
    for noise in sorted({k[0] for k in acc}):
        curve = sorted((e, a) for (nz, e), a in acc.items() if nz == noise)
        best = math.inf
        for e, a in curve:
            if a > best + tol:
                bad.append(f"{noise} rises to {a:.4f} at eps {e:.6g} (was {best:.4f} at a smaller eps)")
            best = min(best, a)
    if acc and any(sum(1 for k in acc if k[0] == nz) > 1 for nz in {k[0] for k in acc}):
        checks.append(SanityCheck("monotonic_in_eps", not bad, "; ".join(bad) or "all curves non-increasing"))

    pairs, bad = 0, []
    for (noise, e), a in acc.items():
        if noise == "pgd_linf" and e > 0 and ("fgsm", e) in acc:
            pairs += 1
            if a > acc["fgsm", e] + tol:
                bad.append(f"PGD {a:.4f} > FGSM {acc['fgsm', e]:.4f} at eps {e:.6g}")
        if noise == "autoattack" and ("pgd_linf", e) in acc:
            pairs += 1
            if a > acc["pgd_linf", e] + tol:
                bad.append(f"AutoAttack {a:.4f} > PGD {acc['pgd_linf', e]:.4f} at eps {e:.6g}")
    if pairs:
        checks.append(SanityCheck("aa_le_pgd_le_fgsm", not bad, "; ".join(bad) or "ordering holds"))

    surv = extras.get("autoattack_survivors")
    if surv is not None and len(surv) == len(A.AUTOATTACK_STAGES) + 1:
        gain = (surv[-2] - surv[-1]) / n
        checks.append(SanityCheck("square_gain_small", gain <= tol,
                                  f"Square broke {gain:.2%} of the points APGD-CE/APGD-T/FAB-T left standing"))

    pairs, bad = 0, []
    for (noise, e), a in acc.items():
        if noise.startswith("transfer/") and (noise[len("transfer/"):], e) in acc:
            pairs += 1
            wb = acc[noise[len("transfer/"):], e]
            if wb > a + tol:
                bad.append(f"{noise} {a:.4f} < white-box {wb:.4f} at eps {e:.6g}")
    if pairs:
        checks.append(SanityCheck("whitebox_le_transfer", not bad, "; ".join(bad) or "white-box at least as strong"))

    if "zero_gradients" in extras:
        z = extras["zero_gradients"]
        checks.append(SanityCheck("no_zero_gradients", z / n <= tol,
                                  f"{z} of {n} examples have an exactly zero input gradient"))
    return checks
