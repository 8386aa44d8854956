"""``nasrobust list``: the registered components of each kind, with the options each declares."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from nasrobust.io import format_table

#: Kinds of component -> (module, registry): what ``nasrobust list KIND`` reads.
REGISTRIES = {
    "spaces": ("nasrobust.space", "SPACES"),
    "suites": ("nasrobust.noise.base", "SUITES"),
    "attacks": ("nasrobust.noise.attacks", "ATTACKS"),
    "searchers": ("nasrobust.search", "SEARCHERS"),
    "metrics": ("nasrobust.metrics", "METRIC_KINDS"),
    "datasets": ("nasrobust.data", "DATASETS"),
}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="the registered spaces, suites, attacks, searchers, metric kinds and datasets",
                       description="Every registered component of a kind with its one-line description; "
                       "--options adds the options each declares (what --suite-option, --option, "
                       "or a metric spec's ?KEY=VALUE accept), with their types and defaults.")
    p.add_argument("kind", nargs="?", choices=sorted(REGISTRIES), help="one kind (default: all)")
    p.add_argument("--options", action="store_true", help="also list each component's options")
    p.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    from nasrobust.options import describe_options

    for kind in [args.kind] if args.kind else list(REGISTRIES):
        module, attr = REGISTRIES[kind]
        registry = getattr(importlib.import_module(module), attr)
        print(f"{kind}:")
        print(format_table([(name, registry.doc(name)) for name in registry.names()], ["name", "description"]))
        if args.options:
            for name in registry.names():
                options = getattr(registry.get(name), "Options", None)
                rows = describe_options(options) if options is not None else []
                if rows:
                    print(f"\n{kind[:-1]} {name} options:")
                    print(format_table([(n, t, _shown(d), h) for n, t, d, h in rows], ["option", "type", "default", "help"]))
        print()
    return 0


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) if value else "(none)"
    return "-" if value is None else str(value)
