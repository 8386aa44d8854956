"""Cost of the study's stand-alone check per subnet on the CPU protocol: fine-tune + score.

Runs :meth:`nasrobust.study.Study.standalone` for ``--n`` subnets of a bignas-small study on mnist5k whose
supernet is copied from ``--supernet`` (any finished bignas-small mnist5k supernet), first in full (fine-tune and
score), then again with the store removed (fine-tunes reused: scoring only). Fine-tune time = the difference.

    OMP_NUM_THREADS=1 python benchmarks/standalone_check.py --supernet SUPERNET/checkpoint.pt [--md ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--supernet", required=True, help="checkpoint.pt of a finished bignas-small mnist5k supernet")
    ap.add_argument("--n", type=int, default=1, help="subnets checked")
    ap.add_argument("--md", default=str(Path(__file__).with_name("standalone_check.md")))
    args = ap.parse_args()
    from nasrobust import checkpoint
    from nasrobust.data import load_dataset
    from nasrobust.study import FINETUNE, Study, StudyConfig, standalone_indices

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "study"
        study = Study(StudyConfig(space="bignas", n=100, dataset="mnist5k", out=str(out), replicates=1,
                                  standalone_check=args.n, cache_dir=str(Path(tmp) / "cache")), progress=False)
        study._write_config()
        target = checkpoint.checkpoint_path(study.supernet_dir)
        target.parent.mkdir(parents=True)
        shutil.copy(args.supernet, target)
        data = load_dataset("mnist5k")
        archs = study.sample(data)[: study.config.eval_archs]
        c = study.config
        timings: dict[str, tuple[float, float]] = {}

        def timed(name: str, fn):
            w, p = time.perf_counter(), time.process_time()
            result = fn()
            timings[name] = (time.perf_counter() - w, time.process_time() - p)
            return result

        def clear_store() -> None:
            for suffix in ("", "-wal", "-shm"):
                study.db.with_name(study.db.name + suffix).unlink(missing_ok=True)

        def from_supernet() -> None:  # the same subnets scored from the supernet (BN re-calibrated), as the study does
            from nasrobust.evaluation import evaluate

            for i in standalone_indices(len(archs), args.n):
                evaluate(target, db=study.db, suites=c.suites, protocol=c.eval_protocol(), archs=[archs[i]],
                         data=data, reference=None, cache_dir=c.cache_dir)

        timed("supernet subnet: score (cold cache: builds the perturbed-data cache)", from_supernet)
        clear_store()
        ckpts = timed("stand-alone: fine-tune + score", lambda: study.standalone(data, archs))
        clear_store()
        timed("stand-alone: score only (fine-tune reused)", lambda: study.standalone(data, archs))
        clear_store()
        timed("supernet subnet: score (warm cache)", from_supernet)
        encodings = [checkpoint.meta_of(checkpoint.read(p)).arch for p in ckpts]
    load = os.getloadavg()
    n = len(ckpts)
    lines = ["# Stand-alone check: cost per subnet (CPU protocol)", "",
             f"`python benchmarks/standalone_check.py --supernet <bignas-small mnist5k supernet> --n {args.n}`: "
             f"`Study.standalone` on {n} subnet(s) ({', '.join(f'`{e}`' for e in encodings)}), fine-tuned from the "
             f"supernet ({FINETUNE}, precise BN) and scored on every suite with the CPU protocol "
             f"({study.config.n_examples} test images), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
             f"in one process. Load average during the run: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
             "(shared 2-core machine; absolute seconds are under that load, compare the ratios).", "",
             "| step | wall s per subnet | CPU s per subnet (this process) |", "|---|---|---|",
             *(f"| {k} | {w / n:.1f} | {p / n:.1f} |" for k, (w, p) in timings.items())]
    both, score = timings["stand-alone: fine-tune + score"], timings["stand-alone: score only (fine-tune reused)"]
    sup = timings["supernet subnet: score (warm cache)"]
    lines += ["", f"Fine-tune alone (difference): {(both[0] - score[0]) / n:.1f} s wall, {(both[1] - score[1]) / n:.1f} "
              f"s CPU per subnet. Stand-alone check (fine-tune + score) / one supernet subnet's score, side by side "
              f"in this run: {both[0] / sup[0]:.2f}x wall, {both[1] / sup[1]:.2f}x CPU. Stand-alone scoring has no "
              "mCE reference here (the supernet's largest subnet is not scored), so its natural suite skips CE/mCE.", ""]
    Path(args.md).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
