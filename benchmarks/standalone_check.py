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
    from nasrobust.study import FINETUNE, Study, StudyConfig

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
        t0 = time.perf_counter()
        ckpts = study.standalone(data, archs)
        both = time.perf_counter() - t0
        for suffix in ("", "-wal", "-shm"):
            study.db.with_name(study.db.name + suffix).unlink(missing_ok=True)
        t0 = time.perf_counter()
        study.standalone(data, archs)
        score = time.perf_counter() - t0
        encodings = [checkpoint.meta_of(checkpoint.read(c)).arch for c in ckpts]
    load = os.getloadavg()
    n = len(ckpts)
    lines = ["# Stand-alone check: cost per subnet (CPU protocol)", "",
             f"`python benchmarks/standalone_check.py --supernet <bignas-small mnist5k supernet> --n {args.n}`: "
             f"`Study.standalone` on {n} subnet(s) ({', '.join(f'`{e}`' for e in encodings)}), fine-tuned from the "
             f"supernet ({FINETUNE}, precise BN) and scored on every suite with the CPU protocol "
             f"({study.config.n_examples} test images), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
             f"in one process. Load average during the run: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
             "(shared 2-core machine; absolute seconds are under that load).", "",
             "| | seconds per subnet |", "|---|---|",
             f"| fine-tune + score | {both / n:.1f} |",
             f"| score only (fine-tune reused) | {score / n:.1f} |",
             f"| fine-tune (difference) | {(both - score) / n:.1f} |", ""]
    Path(args.md).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
