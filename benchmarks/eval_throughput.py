"""Per-subnet time on the study's CPU protocol: attacks' per-example early exit off vs on (issue 12 item 3).

Trains the bignas-small supernet for ``--epochs`` of the ``quick`` recipe on mnist5k, then scores the
same ``--subnets`` subnets twice, interleaved subnet by subnet so that machine load hits both alike:
with ``NASROBUST_NO_EARLY_EXIT=1`` (the code path before early exit) and with the default. Each path
writes its own store; the script checks that every stored number is identical between them.
Only early exit differs here; the other savings of the issue are not in this comparison.

    OMP_NUM_THREADS=1 python benchmarks/eval_throughput.py [--subnets 3] [--out benchmarks/eval_throughput.md] [--force]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from _report import emit
from nasrobust import checkpoint
from nasrobust.data import load_dataset
from nasrobust.evaluator import Evaluator, make_suites
from nasrobust.store import open_results
from nasrobust.study import CPU_PROTOCOL as P
from nasrobust.train.api import train_supernet
from nasrobust.train.recipe import Recipe, get_preset

PATHS = {"early exit off (before)": "1", "early exit on (default)": "0"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subnets", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).with_name("eval_throughput.md")))
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    if Path(args.out).exists() and not args.force:
        ap.exit(2, f"error: {args.out} exists; pass --force to overwrite it or choose another --out\n")
    data = load_dataset("mnist5k")
    recipe = Recipe.from_dict({**get_preset("quick").to_dict(), "epochs": args.epochs})
    seconds = {p: [] for p in PATHS}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = train_supernet("bignas", data, recipe, Path(tmp) / "supernet", device=torch.device("cpu"), progress=False).checkpoint
        model, payload = checkpoint.load_supernet(ckpt)
        wid = payload["weights_id"]
        archs = model.supernet.space.sample(args.subnets, seed=11)
        stores = {p: open_results(Path(tmp) / f"r{i}.db", create=True) for i, p in enumerate(PATHS)}
        evs = {}
        for p, store in stores.items():
            suites = make_suites(("adversarial", "natural", "system", "certified"), {k: dict(v) for k, v in P.suite_options.items()})
            evs[p] = Evaluator(store, data, suites, n_examples=P.n_examples, recalib_images=P.recalib_images,
                               progress=False, cache_dir=Path(tmp) / "cache", device=torch.device("cpu"))
            for s in suites:  # model-independent data, made once and cached: not part of the per-subnet cost
                s.prepare(evs[p].ctx)
                evs[p]._prepared.add(s.name)
        for arch in archs:
            for p, flag in PATHS.items():
                os.environ["NASROBUST_NO_EARLY_EXIT"] = flag
                t0 = time.perf_counter()
                evs[p].evaluate_supernet(model, [arch], wid)
                seconds[p].append(time.perf_counter() - t0)
        os.environ.pop("NASROBUST_NO_EARLY_EXIT")
        rows = {p: [(r.key, r.value) for a in archs for r in s.query(a)] for p, s in stores.items()}  # key order
        for s in stores.values():
            s.close()
    a, b = rows.values()
    same = a == b and len(a) > 0
    load = os.getloadavg()
    off, on = (sum(v) / len(v) for v in seconds.values())
    lines = [
        "# Evaluation throughput: per-example early exit off vs on (CPU protocol)",
        "",
        f"{args.subnets} bignas-small subnets (seed 11) of a mnist5k supernet trained {args.epochs} epoch(s) "
        f"(quick recipe), scored on the study's CPU protocol ({P.description}), torch threads "
        f"{torch.get_num_threads()}, the two paths interleaved subnet by subnet. Load average during the run: "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on a shared 2-core machine: read the ratio, not the seconds.",
        "",
        "| path | " + " | ".join(f"subnet {i + 1} s" for i in range(args.subnets)) + " | mean s | subnets/hour |",
        "|---|" + "---:|" * (args.subnets + 2),
        *(f"| {p} | " + " | ".join(f"{x:.1f}" for x in v) + f" | {sum(v) / len(v):.1f} | {3600 * len(v) / sum(v):.0f} |"
          for p, v in seconds.items()),
        "",
        f"- speed-up (off / on): **{off / on:.2f}x**",
        f"- stored numbers identical between the two paths: **{'yes' if same else 'NO'}** ({len(a)} vs {len(b)} records)",
        "",
        f"Produced by `python benchmarks/eval_throughput.py {' '.join(sys.argv[1:])}`.",
    ]
    emit(lines, args.out)
    if not same:
        sys.exit("stored numbers differ between the two paths")


if __name__ == "__main__":
    main()
