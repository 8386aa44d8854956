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
def _distance(n: int) -> np.ndarray:
    return np.abs(np.subtract.outer(np.arange(n), np.arange(n)))


def test_block_structure_finds_a_known_block():
    """A run of layers more similar to each other than their distance explains is found exactly."""
    n = 14
    d = _distance(n)
    s = 0.85 ** d  # background: similarity decays with layer distance
    s[4:10, 4:10] = np.maximum(s[4:10, 4:10], 0.95)  # layers 4..9 form a bright square
    np.fill_diagonal(s, 1.0)
    b = C.block_structure(s)
    assert (b.start, b.stop) == (4, 10)
    assert b.within == pytest.approx(0.95)
    assert b.outside == pytest.approx(s[4:10][:, [*range(4), *range(10, n)]].mean())
    assert b.score > 0.2
    # the same number, vectorised over a stack (what the bootstrap calls)
    assert C.block_scores(np.stack([s, s]))[1] == pytest.approx(b.score, abs=1e-12)


@pytest.mark.parametrize("pattern", ["decaying", "uniform"])
def test_maps_without_a_block_score_zero(pattern):
    """Similarity that depends on layer distance only has no block: smooth decay (small networks in
    Nguyen et al.) and uniformly high similarity (robust networks in Cianfarani et al.) both score 0,
    whereas the older neighbours-minus-distant score called the decaying map strongly structured."""
    d = _distance(12)
    s = 0.9 ** d if pattern == "decaying" else np.where(d == 0, 1.0, 0.8)
    b = C.block_structure(s)
    assert b.score == pytest.approx(0.0, abs=1e-12)
    expected_long_range = s[d >= 6].mean()
    assert b.long_range == pytest.approx(expected_long_range)


def test_block_structure_invariant_to_layer_order_reversal_and_errors():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.9, size=(9, 9))
    s = (x + x.T) / 2
    np.fill_diagonal(s, 1.0)
    forward, backward = C.block_structure(s), C.block_structure(s[::-1, ::-1])
    assert forward.score == pytest.approx(backward.score, abs=1e-12)
    assert (backward.start, backward.stop) == (9 - forward.stop, 9 - forward.start)
    with pytest.raises(NasRobustError, match="square"):
        C.block_structure(np.ones((3, 4)))
    with pytest.raises(NasRobustError, match="at least 4 layers"):
        C.block_structure(np.eye(3))
    with pytest.raises(NasRobustError, match="at least 2 layers"):
        C.block_structure(np.eye(5), min_size=1)
    with pytest.raises(NasRobustError, match="undefined"):
        C.block_structure(np.full((5, 5), np.nan))


# ----------------------------------------------------------------------------- comparison and bootstrap
def test_batch_hsic_reweighting_and_bootstrap(nets):
    from nasrobust.analysis.cka_compare import bootstrap

    a, b, images = nets
    res = C.layer_cka(a, images, b, batch_size=16)
    pb = res.per_batch
    assert pb.batches == 4 and res.batches == 4
    cross, self_a, self_b = pb.cka()
    np.testing.assert_allclose(cross, res.matrix.to_numpy(), atol=1e-12)
    # weights 2 on every batch change nothing; weight on one batch = that batch's own CKA
    np.testing.assert_allclose(pb.cka(np.full(4, 2.0))[0], cross, atol=1e-12)
    only = C.MinibatchCKA()
    only.update([t for t in _acts(a, images[:16])], [t for t in _acts(b, images[:16])])
    np.testing.assert_allclose(pb.cka(np.eye(4)[0])[0], only.result(), atol=1e-9)
    boot = bootstrap(pb, 50, seed=3)
    assert boot.cross.shape == (50, *cross.shape)
    np.testing.assert_array_equal(boot.cross, bootstrap(pb, 50, seed=3).cross)  # seeded
    assert not np.allclose(boot.cross, bootstrap(pb, 50, seed=4).cross)


def _acts(model, x):
    names = C.select_layers(model)
    rec = C._Recorder(model, names)
    with torch.no_grad():
        model(x)
    out = [t for _, t in rec.take()]
    rec.close()
    return out


def test_compare_identical_networks_and_two_different_ones(nets):
    from nasrobust.analysis.cka_compare import compare

    a, b, images = nets
    same = compare(C.layer_cka(a, images, a, batch_size=16), n_boot=100, seed=0, two_models=True)
    assert all(p.cka.value == pytest.approx(1.0, abs=1e-9) for p in same.per_layer)
    assert all(p.cka.low == pytest.approx(1.0, abs=1e-9) for p in same.per_layer)
    assert same.depth_trend is None and any("identical" in n for n in same.notes)
    for diff in same.differences.values():
        assert diff.value == pytest.approx(0.0, abs=1e-9) and diff.low == pytest.approx(0.0, abs=1e-9)

    diff = compare(C.layer_cka(a, images, b, batch_size=16), n_boot=100, seed=0)
    first, last = diff.per_layer[0], diff.per_layer[-1]
    assert first.depth == 0 and last.depth == len(diff.per_layer) - 1
    for p in diff.per_layer:
        assert p.cka.low <= p.cka.high
    assert diff.depth_trend is not None and -1 <= diff.depth_trend.spearman.value <= 1
    for key in ("a", "b"):
        block = diff.blocks[key]
        assert block.score.low <= block.score.high and block.first_layer in diff.result.self_a.index
    d = diff.to_dict()
    assert d["bootstrap"]["n_boot"] == 100 and len(d["per_layer"]) == len(diff.per_layer)
    with pytest.raises(NasRobustError, match="1 epoch"):
        compare(C.layer_cka(a, images, b, batch_size=16, epochs=2), n_boot=10)
    assert compare(C.layer_cka(a, images, b, batch_size=16, epochs=2), n_boot=0).blocks["a"].score.low is None
