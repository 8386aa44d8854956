"""Representation similarity of a standard and a PGD-adversarially trained network (mnist5k).

Re-checks two findings of Cianfarani et al. ("Understanding Robust Learning through the Lens of
Representation Similarities", NeurIPS 2022) at CPU scale:

1. *Robust training removes the block structure* of the layer x layer CKA map (Nguyen et al. 2021).
   Both networks share architecture, recipe and seed; PGD-AT (Madry et al. 2018) is the only
   difference. Each network's block-structure score gets a bootstrap CI over test images; the
   paired difference (standard - robust) gets its own. Two seeds, and two standard networks of
   different seeds as the yardstick of how much networks differ without a change of method.
2. *Robust overfitting mostly affects deeper layers*. The PGD-AT run keeps every epoch's weights;
   its best epoch by PGD accuracy on the test digits is compared with its last epoch, layer by
   layer (1 - CKA = how much a layer changed), and the change is correlated with depth. The
   standard run, compared between the same two epochs, is the control: later layers may move
   more late in *any* training.

Every number comes from ``nasrobust cka`` (the commands are printed in the report), so the
findings can be rerun one by one. Seeded throughout: a rerun gives the same numbers on the same
machine. Runs are resumable (their run folders).

    OMP_NUM_THREADS=1 python benchmarks/cka_robust.py [--out bench_out/cka_robust] [--md benchmarks/cka_robust.md]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: the machine is shared

import argparse
import json
import time
from pathlib import Path

ARCH = "bignas-small:r24-s8k3-d3w8k3e1-d3w16k3e1-d3w32k3e1-d3w48k3e1"
EPOCHS, EPS, STEPS = 8, 0.1, 3
ALPHA = 2.5 * EPS / STEPS  # Madry et al.'s step rule (the recipe's default)
SEEDS = (0, 1)
EVAL_STEPS, EVAL_IMAGES = 10, 500  # per-epoch robust accuracy: PGD-10 (step eps/4) on the first 500 test digits
CKA = ["--n-examples", "1000", "--batch-size", "50", "--n-boot", "1000", "--layers", "ReLU", "--seed", "0"]


def pgd_correct(model, x, y, eps: float, steps: int, seed: int = 0):
    """Per-image correctness under Linf PGD (``steps`` of eps/4 from a uniform random start, seeded generator)."""
    import numpy as np
    import torch

    from nasrobust.train.adversarial import pgd_examples
    from nasrobust.train.recipe import Recipe

    attack = Recipe(adversarial="pgd", adv_eps=eps, adv_steps=steps, adv_alpha=eps / 4)
    generator = torch.Generator().manual_seed(seed)
    correct = []
    for start in range(0, len(x), 250):
        xb, yb = x[start:start + 250], y[start:start + 250]
        adv = pgd_examples(model, xb, yb, attack, generator)
        with torch.no_grad():
            correct.append((model(adv).argmax(1) == yb).numpy())
    return np.concatenate(correct)


def best_epoch(pgd: list[float]) -> int:
    """1-based epoch of the highest accuracy in ``pgd`` (first of ties)."""
    return max(range(len(pgd)), key=lambda i: (pgd[i], -i)) + 1


def points(gap: tuple[float, float, float]) -> str:
    """A :func:`gap_interval` in percentage points, e.g. '+0.4 [+0.0, +1.0] points'."""
    return f"{gap[0] * 100:+.1f} [{gap[1] * 100:+.1f}, {gap[2] * 100:+.1f}] points"


def gap_interval(best, last, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Accuracy of ``best`` minus ``last`` (per-image 0/1 on the same images) with a 95% bootstrap interval over images."""
    import numpy as np

    diff = best.astype(float) - last.astype(float)
    idx = np.random.default_rng(seed).integers(0, len(diff), size=(n_boot, len(diff)))
    low, high = np.percentile(diff[idx].mean(axis=1), [2.5, 97.5])
    return float(diff.mean()), float(low), float(high)


def run_cka(a: Path, b: Path, out: Path) -> dict:
    from nasrobust.cli.main import main as cli

    argv = ["cka", "--a", str(a), "--b", str(b), *CKA, "--out", str(out), "--force"]
    if cli(argv) != 0:
        raise SystemExit(f"nasrobust {' '.join(argv)} failed")
    return json.loads(out.with_suffix(".json").read_text())


def _ci(d: dict, digits: int = 3) -> str:
    return f"{d['value']:.{digits}f} [{d['low']:.{digits}f}, {d['high']:.{digits}f}]"


def _excludes_zero(d: dict, sign: int) -> bool:
    return d["low"] > 0 if sign > 0 else d["high"] < 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench_out/cka_robust")
    ap.add_argument("--md", default=str(Path(__file__).with_name("cka_robust.md")))
    args = ap.parse_args()
    import torch

    from _report import emit
    from _training_pair import standard_and_pgd, train_runs
    from nasrobust import checkpoint
    from nasrobust.data import stack

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    load_before, wall0, cpu0 = os.getloadavg(), time.perf_counter(), os.times()
    out = Path(args.out)
    pair = standard_and_pgd(ARCH, EPOCHS, EPS, STEPS, ALPHA)
    runs, train_seconds = train_runs(pair, out, SEEDS)
    seconds = {"train": train_seconds, "eval": 0.0, "cka": 0.0}

    # robust accuracy of every PGD-AT epoch (and of the standard runs' last) on the first 500 test digits
    t0 = time.perf_counter()
    x, y = stack(pair.data.test_subset(EVAL_IMAGES))
    per_epoch, correct = {}, {}
    for (name, seed), run in runs.items():
        history = checkpoint.read(run)["history"]
        seconds[f"epochs {name}"] = seconds.get(f"epochs {name}", 0.0) + sum(h["seconds"] for h in history)
        rows = []
        for e in range(1, EPOCHS + 1):
            row = {"epoch": e, "train_loss": history[e - 1]["train_loss"], "clean": history[e - 1]["test_acc"], "pgd": None}
            if name == "pgd-at" or e == EPOCHS:
                model, _ = checkpoint.load_model(checkpoint.epoch_path(run, e))
                correct[(name, seed, e)] = pgd_correct(model, x, y, EPS, EVAL_STEPS)
                row["pgd"] = float(correct[(name, seed, e)].mean())
            rows.append(row)
        per_epoch[(name, seed)] = rows
    best = {seed: best_epoch([r["pgd"] for r in per_epoch[("pgd-at", seed)]]) for seed in SEEDS}
    gaps = {seed: gap_interval(correct[("pgd-at", seed, best[seed])], correct[("pgd-at", seed, EPOCHS)]) for seed in SEEDS}
    seconds["eval"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cka_dir = out / "cka"
    cka_dir.mkdir(parents=True, exist_ok=True)
    last = lambda name, seed: checkpoint.epoch_path(runs[(name, seed)], EPOCHS)  # noqa: E731
    cka = {("robust", seed): run_cka(last("standard", seed), last("pgd-at", seed), cka_dir / f"standard_vs_pgd_s{seed}.png")
           for seed in SEEDS}
    cka["seeds"] = run_cka(last("standard", SEEDS[0]), last("standard", SEEDS[1]), cka_dir / "standard_s0_vs_s1.png")
    for seed in SEEDS:
        if best[seed] < EPOCHS:
            for name in pair.recipes:
                cka[("overfit", name, seed)] = run_cka(checkpoint.epoch_path(runs[(name, seed)], best[seed]),
                                                       last(name, seed), cka_dir / f"{name}_best_vs_last_s{seed}.png")
    seconds["cka"] = time.perf_counter() - t0
    cpu1, load_after = os.times(), os.getloadavg()
    seconds["wall"] = time.perf_counter() - wall0
    seconds["cpu"] = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    emit(report(pair, per_epoch, best, gaps, cka, seconds, (load_before, load_after)), args.md)


def report(pair, per_epoch, best, gaps, cka, seconds, load) -> list[str]:
    lines = [
        "# CKA of standard vs PGD-adversarially trained networks (mnist5k)",
        "",
        f"Architecture `{ARCH}` ({pair.cost.params / 1e3:.0f}k params, {pair.cost.flops / 1e6:.1f} M MACs; 12 basic "
        f"blocks), preset `quick` with {EPOCHS} epochs (batch {pair.base.batch_size}, lr {pair.base.lr}, cosine), trained "
        f"on the 4,000 mnist5k training digits with seeds {', '.join(map(str, SEEDS))}. PGD-AT: Linf eps {EPS}, {STEPS} "
        f"steps of {ALPHA:.4f}, random start (Madry et al. 2018); everything else identical (same seed = same "
        f"initial weights and data order). Clean accuracy: the 1,000 test digits. Robust accuracy: Linf PGD-{EVAL_STEPS} "
        f"(eps {EPS}, step eps/4, seeded random start) on the first {EVAL_IMAGES} test digits (class-balanced), after "
        f"every PGD-AT epoch and after the standard runs' last.",
        "",
        "CKA: `nasrobust cka` (commands below): unbiased minibatch linear CKA (Nguyen et al. 2021) over all 1,000 test "
        "digits in a seeded order, batches of 50, on the output of every ReLU call (25 layers: the stem, then each "
        "block's ReLU after its first conv and after the residual add); 95% percentile bootstrap intervals over the 20 "
        "batches of test images (1,000 resamples; both networks of a comparison resampled together). The intervals "
        "cover the choice of test images, not training randomness: the second seed is the check on that.",
        "",
        f"Produced by `OMP_NUM_THREADS=1 python benchmarks/cka_robust.py` on the shared 2-core CPU, 1 thread. Training "
        f"took {seconds['epochs standard'] / 60:.1f} min (standard, both seeds) and {seconds['epochs pgd-at'] / 60:.1f} "
        f"min (PGD-AT) of wall time (sum of the epochs' times in the runs' log.csv). The invocation that wrote this "
        f"file took {seconds['wall'] / 60:.1f} min wall and {seconds['cpu'] / 60:.1f} min CPU (training "
        f"{seconds['train'] / 60:.1f}, per-epoch PGD evaluation {seconds['eval'] / 60:.1f}, CKA {seconds['cka'] / 60:.1f} "
        f"min wall; runs resume from their folders, so finished ones cost nothing) under a 1-minute load average of "
        f"{load[0][0]:.1f} before and {load[1][0]:.1f} after: other jobs shared the 2 cores, so wall times are "
        "inflated. Every number is the same on a rerun (seeded).",
        "",
        "## Training",
        "",
        "| run | seed | clean (last) | PGD (last) | PGD after each epoch |",
        "|---|---|---|---|---|",
    ]
    for (name, seed), rows in per_epoch.items():
        each = ", ".join(f"{r['pgd']:.1%}" for r in rows) if name == "pgd-at" else ""
        lines.append(f"| {name} | {seed} | {rows[-1]['clean']:.1%} | {rows[-1]['pgd']:.1%} | {each} |")
    lines += [
        "",
        "## 1. Block structure: standard vs robust",
        "",
        "Block-structure score (`nasrobust.analysis.cka.block_structure`): the most block-like run of >= 3 contiguous "
        "layers, scored by how much more similar its layers are to each other than to the other layers beyond what "
        "layer distance explains (0: similarity depends on distance only). Long-range CKA: mean CKA of layers at least "
        "half the network apart (Cianfarani et al.: raised by robust training).",
        "",
    ]
    lines += [f"- seed {seed}: `{cka[('robust', seed)]['command']}`" for seed in SEEDS]
    lines += [f"- seed control: `{cka['seeds']['command']}`", "",
              "| seed | model | block-structure score [95% CI] | block | raw CKA inside / to the rest | long-range CKA [95% CI] |",
              "|---|---|---|---|---|---|"]
    for seed in SEEDS:
        rep = cka[("robust", seed)]
        for key, name in (("a", "standard"), ("b", "pgd-at")):
            b = rep["block_structure"][key]
            lines.append(f"| {seed} | {name} | {_ci(b['score'])} | `{b['block']['first_layer']}` .. "
                         f"`{b['block']['last_layer']}` ({b['block']['stop'] - b['block']['start']} of {b['layers']}) | "
                         f"{b['block']['within']:.3f} / {b['block']['outside']:.3f} | {_ci(b['long_range'])} |")
    lines += ["", "| comparison (a - b, paired on test images) | block-structure score | long-range CKA |", "|---|---|---|"]
    for seed in SEEDS:
        d = cka[("robust", seed)]["difference_a_minus_b"]
        lines.append(f"| standard - pgd-at, seed {seed} | {_ci(d['block_score'])} | {_ci(d['long_range'])} |")
    d = cka["seeds"]["difference_a_minus_b"]
    lines.append(f"| standard seed {SEEDS[0]} - standard seed {SEEDS[1]} | {_ci(d['block_score'])} | {_ci(d['long_range'])} |")
    lines += ["", f"Heat maps: `bench_out/cka_robust/cka/standard_vs_pgd_s{{seed}}.png` (not committed; rerun to see them).",
              "", "## 2. Which layers differ: standard vs robust, layer by layer", "",
              "CKA between the same layer of the two networks; the last column is two *standard* networks of different "
              "seeds, i.e. how much layers differ without any change of training method.", ""]
    lines += _per_layer(cka, [(f"standard vs pgd-at, seed {s}", ("robust", s)) for s in SEEDS]
                        + [(f"standard s{SEEDS[0]} vs s{SEEDS[1]}", "seeds")])
    lines += ["", "## 3. Robust overfitting: PGD-AT best epoch vs last epoch", "",
              "Best epoch: highest PGD accuracy on the 500 test digits (first of ties). Gap: best minus last PGD "
              "accuracy on the same 500 digits, 95% bootstrap interval over the digits.", "",
              "| seed | best epoch | PGD best | PGD last | gap [95% CI] |", "|---|---|---|---|---|"]
    for seed in SEEDS:
        rows = per_epoch[("pgd-at", seed)]
        g = gaps[seed]
        lines.append(f"| {seed} | {best[seed]} | {rows[best[seed] - 1]['pgd']:.1%} | {rows[-1]['pgd']:.1%} | "
                     f"{points(g)} |")
    pairs = [(f"{name} epoch {best[s]} vs {EPOCHS}, seed {s}", ("overfit", name, s))
             for s in SEEDS for name in ("pgd-at", "standard") if ("overfit", name, s) in cka]
    if pairs:
        lines += ["", "Per-layer CKA between the best and the last epoch; the standard run between the same two epochs "
                  "is the control (how much layers move late in training without adversarial training). Change = "
                  "1 - CKA; Spearman of change with depth, and mean change of the deeper half minus the shallower "
                  "half:", "", "| comparison | Spearman [95% CI] | deeper - shallower half [95% CI] |", "|---|---|---|"]
        for label, key in pairs:
            t = cka[key]["depth_trend"]
            lines.append(f"| {label} | {_ci(t['spearman'])} | {_ci(t['deep_minus_shallow'], 4)} |")
        lines += [""] + [f"- {label}: `{cka[key]['command']}`" for label, key in pairs] + [""]
        lines += _per_layer(cka, pairs)
    lines += ["", "## Verdicts", ""] + verdicts(per_epoch, best, gaps, cka)
    return lines


def _per_layer(cka: dict, columns: list[tuple[str, object]]) -> list[str]:
    first = cka[columns[0][1]]["per_layer"]
    lines = ["| depth | layer | " + " | ".join(label for label, _ in columns) + " |", "|---|---|" + "---|" * len(columns)]
    for i, p in enumerate(first):
        cells = [_ci(cka[key]["per_layer"][i]["cka"]) for _, key in columns]
        lines.append(f"| {p['depth']} | `{p['layer']}` | " + " | ".join(cells) + " |")
    return lines


def verdicts(per_epoch, best, gaps, cka) -> list[str]:
    """The two findings, judged by fixed rules on the numbers above.

    Block structure: "holds" needs, in every seed, a standard - robust difference of block scores
    whose interval is above 0 *and* that is larger than the difference between two standard
    networks of different seeds (the test-image intervals do not cover training randomness).
    Robust overfitting: testable only where the best-minus-last PGD gap's interval is above 0.
    """
    diffs = {s: cka[("robust", s)]["difference_a_minus_b"] for s in SEEDS}
    seeds = cka["seeds"]["difference_a_minus_b"]
    yard = abs(seeds["block_score"]["value"])
    numbers = ("standard - robust block-structure score " + ", ".join(
        f"seed {s}: {_ci(d['block_score'])}" for s, d in diffs.items())
        + f"; two standard networks of different seeds differ by {seeds['block_score']['value']:.3f}; standard - robust "
        + "long-range CKA " + ", ".join(f"seed {s}: {_ci(d['long_range'])}" for s, d in diffs.items()))
    if all(_excludes_zero(d["block_score"], +1) and d["block_score"]["value"] > yard for d in diffs.values()):
        block = "**holds**"
    else:
        block = ("**does not hold at this scale**: the robust networks keep the standard ones' block structure; the "
                 "differences are of either sign and smaller than the difference between two standard seeds")
    lines = [f"- Robust training removes the block structure: {block} ({numbers})."]
    overfit = [s for s in SEEDS if gaps[s][1] > 0]

    def trend(name: str) -> str:
        found = [cka[k]["depth_trend"]["spearman"]["value"] for k in cka if k[:2] == ("overfit", name)]
        return " and ".join(f"{v:.2f}" for v in found) or "not measured"

    gap_text = ", ".join(f"seed {s}: {points(g)}" for s, g in gaps.items())
    if not overfit:
        lines.append("- Deeper layers are hit hardest by robust overfitting: **cannot be tested here**: no seed shows "
                     f"robust overfitting (best-minus-last PGD accuracy {gap_text}), so there is no overfitting whose "
                     f"effect on layers could be located. Between those epochs deeper layers do change more (Spearman "
                     f"of change with depth {trend('pgd-at')} for PGD-AT), but so they do in the standard runs between "
                     f"the same epochs ({trend('standard')}): late training moves deeper layers more whatever the "
                     "method.")
    else:
        lines.append(f"- Deeper layers are hit hardest by robust overfitting: robust overfitting in seed(s) "
                     f"{', '.join(map(str, overfit))} ({gap_text}); see the depth trend against the standard control.")
    return lines

if __name__ == "__main__":
    main()
