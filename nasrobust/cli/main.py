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


class _Skipped:
    """Stands in for the sub-parser of a command that is not being run: every call is a no-op."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: self


class _OnlyCommand:
    """Wraps the sub-parsers action so that only ``command``'s parser is built (argparse spends
    most of a short command's start-up building the parsers of all the others)."""

    def __init__(self, sub: argparse._SubParsersAction, command: str):
        self.sub, self.command, self.found = sub, command, False

    def add_parser(self, name: str, **kwargs):
        if name != self.command and self.command not in kwargs.get("aliases", ()):
            return _Skipped()
        self.found = True
        return self.sub.add_parser(name, **kwargs)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser; with ``command``, only that sub-command is built (all of them when it is unknown)."""
    parser = argparse.ArgumentParser(
        prog="nasrobust",
        description="Measure how neural-architecture choices affect robustness.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"nasrobust {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    only = _OnlyCommand(sub, command) if command else None
    for module in command_modules():
        importlib.import_module(module).add_parsers(only or sub)
    if only is not None and not only.found:
        return build_parser()
    return parser


def _command(argv: list[str]) -> str | None:
    """The sub-command named in ``argv`` (the first word that is not an option), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command(argv)).parse_args(argv)
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
    except OSError as exc:  # a file the user named that cannot be read or written: one line, not a traceback
        if args.verbose:
            raise
        print(f"nasrobust {args.command}: error: {exc} (run with -v for the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nasrobust {args.command}: interrupted; finished work is kept, rerun to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
