"""PGD-20 throughput: the adversarial suite's PGD path vs a bare torchattacks ``PGD`` loop.

Same model, same inputs, same attack (Linf eps, 20 steps of eps/4, random start), same batch
size, one torch thread. Two input sets:

* ``all-correct`` -- images the model classifies correctly, so both sides attack every image
  and the ratio measures only the suite's overhead (clean prediction pass, seeding with
  ``fork_rng``, frozen parameters, budget checks, bookkeeping);
* ``raw`` -- the first test images as they come; the suite attacks only the clean-correct ones
  (misclassified ones are broken already), the bare loop attacks all of them.

"ours" times :func:`~nasrobust.noise.attacks.predict_labels` + :func:`~nasrobust.noise.adversarial.attack_run`
(what ``AdversarialSuite.run`` does per PGD run), reported twice: with the clean prediction
pass counted, and with it shared (in the suite one clean pass serves every attack run); "bare" is ``for batch: adv = PGD(...)(x, y); model(adv).argmax()``.
Images/s = input images / wall time; median of ``--repeats`` alternating repeats.

    python benchmarks/pgd_bench.py --out benchmarks/pgd.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit  # noqa: E402
from autoattack_check import ARCH, train_small_mnist_model  # noqa: E402  (the same small MNIST network)

from nasrobust.data import stack  # noqa: E402
from nasrobust.noise import attacks as A  # noqa: E402
from nasrobust.noise.adversarial import attack_run  # noqa: E402


def clean_pass(model, x, y, batch_size) -> torch.Tensor:
    return A.predict_labels(model, x, torch.device("cpu"), batch_size) == y


def ours(model, x, y, eps, steps, batch_size, correct=None) -> float:
    correct = clean_pass(model, x, y, batch_size) if correct is None else correct
    res = attack_run(model, x, y, correct, "pgd_linf", eps, device=torch.device("cpu"), batch_size=batch_size, seed=0,
                     settings=A.AttackSettings(steps=steps))
    return float(res.robust.double().mean())


def ours_shared_clean(model, x, y, eps, steps, batch_size) -> float:
    """The suite's per-run cost: the clean pass is computed once per model for all runs (given here)."""
    return ours(model, x, y, eps, steps, batch_size, correct=SHARED[id(x)])


SHARED: dict[int, torch.Tensor] = {}


def bare(model, x, y, eps, steps, batch_size) -> float:
    import torchattacks

    atk = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=steps, random_start=True)
    right = 0
    for i in range(0, len(x), batch_size):
        adv = atk(x[i:i + batch_size], y[i:i + batch_size])
        with torch.no_grad():
            right += int((model(adv).argmax(1) == y[i:i + batch_size]).sum())
    return right / len(x)


def measure(fn, model, x, y, args) -> tuple[float, float]:
    t0 = time.perf_counter()
    acc = fn(model, x, y, args.eps, args.steps, args.batch_size)
    return len(x) / (time.perf_counter() - t0), acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--eps", type=float, default=0.03)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)

    model, data = train_small_mnist_model()
    xt, yt = stack(data.test)
    pred = A.predict_labels(model, xt, torch.device("cpu"), 500)
    ok = (pred == yt).nonzero().flatten()[:args.n]
    sets = {"all-correct": (xt[ok], yt[ok]), "raw": (xt[:args.n], yt[:args.n])}
    loads = [os.getloadavg()[0]]
    rows = []
    for name, (x, y) in sets.items():
        SHARED[id(x)] = clean_pass(model, x, y, args.batch_size)
        measure(ours, model, x[:args.batch_size], y[:args.batch_size], args)  # warm-up (imports, allocator)
        measure(bare, model, x[:args.batch_size], y[:args.batch_size], args)
        o, s, b = [], [], []
        for _ in range(args.repeats):
            o.append(measure(ours, model, x, y, args))
            s.append(measure(ours_shared_clean, model, x, y, args))
            b.append(measure(bare, model, x, y, args))
            loads.append(os.getloadavg()[0])
        mo, ms, mb = (statistics.median(r for r, _ in v) for v in (o, s, b))
        rows.append((name, len(x), float(SHARED[id(x)].double().mean()), mo, ms, mb, o[0][1], b[0][1],
                     [r for r, _ in o], [r for r, _ in s], [r for r, _ in b]))
    lines = [
        "# PGD-20 throughput: suite path vs bare torchattacks loop",
        "",
        f"Model: NB201 `{ARCH}` (4 channels, 1 cell/stage, 16 px inside `ImageClassifier`), trained 2 epochs on mnist5k.",
        f"Linf eps {args.eps:g}, {args.steps} steps of eps/4, random start; batch {args.batch_size}; 1 torch thread; "
        f"CPU {platform.processor() or platform.machine()}; median of {args.repeats} alternating repeats.",
        f"Shared machine (2 cores, other engineers' jobs running): 1-min load average during the run "
        f"{min(loads):.2f}-{max(loads):.2f}, so absolute rates are noisy; the ratio compares runs interleaved in time.",
        "",
        "| inputs | n | clean acc | ours img/s (with clean pass) | ours img/s (clean pass shared) | bare img/s "
        "| ours / bare (with) | ours / bare (shared) | robust acc ours | robust acc bare |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, n, clean, mo, ms, mb, ao, ab, *_ in rows:
        lines.append(f"| {name} | {n} | {clean:.3f} | {mo:.1f} | {ms:.1f} | {mb:.1f} | **{mo / mb:.3f}x** | **{ms / mb:.3f}x** "
                     f"| {ao:.3f} | {ab:.3f} |")
    lines += ["", "Raw repeats (img/s):", ""]
    for name, *_, ro, rs, rb in rows:
        fmt = lambda v: ", ".join(f"{r:.1f}" for r in v)  # noqa: E731
        lines.append(f"- {name}: ours (with clean pass) {fmt(ro)}; ours (shared) {fmt(rs)}; bare {fmt(rb)}")
    lines += ["", "Target (DESIGN.md): ours / bare >= 0.95 on the all-correct inputs.", "",
              f"Reproduce: `python benchmarks/pgd_bench.py --n {args.n} --eps {args.eps:g} --repeats {args.repeats}`"]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
