"""benchmarks/peer_searchers.py: seeded and deterministic, its budgets are prefixes of one run, no overwrite."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import naslib_harness  # noqa: E402


def _bench():
    sys.path.insert(0, str(REPO / "benchmarks"))  # the script imports its sibling _report
    return importlib.import_module("peer_searchers")


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    md = tmp_path / "peer_searchers.md"
    md.write_text("measured\n")
    with pytest.raises(SystemExit) as exc:
        _bench().main(["--tiny", "--md", str(md)])
    assert exc.value.code == 2
    assert "--force" in capsys.readouterr().err
    assert md.read_text() == "measured\n"


@pytest.mark.skipif(not naslib_harness.available(), reason=f"NASLib source not at {naslib_harness.ROOT}")
def test_study_is_deterministic_and_budgets_are_prefixes():
    """Two runs give identical numbers (CPU times aside); the best at B=6 of a B=12 run equals a B=6 run."""
    bench = _bench()
    names = ("random", "evolution", "local", "naslib-rs", "naslib-re", "naslib-ls")

    def once(budgets):
        with naslib_harness.naslib_modules() as mods:
            obj = bench.objectives(["linear"])[0]
            obj.searchers = names
            res = bench.study([obj], 2, budgets, 2, budgets[-1], mods, lambda msg: None)
        return {n: (r["best"], r["distinct"], r["calls"]) for n, r in res["nb201 linear"]["rows"].items()}

    first, again, short = once([6, 12]), once([6, 12]), once([6])
    assert first == again
    for n in names:
        assert first[n][0][6] == short[n][0][6], n
        assert first[n][1] == [12, 12] and short[n][1] == [6, 6]
        assert max(first[n][0][12]) <= bench.objectives(["linear"])[0].optimum + 1e-9
    assert not np.allclose(first["random"][0][12], first["local"][0][12])  # the searchers differ
