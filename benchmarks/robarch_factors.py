"""RobArch's factors re-checked at small scale: paired PGD-AT networks of robarch-small under one parameter budget.

RobArch (Peng et al. 2023, arXiv:2301.03110) and its BMVC'23 follow-up "Robust Principles" (arXiv:2308.16258)
compare architecture components under a fixed parameter budget, each network adversarially trained. Here each
factor is one *pair* of robarch-small networks that differ in that factor only, the parameter count held within
``BUDGET_TOL`` of the pair's reference (a factor that costs parameters is paid for by a narrower width, as in
RobArch), both trained with the same PGD-AT recipe and the same seed (same initial-weight generator and data
order), and scored on the same test digits:

- activation: ReLU -> SiLU (no parameter change);
- SE: none -> SE ratio 0.25 (RobArch's ``SE_0_25_RELU``), stage-4 width one step narrower to pay for it;
- depth vs width: ResNet-50 stage depths 3-4-6-3 -> RobArch-S's 5-8-13-1 at the same widths (the parameters move
  from the last stage into stages 1-3: deeper and narrower in capacity per block);
- kernel: 3x3 -> 5x5, paid for by narrower widths in every stage (stage depths 3-4-6-1 in both);
- SE and depth again with SiLU throughout: the ReLU reference stayed near chance after its epoch on both seeds,
  so those two pairs compared trainability; on the SiLU network (which learns) they compare robustness. The three
  ReLU-based factors were also re-run for longer (``--epochs 3 --factors activation SE "depth vs width"``: after 2
  epochs the ReLU reference was still below 50% clean on seed 0), see robarch_factors.md.

Training: mnist5k (4,000 digits), preset ``quick`` for ``EPOCHS`` epoch(s) (batch ``BATCH``, warm-up ``WARMUP``), Madry PGD-AT at Linf eps 0.1 (the
study's CPU-protocol radius; ``STEPS`` steps of 2.5 eps / steps, random start), seeds ``SEEDS``. Scoring, per
network, on the first ``N_EVAL`` test digits (class-balanced): the per-image minimum-norm Linf radius of the CPU
protocol (``MinNormPGD``: 10 PGD steps on the CW margin, 10 bisection rounds; 0 for a digit misclassified clean),
PGD-10 at eps 0.1 (torchattacks, as the adversarial suite), and clean accuracy on all 1,000 test digits. Each
factor's effect is the per-image paired difference variant - reference of the radius, per seed, with a 95%
bootstrap interval over the test digits (seeded); the verdict needs both seeds to agree (see ``verdict``).

Resumable: training resumes from its run folders and each scored network is kept in ``OUT/results.json``, so a
rerun only does what is missing; the report is written to ``--md`` (refused if it exists, without ``--force``).

    OMP_NUM_THREADS=1 python benchmarks/robarch_factors.py [--out bench_out/robarch_factors] [--md benchmarks/robarch_factors.md] [--force]
        [--epochs N] [--factors NAME [NAME ...]]

``--epochs`` trains longer (the ReLU networks stay near chance after one epoch); ``--factors`` re-runs a subset. The
epoch count is part of each run's key (``run_key``: folder under ``OUT/runs`` and entry in ``OUT/results.json``), so
runs of different lengths share one ``--out`` without colliding.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: the machine is shared

import argparse
import json
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
SPACE = "robarch-small"
EPOCHS, EPS, STEPS = 1, 0.1, 3
ALPHA = 2.5 * EPS / STEPS
SEEDS = (0, 1)
#: One epoch only (CPU budget), so more, smaller steps: batch 32 (125 steps) and a short warm-up; preset ``quick``'s
#: batch 64 with half an epoch of warm-up left the first network at 52.7% clean accuracy after its epoch.
BATCH, WARMUP = 32, 0.1
N_EVAL = 100  # the study's CPU protocol scores 100 test digits
MINNORM_STEPS, MINNORM_ROUNDS = 10, 10  # the CPU protocol's min-norm attack (AdversarialSuite.cpu_options)
PGD_STEPS = 10
N_BOOT = 2000
#: A network below this clean accuracy did not learn in its epoch: its pair then compares trainability, not robustness.
TRAINED = 0.5
BUDGET_TOL = 0.05  # a pair's parameter counts differ by at most 5% of the reference's

#: ResNet-50's block choices at robarch-small widths: no SE, ReLU, 3x3, 1 group, bottleneck 1/4, conv stem 16, BN x3
_R50 = "g1_b0.25_k3_se0_relu_conv16s1_n111"
_SILU = "g1_b0.25_k3_se0_silu_conv16s1_n111"


@dataclass(frozen=True)
class Factor:
    name: str
    reference: str  # robarch-small encoding body
    variant: str
    change: str  # what differs, in words
    published: str  # the published direction and its source
    sign: int  # +1: the variant should be more robust; -1: the reference should be at least as robust


FACTORS = (
    Factor("activation", f"d3-4-6-3_w64-128-256-544_{_R50}",
           "d3-4-6-3_w64-128-256-544_g1_b0.25_k3_se0_silu_conv16s1_n111",
           "ReLU -> SiLU (same parameters)",
           "smooth non-parametric activations (SiLU) are more robust than ReLU (Robust Principles, principle c; "
           "RobArch-S/M/L use SiLU, `ACT_SILU_SILU_SILU` in RobArch's MODEL.mk)", +1),
    Factor("SE", f"d3-4-6-3_w64-128-256-544_{_R50}",
           "d3-4-6-3_w64-128-256-512_g1_b0.25_k3_se0.25_relu_conv16s1_n111",
           "no SE -> SE ratio 0.25; stage-4 width 544 -> 512 pays for it",
           "squeeze-and-excitation blocks improve robustness (Robust Principles, principle c; RobArch uses "
           "`SE_0_25_RELU`)", +1),
    Factor("depth vs width", f"d3-4-6-3_w64-128-256-544_{_R50}", f"d5-8-13-1_w64-128-256-544_{_R50}",
           "stage depths 3-4-6-3 (ResNet-50) -> 5-8-13-1 (RobArch-S): parameters move from stage 4 to stages 1-3",
           "under a fixed budget the deeper configuration with a single last-stage block is more robust "
           "(Robust Principles, principle a: RaResNet-50 5-8-13-1 vs ResNet-50 3-4-6-3 at 26M; Huang et al. 2021: "
           "reducing last-stage capacity helps)", +1),
    # The ReLU reference above stayed near chance in its one epoch on both seeds (robarch_factors.md), so SE and
    # depth are also paired on the SiLU network, which learns: the same changes with SiLU throughout.
    Factor("SE (SiLU)", f"d3-4-6-3_w64-128-256-544_{_SILU}", "d3-4-6-3_w64-128-256-512_g1_b0.25_k3_se0.25_silu_conv16s1_n111",
           "no SE -> SE ratio 0.25 with SiLU throughout; stage-4 width 544 -> 512 pays for it",
           "as SE above", +1),
    Factor("depth vs width (SiLU)", f"d3-4-6-3_w64-128-256-544_{_SILU}", f"d5-8-13-1_w64-128-256-544_{_SILU}",
           "stage depths 3-4-6-3 -> 5-8-13-1 with SiLU throughout", "as depth vs width above", +1),
    Factor("kernel", f"d3-4-6-1_w96-176-336-656_{_R50}",
           "d3-4-6-1_w64-128-256-512_g1_b0.25_k5_se0_relu_conv16s1_n111",
           "3x3 -> 5x5, narrower widths in every stage pay for it",
           "no gain from a larger kernel at a fixed budget: RobArch-S/M/L keep 3x3 (`kernel: 3`); we read its "
           "direction as 3x3 at least as robust as 5x5", -1),
)


# ---------------------------------------------------------------------------- statistics (tested)
def paired_bootstrap(diffs, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Mean of per-image paired differences with its 95% percentile bootstrap interval over images (seeded)."""
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        raise ValueError("no paired differences")
    idx = np.random.default_rng(seed).integers(0, d.size, size=(n_boot, d.size))
    low, high = np.percentile(d[idx].mean(axis=1), [2.5, 97.5])
    return float(d.mean()), float(low), float(high)


def verdict(cis: list[tuple[float, float, float]], sign: int) -> str:
    """The factor's verdict from its per-seed (mean, low, high) intervals of variant - reference.

    ``sign`` is +1 when the variant should be more robust, -1 when it should not. ``holds``: every seed's interval
    excludes 0 on the published side; ``does not hold (opposite)``: every seed's excludes 0 on the other side;
    otherwise ``inconclusive`` (the seeds disagree or an interval covers 0).
    """
    if not cis:
        raise ValueError("no seeds")
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign}")
    published = [(low > 0) if sign > 0 else (high < 0) for _, low, high in cis]
    opposite = [(high < 0) if sign > 0 else (low > 0) for _, low, high in cis]
    if all(published):
        return "holds"
    if all(opposite):
        return "does not hold (opposite)"
    return "inconclusive"


def untrained(per_seed: list[dict]) -> list[str]:
    """Which networks of a pair stayed below ``TRAINED`` clean accuracy (``"reference s0"``, ...)."""
    return [f"{role} s{s['seed']} ({s['clean'][i]:.0%} clean)" for s in per_seed
            for i, role in enumerate(("reference", "variant")) if s["clean"][i] < TRAINED]


def within_budget(params_ref: int, params_var: int, tol: float) -> bool:
    return abs(params_var - params_ref) <= tol * params_ref


# ---------------------------------------------------------------------------- training and scoring
def say(msg: str) -> None:
    print(f"[robarch_factors {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def select(names: list[str] | None) -> tuple[Factor, ...]:
    """The factors named (in ``FACTORS`` order); all of them for ``None``. Unknown names raise ``ValueError``."""
    if names is None:
        return FACTORS
    known = [f.name for f in FACTORS]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown factor(s) {', '.join(map(repr, unknown))}; known: {', '.join(map(repr, known))}")
    return tuple(f for f in FACTORS if f.name in names)


def run_key(body: str, seed: int, epochs: int) -> str:
    """One run's key: its folder name under ``OUT/runs`` and its entry in ``results.json`` (epochs included)."""
    return f"{body}-e{epochs}-s{seed}"


def encodings(factors: tuple[Factor, ...] = FACTORS) -> list[str]:
    seen: dict[str, None] = {}
    for f in factors:
        seen.setdefault(f.reference)
        seen.setdefault(f.variant)
    return list(seen)


def costs() -> dict[str, tuple[int, int]]:
    from nasrobust import get_space

    space = get_space(SPACE)
    out = {}
    for body in encodings():
        c = space.cost(space.resolve(f"{SPACE}:{body}"), num_classes=10, input_size=28)
        out[body] = (int(c.params), int(c.flops))
    return out


def recipe(seed: int, epochs: int = EPOCHS):
    from nasrobust.train.recipe import get_preset

    return get_preset("quick").replace(epochs=epochs, batch_size=BATCH, warmup_epochs=WARMUP, adversarial="pgd",
                                       adv_eps=EPS, adv_steps=STEPS, adv_alpha=ALPHA, seed=seed)


def train(body: str, seed: int, epochs: int, data, out: Path):
    from nasrobust.train.api import train_standalone

    return train_standalone(SPACE, f"{SPACE}:{body}", data, recipe(seed, epochs), out / "runs" / run_key(body, seed, epochs),
                            progress=False)


def score(checkpoint_path: Path, data) -> dict:
    """Per-image min-norm Linf radius and PGD-10 outcome on the first N_EVAL test digits; clean accuracy on all."""
    import torch
    import torchattacks

    from nasrobust import checkpoint
    from nasrobust.data import stack
    from nasrobust.noise.attacks.minnorm import MinNormPGD

    model, _ = checkpoint.load_model(checkpoint_path)
    x_all, y_all = stack(data.test)
    with torch.no_grad():
        clean_all = torch.cat([model(x_all[i:i + 250]).argmax(1) for i in range(0, len(x_all), 250)]) == y_all
    x, y = x_all[:N_EVAL], y_all[:N_EVAL]
    correct = clean_all[:N_EVAL]
    _, radius = MinNormPGD(model, "linf", steps=MINNORM_STEPS, rounds=MINNORM_ROUNDS, seed=0).distances(x, y)
    radius = torch.where(correct, radius.double(), torch.zeros_like(radius, dtype=torch.float64))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        adv = torchattacks.PGD(model, eps=EPS, alpha=0.25 * EPS, steps=PGD_STEPS, random_start=True)(x, y)
    with torch.no_grad():
        pgd_ok = (model(adv).argmax(1) == y) & correct
    return {"clean_acc": float(clean_all.float().mean()), "radius": [float(r) for r in radius],
            "pgd_correct": [bool(b) for b in pgd_ok]}


def run_all(out: Path, factors: tuple[Factor, ...] = FACTORS, epochs: int = EPOCHS,
            seeds: tuple[int, ...] = SEEDS) -> dict:
    from nasrobust.data import load_dataset

    data = load_dataset("mnist5k")
    path = out / "results.json"
    settings = {"batch": BATCH, "warmup": WARMUP, "eps": EPS, "steps": STEPS, "n_eval": N_EVAL, "minnorm": [MINNORM_STEPS,
                MINNORM_ROUNDS], "pgd_steps": PGD_STEPS}
    results = json.loads(path.read_text()) if path.exists() else {"_settings": settings}
    if results.get("_settings") != settings:
        print(f"error: {path} was made with {results.get('_settings')}, not {settings}; use another --out",
              file=sys.stderr)
        raise SystemExit(2)
    out.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for body in encodings(factors):
            key = run_key(body, seed, epochs)
            if key in results:
                continue
            say(f"PGD-AT {body} seed {seed} ({epochs} epoch(s); resumes if done)")
            t0 = time.perf_counter()
            trained = train(body, seed, epochs, data, out)
            t1 = time.perf_counter()
            say(f"  trained in {t1 - t0:.0f} s; scoring")
            entry = score(trained.checkpoint, data)
            entry.update(train_seconds=sum(h["seconds"] for h in trained.history), score_seconds=time.perf_counter() - t1,
                         weights_id=trained.weights_id, train_acc=trained.history[-1].get("train_acc"))
            results[key] = entry
            path.write_text(json.dumps(results, indent=1))
            say(f"  clean {entry['clean_acc']:.3f}, median radius {np.median(entry['radius']):.4f}, "
                f"PGD {np.mean(entry['pgd_correct']):.2f} ({entry['score_seconds']:.0f} s)")
    return results


# ---------------------------------------------------------------------------- report
def analyse(results: dict, factors: tuple[Factor, ...] = FACTORS, epochs: int = EPOCHS,
            seeds: tuple[int, ...] = SEEDS) -> list[dict]:
    rows = []
    for f in factors:
        per_seed = []
        pair_seed = zlib.crc32(f"{f.reference}|{f.variant}".encode())  # a pair's intervals do not move when factors are added
        for seed in seeds:
            ref, var = results[run_key(f.reference, seed, epochs)], results[run_key(f.variant, seed, epochs)]
            diffs = np.array(var["radius"]) - np.array(ref["radius"])
            ci = paired_bootstrap(diffs, N_BOOT, seed=pair_seed + seed)
            pgd = paired_bootstrap(np.array(var["pgd_correct"], float) - np.array(ref["pgd_correct"], float), N_BOOT,
                                   seed=pair_seed + seed + 500)
            per_seed.append({"seed": seed, "radius": ci, "pgd": pgd,
                             "median": (float(np.median(ref["radius"])), float(np.median(var["radius"]))),
                             "pgd_acc": (float(np.mean(ref["pgd_correct"])), float(np.mean(var["pgd_correct"]))),
                             "clean": (ref["clean_acc"], var["clean_acc"])})
        rows.append({"factor": f, "seeds": per_seed, "verdict": verdict([s["radius"] for s in per_seed], f.sign),
                     "verdict_pgd": verdict([s["pgd"] for s in per_seed], f.sign),
                     "untrained": untrained(per_seed)})
    return rows


def command(factors: tuple[Factor, ...], epochs: int, seeds: tuple[int, ...]) -> str:
    """The command line that reproduces a report of these factors, epochs and seeds (defaults left out)."""
    cmd = "OMP_NUM_THREADS=1 python benchmarks/robarch_factors.py --force"
    if epochs != EPOCHS:
        cmd += f" --epochs {epochs}"
    if factors != FACTORS:
        cmd += " --factors " + " ".join(f'"{f.name}"' if " " in f.name else f.name for f in factors)
    if seeds != SEEDS:
        cmd += " --seeds " + " ".join(map(str, seeds))
    return cmd


def report(results: dict, rows: list[dict], cost: dict, times: tuple[float, float], uptimes: tuple[str, str],
           factors: tuple[Factor, ...] = FACTORS, epochs: int = EPOCHS, seeds: tuple[int, ...] = SEEDS) -> list[str]:
    nets = [run_key(body, seed, epochs) for seed in seeds for body in encodings(factors)]
    epoch_s = f"{epochs} epoch{'s' if epochs > 1 else ''}"
    train_min = sum(results[k]["train_seconds"] for k in nets) / 60
    score_min = sum(results[k]["score_seconds"] for k in nets) / 60
    lines = [
        "# RobArch's factors at small scale: paired PGD-AT networks under one parameter budget",
        "",
        f"Produced by `{command(factors, epochs, seeds)}` on the shared 2-core CPU, one "
        f"thread. Load: `{uptimes[0]}` before, `{uptimes[1]}` after. {len(nets)} networks: training "
        f"{train_min:.1f} min, scoring {score_min:.1f} min (by the runs' own clocks; this invocation took "
        f"{times[0] / 60:.1f} min wall, {times[1] / 60:.1f} min CPU — a rerun only reads the results).",
        "",
        "**Scale.** RobArch compares its factors at 26M / 46M / 104M parameters on ImageNet with full PGD-AT; here the "
        f"budget is ~1.5M parameters (robarch-small, 28-px MNIST digits), {epoch_s} of PGD-AT on 4,000 digits. "
        "A verdict says what holds *at this scale*; it neither confirms nor refutes the paper at its own.",
        "",
        "## Design",
        "",
        f"Each factor is a pair of `{SPACE}` networks that differ in that factor only; the parameter counts of a pair "
        f"are within {BUDGET_TOL:.0%} of each other (a factor that costs parameters is paid for by a narrower width, "
        f"as RobArch does). Both are trained with preset `quick` (batch {BATCH}, lr 0.05, "
        f"{WARMUP} epoch of warm-up, cosine), {epoch_s}, Madry PGD-AT at Linf eps {EPS} "
        f"({STEPS} steps of {ALPHA:.4f}, random start), the same seed per pair (same initial-weight generator, same "
        f"data order), seeds {', '.join(map(str, seeds))}; scored on the first {N_EVAL} test digits (class-balanced): "
        f"the per-image minimum-norm Linf radius of the CPU protocol (bisection with {MINNORM_STEPS}-step PGD on the "
        f"CW margin, {MINNORM_ROUNDS} rounds; 0 for a digit misclassified clean) and PGD-{PGD_STEPS} at eps {EPS}; "
        "clean accuracy on all 1,000 test digits.",
        "",
        "| factor | reference | variant | params ref -> variant | MACs ref -> variant | published direction (source) |",
        "|---|---|---|---|---|---|",
    ]
    for f in factors:
        (pr, fr), (pv, fv) = cost[f.reference], cost[f.variant]
        lines.append(f"| {f.name}: {f.change} | `{f.reference}` | `{f.variant}` | {pr / 1e6:.3f}M -> {pv / 1e6:.3f}M "
                     f"({(pv - pr) / pr:+.1%}) | {fr / 1e6:.0f}M -> {fv / 1e6:.0f}M | {f.published} |")
    lines += [
        "",
        "Statistics. For each factor and seed: the mean over the test digits of the paired difference variant - "
        f"reference of the min-norm radius, with a 95% percentile bootstrap interval over digits ({N_BOOT} resamples, "
        "seeded). The interval covers the choice of test digits, not the training seed; the seed is covered by "
        "requiring agreement: **holds** if every seed's interval lies on the published side of 0, **does not hold "
        "(opposite)** if every seed's lies on the other side, **inconclusive** otherwise. The same rule on the "
        f"per-digit PGD-{PGD_STEPS} outcome (robust or not) is given as a second column. A network below "
        f"{TRAINED:.0%} clean accuracy did not learn in its {epoch_s}; a verdict resting on such a pair is marked "
        f"*confounded*: it compares trainability under {epoch_s} of PGD-AT, not robustness.",
        "",
        "## Results",
        "",
        f"| factor | seed | clean acc ref / var | median radius ref / var | PGD-{PGD_STEPS} acc @{EPS} ref / var | "
        "radius var - ref, mean [95% CI] | PGD acc var - ref [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for s in r["seeds"]:
            m, lo, hi = s["radius"]
            pm, plo, phi = s["pgd"]
            lines.append(f"| {r['factor'].name} | {s['seed']} | {s['clean'][0]:.3f} / {s['clean'][1]:.3f} | "
                         f"{s['median'][0]:.4f} / {s['median'][1]:.4f} | {s['pgd_acc'][0]:.2f} / {s['pgd_acc'][1]:.2f} | "
                         f"{m:+.4f} [{lo:+.4f}, {hi:+.4f}] | {pm:+.2f} [{plo:+.2f}, {phi:+.2f}] |")
    lines += ["", "## Verdicts", "", "| factor | published direction | min-norm radius | PGD accuracy |",
              "|---|---|---|---|"]
    for r in rows:
        f = r["factor"]
        direction = "variant more robust" if f.sign > 0 else "variant not more robust (reference at least as robust)"
        caveat = f" — confounded: {', '.join(r['untrained'])} did not learn" if r["untrained"] else ""
        lines.append(f"| {f.name} ({f.change}) | {direction} | **{r['verdict']}**{caveat} | {r['verdict_pgd']} |")
    lines += ["", f"**Summary verdict:** {summary(rows, epochs, len(seeds))}", ""]
    return lines


def summary(rows: list[dict], epochs: int = EPOCHS, n_seeds: int = len(SEEDS)) -> str:
    """One line: each factor's verdict on the min-norm radius (the one findings.md quotes)."""
    parts = []
    for r in rows:
        means = ", ".join(f"{s['radius'][0]:+.4f}" for s in r["seeds"])
        caveat = f"; confounded: {', '.join(r['untrained'])} did not learn" if r["untrained"] else ""
        parts.append(f"{r['factor'].name} **{r['verdict']}** (radius var - ref per seed {means}{caveat})")
    return "; ".join(parts) + (f" — at ~1.5M parameters, {epochs} epoch{'s' if epochs > 1 else ''} of PGD-AT on "
                               f"mnist5k, {n_seeds} seed{'s' if n_seeds > 1 else ''}.")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench_out/robarch_factors")
    ap.add_argument("--md", default=str(HERE / "robarch_factors.md"))
    ap.add_argument("--force", action="store_true", help="overwrite an existing --md")
    ap.add_argument("--epochs", type=int, default=EPOCHS, help=f"PGD-AT epochs per network (default {EPOCHS})")
    ap.add_argument("--factors", nargs="+", metavar="NAME", help="only these factors (default: all): "
                    + ", ".join(repr(f.name) for f in FACTORS))
    ap.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), help="training seeds (default 0 1)")
    args = ap.parse_args(argv)
    try:
        factors = select(args.factors)
    except ValueError as e:
        ap.exit(2, f"error: {e}\n")
    if args.epochs < 1:
        ap.exit(2, f"error: --epochs must be at least 1, got {args.epochs}\n")
    seeds = tuple(args.seeds)
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        ap.exit(2, f"error: --seeds must be distinct non-negative integers, got {args.seeds}\n")
    md = Path(args.md)
    sys.path.insert(0, str(HERE))
    from _report import emit, refuse_overwrite

    refuse_overwrite(md, force=args.force)
    cost = costs()
    for f in factors:
        if not within_budget(cost[f.reference][0], cost[f.variant][0], BUDGET_TOL):
            raise SystemExit(f"error: factor {f.name}: {cost[f.variant][0]} params vs {cost[f.reference][0]} is "
                             f"outside the {BUDGET_TOL:.0%} budget; fix FACTORS")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    wall0, cpu0 = time.perf_counter(), os.times()
    results = run_all(Path(args.out), factors, args.epochs, seeds)
    rows = analyse(results, factors, args.epochs, seeds)
    cpu1 = os.times()
    times = (time.perf_counter() - wall0, (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system))
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    emit(report(results, rows, cost, times, (uptime_before, uptime_after), factors, args.epochs, seeds), md)


if __name__ == "__main__":
    main()
