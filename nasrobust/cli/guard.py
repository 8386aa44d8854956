"""The ``--force`` flag every command that writes a result shares (see :mod:`nasrobust.outputs`)."""

from __future__ import annotations

import argparse


def add_force(p: argparse.ArgumentParser, what: str = "an existing result") -> None:
    p.add_argument("--force", action="store_true", help=f"overwrite {what} (refused without it)")
