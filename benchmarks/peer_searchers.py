"""Peer searchers side by side: NASLib's real optimizers and NNI 3.0's strategies through nasrobust's
adapters, against nasrobust's own searchers, on the same objectives, seeds and budgets.

Searchers: nasrobust ``random``, ``evolution``, ``local``; NNI ``nni-random``, ``nni-evolution``
(``nasrobust.searchers.nni_adapter``); NASLib ``rs``, ``re``, ``ls``, ``npenas``, ``bananas`` imported
from ``../shared/peers/naslib`` (commit 0b51bc18) through the test harness ``tests/naslib_harness.py``
and driven over :class:`~nasrobust.searchers.naslib.NASLibArch`, with the tests' NASLib config.

Budget unit: *distinct architectures evaluated*, as nasrobust's and NNI's searchers count it (a repeat
is free). NASLib counts epochs, which re-query repeats; its runs continue until they have evaluated
the budget's distinct architectures (at most 3x the budget in epochs), and the table also gives the
calls they made. Each searcher runs once per seed to the largest budget; the smaller budgets are the
best found among its first B distinct evaluations (none of these searchers reads the budget).

Objectives (higher is better): ``linear`` -- the tests' objective, a fixed random linear function of
nb201's one-hot encoding (``tests/test_naslib_real.py``, ``tests/test_nni_adapter.py``);
``params`` -- ``max:cost:params`` on nb201 and on darts (the cost metric); ``snip`` -- the SNIP
zero-cost proxy on nb201 (4 channels, 1 cell per stage, 16 mnist5k images; SNIP correlates +0.5
with PGD accuracy in ``benchmarks/proxy_correlation.md``); ``darts-snip`` -- SNIP on darts (4 channels,
5 cells, 16 mnist5k images). 5 cells is the smallest darts network with a normal cell in each of the
three stages around the two reduction cells (normal, reduce, normal, reduce, normal), so both genomes
are scored at every resolution; 3 cells already hold both reductions but only one normal cell. It costs
~0.1 CPU-s per architecture (8 channels, 8 cells: 0.23 s), which keeps the ~14,000 evaluations of a
full study under an hour on one core. One metric object per objective is shared (cached) by all runs,
so a proxy value is computed once per architecture. No optimum is known on darts (not enumerable).

Statistics: mean and sample std of the best value over seeds; one-sided Mann-Whitney U p (scipy)
against nasrobust's ``random`` at the same budget; hits = seeds that found the optimum (known by
enumeration on nb201). CPU seconds (``time.process_time``, robust to other processes' load) per run.
Diagnostics: NASLib's NPENAS candidate pool (how far its candidates are from their parents) and its
MLP predictor's Kendall tau on held-out architectures.

BANANAS in this config (one MLP, ``its``) ranks candidates exactly as NPENAS does (:func:`bananas_identity`
says why); ``--check-bananas N`` checks that on seeds 0..N-1 instead of paying for both at every budget.

    OMP_NUM_THREADS=1 python benchmarks/peer_searchers.py [--md benchmarks/peer_searchers.md] [--force]
    OMP_NUM_THREADS=1 python benchmarks/peer_searchers.py --tiny --json a.json   # seconds; deterministic
    # only some rows, resumable (--runs keeps each finished run), merged over the committed table's data:
    OMP_NUM_THREADS=1 python benchmarks/peer_searchers.py --searchers naslib-npenas --no-diagnostics \
        --runs /tmp/runs.json --merge benchmarks/peer_searchers.json --json benchmarks/peer_searchers.json \
        --md benchmarks/peer_searchers.md --force

``benchmarks/peer_searchers.json`` holds the values behind the committed table (``results``; CPU means under
``cpu``; ``provenance``: the command that produced each row).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import logging
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the NASLib import harness lives with the tests

from _report import emit, refuse_overwrite  # noqa: E402

NATIVE = ("random", "evolution", "local")
NNI = ("nni-random", "nni-evolution")
NASLIB = ("naslib-rs", "naslib-re", "naslib-ls", "naslib-npenas", "naslib-bananas")
PREDICTOR = ("naslib-npenas", "naslib-bananas")
BASELINE = "random"
OBJECTIVES = ("linear", "params", "darts-params", "snip", "darts-snip")


@dataclass
class Objective:
    name: str
    space: Any
    metric: Any
    optimum: float | None  # best oriented score over the whole space, when enumerable here
    searchers: tuple[str, ...]


@dataclass
class Run:
    scores: list[float]  # oriented score of each distinct architecture, in evaluation order
    calls: int           # objective queries the searcher made (repeats included)
    cpu: float
    stopped: str


def objectives(names: list[str]) -> list[Objective]:
    from nasrobust.metrics import FunctionMetric, parse_metric
    from nasrobust.space import get_space

    nb201, out = get_space("nb201"), []
    w = np.random.default_rng(1).normal(size=30)  # the tests' objective
    every = NATIVE + NNI + NASLIB
    for name in names:
        if name == "linear":
            m = FunctionMetric(lambda a, s=nb201: float(s.to_vector(a) @ w), "linear(nb201 one-hot, rng 1)")
            out.append(Objective("nb201 linear", nb201, m, None, every))
        elif name == "params":
            out.append(Objective("nb201 params", nb201, parse_metric("max:cost:params", space=nb201), None, every))
        elif name == "darts-params":  # NPENAS/BANANAS' MLP reads darts' 224-value one-hot (adjacency_one_hot)
            darts = get_space("darts")
            out.append(Objective("darts params", darts, parse_metric("max:cost:params", space=darts), None, every))
        elif name == "snip":
            m = parse_metric("proxy:snip?channels=4&cells_per_stage=1&batch=16", space=nb201)
            out.append(Objective("nb201 snip", nb201, m, None, every))
        elif name == "darts-snip":  # layers=5: a normal cell in each stage, both reduction cells (docstring)
            darts = get_space("darts")
            m = parse_metric("proxy:snip?channels=4&layers=5&batch=16", space=darts)
            out.append(Objective("darts snip", darts, m, None, every))
        else:
            raise SystemExit(f"error: unknown objective {name!r}; valid: {', '.join(OBJECTIVES)}")
    for o in out:
        if o.name != "nb201 snip" and o.space.name == "nb201":  # enumerate: cheap for linear and cost
            o.optimum = max(o.metric.score(a) for a in o.space.enumerate())
    return out


# ----------------------------------------------------------------------------- runners
def run_nasrobust(name: str, obj: Objective, seed: int, budget: int) -> Run:
    from nasrobust.search import create_searcher

    t0 = time.process_time()
    result = create_searcher(name, obj.space, obj.metric, budget=budget, seed=seed).run()
    return Run([e.scores[0] for e in result.history], len(result.history), time.process_time() - t0, result.stopped)


def run_naslib(mods: dict, name: str, obj: Objective, seed: int, budget: int) -> Run:
    import torch

    from naslib_harness import OPTIMIZERS, search_config
    from nasrobust.metrics import FunctionMetric
    from nasrobust.searchers.naslib import run_naslib_optimizer

    seen: dict[Any, float] = {}
    calls = [0]

    def query(arch) -> float:
        calls[0] += 1
        if arch not in seen:
            seen[arch] = obj.metric.score(arch)
        return seen[arch]

    key = name.removeprefix("naslib-")
    np.random.seed(seed)  # NASLib draws from numpy's and torch's global generators
    torch.manual_seed(seed)
    t0 = time.process_time()
    optimizer = getattr(mods[key], OPTIMIZERS[key])(search_config(3 * budget, seed))
    run_naslib_optimizer(optimizer, obj.space, FunctionMetric(query, obj.metric.name, cache=False), 3 * budget,
                         seed=seed, stop=lambda: len(seen) >= budget)
    stopped = "budget" if len(seen) >= budget else f"{3 * budget} epochs"
    return Run(list(seen.values()), calls[0], time.process_time() - t0, stopped)


def best_at(run: Run, budget: int) -> float:
    return max(run.scores[:budget])


class RunCache:
    """Finished runs on disk, keyed by (objective, searcher, seed, budget), written after each run.

    A run is a deterministic function of its key (every searcher is seeded at its start), so a cached
    run is the run; this lets a long study be split over several invocations and resumed after a stop.
    """

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self.runs: dict[str, dict[str, Any]] = json.loads(self.path.read_text()) if self.path and self.path.exists() else {}

    @staticmethod
    def key(obj: Objective, name: str, seed: int, budget: int) -> str:
        return f"{obj.name}|{name}|{seed}|{budget}"

    def get(self, key: str) -> Run | None:
        r = self.runs.get(key)
        return None if r is None else Run(r["scores"], r["calls"], r["cpu"], r["stopped"])

    def put(self, key: str, run: Run) -> None:
        self.runs[key] = {"scores": run.scores, "calls": run.calls, "cpu": run.cpu, "stopped": run.stopped}
        if self.path:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.runs, sort_keys=True) + "\n")
            tmp.replace(self.path)


# ----------------------------------------------------------------------------- the study
def get_run(mods: dict, cache: RunCache, log: Callable[[str], None], name: str, obj: Objective, seed: int,
            top: int) -> Run:
    """The run from ``cache``, or run now and record it."""
    key = RunCache.key(obj, name, seed, top)
    run = cache.get(key)
    if run is None:
        run = run_naslib(mods, name, obj, seed, top) if name.startswith("naslib-") else run_nasrobust(name, obj, seed, top)
        cache.put(key, run)
        log(f"  {key}: best {max(run.scores):.6g}, {run.calls} calls, {run.cpu:.1f} CPU-s")
    return run


def bananas_identity(objs: list[Objective], seeds: int, budget: int, top: int, mods: dict, cache: RunCache,
                     log: Callable[[str], None]) -> dict[str, Any]:
    """Does BANANAS (tests' config: one MLP, ``its``) evaluate exactly NPENAS' architectures, in order?

    With one model the ``its`` acquisition's spread is 0, so it returns the MLP's prediction, as
    NPENAS' exploit-only one does; the mutations draw from the adapter's generator and the MLP from
    torch's, so the extra ``np.random.normal`` draws change nothing. Checked here on the first
    ``budget`` distinct evaluations of seeds 0..seeds-1 against NPENAS' budget-``top`` runs.
    """
    out: dict[str, Any] = {}
    for obj in objs if seeds > 0 else []:
        same = []
        for s in range(seeds):
            npenas = get_run(mods, cache, log, "naslib-npenas", obj, s, top)
            bananas = get_run(mods, cache, log, "naslib-bananas", obj, s, budget)
            same.append(bananas.scores == npenas.scores[:len(bananas.scores)])
        out[obj.name] = {"seeds": seeds, "budget": budget, "identical": all(same)}
        log(f"{obj.name}: bananas == npenas on the first {budget} of seeds 0-{seeds - 1}: {all(same)}")
    return out


def study(objs: list[Objective], seeds: int, budgets: list[int], predictor_seeds: int, predictor_budget: int,
          mods: dict, log: Callable[[str], None], only: tuple[str, ...] | None = None,
          cache: RunCache | None = None) -> dict[str, Any]:
    """Rows per objective; ``only`` restricts the searchers, ``cache`` reuses and records finished runs."""
    out: dict[str, Any] = {}
    cache = cache or RunCache(None)

    def one(name: str, obj: Objective, seed: int, top: int) -> Run:
        return get_run(mods, cache, log, name, obj, seed, top)

    for obj in objs:
        rows: dict[str, Any] = {}
        for name in obj.searchers:
            if only is not None and name not in only:
                continue
            predictor = name in PREDICTOR
            n_seeds, top = (predictor_seeds, predictor_budget) if predictor else (seeds, budgets[-1])
            runs = [one(name, obj, s, top) for s in range(n_seeds)]
            rows[name] = {
                "best": {b: [best_at(r, b) for r in runs] for b in budgets if b <= top},
                "distinct": [len(r.scores) for r in runs], "calls": [r.calls for r in runs],
                "cpu": [r.cpu for r in runs], "stopped": sorted({r.stopped for r in runs}),
                "budget": top,
            }
            log(f"{obj.name:14s} {name:15s} seeds={n_seeds} best@{top}={np.mean(rows[name]['best'][max(rows[name]['best'])]):.6g} "
                f"cpu/run={np.mean(rows[name]['cpu']):.2f}s")
        out[obj.name] = {"metric": obj.metric.name, "optimum": obj.optimum, "rows": rows}
    return out


def p_greater(a: list[float], b: list[float]) -> float:
    from scipy.stats import mannwhitneyu

    if len(set(a) | set(b)) == 1:
        return 1.0
    return float(mannwhitneyu(a, b, alternative="greater").pvalue)


# ----------------------------------------------------------------------------- diagnostics
def diagnostics(mods: dict, seeds: int, n_test: int, hit_seeds: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Why NASLib's predictor-based optimizers trail: their candidate pool and their predictor."""
    import torch
    from scipy.stats import kendalltau

    from naslib_harness import search_config
    from nasrobust.metrics import FunctionMetric, parse_metric
    from nasrobust.searchers.naslib import NASLibArch
    from nasrobust.space import get_space

    space = get_space("nb201")
    w = np.random.default_rng(1).normal(size=30)
    linear = FunctionMetric(lambda a: float(space.to_vector(a) @ w), "linear")
    params = parse_metric("max:cost:params", space=space)
    out: dict[str, Any] = {"distance": {}, "tau": {}, "hits": {}, "seeds": seeds, "n_test": n_test}
    # 1. NPENAS's own candidate generation, called on its state after 30 evaluations: is the i-th
    #    candidate made from a parent one mutation away from that parent (``max_mutations`` is 1), and
    #    one mutation away from the (i-1)-th candidate?
    near_parent: dict[int, list[bool]] = {}
    near_previous: dict[int, list[bool]] = {}
    for seed in range(seeds):
        np.random.seed(seed)
        torch.manual_seed(seed)
        opt = mods["npenas"].Npenas(search_config(30, seed))
        opt.adapt_search_space(NASLibArch(space, linear, seed=seed))
        for e in range(30):
            opt.new_epoch(e)
        ytrain = [m.accuracy for m in opt.train_data]
        parents = [opt.train_data[i].arch.arch for i in np.argsort(ytrain)[-opt.num_arches_to_mutate:]]
        cands = [c.arch.arch for c in opt._get_new_candidates(ytrain=ytrain)]
        per_parent = len(cands) // len(parents)
        for j, c in enumerate(cands):
            i, parent = j % per_parent, parents[j // per_parent]
            near_parent.setdefault(i, []).append(c in space.neighbors(parent))
            if i:
                near_previous.setdefault(i, []).append(c in space.neighbors(cands[j - 1]))
    out["distance"] = {str(i + 1): [float(np.mean(v)), float(np.mean(near_previous[i])) if i else None]
                       for i, v in sorted(near_parent.items())}
    log(f"npenas candidates next to parent / previous candidate, by position: {out['distance']}")
    # 2. NASLib's MLP predictor (the one NPENAS/BANANAS fit here), trained on n random architectures:
    #    Kendall tau of its predictions on n_test held-out random architectures.
    ensemble_cls = sys.modules["naslib.predictors.ensemble"].Ensemble
    for label, metric in (("linear", linear), ("params", params)):
        for n in (10, 50, 100):
            taus = []
            for seed in range(seeds):
                np.random.seed(seed)
                torch.manual_seed(seed)
                archs = [NASLibArch(space, metric, a) for a in space.sample(n + n_test, seed=seed)]
                train, test = archs[:n], archs[n:]
                ens = ensemble_cls(num_ensemble=1, ss_type="nasrobust:nb201", predictor_type="mlp",
                                   config=search_config(n, seed))
                ens.fit(train, [a.query() for a in train])
                pred = np.asarray(ens.query(test)).mean(axis=0)
                taus.append(float(kendalltau(pred, [a.query() for a in test]).statistic))
            out["tau"][f"{label} n={n}"] = [float(np.mean(taus)), float(np.std(taus, ddof=1)) if len(taus) > 1 else 0.0]
            log(f"mlp predictor {label} n={n}: tau {np.mean(taus):.3f}")
    # 3. NNI's evolution vs nasrobust's on nb201 max params, many seeds: how often each reaches the optimum.
    from nasrobust.search import create_searcher

    optimum = max(params.score(a) for a in space.enumerate())
    for name in ("evolution", "nni-evolution"):
        found = [create_searcher(name, space, params, budget=100, seed=s).run().best.scores[0] for s in range(hit_seeds)]
        out["hits"][name] = [sum(v >= optimum for v in found), len(found), float(np.mean(found))]
        log(f"{name} on nb201 params, B=100: optimum in {out['hits'][name][0]}/{hit_seeds} seeds")
    return out


# ----------------------------------------------------------------------------- report
def fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3f}"


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old``'s JSON document with ``new``'s rows, CPU means and diagnostics put over it (row order kept)."""
    out = json.loads(json.dumps(old))
    for key in ("results", "cpu"):
        for obj_name, o in new[key].items():
            into = out.setdefault(key, {}).setdefault(obj_name, {})
            if key == "results":
                into.update({k: v for k, v in o.items() if k != "rows"})
                into.setdefault("rows", {}).update(o["rows"])
            else:
                into.update(o)
    out["diagnostics"] = new["diagnostics"] or old.get("diagnostics")
    out["bananas_identity"] = {**old.get("bananas_identity", {}), **new.get("bananas_identity", {})}
    out["provenance"] = old.get("provenance", []) + new["provenance"]
    return out


def markdown(doc: dict[str, Any]) -> list[str]:
    """The report of a JSON document (``results``, ``cpu``, ``diagnostics``, ``provenance``)."""
    res, diag, cpu = doc["results"], doc["diagnostics"], doc["cpu"]
    budgets = sorted({int(b) for o in res.values() for r in o["rows"].values() for b in r["best"]})
    lines = ["# Peer searchers: NASLib and NNI through nasrobust's adapters vs nasrobust's searchers", ""]
    for run in doc["provenance"]:
        lines += [f"Produced by `OMP_NUM_THREADS=1 python benchmarks/peer_searchers.py {' '.join(run['argv'])}` on the shared",
                  f"2-core CPU, one thread, in {run['wall_min']:.1f} min; load (`uptime`) before: {run['load'][0]}; after: "
                  f"{run['load'][1]}. Rows: {run['rows']}.", ""]
    lines += [
        "CPU times are `time.process_time` per run, so other processes' load inflates them little; compare",
        "them within this file only. Objectives, budget unit and statistics: the script's docstring. Seeds",
        "0..n-1: n = 7 per searcher, 5 for NASLib's NPENAS and BANANAS (`--predictor-seeds`,",
        "whose MLP is refitted every 5 evaluations). NASLib config = the tests' (`tests/naslib_harness.py: search_config`): RE population",
        "20 / sample 10; LS 10 initial; NPENAS/BANANAS 10 initial, k 5, 1 MLP (adjacency one-hot), 20 candidates",
        "from the best 2, BANANAS' `its` acquisition. nasrobust/NNI evolution: population 20 / sample 5.",
        "",
        "Cells: mean ± std of the best value found within the budget; `p`: one-sided Mann-Whitney U vs nasrobust",
        "`random` at that budget (small = better than random search); `hits`: seeds that found the optimum.",
        "",
    ]
    order = ["nb201 linear", "nb201 params", "darts params", "nb201 snip", "darts snip"]  # JSON keys come back sorted
    for obj_name in sorted(res, key=lambda k: (order.index(k) if k in order else len(order), k)):
        o = res[obj_name]
        rows = {n: o["rows"][n] for n in NATIVE + NNI + NASLIB if n in o["rows"]}
        opt = o["optimum"]
        lines += [f"## {obj_name}: `{o['metric']}`" + (f" (optimum {fmt(opt)})" if opt is not None else ""), ""]
        head = "| searcher | " + " | ".join(f"B={b}" for b in budgets) + " | distinct / calls at max B | CPU s/run | stopped |"
        lines += [head, "|---|" + "---|" * (len(budgets) + 3)]
        base = {int(b): v for b, v in rows[BASELINE]["best"].items()}
        for name, r in rows.items():
            cells = []
            best = {int(b): v for b, v in r["best"].items()}
            for b in budgets:
                if b not in best:
                    cells.append("-")
                    continue
                v = best[b]
                cell = f"{fmt(np.mean(v))} ± {fmt(np.std(v, ddof=1))}"
                if opt is not None:
                    cell += f", hits {sum(x >= opt - 1e-9 for x in v)}/{len(v)}"
                if name != BASELINE and b in base:
                    cell += f", p={p_greater(v, base[b]):.3g}"
                cells.append(cell)
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {np.mean(r['distinct']):.0f} / {np.mean(r['calls']):.0f} "
                         f"| {cpu[obj_name][name]:.2f} | {', '.join(r['stopped'])} |")
        same = doc.get("bananas_identity", {}).get(obj_name)
        if same:
            lines.append(f"\nnaslib-bananas vs naslib-npenas, first {same['budget']} distinct evaluations of seeds "
                         f"0-{same['seeds'] - 1}: {'identical, architecture for architecture' if same['identical'] else 'DIFFERENT'}"
                         " (`bananas_identity` in the script).")
        lines.append("")
    if diag:
        diag = {**diag, "distance": dict(sorted(diag["distance"].items(), key=lambda kv: int(kv[0]))),
                "tau": dict(sorted(diag["tau"].items(), key=lambda kv: (kv[0].split()[0], int(kv[0].split("=")[1]))))}
        lines += ["## Diagnostics: NASLib's NPENAS/BANANAS on nb201", "",
                  "NPENAS's own `_get_new_candidates` (BANANAS' is the same code), called on its state after 30",
                  "evaluations of `linear`: share of the i-th candidate made from a parent that is one mutation",
                  "(`space.neighbors`) from that parent -- `max_mutations` is 1, so all should be -- and from the",
                  f"(i-1)-th candidate ({diag['seeds']} seeds x 2 parents):", "",
                  "| i | " + " | ".join(diag["distance"]) + " |", "|---|" + "---|" * len(diag["distance"]),
                  "| next to its parent | " + " | ".join(f"{p:.2f}" for p, _ in diag["distance"].values()) + " |",
                  "| next to candidate i-1 | " + " | ".join("-" if q is None else f"{q:.2f}"
                                                         for _, q in diag["distance"].values()) + " |", "",
                  f"NASLib's MLP predictor (`predictor_type` mlp, the one fitted above) trained on n random nb201",
                  f"architectures: Kendall tau of its predictions on {diag['n_test']} held-out random ones ({diag['seeds']} seeds):", "",
                  "| objective, n | tau |", "|---|---|"]
        lines += [f"| {k} | {m:.3f} ± {s:.3f} |" for k, (m, s) in diag["tau"].items()]
        lines += ["", "## Diagnostics: NNI's evolution vs nasrobust's (population 20, sample 5 both)", "",
                  "nb201 `max:cost:params`, budget 100, seeds 0-" + str(diag["hits"]["evolution"][1] - 1) + ":", "",
                  "| searcher | optimum reached | mean best |", "|---|---|---|"]
        lines += [f"| {k} | {h}/{n} | {fmt(m)} |" for k, (h, n, m) in diag["hits"].items()]
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=7)
    ap.add_argument("--budgets", type=lambda s: sorted(int(b) for b in s.split(",")), default=[50, 100, 200])
    ap.add_argument("--predictor-seeds", type=int, default=5)
    ap.add_argument("--predictor-budget", type=int, default=200)
    ap.add_argument("--objectives", default=",".join(OBJECTIVES))
    ap.add_argument("--searchers", help="comma list: run only these rows (e.g. naslib-npenas,naslib-bananas)")
    ap.add_argument("--merge", help="a previous --json: keep its rows, put the rows run now over them")
    ap.add_argument("--runs", help="JSON file of finished runs: reused, and each new run is added as it ends (resumable)")
    ap.add_argument("--check-bananas", type=int, default=0, metavar="SEEDS",
                    help="check BANANAS == NPENAS (one MLP) on seeds 0..SEEDS-1 for --check-budget evaluations")
    ap.add_argument("--check-budget", type=int, default=50)
    ap.add_argument("--n-test", type=int, default=200, help="held-out architectures for the predictor's tau")
    ap.add_argument("--diag-seeds", type=int, default=3, help="seeds of the NPENAS diagnostics")
    ap.add_argument("--hit-seeds", type=int, default=20, help="seeds of the evolution vs nni-evolution hit count")
    ap.add_argument("--no-diagnostics", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="2 seeds, budgets 8,16, linear only: a determinism check")
    ap.add_argument("--md", help="write the Markdown report here (refuses to overwrite without --force)")
    ap.add_argument("--json", help="write the measured values (CPU means apart, under 'cpu') here")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    if args.tiny:
        args.seeds, args.budgets, args.predictor_seeds, args.predictor_budget = 2, [8, 16], 2, 16
        args.objectives, args.no_diagnostics = "linear", True
    refuse_overwrite(args.md, args.json, force=args.force)
    if args.merge and not Path(args.merge).is_file():
        print(f"error: --merge {args.merge}: no such file (pass a JSON written by --json)", file=sys.stderr)
        raise SystemExit(2)
    if min(args.budgets) < 1 or min(args.seeds, args.predictor_seeds, args.diag_seeds) < 2:
        print("error: budgets must be >= 1 and seeds >= 2 (--budgets 50,100 --seeds 7)", file=sys.stderr)
        raise SystemExit(2)
    unknown = sorted(set(args.objectives.split(",")) - set(OBJECTIVES))
    if unknown:
        print(f"error: unknown objective(s) {unknown}; valid: {', '.join(OBJECTIVES)}", file=sys.stderr)
        raise SystemExit(2)
    only = tuple(args.searchers.split(",")) if args.searchers else None
    if only and set(only) - set(NATIVE + NNI + NASLIB):
        print(f"error: unknown searcher(s) {sorted(set(only) - set(NATIVE + NNI + NASLIB))}; valid: "
              f"{', '.join(NATIVE + NNI + NASLIB)}", file=sys.stderr)
        raise SystemExit(2)
    import naslib_harness

    if not naslib_harness.available():
        print(f"error: NASLib source not at {naslib_harness.ROOT}; set NASROBUST_NASLIB", file=sys.stderr)
        raise SystemExit(2)
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("nasrobust").setLevel(logging.ERROR)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    load = [subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average: ")[-1]]
    t0 = time.perf_counter()
    with naslib_harness.naslib_modules() as mods:
        objs, cache = objectives(args.objectives.split(",")), RunCache(args.runs)
        res = study(objs, args.seeds, args.budgets, args.predictor_seeds, args.predictor_budget, mods, log, only=only,
                    cache=cache)
        same = bananas_identity(objs, args.check_bananas, args.check_budget, args.predictor_budget, mods, cache, log)
        diag = None if args.no_diagnostics else diagnostics(mods, args.diag_seeds, args.n_test, args.hit_seeds, log)
    wall = time.perf_counter() - t0
    load.append(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average: ")[-1])
    doc = {"results": {k: {**o, "rows": {n: {f: v for f, v in r.items() if f != "cpu"} for n, r in o["rows"].items()}}
                       for k, o in res.items()},
           "cpu": {k: {n: float(np.mean(r["cpu"])) for n, r in o["rows"].items()} for k, o in res.items()},
           "diagnostics": diag, "bananas_identity": same,
           "provenance": [{"argv": argv, "wall_min": wall / 60, "load": load,
                           "rows": ", ".join(only) if only else "all"}]}
    doc = json.loads(json.dumps(doc))  # budgets become string keys, as when read back
    if args.merge:
        doc = merge(json.loads(Path(args.merge).read_text()), doc)
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    emit(markdown(doc), args.md)


if __name__ == "__main__":
    main()
