"""``nasrobust query`` and ``export``: read the result store."""

from __future__ import annotations

import argparse
from typing import Any

from nasrobust.cli.common import emit_json
from nasrobust.cli.guard import add_force
from nasrobust.errors import NasRobustError
from nasrobust.io import format_table

#: Filters shared by both commands: flag -> (ResultStore keyword, help).
_FILTERS = {
    "--space": ("space", "only this search space"),
    "--suite": ("suite", "only this noise suite (adversarial, natural, system, certified, ...)"),
    "--dataset": ("dataset", "only this dataset"),
    "--noise": ("noise", "only this perturbation (pgd_linf, gaussian_noise, pil/bilinear, ...)"),
    "--metric": ("metric", "only this metric (accuracy, ar, wcar, mce, ...)"),
    "--weights-id": ("weights_id", "only results of these weights"),
}
_PROTOCOL_FIELDS = ("eps", "norm", "steps", "restarts", "seed", "n_examples")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("query", help="robustness results of one architecture from a result store")
    p.add_argument("--db", required=True, help="result store file (written by `nasrobust evaluate --db`)")
    p.add_argument("--arch", required=True, help="architecture encoding ('<space>:' prefix optional)")
    _add_filters(p)
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("export", help="export a result store (or part of it) to Parquet or CSV")
    p.add_argument("--db", required=True, help="result store file")
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--format", choices=("parquet", "csv"), help="default: from the --out suffix, else parquet")
    p.add_argument("--arch", help="only this architecture encoding")
    _add_filters(p)
    add_force(p, "an existing --out file")
    p.set_defaults(func=cmd_export)


def _add_filters(p: argparse.ArgumentParser) -> None:
    for flag, (dest, text) in _FILTERS.items():
        p.add_argument(flag, dest=dest, help=text)


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {dest: getattr(args, dest) for dest, _ in _FILTERS.values()}


def _open(path: str):
    from nasrobust.store import open_results

    return open_results(path, readonly=True)


def cmd_query(args: argparse.Namespace) -> int:
    filters = _filters(args)
    with _open(args.db) as store:
        records = store.query(args.arch, **filters)
        if not records:
            raise NasRobustError(_no_results(store, args.arch, filters))
    if args.json:
        emit_json([r.to_dict() for r in records])
        return 0
    groups = {(r.key.encoding, r.key.weights_id, r.key.dataset) for r in records}
    shown = [f for f in _PROTOCOL_FIELDS if any(getattr(r.protocol, f) is not None for r in records)]
    header = ["suite", "noise", "level", "metric", "value", *shown]
    if len(groups) > 1:  # several weights or datasets: say which row is which
        header = ["weights_id", "dataset", *header]
    encoding, weights_id, dataset = sorted(groups)[0]
    print(encoding if len(groups) > 1 else f"{encoding}   weights {weights_id}   dataset {dataset}")
    rows = []
    for r in records:
        k = r.key
        lead = [k.weights_id, k.dataset] if len(groups) > 1 else []
        rows.append([*lead, k.suite, k.noise, k.level, k.metric, r.value,
                     *(_blank(getattr(r.protocol, f)) for f in shown)])
    print(format_table(rows, header))
    return 0


def _blank(value: Any) -> Any:
    return "" if value is None else value


def _no_results(store, arch: str, filters: dict[str, Any]) -> str:
    encodings = store.encodings()
    active = {k: v for k, v in filters.items() if v is not None}
    full = store.resolve_encoding(arch, filters.get("space"))
    if active and store.count(full) > 0:
        return (f"{full} has {store.count(full)} record(s) in {store.path}, but none with "
                f"{', '.join(f'{k}={v}' for k, v in active.items())}; drop a filter to see them")
    close = store.close_matches(full, n=1)
    spaces = store.spaces()
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (f"no results for {full!r} in {store.path}: the store holds {len(encodings)} architecture(s)"
            f"{' of space ' + ', '.join(spaces) if spaces else ''}.{hint} "
            "List them with `nasrobust export --db ... --out all.csv`")


def cmd_export(args: argparse.Namespace) -> int:
    from nasrobust.outputs import check_output

    check_output(args.out, force=args.force, inputs=[("--db", args.db)])
    filters = _filters(args)
    with _open(args.db) as store:
        n = store.count(args.arch, **filters)
        if n == 0:
            active = {k: v for k, v in filters.items() if v is not None}
            raise NasRobustError(
                f"no records in {args.db} match {active or 'the store'}"
                f"{' for ' + args.arch if args.arch else ''}; nothing written"
            )
        path = store.export(args.out, format=args.format, arch_or_encoding=args.arch, **filters)
    print(f"wrote {n} records to {path}")
    return 0
