"""Architectures from a file written by ``nasrobust sample`` (``--archs FILE``), with errors that say the fix."""

from __future__ import annotations

from typing import Any

from nasrobust.errors import NasRobustError


def _records(path: str) -> list[dict[str, Any]]:
    from nasrobust.io import read_records

    try:
        return read_records(path)
    except NasRobustError:
        raise
    except Exception as exc:  # a torn JSON line, a CSV pandas cannot parse, a foreign Parquet file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NasRobustError(f"cannot read architectures from {path} ({first}); write the file with "
                             f"`nasrobust sample --space SPACE --n N --out archs.jsonl`") from None


def read_encodings(path: str, flag: str = "--archs", space_name: str = "SPACE") -> list[str]:
    """The ``encoding`` of every record in ``path`` (a file of ``nasrobust sample``)."""
    records = _records(path)
    if not records:
        raise NasRobustError(f"{flag} {path} lists no architectures")
    if any(not isinstance(r, dict) or "encoding" not in r for r in records):
        columns = sorted({str(k) for r in records if isinstance(r, dict) for k in r})
        raise NasRobustError(f"{flag} {path} has no 'encoding' column (it has: {', '.join(columns) or 'nothing'}); "
                             f"write one with `nasrobust sample --space {space_name} --n N --out archs.jsonl`")
    return [str(rec["encoding"]) for rec in records]

