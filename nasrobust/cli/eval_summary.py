"""The end-of-run summary of ``nasrobust evaluate``: units done, already complete, not applicable.

Kept apart from the command so the JSON shape (``--json``) is defined in one place; a script
reads it from stdout while progress and logs go to stderr.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from nasrobust.evaluator import ArchReport


def summarize(reports: Sequence[ArchReport], encodings: Sequence[str], suites: Sequence[str], *, db: str,
              weights_id: str | None, dataset: str, seconds: float) -> dict[str, Any]:
    """Per-suite counts of (arch, suite) units written now, skipped because complete, not applicable.

    A unit neither written nor found not-applicable by this process was already complete in the
    store (``evaluate`` skips those without loading data for them). With ``--workers`` (or another
    ``evaluate`` on the same store) the units the other processes claimed are counted apart. Under
    torchrun the counts are this rank's share.
    """
    keys = ("done", "done_by_other_process", "skipped_complete", "not_applicable")
    per_suite: dict[str, dict[str, int]] = {s: dict.fromkeys(keys, 0) for s in suites}
    for rep in reports:
        for s in suites:
            c = per_suite[s]
            if s in rep.written:
                c["done"] += 1
            elif s in rep.shared:
                c["done_by_other_process"] += 1
            elif s in rep.skipped:
                c["not_applicable"] += 1
            else:
                c["skipped_complete"] += 1
    total = {k: sum(c[k] for c in per_suite.values()) for k in keys}
    return {"units_done": total["done"], "units_done_by_other_process": total["done_by_other_process"],
            "units_skipped_complete": total["skipped_complete"],
            "units_not_applicable": total["not_applicable"], "archs": len(encodings), "models": len(reports), "suites": per_suite,
            "store": str(db), "weights_id": weights_id, "dataset": dataset, "wall_seconds": round(seconds, 3)}


def render(summary: dict[str, Any], as_json: bool) -> str:
    """One JSON object, or one human line per suite."""
    if as_json:
        return json.dumps(summary, sort_keys=True)
    lines = [f"{summary['units_done']} unit(s) evaluated by this process, {summary['units_done_by_other_process']} by "
             f"other worker processes sharing the store, {summary['units_skipped_complete']} skipped (already "
             f"complete in the store), {summary['units_not_applicable']} not applicable"]
    for name, c in summary["suites"].items():
        lines.append(f"  {name}: {c['done']} done, {c['done_by_other_process']} done by other processes, "
                     f"{c['skipped_complete']} already complete, {c['not_applicable']} not applicable")
    return "\n".join(lines)
