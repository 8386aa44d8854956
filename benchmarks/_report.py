"""Shared tail of the benchmark scripts: print the Markdown report and write it when asked."""

from __future__ import annotations

from pathlib import Path


def emit(lines: list[str], out: str | Path | None) -> str:
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        Path(out).write_text(text)
    return text
