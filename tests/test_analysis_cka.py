"""CKA: the unbiased HSIC estimator, its minibatch average, invariances, hooks on real models, block structure."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from nasrobust.analysis import cka as C
from nasrobust.errors import NasRobustError
from nasrobust.space import get_space


def _reps(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    y = np.tanh(x @ rng.normal(size=(6, 9))) + 0.3 * rng.normal(size=(n, 9))
    return x, y


# ----------------------------------------------------------------------------- the estimator
def test_hsic1_is_song_et_al_u_statistic():
    """HSIC_1 equals its definition as a U-statistic over ordered 4-tuples of distinct examples
    (Song et al. 2012, Theorem 2) and the Szekely-Rizzo U-centred inner product / (n(n-3))."""
    x, y = _reps(7)
    k, g = x @ x.T, y @ y.T
    n = 7
    total = [k[s, t] * g[s, t] + k[s, t] * g[u, v] - 2 * k[s, t] * g[s, u]
             for s, t, u, v in itertools.permutations(range(n), 4)]
    assert C.hsic1(k, g) == pytest.approx(np.mean(total), rel=1e-12)

    def u_centre(g):
        g = g.copy()
        np.fill_diagonal(g, 0)
        rows = g.sum(1) / (n - 2)
        u = g - rows[:, None] - rows[None, :] + g.sum() / ((n - 1) * (n - 2))
        np.fill_diagonal(u, 0)
        return u

    assert C.hsic1(k, g) == pytest.approx((u_centre(k) * u_centre(g)).sum() / (n * (n - 3)), rel=1e-12)


def test_minibatch_average_over_all_subsets_equals_the_full_data_estimate():
    """Nguyen et al. (2021) average HSIC_1 over minibatches because it is unbiased: as a U-statistic,
    its mean over every size-m subset *is* its full-data value, so the minibatch CKA built from all
    subsets equals the full-data unbiased CKA exactly, for any batch size m >= 4."""
    x, y = _reps(9, seed=1)
    full = C.cka(x, y)
    for m in (4, 6):
        acc = C.MinibatchCKA()
        for subset in itertools.combinations(range(9), m):
            idx = list(subset)
            acc.update([torch.tensor(x[idx])], [torch.tensor(y[idx])])
        assert acc.result()[0, 0] == pytest.approx(full, abs=1e-12)
        k, g = x @ x.T, y @ y.T
        mean_sub = np.mean([C.hsic1(k[np.ix_(s, s)], g[np.ix_(s, s)]) for s in itertools.combinations(range(9), m)])
        assert mean_sub == pytest.approx(C.hsic1(k, g), rel=1e-12)


def test_random_minibatches_converge_to_full_cka_and_the_biased_estimator_does_not():
    """On 1,200 examples: unbiased minibatch CKA is the full-data unbiased CKA whatever the batch size;
    the biased estimator averaged over small batches is inflated (why the paper uses HSIC_1)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 20))
    y = np.tanh(x @ rng.normal(size=(20, 30)) * 0.5) + 0.5 * rng.normal(size=(1200, 30))
    full = C.cka(x, y)
    for batch in (20, 200):
        perm = rng.permutation(1200)
        mb = C.minibatch_cka(x[perm], y[perm], batch)
        assert mb == pytest.approx(full, abs=0.02)
    biased = [(C.hsic0(k, g), C.hsic0(k, k), C.hsic0(g, g))
              for k, g in ((x[i:i + 20] @ x[i:i + 20].T, y[i:i + 20] @ y[i:i + 20].T) for i in range(0, 1200, 20))]
    b = np.mean(biased, axis=0)
    assert b[0] / np.sqrt(b[1] * b[2]) - full > 0.1


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_identity_orthogonal_and_scale_invariance(kernel):
    x, y = _reps(60, seed=2)
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(9, 9)))
    assert C.cka(x, x, kernel=kernel) == pytest.approx(1.0, abs=1e-12)
    base = C.cka(x, y, kernel=kernel)
    assert 0.1 < base < 0.99
    assert C.cka(x, y @ q, kernel=kernel) == pytest.approx(base, abs=1e-9)
    assert C.cka(7.5 * x, 0.01 * y, kernel=kernel) == pytest.approx(base, abs=1e-9)
    assert C.minibatch_cka(x, y @ q * 3.0, 20, kernel=kernel) == pytest.approx(C.minibatch_cka(x, y, 20, kernel=kernel), abs=1e-9)


def test_estimator_errors():
    with pytest.raises(NasRobustError, match="at least 4"):
        C.hsic1(np.eye(3), np.eye(3))
    with pytest.raises(NasRobustError, match="unknown CKA kernel"):
        C.cka(np.eye(5), np.eye(5), kernel="poly")


# ----------------------------------------------------------------------------- hooks on real models
@pytest.fixture(scope="module")
def nets():
    space = get_space("bignas-small")
    arch = space.sample(1, seed=0)[0]
    torch.manual_seed(0)
    a = space.build(arch, num_classes=10, input_size=28).eval()
    torch.manual_seed(1)
    b = space.build(arch, num_classes=10, input_size=28).eval()
    images = torch.rand(64, 3, arch.genome.resolution, arch.genome.resolution, generator=torch.Generator().manual_seed(0))
    return a, b, images


def test_layer_cka_of_a_model_with_itself(nets):
    a, _, images = nets
    res = C.layer_cka(a, images, batch_size=32)
    m = res.matrix.to_numpy()
    convs = [n for n, mod in a.named_modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))]
    assert sorted(res.matrix.index) == sorted(convs) and res.batches == 2 and res.same_model
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-9)
    np.testing.assert_allclose(m, m.T, atol=1e-9)
    np.testing.assert_allclose(res.self_a.to_numpy(), m, atol=1e-12)
    # an entry equals the direct minibatch computation on activations captured by hand
    first = convs[0]
    caught = {}
    handles = [dict(a.named_modules())[name].register_forward_hook(
        lambda mod, inp, out, name=name: caught.setdefault(name, out.detach())) for name in (first, "head")]
    with torch.no_grad():
        a(images)
    for h in handles:
        h.remove()
    direct = C.minibatch_cka(caught[first].double(), caught["head"].double(), 32)
    assert res.matrix.loc[first, "head"] == pytest.approx(direct, abs=1e-6)
    assert 0.0 < direct < 0.99


def test_layer_cka_between_models_and_shared_modules(nets):
    a, b, images = nets
    res = C.layer_cka(a, images, b, batch_size=32, layers_a=["ReLU"], layers_b=["ReLU"])
    names = list(res.matrix.index)
    assert any(n.endswith("#1") for n in names)  # a block's ReLU runs twice per forward: two layers
    # two differently initialised copies: the same input gives CKA 1 only where they agree
    m = res.matrix.to_numpy()
    assert np.all((m > -0.2) & (m <= 1.0 + 1e-9))
    same = C.layer_cka(a, images, a, batch_size=32, layers_a=["ReLU"], layers_b=["ReLU"])
    np.testing.assert_allclose(np.diag(same.matrix.to_numpy()), 1.0, atol=1e-9)
    with pytest.raises(NasRobustError, match="no module matches"):
        C.layer_cka(a, images, layers_a=["Attention"])


# ----------------------------------------------------------------------------- block structure
def test_block_structure_score():
    n = 10
    d = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    decaying = 0.9 ** d  # similarity falls with distance: block-like, standard-training pattern
    uniform = np.where(d == 0, 1.0, 0.8)  # distant layers as similar as neighbours (robust pattern)
    s1, s2 = C.block_structure(decaying), C.block_structure(uniform)
    assert s1.far == 5 and s1.near_mean == pytest.approx(0.9)
    far = decaying[d >= 5].mean()
    assert s1.score == pytest.approx(0.9 - far)
    assert s2.score == pytest.approx(0.0) and s1.score > 0.3
    with pytest.raises(NasRobustError, match="square"):
        C.block_structure(np.ones((3, 4)))
    with pytest.raises(NasRobustError, match="needs"):
        C.block_structure(np.ones((2, 2)))
