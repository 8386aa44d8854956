"""Differentiable robust search on nb201 / mnist5k: DARTS vs DSRNA-Jacobian vs DSRNA-CB vs random search.

For each seed, every method searches with the **same budget: the same number of supernet weight
steps** on the same data (the first ``N_TRAIN`` mnist5k training images, halved into weight and
architecture batches; the random baseline trains its supernet single-path on uniformly drawn
architectures for the same steps -- random search with weight sharing, Li & Talwalkar, UAI 2019 --
and picks the best of ``RS_CANDIDATES`` uniform architectures by BN-re-calibrated validation
accuracy on the architecture half). Each found architecture is re-trained stand-alone with one
recipe (``train_standalone``, ``BUILD`` sizes) and scored by the Evaluator: clean accuracy, PGD-Linf
at eps 0.1 (20 steps), and the natural suite's mCE against a fixed reference (the random-search
architecture of seed 0; stated in the .md). Results go to ``OUT/results.json``; every finished
search, training and evaluation is skipped on rerun (the script is resumable).

    python benchmarks/robust_search_nb201.py --out bench_out/robust_search --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nasrobust.data import load_dataset, stack
from nasrobust.search import create_searcher
from nasrobust.space import decode, get_space

log = logging.getLogger("robust_search_nb201")

N_TRAIN = 1000
SEARCH = dict(channels=8, cells_per_stage=1, n_train=N_TRAIN, batch_size=64, warmup_epochs=2, a_lr=3e-3,
              n_score=250, recalib_images=250)
EPOCHS = 6
METHODS = ("darts", "dsrna-jacobian", "dsrna-cb")
RS_CANDIDATES = 20
BUILD = {"channels": 8, "cells_per_stage": 1}
N_EVAL = 300
CORRUPTION_SEVERITIES = (1, 3, 5)


def search_diff(method: str, seed: int, out: Path) -> dict:
    extra = {"cb_eps": 0.01} if method == "dsrna-cb" else {}
    s = create_searcher(method, "nb201", None, budget=EPOCHS, seed=seed, **SEARCH, **extra)
    t0 = time.perf_counter()
    r = s.run(out / f"{method}_s{seed}.pt")
    return {"encoding": r.best.encoding, "values": list(r.best.values), "search_seconds": time.perf_counter() - t0}


def search_random_ws(seed: int) -> dict:
    """Random search with weight sharing: single-path training on uniform archs, same weight steps."""
    from nasrobust.diffsearch import DiffOptions, build_search_model
    from nasrobust.supernet import recalibrate_bn

    t0 = time.perf_counter()
    space = get_space("nb201")
    data = load_dataset("mnist5k")
    x, y = stack(data.train)
    x, y = x[:N_TRAIN], y[:N_TRAIN]
    half = N_TRAIN // 2
    xw, yw, xa, ya = x[:half], y[:half], x[half:2 * half], y[half:2 * half]
    opts = DiffOptions(**SEARCH)
    torch.manual_seed(seed)
    model = build_search_model(space, opts, 10, data.info.image_size, data.info.mean, data.info.std, alpha_seed=seed)
    rng = np.random.default_rng(seed)
    weights = model.supernet.weight_parameters()
    opt = torch.optim.SGD(weights, lr=opts.w_lr, momentum=opts.w_momentum, weight_decay=opts.w_weight_decay)
    from nasrobust.diffsearch import cosine_lr

    for epoch in range(EPOCHS):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(epoch, EPOCHS, opts.w_lr, opts.w_lr_min)
        perm = torch.randperm(half, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        model.train()
        for i in range(half // opts.batch_size):
            idx = perm[i * opts.batch_size:(i + 1) * opts.batch_size]
            model.set_active(space.arch(space.random_genome(rng)))
            loss = F.cross_entropy(model(xw[idx]), yw[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(weights, opts.grad_clip)
            opt.step()
    best = None
    for _ in range(RS_CANDIDATES):
        arch = space.arch(space.random_genome(rng))
        m = copy.deepcopy(model)
        m.set_active(arch)
        recalibrate_bn(m, xw[:250].split(64))
        m.eval()
        with torch.no_grad():
            acc = float((m(xa[:250]).argmax(1) == ya[:250]).float().mean())
        if best is None or acc > best[1]:
            best = (arch.encoding, acc)
    return {"encoding": best[0], "values": [best[1]], "search_seconds": time.perf_counter() - t0}


def retrain(encoding: str, out: Path, data, epochs: int):
    """Stand-alone training of ``encoding`` with the one recipe (seed 0); resumes / skips a finished run."""
    from nasrobust.train.api import train_standalone
    from nasrobust.train.recipe import get_preset

    recipe = get_preset("quick").replace(epochs=epochs, seed=0)
    folder = out / "train" / encoding.replace("|", "_").replace(":", "_").replace("~", "-")
    return train_standalone("nb201", decode(encoding), data, recipe, folder, progress=False, build_kwargs=BUILD)


def evaluate(encoding: str, trained, out: Path, store, data, reference) -> dict:
    """Clean, PGD-20 and natural-suite scores of a re-trained architecture (mCE against ``reference``)."""
    from nasrobust import checkpoint
    from nasrobust.evaluator import Evaluator, make_suites

    arch = decode(encoding)
    model, _ = checkpoint.load_model(trained.checkpoint)
    suites = make_suites(["adversarial", "natural"], {
        "adversarial": {"attacks": "pgd_linf", "eps_linf": 0.1, "steps": 20},
        "natural": {"severities": CORRUPTION_SEVERITIES, "fp_kinds": ()},
    })
    ev = Evaluator(store, data, suites, n_examples=N_EVAL, reference=reference, progress=False,
                   cache_dir=out / "cache")
    ev.evaluate(model, arch, trained.weights_id)
    rows = {(r.key.suite, r.key.noise, r.key.metric): r.value for r in store.query(arch, weights_id=trained.weights_id)}
    return {"weights_id": trained.weights_id,
            "clean": rows.get(("adversarial", "clean", "accuracy")),
            "pgd_linf_0.1": rows.get(("adversarial", "pgd_linf", "accuracy")),
            "mce": rows.get(("natural", "mce", "mce")),
            "corruption_acc": rows.get(("natural", "mean_corruption", "accuracy"))}


def summary_markdown(results: dict, seeds: list[int]) -> list[str]:
    """Per-method mean, sample std and range over seeds, then every seed's architecture and scores."""
    metrics = [("clean", "clean acc"), ("pgd_linf_0.1", "PGD-20 acc @0.1"), ("corruption_acc", "corruption acc"),
               ("mce", "mCE")]
    lines = ["| method | seeds | " + " | ".join(f"{label} mean ± std [min, max]" for _, label in metrics)
             + " | search s (mean) |", "|---|---|" + "---|" * len(metrics) + "---|"]
    for method in ("random",) + METHODS:
        done = [results[k] for k in (f"{method}/s{s}" for s in seeds) if k in results and "eval" in results[k]]
        if not done:
            continue
        cells = []
        for key, _ in metrics:
            v = np.array([d["eval"][key] for d in done if d["eval"].get(key) is not None], dtype=float)
            sd = f"{v.std(ddof=1):.3f}" if len(v) > 1 else "-"
            cells.append(f"{v.mean():.3f} ± {sd} [{v.min():.3f}, {v.max():.3f}]" if len(v) else "-")
        secs = np.mean([d["search"]["search_seconds"] for d in done])
        lines.append(f"| {method} | {len(done)} | " + " | ".join(cells) + f" | {secs:.0f} |")
    lines += ["", "| method | seed | architecture | clean | PGD-20 @0.1 | corruption acc | mCE |", "|---|---|---|---|---|---|---|"]
    for method in ("random",) + METHODS:
        for seed in seeds:
            r = results.get(f"{method}/s{seed}", {})
            if "eval" not in r:
                continue
            e = r["eval"]
            fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
            lines.append(f"| {method} | {seed} | `{r['search']['encoding']}` | {fmt(e['clean'])} | {fmt(e['pgd_linf_0.1'])} "
                         f"| {fmt(e['corruption_acc'])} | {fmt(e['mce'])} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench_out/robust_search_nb201")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-epochs", type=int, default=3)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}

    def save() -> None:
        path.write_text(json.dumps(results, indent=2))

    for seed in args.seeds:
        for method in ("random",) + METHODS:
            key = f"{method}/s{seed}"
            if key in results and "search" in results[key]:
                continue
            log.info("search %s", key)
            found = search_random_ws(seed) if method == "random" else search_diff(method, seed, out)
            results[key] = {"search": found}
            save()
    from nasrobust.evaluator import Reference
    from nasrobust.store import open_results

    data = load_dataset("mnist5k")
    store = open_results(out / "results.db", create=True)
    ref_key = f"random/s{args.seeds[0]}"
    order = [ref_key] + [k for k in results if k != ref_key]
    reference = None
    for key in order:
        if key != ref_key and "eval" in results[key]:
            continue  # done; the reference is always revisited for its weights id
        encoding = results[key]["search"]["encoding"]
        t0 = time.perf_counter()
        trained = retrain(encoding, out, data, args.train_epochs)
        if key == ref_key:  # the reference is scored against itself (mCE 1), like every other architecture
            reference = Reference(encoding, trained.weights_id)
        if "eval" not in results[key]:
            log.info("evaluate %s (%s)", key, encoding)
            results[key]["eval"] = evaluate(encoding, trained, out, store, data, reference)
            results[key]["eval"]["seconds"] = time.perf_counter() - t0
            save()
    print("\n".join(summary_markdown(results, args.seeds)))


if __name__ == "__main__":
    main()
