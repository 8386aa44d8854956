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


def test_run_label_keeps_default_a_lr_runs_under_their_old_names_and_random_shared():
    bench = _load("robust_search_nb201")
    assert bench.run_label("darts") == bench.run_label("darts", bench.A_LR) == "darts"
    assert bench.run_label("dsrna-cb-zono", 0.03) == "dsrna-cb-zono@alr0.03"
    assert bench.run_label("darts", 0.03) != bench.run_label("darts", 0.01)
    assert bench.run_label("random", 0.03) == "random"  # no alphas: one random run serves every a_lr


@pytest.mark.parametrize("method", ["darts", "dsrna-jacobian", "dsrna-cb", "dsrna-cb-zono"])
def test_a_lr_reaches_every_differentiable_searchers_options_and_names_its_state_file(tmp_path, monkeypatch, method):
    from nasrobust.search import create_searcher

    bench = _load("robust_search_nb201")
    made = {}

    class Stop(Exception):
        pass

    def fake(name, space, objective, **kwargs):
        made["searcher"] = create_searcher(name, space, objective, **kwargs)

        class Run:
            def run(self, state):
                made["state"] = state
                raise Stop

        return Run()

    monkeypatch.setattr(bench, "create_searcher", fake)
    with pytest.raises(Stop):
        bench.search_diff(method, 1, tmp_path, bench.search_settings(18, 16), a_lr=0.03)
    assert made["searcher"].options.a_lr == 0.03
    assert made["state"] == tmp_path / f"{method}@alr0.03_s1.pt"
    with pytest.raises(Stop):
        bench.search_diff(method, 1, tmp_path, bench.search_settings(18, 16))
    assert made["searcher"].options.a_lr == bench.A_LR == 3e-3
    assert made["state"] == tmp_path / f"{method}_s1.pt"


def test_alpha_movement_is_the_top_weight_per_edge_averaged_and_maximised():
    ranking = [[("conv", 0.6), ("none", 0.1)], [("skip", 0.2), ("none", 0.2)]]
    assert _load("robust_search_nb201").alpha_movement(ranking) == pytest.approx(
        {"max_softmax_mean": 0.4, "max_softmax_max": 0.6})


def test_paired_at_another_a_lr_compares_its_runs_with_darts_at_that_lr_and_the_shared_random():
    bench = _load("robust_search_nb201")

    def entry(v: float) -> dict:
        return {"search": {"encoding": "nb201:x", "search_seconds": 1.0}, "eval": {"cert_median": v}}

    results = {"dsrna-cb-zono@alr0.03/s0": entry(0.5), "darts@alr0.03/s0": entry(0.2), "darts/s0": entry(0.9),
               "dsrna-cb-zono/s0": entry(0.0), "random/s0": entry(0.1)}
    rows = bench.paired(results, [0], "cert_median", 0.03)
    assert [(r["method"], r["baseline"], r["diffs"]) for r in rows] == [
        ("dsrna-cb-zono@alr0.03", "darts@alr0.03", pytest.approx([0.3])),
        ("dsrna-cb-zono@alr0.03", "random", pytest.approx([0.4]))]


def test_non_positive_a_lr_is_refused(tmp_path):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "robust_search_nb201.py"), "--out", str(tmp_path),
                          "--a-lr", "0"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 2 and "--a-lr must be positive" in run.stderr
    assert not (tmp_path / "results.json").exists()
