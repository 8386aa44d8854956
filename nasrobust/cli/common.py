"""Helpers shared by CLI commands: argument types, output files, tables."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasrobust.errors import NasRobustError

if TYPE_CHECKING:  # pragma: no cover
    from nasrobust.budget import Budget

#: Output formats by file suffix.
RECORD_FORMATS = (".jsonl", ".json", ".csv", ".parquet")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError
    return value


positive_int.__name__ = "positive integer"


def add_budget_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--params MIN:MAX`` and ``--flops MIN:MAX`` (see :mod:`nasrobust.budget`)."""
    parser.add_argument("--params", metavar="MIN:MAX",
                        help=f"{what} MIN <= parameters <= MAX; K/M/G units, either end optional "
                             "(e.g. 20M:30M, :5M, 1.5M:)")
    parser.add_argument("--flops", metavar="MIN:MAX",
                        help=f"{what} MIN <= FLOPs (MACs) <= MAX (e.g. 300M:600M, 1.5G:2G, :2G)")


def budget_from_args(args: argparse.Namespace, num_classes: int | None = None,
                     input_size: int | None = None) -> "Budget | None":
    """The :class:`~nasrobust.budget.Budget` of ``--params`` / ``--flops``; ``None`` when neither is given."""
    if args.params is None and args.flops is None:
        return None
    from nasrobust.budget import Budget

    return Budget.parse(args.params, args.flops, num_classes=num_classes, input_size=input_size)


def parse_literal(text: str) -> Any:
    """A CLI value as a Python literal when it is one (``3``, ``0.5``, ``True``), else the string."""
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_options(items: list[str], flag: str) -> dict[str, Any]:
    """``["channels=8", "cells-per-stage=1"]`` -> ``{"channels": 8, "cells_per_stage": 1}``."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise NasRobustError(f"{flag} {item!r}: expected KEY=VALUE, e.g. channels=8")
        out[key.replace("-", "_")] = parse_literal(value)
    return out


def write_records(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write records as JSON lines, or flattened (``factors.<name>`` columns) as CSV/Parquet."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in RECORD_FORMATS:
        raise NasRobustError(f"cannot write {path}: use one of {', '.join(RECORD_FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".jsonl", ".json"):
        with path.open("w") as f:
            for rec in records:
                f.write(json.dumps(rec, sort_keys=False) + "\n")
        return path
    import pandas as pd

    frame = pd.json_normalize(list(records))
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Read what :func:`write_records` wrote (JSON lines, CSV or Parquet) back as dicts."""
    path = Path(path)
    if not path.exists():
        raise NasRobustError(f"{path} does not exist; write one with `nasrobust sample --out {path}`")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        with path.open() as f:
            return [json.loads(line) for line in f if line.strip()]
    if suffix not in RECORD_FORMATS:
        raise NasRobustError(f"cannot read {path}: use one of {', '.join(RECORD_FORMATS)}")
    import pandas as pd

    frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    return frame.to_dict(orient="records")


def format_table(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain fixed-width text table."""
    rows = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def human(n: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:g}"


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")
