"""The summary table printed after ``evaluate`` / ``study``: every suite's headline metrics."""

from __future__ import annotations

from nasrobust.records import Protocol, Record, ResultKey
from nasrobust.headlines import summary_rows
from nasrobust.space import get_space
from nasrobust.store import open_results

PROTOCOL = Protocol.make(seed=0, n_examples=100)


def test_summary_rows_show_every_suite_at_its_largest_level(tmp_path):
    enc = get_space("nb201").sample(1, seed=0)[0].encoding
    values = [
        ("adversarial", "clean", 0.0, "accuracy", 0.97),
        ("adversarial", "pgd_linf", 0.05, "accuracy", 0.60),
        ("adversarial", "pgd_linf", 0.1, "accuracy", 0.08),
        ("adversarial", "worst_case", 1.0, "accuracy", 0.05),
        ("natural", "mce", 0.0, "mce", 1.25),
        ("certified", "ibp_linf", 0.0, "radius_mean", 0.004),
        ("certified", "jacobian_linf", 0.1, "jacobian_estimate", -3.5),
        ("certified", "jacobian_linf", 0.3, "jacobian_estimate", -10.5),
    ]
    with open_results(tmp_path / "r.db", create=True) as store:
        store.write_many(Record(ResultKey("nb201", enc, "w0", "mnist5k", s, n, lv, m), v, PROTOCOL)
                         for s, n, lv, m, v in values)
        header, rows = summary_rows(store, [enc])
    row = dict(zip(header, rows[0]))
    assert row["clean acc"] == 0.97
    assert row["PGD-Linf acc (max eps)"] == 0.08  # the largest eps, not the first stored
    assert row["worst-case acc"] == 0.05
    assert row["mCE"] == 1.25
    assert row["IBP Linf radius"] == 0.004
    assert row["Jacobian estimate (max eps)"] == -10.5
    assert row["system mean"] == "-"  # a suite that did not run shows a dash
