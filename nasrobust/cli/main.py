"""Entry point: ``nasrobust <command> ...``.

Each command family lives in its own module and adds its sub-parsers; a user error
(:class:`~nasrobust.errors.NasRobustError`) prints one message and exits with status 2, no
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

from nasrobust import __version__
from nasrobust.errors import NasRobustError



def command_modules() -> list[str]:
    """Every ``nasrobust/cli/*_cmd.py``; each adds its sub-commands via ``add_parsers``."""
    import nasrobust.cli as cli

    return sorted(f"{cli.__name__}.{m.name}" for m in pkgutil.iter_modules(cli.__path__) if m.name.endswith("_cmd"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nasrobust",
        description="Measure how neural-architecture choices affect robustness.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"nasrobust {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in command_modules():
        importlib.import_module(module).add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except NasRobustError as exc:
        print(f"nasrobust {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"nasrobust {args.command}: interrupted; finished work is kept, rerun to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
