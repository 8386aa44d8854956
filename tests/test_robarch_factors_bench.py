"""benchmarks/robarch_factors.py: its paired statistics and verdict rule on known numbers, and that every factor's
pair is inside the parameter budget and differs from its reference in that factor only."""

from __future__ import annotations

import dataclasses
import subprocess
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("robarch_factors_bench", REPO / "benchmarks" / "robarch_factors.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_paired_bootstrap_mean_and_interval():
    bench = _load()
    mean, low, high = bench.paired_bootstrap([0.5] * 20, n_boot=200, seed=0)
    assert (mean, low, high) == pytest.approx((0.5, 0.5, 0.5))  # no spread, no interval
    d = np.random.default_rng(1).normal(0.02, 0.01, size=200)
    mean, low, high = bench.paired_bootstrap(d, n_boot=2000, seed=3)
    assert mean == pytest.approx(d.mean())
    assert low < mean < high and low > 0  # 0.02 +- 0.01/sqrt(200) is far from 0
    se = d.std(ddof=1) / np.sqrt(d.size)
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert bench.paired_bootstrap(d, 2000, seed=3) == bench.paired_bootstrap(d, 2000, seed=3)  # seeded
    with pytest.raises(ValueError):
        bench.paired_bootstrap([], 10, 0)


@pytest.mark.parametrize("cis, sign, expected", [
    ([(0.1, 0.05, 0.15), (0.2, 0.01, 0.3)], +1, "holds"),
    ([(0.1, 0.05, 0.15), (0.2, -0.01, 0.3)], +1, "inconclusive"),  # one interval covers 0
    ([(0.1, 0.05, 0.15), (-0.2, -0.3, -0.1)], +1, "inconclusive"),  # the seeds disagree
    ([(-0.1, -0.15, -0.05), (-0.2, -0.3, -0.1)], +1, "does not hold (opposite)"),
    ([(-0.1, -0.15, -0.05), (-0.2, -0.3, -0.1)], -1, "holds"),  # published: the variant is not more robust
    ([(0.1, 0.05, 0.15), (0.2, 0.1, 0.3)], -1, "does not hold (opposite)"),
])
def test_verdict_rule(cis, sign, expected):
    assert _load().verdict(cis, sign) == expected


def test_verdict_rejects_no_seeds_and_no_direction():
    bench = _load()
    with pytest.raises(ValueError):
        bench.verdict([], +1)
    with pytest.raises(ValueError):
        bench.verdict([(0.1, 0.0, 0.2)], 0)


def test_every_pair_is_in_budget_and_changes_its_factor_only():
    from nasrobust import get_space

    bench = _load()
    space = get_space(bench.SPACE)
    cost = bench.costs()
    changed = {"activation": {"act"}, "SE": {"se_ratio", "widths"}, "depth vs width": {"depths"},
               "SE (SiLU)": {"se_ratio", "widths"}, "depth vs width (SiLU)": {"depths"},
               "kernel": {"kernel", "widths"}}
    for f in bench.FACTORS:
        assert bench.within_budget(cost[f.reference][0], cost[f.variant][0], bench.BUDGET_TOL), f.name
        ref = space.resolve(f"{bench.SPACE}:{f.reference}").genome
        var = space.resolve(f"{bench.SPACE}:{f.variant}").genome
        diff = {k for k in dataclasses.asdict(ref) if getattr(ref, k) != getattr(var, k)}
        assert diff == changed[f.name], f.name
    assert not bench.within_budget(100, 106, 0.05) and bench.within_budget(100, 95, 0.05)


def test_untrained_names_the_networks_below_the_clean_accuracy_bar():
    bench = _load()
    seeds = [{"seed": 0, "clean": (0.216, 0.908)}, {"seed": 1, "clean": (0.93, 0.91)}]
    assert bench.untrained(seeds) == ["reference s0 (22% clean)"]
    assert bench.untrained([{"seed": 1, "clean": (0.93, 0.91)}]) == []


def test_unknown_factor_name_exits_2_with_one_line_before_any_compute(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "robarch_factors.py"), "--factors", "SE", "nope",
                        "--md", str(tmp_path / "r.md"), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: unknown factor(s) 'nope'; known: 'activation', 'SE', 'depth vs width', 'SE (SiLU)', "
        "'depth vs width (SiLU)', 'kernel'"]
    assert not (tmp_path / "out").exists() and not (tmp_path / "r.md").exists()


def test_select_keeps_the_factor_order_and_rejects_unknown_names():
    bench = _load()
    assert bench.select(None) == bench.FACTORS
    assert [f.name for f in bench.select(["depth vs width", "activation"])] == ["activation", "depth vs width"]
    with pytest.raises(ValueError, match="unknown factor"):
        bench.select(["activation", "Activation"])


def test_run_key_holds_the_epoch_count():
    bench = _load()
    body = bench.FACTORS[0].reference
    assert bench.run_key(body, 0, 1) != bench.run_key(body, 0, 2)
    assert bench.run_key(body, 0, 2) != bench.run_key(body, 1, 2)
    assert bench.run_key(body, 1, 3) == f"{body}-e3-s1"
    assert bench.recipe(0, 3).epochs == 3 and bench.recipe(0).epochs == bench.EPOCHS


def test_report_of_a_longer_subset_run_names_its_epochs_and_command():
    bench = _load()
    factors = bench.select(["activation", "SE"])
    rng = np.random.default_rng(0)
    results = {}
    for seed in bench.SEEDS:
        for body in bench.encodings(factors):
            results[bench.run_key(body, seed, 2)] = {
                "clean_acc": 0.9, "radius": list(rng.uniform(0, 0.3, bench.N_EVAL)),
                "pgd_correct": list(rng.uniform(size=bench.N_EVAL) < 0.8), "train_seconds": 60.0, "score_seconds": 6.0}
    rows = bench.analyse(results, factors, 2)
    cost = {body: (1_500_000, 60_000_000) for body in bench.encodings(factors)}
    md = "\n".join(bench.report(results, rows, cost, (1.0, 1.0), ("u0", "u1"), factors, 2))
    assert '--force --epochs 2 --factors activation SE`' in md
    assert "6 networks: training 6.0 min" in md and "2 epochs of PGD-AT on 4,000 digits" in md
    assert md.count("| activation | ") == 2 and "| kernel" not in md
    assert md.rstrip().endswith("2 epochs of PGD-AT on mnist5k, 2 seeds.")
