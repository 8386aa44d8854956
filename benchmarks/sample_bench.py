"""`nasrobust sample --space bignas --n 1200`: analytic cost vs building the modules.

Measures, in one run on this machine:
  1. the whole CLI command (fresh interpreter, cost included, records written), wall time;
  2. in-process sampling + analytic cost of the 1200 architectures;
  3. building the same architectures as real torch modules (default initialisation, CPU)
     and counting their parameters -- on the first ``--build`` of them (building all 1200
     ImageNet-size networks takes many minutes), reported per architecture.
The ratio (3) / (2) per architecture is the speed-up of the analytic path.

    python benchmarks/sample_bench.py [--build 120] [--out benchmarks/sample.md]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="bignas")
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--build", type=int, default=120, help="how many of the archs to build as modules")
    ap.add_argument("--out", default=str(Path(__file__).with_name("sample.md")))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "nasrobust", "sample", "--space", args.space, "--n", str(args.n), "--out", f"{tmp}/archs.jsonl",
               "--force"]  # the same file three times
        cli_times = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            cli_times.append(time.perf_counter() - t0)
    cli = min(cli_times)

    from nasrobust import get_space

    space = get_space(args.space)
    t0 = time.perf_counter()
    archs = space.sample(args.n, seed=0)
    costs = [space.cost(a) for a in archs]
    analytic = time.perf_counter() - t0

    import torch

    torch.set_num_threads(1)
    subset = archs[: args.build]
    t0 = time.perf_counter()
    for arch, cost in zip(subset, costs):
        net = space.build(arch)
        assert sum(p.numel() for p in net.parameters()) == cost.params
        del net
    build = time.perf_counter() - t0

    per_analytic = analytic / args.n
    per_build = build / len(subset)
    load = os.getloadavg()[0]
    text = f"""# `nasrobust sample --space {args.space} --n {args.n}`: analytic cost vs built modules

Measured in one run of `python benchmarks/sample_bench.py` (1 torch thread for building;
load average {load:.1f} on {os.cpu_count()} cores while it ran).

| what | time | per architecture |
|---|---|---|
| whole CLI command, fresh interpreter, {args.n} archs with cost, records written (best of 3) | {cli:.2f} s | {1e3 * cli / args.n:.3f} ms |
| sample + analytic cost, in process | {analytic:.3f} s | {1e3 * per_analytic:.3f} ms |
| build the module and count parameters (first {len(subset)} archs) | {build:.1f} s | {1e3 * per_build:.1f} ms |

Analytic path vs building modules, per architecture: **{per_build / per_analytic:.0f}x faster**
(target >= 50x). Whole command: **{cli:.2f} s** (target < 2 s). Building all {args.n} modules would take
about {per_build * args.n:.0f} s. Parameter counts of every built module equal the analytic ones.
"""
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
