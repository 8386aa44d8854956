"""Helpers shared by CLI commands: argument types and JSON output.

Record files and tables are :mod:`nasrobust.io`; KEY=VALUE options are :mod:`nasrobust.options`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from nasrobust.budget import Budget


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


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")
