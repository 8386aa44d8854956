"""``nasrobust merge OUT.db IN.db ...``: combine result stores (e.g. the per-rank stores of a torchrun job)."""

from __future__ import annotations

import argparse

from nasrobust.errors import NasRobustError


DESCRIPTION = (
    "Copies every record, completed work unit and run of each input store into OUT (created if missing; records "
    "already in OUT are kept). Before anything is written, all stores are checked against each other: a key held "
    "under two different protocols is a conflict, and then nothing is merged. Typical use: per-rank stores left "
    "by a torchrun job (results.rank*.db)."
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    help_text = "combine result stores into one, with protocol checks (conflicts are reported, nothing is overwritten)"
    p = sub.add_parser("merge", help=help_text, description=DESCRIPTION)
    p.add_argument("out", help="the store to merge into (created if missing); never one of the inputs")
    p.add_argument("inputs", nargs="+", help="stores to merge from (read only)")
    p.set_defaults(func=cmd_merge)


def cmd_merge(args: argparse.Namespace) -> int:
    import warnings
    from pathlib import Path

    from nasrobust.outputs import check_output
    from nasrobust.store import ValueMismatchWarning, merge_conflicts, open_results

    out = check_output(args.out, force=True, flag="OUT", inputs=[("", i) for i in args.inputs])
    conflicts = merge_conflicts([*([out] if out.exists() else []), *args.inputs])
    if conflicts:
        shown = "; ".join(str(c) for c in conflicts[:3])
        more = f" (and {len(conflicts) - 3} more)" if len(conflicts) > 3 else ""
        raise NasRobustError(f"nothing merged: {len(conflicts)}{'+' if len(conflicts) >= 10 else ''} key(s) are stored "
                             f"under different protocols: {shown}{more}. One key holds one protocol: merge those "
                             "stores into separate outputs, or re-evaluate with the same protocol")
    with open_results(out, create=True) as store:
        for path in args.inputs:
            with warnings.catch_warnings():  # the mismatch count is printed below
                warnings.simplefilter("ignore", ValueMismatchWarning)
                report = store.merge_from(Path(path))
            note = (f", {report.value_mismatch} with a different value (kept {out}'s)" if report.value_mismatch else "")
            print(f"{path}: {report.inserted} new record(s), {report.identical} already in {out}{note}, "
                  f"{report.units} completed unit(s)")
        print(f"{out}: {len(store)} records")
    return 0
