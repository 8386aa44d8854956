"""Why IBP explodes on the study's nets, and what the CPU protocol's certified suite measures instead.

Usage (after ``nasrobust train-supernet --space bignas-small --dataset mnist5k --out RUN --epochs 4``)::

    OMP_NUM_THREADS=1 python benchmarks/certified_radius.py RUN/checkpoint.pt --subnets 10 --out benchmarks/certified_radius.md

Part 1 (one subnet, one test digit): the radius of IBP's interval at every conv / BN / add / ReLU
node against the exact first-order radius ``eps ||J_row||_1`` of the same node (Linf, eps 1e-3, no
clipping), so the growth per op is visible. Part 2: the CPU protocol's certified suite on the first
``--subnets`` sampled subnets (BN re-calibrated on 500 training images, as the study does), with
the wall time per subnet.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit  # noqa: E402

from nasrobust.bounds import BoundGraph, InputSet  # noqa: E402
from nasrobust.checkpoint import load_supernet  # noqa: E402
from nasrobust.data import load_dataset, stack  # noqa: E402
from nasrobust.noise.base import SUITES, EvalContext  # noqa: E402
from nasrobust.study import CPU_PROTOCOL  # noqa: E402
from nasrobust.train.api import recalibrated_subnet  # noqa: E402

SHOWN = ("convolution", "native_batch_norm", "add", "relu", "addmm")


def growth(model: torch.nn.Module, x: torch.Tensor, eps: float = 1e-3) -> list[str]:
    """IBP radius / exact first-order radius after every shown node (mean over the node's neurons)."""
    g = BoundGraph(model, x)
    g._keep = set(g._order)  # keep every interval
    with torch.no_grad():
        state = g._propagate(InputSet(x, torch.tensor([eps]), "linf", None), "ibp")

        def values(z: torch.Tensor) -> dict:
            env = g._evaluate(z)
            return {n: env[n][0] if isinstance(env[n], (tuple, list)) else env[n] for n in state.ivals}

        l1: dict = {}
        for e in torch.eye(x[0].numel()).view(-1, 1, *x.shape[1:]):  # |J e_i| summed over the input basis
            _, t = torch.func.jvp(values, (x,), (e,))
            for n, v in t.items():
                l1[n] = l1.get(n, 0) + v.abs()
    lines = ["| node | shape | IBP radius | exact radius | ratio | x previous |", "|---|---|---|---|---|---|"]
    prev = None
    for n in g._order:
        op = str(getattr(n.target, "__name__", n.target)).split(".")[0]
        if n not in state.ivals or op not in SHOWN:
            continue
        ibp, exact = float(state.ivals[n].radius.mean()), eps * float(l1[n].mean())
        ratio = ibp / max(exact, 1e-30)
        step = "" if prev is None else f"{ratio / prev:.2f}"
        lines.append(f"| {op} | {tuple(state.ivals[n].lower.shape[1:])} | {ibp:.3g} | {exact:.3g} | {ratio:.3g} | {step} |")
        prev = ratio
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--subnets", type=int, default=10)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    supernet, _ = load_supernet(args.checkpoint)
    data = load_dataset("mnist5k")
    archs = supernet.supernet.space.sample(args.subnets, seed=0)
    x, y = stack(data.test_subset(args.images))
    options = dict(CPU_PROTOCOL.suite_options["certified"])
    lines = [f"# Certified radii on bignas-small subnets ({args.checkpoint})", "",
             f"Load while measuring: `{os.getloadavg()}` (1/5/15 min) on {os.cpu_count()} cores.", "",
             f"## IBP looseness per op ({archs[0].encoding}, one test digit, Linf eps 1e-3)", ""]
    lines += growth(recalibrated_subnet(supernet, archs[0], data, 500, seed=0), x[:1])
    lines += ["", f"## The CPU protocol's certified suite: `{options}`", "",
              "| subnet | clean | median | q10 | q25 | q75 | q90 | certified acc. curve (eps: fraction) | seconds |",
              "|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as cache:
        for arch in archs:
            model = recalibrated_subnet(supernet, arch, data, 500, seed=0)
            ctx = EvalContext(data, x, y, Path(cache), torch.device("cpu"), batch_size=100)
            start = time.perf_counter()
            got = {(m.noise, m.level, m.metric): m.value for m in SUITES.create("certified", **options).run(model, ctx)}
            seconds = time.perf_counter() - start
            noise = f"{options['methods'][0]}_linf"
            q = [got[(noise, 0.0, m)] for m in ("radius_median", "radius_q10", "radius_q25", "radius_q75", "radius_q90")]
            curve = ", ".join(f"{e:g}: {v:.2f}" for (n, e, m), v in sorted(got.items()) if m == "certified_accuracy_curve")
            lines.append(f"| `{arch.encoding}` | {got[('clean', 0.0, 'accuracy')]:.2f} | " + " | ".join(f"{v:.2e}" for v in q)
                         + f" | {curve} | {seconds:.0f} |")
    emit(lines, args.out)


if __name__ == "__main__":
    main()
