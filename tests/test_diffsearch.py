"""Differentiable robust search: DARTS (1st/2nd order), DSRNA (Jacobian, CB, combined), AdvRush.

Tiny supernets (nb201, 4 channels, 1 cell per stage) on real MNIST digits (mnist5k), a few steps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nasrobust.diffsearch import BilevelRun, DiffSearchResult
from nasrobust.search import create_searcher
from nasrobust.space import decode, get_space

TINY = dict(channels=4, cells_per_stage=1, n_train=64, batch_size=16, steps_per_epoch=2, warmup_epochs=0,
            n_score=16, recalib_images=16)
SEARCHERS = ["darts", "darts-2nd", "dsrna-jacobian", "dsrna-cb", "dsrna-combined", "advrush"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _searcher(name: str, budget: int = 1, seed: int = 0, **kw):
    opts = {**TINY, **({"reg_start_epoch": 0} if name == "advrush" else {}), **kw}
    return create_searcher(name, "nb201", None, budget=budget, seed=seed, **opts)


def _alphas(run: BilevelRun) -> list[torch.Tensor]:
    return [a.detach().clone() for a in run.alphas]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in ("dsrna-combined", "dsrna-cb") else n
                                  for n in SEARCHERS])
def test_searcher_runs_changes_alphas_and_derives_canonical_arch(name):
    run = BilevelRun(_searcher(name), None, None)
    before = _alphas(run)
    result = run.run()
    after = _alphas(run)
    assert any(not torch.equal(a, b) for a, b in zip(before, after)), "the alphas did not move"
    assert isinstance(result, DiffSearchResult) and len(result.history) == 1 and len(result.trajectory) == 1
    best = result.best
    arch = decode(best.encoding)
    space = get_space("nb201")
    assert arch == run.supernet.derive() and space.arch(arch.genome) == arch and arch.encoding == best.encoding
    assert all(math.isfinite(v) for v in best.values)  # accuracies (and R) are finite
    assert 0.0 <= best.values[0] <= 1.0 and 0.0 <= best.values[1] <= 1.0


@pytest.mark.parametrize("name", ["dsrna-jacobian", "dsrna-cb", "dsrna-combined", "advrush"])
def test_regularizer_is_finite_and_its_gradient_reaches_the_alphas(name):
    run = BilevelRun(_searcher(name), None, None)
    x, y = run.x_a[:8], run.y_a[:8]
    r = run.regularizer_value(x, y)
    assert r.dim() == 0 and torch.isfinite(r)
    grads = torch.autograd.grad(r, run.alphas)
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_jacobian_regularizer_matches_finite_differences_of_the_logits():
    """R_J = -(eps/K) sum_k ||grad_x f_k||_1 (Linf threat): check one gradient entry by central differences."""
    run = BilevelRun(_searcher("dsrna-jacobian", eps=0.1), None, None)
    model = run.model.double().eval()
    x = run.x_a[:1].double()
    i, h = 300, 1e-5
    e = torch.zeros_like(x).flatten()
    e[i] = h
    e = e.view_as(x)
    with torch.no_grad():
        fd = (model(x + e) - model(x - e))[0] / (2 * h)  # d f_k / d x_i, all k
    x_req = x.clone().requires_grad_(True)
    jac = torch.stack([torch.autograd.grad(model(x_req)[0, k], x_req)[0].flatten()[i] for k in range(10)])
    torch.testing.assert_close(jac, fd, rtol=1e-5, atol=1e-7)
    # and the regulariser itself is the formula over the full gradients
    full = torch.stack([torch.autograd.grad(model(x_req)[0, k], x_req)[0].abs().sum() for k in range(10)])
    r = run.reg(model, x, run.y_a[:1])
    torch.testing.assert_close(r, -0.1 * full.mean(), rtol=1e-9, atol=1e-12)


def test_gamma_zero_reduces_dsrna_to_darts_exactly():
    darts = BilevelRun(_searcher("darts", steps_per_epoch=1), None, None)
    dsrna = BilevelRun(_searcher("dsrna-jacobian", gamma=0.0, steps_per_epoch=1), None, None)
    darts.run()
    dsrna.run()
    for a, b in zip(_alphas(darts), _alphas(dsrna)):
        assert torch.equal(a, b)
    # and with gamma > 0 the regulariser does change the search
    dsrna2 = BilevelRun(_searcher("dsrna-jacobian", gamma=1.0, steps_per_epoch=1), None, None)
    dsrna2.run()
    assert any(not torch.equal(a, b) for a, b in zip(_alphas(darts), _alphas(dsrna2)))


def _double(run: BilevelRun) -> BilevelRun:
    run.model.double()
    run.x_w, run.x_a = run.x_w.double(), run.x_a.double()
    return run


def _exact_unrolled_hypergradient(run: BilevelRun, xw, yw, xa, ya, lr: float) -> list[torch.Tensor]:
    """d/dalpha F(w - lr (grad_w L_train(w, alpha) + wd w), alpha) by autograd through the virtual step."""
    buffers = run._buffer_copies()
    params = dict(run.named_weights)
    loss = run.train_loss(xw, yw, params, buffers)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True, allow_unused=True)
    unrolled = {n: p - lr * ((torch.zeros_like(p) if g is None else g) + run.o.w_weight_decay * p)
                for (n, p), g in zip(params.items(), grads)}
    f, _ = run.upper_objective(xa, ya, unrolled, run._buffer_copies())
    return list(torch.autograd.grad(f, run.alphas))


def _smooth(module: torch.nn.Module) -> None:
    """Swap every ReLU for a softplus: a twice-differentiable network, so finite differences converge."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.ReLU):
            setattr(module, name, torch.nn.Softplus(beta=4.0))
        else:
            _smooth(child)


def test_second_order_differs_from_first_and_matches_exact_hypergradient():
    """DARTS eq. 7-8 vs autograd through the virtual step, on a smooth (softplus) float64 copy.

    On ReLU networks the central difference of DARTS' Hessian-vector product is noisy: with
    ~1e5 pre-activations some lie within r of a kink (checked: errors of O(1) relative at r = 0.01
    on this 4-channel supernet at initialisation), so the check uses a smooth network, where the
    error must fall as r^2.
    """
    lr = 0.5  # a large virtual step makes the second-order term visible
    errors = []
    for r in (1e-3, 1e-4):
        run = BilevelRun(_searcher("darts-2nd", hvp_r=r), None, None)
        _smooth(run.model)
        _double(run)
        xw, yw, xa, ya = next(run.batches(0))
        second, _ = run.hypergradient(xw, yw, xa, ya, lr)
        exact = _exact_unrolled_hypergradient(run, xw, yw, xa, ya, lr)
        errors.append(max(float((s - e).abs().max() / e.abs().max()) for s, e in zip(second, exact)))
    assert errors[0] < 2e-3 and errors[1] < errors[0] / 30  # O(r^2) convergence to the exact hypergradient
    run1 = BilevelRun(_searcher("darts"), None, None)
    _smooth(run1.model)
    _double(run1)
    first, _ = run1.hypergradient(xw, yw, xa, ya, lr)
    for s, f in zip(second, first):
        assert not torch.allclose(s, f, rtol=1e-2, atol=1e-8)


@pytest.mark.slow
def test_resume_gives_the_uninterrupted_result(tmp_path):
    kw = dict(warmup_epochs=1, steps_per_epoch=1)
    full = _searcher("dsrna-jacobian", budget=3, **kw).run(tmp_path / "full.pt")

    class Kill(Exception):
        pass

    def kill_after_first(ev, progress):
        if ev.index == 1 and not progress.replaying:
            raise Kill

    with pytest.raises(Kill):
        _searcher("dsrna-jacobian", budget=3, **kw).run(tmp_path / "cut.pt", on_evaluation=kill_after_first)
    resumed = _searcher("dsrna-jacobian", budget=3, **kw).run(tmp_path / "cut.pt")
    assert [e.encoding for e in resumed.trajectory] == [e.encoding for e in full.trajectory]
    np.testing.assert_array_equal([e.values for e in resumed.trajectory], [e.values for e in full.trajectory])
    a = torch.load(tmp_path / "full.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "cut.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # another search cannot reuse the state
    with pytest.raises(Exception, match="another differentiable search"):
        _searcher("dsrna-jacobian", budget=3, gamma=0.5, **kw).run(tmp_path / "cut.pt")


def test_warmup_freezes_alphas_and_pc_darts_option_runs():
    run = BilevelRun(_searcher("darts", warmup_epochs=1), None, None)
    before = _alphas(run)
    run.run()
    assert all(torch.equal(a, b) for a, b in zip(before, _alphas(run)))
    pc = BilevelRun(_searcher("darts", partial_channels=2), None, None)
    res = pc.run()
    assert math.isnan(res.best.values[1])  # a PC-DARTS supernet has no single-path subnet to score
    decode(res.best.encoding)


@pytest.mark.slow
def test_darts_space_runs():
    s = create_searcher("darts", "darts", None, budget=1, seed=0, **{**TINY, "channels": 4})
    res = s.run()
    arch = decode(res.best.encoding)
    assert arch.space == "darts" and get_space("darts").arch(arch.genome) == arch


def test_a_derived_cell_without_an_input_output_path_is_warned_about(caplog):
    """DSRNA-Jacobian can end in the all-`none` cell (zero output, zero Jacobian); the user is told."""
    from nasrobust.diffsearch import warn_if_disconnected

    space = get_space("nb201")
    dead = "nb201:|none~0|+|none~0|none~1|+|none~0|none~1|avg_pool_3x3~2|"
    alive = "nb201:|none~0|+|none~0|none~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"
    with caplog.at_level("WARNING", logger="nasrobust.diffsearch"):
        assert warn_if_disconnected(space, dead)
        assert not warn_if_disconnected(space, alive)
        assert not warn_if_disconnected(get_space("darts"), get_space("darts").sample(1, seed=0)[0].encoding)
    assert len(caplog.records) == 1 and "does not depend on its input" in caplog.records[0].getMessage()
