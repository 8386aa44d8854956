"""Soundness of the certified bounds, checked by attacking them.

A certified lower bound on a margin ``f_y - f_k`` over a perturbation set must never lie above a
margin that some point of the set attains. This file looks for such points two ways -- random
points of the set (half on its boundary, half inside) and PGD that minimises each margin on its
own -- and checks every bound method at eps 0, 1e-8, 1e-3 and 1e-2 under Linf and L2, on
NAS-Bench-201 cells and bignas-small networks, untrained (random BN statistics) and briefly
trained on MNIST digits.

eps 0 and 1e-8 are where float32 used to fail: two bounds of one neuron that nearly coincide
(CROWN and IBP, or the exact L2 prefix bound and the clipped box) crossed by a few ulps, the
intersection got a negative radius and IBP's ``|W| r`` grew it layer by layer (full CROWN at eps 0
on nb201 cells ended 6e-2 above the margin; IBP at L2 1e-8 on trained bignas-small subnets 3e-2).
The tolerance is float32 rounding of the forward pass itself: ``TOL_ULPS`` units of roundoff of
the largest logit.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from nasrobust.bounds import METHODS, BoundGraph, margin_spec
from nasrobust.data import load_dataset, stack
from nasrobust.models import ImageClassifier
from nasrobust.space import get_space
from tests.test_bounds import _samples  # points of the set, half on its boundary

EPS = (0.0, 1e-8, 1e-3, 1e-2)
NORMS = ("linf", "l2")
#: Allowed excess of a bound over an attained margin, in float32 roundoff units of the largest logit.
TOL_ULPS = 64
RESOLUTION = 8
N_EXAMPLES = 3

CELLS = {
    "nb201-mixed": "nb201:|nor_conv_3x3~0|+|avg_pool_3x3~0|skip_connect~1|+|none~0|nor_conv_1x1~1|skip_connect~2|",
    "nb201-convs": "nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
}


def _build(name: str) -> nn.Module:
    if name in CELLS:
        sp = get_space("nb201")
        net = sp.build(sp.decode(CELLS[name]), num_classes=10, channels=4, cells_per_stage=1)
    else:
        sp = get_space("bignas-small")
        net = sp.build(sp.sample(1, seed=3)[0], num_classes=10)
    return net


def _random_bn(model: nn.Module, gen: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


def _train(model: nn.Module, steps: int = 60) -> None:
    """A few Adam steps on MNIST digits: real BN statistics and weights away from their init."""
    gen = torch.Generator().manual_seed(0)
    x, y = stack(load_dataset("mnist5k").train)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="module", params=[f"{n}/{w}" for n in (*CELLS, "bignas-small") for w in ("untrained", "trained")])
def case(request):
    name, weights = request.param.split("/")
    torch.manual_seed(sum(map(ord, request.param)))
    model = ImageClassifier(_build(name), RESOLUTION, (0.13,) * 3, (0.31,) * 3)
    if weights == "trained":
        _train(model)
    else:
        _random_bn(model, torch.Generator().manual_seed(1))
    model.eval()
    x, y = stack(load_dataset("mnist5k").test_subset(N_EXAMPLES))
    with torch.no_grad():
        y = model(x).argmax(1)  # margins of the predicted class: positive, so certification is at stake
    return request.param, model, x, y


def _margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return torch.einsum("bsk,bk->bs", margin_spec(y, out.shape[1], out.dtype), out)


def _project(delta: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        n = delta.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (x.dim() - 1)))
        delta = delta * (eps / n).clamp(max=1.0)
    return (x + delta).clamp(0, 1) - x  # clipping moves every coordinate towards x: still inside the ball


def _attacked_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """The smallest value of each margin ``(b, k)`` found by random points and by a PGD run per margin."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        best = _margins(model, x, y)
        if eps == 0:
            return best
        for p in _samples(x, eps, norm, 64, gen):
            best = torch.minimum(best, _margins(model, p, y))
    K1 = best.shape[1]
    xr, yr = x.repeat_interleave(K1, 0), y.repeat_interleave(K1, 0)  # one copy of each example per margin
    pick = torch.arange(K1).repeat(len(x))
    shape = (-1,) + (1,) * (x.dim() - 1)
    for restart in range(2):
        delta = _samples(xr, eps, norm, 2, gen)[restart] - xr
        for _ in range(30):
            delta.requires_grad_(True)
            m = _margins(model, xr + delta, yr).gather(1, pick[:, None]).squeeze(1)
            (g,) = torch.autograd.grad(m.sum(), delta)
            with torch.no_grad():
                if norm == "linf":
                    delta = delta - eps / 4 * g.sign()
                else:
                    delta = delta - eps / 4 * g / g.flatten(1).norm(dim=1).clamp_min(1e-30).view(shape)
                delta = _project(delta, xr, eps, norm)
        with torch.no_grad():
            m = _margins(model, xr + delta, yr).gather(1, pick[:, None]).view(len(x), K1)
        best = torch.minimum(best, m)
    return best


@pytest.mark.slow
@pytest.mark.parametrize("norm", NORMS)
def test_no_bound_lies_above_an_attained_margin(case, norm):
    name, model, x, y = case
    g = BoundGraph(model, x)
    with torch.no_grad():
        tol = TOL_ULPS * torch.finfo(torch.float32).eps * float(model(x).abs().max())
    failures = []
    for eps in EPS:
        attained = _attacked_margins(model, x, y, eps, norm)
        for method in METHODS:
            with torch.no_grad():
                bound = g.margin_lower(x, y, eps, norm, method)
            excess = float((bound - attained).max())
            if excess > tol:
                failures.append(f"{method} eps={eps:g}: bound exceeds an attained margin by {excess:.3g} (tol {tol:.2g})")
    assert not failures, f"{name} {norm}: " + "; ".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize("norm", NORMS)
def test_certified_radius_survives_the_attack(case, norm):
    """No attacked point inside the certified radius (crown-zono, the suite's tight method) changes the class."""
    name, model, x, y = case
    g = BoundGraph(model, x)
    r = g.certified_radius(x, y, norm, "crown-zono", rtol=0.1)
    for i in range(len(x)):
        if r[i] > 0:
            attained = _attacked_margins(model, x[i:i + 1], y[i:i + 1], float(r[i]), norm)
            assert (attained > 0).all(), (name, norm, i, float(r[i]), float(attained.min()))
