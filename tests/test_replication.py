"""Replicated findings on a store of real encodings with planted structure across two replicates.

Factor ``depth`` drives the metric with the same sign in both replicates (a finding); factor
``resolution`` drives it with opposite signs (not replicated).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from nasrobust.analysis.replication import (
    ReplicationOptions, RunLabel, classify, kendall_tau, min_detectable_r, permutation_p, read_runs,
    replication_report,
)
from nasrobust.errors import NasRobustError
from nasrobust.records import Protocol, Record, ResultKey
from nasrobust.space import get_space
from nasrobust.store import open_results

SPACE = "bignas-small"
PROTO = Protocol.make(eps=0.1, norm="Linf", steps=10, restarts=1, seed=0, n_examples=200)


def _store(path, n=40):
    space = get_space(SPACE)
    archs = space.sample(n, seed=0)
    rng = np.random.default_rng(0)
    records = []
    for wid, sign in (("rep0", 1.0), ("rep1", -1.0)):
        for arch in archs:
            f = space.factors(arch)
            value = 0.05 * f["depth"] + sign * 0.01 * f["resolution"] + float(rng.normal(0, 0.01))
            key = ResultKey.of(arch, weights_id=wid, dataset="mnist5k", suite="adversarial", noise="pgd_linf",
                               level=0.1, metric="accuracy")
            records.append(Record(key, value, PROTO))
    for arch in archs[:6]:  # stand-alone checks: the same ranking by depth, plus noise
        f = space.factors(arch)
        key = ResultKey.of(arch, weights_id=f"alone-{arch.encoding[:8]}", dataset="mnist5k", suite="adversarial",
                           noise="pgd_linf", level=0.1, metric="accuracy")
        records.append(Record(key, 0.05 * f["depth"] + float(rng.normal(0, 0.001)), PROTO))
    with open_results(path, create=True) as store:
        store.write_many(records)
    return archs


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    path = tmp_path_factory.mktemp("rep") / "results.db"
    archs = _store(path)
    runs = [RunLabel("rep0", replicate=0, seed=0), RunLabel("rep1", replicate=1, seed=1)]
    runs += [RunLabel(f"alone-{a.encoding[:8]}", kind="standalone") for a in archs[:6]]
    return path, runs


def test_read_runs(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text('[[runs]]\nweights_id = "a"\ntechnique = "pgd-at"\nreplicate = 1\nseed = 7\nkind = "supernet"\n'
                 '[[runs]]\nweights_id = "b"\n')
    assert read_runs(p) == [RunLabel("a", "pgd-at", 1, 7, "supernet"), RunLabel("b")]
    p.write_text('[[runs]]\nweights_id = "a"\nkind = "other"\n')
    with pytest.raises(NasRobustError, match="kind"):
        read_runs(p)


def test_classification(planted, tmp_path):
    path, runs = planted
    md = replication_report(path, runs, tmp_path / "r", ReplicationOptions(n_boot=200, seed=0))
    cls = pd.read_csv(tmp_path / "r" / "tables" / "replication_classified.csv")
    status = cls.set_index(["factor", "metric"])["status"]
    metric = "adversarial/pgd_linf/accuracy@0.1"
    assert status[("depth", metric)] == "finding"
    assert status[("resolution", metric)] == "not replicated"
    row = cls.set_index("factor").loc["depth"]
    assert row["r_pooled"] > 0.3 and row["ci_low"] > 0
    text = md.read_text()
    assert "depth" in text.split("## Not replicated")[0]
    alone = pd.read_csv(tmp_path / "r" / "tables" / "replication_standalone_agreement.csv")
    assert len(alone) == 1 and alone["n_subnets"].iloc[0] == 6 and alone["p_method"].iloc[0] == "exact"
    agree = pd.read_csv(tmp_path / "r" / "tables" / "replication_ranking_agreement.csv")
    assert agree["k"].iloc[0] == 2 and -1 <= agree["tau"].iloc[0] <= 1
    # deterministic
    md2 = replication_report(path, runs, tmp_path / "r2", ReplicationOptions(n_boot=200, seed=0))
    assert md2.read_text() == text


def test_metric_on_a_subset_of_subnets(tmp_path):
    """A suite scored on the first subnets only (study --suite-archs): its agreement counts those subnets, and a
    relation analysable in one replicate only (constant in the other) is not replicated, not a K=1 study."""
    path = tmp_path / "results.db"
    archs = _store(path)
    space = get_space(SPACE)
    records = []
    for wid in ("rep0", "rep1"):
        for i, arch in enumerate(archs[:8]):
            key = ResultKey.of(arch, weights_id=wid, dataset="mnist5k", suite="certified", noise="crown-zono_linf",
                               level=0.0, metric="radius_median")
            records.append(Record(key, 0.001 * space.factors(arch)["depth"] + 1e-4 * i, PROTO))
            key = ResultKey.of(arch, weights_id=wid, dataset="mnist5k", suite="certified", noise="crown-zono_linf",
                               level=0.003, metric="certified_accuracy")
            records.append(Record(key, 0.0 if wid == "rep1" else float(i % 2), PROTO))
    with open_results(path) as store:
        store.write_many(records)
    runs = [RunLabel("rep0", replicate=0, seed=0), RunLabel("rep1", replicate=1, seed=1)]
    replication_report(path, runs, tmp_path / "r", ReplicationOptions(n_boot=50, seed=0))
    agree = pd.read_csv(tmp_path / "r" / "tables" / "replication_ranking_agreement.csv").set_index("metric")
    assert agree.loc["adversarial/pgd_linf/accuracy@0.1", "n_subnets"] == 40
    radius = agree.loc["certified/crown-zono_linf/radius_median"]
    assert radius["n_subnets"] == 8 and radius["tau"] == pytest.approx(1.0)
    status = pd.read_csv(tmp_path / "r" / "tables" / "replication_classified.csv").set_index(["factor", "metric"])["status"]
    assert status[("depth", "certified/crown-zono_linf/certified_accuracy@0.003")] == \
        "not replicated (analysable in 1 of 2 replicates)"


def test_single_replicate_cannot_replicate(planted, tmp_path):
    path, runs = planted
    md = replication_report(path, runs[:1], tmp_path / "one", ReplicationOptions(n_boot=50))
    assert "Cannot replicate with K=1" in md.read_text()
    cls = pd.read_csv(tmp_path / "one" / "tables" / "replication_classified.csv")
    assert (cls["status"] == "cannot replicate (K=1)").all()


def test_kendall_identical_and_power():
    a = np.array([3.0, 1.0, 2.0, 5.0, 4.0])
    assert kendall_tau(a, a) == pytest.approx(1.0)
    assert kendall_tau(a, -a) == pytest.approx(-1.0)
    p, how = permutation_p(a, a)
    assert how == "exact" and p == pytest.approx(2 / 120)  # only the identity and the reversal reach |tau| = 1
    p, how = permutation_p(a, np.ones(5))  # a constant metric ranks nothing: no p, not p = 0
    assert math.isnan(p) and how.startswith("undefined")
    # n = 100, alpha 0.05, power 0.8: z = (1.959964 + 0.841621) / sqrt(97) = 0.284456 -> r = tanh(z)
    assert min_detectable_r(100) == pytest.approx(math.tanh((1.959964 + 0.841621) / math.sqrt(97)), abs=1e-5)
    assert min_detectable_r(100) == pytest.approx(0.2771, abs=1e-3)


def test_classify_signs():
    rows = pd.DataFrame({"technique": "s", "factor": ["a", "a", "b", "b"], "metric": "m", "method": "spearman",
                         "replicate": [0, 1, 0, 1], "r": [0.5, 0.4, 0.5, -0.5], "p_adj": 0.01, "significant": True})
    out = classify(rows, "spearman").set_index("factor")["status"]
    assert out["a"] == "finding" and out["b"] == "not replicated"


def test_cli_runs(planted, tmp_path, capsys):
    from nasrobust.cli.main import main

    path, runs = planted
    cfg = tmp_path / "config.toml"
    cfg.write_text("".join(f'[[runs]]\nweights_id = "{r.weights_id}"\nreplicate = {r.replicate}\nkind = "{r.kind}"\n'
                           for r in runs))
    out = tmp_path / "cli"
    assert main(["analyze", "--db", str(path), "--runs", str(cfg), "--out", str(out), "--n-boot", "50"]) == 0
    assert (out / "replication.md").exists()
    assert main(["analyze", "--db", str(path), "--runs", str(cfg), "--out", str(out), "--n-boot", "50"]) == 2
    assert "--force" in capsys.readouterr().err


def test_technique_x_factor(planted, tmp_path):
    """rep1 relabelled as another technique: resolution's relation flips sign (it changes), depth's does not."""
    path, _ = planted
    runs = [RunLabel("rep0", technique="standard"), RunLabel("rep1", technique="pgd-at")]
    replication_report(path, runs, tmp_path / "t", ReplicationOptions(n_boot=200, seed=0))
    diffs = pd.read_csv(tmp_path / "t" / "tables" / "replication_technique_differences.csv").set_index("factor")
    assert bool(diffs.loc["resolution", "changes"]) and diffs.loc["resolution", "diff_b_minus_a"] > 0.5
    assert not bool(diffs.loc["depth", "changes"])
