"""Differentiable robust search on nb201 / mnist5k: DARTS vs DSRNA-Jacobian vs DSRNA-CB vs random search.

For each seed, every method searches with the **same budget: the same number of supernet weight
steps** on the same data (the first ``--search-images`` mnist5k training images, halved into weight and
architecture batches; ``--search-epochs`` epochs, of which the first ``--warmup-epochs`` train the weights only,
so the differentiable methods also make the same alpha steps; the random baseline trains its supernet single-path
on uniformly drawn architectures for the same steps -- random search with weight sharing, Li & Talwalkar, UAI 2019 --
and picks the best of ``RS_CANDIDATES`` uniform architectures by BN-re-calibrated validation
accuracy on the architecture half). Each found architecture is re-trained stand-alone with one
recipe (``train_standalone``, ``BUILD`` sizes, ``--train-epochs``) and scored by the Evaluator on the
first ``N_EVAL`` test images: clean accuracy, PGD-Linf at eps 0.1 (20 steps), the continuous metrics
of the study's CPU protocol -- the median min-norm Linf radius (adversarial suite, ``minnorm_linf``)
and the crown-zono certified Linf radius distribution on the first ``--cert-images`` images
(certified suite) -- and the natural suite's mCE against a fixed reference (the random-search
architecture of the first seed). The summary pairs DSRNA-{CB, Jacobian} with DARTS and random per
seed (exact sign-flip p). Results go to ``OUT/results.json``; every finished search, training and
evaluation is skipped on rerun (the script is resumable; a rerun with other search or scoring options fails).
Each differentiable search also records its per-epoch trajectory, the final alphas' op ranking per edge and how
far the alphas moved from uniform (``alpha_movement``). ``--a-lr`` sets the differentiable methods' alpha lr; runs at
another lr than the default live beside the default ones in the same OUT, as ``METHOD@alrA_LR`` (``run_label``), and
share its random-search runs (random search has no alphas).

    OMP_NUM_THREADS=1 python benchmarks/robust_search_nb201.py --out bench_out/robust_search --seeds 0 1 2 \
        --search-epochs 18 --warmup-epochs 16
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nasrobust.data import load_dataset, stack
from nasrobust.search import create_searcher
from nasrobust.space import decode, get_space
from nasrobust.spaces.nb201 import OP_NAMES

log = logging.getLogger("robust_search_nb201")

N_TRAIN = 1000  # search images (--search-images): half for the weights, half for the alphas
SEARCH = dict(channels=8, cells_per_stage=1, batch_size=64, a_lr=3e-3, n_score=250, recalib_images=250)
EPOCHS = 6  # search epochs (--search-epochs), warm-up included
WARMUP = 2  # weights-only epochs before the alpha updates (--warmup-epochs)
CB_EPS = 0.01  # DSRNA-CB's CROWN-IBP margin radius (--cb-eps)
# dsrna-cb-zono: DSRNA-CB with a tight bound. CROWN-IBP's margin bound is vacuous on the trained supernet at every
# eps (see the md), crown-zono is not but costs seconds an image, so it bounds the first CB_TIGHT_EXAMPLES images
# of each architecture batch, at an eps where most of the trained supernet's margins are certified.
METHODS = ("darts", "dsrna-jacobian", "dsrna-cb", "dsrna-cb-zono")
CB_TIGHT_EPS, CB_TIGHT_EXAMPLES = 0.001, 2
A_LR = SEARCH["a_lr"]  # the alpha (Adam) lr of every differentiable method unless --a-lr says otherwise
RS_CANDIDATES = 20
BUILD = {"channels": 8, "cells_per_stage": 1}
N_EVAL = 300
CERT_IMAGES = 5  # crown-zono ~12 s per image on an nb201 cell (robust_search_nb201.md)
CORRUPTION_SEVERITIES = (1, 3, 5)


def search_settings(epochs: int = EPOCHS, warmup: int = WARMUP, images: int = N_TRAIN, cb_eps: float = CB_EPS) -> dict:
    """What makes two runs the same searches (recorded in ``results.json``; a rerun with others is refused)."""
    return {"search_epochs": epochs, "warmup_epochs": warmup, "search_images": images, "cb_eps": cb_eps,
            "cb_zono": {"eps": CB_TIGHT_EPS, "examples": CB_TIGHT_EXAMPLES}}


def alpha_ranking(state: Path, ops: tuple[str, ...]) -> list[list[tuple[str, float]]]:
    """Per edge, the operations of the final alphas in a search's state file, by ``softmax(alpha)``, highest first."""
    model = torch.load(state, map_location="cpu", weights_only=False)["model"]
    out = []
    for key in sorted(k for k in model if "arch_params" in k):
        for row in torch.as_tensor(model[key]).reshape(-1, len(ops)).softmax(-1).tolist():
            # sorted on the exact weights, rounded after: the top op is the one the derivation picks
            out.append([(op, round(w, 4)) for op, w in sorted(zip(ops, row), key=lambda t: -t[1])])
    return out


def run_label(method: str, a_lr: float = A_LR) -> str:
    """The name of ``method``'s runs at alpha lr ``a_lr`` in ``results.json`` (``LABEL/sSEED``) and its state files
    (``LABEL_sSEED.pt``): the method's name at the default ``A_LR`` (the runs made before ``--a-lr`` existed keep
    their keys), ``METHOD@alrA_LR`` otherwise; random search has no alphas, so its runs serve every ``a_lr``."""
    return method if method == "random" or a_lr == A_LR else f"{method}@alr{a_lr:g}"


def alpha_movement(ranking: list[list[tuple[str, float]]]) -> dict[str, float]:
    """How far a search moved its alphas from uniform: the largest ``softmax(alpha)`` weight of each edge (its
    derived op's; ``1 / n_ops`` when uniform), averaged and maximised over the edges (from ``alpha_ranking``)."""
    top = [edge[0][1] for edge in ranking]
    return {"max_softmax_mean": float(np.mean(top)), "max_softmax_max": float(max(top))}


def search_diff(method: str, seed: int, out: Path, settings: dict, a_lr: float = A_LR) -> dict:
    extra = {"dsrna-cb": {"cb_eps": settings["cb_eps"]},
             "dsrna-cb-zono": {"cb_eps": settings["cb_zono"]["eps"], "bound_method": "crown-zono",
                               "cb_examples": settings["cb_zono"]["examples"]}}.get(method, {})
    s = create_searcher("dsrna-cb" if method == "dsrna-cb-zono" else method, "nb201", None, budget=settings["search_epochs"], seed=seed, **(SEARCH | {"a_lr": a_lr}),
                        n_train=settings["search_images"], warmup_epochs=settings["warmup_epochs"], **extra)
    t0 = time.perf_counter()
    state = out / f"{run_label(method, a_lr)}_s{seed}.pt"
    r = s.run(state)
    found = {"encoding": r.best.encoding, "values": list(r.best.values), "search_seconds": time.perf_counter() - t0,
             "trajectory": [list(e.values) for e in r.trajectory], "a_lr": a_lr}
    found["alpha_ranking"] = alpha_ranking(state, OP_NAMES)
    found["alpha_movement"] = alpha_movement(found["alpha_ranking"])
    return found


def search_random_ws(seed: int, settings: dict) -> dict:
    """Random search with weight sharing: single-path training on uniform archs, same weight steps."""
    from nasrobust.diffsearch import DiffOptions, build_search_model
    from nasrobust.supernet import recalibrate_bn

    t0 = time.perf_counter()
    space = get_space("nb201")
    data = load_dataset("mnist5k")
    x, y = stack(data.train)
    n_train, epochs = settings["search_images"], settings["search_epochs"]
    x, y = x[:n_train], y[:n_train]
    half = n_train // 2
    xw, yw, xa, ya = x[:half], y[:half], x[half:2 * half], y[half:2 * half]
    opts = DiffOptions(**SEARCH, n_train=n_train)
    torch.manual_seed(seed)
    model = build_search_model(space, opts, 10, data.info.image_size, data.info.mean, data.info.std, alpha_seed=seed)
    rng = np.random.default_rng(seed)
    weights = model.supernet.weight_parameters()
    opt = torch.optim.SGD(weights, lr=opts.w_lr, momentum=opts.w_momentum, weight_decay=opts.w_weight_decay)
    from nasrobust.diffsearch import cosine_lr

    for epoch in range(epochs):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(epoch, epochs, opts.w_lr, opts.w_lr_min)
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
    folder = out / f"train_e{epochs}" / encoding.replace("|", "_").replace(":", "_").replace("~", "-")
    return train_standalone("nb201", decode(encoding), data, recipe, folder, progress=False, build_kwargs=BUILD)


def suite_options(cert_images: int) -> dict[str, dict]:
    """The scoring protocol: PGD-20 at eps 0.1 plus the CPU protocol's continuous metrics (min-norm Linf radius;
    crown-zono certified Linf radius on the first ``cert_images`` test images) and the natural suite."""
    from nasrobust.noise.adversarial import AdversarialSuite
    from nasrobust.noise.certified import CertifiedSuite

    adversarial = dict(AdversarialSuite.cpu_options)  # minnorm_rounds 10, its radius grid
    adversarial.update(attacks=("pgd_linf", "minnorm_linf"), eps_linf=(0.1,), steps=20)
    certified = dict(CertifiedSuite.cpu_options)  # crown-zono, Linf, rtol 0.25, eps 0.003, its radius grid
    certified.update(n_examples=cert_images)
    return {"adversarial": adversarial, "certified": certified,
            "natural": {"severities": CORRUPTION_SEVERITIES, "fp_kinds": ()}}


def evaluate(encoding: str, trained, out: Path, store, data, reference, cert_images: int) -> dict:
    """Clean, PGD-20, min-norm radius, certified radius and natural-suite scores of a re-trained architecture
    (mCE against ``reference``); the seconds each suite took."""
    from nasrobust import checkpoint
    from nasrobust.evaluator import Evaluator, make_suites

    arch = decode(encoding)
    model, _ = checkpoint.load_model(trained.checkpoint)
    options = suite_options(cert_images)
    seconds = {}
    for name in ("adversarial", "certified", "natural"):  # one Evaluator per suite: each suite's time on its own
        t0 = time.perf_counter()
        ev = Evaluator(store, data, make_suites([name], options), n_examples=N_EVAL, reference=reference,
                       progress=False, cache_dir=out / "cache")
        ev.evaluate(model, arch, trained.weights_id)
        seconds[name] = time.perf_counter() - t0
    rows = {(r.key.suite, r.key.noise, r.key.level, r.key.metric): r.value
            for r in store.query(arch, weights_id=trained.weights_id)}

    def get(suite: str, noise: str, metric: str, level: float = 0.0) -> float | None:
        v = rows.get((suite, noise, level, metric))
        return None if v is None else float(v)

    mn, cz = "minnorm_linf", "crown-zono_linf"
    return {"weights_id": trained.weights_id,
            "clean": get("adversarial", "clean", "accuracy"),
            "pgd_linf_0.1": get("adversarial", "pgd_linf", "accuracy", 0.1),
            "minnorm_median": get("adversarial", mn, "radius_median"),
            "minnorm_q25": get("adversarial", mn, "radius_q25"),
            "minnorm_q75": get("adversarial", mn, "radius_q75"),
            "minnorm_median_correct": get("adversarial", mn, "radius_median_correct"),
            "cert_clean": get("certified", "clean", "accuracy"),
            "cert_median": get("certified", cz, "radius_median"),
            "cert_mean": get("certified", cz, "radius_mean"),
            "cert_q25": get("certified", cz, "radius_q25"),
            "cert_q75": get("certified", cz, "radius_q75"),
            "cert_acc_0.003": get("certified", cz, "certified_accuracy", 0.003),
            "mce": get("natural", "mce", "mce"),
            "corruption_acc": get("natural", "mean_corruption", "accuracy"),
            "suite_seconds": seconds}


def fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


METRICS = (("clean", "clean acc", 3), ("pgd_linf_0.1", "PGD-20 acc @0.1", 3),
           ("minnorm_median", "min-norm Linf radius (median)", 4), ("cert_median", "crown-zono Linf radius (median)", 5),
           ("cert_acc_0.003", "certified acc @0.003", 3), ("corruption_acc", "corruption acc", 3), ("mce", "mCE", 3))


def summary_markdown(results: dict, seeds: list[int], methods: tuple[str, ...] = ("random",) + METHODS) -> list[str]:
    """Per-method mean, sample std and range over seeds, then every seed's architecture and scores (``methods``:
    run labels, ``run_label``)."""
    lines = ["| method | seeds | " + " | ".join(f"{label} mean ± std [min, max]" for _, label, _ in METRICS)
             + " | search s (mean) |", "|---|---|" + "---|" * len(METRICS) + "---|"]
    for method in methods:
        done = [results[k] for k in (f"{method}/s{s}" for s in seeds) if k in results and "eval" in results[k]]
        if not done:
            continue
        cells = []
        for key, _, d in METRICS:
            v = np.array([r["eval"][key] for r in done if r["eval"].get(key) is not None], dtype=float)
            sd = fmt(v.std(ddof=1), d) if len(v) > 1 else "-"
            cells.append(f"{v.mean():.{d}f} ± {sd} [{v.min():.{d}f}, {v.max():.{d}f}]" if len(v) else "-")
        secs = np.mean([r["search"]["search_seconds"] for r in done])
        lines.append(f"| {method} | {len(done)} | " + " | ".join(cells) + f" | {secs:.0f} |")
    lines += ["", "| method | seed | architecture | " + " | ".join(label for _, label, _ in METRICS)
              + " | min-norm [q25, q75] | crown-zono [q25, q75] |", "|---|---|---|" + "---|" * (len(METRICS) + 2)]
    for method in methods:
        for seed in seeds:
            r = results.get(f"{method}/s{seed}", {})
            if "eval" not in r:
                continue
            e = r["eval"]
            lines.append(f"| {method} | {seed} | `{r['search']['encoding']}` | "
                         + " | ".join(fmt(e.get(k), d) for k, _, d in METRICS)
                         + f" | [{fmt(e.get('minnorm_q25'), 4)}, {fmt(e.get('minnorm_q75'), 4)}]"
                         f" | [{fmt(e.get('cert_q25'), 5)}, {fmt(e.get('cert_q75'), 5)}] |")
    return lines


def sign_flip_p(diffs: list[float]) -> float:
    """Exact one-sided paired permutation p of ``mean(diffs) > 0``: the share of the 2^n sign assignments whose
    mean is at least the observed one (n = 3 seeds: 8 assignments, so p >= 0.125 whatever the data)."""
    from itertools import product

    d = np.asarray(diffs, dtype=float)
    observed = d.mean()
    means = [float((d * np.array(signs)).mean()) for signs in product((1, -1), repeat=len(d))]
    return sum(m >= observed - 1e-15 for m in means) / len(means)


def paired(results: dict, seeds: list[int], key: str, a_lr: float = A_LR) -> list[dict]:
    """DSRNA-{CB, Jacobian} minus {DARTS, random} on ``key``, paired by seed (same data, same search budget); the
    differentiable methods' runs at alpha lr ``a_lr``."""
    out = []
    for method in (run_label(m, a_lr) for m in ("dsrna-cb", "dsrna-cb-zono", "dsrna-jacobian")):
        for base in (run_label("darts", a_lr), "random"):
            pairs = [(results[f"{method}/s{s}"]["eval"][key], results[f"{base}/s{s}"]["eval"][key]) for s in seeds
                     if "eval" in results.get(f"{method}/s{s}", {}) and "eval" in results.get(f"{base}/s{s}", {})]
            diffs = [a - b for a, b in pairs if a is not None and b is not None]
            if diffs:
                d = np.array(diffs)
                out.append({"method": method, "baseline": base, "diffs": diffs, "mean": float(d.mean()),
                            "std": float(d.std(ddof=1)) if len(d) > 1 else float("nan"),
                            "wins": int((d > 0).sum()), "ties": int((d == 0).sum()), "p": sign_flip_p(diffs)})
    return out


def paired_markdown(results: dict, seeds: list[int], a_lr: float = A_LR) -> list[str]:
    lines = ["| metric | comparison | per-seed difference | mean ± std | seeds higher / tied | one-sided sign-flip p |",
             "|---|---|---|---|---|---|"]
    for key, label, d in METRICS:
        if key not in ("cert_median", "minnorm_median", "cert_acc_0.003"):
            continue
        for c in paired(results, seeds, key, a_lr):
            lines.append(f"| {label} | {c['method']} - {c['baseline']} | "
                         + ", ".join(f"{x:+.{d}f}" for x in c["diffs"])
                         + f" | {c['mean']:+.{d}f} ± {fmt(c['std'] if len(c['diffs']) > 1 else None, d)} | {c['wins']} / {c['ties']} of "
                         f"{len(c['diffs'])} | {c['p']:.3f} |")
    return lines


SHORT_OPS = {"nor_conv_3x3": "conv3", "nor_conv_1x1": "conv1", "avg_pool_3x3": "pool", "skip_connect": "skip"}


def alpha_markdown(results: dict, seeds: list[int], methods: tuple[str, ...]) -> list[str]:
    """Per differentiable run: how far its alphas moved (``alpha_movement``) and its top op per edge (edges in
    encoding order)."""
    lines = ["| method | seed | max softmax weight per edge: mean | max | top op per edge (weight) |", "|---|---|---|---|---|"]
    for method in methods:
        for seed in seeds:
            ranking = results.get(f"{method}/s{seed}", {}).get("search", {}).get("alpha_ranking")
            if ranking:
                m = alpha_movement(ranking)
                tops = ", ".join(f"{SHORT_OPS.get(edge[0][0], edge[0][0])} {edge[0][1]:.3f}" for edge in ranking)
                lines.append(f"| {method} | {seed} | {m['max_softmax_mean']:.3f} | {m['max_softmax_max']:.3f} | {tops} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench_out/robust_search_nb201")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-epochs", type=int, default=10)
    p.add_argument("--cert-images", type=int, default=CERT_IMAGES,
                   help="test images of the crown-zono certified radius (the first N of the scored ones)")
    p.add_argument("--search-epochs", type=int, default=EPOCHS, help="search epochs, warm-up included")
    p.add_argument("--warmup-epochs", type=int, default=WARMUP, help="weights-only epochs before the alpha updates")
    p.add_argument("--search-images", type=int, default=N_TRAIN,
                   help="first N mnist5k training images of the search (half weights, half alphas)")
    p.add_argument("--cb-eps", type=float, default=CB_EPS, help="DSRNA-CB's CROWN-IBP margin radius (Linf)")
    p.add_argument("--a-lr", type=float, default=A_LR,
                   help="alpha (Adam) lr of every differentiable method; runs at another lr than the default are "
                        "kept apart in --out as METHOD@alrA_LR (random search has no alphas: its runs are shared)")
    p.add_argument("--methods", nargs="+", choices=("random",) + METHODS, default=list(("random",) + METHODS),
                   help="the methods to search (and then score); default all")
    p.add_argument("--search-only", action="store_true", help="stop after the searches (re-training and scoring later)")
    args = p.parse_args()
    if not args.a_lr > 0:
        p.error(f"--a-lr must be positive, got {args.a_lr}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    settings = {"train_epochs": args.train_epochs, "cert_images": args.cert_images, "n_eval": N_EVAL}
    searching = search_settings(args.search_epochs, args.warmup_epochs, args.search_images, args.cb_eps)
    for name, want in (("_search", searching), ("_settings", settings)):
        if results.get(name, want) != want:
            print(f"error: {path} was {'searched' if name == '_search' else 'scored'} with {results[name]}, not {want}; "
                  "pass those options or use another --out", file=sys.stderr)
            raise SystemExit(2)
    results["_search"] = searching

    def save() -> None:
        path.write_text(json.dumps(results, indent=2))

    for seed in args.seeds:
        for method in args.methods:
            key = f"{run_label(method, args.a_lr)}/s{seed}"
            if key in results and "search" in results[key]:
                continue
            log.info("search %s", key)
            found = (search_random_ws(seed, searching) if method == "random"
                     else search_diff(method, seed, out, searching, args.a_lr))
            results[key] = {"search": found}
            save()
    if args.search_only:
        return
    from nasrobust.evaluator import Reference
    from nasrobust.store import open_results

    data = load_dataset("mnist5k")
    store = open_results(out / "results.db", create=True)
    ref_key = f"random/s{args.seeds[0]}"
    if ref_key not in results:
        print(f"error: the mCE reference {ref_key} is not searched in {out}; add random to --methods or pass "
              "--search-only", file=sys.stderr)
        raise SystemExit(2)
    order = [ref_key] + [k for k in results if k != ref_key and not k.startswith("_")]
    reference = None
    results["_settings"] = settings
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
            results[key]["eval"] = evaluate(encoding, trained, out, store, data, reference, args.cert_images)
            results[key]["eval"]["seconds"] = time.perf_counter() - t0
            save()
    labels = tuple(run_label(m, args.a_lr) for m in ("random",) + METHODS)
    print("\n".join(summary_markdown(results, args.seeds, labels) + [""] + paired_markdown(results, args.seeds, args.a_lr)
                    + [""] + alpha_markdown(results, args.seeds, labels[1:])))


if __name__ == "__main__":
    main()
