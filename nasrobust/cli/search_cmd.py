"""``nasrobust search``: discrete architecture search with a robustness metric as the objective."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from nasrobust.cli.common import add_budget_arguments, budget_from_args, positive_int
from nasrobust.errors import NasRobustError
from nasrobust.io import format_table
from nasrobust.options import parse_assignments

STATE_FILE = "state.jsonl"
RESULT_FILE = "result.json"

log = logging.getLogger(__name__)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search a space for the architecture that maximises a (robustness) metric",
        description="Runs a registered searcher with a metric spec (see --help-metric) as the objective. "
        f"Every evaluation is appended to OUT/{STATE_FILE}; rerunning the same command resumes and gives the "
        f"result of an uninterrupted run. The result (best encoding and its scores, or the Pareto front) "
        f"goes to OUT/{RESULT_FILE}.",
    )
    p.add_argument("--space", help="search space (e.g. nb201)")
    p.add_argument("--searcher", default="evolution", help="registered searcher (default evolution; --list shows all)")
    p.add_argument("--metric", action="append", metavar="SPEC",
                   help="objective spec, e.g. store:results.db:adversarial/pgd_linf/accuracy@0.1; repeat it for a "
                        "multi-objective searcher (nsga2); a spec starting with '-' needs --metric=-SPEC (or min:SPEC)")
    p.add_argument("--budget", type=positive_int, default=100, help="distinct architectures to evaluate (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-flops", help="constraint: analytic MACs <= this (e.g. 300M); infeasible archs score worst")
    p.add_argument("--max-params", help="constraint: parameters <= this (e.g. 1.5M)")
    p.add_argument("--penalty", type=float,
                   help="soft constraints: score - PENALTY * relative overshoot instead of rejecting")
    add_budget_arguments(p, "hard budget: the searcher proposes only architectures with")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="searcher option, e.g. population_size=20 (see --list)")
    p.add_argument("--dataset", help="differentiable searchers (darts, dsrna-*, advrush): the registered dataset to "
                                     "search on (e.g. mnist5k); their --budget counts search epochs, --metric is unused")
    p.add_argument("--out", help=f"output folder ({STATE_FILE}, {RESULT_FILE})")
    p.add_argument("--fresh", "--force", dest="fresh", action="store_true",
                   help=f"discard OUT/{STATE_FILE} and OUT/{RESULT_FILE} and start over")
    p.add_argument("--list", action="store_true", help="list the searchers and their options")
    p.add_argument("--help-metric", action="store_true", help="show the metric spec grammar")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_search)


def _list_searchers() -> int:
    import dataclasses

    from nasrobust.search import SEARCHERS

    rows = []
    for name in SEARCHERS.names():
        cls = SEARCHERS.get_class(name)
        opts = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(cls.Options))
        rows.append((name, "multi" if cls.multi_objective else "single", opts or "-", SEARCHERS.doc(name)))
    print(format_table(rows, ["searcher", "objectives", "options (defaults)", "description"]))
    return 0


def _objectives(args: argparse.Namespace, space) -> list:
    from nasrobust.metrics import Constrained, parse_metric, parse_number

    limits = {}
    for flag, value in (("max_flops", args.max_flops), ("max_params", args.max_params)):
        if value is not None:
            try:
                limits[flag] = parse_number(value)
            except ValueError as exc:
                raise NasRobustError(f"--{flag.replace('_', '-')}: {exc}") from None
    if args.penalty is not None and not limits:
        raise NasRobustError("--penalty needs --max-flops and/or --max-params")
    metrics = [parse_metric(spec, space=space) for spec in args.metric]
    for m in metrics:  # a typo in a store metric fails here, before the search writes any state
        m.check()
    if limits:
        metrics = [Constrained(m, penalty=args.penalty, **limits) for m in metrics]
    return metrics


def _fmt(v: float) -> str:
    return f"{v + 0.0:.6g}" if math.isfinite(v) else str(v)


def cmd_search(args: argparse.Namespace) -> int:
    if args.help_metric:
        from nasrobust.metrics import GRAMMAR

        print(GRAMMAR)
        return 0
    if args.list:
        return _list_searchers()
    from nasrobust.search import SEARCHERS, create_searcher

    differentiable = getattr(SEARCHERS.get_class(args.searcher), "differentiable", False)
    missing = [flag for flag, v in (("--space", args.space), ("--metric", args.metric or differentiable),
                                    ("--out", args.out)) if not v]
    if missing:
        raise NasRobustError(f"search needs {', '.join(missing)} (e.g. --space nb201 --metric proxy:jacobian --out search/)")
    from nasrobust.outputs import check_output
    from nasrobust.space import get_space

    check_output(args.out, folder=True)
    space = get_space(args.space)
    budget = budget_from_args(args)
    if budget is not None:
        if differentiable:
            raise NasRobustError(f"--params/--flops restrict the proposals of discrete searchers; {args.searcher} "
                                 "derives its architecture from supernet weights: use a discrete searcher "
                                 "(random, evolution, local, nsga2)")
        from nasrobust.budget import BudgetedSpace, sample_in_budget

        sample_in_budget(space, 1, args.seed, budget)  # an empty budget fails here, before any evaluation
        space = BudgetedSpace(space, budget)
    options = parse_assignments(args.option, what="--option")
    if differentiable and args.dataset:
        options["dataset"] = args.dataset
    objectives = None if differentiable else _objectives(args, space)
    searcher = create_searcher(args.searcher, space, objectives, budget=args.budget, seed=args.seed, **options)
    out = Path(args.out)
    state = out / getattr(searcher, "state_file", STATE_FILE)
    if args.fresh:
        for old in (state, out / RESULT_FILE):
            old.unlink(missing_ok=True)
    result = _run(searcher, state, progress=not args.no_progress)
    if budget is not None:
        log.info("budget: %s", space.acceptance())
    path = result.write_json(out / RESULT_FILE)
    _report(result, path)
    return 0


def _run(searcher, state: Path, progress: bool):
    from tqdm.auto import tqdm

    bar = tqdm(total=searcher.budget, desc=f"{searcher.name} on {searcher.space.name}", disable=not progress,
               dynamic_ncols=True, unit="eval")
    best: list[float] = []

    def on_evaluation(ev, run) -> None:
        if not best or ev.score > best[0]:
            best[:] = [ev.score]
        bar.update(1)
        bar.set_postfix_str(f"best {_fmt(best[0])}{' (replayed)' if run.replaying else ''}")

    try:
        return searcher.run(state, on_evaluation=on_evaluation)
    finally:
        bar.close()


def _report(result, path: Path) -> None:
    names = [o.name for o in result.objectives]
    print(f"{result.searcher} on {result.space}: {len(result.history)} evaluations ({result.stopped}); wrote {path}")
    if not result.history:
        return
    if len(names) == 1:
        b = result.best
        flag = " (predicted)" if b.predicted[0] else ""
        print(f"best {b.encoding}\n  {names[0]} = {_fmt(b.values[0])}{flag}  (evaluation {b.index})")
        return
    rows = [[e.encoding, *(_fmt(v) + ("*" if p else "") for v, p in zip(e.values, e.predicted))] for e in result.front]
    print(f"Pareto front ({len(rows)} architectures; * = predicted):")
    print(format_table(rows, ["encoding", *names]))
