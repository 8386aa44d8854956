"""Ranking agreement between noise types, Borda group scores and Pareto fronts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from nasrobust.analysis.ranking import (
    agreement_matrix,
    group_columns,
    pareto_front,
    rank_groups,
    rank_scores,
    ranking_agreement,
)
from nasrobust.analysis.table import table_from_frame
from nasrobust.errors import NasRobustError

ADV = ["adversarial/pgd_linf/accuracy@4/255", "adversarial/pgd_linf/accuracy@8/255"]
NAT = ["natural/gaussian_noise/accuracy@1", "natural/gaussian_noise/accuracy@5"]


def _table(n: int = 60, seed: int = 0):
    """A shared latent robustness q drives adversarial and natural accuracy; system noise is independent."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=n)
    frame = pd.DataFrame({"depth": rng.integers(1, 4, n).astype(float)}, index=[f"a{i}" for i in range(n)])
    frame["adversarial/clean/accuracy"] = 0.9 + 0.01 * rng.normal(size=n)
    frame[ADV[0]] = 0.5 + 0.1 * q + 0.03 * rng.normal(size=n)
    frame[ADV[1]] = 0.2 + 0.1 * q + 0.03 * rng.normal(size=n)
    frame[NAT[0]] = 0.7 + 0.05 * q + 0.02 * rng.normal(size=n)
    frame[NAT[1]] = 0.3 + 0.20 * q + 0.08 * rng.normal(size=n)  # larger spread: a plain mean would favour it
    frame["system/png/pil/pil_bilinear/accuracy"] = 0.8 + 0.02 * rng.normal(size=n)
    frame["natural/clean/accuracy"] = 0.9 + 0.01 * rng.normal(size=n)  # the suite's own clean run: not "natural"
    frame["certified/clean/accuracy"] = 0.9 + 0.01 * rng.normal(size=n)
    metrics = [c for c in frame.columns if "/" in c]
    return table_from_frame(frame, factors=["depth"], metrics=metrics), q


def test_borda_scores_and_kendall_tau_by_hand():
    table, _ = _table()
    scores = rank_scores(table)
    assert list(scores.columns) == ["clean", "adversarial", "natural", "system"]  # certified: clean only -> none
    assert group_columns(table, rank_groups()["natural"]) == NAT
    assert group_columns(table, rank_groups()["clean"]) == ["adversarial/clean/accuracy"]
    n = table.n_archs
    by_hand = np.mean([sps.rankdata(table.frame[c]) / n for c in NAT], axis=0)
    np.testing.assert_allclose(scores["natural"].to_numpy(), by_hand)
    agree = ranking_agreement(table, top_fraction=0.1).set_index(["a", "b"])
    row = agree.loc[("adversarial", "natural")]
    ref = sps.kendalltau(scores["adversarial"], scores["natural"])
    assert row["tau"] == pytest.approx(ref.statistic) and row["p"] == pytest.approx(ref.pvalue)
    assert row["tau"] > 0.5 and row["p"] < 1e-6
    assert abs(agree.loc[("adversarial", "system"), "tau"]) < 0.25
    # the same architectures win under adversarial and natural noise, not under system noise
    k = int(row["top_k"])
    top = lambda c: set(scores[c].sort_values(ascending=False, kind="mergesort").index[:k])  # noqa: E731
    assert row["top_overlap"] == len(top("adversarial") & top("natural")) / k
    assert row["top_overlap"] > row["chance_overlap"]
    mat = agreement_matrix(agree.reset_index())
    assert mat.loc["natural", "adversarial"] == mat.loc["adversarial", "natural"] and mat.loc["system", "system"] == 1


def test_lower_is_better_metrics_are_reversed():
    table, q = _table()
    frame = table.frame.copy()
    frame["natural/mce/mce"] = 1.0 - 0.1 * q  # lower mCE = more robust
    only_mce = table_from_frame(frame, factors=["depth"], metrics=[*ADV, "natural/mce/mce"])
    agree = ranking_agreement(only_mce).set_index(["a", "b"])
    assert agree.loc[("adversarial", "natural"), "tau"] > 0.5


def test_ranking_needs_two_groups():
    table, _ = _table()
    one = table_from_frame(table.frame, factors=["depth"], metrics=ADV)
    with pytest.raises(NasRobustError, match="two noise groups"):
        ranking_agreement(one)
    with pytest.raises(NasRobustError, match="unknown noise group"):
        rank_scores(table, ["weather"])


def test_pareto_front_against_brute_force():
    rng = np.random.default_rng(4)
    pts = rng.normal(size=(80, 3))
    pts[5] = pts[6]  # duplicates: neither dominates the other
    pts[7, 0] = np.nan
    maximize = [True, True, False]
    front = pareto_front(pts, maximize)
    signed = pts * np.array([1, 1, -1])
    for i in range(len(pts)):
        if np.isnan(pts[i]).any():
            assert not front[i]
            continue
        dominated = any(
            j != i and not np.isnan(signed[j]).any() and np.all(signed[j] >= signed[i]) and np.any(signed[j] > signed[i])
            for j in range(len(pts))
        )
        assert front[i] == (not dominated)
    assert front[5] == front[6]
