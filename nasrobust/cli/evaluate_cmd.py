"""``nasrobust evaluate``: score architectures on noise suites into a result store."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from nasrobust.cli.common import positive_int
from nasrobust.errors import NasRobustError
from nasrobust.options import parse_assignments


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score architectures against noise suites and store the results",
        description="Three modes: subnets of a trained supernet (--supernet with --archs/--arch/--n), "
        "one stand-alone checkpoint (--checkpoint), or networks with published weights "
        "(--space zoo --arch NAME --pretrained).",
    )
    src = p.add_argument_group("what to evaluate")
    src.add_argument("--space", help="search space (taken from the checkpoint when omitted)")
    src.add_argument("--supernet", help="supernet checkpoint (run folder or file)")
    src.add_argument("--archs", help="architectures file from `nasrobust sample` (.jsonl/.csv/.parquet)")
    src.add_argument("--arch", action="append", help="an encoding or named point (repeatable)")
    src.add_argument("--num-archs", "--n", dest="n", type=positive_int,
                     help="evaluate this many sampled subnets (with --supernet; under torchrun spell it --num-archs)")
    src.add_argument("--sample-seed", type=int, default=0, help="seed of --n sampling")
    src.add_argument("--checkpoint", help="a stand-alone checkpoint from `nasrobust train`")
    src.add_argument("--pretrained", action="store_true",
                     help="networks with the published weights their space declares (zoo: timm's; downloads them)")
    p.add_argument("--dataset", help="dataset (taken from the checkpoint when omitted)")
    p.add_argument("--data-root", help="folder of a dataset that is not bundled")
    p.add_argument("--suites", help="comma-separated registered suites (default: every one; `nasrobust list` shows them)")
    p.add_argument("--suite-option", action="append", default=[], metavar="SUITE.KEY=VALUE",
                   help="a suite option, e.g. adversarial.attacks=pgd_linf,fgsm or natural.severities=1,3,5")
    p.add_argument("--db", default="results.db", help="SQLite result store (created if missing)")
    p.add_argument("--n-examples", type=positive_int, help="test examples per evaluation (default: all)")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--cache-dir", help="where model-independent perturbed data is cached (~/.cache/nasrobust)")
    p.add_argument("--reference", help="mCE reference model: an encoding of the same supernet (default: its largest "
                   "subnet), or ENCODING@WEIGHTS_ID of an already evaluated model for --checkpoint")
    p.add_argument("--recalib-images", type=positive_int, default=2000, help="training images for BN re-calibration of subnets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--overwrite-protocol", action="store_true",
                   help="results of these models already in --db under another protocol (e.g. other --n-examples or "
                   "suite options) are re-scored under this one and replaced (default: refuse before computing)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON summary object on stdout (units done/skipped, store, weights id, wall time)")
    p.add_argument("--workers", type=int,
                   help="worker processes claiming (architecture, suite) units from --db, each with cores/N torch "
                        "threads (default: one per core on the CPU, 1 on a GPU); other `evaluate` commands on the "
                        "same store share the units too. Results do not depend on it")
    p.set_defaults(func=cmd_evaluate)


def parse_suite_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["adversarial.attacks=pgd_linf,fgsm", "natural.severities=1,3"]`` -> nested dict.

    Values follow the one KEY=VALUE grammar of :mod:`nasrobust.options` (a comma list is a
    tuple); each suite coerces and checks its own options when it is created.
    """
    from nasrobust.noise.base import SUITES

    out: dict[str, dict[str, Any]] = {}
    for name, value in parse_assignments(items, what="--suite-option").items():
        suite, dot, key = name.partition(".")
        if not (dot and suite and key):
            raise NasRobustError(f"--suite-option {name}=...: expected SUITE.KEY=VALUE, e.g. adversarial.steps=10")
        SUITES.get(suite)  # an unknown suite: "did you mean", before any work
        out.setdefault(suite, {})[key] = value
    return out


def cmd_evaluate(args: argparse.Namespace) -> int:
    from nasrobust import distributed
    from nasrobust.headlines import summary_table
    from nasrobust.outputs import check_writable_store
    from nasrobust.store import open_results
    from nasrobust.workers import WorkerPool, check_workers, default_workers, torch_threads

    check_workers(args.workers)

    modes = [m for m in ("supernet", "checkpoint", "pretrained") if getattr(args, m)]
    if len(modes) != 1:
        raise NasRobustError("choose exactly one of --supernet, --checkpoint or --pretrained (zoo)")
    check_writable_store(args.db)
    device = distributed.local_device()
    distributed.init(device)
    if distributed.world_size() > 1 and (args.workers or 1) > 1:
        raise NasRobustError("--workers > 1 cannot be combined with torchrun (its ranks already share the work); "
                             "drop --workers")
    worker = getattr(args, "_worker", False)
    workers = 1 if distributed.world_size() > 1 or worker else (args.workers or default_workers(device))
    t0 = time.time()
    # this process is worker 0; the others are spawned copies that claim units from the same store
    pool = WorkerPool(cmd_evaluate, argparse.Namespace(**{**vars(args), "_worker": True}), workers)
    reports: list[Any] = []
    try:
        with torch_threads(pool.threads):
            encodings, weights_id, dataset = _evaluate(args, device, reports, pool.start)
    finally:
        code = pool.join()
    distributed.barrier()
    if code == 0 and distributed.is_main() and not worker:
        from nasrobust.cli.eval_summary import render, summarize
        from nasrobust.noise.base import SUITES

        summary = summarize(reports, encodings, suites_arg(args) or SUITES.names(), db=args.db, weights_id=weights_id,
                            dataset=dataset, seconds=time.time() - t0)
        if args.json:
            print(render(summary, as_json=True))
        else:
            with open_results(args.db, create=False) as store:
                print(summary_table(store, encodings, dataset=dataset, weights_id=weights_id))
            print(render(summary, as_json=False))
            print(f"results in {args.db}")
    return code


def suites_arg(args: argparse.Namespace) -> list[str] | None:
    return [s.strip() for s in args.suites.split(",") if s.strip()] if args.suites else None


def _evaluate(args: argparse.Namespace, device: Any, reports: list[Any],
              on_ready: Callable[[], None]) -> tuple[list[str], str | None, str]:
    """Score what ``args`` name into ``args.db`` (per-model reports into ``reports``), claiming units so other
    processes on the store share the work."""
    from nasrobust import distributed
    from nasrobust.claims import Claims
    from nasrobust.cli.archs_file import read_encodings
    from nasrobust.evaluation import LARGEST, EvalProtocol, evaluate

    protocol = EvalProtocol(n_examples=args.n_examples, suite_options=parse_suite_options(args.suite_option),
                            seed=args.seed, recalib_images=args.recalib_images)
    claims = Claims(args.db) if distributed.world_size() == 1 else None
    common = dict(db=args.db, suites=suites_arg(args), protocol=protocol, batch_size=args.batch_size,
                  cache_dir=args.cache_dir, device=device, overwrite_protocol=args.overwrite_protocol,
                  progress=not args.no_progress and not getattr(args, "_worker", False), claims=claims,
                  on_ready=on_ready)
    try:
        if args.pretrained:
            return _pretrained(args, common, reports)
        archs = read_encodings(args.archs) if args.archs else []
        result = evaluate(args.supernet or args.checkpoint, kind="supernet" if args.supernet else "standalone",
                          space=args.space, data=args.dataset, data_root=args.data_root,
                          archs=[*archs, *(args.arch or [])], n_archs=args.n, sample_seed=args.sample_seed,
                          reference=args.reference or LARGEST, **common)
        reports.extend(result.reports)
        return list(result.encodings), result.weights_id, result.dataset
    finally:
        if claims is not None:
            claims.close()


def _pretrained(args: argparse.Namespace, common: dict[str, Any], reports: list[Any]) -> tuple[list[str], None, str]:
    """Networks with the published weights their space declares (``SearchSpace.pretrained``), each keyed by its
    own weights id."""
    from nasrobust.data import load_dataset
    from nasrobust.evaluation import evaluate
    from nasrobust.space import get_space, list_spaces

    if not args.space or not args.arch or not args.dataset:
        raise NasRobustError("--pretrained needs --space SPACE --arch NAME --dataset DATASET, e.g. --space zoo "
                             "--arch resnet50 --dataset imagefolder --data-root IMAGENET")
    space = get_space(args.space)
    if not space.has_pretrained():
        usable = [n for n in list_spaces() if get_space(n).has_pretrained()]
        raise NasRobustError(f"space {space.name!r} has no published weights; --pretrained works with {', '.join(usable)}")
    archs = list(dict.fromkeys(space.resolve(a) for a in args.arch))
    data = load_dataset(args.dataset, root=args.data_root)
    if data.info.num_classes != space.num_classes:
        raise NasRobustError(f"pretrained {space.name} models predict {space.num_classes} classes; "
                             f"{data.info.name} has {data.info.num_classes}")
    for arch in archs:
        model, weights_id = space.pretrained(arch)
        reports.extend(evaluate(model, archs=[arch], data=data, weights_id=weights_id, reference=None, **common).reports)
    return [a.encoding for a in archs], None, data.info.name
