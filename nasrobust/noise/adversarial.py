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

The attacks are registered specs (:mod:`nasrobust.noise.attacks`, one module per attack): the suite
reads each one's norm, random start, transferability and sanity-check role, never its name.

Protocol (DESIGN.md; per family defaults in :data:`~nasrobust.noise.attacks.FAMILY_DEFAULTS`):
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
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import torch
import torch.nn as nn

from nasrobust.errors import UnknownNameError
from nasrobust.noise.attacks import (
    ATTACKS, FAMILY_DEFAULTS, AttackSettings, CascadeResult, attack_mode, attack_names, attack_spec, budget_tolerance,
    derive_seed, predict_labels, project, run_cascade, sanitize, seeded_global_rng, within_budget, zero_gradient_mask,
)
from nasrobust.noise.base import CLEAN, SUITES, EvalContext, Measurement, MetricInfo, NoiseSuite, cached_tensor
from nasrobust.options import option
from nasrobust.records import Protocol

log = logging.getLogger(__name__)

SUITE = "adversarial"
DEFAULT_TOLERANCE = 0.005
#: Quantiles of a minimal attack's radius distribution stored besides its median (as the certified suite's).
RADIUS_QUANTILES = (0.1, 0.25, 0.75, 0.9)
#: Eps of a minimal attack's robust-accuracy curve (fraction of examples whose radius exceeds eps):
#: quarter decades over the range attack radii span on [0, 1] images.
DEFAULT_RADIUS_GRID = {"linf": tuple(10 ** (k / 4) for k in range(-12, 1)),
                       "l2": tuple(10 ** (k / 4) for k in range(-8, 5)),
                       "l1": tuple(10 ** (k / 4) for k in range(-4, 9))}
SANITY_CHECKS: tuple[str, ...] = (
    "eps0_equals_clean", "monotonic_in_eps", "aa_le_pgd_le_fgsm", "square_gain_small",
    "whitebox_le_transfer", "no_zero_gradients",
)


class GradientMaskingWarning(UserWarning):
    """A sanity check of the adversarial suite failed: the robust accuracy may be overestimated."""


@dataclass(frozen=True)
class AdversarialOptions:
    """Options of the adversarial suite (``None``: the dataset family's default)."""

    attacks: tuple[str, ...] | None = option(None, "attacks to run (default: every registered default attack)",
                                             choices=attack_names, canonical=True, example="pgd_linf,fgsm")
    eps_linf: tuple[float, ...] | None = option(None, "Linf budgets", gt=0, canonical=True, example="1/255,8/255")
    eps_l2: tuple[float, ...] | None = option(None, "L2 budgets", gt=0, canonical=True, example="0.5,1")
    eps_l1: tuple[float, ...] | None = option(None, "L1 budgets", gt=0, canonical=True, example="5,10")
    eps_autoattack: float | None = option(None, "the single budget of AutoAttack (single-budget attacks)", gt=0,
                                          example="8/255")
    steps: int = option(AttackSettings.steps, "PGD / MIM steps", ge=1)
    restarts: int = option(1, "runs of each random-start attack, each on the survivors of the last", ge=1)
    cw_steps: int = option(AttackSettings.cw_steps, "Adam steps per CW run", ge=1)
    minnorm_rounds: int = option(AttackSettings.minnorm_rounds, "bisection rounds of a minimal attack's radius (its "
                                 "resolution is eps_max / 2**rounds: Linf 1/4096 at 12)", ge=1, le=30)
    sanity_tolerance: float = option(DEFAULT_TOLERANCE, "accuracy slack of the sanity checks", ge=0, lt=1)
    radius_grid_linf: tuple[float, ...] | None = option(None, "eps of a minimal Linf attack's robust-accuracy curve "
                                                        "(default: quarter decades 1e-3..1)", gt=0, canonical=True,
                                                        example="0.01,0.05,0.1")
    radius_grid_l2: tuple[float, ...] | None = option(None, "eps of a minimal L2 attack's robust-accuracy curve "
                                                      "(default: quarter decades 0.01..10)", gt=0, canonical=True,
                                                      example="0.5,1,2")
    transfer_from: nn.Module | str | os.PathLike | None = option(
        None, "source model (or stand-alone checkpoint path) of transfer attacks", example="runs/source")


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
    attack: AttackSettings = field(default_factory=AttackSettings)
    transfer_attacks: tuple[str, ...] = ()
    radius_grid: tuple[tuple[str, tuple[float, ...]], ...] = ()

    def grid(self, norm: str) -> tuple[float, ...]:
        """Eps of the robust-accuracy curve of a minimal attack of ``norm``."""
        return dict(self.radius_grid).get(norm) or DEFAULT_RADIUS_GRID[norm]

    def eps_of(self, norm: str) -> tuple[float, ...]:
        return {"linf": self.eps_linf, "l2": self.eps_l2, "l1": self.eps_l1}[norm]

    def budgets(self, attack: str) -> tuple[float, ...]:
        """The eps an attack runs at: its norm's budgets (a single-budget attack: ``eps_autoattack``),
        plus the points the sanity checks compare (eps 0 for the eps-0 check; the single budget for
        attacks in the strength order, when a single-budget attack of their norm runs)."""
        spec = attack_spec(attack)
        if spec.single_budget:
            return (self.eps_autoattack,)
        eps = set(self.eps_of(spec.norm))
        if spec.strength is not None and any(
                attack_spec(a).single_budget and attack_spec(a).norm == spec.norm for a in self.attacks):
            eps.add(self.eps_autoattack)
        if spec.zero_budget_check:
            eps.add(0.0)
        return tuple(sorted(eps))

    def white_box_runs(self) -> list[Run]:
        """Every (attack, eps) in run order."""
        return [Run(a, a, attack_spec(a).norm, e) for a in self.attacks for e in self.budgets(a)]

    def transfer_runs(self) -> list[Run]:
        return [Run(f"transfer/{name}", name, attack_spec(name).norm, e) for name in self.transfer_attacks
                for e in self.eps_of(attack_spec(name).norm)]

    def tiers(self) -> list[dict[str, float]]:
        """Tier t -> per-norm budget (sorted budgets; a shorter list repeats its largest)."""
        norms = sorted({attack_spec(a).norm for a in self.attacks + self.transfer_attacks})
        k = max((len(self.eps_of(n)) for n in norms), default=0)
        return [{n: self.eps_of(n)[min(t, len(self.eps_of(n)) - 1)] for n in norms} for t in range(k)]


@SUITES.register(SUITE)
class AdversarialSuite(NoiseSuite):
    """FGSM, PGD-Linf/L2/L1, MIM, CW-L2 and AutoAttack-standard at several budgets, with AR, WCAR and sanity checks.

    Options: :class:`AdversarialOptions` (attacks from :data:`~nasrobust.noise.attacks.ATTACKS`).
    On the CLI: ``--suite-option adversarial.attacks=pgd_linf,fgsm --suite-option
    adversarial.eps_linf=1/255,8/255``.

    A unit the evaluator left half-done is recomputed whole: WCAR and the sanity checks need
    the per-example results of every run.
    """

    name = SUITE
    Options = AdversarialOptions
    metrics = (
        MetricInfo("accuracy", True, headline="clean acc", noise=CLEAN, rank_group=CLEAN,
                   description="accuracy on the unperturbed test examples (all of them)"),
        MetricInfo("radius_median", True, headline="min-norm Linf radius (median)", noise="minnorm_linf",
                   rank_group=SUITE, description="median smallest Linf perturbation that breaks an example "
                   "(bisection over eps with early-stopped PGD; 0 if misclassified)"),
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
        MetricInfo("radius_median", True, rank_group=SUITE,
                   description="median minimal distance of a minimal-perturbation attack (0 if misclassified)"),
        MetricInfo("radius_median_correct", True, rank_group=SUITE,
                   description="median minimal distance over the clean-correct examples only (as AR to accuracy): "
                   "resolves subnets below 50% clean accuracy, where radius_median is 0"),
        *(MetricInfo(f"radius_q{round(100 * q):02d}", True, rank_group=SUITE,
                     description=f"{round(100 * q)}% quantile of a minimal attack's distance (not written if inf)")
          for q in RADIUS_QUANTILES),
        MetricInfo("robust_accuracy_curve", True, rank_group=SUITE,
                   description="fraction of examples whose minimal distance exceeds eps (level), on the radius grid"),
        *(MetricInfo(check, True, noise="sanity", diagnostic=True,
                     description="gradient-masking check: 1 passed, 0 failed") for check in SANITY_CHECKS),
    )
    #: FGSM and PGD-10 (Linf) at the MNIST budget 0.1 (the sanity checks add eps 0 and 0.3), and the
    #: min-norm Linf radius (its median is the headline: PGD accuracy at 0.1 sits at the floor for
    #: weak subnets) with its robust-accuracy curve on 0.01..0.3; no PGD-L2/L1, CW or AutoAttack:
    #: minutes per subnet on a CPU.
    cpu_options = MappingProxyType({"attacks": ("fgsm", "pgd_linf", "minnorm_linf"), "eps_linf": (0.1,), "steps": 10,
                                    "minnorm_rounds": 10,  # radius to 1/1024: below the median's sampling error
                                    "radius_grid_linf": (0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3)})
    reads_reference = False  # no relative metric: workers need not wait for the reference model's unit

    def __init__(self, **options: Any):
        super().__init__(**options)
        source = self.options.transfer_from
        if isinstance(source, (str, os.PathLike)):
            from nasrobust import checkpoint

            source, _ = checkpoint.load_model(source)  # raises a NasRobustError for a bad file
        self.transfer_from: nn.Module | None = source
        self._source_id: str | None = None

    @classmethod
    def selector_options(cls, noise: str, level: float | None) -> dict[str, Any]:
        """A live metric of one attack at one eps runs just that attack at that eps."""
        if noise not in ATTACKS or not level:
            return {}
        spec = attack_spec(noise)
        return {"attacks": noise, "eps_autoattack" if spec.single_budget else f"eps_{spec.norm}": float(level)}

    # ------------------------------------------------------------------ protocol
    def settings(self, ctx: EvalContext) -> AdversarialSettings:
        """Options resolved for ``ctx``'s dataset family."""
        o = self.options
        defaults = FAMILY_DEFAULTS.get(ctx.family, FAMILY_DEFAULTS["imagenet"])
        attacks = o.attacks or attack_names(default_only=True)
        attack = replace(AttackSettings(), steps=o.steps, cw_steps=o.cw_steps, minnorm_rounds=o.minnorm_rounds)
        transfer = tuple(a for a in attacks if attack_spec(a).transferable) if self.transfer_from is not None else ()
        return AdversarialSettings(
            attacks=attacks,
            eps_linf=o.eps_linf or defaults.linf, eps_l2=o.eps_l2 or defaults.l2,
            eps_l1=o.eps_l1 or defaults.l1, eps_autoattack=o.eps_autoattack or defaults.autoattack,
            restarts=o.restarts, tolerance=o.sanity_tolerance, num_classes=int(ctx.data.info.num_classes),
            attack=attack, transfer_attacks=transfer,
            radius_grid=tuple((n, g) for n, g in (("linf", o.radius_grid_linf), ("l2", o.radius_grid_l2)) if g),
        )

    def protocol(self, ctx: EvalContext) -> Protocol:
        s = self.settings(ctx)
        a = s.attack
        # the settings of every default attack, run or not (a run adding one keeps its protocol), and of those run
        recorded = [n for n in attack_names() if attack_spec(n).default or n in s.attacks]
        params: dict[str, Any] = {}
        for name in recorded:
            for key, value in attack_spec(name).params(a, s.num_classes).items():
                if params.setdefault(key, value) != value:
                    raise ValueError(f"attack {name!r} records protocol parameter {key!r} as {value!r}, "
                                     f"another attack as {params[key]!r}")
        return Protocol.make(
            steps=a.steps, restarts=s.restarts, seed=ctx.seed, n_examples=ctx.n_examples,
            params={
                **params,
                "family": ctx.family, "attacks": s.attacks,
                "eps_linf": s.eps_linf, "eps_l2": s.eps_l2, "eps_l1": s.eps_l1, "eps_autoattack": s.eps_autoattack,
                "random_start": ",".join(n for n in recorded if attack_spec(n).random_start),
                "attacked": "clean-correct only", "sanity_tolerance": s.tolerance,
                "rng": "per-run torch.random.fork_rng seeded from sha256(seed, attack, eps); pgd_l1 torch.Generator",
                "wcar_tiers": "union of per-norm balls at the t-th budget; runs of that norm with eps <= budget",
                "transfer_from": self._transfer_id() if self.transfer_from is not None else None,
                "transfer_attacks": s.transfer_attacks,
                **{f"radius_grid_{n}": s.grid(n) for n in sorted({attack_spec(a).norm for a in s.attacks
                                                                  if attack_spec(a).minimal})},
                "radius_quantiles": RADIUS_QUANTILES,
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
        clean_correct = ctx.clean_logits(model).argmax(dim=1) == labels  # the clean pass shared by every suite
        yield Measurement(CLEAN, 0.0, "accuracy", float(clean_correct.double().mean()))
        results: dict[Run, torch.Tensor] = {}
        extras: dict[str, Any] = {}
        for run in s.white_box_runs():
            if attack_spec(run.attack).minimal:
                continue  # one min-norm run scored at every eps, below
            res = attack_run(model, ctx.images, labels, clean_correct, run.attack, run.eps, device=device,
                             batch_size=ctx.batch_size, seed=derive_run_seed(ctx.seed, "white-box", run),
                             settings=s.attack, num_classes=s.num_classes, restarts=s.restarts)
            results[run] = res.robust
            extras[f"{run.attack}_survivors"] = res.survivors
            yield from _robust_measurements(run, res.robust, clean_correct)
        for name in (a for a in s.attacks if attack_spec(a).minimal):
            yield from self._minimal(name, model, ctx, s, labels, clean_correct, results)
        for run in s.transfer_runs():
            x_adv = self._transfer_images(ctx, s, run)
            results[run] = transfer_robust(model, ctx.images, x_adv, labels, clean_correct, run.norm, run.eps,
                                           device=device, batch_size=ctx.batch_size)
            yield from _robust_measurements(run, results[run], clean_correct)
        yield from _worst_case_measurements(results, clean_correct, s.tiers())
        if clean_correct.any():
            with attack_mode(model):
                zero = zero_gradient_mask(model, ctx.images, labels, clean_correct.nonzero().flatten(), device, ctx.batch_size)
            extras["zero_gradients"] = int(zero.sum())
        for check in sanity_checks(results, float(clean_correct.double().mean()), ctx.n_examples, s, extras):
            if not check.passed:
                warnings.warn(f"adversarial sanity check {check.name} failed: {check.detail} -- possible gradient "
                              "masking; the robust accuracies may be overestimated", GradientMaskingWarning, stacklevel=2)
            yield Measurement("sanity", 0.0, check.name, 1.0 if check.passed else 0.0)

    def _minimal(self, attack: str, model: nn.Module, ctx: EvalContext, s: AdversarialSettings, labels: torch.Tensor,
                 clean_correct: torch.Tensor, results: dict[Run, torch.Tensor]) -> Iterator[Measurement]:
        """One minimal-perturbation run; an example is broken at eps iff its distance is <= eps."""
        dist = minimal_distances(model, ctx.images, labels, clean_correct, attack=attack, device=ctx.device,
                                 batch_size=ctx.batch_size, seed=derive_seed(ctx.seed, "white-box", attack),
                                 settings=s.attack, num_classes=s.num_classes)
        for run in (r for r in s.white_box_runs() if r.attack == attack):
            results[run] = clean_correct & (dist > run.eps + budget_tolerance(run.eps))
            yield from _robust_measurements(run, results[run], clean_correct)
        norm = attack_spec(attack).norm
        median = finite_median(dist)
        if median is not None:
            yield Measurement(attack, 0.0, f"median_{norm}", median)
            yield Measurement(attack, 0.0, "radius_median", median)
        correct = finite_median(dist[clean_correct])
        if correct is not None:
            yield Measurement(attack, 0.0, "radius_median_correct", correct)
        for q in RADIUS_QUANTILES:
            value = finite_quantile(dist, q)
            if value is not None:
                yield Measurement(attack, 0.0, f"radius_q{round(100 * q):02d}", value)
        for e in s.grid(norm):
            yield Measurement(attack, float(e), "robust_accuracy_curve",
                              float((dist > e + budget_tolerance(e)).double().mean()))


# ----------------------------------------------------------------------------- building blocks
def derive_run_seed(seed: int, kind: str, run: Run) -> int:
    return derive_seed(seed, kind, run.attack, float(run.eps))


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
               settings: AttackSettings | None = None, num_classes: int = 10, restarts: int = 1,
               on_batch: Any = None) -> CascadeResult:
    """Robust mask of one eps-bounded attack: the suite's path for every run (also used by benchmarks).

    Attacks the ``clean_correct`` examples only; random-start attacks get ``restarts`` stages
    (each on the survivors of the previous, with its own seed). Deterministic in ``seed``.
    """
    device = torch.device(device)
    spec = attack_spec(attack)
    n_stages = restarts if spec.random_start else 1
    with attack_mode(model), seeded_global_rng(seed, device):
        stages = [st for r in range(n_stages) for _, st in spec(model, eps, settings, num_classes, derive_seed(seed, r))]
        return run_cascade(model, stages, images, labels, clean_correct, spec.norm, eps, device, batch_size, on_batch)


def minimal_distances(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, clean_correct: torch.Tensor, *,
                      attack: str, device: torch.device | str = "cpu", batch_size: int = 256, seed: int = 0,
                      settings: AttackSettings | None = None, num_classes: int = 10) -> torch.Tensor:
    """Minimal distance a minimal-perturbation ``attack`` found per example (0 for clean-misclassified,
    inf where none was found), in the attack's norm."""
    spec = attack_spec(attack)
    if not spec.minimal:
        raise UnknownNameError("minimal-perturbation attack", attack, [a for a in attack_names() if attack_spec(a).minimal])
    device = torch.device(device)
    dist = torch.zeros(len(images), dtype=torch.float64)
    dist[clean_correct] = math.inf
    idx = clean_correct.nonzero().flatten()
    with attack_mode(model), seeded_global_rng(seed, device):
        (_, stage), = spec(model, 0.0, settings, num_classes, seed)
        for start in range(0, len(idx), batch_size):
            b = idx[start:start + batch_size]
            _, d = stage.distances(images[b].to(device), labels[b].to(device))
            dist[b] = d.cpu()
    return dist


def finite_quantile(dist: torch.Tensor, q: float) -> float | None:
    """``q``-quantile (linear between order statistics, as ``torch.quantile``) or None when it is
    infinite: distances hold ``inf`` where the attack found nothing, which torch.quantile turns to nan."""
    if len(dist) == 0:
        return None
    v, _ = torch.sort(dist.double())
    pos = q * (len(v) - 1)
    lo, frac = int(math.floor(pos)), pos - math.floor(pos)
    a = float(v[lo])
    value = a if frac == 0 else a + frac * (float(v[min(lo + 1, len(v) - 1)]) - a)
    return value if math.isfinite(value) else None


def finite_median(dist: torch.Tensor) -> float | None:
    """Median (mean of the two middle values for even n) or None when it is infinite."""
    return finite_quantile(dist, 0.5)


def transfer_examples(source: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack: str, eps: float, *,
                      device: torch.device | str = "cpu", batch_size: int = 256, seed: int = 0,
                      settings: AttackSettings | None = None, num_classes: int = 10) -> torch.Tensor:
    """Adversarial examples for *all* ``images`` made on ``source`` (CPU tensor, same shape)."""
    spec = attack_spec(attack)
    if not spec.transferable:
        raise UnknownNameError("transferable attack", attack, [a for a in attack_names() if attack_spec(a).transferable])
    device = torch.device(device)
    source.to(device)
    out = torch.empty_like(images)
    with attack_mode(source), seeded_global_rng(seed, device):
        (_, stage), = spec(source, eps, settings, num_classes, seed)
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device)
            x_adv = sanitize(stage(x, labels[start:start + batch_size].to(device)).detach(), x)
            # the source attack keeps its ball; re-project guards float drift before caching
            out[start:start + batch_size] = (x + project(x_adv - x, spec.norm, eps)).clamp(0, 1).cpu()
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
                broken = (model(xa).argmax(dim=1) != y) & within_budget(xa, x, norm, eps)
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
    return [r for r in results if r.norm in budgets and r.eps <= budgets[r.norm] + budget_tolerance(r.eps)]


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
    white_box = {(r.attack, r.eps): acc[r.noise, r.eps] for r in results if r.noise == r.attack}
    checks = []

    at_zero = [(a, v) for (a, e), v in white_box.items() if e == 0.0 and attack_spec(a).zero_budget_check]
    if at_zero:
        diff = max(abs(v - clean_acc) for _, v in at_zero)
        ok = diff <= max(0.001, 1.0 / n) + 1e-12
        checks.append(SanityCheck("eps0_equals_clean", ok, "; ".join(
            f"{a} at eps 0 gives {v:.4f}, clean {clean_acc:.4f}" for a, v in at_zero)))

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

    rank = {a: (attack_spec(a).norm, attack_spec(a).strength) for a, _ in white_box
            if attack_spec(a).strength is not None}
    pairs, bad = 0, []
    for (stronger, e), a in white_box.items():
        if stronger not in rank or e <= 0:
            continue
        norm, strength = rank[stronger]
        for weaker in (w for w, (nw, sw) in rank.items() if nw == norm and sw == strength - 1 and (w, e) in white_box):
            pairs += 1
            if a > white_box[weaker, e] + tol:
                bad.append(f"{stronger} {a:.4f} > {weaker} {white_box[weaker, e]:.4f} at eps {e:.6g}")
    if pairs:
        checks.append(SanityCheck("aa_le_pgd_le_fgsm", not bad, "; ".join(bad) or "ordering holds"))

    for name in (a for a in s.attacks if attack_spec(a).black_box_last_stage):
        surv = extras.get(f"{name}_survivors")
        if surv is not None and len(surv) >= 2:
            gain = (surv[-2] - surv[-1]) / n
            checks.append(SanityCheck("square_gain_small", gain <= tol,
                                      f"the black-box last stage of {name} broke {gain:.2%} of the points its "
                                      "gradient stages left standing"))

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
