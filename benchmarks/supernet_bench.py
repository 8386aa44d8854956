"""Supernet overhead: one sandwich step vs the sum of its subnets' stand-alone steps.

Measures, in one run on this machine (1 torch thread, the same batch of real mnist5k digits):

  1. one BigNAS sandwich step of the supernet -- the largest, the smallest and 2 random subnets
     (fixed for the run), each forward + backward with the engine's losses (label loss for the
     largest, in-place distillation for the others), then one optimiser step (the engine's SGD);
  2. the same four subnets extracted as stand-alone modules (``supernet.extract``), each
     forward + backward + its own optimiser step, with the same losses; their times summed.

The ratio (1) / (2) is the price of weight sharing (slicing, the elastic layers' Python, the
larger optimiser state); the DESIGN target is <= 1.1. Steps alternate (supernet, stand-alone,
supernet, ...) so both see the same load on a shared machine; medians over ``--repeats``.

    python benchmarks/supernet_bench.py [--space bignas-small] [--batch-size 128] [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", action="append", help="space(s) to measure (default: bignas-small, bignas-r50-small)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).with_name("supernet.md")))
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from nasrobust.data import load_dataset
    from nasrobust.supernet import build_supernet
    from nasrobust.train.engine import _optimizer
    from nasrobust.train.losses import classification_loss, distillation_loss
    from nasrobust.train.recipe import PRESETS
    from nasrobust.train.steps import SandwichStep

    recipe = PRESETS["quick"]
    data = load_dataset("mnist5k")
    info = data.info
    x, y = data.train.tensors[0][: args.batch_size], data.train.tensors[1][: args.batch_size]

    class FixedSandwich(SandwichStep):
        """The engine's sandwich step with the subnets fixed, so both sides run the same networks."""

        def __init__(self, archs):
            super().__init__(recipe, torch.Generator().manual_seed(0), np.random.default_rng(0))
            self.archs = archs

        def subnets(self, model):
            return self.archs

    rows = []
    for name in args.space or ["bignas-small", "bignas-r50-small"]:
        torch.manual_seed(args.seed)
        model = build_supernet(name, info.image_size, info.mean, info.std, num_classes=info.num_classes).train()
        space = model.supernet.space
        archs = [space.largest(), space.smallest(), *space.sample(2, seed=args.seed)]
        step = FixedSandwich(archs)
        opt = _optimizer(model, recipe, recipe.lr)
        nets = [model.extract(a).train() for a in archs]
        opts = [_optimizer(n, recipe, recipe.lr) for n in nets]

        def supernet_step() -> None:
            opt.zero_grad(set_to_none=True)
            step(model, x, y, lambda loss: loss)
            opt.step()

        def standalone_steps() -> None:
            teacher = None
            for i, (net, o) in enumerate(zip(nets, opts)):
                o.zero_grad(set_to_none=True)
                logits = net(x)
                if i == 0:
                    loss = classification_loss(logits, y, recipe.label_smoothing)
                    teacher = logits.detach()
                else:
                    loss = distillation_loss(logits, teacher, recipe.sandwich.kd_temperature)
                loss.backward()
                o.step()

        for _ in range(2):  # warm-up: allocator, oneDNN primitive caches
            supernet_step()
            standalone_steps()
        t_super, t_alone = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            supernet_step()
            t_super.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            standalone_steps()
            t_alone.append(time.perf_counter() - t0)
        ratios = [s / a for s, a in zip(t_super, t_alone)]
        rows.append({
            "space": name,
            "archs": [a.encoding for a in archs],
            "macs": [space.cost(a, num_classes=10).flops / 1e6 for a in archs],
            "super": statistics.median(t_super),
            "alone": statistics.median(t_alone),
            "ratio_of_medians": statistics.median(t_super) / statistics.median(t_alone),
            "median_ratio": statistics.median(ratios),
        })
        print(f"{name}: sandwich {rows[-1]['super']:.3f}s, stand-alone sum {rows[-1]['alone']:.3f}s, "
              f"ratio {rows[-1]['ratio_of_medians']:.3f} (median of per-repeat ratios {rows[-1]['median_ratio']:.3f})")

    load = os.getloadavg()[0]
    lines = [
        "# Supernet overhead: one sandwich step vs its subnets' stand-alone steps",
        "",
        f"Measured in one run of `python benchmarks/supernet_bench.py --batch-size {args.batch_size} --repeats {args.repeats}` "
        f"(torch {torch.__version__}, 1 torch thread, {os.cpu_count()} CPU cores shared with other jobs, load average "
        f"{load:.1f} at the end). Batch: the first {args.batch_size} mnist5k training digits (28 px, resized by each "
        "subnet to its resolution). Step = forward + backward + SGD step (the engine's optimiser, `quick` recipe); the "
        "sandwich is the largest, the smallest and 2 random subnets with in-place distillation; the stand-alone side runs "
        "the same four subnets extracted from the supernet with the same losses. Medians over "
        f"{args.repeats} alternating repeats.",
        "",
        "| space | sandwich step (supernet) | sum of 4 stand-alone steps | ratio (target <= 1.1) | median per-repeat ratio |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['space']} | {r['super'] * 1e3:.0f} ms | {r['alone'] * 1e3:.0f} ms | **{r['ratio_of_medians']:.3f}** | {r['median_ratio']:.3f} |")
    lines += ["", "Subnets (MMACs at their resolution):", ""]
    for r in rows:
        for a, m in zip(r["archs"], r["macs"]):
            lines.append(f"- `{a}` ({m:.1f} M)")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
