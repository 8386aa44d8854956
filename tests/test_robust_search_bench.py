"""benchmarks/robust_search_nb201.py: its paired per-seed statistics on known numbers, and the DSRNA verdict
that benchmarks/findings.py quotes from robust_search_nb201.md."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_bench", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("diffs, p", [([1.0, 2.0, 3.0], 1 / 8), ([3.0, -1.0, -1.0], 4 / 8), ([-1.0, -2.0, -3.0], 1.0),
                                      ([0.5, 0.5], 1 / 4)])
def test_sign_flip_p_is_exact(diffs, p):
    assert _load("robust_search_nb201").sign_flip_p(diffs) == pytest.approx(p)


def _results(cb: list[float], darts: list[float]) -> dict:
    def entry(v: float) -> dict:
        return {"search": {"encoding": "nb201:x", "search_seconds": 1.0}, "eval": {"cert_median": v}}

    out = {f"dsrna-cb/s{s}": entry(v) for s, v in enumerate(cb)}
    out |= {f"darts/s{s}": entry(v) for s, v in enumerate(darts)}
    return out


def test_paired_pairs_by_seed_and_skips_missing_methods():
    bench = _load("robust_search_nb201")
    rows = bench.paired(_results([0.3, 0.1, 0.5], [0.1, 0.2, 0.2]), [0, 1, 2], "cert_median")
    assert [(r["method"], r["baseline"]) for r in rows] == [("dsrna-cb", "darts")]  # no random, no jacobian runs
    (row,) = rows
    assert row["diffs"] == pytest.approx([0.2, -0.1, 0.3])
    assert (row["wins"], row["ties"]) == (2, 0)
    assert row["mean"] == pytest.approx(0.4 / 3)
    assert row["p"] == pytest.approx(2 / 8)  # (+,+,+) and (+,-,+) reach the observed mean


def test_findings_quotes_the_committed_dsrna_verdict():
    summary, body = _load("findings").dsrna_cited()
    assert summary.startswith("**") and any(w in summary for w in ("holds", "does not hold", "not reproduced", "cannot be tested"))
    assert any(line.startswith("| method | seeds") for line in body)
    assert any(line.startswith("| metric | comparison") for line in body)
