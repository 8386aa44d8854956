"""Shared tail of the benchmark scripts: print the Markdown report and write it when asked."""

from __future__ import annotations

from pathlib import Path


def emit(lines: list[str], out: str | Path | None) -> str:
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        Path(out).write_text(text)
    return text


def refuse_overwrite(*paths: str | Path | None, force: bool) -> None:
    """Exit 2 with a one-line error if a report the run would write exists (the runs cost minutes to hours)."""
    import sys

    for path in paths:
        if path and Path(path).exists() and not force:
            print(f"error: {path} exists; pass --force to overwrite it or choose another path", file=sys.stderr)
            raise SystemExit(2)
