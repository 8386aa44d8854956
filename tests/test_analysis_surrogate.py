"""Surrogate predictors: cross-validated quality on planted relations, predictions, persistence."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from nasrobust.analysis.surrogate import Surrogate, permutation_importance, vector_names
from nasrobust.analysis.table import build_table
from nasrobust.errors import NasRobustError
from nasrobust.space import get_space
from test_analysis_store import N_ARCHS, SPACE, planted_store

PGD8 = "adversarial/pgd_linf/accuracy@8/255"
NOISE = "system/png/pil/pil_bilinear/accuracy"


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("surrogate") / "results.db"
    planted_store(path)
    return build_table(path)


@pytest.mark.parametrize("model", ["ridge", "gbt"])
def test_a_planted_metric_is_predictable_and_noise_is_not(table, model):
    sur = Surrogate.fit(table, metric=PGD8, model=model, seed=0)
    assert sur.n_train == N_ARCHS and sur.folds == 5 and len(sur.cv_kendall_tau_folds) == 5
    assert sur.cv_kendall_tau > 0.5
    oof = sur.cv_predictions
    assert sur.cv_kendall_tau == pytest.approx(sps.kendalltau(oof["measured"], oof["predicted"]).statistic)
    assert sur.importance.iloc[0]["feature"].startswith("depth")  # what the value was planted on
    if model == "ridge":
        noise = Surrogate.fit(table, metric=NOISE, model=model, seed=0)
        assert abs(noise.cv_kendall_tau) < 0.3


def test_permutation_importance_by_hand():
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 2))
    y = 2.0 * x[:, 0]
    est = LinearRegression().fit(x, y)
    imp = permutation_importance(est, x, y, repeats=3, rng=np.random.default_rng(5))
    ref = np.random.default_rng(5)
    expected = []
    for j in range(2):
        drops = []
        for _ in range(3):
            xp = x.copy()
            xp[:, j] = x[ref.permutation(12), j]
            drops.append(np.mean((est.predict(xp) - y) ** 2))
        expected.append(np.mean(drops))
    np.testing.assert_allclose(imp, expected, atol=1e-12)
    assert imp[1] == pytest.approx(0.0, abs=1e-12) and imp[0] > 1.0


def test_predictions_are_marked_and_stored_values_preferred(table, tmp_path):
    sur = Surrogate.fit(table, metric="adversarial/pgd_linf/accuracy@8*", model="ridge")
    space = get_space(SPACE)
    archs = space.sample(N_ARCHS + 10, seed=0)  # a prefix of this sample is stored; the rest never evaluated
    stored, unseen = archs[0], archs[-1]
    assert unseen.encoding not in sur.known
    p = sur.query(unseen)
    assert p.predicted and p.metric == PGD8 and p.cv_kendall_tau == sur.cv_kendall_tau
    q = sur.query(stored)
    assert not q.predicted and q.value == table.frame.loc[stored.encoding, PGD8]
    assert sur(stored) == q.value and sur(unseen.encoding) == p.value
    # deeper networks are predicted more robust, as planted
    preds = sur.predict_many(archs)
    depth = np.array([space.factors(a)["depth"] for a in archs])
    assert sps.spearmanr(depth, preds).statistic > 0.7
    path = sur.save(tmp_path / "s.pkl")
    back = Surrogate.load(path)
    np.testing.assert_array_equal(back.predict_many(archs), preds)
    assert back.summary() == sur.summary()


def test_surrogate_errors(table, tmp_path):
    with pytest.raises(NasRobustError, match="not 'nb201'"):
        Surrogate.fit(table, metric=PGD8, model="ridge").query(get_space("nb201").sample(1)[0])
    with pytest.raises(NasRobustError, match="matches .* metrics"):
        Surrogate.fit(table, metric="adversarial/*")
    with pytest.raises(NasRobustError, match="unknown surrogate model"):
        Surrogate.fit(table, metric=PGD8, model="mlp")
    (tmp_path / "x.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(NasRobustError, match="not a nasrobust surrogate"):
        Surrogate.load(tmp_path / "x.pkl")
    small = tmp_path / "small.db"
    planted_store(small, n_archs=6)
    with pytest.raises(NasRobustError, match="at least 8"):
        Surrogate.fit(small, "bignas", PGD8)


def test_vector_names():
    bignas = get_space(SPACE)
    arch = bignas.sample(1)[0]
    assert vector_names(bignas, arch) == list(bignas.factors(arch))
    nb = get_space("nb201")
    assert vector_names(nb, nb.sample(1)[0]) == [f"x{i}" for i in range(30)]
