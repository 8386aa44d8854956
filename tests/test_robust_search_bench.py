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


def test_search_settings_default_to_the_2026_12_05_run():
    assert _load("robust_search_nb201").search_settings() == {
        "search_epochs": 6, "warmup_epochs": 2, "search_images": 1000, "cb_eps": 0.01,
        "cb_zono": {"eps": 0.001, "examples": 2}}


def test_rerun_with_other_search_settings_is_refused_before_any_compute(tmp_path):
    import json
    import subprocess
    import sys

    bench = _load("robust_search_nb201")
    (tmp_path / "results.json").write_text(json.dumps({"_search": bench.search_settings(6, 2, 1000, 0.01)}))
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "robust_search_nb201.py"), "--out", str(tmp_path),
                          "--seeds", "0", "--search-epochs", "18", "--warmup-epochs", "16"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 2
    err = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "searched with" in err[0] and "'search_epochs': 6" in err[0]
    assert json.loads((tmp_path / "results.json").read_text()) == {"_search": bench.search_settings()}


def test_alpha_ranking_sorts_each_edges_ops_by_softmax(tmp_path):
    import torch

    state = tmp_path / "s.pt"
    alpha = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    torch.save({"model": {"net.arch_params.alpha": alpha, "net.stem.weight": torch.ones(2)}}, state)
    ranking = _load("robust_search_nb201").alpha_ranking(state, ("none", "skip", "conv"))
    assert [[op for op, _ in edge] for edge in ranking] == [["skip", "none", "conv"], ["none", "skip", "conv"]]
    assert sum(w for _, w in ranking[1]) == pytest.approx(1.0, abs=2e-3)


def test_alpha_ranking_orders_on_exact_weights_not_rounded_ones(tmp_path):
    import torch

    state = tmp_path / "s.pt"
    torch.save({"model": {"net.arch_params.alpha": torch.tensor([[0.0, 1e-6, 0.0]])}}, state)
    (edge,) = _load("robust_search_nb201").alpha_ranking(state, ("none", "skip", "conv"))
    assert edge[0][0] == "skip"  # 1e-6 larger: a tie after rounding must not reorder it
