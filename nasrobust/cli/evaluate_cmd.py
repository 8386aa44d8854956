"""``nasrobust evaluate``: score architectures on noise suites into a result store."""

from __future__ import annotations

import argparse
from typing import Any

from nasrobust.cli.common import parse_literal, positive_int
from nasrobust.errors import NasRobustError

ALL_SUITES = "adversarial,natural,system,certified"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score architectures against noise suites and store the results",
        description="Three modes: subnets of a trained supernet (--supernet with --archs/--arch/--n), "
        "one stand-alone checkpoint (--checkpoint), or a zoo model with timm's pretrained weights "
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
    src.add_argument("--pretrained", action="store_true", help="zoo models: load timm's pretrained weights (needs network)")
    p.add_argument("--dataset", help="dataset (taken from the checkpoint when omitted)")
    p.add_argument("--data-root", help="folder of a dataset that is not bundled")
    p.add_argument("--suites", default=ALL_SUITES, help=f"comma-separated (default {ALL_SUITES})")
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
    p.set_defaults(func=cmd_evaluate)


def parse_suite_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["adversarial.attacks=pgd_linf,fgsm", "natural.severities=1,3"]`` -> nested dict.

    Values are Python literals when they parse (numbers, tuples, booleans), else strings;
    comma-separated values become tuples.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, eq, value = item.partition("=")
        suite, dot, key = name.partition(".")
        if not (eq and dot and suite and key):
            raise NasRobustError(f"--suite-option {item!r}: expected SUITE.KEY=VALUE, e.g. adversarial.steps=10")
        parts = [parse_literal(v) for v in value.split(",")] if "," in value else [parse_literal(value)]
        out.setdefault(suite, {})[key.replace("-", "_")] = tuple(parts) if len(parts) > 1 else parts[0]
    return out


def _archs(space, args: argparse.Namespace, supernet=None) -> list:
    from nasrobust.cli.archs_file import read_archs

    archs = read_archs(args.archs, space) if args.archs else []
    for text in args.arch or []:
        archs.append(space.resolve(text))
    if args.n:
        archs.extend(space.sample(args.n, seed=args.sample_seed))
    if not archs:
        raise NasRobustError("nothing to evaluate: pass --archs FILE, --arch ENCODING or --n N")
    seen, unique = set(), []
    for a in archs:
        if a not in seen:
            seen.add(a)
            unique.append(a)
    return unique


def cmd_evaluate(args: argparse.Namespace) -> int:
    from nasrobust import checkpoint, distributed
    from nasrobust.data import load_dataset
    from nasrobust.evaluator import Evaluator, Reference, make_suites
    from nasrobust.outputs import check_writable_store
    from nasrobust.rankstore import finish_ranks, open_for_ranks
    from nasrobust.report import summary_table

    modes = [m for m in ("supernet", "checkpoint", "pretrained") if getattr(args, m)]
    if len(modes) != 1:
        raise NasRobustError("choose exactly one of --supernet, --checkpoint or --pretrained (zoo)")
    check_writable_store(args.db)
    device = distributed.local_device()
    distributed.init(device)
    suites = make_suites([s.strip() for s in args.suites.split(",") if s.strip()], parse_suite_options(args.suite_option))

    if args.supernet:
        model, payload = checkpoint.load_supernet(args.supernet, device)
        meta = checkpoint.meta_of(payload)
        if args.space:
            checkpoint.expect(meta, space=args.space, path=args.supernet)
        data = load_dataset(args.dataset or meta.dataset["name"], root=args.data_root or meta.data_root)
        _same_dataset(meta, data, args.supernet)
        space = model.supernet.space
        archs = _archs(space, args)
        weights_id = payload["weights_id"]
        ref_enc = space.resolve(args.reference).encoding if args.reference else model.supernet.largest().encoding
        store = open_for_ranks(args.db)
        evaluator = Evaluator(store, data, suites, n_examples=args.n_examples, cache_dir=args.cache_dir, device=device,
                              batch_size=args.batch_size, seed=args.seed, recalib_images=args.recalib_images,
                              reference=Reference(ref_enc, weights_id), progress=not args.no_progress)
        evaluator.evaluate_supernet(model, archs, weights_id)
    elif args.checkpoint:
        model, payload = checkpoint.load_model(args.checkpoint, device)
        meta = checkpoint.meta_of(payload)
        if args.space:
            checkpoint.expect(meta, space=args.space, path=args.checkpoint)
        data = load_dataset(args.dataset or meta.dataset["name"], root=args.data_root or meta.data_root)
        _same_dataset(meta, data, args.checkpoint)
        from nasrobust.space import get_space

        archs = [get_space(meta.space).decode(meta.arch)]
        weights_id = payload["weights_id"]
        store = open_for_ranks(args.db)
        reference = Reference(*args.reference.split("@", 1)) if args.reference and "@" in args.reference else None
        evaluator = Evaluator(store, data, suites, n_examples=args.n_examples, cache_dir=args.cache_dir, device=device,
                              batch_size=args.batch_size, seed=args.seed, reference=reference, progress=not args.no_progress)
        evaluator.evaluate(model, archs[0], weights_id)
    else:
        from nasrobust.models import ImageClassifier
        from nasrobust.space import get_space

        if args.space != "zoo" or not args.arch or not args.dataset:
            raise NasRobustError("--pretrained needs --space zoo --arch NAME --dataset imagefolder --data-root IMAGENET")
        space = get_space("zoo")
        data = load_dataset(args.dataset, root=args.data_root)
        if data.info.num_classes != 1000:
            raise NasRobustError(f"pretrained zoo models predict 1000 ImageNet classes; {data.info.name} has {data.info.num_classes}")
        store = open_for_ranks(args.db)
        archs = [space.resolve(a) for a in args.arch]
        evaluator = Evaluator(store, data, suites, n_examples=args.n_examples, cache_dir=args.cache_dir, device=device,
                              batch_size=args.batch_size, seed=args.seed, progress=not args.no_progress)
        for arch in archs:
            mean, std = space.normalization(arch)
            net = space.build(arch, num_classes=1000, pretrained=True)
            model = ImageClassifier(net, space.resolution(arch), mean, std)
            evaluator.evaluate(model, arch, f"timm-pretrained:{arch.encoding.partition(':')[2]}")
        weights_id = None
    store = finish_ranks(store)  # under torchrun: rank 0 merges every rank's own store into --db
    if distributed.is_main():
        print(summary_table(store, [a.encoding for a in archs], dataset=data.info.name, weights_id=weights_id))
        print(f"results in {args.db}")
    return 0


def _same_dataset(meta, data, path) -> None:
    if meta.dataset["name"] != data.info.name:
        raise NasRobustError(
            f"{path} was trained on {meta.dataset['name']}; evaluating on {data.info.name} would need the same classes. "
            f"Pass --dataset {meta.dataset['name']}"
        )
