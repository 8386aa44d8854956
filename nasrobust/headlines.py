"""The headline table of stored results (printed after ``evaluate`` and ``study``): one row per
architecture, one column per headline metric that a registered suite declares."""

from __future__ import annotations

from collections.abc import Sequence

from nasrobust.io import format_table
from nasrobust.noise.base import SUITES
from nasrobust.store import ResultStore


def headline_columns() -> list[tuple[str, str, str, str]]:
    """``(suite, noise, metric, column)`` for every registered suite's headline metrics."""
    cols = []
    for name in SUITES.names():
        for info in SUITES.get_class(name).headlines():
            cols.append((name, str(info.noise), info.metric, str(info.headline)))
    return cols


def summary_rows(store: ResultStore, encodings: Sequence[str], dataset: str | None = None,
                 weights_id: str | None = None) -> tuple[list[str], list[list[object]]]:
    """One row per encoding: each headline metric at its largest stored level ("-" when absent)."""
    cols = headline_columns()
    rows = []
    for enc in encodings:
        recs = store.query(enc, dataset=dataset, weights_id=weights_id)
        best: dict[tuple[str, str, str], tuple[float, float]] = {}
        for r in recs:
            k = (r.key.suite, r.key.noise, r.key.metric)
            if k not in best or r.key.level > best[k][0]:
                best[k] = (r.key.level, r.value)
        row: list[object] = [enc if len(enc) <= 64 else enc[:61] + "..."]
        for suite, noise, metric, _ in cols:
            row.append(best[(suite, noise, metric)][1] if (suite, noise, metric) in best else "-")
        rows.append(row)
    return ["architecture", *(c[3] for c in cols)], rows


def summary_table(store: ResultStore, encodings: Sequence[str], dataset: str | None = None,
                  weights_id: str | None = None) -> str:
    header, rows = summary_rows(store, encodings, dataset, weights_id)
    return format_table(rows, header)
