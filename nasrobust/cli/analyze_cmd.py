"""``nasrobust analyze`` (factor <-> robustness report from a result store) and ``nasrobust cka``."""

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
                   help="leave out metric columns matching (repeatable; default adversarial/sanity/*)")
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
    add_force(p, "a report already in --out")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser(
        "cka",
        help="layer-by-layer CKA between two models (or one model and itself), with a block-structure score",
        description="Minibatch linear (or RBF) CKA with the unbiased HSIC estimator (Nguyen et al. 2021). "
        "A model is a stand-alone checkpoint, or SUPERNET_CKPT#ENCODING for a BN-recalibrated subnet.",
    )
    p.add_argument("--a", required=True, help="checkpoint (run folder or file), or SUPERNET_CKPT#ENCODING")
    p.add_argument("--b", help="second model (default: --a against itself)")
    p.add_argument("--dataset", help="images to compare on (default: the dataset of --a's checkpoint)")
    p.add_argument("--data-root", help="folder of a dataset that is not bundled")
    p.add_argument("--n-examples", type=positive_int, default=1000, help="test images used (default 1000)")
    p.add_argument("--batch-size", type=positive_int, default=250, help="CKA minibatch size (default 250)")
    p.add_argument("--epochs", type=positive_int, default=1, help="passes over the images, reshuffled (default 1)")
    p.add_argument("--layers", type=_csv, help="module types or name globs to hook (default Conv2d,Linear)")
    p.add_argument("--kernel", choices=("linear", "rbf"), default="linear")
    p.add_argument("--rbf-threshold", type=float, default=1.0, help="RBF bandwidth as a multiple of the median distance")
    p.add_argument("--recalib-images", type=positive_int, default=2000, help="BN re-calibration images for subnets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="heatmap image (.png); the matrices go beside it as CSV")
    add_force(p, "an existing --out image and its CSV files")
    p.set_defaults(func=cmd_cka)


# ----------------------------------------------------------------------------- analyze
#: The files of a finished report; their presence in --out needs --force.
REPORT_FILES = ("report.html", "report.md")


def _options(args: argparse.Namespace):
    from nasrobust.analysis.report import ReportOptions
    from nasrobust.analysis.table import DEFAULT_EXCLUDE

    covariates = () if args.covariates in (("none",), ()) else args.covariates
    return ReportOptions(
        space=args.space, dataset=args.dataset, weights_id=args.weights_id,
        metrics=tuple(args.metrics) if args.metrics else None,
        exclude=tuple(args.exclude) if args.exclude else DEFAULT_EXCLUDE,
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
    check_output(args.out, force=args.force, folder=True, inputs=[("--db", args.db)], result=REPORT_FILES)
    with open_results(args.db, readonly=True) as store:
        report = build_report(store, args.out, _options(args), command=_command(args))
    print(f"wrote {report.html}")
    print(f"wrote {report.markdown} ({len(report.figures)} figures in {report.out / 'figures'}, "
          f"{len(report.tables)} CSV tables in {report.out / 'tables'})")
    for note in report.notes:
        print(f"note: {note}")
    return 0


# ----------------------------------------------------------------------------- cka
def load_model_spec(spec: str, data=None, *, recalib_images: int = 2000, seed: int = 0, device: Any = "cpu"):
    """A model from ``CHECKPOINT`` or ``SUPERNET_CHECKPOINT#ENCODING`` -> ``(model, meta, label)``.

    A subnet is BN-recalibrated on ``recalib_images`` training images of ``data`` (BigNAS /
    OFA: shared BN statistics do not fit a subnet) and extracted as a stand-alone module.
    """
    from nasrobust import checkpoint
    from nasrobust.data import load_dataset

    path, sep, encoding = spec.rpartition("#")
    if not sep:
        model, payload = checkpoint.load_model(spec, device)
        return model, checkpoint.meta_of(payload), Path(spec).name or spec
    if not encoding.strip():
        raise NasRobustError(f"{spec!r}: expected SUPERNET_CHECKPOINT#ENCODING with an encoding after '#'")
    from nasrobust.train.api import recalibrated_subnet

    supernet, payload = checkpoint.load_supernet(path, device)
    meta = checkpoint.meta_of(payload)
    arch = supernet.supernet.space.resolve(encoding)
    if data is None:
        data = load_dataset(meta.dataset["name"], root=meta.data_root)
    model = recalibrated_subnet(supernet, arch, data, n_images=recalib_images, seed=seed).to(device)
    return model, meta, f"{Path(path).name}#{arch.encoding}"


def cmd_cka(args: argparse.Namespace) -> int:
    from nasrobust import checkpoint, distributed
    from nasrobust.analysis.cka import block_structure, layer_cka
    from nasrobust.analysis.plots import cka_heatmap, to_png
    from nasrobust.data import load_dataset, stack
    from nasrobust.outputs import check_output

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise NasRobustError(f"--out {out}: give a .png file (the CSV matrices are written beside it)")
    beside = [out.with_suffix(".csv")] + [out.with_name(f"{out.stem}_self_{t}.csv") for t in "ab" if args.b]
    check_output(out, force=args.force, companions=beside)
    for spec in filter(None, (args.a, args.b)):
        path, sep, encoding = spec.rpartition("#")
        if sep and not encoding.strip():
            raise NasRobustError(f"{spec!r}: expected SUPERNET_CHECKPOINT#ENCODING with an encoding after '#'")
    first = args.a.rpartition("#")[0] or args.a
    meta = checkpoint.meta_of(checkpoint.read(first))
    data = load_dataset(args.dataset or meta.dataset["name"], root=args.data_root or meta.data_root)
    device = distributed.local_device()
    model_a, _, label_a = load_model_spec(args.a, data, recalib_images=args.recalib_images, seed=args.seed, device=device)
    if args.b:
        model_b, _, label_b = load_model_spec(args.b, data, recalib_images=args.recalib_images, seed=args.seed,
                                              device=device)
    else:
        model_b, label_b = None, label_a
    images, _ = stack(data.test_subset(args.n_examples))
    result = layer_cka(model_a, images, model_b, layers_a=args.layers, layers_b=args.layers,
                       batch_size=args.batch_size, kernel=args.kernel, rbf_threshold=args.rbf_threshold,
                       epochs=args.epochs, seed=args.seed, device=device)
    title = (f"{args.kernel} CKA: {label_a}" + (f" vs {label_b}" if args.b else "")
             + f" ({result.n_examples} {data.info.name} images)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(to_png(cka_heatmap(result.matrix, title)))
    result.matrix.to_csv(out.with_suffix(".csv"), float_format="%.17g")
    print(f"wrote {out} and {out.with_suffix('.csv')} ({len(result.matrix)} x {len(result.matrix.columns)} layers, "
          f"{result.batches} batches of <= {result.batch_size})")
    models = [("a", label_a, result.self_a)] + ([("b", label_b, result.self_b)] if args.b else [])
    for tag, label, mat in models:
        if len(mat) < 3:
            print(f"block structure of {label}: needs at least 3 layers, got {len(mat)}")
            continue
        if args.b:
            path = out.with_name(f"{out.stem}_self_{tag}.csv")
            mat.to_csv(path, float_format="%.17g")
        bs = block_structure(mat)
        print(f"block structure of {label}: {bs.score:.4f} (neighbours {bs.near_mean:.4f} - layers >= {bs.far} apart "
              f"{bs.far_mean:.4f}, {bs.layers} layers)")
    return 0
