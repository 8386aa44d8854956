"""``nasrobust analyze``: the factor <-> robustness report from a result store."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from nasrobust.cli.common import positive_int
from nasrobust.cli.guard import add_force
from nasrobust.errors import NasRobustError


def _csv(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="which architecture factors go with robustness: correlations, effects, rankings, surrogates -> report",
        description="Read a result store and write report.html (self-contained), report.md, figures/ and tables/ "
        "(CSV of every number). Same store + same options = identical files.",
    )
    p.add_argument("--db", required=True, help="result store (from `nasrobust evaluate --db`)")
    p.add_argument("--out", required=True, help="report folder (created)")
    p.add_argument("--space", help="space (its small-input variant also matches); default: the store's only space")
    p.add_argument("--dataset", help="dataset, when the store holds several")
    p.add_argument("--weights-id", help="only results of these weights")
    p.add_argument("--metrics", action="append", metavar="GLOB",
                   help="analyse only metric columns matching (repeatable), e.g. 'adversarial/*' or '*/accuracy@8/255'")
    p.add_argument("--exclude", action="append", metavar="GLOB",
                   help="leave out metric columns matching (repeatable; default: the suites' diagnostic check flags)")
    p.add_argument("--methods", type=_csv, default=("spearman", "kendall", "pearson"),
                   help="correlations, comma-separated (default spearman,kendall,pearson; the first is plotted)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples per interval (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of bootstrap and cross-validation")
    p.add_argument("--correction", choices=("bh", "holm"), default="bh", help="multiple-testing correction (default bh)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of adjusted p-values")
    p.add_argument("--test", choices=("kruskal", "anova"), default="kruskal", help="test of categorical choices")
    p.add_argument("--covariates", type=_csv, default=("params", "flops", "clean"),
                   help="partial correlations given each of these (params, flops, clean or a column; 'none' to skip)")
    p.add_argument("--surrogate", choices=("gbt", "ridge", "none"), default="gbt", help="surrogate model")
    p.add_argument("--surrogate-metric", action="append", default=[], metavar="GLOB",
                   help="also fit surrogates of these metric columns (default: clean and each noise group's score)")
    p.add_argument("--pareto-metric", help="robust metric of the Pareto plot (default: per noise group, its most spread column)")
    p.add_argument("--top", type=positive_int, default=6, help="relations / effects plotted")
    p.add_argument("--min-archs", type=positive_int, default=3, help="fewest architectures a column needs")
    p.add_argument("--runs", help="a study's config.toml with [[runs]]: write the replicated-findings report "
                                  "(per-replicate + pooled estimates, cross-replicate and stand-alone agreement)")
    add_force(p, "a report already in --out")
    p.set_defaults(func=cmd_analyze)


# ----------------------------------------------------------------------------- analyze
#: The files of a finished report; their presence in --out needs --force.
REPORT_FILES = ("report.html", "report.md")
#: The file of a finished replication report.
REPLICATION_FILES = ("replication.md",)


def _options(args: argparse.Namespace):
    from nasrobust.analysis.report import ReportOptions

    covariates = () if args.covariates in (("none",), ()) else args.covariates
    return ReportOptions(
        space=args.space, dataset=args.dataset, weights_id=args.weights_id,
        metrics=tuple(args.metrics) if args.metrics else None,
        exclude=tuple(args.exclude) if args.exclude else None,
        methods=args.methods, n_boot=args.n_boot, seed=args.seed, correction=args.correction, alpha=args.alpha,
        test=args.test, covariates=covariates, surrogate=None if args.surrogate == "none" else args.surrogate,
        surrogate_metrics=tuple(args.surrogate_metric), pareto_metric=args.pareto_metric, top=args.top,
        min_archs=args.min_archs,
    )


def _command(args: argparse.Namespace) -> str:
    """The full command with every option spelled out (what the report says to rerun)."""
    parts = ["nasrobust", "analyze", "--db", args.db, "--out", args.out]
    flags: list[tuple[str, Any]] = [
        ("--space", args.space), ("--dataset", args.dataset), ("--weights-id", args.weights_id),
        ("--methods", ",".join(args.methods)), ("--n-boot", args.n_boot), ("--seed", args.seed),
        ("--correction", args.correction), ("--alpha", args.alpha), ("--test", args.test),
        ("--covariates", ",".join(args.covariates) or "none"), ("--surrogate", args.surrogate),
        ("--pareto-metric", args.pareto_metric), ("--top", args.top), ("--min-archs", args.min_archs),
    ]
    for flag, value in flags:
        if value is not None:
            parts += [flag, str(value)]
    for flag, values in (("--metrics", args.metrics), ("--exclude", args.exclude), ("--surrogate-metric", args.surrogate_metric)):
        for v in values or ():
            parts += [flag, v]
    return " ".join(shlex.quote(p) for p in parts)


def cmd_analyze(args: argparse.Namespace) -> int:
    from nasrobust.analysis.report import build_report
    from nasrobust.outputs import check_output
    from nasrobust.store import open_results

    if args.n_boot < 0:
        raise NasRobustError(f"--n-boot must be >= 0, got {args.n_boot}")
    if not Path(args.db).exists():
        raise NasRobustError(f"no result store at {args.db}; create one with `nasrobust evaluate ... --db {args.db}`")
    if getattr(args, "runs", None):
        return _cmd_replication(args)
    check_output(args.out, force=args.force, folder=True, inputs=[("--db", args.db)], result=REPORT_FILES)
    with open_results(args.db, readonly=True) as store:
        report = build_report(store, args.out, _options(args), command=_command(args))
    print(f"wrote {report.html}")
    print(f"wrote {report.markdown} ({len(report.figures)} figures in {report.out / 'figures'}, "
          f"{len(report.tables)} CSV tables in {report.out / 'tables'})")
    for note in report.notes:
        print(f"note: {note}")
    return 0


def _cmd_replication(args: argparse.Namespace) -> int:
    """``analyze --runs``: the replicated-findings report (nasrobust.analysis.replication)."""
    from nasrobust.analysis.replication import ReplicationOptions, read_runs, replication_report
    from nasrobust.outputs import check_output

    runs = read_runs(args.runs)
    check_output(args.out, force=args.force, folder=True, inputs=[("--db", args.db), ("--runs", args.runs)],
                 result=REPLICATION_FILES)
    options = ReplicationOptions(
        space=args.space, dataset=args.dataset, metrics=tuple(args.metrics) if args.metrics else None,
        exclude=tuple(args.exclude) if args.exclude else None, methods=args.methods, n_boot=args.n_boot,
        seed=args.seed, correction=args.correction, alpha=args.alpha, min_archs=args.min_archs,
    )
    path = replication_report(args.db, runs, args.out, options)
    print(f"wrote {path}")
    return 0
