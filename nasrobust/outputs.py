"""Output paths, checked before any work: never an input, never overwritten without ``force``, writable.

Every command that writes a result calls :func:`check_output` first, so a mistake in an output
path costs nothing: no compute is spent and no file changes. The checks, in order:

1. the output is not one of the command's inputs (``export --db X.db --out X.db`` would
   replace the store with its own export);
2. the path can be made: no parent is a regular file, and the output is not a folder where a
   file is expected (or the reverse);
3. an existing result is only replaced with ``force`` (a file; or, for a folder, the files
   inside it that make up a finished result);
4. the place is writable: a probe file is created and removed in the nearest existing folder
   (permission bits alone say nothing when running as root, and a read-only mount or an
   immutable file is only found by trying), and an existing file is opened for appending.

Nothing on disk is changed by a check (the probe file is removed at once).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from nasrobust.errors import NasRobustError


class OutputError(NasRobustError):
    """An output path that cannot or must not be written."""


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _nearest_existing(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            return p
    return Path(".")


def _probe_folder(folder: Path, shown: Path, flag: str) -> None:
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".nasrobust-probe-"):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write {shown}: {folder} is not writable ({exc.strerror or exc}); "
                          f"choose another {flag}") from None


def _probe_file(path: Path, flag: str) -> None:
    try:
        with path.open("ab"):  # appends nothing: content and mtime stay as they are
            pass
    except OSError as exc:
        raise OutputError(f"cannot overwrite {path}: {exc.strerror or exc}; choose another {flag}") from None


def check_output(path: str | os.PathLike, *, force: bool = False, flag: str = "--out",
                 inputs: Iterable[tuple[str, str | os.PathLike | None]] = (), folder: bool = False,
                 result: Sequence[str] | None = None, companions: Sequence[str | os.PathLike] = ()) -> Path:
    """Check that ``path`` may be written; returns it as a :class:`Path`. Changes nothing on disk.

    ``inputs`` are ``(flag, path)`` pairs the output must not be (``None`` paths are skipped).
    ``folder``: the output is a folder; ``result`` names the files inside it that make up a
    finished result (their presence needs ``force``; ``None``: an existing folder is fine).
    ``companions`` are further files written beside a file output (e.g. a CSV beside a PNG);
    they are checked like the output itself.
    """
    out = Path(path).expanduser()
    for in_flag, in_path in inputs:
        if in_path is not None and _same(out, Path(in_path).expanduser()):
            raise OutputError(f"{flag} {out} is the input {in_flag + ' ' if in_flag else ''}{in_path}: writing it "
                              f"would destroy the input; choose another {flag}")
    existing = _nearest_existing(out)
    if existing != out and not existing.is_dir():
        raise OutputError(f"cannot write {out}: {existing} is a file, not a folder; choose another {flag}")
    if folder:
        if out.exists() and not out.is_dir():
            raise OutputError(f"{flag} {out} is a file; give a folder (it is created if missing)")
        present = [name for name in (result or ()) if (out / name).exists()]
        if present and not force:
            raise OutputError(f"{out} already holds a result ({', '.join(present)}); pass --force to overwrite it, "
                              f"or choose another {flag}")
        _probe_folder(out if out.is_dir() else existing, out, flag)
        for name in present:
            if (out / name).is_file():
                _probe_file(out / name, flag)
        return out
    for file in (out, *(Path(c) for c in companions)):
        if file.is_dir():
            raise OutputError(f"{flag} {file} is a folder; give a file path, e.g. {file / 'out'}{file.suffix or ''}")
        if file.exists() and not force:
            raise OutputError(f"{file} exists; pass --force to overwrite it, or choose another {flag}")
    _probe_folder(out.parent if out.parent.is_dir() else existing, out, flag)
    for file in (out, *(Path(c) for c in companions)):
        if file.exists():
            _probe_file(file, flag)
    return out


def check_writable_store(path: str | os.PathLike, flag: str = "--db") -> None:
    """A result store that will be written: its folder (for the journal files) and the file itself."""
    db = Path(path).expanduser()
    if db.is_dir():
        raise OutputError(f"{flag} {db} is a folder; give a store file, e.g. {db / 'results.db'}")
    existing = _nearest_existing(db)
    if existing != db and not existing.is_dir():
        raise OutputError(f"cannot write {db}: {existing} is a file, not a folder; choose another {flag}")
    _probe_folder(db.parent if db.parent.is_dir() else existing, db, flag)
    if db.exists():
        try:
            with db.open("r+b"):
                pass
        except OSError as exc:
            raise OutputError(f"{db} is read-only ({exc.strerror or exc}); make it writable or choose another "
                              f"{flag}") from None
