"""Min-norm Linf radius vs PGD-10 accuracy on bignas-small subnets of a trained supernet: per-subnet
cost (side by side, same process) and the spread of median radii across subnets (issue 11 item 3).

    OMP_NUM_THREADS=1 python benchmarks/adversarial_radius_subnets.py RUN/checkpoint.pt --subnets 4 --out FILE.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit  # noqa: E402

from nasrobust.checkpoint import load_supernet  # noqa: E402
from nasrobust.data import load_dataset, stack  # noqa: E402
from nasrobust.noise.adversarial import attack_run, finite_quantile, minimal_distances  # noqa: E402
from nasrobust.noise.attacks import AttackSettings, predict_labels  # noqa: E402
from nasrobust.train.api import recalibrated_subnet  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--subnets", type=int, default=4)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    supernet, _ = load_supernet(args.checkpoint)
    data = load_dataset("mnist5k")
    archs = supernet.supernet.space.sample(args.subnets, seed=0)
    x, y = stack(data.test_subset(args.images))
    settings = AttackSettings(steps=10)
    lines = [f"Load before: `{os.getloadavg()}` (1/5/15 min) on {os.cpu_count()} cores; {args.images} test digits.", "",
             "| subnet | clean | PGD-10 acc @0.1 | PGD s | median r | q10 | q25 | q75 | q90 | min-norm s | cost ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for arch in archs:
        model = recalibrated_subnet(supernet, arch, data, 500, seed=0)
        correct = predict_labels(model, x, "cpu", 100) == y
        t0 = time.perf_counter()
        pgd = attack_run(model, x, y, correct, "pgd_linf", 0.1, batch_size=100, seed=0, settings=settings)
        t1 = time.perf_counter()
        dist = minimal_distances(model, x, y, correct, attack="minnorm_linf", batch_size=100, seed=0, settings=settings)
        t2 = time.perf_counter()
        q = [finite_quantile(dist, p) for p in (0.5, 0.1, 0.25, 0.75, 0.9)]
        lines.append(f"| `{arch.encoding[:40]}` | {float(correct.double().mean()):.2f} | "
                     f"{float(pgd.robust.double().mean()):.2f} | {t1 - t0:.1f} | "
                     + " | ".join("inf" if v is None else f"{v:.4f}" for v in q)
                     + f" | {t2 - t1:.1f} | {(t2 - t1) / (t1 - t0):.1f} |")
    lines += ["", f"Load after: `{os.getloadavg()}`."]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
