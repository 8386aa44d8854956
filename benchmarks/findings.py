"""The source papers' findings re-checked at CPU scale: writes benchmarks/findings.md.

One line per claim, each with a verdict (reproduced / not reproduced / cannot be tested here):

1. RobustART: adversarial training improves robustness against every noise family. Measured here:
   one bignas-small network trained twice on mnist5k per seed (standard vs Madry PGD-AT, the pair
   of ``_training_pair.py``), both scored by the typed entry point ``nasrobust.evaluate`` on the
   adversarial, natural and system suites with the study's CPU protocol
   (``nasrobust.study.CPU_PROTOCOL``), and, shrunk, the certified suite on seed 0.
2. Representation similarity (Cianfarani et al. 2022): cited from ``cka_robust.md`` (measured
   there, not rerun here); the robust-overfitting claim from ``robust_overfitting.md`` when it exists
   (PGD-AT on a small training set, where robust overfitting can occur).
3. RobArch: cited from ``robarch_factors.md`` (budget-matched pairs of robarch-small PGD-AT networks, measured there).
4. DSRNA: cited from ``robust_search_nb201.md`` (the 3-seed NAS-Bench-201 search experiment, measured there).

Seeded throughout; training resumes from its run folders, so a rerun costs only the evaluation.

    OMP_NUM_THREADS=1 python benchmarks/findings.py [--out bench_out/findings] [--md benchmarks/findings.md] [--force]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: the machine is shared

import argparse
import subprocess
import sys
import time
from pathlib import Path

ARCH = "bignas-small:r24-s8k3-d3w8k3e1-d3w16k3e1-d3w32k3e1-d3w48k3e1"  # the one of cka_robust.py
EPOCHS, EPS, STEPS = 2, 0.1, 3  # the smallest pair that separates: PGD-AT reaches ~90% PGD at epoch 2 (cka_robust.md)
ALPHA = 2.5 * EPS / STEPS
SEEDS = (0, 1)
SUITES = ("adversarial", "natural", "system")
CERTIFIED_IMAGES = 2  # crown-zono took ~85 s per model for 2 digits here (findings.md): seed 0 only
N_BOOT = 2000
HERE = Path(__file__).parent


def say(msg: str) -> None:
    print(f"[findings {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def conditions(store, wid: str, suite: str) -> dict[str, float]:
    """Per-condition accuracies of one suite (``noise@level``), the clean one left out: the family's raw data."""
    out = {}
    for rec in store.query(weights_id=wid, suite=suite, metric="accuracy"):
        aggregate = rec.key.noise in ("clean", "worst_case", "mean_corruption", "summary")
        unperturbed = suite == "adversarial" and float(rec.key.level) == 0.0  # an attack at eps 0 is clean accuracy
        if not (aggregate or unperturbed):
            out[f"{rec.key.noise}@{rec.key.level}"] = float(rec.value)
    return out


def headline(store, wid: str, suite: str, noise: str, metric: str) -> float:
    """The headline at its largest level (the adversarial headline is "at max eps")."""
    recs = store.query(weights_id=wid, suite=suite, noise=noise, metric=metric)
    return float(max(recs, key=lambda r: float(r.key.level)).value)


def bootstrap_mean(diffs: list[float], seed: int) -> tuple[float, float, float]:
    """Mean of paired differences with a 95% percentile bootstrap interval (seeded generator)."""
    import numpy as np

    d = np.asarray(diffs, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(d), size=(N_BOOT, len(d)))
    low, high = np.percentile(d[idx].mean(axis=1), [2.5, 97.5])
    return float(d.mean()), float(low), float(high)


def image_se(p1: float, p2: float, n: int) -> float:
    """Sampling error of a difference of two accuracies on ``n`` images, ignoring the pairing (conservative)."""
    return (p1 * (1 - p1) / n + p2 * (1 - p2) / n) ** 0.5


def train(pair, out: Path) -> dict:
    from nasrobust.train.api import train_standalone

    runs = {}
    for seed in SEEDS:
        for name, recipe in pair.recipes.items():
            t0 = time.perf_counter()
            say(f"training {name} seed {seed} ({EPOCHS} epochs; resumes if done)")
            train_standalone("bignas", pair.arch, pair.data, recipe.replace(seed=seed), out / f"{name}-s{seed}",
                             progress=False)
            runs[(name, seed)] = out / f"{name}-s{seed}"
            say(f"  done in {time.perf_counter() - t0:.0f} s")
    return runs


def score(runs: dict, out: Path) -> tuple[dict, dict]:
    """Evaluate every run on SUITES (CPU protocol) and seed 0 on a shrunk certified suite; weights ids by run."""
    from nasrobust import checkpoint, evaluate
    from nasrobust.evaluation import EvalProtocol
    from nasrobust.study import CPU_PROTOCOL

    proto = EvalProtocol(n_examples=CPU_PROTOCOL.n_examples, suite_options=CPU_PROTOCOL.suite_options, seed=0)
    db, cache = out / "results.db", out / "cache"
    wids, seconds = {}, {}
    for (name, seed), run in runs.items():
        say(f"evaluating {name} seed {seed} on {', '.join(SUITES)}")
        t0 = time.perf_counter()
        evaluate(run, db=db, suites=SUITES, protocol=proto, reference=None, cache_dir=cache)
        seconds[(name, seed)] = time.perf_counter() - t0
        wids[(name, seed)] = checkpoint.read(run)["weights_id"]
        if seed == SEEDS[0] and CERTIFIED_IMAGES:
            opts = dict(CPU_PROTOCOL.suite_options["certified"], n_examples=CERTIFIED_IMAGES)
            say(f"  certified (crown-zono, {CERTIFIED_IMAGES} digits)")
            t0 = time.perf_counter()
            evaluate(run, db=db, suites=["certified"], reference=None, cache_dir=cache,
                     protocol=EvalProtocol(n_examples=CPU_PROTOCOL.n_examples, suite_options={"certified": opts}))
            seconds[(name, seed, "certified")] = time.perf_counter() - t0
    return wids, seconds


HEADLINES = {  # suite -> (noise, metric) of its headline robustness metric (the suites' MetricInfo headlines)
    "adversarial": ("pgd_linf", "accuracy"),
    "natural": ("mean_corruption", "accuracy"),
    "system": ("summary", "mean"),
}


def robustart(store, wids: dict, n: int) -> tuple[list[str], list[str]]:
    """Per family: the headline difference AT - standard per seed, its bootstrap CI over (seed, condition) pairs."""
    rows, verdicts = [], []
    for suite in SUITES:
        noise, metric = HEADLINES[suite]
        per_seed, cond_diffs, ses, clean = [], [], [], []
        for seed in SEEDS:
            clean.append(headline(store, wids[("pgd-at", seed)], "adversarial", "clean", "accuracy")
                         - headline(store, wids[("standard", seed)], "adversarial", "clean", "accuracy"))
            std = headline(store, wids[("standard", seed)], suite, noise, metric)
            at = headline(store, wids[("pgd-at", seed)], suite, noise, metric)
            per_seed.append((std, at))
            ses.append(image_se(std, at, n))
            cs, ca = conditions(store, wids[("standard", seed)], suite), conditions(store, wids[("pgd-at", seed)], suite)
            cond_diffs += [ca[k] - cs[k] for k in sorted(cs) if k in ca]
        mean, low, high = bootstrap_mean(cond_diffs, seed=0)
        seeds_txt = "; ".join(f"seed {s}: {std:.1%} -> {at:.1%} ({(at - std) * 100:+.1f} ± {2 * se * 100:.1f})"
                              for s, (std, at), se in zip(SEEDS, per_seed, ses))
        clear = all((at - std) > 2 * se for (std, at), se in zip(per_seed, ses))
        worse = all((std - at) > 2 * se for (std, at), se in zip(per_seed, ses))
        if low > 0 and clear:
            verdict = "**reproduced**"
        elif high < 0 and worse:
            verdict = "**not reproduced** (AT is worse)"
        else:
            verdict = "**not reproduced at this scale** (no improvement beyond the sampling error)"
        clean_txt = ", ".join(f"{c * 100:+.1f}" for c in clean)
        rows.append(f"| {suite} | `{noise}` {metric} | {seeds_txt} | {clean_txt} | {len(cond_diffs)} | "
                    f"{mean * 100:+.1f} [{low * 100:+.1f}, {high * 100:+.1f}] | {verdict} |")
        verdicts.append(f"{suite}: **{verdict.split('**')[1]}** ({mean * 100:+.1f} [{low * 100:+.1f}, "
                        f"{high * 100:+.1f}] points)")
    return rows, verdicts


def certified_rows(store, wids: dict) -> list[str]:
    rows = []
    for name in ("standard", "pgd-at"):
        wid = wids[(name, SEEDS[0])]
        recs = {(r.key.noise, r.key.metric): r.value for r in store.query(weights_id=wid, suite="certified")}
        med = recs.get(("crown-zono_linf", "radius_median"))
        cert = [v for (noise, metric), v in recs.items() if metric == "certified_accuracy"]
        rows.append(f"| {name} | {SEEDS[0]} | {med if med is None else f'{med:.4f}'} | "
                    f"{'n/a' if not cert else f'{cert[0]:.0%}'} |")
    return rows


def cited_cka() -> list[str]:
    """The two verdict lines of cka_robust.md, quoted (measured there)."""
    text = (HERE / "cka_robust.md").read_text()
    return [line for line in text.split("## Verdicts", 1)[1].splitlines() if line.startswith("- ")]


def overfit_cited(path: Path | None = None) -> str | None:
    """The ``**Summary verdict:**`` of robust_overfitting.md (measured there), or None while that report does not exist."""
    path = path or HERE / "robust_overfitting.md"
    return summary_verdict(path.read_text().splitlines()) if path.exists() else None


def overfit_row(cka_line: str, overfit: str | None) -> str:
    """The summary-table verdict of Cianfarani et al.'s robust-overfitting claim: robust_overfitting.md's verdict
    where it exists, else cka_robust.md's."""
    if overfit is not None:
        return f"{overfit} — see 2 (robust_overfitting.md)"
    return (("**cannot be tested here**: no robust overfitting occurred" if "cannot be tested" in cka_line else "see 2")
            + " (cka_robust.md)")


def md_table(lines: list[str], header: str) -> list[str]:
    """The Markdown table of ``lines`` whose header row starts with ``header``."""
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def summary_verdict(lines: list[str]) -> str:
    """The text of a report's ``**Summary verdict:**`` line."""
    line = next(line for line in lines if line.startswith("**Summary verdict:**"))
    return line.removeprefix("**Summary verdict:**").strip()


def md_tables(lines: list[str], header: str) -> list[tuple[str, list[str]]]:
    """Every Markdown table of ``lines`` whose header row starts with ``header``, each with the ``## `` heading it
    sits under ("" before the first heading)."""
    found, heading = [], ""
    for i, line in enumerate(lines):
        if line.startswith("## "):
            heading = line.removeprefix("## ").strip()
        elif line.startswith(header) and (i == 0 or not lines[i - 1].startswith("|")):
            found.append((heading, md_table(lines[i:], header)))
    return found


def robarch_cited(md: Path = HERE / "robarch_factors.md") -> tuple[str, list[str]]:
    """The verdict of robarch_factors.md (its ``**Summary verdict:**`` line), and, quoted, its design table and
    every per-seed results and verdict table, each under its heading (one run per training length; measured
    there, not rerun here)."""
    lines = md.read_text().splitlines()
    body = md_table(lines, "| factor | reference")
    for header in ("| factor | seed", "| factor | published direction"):
        for heading, table in md_tables(lines, header):
            body += ["", f"*{heading}:*", "", *table]
    return summary_verdict(lines), body


def robarch_section(body: list[str]) -> list[str]:
    """Section 3: what robarch_factors.py measured, then its quoted tables."""
    return ["## 3. RobArch — cited from `robarch_factors.md`", "",
            "Measured by `OMP_NUM_THREADS=1 python benchmarks/robarch_factors.py` (not rerun here). RobArch compares "
            "its factors at 26M / 46M / 104M parameters with ImageNet PGD-AT, out of reach on this CPU; the small-scale "
            "test instead trains, per factor, a pair of robarch-small networks (~1.5M parameters) that differ in that "
            "factor only, within 5% in parameters (a factor that costs parameters is paid for by a narrower width), "
            "with the same PGD-AT recipe and seed, 2 seeds, and compares them per test digit on the min-norm Linf "
            "radius (95% bootstrap CI over digits; a verdict needs both seeds to agree). Every factor was trained for "
            "1 epoch; the ReLU networks stayed near chance there, so the ReLU-based factors were trained again for "
            "longer (epoch count in the headings below), and each factor's verdict is taken from a run in which both "
            "of its networks learned. Its design, results and verdicts:", "", *body]


DSRNA_RUN = "## Alphas that move"  # the robust_search_nb201.md section of its latest run, whose tables are quoted


def dsrna_cited() -> tuple[str, list[str]]:
    """The verdict of robust_search_nb201.md (its ``**Summary verdict:**`` line), and, quoted, the per-method
    table, the paired per-seed comparison and the alpha-movement table of its latest run (section ``DSRNA_RUN``:
    the searches at an alpha lr that moves the alphas), then its verdict section (measured there, not rerun here)."""
    lines = (HERE / "robust_search_nb201.md").read_text().splitlines()
    run = lines[next(i for i, line in enumerate(lines) if line.startswith(DSRNA_RUN)):]
    start = lines.index("## Verdict") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    verdict = [line for line in lines[start:end] if not line.startswith("**Summary verdict:**")]
    while verdict and not verdict[0].strip():
        verdict.pop(0)
    body = (md_table(run, "| method | seeds") + [""] + md_table(run, "| metric | comparison") + [""]
            + md_table(run, "| method | seed | max softmax") + [""] + verdict)
    return summary_verdict(lines), body


def dsrna_section(body: list[str]) -> list[str]:
    """Section 4: what robust_search_nb201.py measured, then its quoted tables and verdict."""
    return ["## 4. DSRNA — cited from `robust_search_nb201.md`", "",
            "Measured by `OMP_NUM_THREADS=1 python benchmarks/robust_search_nb201.py` (nb201 cells searched on mnist5k "
            "by random search with weight sharing, DARTS, DSRNA-Jacobian and DSRNA-CB with its normalised "
            "certified-margin regulariser (CROWN-IBP, or crown-zono on 2 images per alpha step: `dsrna-cb-zono`), the "
            "same supernet weight steps per seed and, for the differentiable methods, the same weights-only warm-up "
            "and alpha steps (its options as stated there); each found cell re-trained stand-alone and scored on the "
            "min-norm and crown-zono radii; not rerun here; seeds as stated there). "
            "The tables of its latest run (the differentiable searches at an alpha lr large enough to move the "
            "alphas away from uniform; its earlier runs are in the md), then its verdict:", "", *body]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench_out/findings")
    ap.add_argument("--md", default=str(HERE / "findings.md"))
    ap.add_argument("--force", action="store_true", help="overwrite an existing --md")
    args = ap.parse_args(argv)
    md = Path(args.md)
    sys.path.insert(0, str(HERE))
    from _report import emit, refuse_overwrite

    refuse_overwrite(md, force=args.force)
    import torch

    from _training_pair import standard_and_pgd
    from nasrobust import checkpoint
    from nasrobust.store import open_results
    from nasrobust.study import CPU_PROTOCOL

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    wall0, cpu0 = time.perf_counter(), os.times()
    out = Path(args.out)
    pair = standard_and_pgd(ARCH, EPOCHS, EPS, STEPS, ALPHA)
    runs = train(pair, out)
    train_s = {k: sum(h["seconds"] for h in checkpoint.read(r)["history"]) for k, r in runs.items()}
    clean = {k: checkpoint.read(r)["history"][-1]["test_acc"] for k, r in runs.items()}
    wids, eval_s = score(runs, out)
    n = CPU_PROTOCOL.n_examples
    with open_results(out / "results.db", readonly=True) as store:
        rows, verdicts = robustart(store, wids, n)
        cert = certified_rows(store, wids) if CERTIFIED_IMAGES else []
    cpu1 = os.times()
    wall, cpu = time.perf_counter() - wall0, (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    say("writing the report")
    emit(report(pair, rows, verdicts, cert, clean, train_s, eval_s, n, (wall, cpu), (uptime_before, uptime_after)),
         md)


def report(pair, rows, verdicts, cert, clean, train_s, eval_s, n, times, uptimes) -> list[str]:
    from nasrobust.study import CPU_PROTOCOL

    std_min = sum(v for (name, _), v in train_s.items() if name == "standard") / 60
    at_min = sum(v for (name, _), v in train_s.items() if name == "pgd-at") / 60
    ev = sum(v for k, v in eval_s.items() if len(k) == 2) / 60
    cv = sum(v for k, v in eval_s.items() if len(k) == 3) / 60
    lines = [
        "# The source papers' findings, re-checked at small scale",
        "",
        "Produced by `OMP_NUM_THREADS=1 python benchmarks/findings.py --force` on the shared 2-core CPU, one thread. "
        "Small scale throughout: mnist5k (4,000 training digits), a 189k-parameter network, a few epochs. A verdict "
        "here says what holds *at this scale*; it neither confirms nor refutes the papers at theirs.",
        "",
        f"Load: `{uptimes[0]}` before, `{uptimes[1]}` after (other engineers' jobs shared the 2 cores, so wall times "
        f"are inflated). The invocation took {times[0] / 60:.1f} min wall, {times[1] / 60:.1f} min CPU; training "
        f"{std_min:.1f} min (standard, {len(SEEDS)} seeds) and {at_min:.1f} min (PGD-AT) by the runs' epoch times "
        f"(runs resume from their folders; a rerun costs only the evaluation), evaluation {ev:.1f} min "
        f"(+ {cv:.1f} min certified).",
        "",
        "## Summary",
        "",
        "| source | claim | verdict |",
        "|---|---|---|",
        "| RobustART | adversarial training improves robustness against every noise family | "
        + "; ".join(verdicts) + " — see 1 |",
    ]
    cka = cited_cka()
    overfit = overfit_cited()
    dsrna = dsrna_cited()
    robarch = robarch_cited()
    lines += [
        "| Cianfarani et al. 2022 | robust training removes the block structure of the CKA map | "
        + ("**not reproduced at this scale**" if "does not hold" in cka[0] else "see 2") + " (cka_robust.md) |",
        f"| Cianfarani et al. 2022 | robust overfitting mostly affects deeper layers | {overfit_row(cka[1], overfit)} |",
        "| RobArch | under a fixed parameter budget, depth/width, kernel size, SE and activation move PGD robustness "
        f"in the published direction | {robarch[0]} — see 3 (robarch_factors.md) |",
        f"| DSRNA | DSRNA-CB / Jacobian search gives higher certified bounds than DARTS and random | {dsrna[0]} "
        "— see 4 |",
        "",
        "## 1. RobustART: adversarial training vs every noise family",
        "",
        f"Network `{ARCH}` ({pair.cost.params / 1e3:.0f}k params), preset `quick` with {EPOCHS} epochs, trained twice "
        f"per seed ({', '.join(map(str, SEEDS))}) with the same initial weights and data order: standard, and Madry "
        f"PGD-AT (Linf eps {EPS}, {STEPS} steps of {ALPHA:.4f}, random start) — `benchmarks/_training_pair.py`. "
        f"{EPOCHS} epochs is the smallest pair that separates: in `cka_robust.md` PGD-AT reaches ~90% PGD accuracy at "
        "epoch 2 of 8. Clean test accuracy (1,000 digits): "
        + ", ".join(f"{name} seed {s} {v:.1%}" for (name, s), v in clean.items()) + ".",
        "",
        f"Scored with `nasrobust.evaluate(run, suites={list(SUITES)}, protocol=EvalProtocol(n_examples={n}, "
        f"suite_options=CPU_PROTOCOL.suite_options), reference=None)` — the study's CPU protocol "
        f"({CPU_PROTOCOL.description}). Each suite is one RobustART noise family; its headline metric is the one the "
        "suite declares.",
        "",
        "Intervals. The store keeps each condition's accuracy (attack x eps, corruption x severity, format x decoder "
        "x resizer), not each image's outcome, so a paired bootstrap over test images is not possible from it. "
        f"Instead: (a) *CI*: mean of the paired differences AT - standard over every (seed, condition) of the family, "
        f"95% percentile bootstrap over those pairs ({N_BOOT} resamples, seeded); (b) *± per seed*: twice the "
        f"sampling error of the headline difference over the {n} test images, ignoring the pairing (conservative). "
        "Verdict rule: **reproduced** if the CI is above 0 *and* every seed's headline gain exceeds its ± ; "
        "**not reproduced (AT is worse)** for the mirror case; otherwise **not reproduced at this scale**. The per-seed "
        "± is the binding test: the conditions of a family share the same test images, so the condition CI does not "
        "cover image sampling and is narrower than it should be. The clean-accuracy column is the yardstick: a "
        "family gain no larger than the clean gain says AT made the network better, not more robust to that family. "
        "Under the CPU protocol the system family is JPEG only (every decoder x resizer), which at MNIST scale is "
        "close to clean accuracy.",
        "",
        "| family (suite) | headline metric | standard -> PGD-AT, AT - standard in points ± 2 SE (images) | "
        "clean acc AT - standard, points (per seed, same images) | (seed, condition) pairs | "
        "AT - standard over conditions [95% CI], points | verdict |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    if cert:
        lines += ["",
                  f"Certified (shrunk: crown-zono Linf on {CERTIFIED_IMAGES} digits, seed {SEEDS[0]} only, "
                  f"{cv * 60 / 2:.0f} s per model here; too few digits for a CI, so no verdict):", "",
                  "| model | seed | crown-zono Linf radius (median) | certified acc at eps 0.003 |", "|---|---|---|---|",
                  *cert]
    lines += [
        "",
        "## 2. Representation similarity (Cianfarani et al. 2022) — cited from `cka_robust.md`",
        "",
        "Measured by `OMP_NUM_THREADS=1 python benchmarks/cka_robust.py` (same network, 8 epochs, 2 seeds; "
        "bootstrap CIs over test images; not rerun here). Its verdicts:",
        "",
        *cka,
        *([] if overfit is None else [
            f"- Re-tested where robust overfitting can occur (PGD-AT for many epochs on a small training set; "
            f"`OMP_NUM_THREADS=1 python benchmarks/robust_overfitting.py`, not rerun here): {overfit}"]),
        "",
        *robarch_section(robarch[1]),
        "",
        *dsrna_section(dsrna[1]),
    ]
    return lines


if __name__ == "__main__":
    main()
