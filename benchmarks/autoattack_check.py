"""Fidelity check: our AutoAttack "standard" (torchattacks stages, official arguments) vs the official one.

Trains the small NB201 MNIST network the tests use (4 channels, one cell per stage, 16 px,
two epochs of Adam on mnist5k's 4,000 training digits), then runs, on the first ``--n`` test
digits at Linf ``--eps`` (chosen so robust accuracy is mid-range, not 0 or 100):

* ours -- :func:`nasrobust.noise.adversarial.attack_run` with ``"autoattack"`` (the suite's path:
  clean-correct examples only, APGD-CE -> APGD-T -> FAB-T -> Square on the survivors);
* official -- ``pyautoattack.AutoAttack(model, norm="Linf", eps, version="standard", seed=0)``
  ``.run_standard_evaluation`` (the auto-attack code RobustBench calls);

and reports both robust accuracies, the survivors after each stage, and the wall time of each.
The acceptance criterion is |ours - official| <= 0.5 points.

    python benchmarks/autoattack_check.py --n 500 --eps 0.03 --out benchmarks/autoattack.md
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from _report import emit
from nasrobust.data import load_dataset, stack
from nasrobust.models import ImageClassifier
from nasrobust.noise import attacks as A
from nasrobust.noise.adversarial import attack_run
from nasrobust.noise.attacks.autoattack import AUTOATTACK_STAGES
from nasrobust.space import get_space

ARCH = "nb201:|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"


def train_small_mnist_model(epochs: int = 2, seed: int = 0):
    data = load_dataset("mnist5k")
    space = get_space("nb201")
    torch.manual_seed(seed)
    net = space.build(space.resolve(ARCH), num_classes=10, input_size=16, channels=4, cells_per_stage=1)
    model = ImageClassifier(net, 16, data.info.mean, data.info.std)
    x, y = stack(data.train)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--eps", type=float, default=0.03)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    model, data = train_small_mnist_model()
    x, y = stack(data.test)
    x, y = x[:args.n], y[:args.n]
    dev = torch.device("cpu")
    correct = A.predict_labels(model, x, dev, args.batch_size) == y

    t0 = time.perf_counter()
    res = attack_run(model, x, y, correct, "autoattack", args.eps, seed=0, batch_size=args.batch_size)
    t_ours = time.perf_counter() - t0
    ours = float(res.robust.double().mean())

    from pyautoattack import AutoAttack

    t0 = time.perf_counter()
    with A.attack_mode(model):
        adv, _ = AutoAttack(model, norm="Linf", eps=args.eps, version="standard", seed=0, device="cpu") \
            .run_standard_evaluation(x, y, batch_size=args.batch_size)
        official = float((model(adv).argmax(1) == y).double().mean())
        max_linf = float(A.lp_norms(adv - x, "linf").max())
    t_official = time.perf_counter() - t0

    diff = 100 * (ours - official)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    lines = [
        "# AutoAttack 'standard': ours (torchattacks stages, official arguments) vs official pyautoattack",
        "",
        f"Model: NB201 `{ARCH}` (4 channels, 1 cell/stage, 16 px), trained 2 epochs (Adam 3e-3) on mnist5k;",
        f"first {args.n} mnist5k test digits, Linf eps = {args.eps:g}, seed 0, batch {args.batch_size}, "
        f"{args.threads} torch thread(s), CPU ({platform.processor() or platform.machine()}), "
        f"load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (shared machine).",
        "",
        "| | robust accuracy | wall time (s) |",
        "|---|---|---|",
        f"| clean | {100 * float(correct.double().mean()):.2f}% | |",
        f"| ours (`attack_run(..., 'autoattack', ...)`) | {100 * ours:.2f}% | {t_ours:.0f} |",
        f"| official `pyautoattack.AutoAttack(version='standard')` | {100 * official:.2f}% | {t_official:.0f} |",
        f"| difference (ours - official) | {diff:+.2f} points | |",
        "",
        f"Survivors (ours) before the first stage and after each of {', '.join(AUTOATTACK_STAGES)}: "
        f"{', '.join(map(str, res.survivors))}. Max Linf of the official adversarial examples: {max_linf:.6f}.",
        "",
        f"Criterion |ours - official| <= 0.5 points: **{'PASS' if abs(diff) <= 0.5 + 1e-9 else 'FAIL'}**.",
        "",
        f"Reproduce: `python benchmarks/autoattack_check.py --n {args.n} --eps {args.eps:g}`",
    ]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
