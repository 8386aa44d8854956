"""``nasrobust spaces``, ``sample`` and ``describe``: look at search spaces."""

from __future__ import annotations

import argparse
from pathlib import Path

from nasrobust.cli.common import add_budget_arguments, budget_from_args, emit_json, positive_int
from nasrobust.cli.guard import add_force
from nasrobust.io import format_table, human


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("spaces", help="list the search spaces with their sizes")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_spaces)

    p = sub.add_parser("sample", help="sample distinct architectures with their cost and factors")
    p.add_argument("--space", required=True, help="search space (see `nasrobust spaces`)")
    p.add_argument("--n", type=positive_int, required=True, help="number of distinct architectures")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (same seed, same output)")
    p.add_argument("--out", help="write records to .jsonl, .csv or .parquet")
    p.add_argument("--num-classes", type=positive_int, help="classifier size for cost (space default)")
    p.add_argument("--input-size", type=positive_int,
                   help="image size of the data: picks the space's small-input variant for 28-32 px images (as "
                   "training and evaluation do), and sets the input size of spaces without a resolution choice")
    add_budget_arguments(p, "sample uniformly from the architectures with")
    add_force(p, "an existing --out file")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("describe", help="factors, cost and layers of one architecture")
    p.add_argument("--space", required=True, help="search space (see `nasrobust spaces`)")
    p.add_argument("--arch", required=True, help="an encoding (prefix optional) or a named point")
    p.add_argument("--num-classes", type=positive_int)
    p.add_argument("--input-size", type=positive_int)
    p.add_argument("--json", action="store_true", help="print the same record as `sample`")
    p.set_defaults(func=cmd_describe)


def cmd_spaces(args: argparse.Namespace) -> int:
    from nasrobust.space import get_space, list_spaces

    rows = []
    for name in list_spaces():
        space = get_space(name)
        rows.append({"space": name, "size": space.size(), "description": space.description})
    if args.json:
        emit_json(rows)
    else:
        print(format_table([(r["space"], r["size"], r["description"]) for r in rows], ["space", "size", "description"]))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from nasrobust.io import RECORD_FORMATS, write_records
    from nasrobust.outputs import OutputError, check_output
    from nasrobust.space import get_space

    if args.out:
        check_output(args.out, force=args.force)
        if Path(args.out).suffix.lower() not in RECORD_FORMATS:
            raise OutputError(f"cannot write {args.out}: use one of {', '.join(RECORD_FORMATS)}")
    space = get_space(args.space)
    if args.input_size:
        variant = space.for_input_size(args.input_size)
        if variant.name != space.name:
            print(f"using {variant.name}, the small-input variant of {space.name}, for {args.input_size}-px images")
            space = variant
    budget = budget_from_args(args, args.num_classes, args.input_size)
    archs = budget.sample(space, args.n, seed=args.seed) if budget else space.sample(args.n, seed=args.seed)
    records = [space.record(a, args.num_classes, args.input_size) for a in archs]
    params = [r["params"] for r in records]
    flops = [r["flops"] for r in records]
    inside = f" inside {budget}" if budget else ""
    print(
        f"sampled {len(records)} distinct {space.name} architectures{inside} (seed {args.seed}, space size {space.size()})\n"
        f"  params {human(min(params))} .. {human(max(params))}   FLOPs (MACs) {human(min(flops))} .. {human(max(flops))}"
    )
    if budget:
        print(f"  {archs.describe()}")
    if args.out:
        print(f"  wrote {write_records(records, args.out)}")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from nasrobust.space import get_space

    space = get_space(args.space)
    arch = space.resolve(args.arch)
    record = space.record(arch, args.num_classes, args.input_size)
    if args.json:
        emit_json(record)
        return 0
    import torch

    from nasrobust.models import layer_summary

    print(f"{record['encoding']}")
    print(f"  params {record['params']:,} ({human(record['params'])})   FLOPs (MACs) {record['flops']:,} ({human(record['flops'])})")
    print(f"  resolution {space.resolution(arch, args.input_size)}")
    print("factors:")
    print(format_table(sorted(record["factors"].items()), ["factor", "value"]))
    print("layers:")
    with torch.device("meta"):  # structure only: no memory, no init time
        net = space.build(arch, args.num_classes, args.input_size)
    print(layer_summary(net))
    return 0
