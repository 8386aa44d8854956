"""Robust overfitting on a small training set, and which layers it moves (mnist5k).

Makes Cianfarani et al.'s (NeurIPS 2022) claim "robust overfitting mostly affects deeper layers"
testable at CPU scale. ``cka_robust.py`` (8 epochs of PGD-AT on all 4,000 training digits) saw no
robust overfitting; robust overfitting (Rice et al. 2020) shows readily when PGD-AT trains long on
a *small* training set: the robust test accuracy peaks, then falls while the robust training
accuracy keeps rising. So: the same network and PGD-AT as ``cka_robust.py`` (and the standard
control, same seed = same initial weights and data order), trained on a class-balanced subset of
the mnist5k training digits (the first ``train_size / 10`` of each class) for many epochs, keeping
every epoch's weights; PGD-10 accuracy on the first 500 test digits after every epoch; seeds 0, 1.

Verdict rules (fixed before the results were seen):

* Robust overfitting occurred in a seed iff the best-minus-last PGD-10 test accuracy gap (best
  epoch = highest PGD accuracy, first of ties) has a 95% bootstrap interval over test digits
  above 0 (:func:`cka_robust.gap_interval`).
* In such a seed, "deeper layers are hit hardest" holds iff (a) the per-layer change between the
  best and the last PGD-AT epoch (1 - CKA, ``nasrobust cka``) increases with depth: Spearman of
  change with depth > 0 with its 95% interval above 0, and (b) more so than in the standard
  control between the same two epochs: PGD-AT's deeper-minus-shallower-half change is larger
  than the control's, with non-overlapping 95% intervals. (Spearman alone saturates near 1 for
  both runs, ``cka_robust.md``, so (b) compares the size of the depth effect.)
* Summary: **holds** if robust overfitting occurred in both seeds and (a) and (b) hold in both;
  **does not hold** if it occurred in at least one seed and (a)+(b) hold in none of those;
  **mixed** otherwise; **cannot be tested here** if no seed overfits.

``--schedule step`` (with ``--lr 0.1``) trains with Rice et al.'s (2020) piecewise-constant learning rate
instead of the ``quick`` preset's cosine: divided by 10 at 50% and 75% of the run (their epochs 100 and 150
of 200), where robust overfitting shows right after the first decay.

Seeded throughout; runs resume from their folders (one per setting: train size, epochs, eps, steps, and
schedule / lr where not the preset's), so a rerun is bit-identical and costs only the evaluation.

    OMP_NUM_THREADS=1 python benchmarks/robust_overfitting.py [--train-size 500] [--epochs 40] [--seeds 0 1]
        [--schedule step --lr 0.1]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: the machine is shared

import argparse
import dataclasses
import time
from pathlib import Path

from nasrobust.train.recipe import SCHEDULES

from cka_robust import (ARCH, EPS, EVAL_IMAGES, EVAL_STEPS, STEPS, _ci, best_epoch, gap_interval, pgd_correct, points,
                        run_cka)

TRAIN_SIZE, EPOCHS, SEEDS = 500, 40, (0, 1)


def balanced_indices(labels, n: int, num_classes: int = 10) -> list[int]:
    """The first ``n / num_classes`` indices of each class in ``labels`` (sorted): a class-balanced subset."""
    import numpy as np

    if n % num_classes or n <= 0:
        raise ValueError(f"--train-size must be a positive multiple of {num_classes}, got {n}")
    labels = np.asarray(labels)
    per = n // num_classes
    picked = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per:
            raise ValueError(f"class {c} has {len(idx)} training images, fewer than {per}")
        picked.extend(idx[:per].tolist())
    return sorted(picked)


def depth_verdict(robust: dict, control: dict) -> tuple[bool, bool]:
    """(a) PGD-AT's Spearman of change with depth has its interval above 0; (b) its deeper-minus-shallower-half
    change exceeds the standard control's with non-overlapping intervals. Inputs: ``nasrobust cka``'s depth_trend."""
    a = robust["spearman"]["low"] > 0
    b = robust["deep_minus_shallow"]["low"] > control["deep_minus_shallow"]["high"]
    return a, b


def summary(overfit: dict[int, bool], holds: dict[int, bool]) -> str:
    """The summary verdict by the docstring's rules: ``overfit[seed]``; ``holds[seed]`` for the overfitting seeds."""
    over = [s for s, o in overfit.items() if o]
    if not over:
        return "cannot be tested here"
    if len(over) == len(overfit) and all(holds[s] for s in over):
        return "holds"
    if not any(holds[s] for s in over):
        return "does not hold"
    return "mixed"


def run_key(train_size: int, epochs: int, eps: float, steps: int, schedule: str, lr: float, preset_lr: float) -> str:
    """The folder name of one setting; schedule and lr appear only where they differ from the ``quick`` preset's
    (cosine, ``preset_lr``), so the folders of the first runs keep their names."""
    key = f"n{train_size}-e{epochs}-eps{eps:g}-k{steps}"
    return key + (f"-{schedule}" if schedule != "cosine" else "") + (f"-lr{lr:g}" if lr != preset_lr else "")


def small_pair(train_size: int, epochs: int, eps: float, steps: int, schedule: str = "cosine", lr: float | None = None):
    """cka_robust's standard / PGD-AT pair (PGD-AT with Linf ``eps``, ``steps`` of Madry's 2.5 eps / steps), trained
    on a class-balanced ``train_size`` subset of the training digits with lr ``schedule`` (and ``lr``; None = the
    preset's)."""
    from torch.utils.data import Subset

    from _training_pair import standard_and_pgd
    from nasrobust.data import stack

    pair = standard_and_pgd(ARCH, epochs, eps, steps, 2.5 * eps / steps)
    recipes = {name: r.replace(schedule=schedule, lr=lr) for name, r in pair.recipes.items()}
    pair = dataclasses.replace(pair, base=recipes["standard"], recipes=recipes)
    _, labels = stack(pair.data.train)
    sub = Subset(pair.data.train, balanced_indices(labels.numpy(), train_size))
    info = dataclasses.replace(pair.data.info, split=pair.data.info.split + f"; train: first {train_size // 10} per class")
    return dataclasses.replace(pair, data=dataclasses.replace(pair.data, info=info, train=sub))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench_out/robust_overfitting")
    ap.add_argument("--md", default=str(Path(__file__).with_name("robust_overfitting.md")))
    ap.add_argument("--train-size", type=int, default=TRAIN_SIZE)
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--eps", type=float, default=EPS, help="Linf budget of PGD-AT and of the PGD-10 evaluation")
    ap.add_argument("--steps", type=int, default=STEPS, help="PGD-AT steps (of 2.5 eps / steps, Madry's rule)")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--schedule", default="cosine", choices=SCHEDULES,
                    help="lr schedule (step: /10 at 50%% and 75%% of the run, Rice et al. 2020)")
    ap.add_argument("--lr", type=float, help="base learning rate (default: the quick preset's)")
    ap.add_argument("--no-cka", action="store_true", help="probe: training and per-epoch accuracy only")
    ap.add_argument("--force", action="store_true", help="overwrite an existing --md report")
    args = ap.parse_args()
    if args.train_size <= 0 or args.train_size % 10 or args.train_size > 4000:
        ap.error(f"--train-size must be a multiple of 10 in 10..4000, got {args.train_size}")
    if args.epochs < 2:
        ap.error(f"--epochs must be at least 2, got {args.epochs}")
    if args.lr is not None and args.lr <= 0:
        ap.error(f"--lr must be positive, got {args.lr}")
    from _report import emit, refuse_overwrite
    from _training_pair import train_runs

    refuse_overwrite(args.md, force=args.force)
    import torch

    from nasrobust import checkpoint
    from nasrobust.data import stack
    from nasrobust.train.recipe import get_preset

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    load_before, wall0, cpu0 = os.getloadavg(), time.perf_counter(), os.times()
    pair = small_pair(args.train_size, args.epochs, args.eps, args.steps, args.schedule, args.lr)
    out = Path(args.out) / run_key(args.train_size, args.epochs, args.eps, args.steps, args.schedule, pair.base.lr,
                                   get_preset("quick").lr)
    runs, train_seconds = train_runs(pair, out, args.seeds)
    seconds = {"train": train_seconds, "eval": 0.0, "cka": 0.0}

    t0 = time.perf_counter()
    x, y = stack(pair.data.test_subset(EVAL_IMAGES))
    xt, yt = stack(pair.data.train)
    per_epoch, correct, train_pgd = {}, {}, {}
    for (name, seed), run in runs.items():
        history = checkpoint.read(run)["history"]
        seconds[f"epochs {name}"] = seconds.get(f"epochs {name}", 0.0) + sum(h["seconds"] for h in history)
        rows = [{"epoch": e, "train_acc": h["train_acc"], "clean": h["test_acc"], "pgd": None}
                for e, h in enumerate(history, 1)]
        if name == "pgd-at":
            for row in rows:
                model, _ = checkpoint.load_model(checkpoint.epoch_path(run, row["epoch"]))
                correct[(seed, row["epoch"])] = pgd_correct(model, x, y, args.eps, EVAL_STEPS)
                row["pgd"] = float(correct[(seed, row["epoch"])].mean())
        per_epoch[(name, seed)] = rows
    best = {s: best_epoch([r["pgd"] for r in per_epoch[("pgd-at", s)]]) for s in args.seeds}
    gaps = {s: gap_interval(correct[(s, best[s])], correct[(s, args.epochs)]) for s in args.seeds}
    for s in args.seeds:  # PGD-10 on the training subset at the best and last epochs (robust training accuracy)
        for e in sorted({best[s], args.epochs}):
            model, _ = checkpoint.load_model(checkpoint.epoch_path(runs[("pgd-at", s)], e))
            train_pgd[(s, e)] = float(pgd_correct(model, xt, yt, args.eps, EVAL_STEPS).mean())
        model, _ = checkpoint.load_model(checkpoint.epoch_path(runs[("standard", s)], args.epochs))
        per_epoch[("standard", s)][-1]["pgd"] = float(pgd_correct(model, x, y, args.eps, EVAL_STEPS).mean())
    seconds["eval"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cka = {}
    if not args.no_cka:
        cka_dir = out / "cka"
        cka_dir.mkdir(parents=True, exist_ok=True)
        for s in args.seeds:
            if gaps[s][1] > 0 and best[s] < args.epochs:
                for name in pair.recipes:
                    cka[(name, s)] = run_cka(checkpoint.epoch_path(runs[(name, s)], best[s]),
                                             checkpoint.epoch_path(runs[(name, s)], args.epochs),
                                             cka_dir / f"{name}_best_vs_last_s{s}.png")
    seconds["cka"] = time.perf_counter() - t0
    cpu1, load_after = os.times(), os.getloadavg()
    seconds["wall"] = time.perf_counter() - wall0
    seconds["cpu"] = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    emit(report(args, pair, per_epoch, best, gaps, train_pgd, cka, seconds, (load_before, load_after)), args.md)


def schedule_text(recipe) -> str:
    """The lr schedule in words, e.g. 'step: x0.1 at 50% and 75% of the run'."""
    if recipe.schedule != "step":
        return recipe.schedule
    return f"step: x{recipe.lr_decay:g} at " + " and ".join(f"{m:.0%}" for m in recipe.lr_milestones) + " of the run"


def report(args, pair, per_epoch, best, gaps, train_pgd, cka, seconds, load) -> list[str]:
    seeds, epochs = args.seeds, args.epochs
    cmd = (f"OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/robust_overfitting.py --train-size {args.train_size} "
           f"--epochs {epochs} --eps {args.eps:g} --steps {args.steps}"
           + (f" --schedule {args.schedule}" if args.schedule != "cosine" else "")
           + (f" --lr {args.lr:g}" if args.lr is not None else "")
           + f" --seeds {' '.join(map(str, seeds))}" + (" --no-cka" if args.no_cka else ""))
    lines = [
        "# Robust overfitting on a small training set, and which layers it moves (mnist5k)",
        "",
        f"Architecture `{ARCH}` ({pair.cost.params / 1e3:.0f}k params, the network of `cka_robust.md`), preset `quick` "
        f"with {epochs} epochs (batch {pair.base.batch_size}, lr {pair.base.lr}, weight decay "
        f"{pair.base.weight_decay}, {schedule_text(pair.base)}, warm-up {pair.base.warmup_epochs:g} epochs), trained on a class-balanced subset of {args.train_size} mnist5k training "
        f"digits (the first {args.train_size // 10} of each class) with seeds {', '.join(map(str, seeds))}, every "
        f"epoch's weights kept. PGD-AT: Linf eps {args.eps:g}, {args.steps} steps of {2.5 * args.eps / args.steps:.4f}, "
        f"random start (`cka_robust.md`: eps {EPS}, {STEPS} steps); the standard control is identical but for PGD-AT (same seed = same initial weights and "
        f"data order). Robust accuracy: Linf PGD-{EVAL_STEPS} (eps {args.eps:g}, step eps/4, seeded random start) on the "
        f"first {EVAL_IMAGES} test digits (class-balanced) after every PGD-AT epoch; clean accuracy: all 1,000 test "
        "digits (the runs' log). Verdict rules: the docstring of `benchmarks/robust_overfitting.py`, written before "
        "the results were seen.",
        "",
        f"Produced by `{cmd}` on the shared 2-core CPU, 1 thread. Training took "
        f"{seconds.get('epochs standard', 0) / 60:.1f} min (standard) and {seconds.get('epochs pgd-at', 0) / 60:.1f} min "
        f"(PGD-AT) of wall time (sum of the epochs' times in the runs' logs, all seeds). The invocation that wrote "
        f"this file took {seconds['wall'] / 60:.1f} min wall and {seconds['cpu'] / 60:.1f} min CPU (training "
        f"{seconds['train'] / 60:.1f}, PGD evaluation {seconds['eval'] / 60:.1f}, CKA {seconds['cka'] / 60:.1f} min "
        f"wall; runs resume from their folders) under a 1-minute load average of {load[0][0]:.1f} before and "
        f"{load[1][0]:.1f} after. Every number is the same on a rerun (seeded).",
        "",
        "## Per-epoch accuracy (PGD-AT)",
        "",
        f"Train acc: accuracy on the PGD-{args.steps} training examples during the epoch (the run's log: robust training "
        f"accuracy under the training attack). PGD test: PGD-{EVAL_STEPS} on the {EVAL_IMAGES} test digits.",
        "",
        "| epoch | " + " | ".join(f"seed {s} train acc | seed {s} clean test | seed {s} PGD test" for s in seeds) + " |",
        "|---|" + "---|---|---|" * len(seeds),
    ]
    for e in range(1, epochs + 1):
        cells = []
        for s in seeds:
            r = per_epoch[("pgd-at", s)][e - 1]
            cells += [f"{r['train_acc']:.1%}", f"{r['clean']:.1%}", f"{r['pgd']:.1%}" + (" (best)" if e == best[s] else "")]
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    lines += ["", "## Robust overfitting: best vs last epoch", "",
              "Gap: best minus last PGD-10 test accuracy on the same 500 digits, 95% bootstrap interval over the digits. "
              f"Train PGD-10: PGD-{EVAL_STEPS} accuracy on the {args.train_size} training digits.", "",
              "| seed | best epoch | PGD test best | PGD test last | gap [95% CI] | train PGD-10 best | train PGD-10 last "
              "| standard: clean / PGD test last |", "|---|---|---|---|---|---|---|---|"]
    for s in seeds:
        rows, g, std = per_epoch[("pgd-at", s)], gaps[s], per_epoch[("standard", s)][-1]
        lines.append(f"| {s} | {best[s]} | {rows[best[s] - 1]['pgd']:.1%} | {rows[-1]['pgd']:.1%} | "
                     f"{points(g)} | {train_pgd[(s, best[s])]:.1%} | "
                     f"{train_pgd[(s, epochs)]:.1%} | {std['clean']:.1%} / {std['pgd']:.1%} |")
    overfit = {s: gaps[s][1] > 0 for s in seeds}
    holds = {}
    if cka:
        lines += ["", "## Which layers move: best vs last epoch", "",
                  "Per-layer CKA (`nasrobust cka`, unbiased minibatch linear CKA on every ReLU output, 1,000 test "
                  "digits in batches of 50, 95% bootstrap over batches) between the best and the last PGD-AT epoch; "
                  "the standard run between the same two epochs is the control. Change = 1 - CKA; Spearman of change "
                  "with depth, and mean change of the deeper half minus the shallower half:", "",
                  "| comparison | Spearman [95% CI] | deeper - shallower half [95% CI] |", "|---|---|---|"]
        keys = [(f"{name} epoch {best[s]} vs {epochs}, seed {s}", (name, s)) for s in seeds for name in ("pgd-at", "standard")
                if (name, s) in cka]
        for label, key in keys:
            t = cka[key]["depth_trend"]
            lines.append(f"| {label} | {_ci(t['spearman'])} | {_ci(t['deep_minus_shallow'], 4)} |")
        lines += [""] + [f"- {label}: `{cka[key]['command']}`" for label, key in keys] + [""]
        lines += ["| depth | layer | " + " | ".join(label for label, _ in keys) + " |", "|---|---|" + "---|" * len(keys)]
        for i, p in enumerate(cka[keys[0][1]]["per_layer"]):
            lines.append(f"| {p['depth']} | `{p['layer']}` | "
                         + " | ".join(_ci(cka[k]["per_layer"][i]["cka"]) for _, k in keys) + " |")
        for s in seeds:
            if ("pgd-at", s) in cka:
                a, b = depth_verdict(cka[("pgd-at", s)]["depth_trend"], cka[("standard", s)]["depth_trend"])
                holds[s] = a and b
                lines.append(f"\nSeed {s}: (a) change increases with depth: {'yes' if a else 'no'}; (b) more than in the "
                             f"standard control: {'yes' if b else 'no'}.")
    elif not args.no_cka:
        lines += ["", "No seed overfits, so no CKA comparison was run."]
    lines += ["", "## Verdict", ""]
    if args.no_cka:
        lines.append("Probe run (`--no-cka`): no CKA and no verdict.")
        return lines
    verdict = summary(overfit, {s: holds.get(s, False) for s in seeds})
    gap_text = ", ".join(f"seed {s}: {points(g)}" for s, g in gaps.items())
    why = {"cannot be tested here": f"no seed shows robust overfitting (best-minus-last PGD gap {gap_text})",
           "holds": f"robust overfitting in every seed ({gap_text}), and in each the best-to-last change grows with "
                    "depth more than in the standard control",
           "does not hold": f"robust overfitting in seed(s) {', '.join(str(s) for s in seeds if overfit[s])} "
                            f"({gap_text}), but in none of them does the best-to-last change grow with depth more "
                            "than in the standard control between the same epochs",
           "mixed": f"robust overfitting ({gap_text}); the depth criterion holds in seed(s) "
                    f"{', '.join(str(s) for s in seeds if holds.get(s))} only"}[verdict]
    lines.append(f"**Summary verdict:** deeper layers are hit hardest by robust overfitting: **{verdict}** "
                 f"({args.train_size} training digits, {epochs} epochs, {pair.base.schedule} schedule): {why}.")
    return lines


if __name__ == "__main__":
    main()
