"""One-shot supernets of the cell spaces (nb201, darts): single-path, soft (DARTS) and PC-DARTS modes.

References checked here: the stand-alone networks ``space.build`` (extraction and one-hot soft
mode must reproduce them), the analytic cost counter (the supernet holds every op on every
edge), DARTS / PC-DARTS ``genotype()`` re-written independently below, xautodl's NAS-Bench-201
DARTS ``genotype()`` (argmax over all ops), ShuffleNet's channel-shuffle permutation, and
real MNIST data for the gradient and training checks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from nasrobust.cost import CostCounter
from nasrobust.data import ImageData, load_dataset
from nasrobust.errors import NasRobustError
from nasrobust.oneshot import MixedOp, Mode, OneShotSupernet, channel_shuffle, copy_weights
from nasrobust.space import get_space
from nasrobust.supernet import build_supernet, recalibrate_bn
from nasrobust.spaces import darts as darts_mod
from nasrobust.spaces import nb201 as nb201_mod
from nasrobust.spaces.darts import DartsGenome

#: Small configurations for CPU tests (28-px MNIST).
SMALL = {
    "nb201": {"channels": 4, "cells_per_stage": 1},
    "darts": {"channels": 4, "layers": 5},
}
N_RANDOM = 20


@pytest.fixture(scope="module")
def mnist() -> ImageData:
    return load_dataset("mnist5k")


def _images(data: ImageData, start: int, n: int, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """Real MNIST digits as the networks take them: 3 channels, normalised."""
    ds = getattr(data, split)
    x, y = ds.tensors[0][start : start + n], ds.tensors[1][start : start + n]
    mean = torch.tensor(data.info.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.info.std).view(1, 3, 1, 1)
    return (x.expand(-1, 3, -1, -1) - mean) / std, y


def _supernet(space: str, **options) -> OneShotSupernet:
    torch.manual_seed(0)
    return get_space(space).supernet(num_classes=10, **SMALL[space], **options)


@torch.no_grad()
def _nontrivial_bn(sn: OneShotSupernet, data: ImageData) -> None:
    """Every BN of every op gets real running statistics (soft mode runs all ops) and random affine values."""
    sn.set_mode("soft")
    recalibrate_bn(sn, [_images(data, 0, 16, "train")[0], _images(data, 16, 16, "train")[0]])
    gen = torch.Generator().manual_seed(1)
    for m in sn.modules():
        if isinstance(m, nn.BatchNorm2d) and m.affine:
            m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
            m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
        if isinstance(m, nn.BatchNorm2d):
            assert int(m.num_batches_tracked) > 0 and m.running_mean.abs().sum() > 0


def _assert_same(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """Equal up to float32 rounding (folding a conv bias, or adding zero-weighted ops, reorders sums):
    1e-5 of the logits' scale."""
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()), msg=what)


def _archs(sn: OneShotSupernet) -> list:
    rng = np.random.default_rng(7)
    archs = [sn.sample(rng) for _ in range(N_RANDOM)]
    return archs + list(sn.space.named().values()) + [sn.largest(), sn.smallest()]


# --------------------------------------------------------------------------- construction
def test_default_configs_are_the_published_search_networks():
    nb = get_space("nb201").supernet()
    assert nb.config == {"num_classes": 10, "channels": 16, "cells_per_stage": 5, "affine": True, "partial_channels": 1, "alpha_seed": 0}
    assert sum(type(c).__name__ == "NB201SearchCell" for c in nb.net.cells) == 15  # 3 stages x N=5
    assert [tuple(p.shape) for p in nb.arch_parameters()] == [(6, 5)]
    dn = get_space("darts").supernet()
    assert dn.config["channels"] == 16 and dn.config["layers"] == 8
    assert [c.reduction for c in dn.cells] == [False, False, True, False, False, True, False, False]
    assert all(len(c.edges) == 14 and all(len(e.ops) == 8 for e in c.edges) for c in dn.cells)
    assert [tuple(p.shape) for p in dn.arch_parameters()] == [(14, 8), (14, 8)]
    pc = get_space("darts").supernet(partial_channels=4, edge_normalization=True, affine=False)
    assert [tuple(p.shape) for p in pc.arch_parameters()] == [(14, 8), (14, 8), (14,), (14,)]


def _nb201_supernet_params(channels: int, n: int) -> int:
    """Analytic: the all-skip network plus, for every op, what it adds on all 6 edges of every cell."""
    space = get_space("nb201")
    cost = lambda op: space.cost(space.arch((op,) * 6), 10, 32, channels, n).params  # noqa: E731
    return cost("skip_connect") + sum(cost(op) - cost("skip_connect") for op in nb201_mod.OP_NAMES)


def _darts_supernet_params(channels: int, layers: int) -> int:
    """Analytic (the space's OP_COST twin): stem, per cell preprocessing + 14 edges x 8 ops, classifier."""
    c_stem = 3 * channels
    total = CostCounter(32).conv(3, c_stem, 3).norm(c_stem).params
    c_pp, c_p, c = c_stem, c_stem, channels
    red_prev = False
    for i in range(layers):
        red = i in (layers // 3, 2 * layers // 3)
        c = 2 * c if red else c
        cc = CostCounter(32)
        if red_prev:
            cc.conv(c_pp, c // 2, 1, 2).conv(c_pp, c // 2, 1, 2).norm(c)
        else:
            cc.conv(c_pp, c, 1).norm(c)
        cc.conv(c_p, c, 1).norm(c)
        for node in range(4):
            for j in range(node + 2):
                for op in darts_mod.OP_NAMES:
                    darts_mod.OP_COST[op](cc, c, 2 if red and j < 2 else 1)
        total += cc.params
        c_pp, c_p, red_prev = c_p, 4 * c, red
    return total + c_p * 10 + 10


def test_supernet_holds_every_op_on_every_edge():
    for channels, n in ((16, 5), (4, 1)):
        sn = get_space("nb201").supernet(channels=channels, cells_per_stage=n)
        assert sum(p.numel() for p in sn.weight_parameters()) == _nb201_supernet_params(channels, n)
    for channels, layers in ((16, 8), (4, 5)):
        sn = get_space("darts").supernet(channels=channels, layers=layers)
        assert sum(p.numel() for p in sn.weight_parameters()) == _darts_supernet_params(channels, layers)


def test_bad_options_explain():
    with pytest.raises(NasRobustError, match="partial_channels"):
        get_space("nb201").supernet(channels=6, partial_channels=4)
    with pytest.raises(NasRobustError, match="even"):
        get_space("darts").supernet(channels=2, layers=2, partial_channels=4)
    with pytest.raises(NasRobustError, match="positive integer"):
        get_space("darts").supernet(partial_channels=0)


# --------------------------------------------------------------------------- single path and extraction
@pytest.mark.parametrize("space", ["nb201", "darts"])
@pytest.mark.parametrize("affine", [True, False])
def test_extract_equals_active_outputs(space, affine, mnist):
    """20 random archs + the named points + largest/smallest: extract() == supernet, eval mode, real BN stats."""
    sn = _supernet(space, affine=affine)
    _nontrivial_bn(sn, mnist)
    sn.eval()
    x, _ = _images(mnist, 0, 8)
    sp = get_space(space)
    for arch in _archs(sn):
        sn.set_active(arch)
        assert sn.mode is Mode.SINGLE
        with torch.no_grad():
            got = sn(x)
            net = sn.extract(arch).eval()
            want = net(x)
        assert sum(p.numel() for p in net.parameters()) == sp.cost(arch, 10, 28, **sn.build_kwargs()).params
        _assert_same(got, want, f"{arch}")
        assert got.std() > 0


@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_extract_equals_supernet_in_train_mode_without_affine(space, mnist):
    """DARTS' affine=False BN and NB201's conv bias are converted exactly under batch statistics too."""
    sn = _supernet(space, affine=False)
    _nontrivial_bn(sn, mnist)
    sn.train()
    x, _ = _images(mnist, 100, 8)
    for arch in _archs(sn)[:5]:
        sn.set_active(arch)
        net = sn.extract(arch).train()
        torch.testing.assert_close(sn(x), net(x), rtol=1e-4, atol=1e-4)


def test_copy_weights_refuses_different_layouts():
    from nasrobust.spaces._nb201_net import OPS

    with pytest.raises(ValueError, match="layouts differ"):
        copy_weights(OPS["nor_conv_3x3"](4, 4, 1), OPS["avg_pool_3x3"](4, 4, 1))


# --------------------------------------------------------------------------- soft mode
def _onehot_alphas(sn: OneShotSupernet, arch) -> None:
    """Alphas that put all weight on ``arch``'s ops (and ``none`` on darts' unused edges)."""
    big = 1e4  # exp(-1e4) underflows to 0 in float32: the softmax is exactly one-hot
    with torch.no_grad():
        for p in sn.arch_parameters():
            p.zero_()
        if sn.space.name == "nb201":
            for e, op in enumerate(arch.genome):
                sn.arch_params["alpha"][e, nb201_mod.OP_INDEX[op]] = big
            return
        from nasrobust.spaces._darts_supernet import ROWS

        for kind, cell in arch.genome.cells().items():
            alpha = sn.arch_params[f"alpha_{kind}"]
            alpha[:, darts_mod.OP_INDEX["none"]] = big
            for i, node in enumerate(cell):
                for op, j in node:
                    alpha[ROWS[i][j]] = 0.0
                    alpha[ROWS[i][j], darts_mod.OP_INDEX[op]] = big


def _darts_arch_without_pools(rng: np.random.Generator):
    """DARTS' soft mode adds a BN after pooling ops, so the one-hot check uses the other ops."""
    ops = ["skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
    cells = []
    for _ in range(2):
        cell = []
        for i in range(4):
            a, b = rng.choice(i + 2, size=2, replace=False)
            cell.append(((ops[rng.integers(5)], int(a)), (ops[rng.integers(5)], int(b))))
        cells.append(tuple(cell))
    return get_space("darts").arch(DartsGenome(*cells))


@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_soft_mode_with_onehot_alphas_is_the_single_path(space, mnist):
    """sum_o softmax(alpha)_o op_o(x) with a one-hot softmax must be the stand-alone network of that arch."""
    sn = _supernet(space, affine=False)
    _nontrivial_bn(sn, mnist)
    sn.eval()
    x, _ = _images(mnist, 200, 8)
    rng = np.random.default_rng(3)
    archs = [sn.sample(rng) for _ in range(4)] if space == "nb201" else [_darts_arch_without_pools(rng) for _ in range(4)]
    for arch in archs + [sn.largest()]:
        _onehot_alphas(sn, arch)
        sn.set_mode("soft")
        with torch.no_grad():
            soft = sn(x)
            want = sn.extract(arch).eval()(x)
        _assert_same(soft, want, f"{arch}")


@pytest.mark.parametrize(
    "space, options",
    [
        ("nb201", {}),
        ("nb201", {"partial_channels": 4}),
        ("darts", {"affine": False}),
        ("darts", {"partial_channels": 2, "edge_normalization": True}),
    ],
)
def test_soft_mode_gives_gradients_to_alphas_and_every_weight(space, options, mnist):
    sn = _supernet(space, **options)
    sn.set_mode("soft")
    sn.train()
    x, y = _images(mnist, 0, 8, "train")
    nn.functional.cross_entropy(sn(x), y).backward()
    for p in sn.arch_parameters():
        assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0
    missing = [n for n, p in sn.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing[:5]


@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_single_path_gradients_reach_only_the_active_ops(space, mnist):
    sn = _supernet(space)
    x, y = _images(mnist, 0, 8, "train")
    rng = np.random.default_rng(5)
    for arch in [sn.sample(rng), sn.largest()]:
        sn.zero_grad(set_to_none=True)
        sn.set_active(arch)
        sn.train()
        nn.functional.cross_entropy(sn(x), y).backward()
        got = {id(p) for p in sn.parameters() if p.grad is not None}
        assert got == _expected_single_path_params(sn, arch)
        assert all(p.grad is None and not p.requires_grad for p in sn.arch_parameters())


def _expected_single_path_params(sn: OneShotSupernet, arch) -> set[int]:
    """Skeleton (stem, preprocessing, reductions, classifier) + the active op of every active edge."""
    ids: set[int] = set()
    if sn.space.name == "nb201":
        from nasrobust.spaces._nb201_supernet import NB201SearchCell

        for mod in [sn.net.stem, sn.net.lastact, sn.net.classifier]:
            ids |= {id(p) for p in mod.parameters()}
        for cell in sn.net.cells:
            if isinstance(cell, NB201SearchCell):
                for edge, op in zip(cell.edges, arch.genome):
                    ids |= {id(p) for p in edge.ops[nb201_mod.OP_INDEX[op]].parameters()}
            else:
                ids |= {id(p) for p in cell.parameters()}
        return ids
    from nasrobust.spaces._darts_supernet import ROWS

    for mod in [sn.stem, sn.classifier]:
        ids |= {id(p) for p in mod.parameters()}
    for cell in sn.cells:
        ids |= {id(p) for p in cell.preprocess0.parameters()} | {id(p) for p in cell.preprocess1.parameters()}
        genome_cell = arch.genome.reduce if cell.reduction else arch.genome.normal
        for i, node in enumerate(genome_cell):
            for op, j in node:
                ids |= {id(p) for p in cell.edges[ROWS[i][j]].ops[darts_mod.OP_INDEX[op]].parameters()}
    return ids


def test_modes_keep_architecture_and_weight_parameters_apart():
    for space in ("nb201", "darts"):
        sn = _supernet(space, **({"edge_normalization": True} if space == "darts" else {}))
        arch_ids = {id(p) for p in sn.arch_parameters()}
        weight_ids = {id(p) for p in sn.weight_parameters()}
        assert not arch_ids & weight_ids
        assert arch_ids | weight_ids == {id(p) for p in sn.parameters()}
        assert sn.mode is Mode.SINGLE and not any(p.requires_grad for p in sn.arch_parameters())
        with pytest.raises(NasRobustError, match="set_active"):
            sn(torch.zeros(1, 3, 28, 28))
        with pytest.raises(NasRobustError, match="set_active"):
            sn.set_mode("single")
        with pytest.raises(NasRobustError, match="valid: single, soft"):
            sn.set_mode("gumbel")
        sn.set_mode("soft")
        assert all(p.requires_grad for p in sn.arch_parameters())
        sn.set_active(sn.largest())  # back to single path, alphas frozen
        assert sn.mode is Mode.SINGLE and not any(p.requires_grad for p in sn.arch_parameters())
        before = [p.detach().clone() for p in sn.arch_parameters()]
        assert {k for k in sn.state_dict() if k.startswith("arch_params.")} == {f"arch_params.{k}" for k in sn.arch_params}
        sn.reset_alphas(torch.Generator().manual_seed(0))  # alpha_seed=0 is the construction draw
        assert all(torch.equal(a, b) for a, b in zip(before, sn.arch_parameters()))


# --------------------------------------------------------------------------- PC-DARTS
def test_channel_shuffle_is_shufflenets_permutation():
    x = torch.arange(12.0).view(1, 12, 1, 1)
    out = channel_shuffle(x, 4).flatten().tolist()
    groups, per = 4, 3
    assert out == [float(g * per + i) for i in range(per) for g in range(groups)]


@pytest.mark.parametrize("stride", [1, 2])
def test_partial_channel_edge_mixes_a_quarter_and_bypasses_the_rest(stride):
    from nasrobust.spaces._darts_net import OPS

    torch.manual_seed(0)
    k, c = 4, 16
    op = MixedOp([OPS[name](c // k, stride, False) for name in darts_mod.OP_NAMES], stride=stride, partial_channels=k).eval()
    x = torch.randn(2, c, 8, 8)
    w = torch.softmax(torch.randn(8), 0)
    out = op.soft(x, w)
    unshuffled = channel_shuffle(out, c // k)  # the inverse of a shuffle with k groups
    bypass = x[:, c // k :] if stride == 1 else nn.functional.max_pool2d(x[:, c // k :], 2)
    torch.testing.assert_close(unshuffled[:, c // k :], bypass)
    mixed = sum(wi * o(x[:, : c // k]) for wi, o in zip(w, op.ops))
    torch.testing.assert_close(unshuffled[:, : c // k], mixed)


def _saved_bytes(sn: OneShotSupernet, x: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward pass (the memory PC-DARTS reduces)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        sn(x)
    return total


def test_partial_channels_cut_memory_and_are_soft_only(mnist):
    x, _ = _images(mnist, 0, 8, "train")
    full = _supernet("darts", affine=False)
    pc = _supernet("darts", affine=False, partial_channels=4, edge_normalization=True)
    for sn in (full, pc):
        sn.set_mode("soft")
        sn.train()
    ratio = _saved_bytes(pc, x) / _saved_bytes(full, x)
    assert ratio < 0.4, ratio
    with pytest.raises(NasRobustError, match="PC-DARTS"):
        pc.set_active(pc.largest())
    with pytest.raises(NasRobustError, match="PC-DARTS"):
        pc.extract(pc.largest())
    assert pc.derive().space == "darts"


# --------------------------------------------------------------------------- derivation
def test_nb201_derive_is_xautodl_argmax_over_all_ops():
    sn = _supernet("nb201")
    space = get_space("nb201")
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        alpha = torch.randn(6, 5, generator=gen)
        with torch.no_grad():
            sn.arch_params["alpha"].copy_(alpha)
        ops = tuple(nb201_mod.OP_NAMES[int(np.argmax(row))] for row in alpha.numpy())
        assert sn.derive() == space.arch(ops)
    with torch.no_grad():  # 'none' wins where its alpha is largest (it is not excluded)
        sn.arch_params["alpha"].zero_()
        sn.arch_params["alpha"][:, nb201_mod.OP_INDEX["nor_conv_3x3"]] = 1.0
        sn.arch_params["alpha"][3, nb201_mod.OP_INDEX["none"]] = 2.0
    assert sn.derive().genome == ("nor_conv_3x3",) * 3 + ("none",) + ("nor_conv_3x3",) * 2


def _reference_genotype(alpha: np.ndarray, beta: np.ndarray | None) -> list[tuple[str, int]]:
    """DARTS / PC-DARTS ``genotype()._parse``, transcribed loop by loop (softmax in float32 numpy)."""
    e = np.exp(alpha - alpha.max(axis=1, keepdims=True))
    weights = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    if beta is None:
        weights2 = np.ones(14, dtype=np.float32)
    else:
        parts, start, n = [], 0, 2
        for _ in range(4):
            b = beta[start : start + n]
            parts.append(np.exp(b - b.max()) / np.exp(b - b.max()).sum())
            start, n = start + n, n + 1
        weights2 = np.concatenate(parts).astype(np.float32)
    none = darts_mod.OP_NAMES.index("none")
    gene, n, start = [], 2, 0
    for i in range(4):
        end = start + n
        W = weights[start:end].copy()
        W2 = weights2[start:end].copy()
        for j in range(n):
            W[j, :] = W[j, :] * W2[j]
        edges = sorted(range(i + 2), key=lambda x: -max(W[x][k] for k in range(len(W[x])) if k != none))[:2]
        for j in edges:
            k_best = None
            for k in range(len(W[j])):
                if k != none and (k_best is None or W[j][k] > W[j][k_best]):
                    k_best = k
            gene.append((darts_mod.OP_NAMES[k_best], j))
        start = end
        n += 1
    return gene


@pytest.mark.parametrize("edge_normalization", [False, True])
def test_darts_derive_matches_the_reference_genotype(edge_normalization):
    sn = _supernet("darts", edge_normalization=edge_normalization)
    space = get_space("darts")
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        with torch.no_grad():
            for p in sn.arch_parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
        a = {k: p.detach().numpy() for k, p in sn.arch_params.items()}
        beta = (lambda kind: a[f"beta_{kind}"]) if edge_normalization else (lambda kind: None)
        ref = DartsGenome(*(darts_mod._from_pairs(_reference_genotype(a[f"alpha_{k}"], beta(k))) for k in ("normal", "reduce")))
        assert sn.derive() == space.arch(ref)


def test_darts_derive_recovers_a_published_cell_and_ignores_none():
    """Alphas where 'none' dominates every edge still derive the cell encoded by the other ops (darts-v2)."""
    from nasrobust.spaces._darts_supernet import ROWS

    sn = _supernet("darts")
    target = get_space("darts").named()["darts-v2"]
    raw = darts_mod._PUBLISHED["darts-v2"]
    with torch.no_grad():
        for kind, pairs in zip(("normal", "reduce"), raw):
            alpha = sn.arch_params[f"alpha_{kind}"]
            alpha.zero_()
            alpha[:, darts_mod.OP_INDEX["none"]] = 8.0
            for i, node in enumerate(darts_mod._from_pairs(pairs)):
                for op, j in node:
                    alpha[ROWS[i][j], darts_mod.OP_INDEX[op]] = 3.0
    assert sn.derive() == target


# --------------------------------------------------------------------------- DARTS step on MNIST
@pytest.mark.parametrize("space, options", [("nb201", {}), ("darts", {}), ("darts", {"partial_channels": 4, "edge_normalization": True})])
def test_first_order_darts_step_on_mnist(space, options, mnist):
    """One DARTS first-order iteration (Liu et al. 2019, Alg. 1 with xi = 0) with the paper's optimisers.

    The architecture step lowers the validation loss of its batch (the alpha gradient points
    downhill), touches no weight; the weight step touches no alpha; derive() gives a canonical arch.
    """
    info = mnist.info
    torch.manual_seed(0)
    model = build_supernet(space, 28, info.mean, info.std, num_classes=10, **SMALL[space], affine=False, **options)
    sn = model.supernet
    sn.set_mode("soft")
    model.train()
    train_x, train_y = mnist.train.tensors[0][:16], mnist.train.tensors[1][:16]
    val_x, val_y = mnist.train.tensors[0][2000:2016], mnist.train.tensors[1][2000:2016]  # DARTS: half of train
    w_opt = torch.optim.SGD(sn.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam(sn.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    loss = lambda x, y: nn.functional.cross_entropy(model(x), y)  # noqa: E731

    alphas0 = [p.detach().clone() for p in sn.arch_parameters()]
    weights0 = [p.detach().clone() for p in sn.weight_parameters()]
    with torch.no_grad():
        val_before = float(loss(val_x, val_y))
    a_opt.zero_grad()
    loss(val_x, val_y).backward()
    a_opt.step()
    with torch.no_grad():
        val_after = float(loss(val_x, val_y))
    assert val_after < val_before
    assert all(not torch.equal(a, p) for a, p in zip(alphas0, sn.arch_parameters()))
    assert all(torch.equal(w, p) for w, p in zip(weights0, sn.weight_parameters()))

    alphas1 = [p.detach().clone() for p in sn.arch_parameters()]
    w_opt.zero_grad()
    loss(train_x, train_y).backward()
    w_opt.step()
    assert all(torch.equal(a, p) for a, p in zip(alphas1, sn.arch_parameters()))
    assert sum(not torch.equal(w, p) for w, p in zip(weights0, sn.weight_parameters())) > 0.9 * len(weights0)

    arch = sn.derive()
    sp = get_space(space)
    assert arch.space == space and sp.arch(arch.genome) == arch and sp.decode(arch.encoding) == arch


# --------------------------------------------------------------------------- largest / smallest
def test_nb201_largest_and_smallest_bound_the_space():
    space = get_space("nb201")
    sn = space.supernet(channels=4, cells_per_stage=1)
    costs = {a: space.cost(a) for a in space.enumerate()}
    big, small = costs[sn.largest()], costs[sn.smallest()]
    assert big.params == max(c.params for c in costs.values()) and big.flops == max(c.flops for c in costs.values())
    assert small.params == min(c.params for c in costs.values())
    connected = [a for a in costs if space.factors(a)["connected"]]
    assert small.flops == min(costs[a].flops for a in connected)
    assert space.factors(sn.smallest())["connected"] == 1.0


def test_darts_largest_and_smallest_bound_the_space():
    space = get_space("darts")
    sn = space.supernet(channels=4, layers=5)
    kw = sn.build_kwargs()
    params = [space.cost(a, **kw).params for a in space.sample(300, seed=0)]
    big, small = space.cost(sn.largest(), **kw), space.cost(sn.smallest(), **kw)
    assert big.params >= max(params) and small.params <= min(params)
    assert space.factors(sn.smallest())["param_ops"] == 0
    assert space.factors(sn.largest())["normal_sep_conv_5x5"] == 8


# --------------------------------------------------------------------------- sandwich training
@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_sandwich_training_step(space, mnist, tmp_path):
    from torch.utils.data import Subset

    from nasrobust.checkpoint import load_supernet
    from nasrobust.train.api import train_supernet
    from nasrobust.train.recipe import Recipe, SandwichConfig

    data = ImageData(mnist.info, Subset(mnist.train, range(64)), Subset(mnist.test, range(50)))
    recipe = Recipe(epochs=1, batch_size=32, lr=0.05, bn_recalib_images=64, sandwich=SandwichConfig(num_random=1))
    torch.manual_seed(0)
    init = build_supernet(space, 28, mnist.info.mean, mnist.info.std, num_classes=10, **SMALL[space]).state_dict()
    result = train_supernet(space, data, recipe, tmp_path / "run", progress=False, **SMALL[space])
    row = result.history[-1]
    assert np.isfinite(row["train_loss"]) and {"test_acc_largest", "test_acc_smallest"} <= set(row)
    model, payload = load_supernet(result.checkpoint)
    state = model.state_dict()
    assert set(state) == set(init)
    changed = {k for k in init if not torch.equal(init[k], state[k])}
    assert any("classifier.weight" in k for k in changed) and any("stem.0.weight" in k for k in changed)
    arch_keys = [k for k in init if k.startswith("net.arch_params.")]
    assert len(arch_keys) == len(model.supernet.arch_params)
    assert not changed & set(arch_keys), "sandwich training must not move the architecture parameters"


def test_supernet_rebuilds_from_its_config():
    for space in ("nb201", "darts"):
        sn = _supernet(space, affine=False, partial_channels=2)
        again = get_space(space).supernet(**sn.config)
        assert {k: v.shape for k, v in sn.state_dict().items()} == {k: v.shape for k, v in again.state_dict().items()}
        again.load_state_dict(sn.state_dict())
        assert all(torch.equal(a, b) for a, b in zip(sn.arch_parameters(), again.arch_parameters()))

