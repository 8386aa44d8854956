"""Where an all-suite evaluation spends its time: model forward/backward vs everything else.

Scores ``--n-archs`` subnets of a trained supernet on all four suites (the study's CPU protocol,
``nasrobust.study.CPU_PROTOCOL``) and times, with the same clock, (1) the whole evaluation and (2)
every call of the model's ``forward`` plus every autograd backward (``torch.autograd.grad`` and
``Tensor.backward``, which is how the attacks and bounds take gradients). Nested calls are
counted once. BN re-calibration is model forward work too and is counted as such. Target (the
evaluator issue): >= 80% of the wall time in forward/backward.

    python benchmarks/eval_profile.py --supernet runs/supernet [--n-archs 5] [--md benchmarks/eval_profile.md]
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import torch

from _report import emit
from nasrobust import checkpoint
from nasrobust.data import load_dataset
from nasrobust.evaluator import Evaluator, Reference, make_suites
from nasrobust.store import open_results
from nasrobust.study import CPU_PROTOCOL as P


class Clock:
    """Accumulates time spent inside wrapped calls; re-entrant calls count once."""

    def __init__(self):
        self.seconds, self.depth, self.t0 = 0.0, 0, 0.0

    def wrap(self, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if self.depth == 0:
                self.t0 = time.perf_counter()
            self.depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1
                if self.depth == 0:
                    self.seconds += time.perf_counter() - self.t0
        return timed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--supernet", required=True)
    ap.add_argument("--n-archs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--md", default=str(Path(__file__).with_name("eval_profile.md")))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, payload = checkpoint.load_supernet(args.supernet)
    wid = payload["weights_id"]
    data = load_dataset("mnist5k")
    space = model.supernet.space
    archs = space.sample(args.n_archs, seed=7)

    clock = Clock()
    torch.autograd.grad = clock.wrap(torch.autograd.grad)
    torch.Tensor.backward = clock.wrap(torch.Tensor.backward)
    forward = type(model).forward
    type(model).forward = clock.wrap(forward)  # the supernet during BN re-calibration
    from nasrobust.models import ImageClassifier

    ImageClassifier.forward = clock.wrap(ImageClassifier.forward)  # every extracted subnet

    suites = make_suites(("adversarial", "natural", "system", "certified"), {k: dict(v) for k, v in P.suite_options.items()})
    with tempfile.TemporaryDirectory() as tmp, open_results(Path(tmp) / "r.db", create=True) as store:
        ev = Evaluator(store, data, suites, n_examples=P.n_examples, recalib_images=P.recalib_images,
                       reference=Reference(archs[0].encoding, wid), progress=False, cache_dir=Path(tmp) / "cache")
        # model-independent data (corruptions, decoded images) is made once per dataset and
        # cached; prepare it first so the measured loop is the per-architecture cost
        for s in suites:
            s.prepare(ev.ctx)
            ev._prepared.add(s.name)
        t0 = time.perf_counter()
        clock.seconds = 0.0
        ev.evaluate_supernet(model, archs, wid)
        wall = time.perf_counter() - t0
    frac = clock.seconds / wall
    lines = [
        "# All-suite evaluation: share of wall time in model forward/backward",
        "",
        f"{args.n_archs} bignas-small subnets of the mnist5k supernet `{wid}`, the study's CPU protocol "
        f"({P.description}), {args.threads} torch thread(s). Model-independent data prepared (and cached) first.",
        "",
        f"- wall time of the evaluation loop: {wall:.1f} s ({wall / args.n_archs:.1f} s per subnet)",
        f"- inside model forward / autograd backward: {clock.seconds:.1f} s",
        f"- **share: {frac:.1%}** (target >= 80%: {'yes' if frac >= 0.8 else '**no**'})",
        "",
        "The rest is BN re-calibration bookkeeping, subnet extraction, corrupted/decoded image "
        "loading from the cache, bound bisection logic, store writes and Python.",
        "",
        f"Produced by `python benchmarks/eval_profile.py --supernet <mnist5k supernet> --n-archs {args.n_archs}`.",
    ]
    emit(lines, args.md)


if __name__ == "__main__":
    main()
