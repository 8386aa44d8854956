"""Acceptance rates of budgeted sampling on every registered space, and whether each space's
plain sampler is uniform over its distinct architectures.

    python benchmarks/budgets.py --out benchmarks/budgets.md

For each (space, budget) it runs what ``nasrobust sample --space S --params/--flops MIN:MAX --n 50``
runs (:func:`nasrobust.budget.sample_in_budget`, seed 0) and reports the method, the acceptance
rate, the draws it took (or the one-line error), and the wall time (a busy shared machine: read
the times as rough). The budgets are the usual reference points of each family (RobArch's S/M/L
parameter points, mobile FLOPs settings, DARTS' ~3.3M CIFAR networks) and a few that fail.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit  # noqa: E402

from nasrobust.budget import Budget, BudgetError, sample_in_budget  # noqa: E402
from nasrobust.space import get_space, list_spaces  # noqa: E402

#: (space, --params, --flops) rows; a benchmark's own choice, not a table the library reads.
BUDGETS: list[tuple[str, str | None, str | None]] = [
    ("bignas", "20M:30M", None),
    ("bignas", None, "1.5G:2G"),
    ("bignas", ":2M", None),
    ("bignas", "200M:300M", None),
    ("bignas-r50", "20M:30M", None),
    ("bignas-r50", None, "3G:5G"),
    ("bignas-small", ":0.1M", None),
    ("bignas-small", None, "5M:10M"),
    ("bignas-r50-small", ":0.5M", None),
    ("ofa-mbv3", None, ":300M"),
    ("ofa-mbv3", None, "400M:600M"),
    ("ofa-mbv3-small", None, ":20M"),
    ("robarch", "20M:30M", None),
    ("robarch", "40M:52M", None),
    ("robarch", "90M:110M", None),
    ("robarch", ":5M", None),
    ("robarch-small", ":5M", None),
    ("nb201", ":0.5M", None),
    ("nb201", None, "50M:100M"),
    ("nb201", "5M:", None),
    ("darts", "3M:3.5M", None),
    ("darts", ":2M", None),
    ("zoo", "20M:30M", None),
    ("zoo", None, ":1G"),
]


def budget_rows(n: int) -> list[str]:
    lines = ["| space | budget | method | acceptance rate | draws | in budget (est.) | seconds | result |",
             "|---|---|---|---|---|---|---|---|"]
    for name, params, flops in BUDGETS:
        space, budget = get_space(name), Budget.parse(params, flops)
        t0 = time.perf_counter()
        try:
            s = sample_in_budget(space, n, seed=0, budget=budget)
            row = [s.method, f"{100 * s.acceptance_rate:.3g}%", f"{s.draws:,}", f"{s.in_budget:.3g}", f"{n} sampled"]
        except BudgetError as exc:
            row = ["", "", "", "", f"error: {exc}"]
        secs = time.perf_counter() - t0
        flags = " ".join(f"--{k} {v}" for k, v in (("params", params), ("flops", flops)) if v)
        lines.append(f"| {name} | `{flags}` | {' | '.join(row[:4])} | {secs:.2f} | {row[4]} |")
    return lines


def uniformity_rows() -> list[str]:
    """How far each space's random_genome is from uniform over distinct architectures (max/min probability)."""
    from nasrobust.spaces.darts import canonical_cell, draw_count
    from nasrobust.spaces.nb201 import index_tables

    lines = ["| space | plain `sample()` uniform over distinct architectures? | max/min probability of two architectures |",
             "|---|---|---|"]
    tables = index_tables()
    sizes = np.bincount(tables.rep_of_code)
    sizes = sizes[sizes > 0]
    lines.append(f"| nb201 | no: uniform over the 15,625 cells, so a class of k cells is k times as likely "
                 f"| {sizes.max() / sizes.min():.0f} (class sizes {sizes.min()}..{sizes.max()}) |")
    space = get_space("darts")
    rng = np.random.default_rng(0)
    counts = [draw_count(canonical_cell(space.random_genome(rng).normal)) for _ in range(2000)]
    per_cell = max(counts) / min(counts)
    lines.append(f"| darts | no: uniform over labelled cells (relabellings of one cell: {min(counts)}..{max(counts)} in "
                 f"2,000 draws); `none` never drawn | {per_cell:.0f} per cell, {per_cell ** 2:.0f} per pair |")
    ofa = get_space("ofa-mbv3")
    per_stage = (len(ofa.kernels) * len(ofa.expands)) ** (max(ofa.depths) - min(ofa.depths))
    lines.append(f"| ofa-mbv3 (and -small) | no: uniform depth per stage (OFA's convention) | {per_stage} per stage, "
                 f"{float(per_stage) ** ofa.n_stages:.3g} over 5 stages |")
    for name in ("bignas", "bignas-r50", "robarch", "zoo"):
        lines.append(f"| {name} (and -small) | yes: one uniform draw per choice, genomes are architectures | 1 |"
                     if name != "zoo" else "| zoo | yes: a uniform model name | 1 |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--out", help="write the Markdown report here")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    lines = [
        "# Budgeted sampling: acceptance rates",
        "",
        f"`python benchmarks/budgets.py --out benchmarks/budgets.md` (n = {args.n}, seed 0; load average "
        f"{load:.1f} on the machine, so the seconds are rough). Acceptance rate: the fraction of the space inside "
        "the budget -- exact for enumerated spaces, the fraction of uniform draws inside otherwise; "
        "\"in budget\" is that rate times the space size.",
        "",
        *budget_rows(args.n),
        "",
        "## Is each space's plain sampler uniform over distinct architectures?",
        "",
        "Budgeted sampling uses `SearchSpace.uniform_genome` (uniform over distinct architectures) for every "
        "space; the plain `sample()` and the searchers keep each space's own `random_genome`:",
        "",
        *uniformity_rows(),
    ]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
