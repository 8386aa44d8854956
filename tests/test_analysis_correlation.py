"""Correlations, bootstrap intervals, multiple-testing corrections and partial correlations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from nasrobust.analysis import stats
from nasrobust.analysis.correlation import correlations, partial_correlations, strongest
from nasrobust.analysis.table import build_table, table_from_frame
from nasrobust.errors import NasRobustError
from test_analysis_store import planted_store

SCIPY = {"pearson": sps.pearsonr, "spearman": sps.spearmanr, "kendall": sps.kendalltau}
PGD8 = "adversarial/pgd_linf/accuracy@8/255"
NOISE = "system/png/pil/pil_bilinear/accuracy"


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("corr") / "results.db"
    planted_store(path)
    return build_table(path, "bignas")


@pytest.fixture(scope="module")
def corr(table):
    return correlations(table, n_boot=300, seed=0)


def test_point_estimates_and_p_values_equal_scipy(table, corr):
    for method, fn in SCIPY.items():
        sub = corr[corr["method"] == method]
        assert len(sub) == len(table.factors) * len(table.metrics)
        for _, row in sub.iterrows():
            res = fn(table.frame[row["factor"]], table.frame[row["metric"]])
            assert row["r"] == pytest.approx(res[0], abs=1e-12)
            assert row["p"] == pytest.approx(res[1], rel=1e-9, abs=1e-15)


def test_planted_relations_are_recovered_after_correction(corr):
    sp = corr[corr["method"] == "spearman"].set_index(["factor", "metric"])
    assert sp.loc[("depth", PGD8), "significant"] and sp.loc[("depth", PGD8), "r"] > 0.7
    assert sp.loc[("width_mean", "adversarial/clean/accuracy"), "significant"]
    assert sp.loc[("resolution", "certified/crown-ibp_linf/radius_mean"), "r"] > 0.8
    assert not sp.loc[("stem_kernel", PGD8), "significant"]
    # a pure-noise metric goes with nothing once the 25-odd tests are corrected
    assert not sp.xs(NOISE, level="metric")["significant"].any()
    assert (sp["p_adj"] >= sp["p"] * (1 - 1e-12)).all()
    assert set(corr["correction"]) == {"Benjamini-Hochberg (FDR)"}
    top = strongest(corr, k=3)
    assert len(top) == 3 and top["metric"].is_unique and top["significant"].all()


def test_bootstrap_interval_is_the_percentile_interval_of_scipy_on_the_same_resamples(table, corr):
    row = corr[(corr["method"] == "spearman") & (corr["factor"] == "depth") & (corr["metric"] == PGD8)].iloc[0]
    rows = np.arange(table.n_archs)
    idx = stats.bootstrap_indices(len(rows), 300, stats.resample_rng(0, rows.tobytes()))
    x, y = table.frame["depth"].to_numpy(), table.frame[PGD8].to_numpy()
    boot = np.array([sps.spearmanr(x[i], y[i])[0] for i in idx])
    assert row["ci_low"] == pytest.approx(np.nanquantile(boot, 0.025), abs=1e-12)
    assert row["ci_high"] == pytest.approx(np.nanquantile(boot, 0.975), abs=1e-12)
    assert row["ci_low"] <= row["r"] <= row["ci_high"]


def test_kendall_resamples_equal_scipy():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, size=(15, 2)).astype(float)  # ties, as factors have
    y = np.c_[x[:, 0] + rng.normal(size=15), rng.integers(0, 3, size=15)]
    idx = stats.bootstrap_indices(15, 25, rng)
    boot = stats.boot_corr(x, y, "kendall", idx)
    for b in range(25):
        for i in range(2):
            for j in range(2):
                ref = sps.kendalltau(x[idx[b], i], y[idx[b], j])[0]
                assert (np.isnan(ref) and np.isnan(boot[b, i, j])) or boot[b, i, j] == pytest.approx(ref, abs=1e-12)


def test_intervals_are_reproducible_and_independent_of_the_other_metrics(table, corr):
    again = correlations(table, n_boot=300, seed=0)
    pd.testing.assert_frame_equal(corr, again)
    alone = correlations(table, metrics=[PGD8], methods=("spearman",), n_boot=300, seed=0)
    ref = corr[(corr["method"] == "spearman") & (corr["metric"] == PGD8)].reset_index(drop=True)
    np.testing.assert_array_equal(alone["ci_low"].to_numpy(), ref["ci_low"].to_numpy())
    other = correlations(table, metrics=[PGD8], methods=("spearman",), n_boot=300, seed=1)
    assert not np.array_equal(other["ci_low"].to_numpy(), alone["ci_low"].to_numpy())


def test_kendall_falls_back_to_the_jackknife_when_the_bootstrap_is_too_costly(table):
    out = correlations(table, metrics=[PGD8], factors=["depth"], methods=("kendall",), n_boot=50, kendall_budget=0)
    row = out.iloc[0]
    assert row["ci_method"] == "jackknife-normal"
    x, y = table.frame["depth"].to_numpy(), table.frame[PGD8].to_numpy()
    n = len(x)
    loo = np.array([sps.kendalltau(np.delete(x, i), np.delete(y, i))[0] for i in range(n)])
    se = np.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2))
    assert row["ci_low"] == pytest.approx(row["r"] - sps.norm.ppf(0.975) * se, abs=1e-10)


# ----------------------------------------------------------------------------- corrections
def test_bh_and_holm_by_hand_and_against_scipy():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # BH: sorted 0.005, 0.01, 0.03, 0.04 -> x 4/i = 0.02, 0.02, 0.04, 0.04 -> running min from the top
    np.testing.assert_allclose(stats.bh_adjust(p), [0.02, 0.04, 0.04, 0.02])
    # Holm: x (m - i + 1) = 0.02, 0.03, 0.06, 0.04 -> running max = 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(stats.holm_adjust(p), [0.03, 0.06, 0.06, 0.02])
    rng = np.random.default_rng(0)
    q = np.concatenate([rng.uniform(size=200), rng.uniform(0, 1e-3, size=20)])
    np.testing.assert_allclose(stats.bh_adjust(q), sps.false_discovery_control(q, method="bh"), rtol=1e-12)
    with_nan = np.array([0.01, np.nan, 0.04])
    out = stats.bh_adjust(with_nan)
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.04)
    with pytest.raises(NasRobustError, match="unknown correction"):
        stats.adjust(p, "bonferroni")


def test_holm_is_stricter_than_bh_on_the_planted_table(table):
    bh = correlations(table, methods=("spearman",), n_boot=0)
    holm = correlations(table, methods=("spearman",), n_boot=0, correction="holm")
    assert (holm["p_adj"].to_numpy() >= bh["p_adj"].to_numpy() - 1e-15).all()
    assert holm["significant"].sum() <= bh["significant"].sum()
    assert set(holm["correction"]) == {"Holm (family-wise error)"}


# ----------------------------------------------------------------------------- partial correlations
def _tiny(x, y, z):
    frame = pd.DataFrame({"x": x, "z": z, "y": y}, index=[f"a{i}" for i in range(len(x))])
    return table_from_frame(frame, factors=["x", "z"], metrics=["y"])


def test_partial_correlation_of_a_hand_computed_case():
    # z, a, b are mutually orthogonal zero-mean vectors: x = z + a and y = z + b share only z.
    z = np.array([1.0, 1, -1, -1, 0, 0])
    a = np.array([1.0, -1, 1, -1, 0, 0])
    b = np.array([1.0, -1, -1, 1, 0, 0])
    x, y = z + a, z + b
    out = partial_correlations(_tiny(x, y, z), ["z"], factors=["x"], methods=("pearson",), n_boot=0)
    row = out.iloc[0]
    assert row["r_raw"] == pytest.approx(0.5)  # x.y = 4, |x|^2 = |y|^2 = 8
    assert row["r"] == pytest.approx(0.0, abs=1e-12)
    assert row["p"] == pytest.approx(1.0)


def test_partial_correlation_matches_the_first_order_formula():
    rng = np.random.default_rng(3)
    z = rng.normal(size=30)
    x = z + rng.normal(size=30)
    y = 0.5 * z + 0.3 * x + rng.normal(size=30)
    for method, corr in (("pearson", lambda u, v: sps.pearsonr(u, v)[0]), ("spearman", lambda u, v: sps.spearmanr(u, v)[0])):
        rxy, rxz, ryz = corr(x, y), corr(x, z), corr(y, z)
        expected = (rxy - rxz * ryz) / np.sqrt((1 - rxz**2) * (1 - ryz**2))
        out = partial_correlations(_tiny(x, y, z), ["z"], factors=["x"], methods=(method,), n_boot=200)
        row = out.iloc[0]
        assert row["r"] == pytest.approx(expected, abs=1e-12)
        t = expected * np.sqrt(27 / (1 - expected**2))  # n - 2 - k = 27
        assert row["p"] == pytest.approx(2 * sps.t.sf(abs(t), 27), rel=1e-9)
        assert row["ci_low"] < row["r"] < row["ci_high"]


def test_partial_correlation_given_capacity_on_the_planted_store(table):
    out = partial_correlations(table, ["params"], n_boot=100)
    assert "params" not in set(out["factor"])
    row = out[(out["factor"] == "depth") & (out["metric"] == PGD8)].iloc[0]
    assert row["significant"] and row["covariates"] == "params"
    clean = partial_correlations(table, ["clean"], n_boot=0)
    assert set(clean["covariates"]) == {"adversarial/clean/accuracy"}
    assert "adversarial/clean/accuracy" not in set(clean["metric"])
    with pytest.raises(NasRobustError, match="unknown column"):
        partial_correlations(table, ["capacity"])


def test_spearman_p_is_exact_for_few_points():
    """rho = -1 on 4 points is p = 2/24 by permutation, not the t approximation's 0 ("significant")."""
    from nasrobust.analysis import stats

    x = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 2.0], [4.0, 5.0]])
    y = np.array([[4.0, 7.0], [3.0, 7.0], [2.0, 7.0], [1.0, 7.0]])  # second metric constant
    r = stats.corr_matrix(x, y, "spearman")
    p = stats.p_values(x, y, r, "spearman")
    assert r[0, 0] == pytest.approx(-1.0) and p[0, 0] == pytest.approx(2 / 24)
    assert np.isnan(p[:, 1]).all()
    # with ties the null is the permutation distribution of the tied ranks; brute force agrees
    perms = [sps.spearmanr(x[:, 1], y[list(q), 0])[0] for q in __import__("itertools").permutations(range(4))]
    assert p[1, 0] == pytest.approx(np.mean(np.abs(perms) >= abs(r[1, 0]) - 1e-12))
    # past the exact range the t approximation (scipy's spearmanr) is used
    rng = np.random.default_rng(0)
    big = rng.normal(size=(12, 1)), rng.normal(size=(12, 1))
    rb = stats.corr_matrix(*big, "spearman")
    assert stats.p_values(*big, rb, "spearman")[0, 0] == pytest.approx(sps.spearmanr(big[0][:, 0], big[1][:, 0])[1])
