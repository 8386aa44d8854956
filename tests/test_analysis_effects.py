"""Categorical choices from genomes, grouped effects and their Kruskal-Wallis / ANOVA tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from nasrobust.analysis import stats
from nasrobust.analysis.effects import choice_frame, grouped_effects
from nasrobust.analysis.table import build_table, table_from_frame
from nasrobust.errors import NasRobustError
from nasrobust.space import get_space
from test_analysis_store import planted_store

NAT3 = "natural/gaussian_noise/accuracy@3"
NOISE = "system/png/pil/pil_bilinear/accuracy"


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("effects") / "results.db"
    planted_store(path)
    return build_table(path)


# ----------------------------------------------------------------------------- choices per space family
def test_bignas_small_names_its_choices_like_bignas():
    space = get_space("bignas-small")
    big = get_space("bignas")
    assert list(big.choices(big.sample(1)[0])) == list(space.choices(space.sample(1)[0]))
    for arch in space.sample(5, seed=0):
        ch = space.choices(arch)
        g = arch.genome
        assert ch["resolution"] == str(g.resolution) and ch["stem_kernel"] == str(g.stem_kernel)
        for i, s in enumerate(g.stages, start=1):
            assert ch[f"stage{i}.kernel"] == str(s.kernel) and ch[f"stage{i}.depth"] == str(s.depth)
            assert float(ch[f"stage{i}.expand"]) == s.expand and int(ch[f"stage{i}.width"]) == s.width


def test_nb201_edges_read_from_the_encoding_match_the_genome():
    space = get_space("nb201")
    official_edges = ["edge1<-0", "edge2<-0", "edge2<-1", "edge3<-0", "edge3<-1", "edge3<-2"]  # NAS-Bench-201 order
    for arch in space.sample(20, seed=0):
        ch = space.choices(arch)
        assert list(ch) == official_edges
        assert tuple(ch.values()) == arch.genome


def test_darts_ofa_and_robarch_choices():
    darts = get_space("darts")
    for arch in darts.sample(5, seed=0):
        ch = darts.choices(arch)
        assert len(ch) == 2 * (2 + 3 + 4 + 5)  # DARTS' 14 (node, input) edges per cell
        for cell, nodes in arch.genome.cells().items():
            for i, node in enumerate(nodes):
                kept = {k: v for k, v in ch.items() if k.startswith(f"{cell}.{i + 2}<-") and v != "none"}
                assert sorted(kept.values()) == sorted(op for op, _ in node)
    ofa = get_space("ofa-mbv3-small")
    for arch in ofa.sample(3, seed=0):
        ch = ofa.choices(arch)
        for i, stage in enumerate(arch.genome.stages, start=1):
            assert ch[f"stage{i}.depth"] == str(len(stage))
            assert ch[f"stage{i}.block1.kernel"] == str(stage[0].kernel)
    rob = get_space("robarch-small")
    arch = rob.sample(1, seed=0)[0]
    ch = rob.choices(arch)
    assert ch["act"] == arch.genome.act and ch["depths_1"] == str(arch.genome.depths[0])


def test_fallback_makes_few_valued_integer_factors_categorical():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"k": rng.integers(0, 3, 30).astype(float), "w": rng.normal(size=30),
                          "many": np.arange(30, dtype=float)})
    frame["m"] = frame["k"] + rng.normal(0, 0.1, 30)
    table = table_from_frame(frame, factors=["k", "w", "many"], metrics=["m"])
    choices = choice_frame(table)
    assert list(choices.columns) == ["k"]  # w is not integer-valued, many has 30 values
    eff = grouped_effects(table, n_boot=100)
    assert eff.tests.iloc[0]["significant"]


# ----------------------------------------------------------------------------- grouped effects
def test_kruskal_equals_scipy_and_recovers_the_planted_choice(table):
    eff = grouped_effects(table, n_boot=200)
    tests = eff.tests.set_index(["choice", "metric"])
    row = tests.loc[("stage3.kernel", NAT3)]
    assert row["significant"] and row["test"] == "Kruskal-Wallis H"
    choices = choice_frame(table)
    groups = [table.frame.loc[choices["stage3.kernel"] == v, NAT3].to_numpy() for v in ("3", "5")]
    ref = sps.kruskal(*groups)
    assert row["statistic"] == pytest.approx(ref.statistic) and row["p"] == pytest.approx(ref.pvalue)
    assert row["effect"] == pytest.approx(ref.statistic / (table.n_archs - 1))
    assert not tests.loc[("stage1.kernel", NAT3), "significant"]
    assert not tests.xs(NOISE, level="metric")["significant"].any()
    # per-value means, with a bootstrap interval around them
    lv = eff.levels[(eff.levels["choice"] == "stage3.kernel") & (eff.levels["metric"] == NAT3)].set_index("value")
    assert lv.loc["5", "mean"] == pytest.approx(groups[1].mean()) and lv.loc["5", "n"] == len(groups[1])
    assert lv.loc["5", "mean"] > lv.loc["3", "mean"] + 0.05
    assert (lv["ci_low"] <= lv["mean"]).all() and (lv["mean"] <= lv["ci_high"]).all()
    # the interval is the percentile interval of resampled means (resamples seeded by choice and value)
    rng = stats.resample_rng(0, "stage3.kernel\x005".encode())
    idx = rng.integers(0, len(groups[1]), size=(200, len(groups[1])))
    means = groups[1][idx].mean(axis=1)
    assert lv.loc["5", "ci_low"] == pytest.approx(np.quantile(means, 0.025), abs=1e-12)
    assert lv.loc["5", "ci_high"] == pytest.approx(np.quantile(means, 0.975), abs=1e-12)
    # choices that never vary are dropped: mnist5k's bignas-small has 3 resolutions, all sampled
    assert "resolution" in set(eff.tests["choice"])


def test_anova_equals_scipy(table):
    eff = grouped_effects(table, metrics=["natural/mce/mce"], test="anova", n_boot=0)
    row = eff.tests.set_index("choice").loc["stage3.kernel"]
    choices = choice_frame(table)
    groups = [table.frame.loc[choices["stage3.kernel"] == v, "natural/mce/mce"].to_numpy() for v in ("3", "5")]
    ref = sps.f_oneway(*groups)
    allv = np.concatenate(groups)
    eta = sum(len(g) * (g.mean() - allv.mean()) ** 2 for g in groups) / ((allv - allv.mean()) ** 2).sum()
    assert row["statistic"] == pytest.approx(ref.statistic) and row["p"] == pytest.approx(ref.pvalue)
    assert row["effect"] == pytest.approx(eta) and row["effect_name"] == "eta_sq"
    with pytest.raises(NasRobustError, match="unknown test"):
        grouped_effects(table, test="t")
