"""Architectures from a file written by ``nasrobust sample`` (``--archs FILE``), with errors that say the fix."""

from __future__ import annotations

from typing import Any

from nasrobust.errors import NasRobustError


def _records(path: str) -> list[dict[str, Any]]:
    from nasrobust.cli.common import read_records

    try:
        return read_records(path)
    except NasRobustError:
        raise
    except Exception as exc:  # a torn JSON line, a CSV pandas cannot parse, a foreign Parquet file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NasRobustError(f"cannot read architectures from {path} ({first}); write the file with "
                             f"`nasrobust sample --space SPACE --n N --out archs.jsonl`") from None


def read_archs(path: str, space, flag: str = "--archs") -> list:
    """The architectures of ``space`` listed in ``path`` (one record per architecture with an ``encoding``)."""
    records = _records(path)
    if not records:
        raise NasRobustError(f"{flag} {path} lists no architectures")
    if any(not isinstance(r, dict) or "encoding" not in r for r in records):
        columns = sorted({str(k) for r in records if isinstance(r, dict) for k in r})
        raise NasRobustError(f"{flag} {path} has no 'encoding' column (it has: {', '.join(columns) or 'nothing'}); "
                             f"write one with `nasrobust sample --space {space.name} --n N --out {space.name}-archs.jsonl`")
    archs = []
    for rec in records:
        text = str(rec["encoding"])
        prefix = text.partition(":")[0]
        if ":" in text and prefix != space.name:
            from nasrobust.space import SPACES

            if prefix in SPACES.names():
                raise NasRobustError(
                    f"{flag} {path} holds {prefix} architectures, but the model is of space {space.name}; "
                    f"sample architectures of it: `nasrobust sample --space {space.name} --n N --out {space.name}-archs.jsonl`")
        archs.append(space.decode(text))
    return archs
