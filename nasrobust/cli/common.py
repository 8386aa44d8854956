"""Helpers shared by CLI commands: argument types and JSON output.

Record files and tables are :mod:`nasrobust.io`; KEY=VALUE options are :mod:`nasrobust.options`.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError
    return value


positive_int.__name__ = "positive integer"


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")
