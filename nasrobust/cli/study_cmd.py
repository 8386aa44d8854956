"""``nasrobust study``: sample -> train supernet -> evaluate on every suite -> analysis report."""

from __future__ import annotations

import argparse
import dataclasses

from nasrobust.cli.common import positive_int
from nasrobust.cli.guard import add_force
from nasrobust.options import parse_assignments
from nasrobust.cli.evaluate_cmd import parse_suite_options
from nasrobust.errors import NasRobustError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="the whole study in one command: sample, train the supernet, evaluate every suite, write the report",
        description="Everything goes into --out (config.toml, archs.jsonl, supernet/, results.db, report/). "
        "Rerunning the same command continues where it stopped; `--config OUT/config.toml` reproduces a study. "
        "Under torchrun the supernet trains data-parallel and the evaluation is sharded.",
    )
    p.add_argument("--config", help="a study's config.toml (every other option is then taken from it)")
    p.add_argument("--space", default="bignas", help="search space (default bignas; its small variant for 28/32-px data)")
    p.add_argument("--num-archs", "--n", dest="n", type=positive_int, default=1200,
                   help="architectures sampled (default 1200; under torchrun spell it --num-archs)")
    p.add_argument("--dataset", default="mnist5k", help="dataset (default the bundled mnist5k)")
    p.add_argument("--data-root", help="folder of a dataset that is not bundled")
    p.add_argument("--out", default="study", help="study folder (default ./study)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--replicates", type=int,
                   help="supernets trained with seeds seed, seed+1, ...; the same subnets are scored in each "
                        "(default: the protocol's, cpu 2, full 1)")
    p.add_argument("--standalone-check", type=int, metavar="N",
                   help="fine-tune N of the scored subnets stand-alone from the supernet (replicate 0) and score them "
                        "with the same protocol; the report gives the supernet vs stand-alone Kendall tau per metric "
                        "(default: the protocol's, cpu 3, full 20; 0: no check)")
    p.add_argument("--techniques", default="standard",
                   help="comma-separated training techniques, one supernet each x replicate, the same subnets scored "
                        "in each (named techniques standard, pgd-at, fgsm-rs, trades, or any preset; default standard)")
    p.add_argument("--preset", default="quick", help="supernet training recipe preset (default quick)")
    p.add_argument("--epochs", type=positive_int, help="override the preset's epochs")
    p.add_argument("--supernet-option", action="append", default=[], metavar="KEY=VALUE",
                   help="supernet option of the space, e.g. channels=8 or cells_per_stage=1 (cell spaces)")
    p.add_argument("--protocol", choices=("auto", "cpu", "full"), default="auto",
                   help="evaluation protocol: full (every subnet, suite defaults) with a GPU, cpu otherwise (default auto)")
    p.add_argument("--eval-archs", type=positive_int, help="subnets evaluated (default: the protocol's; cpu: 30)")
    p.add_argument("--n-examples", type=positive_int, help="test images per evaluation (default: the protocol's)")
    p.add_argument("--suites", help="comma-separated registered suites (default: every one; `nasrobust list` shows them)")
    p.add_argument("--suite-option", action="append", default=[], metavar="SUITE.KEY=VALUE",
                   help="a suite option on top of the protocol's, e.g. adversarial.steps=10")
    p.add_argument("--suite-archs", action="append", default=[], metavar="SUITE=N",
                   help="score SUITE on only the first N evaluated subnets (a costly suite on a subset; "
                        "default: the protocol's, cpu certified=4)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the report's intervals")
    p.add_argument("--cache-dir", help="where model-independent perturbed data is cached (~/.cache/nasrobust)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--workers", type=int, help="worker processes of the evaluate stage (default: one per "
                   "core on the CPU, 1 on a GPU); a run setting recorded in config.toml that does not change results")
    add_force(p, "a study with other settings in --out (its archs, supernet, results and report are deleted)")
    p.set_defaults(func=cmd_study)


def config_from_args(args: argparse.Namespace):
    from nasrobust.study import ALL_SUITES, StudyConfig
    from nasrobust.workers import check_workers

    check_workers(args.workers)

    if args.config:
        config = StudyConfig.from_toml(args.config)
        return dataclasses.replace(config, workers=args.workers) if args.workers else config
    suites = tuple(s.strip() for s in args.suites.split(",") if s.strip()) if args.suites else ALL_SUITES
    if args.n_boot < 0:
        raise NasRobustError(f"--n-boot must be >= 0, got {args.n_boot}")
    return StudyConfig(
        space=args.space, n=args.n, dataset=args.dataset, out=args.out, data_root=args.data_root, seed=args.seed,
        preset=args.preset, recipe={"epochs": args.epochs} if args.epochs else {},
        supernet=parse_assignments(args.supernet_option, what="--supernet-option"), protocol=args.protocol,
        eval_archs=args.eval_archs, n_examples=args.n_examples, suites=suites,
        suite_options=parse_suite_options(args.suite_option), suite_archs=_suite_archs(args.suite_archs), n_boot=args.n_boot, cache_dir=args.cache_dir,
        replicates=args.replicates, techniques=tuple(t.strip() for t in args.techniques.split(",") if t.strip()),
        workers=args.workers, standalone_check=args.standalone_check,
    )


def _suite_archs(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        suite, sep, n = item.partition("=")
        if not sep or not n.strip().isdigit():
            raise NasRobustError(f"--suite-archs {item!r}: expected SUITE=N with N >= 1, e.g. --suite-archs certified=10")
        out[suite.strip()] = int(n)
    return out


def cmd_study(args: argparse.Namespace) -> int:
    from nasrobust import distributed
    from nasrobust.outputs import check_output
    from nasrobust.study import Study

    config = config_from_args(args)
    check_output(config.out, folder=True)
    study = Study(config, progress=not args.no_progress, force=args.force)
    result = study.run()
    if distributed.is_main():
        c = study.config
        times = ", ".join(f"{k} {v / 60:.1f} min" for k, v in result.seconds.items())
        print(f"study of {c.eval_archs} of {c.n} {c.space} subnets on {c.dataset} ({c.protocol} protocol): {times}")
        print(f"  config   {study.config_file}  (reproduce: nasrobust study --config {study.config_file})")
        print(f"  archs    {result.archs}")
        print(f"  supernet {result.checkpoint}")
        print(f"  results  {result.db}  (query: nasrobust query --db {result.db} ...)")
        print(f"  report   {result.report}")
    return 0
