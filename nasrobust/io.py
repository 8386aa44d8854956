"""Reading and writing what the toolkit hands to people: record files and plain-text tables.

Both the library (a study writes its sampled architectures, prints its headline table) and the
command line use these, so they live here, below every layer that needs them, and not in
``nasrobust.cli``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nasrobust.errors import NasRobustError

#: Record file formats, by file suffix.
RECORD_FORMATS = (".jsonl", ".json", ".csv", ".parquet")


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
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict(orient="records")]


def format_table(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain fixed-width text table."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]

    def line(items: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(items, widths)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in cells)])


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


__all__ = ["RECORD_FORMATS", "format_table", "human", "read_records", "write_records"]
