"""Bound propagation (IBP, CROWN-IBP, CROWN) and DSRNA's Jacobian bound.

References the tests check against:

* soundness -- the true outputs: Monte-Carlo samples of the perturbation set (corners and
  interior for Linf, sphere and interior for L2, clipped to [0, 1]) and PGD on the margins
  never leave the bounds, on hand-made cell networks and the nb201 / darts / bignas-small
  networks the spaces build (wrapped in ImageClassifier: grey expand, bilinear resize,
  normalisation);
* exactness -- at eps = 0 every method returns f(x); on a 2-d input 1-hidden-layer ReLU net the
  bound is below the brute-force grid minimum and equal to it where no neuron is unstable; on
  purely linear networks IBP (spec folded into the last affine block) equals the closed-form
  minimum ``C W x + C b - eps ||C W||_1``; a single affine layer's IBP interval is exact;
* tightness -- CROWN-IBP margins are tighter than IBP's on average and strictly on a typical
  net, full CROWN tighter than CROWN-IBP;
* the Jacobian bound -- a per-logit autograd loop computing ``-(eps/K) sum_k ||grad f_k||_q``;
* differentiability -- ``torch.autograd.gradcheck`` (float64) of the margin bounds w.r.t. the
  weights, and finite gradients w.r.t. a soft one-shot supernet's architecture parameters.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nasrobust.bounds import (
    BoundGraph,
    InputSet,
    Interval,
    NotBoundableError,
    jacobian_estimate,
    jacobian_norms,
    margin_bounds,
    margin_spec,
    unsupported_reasons,
)
from nasrobust.models import ImageClassifier
from nasrobust.space import get_space

METHODS = ("ibp", "crown-ibp", "crown-zono", "crown")


def _randomise_bn(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """Non-trivial eval-mode BN statistics and affine parameters (untrained nets have mean 0, var 1)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=gen))
    return model


class CellNet(nn.Module):
    """Every supported op in one small graph: conv/BN/ReLU, max-pool (ceil mode), avg-pool
    without padded zeros, residual add, slicing + zero padding + concat (factorized reduce),
    the ``x * 0`` none op, a constant-tensor scale, dropout/identity, adaptive pooling, linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6))
        self.conv = nn.Sequential(nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6))
        self.dil = nn.Sequential(nn.ReLU(), nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=6, bias=False),
                                 nn.Conv2d(6, 6, 1, bias=False), nn.BatchNorm2d(6, affine=False))
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.maxpool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.fr1, self.fr2 = nn.Conv2d(6, 4, 1, stride=2, bias=False), nn.Conv2d(6, 4, 1, stride=2, bias=False)
        self.drop, self.ident = nn.Dropout(0.5), nn.Identity()
        self.register_buffer("scale", torch.linspace(-1.0, 1.5, 14).view(1, 14, 1, 1))
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(56, 16), nn.ReLU(),
                                  nn.Linear(16, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        a = self.conv(s) + self.pool(s) + s.mul(0.0) + self.dil(s)
        r = F.relu(a)
        shifted = F.pad(r[:, :, 1:, 1:], (0, 1, 0, 1))
        reduced = torch.cat([self.fr1(r), self.fr2(shifted), self.maxpool(a)[:, :6]], dim=1)
        return self.head(self.ident(self.drop(reduced * self.scale)))


def _cellnet(gen: torch.Generator) -> nn.Module:
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    return ImageClassifier(_randomise_bn(CellNet(), gen), 9, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)).eval()


def _space_net(name: str, encoding: str | None, gen: torch.Generator, **kw) -> nn.Module:
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    sp = get_space(name)
    arch = sp.decode(encoding) if encoding else sp.smallest()
    return ImageClassifier(_randomise_bn(sp.build(arch, num_classes=10, **kw), gen), kw.pop("resolution", 8)).eval()


NB201_ALL_OPS = "nb201:|nor_conv_3x3~0|+|avg_pool_3x3~0|skip_connect~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"
DARTS_CELL = ("darts:normal=max_pool_3x3~0+sep_conv_3x3~1|dil_conv_3x3~0+skip_connect~2|avg_pool_3x3~1+sep_conv_5x5~3|"
              "skip_connect~0+dil_conv_5x5~4;reduce=max_pool_3x3~0+skip_connect~1|avg_pool_3x3~0+sep_conv_3x3~2|"
              "skip_connect~2+max_pool_3x3~1|dil_conv_3x3~3+avg_pool_3x3~4")

NETS = {
    "cellnet": lambda g: (_cellnet(g), (2, 3, 9, 9)),
    "nb201": lambda g: (_space_net("nb201", NB201_ALL_OPS, g, channels=4, cells_per_stage=1), (2, 1, 10, 10)),
    "darts": lambda g: (_space_net("darts", DARTS_CELL, g, channels=4, layers=3), (2, 3, 8, 8)),
    "bignas-small": lambda g: (_space_net("bignas-small", None, g), (2, 1, 8, 8)),
}


@pytest.fixture(scope="module", params=sorted(NETS))
def net(request):
    gen = torch.Generator().manual_seed(sum(map(ord, request.param)))
    model, shape = NETS[request.param](gen)
    x = torch.rand(shape, generator=gen)
    return request.param, model, x


def _labels(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def _samples(x: torch.Tensor, eps: float, norm: str, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` points per example of ``{||d||_p <= eps} ∩ [0, 1]``: half on the boundary, half inside."""
    d = torch.randn((n,) + tuple(x.shape), generator=gen)
    if norm == "linf":
        boundary = d.sign() * eps
        inside = (torch.rand(d.shape, generator=gen) * 2 - 1) * eps
    else:
        unit = d / d.flatten(2).norm(dim=-1).view(n, x.shape[0], *([1] * (x.dim() - 1)))
        boundary = unit * eps
        inside = unit * eps * torch.rand((n, x.shape[0]) + (1,) * (x.dim() - 1), generator=gen)
    delta = torch.cat([boundary[: n // 2], inside[n // 2 :]])
    return (x + delta).clamp(0, 1)  # clipping only moves points towards x: they stay in the ball


def _margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = model(x)
    C = margin_spec(y, out.shape[1], out.dtype)
    return torch.einsum("bsk,bk->bs", C, out)


def _pgd_min_margin(model, x, y, eps, norm, steps=30, restarts=2, seed=0):
    """The smallest margins PGD finds inside the set (per example and class), for soundness checks."""
    gen = torch.Generator().manual_seed(seed)
    best = None
    for _ in range(restarts):
        delta = _samples(x, eps, norm, 2, gen)[1] - x
        for _ in range(steps):
            delta.requires_grad_(True)
            m = _margins(model, (x + delta).clamp(0, 1), y)
            (g,) = torch.autograd.grad(m.min(dim=1).values.sum(), delta)
            with torch.no_grad():
                step = eps / 4
                if norm == "linf":
                    delta = (delta - step * g.sign()).clamp(-eps, eps)
                else:
                    gn = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
                    delta = delta - step * g / gn
                    dn = delta.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))
                    delta = delta * (eps / dn).clamp(max=1.0)
                delta = (x + delta).clamp(0, 1) - x
        with torch.no_grad():
            m = _margins(model, x + delta, y)
        best = m if best is None else torch.minimum(best, m)
    return best


# ---------------------------------------------------------------------------- tracing
def test_graph_reproduces_the_model(net):
    name, model, x = net
    g = BoundGraph(model, x)
    assert g.unsupported == []
    torch.testing.assert_close(g.forward(x), model(x), rtol=0, atol=0)
    with pytest.raises(Exception, match="traced for inputs"):
        g.margin_lower(torch.rand(3, *x.shape[1:]), torch.zeros(3, dtype=torch.long), 0.1)


@pytest.mark.parametrize("method", METHODS)
def test_a_point_set_gives_the_output_exactly(net, method):
    """eps = 0: IBP, CROWN-IBP and CROWN all collapse to f(x) -- checks every bias and coefficient."""
    name, model, x = net
    if method == "crown" and name in ("darts", "bignas-small"):
        pytest.skip("full CROWN is quadratic in the neurons; covered on the smaller nets")
    g = BoundGraph(model, x)
    out = model(x).detach()
    for norm in ("linf", "l2"):
        b = g.output_bounds(x, 0.0, norm, method)
        scale = out.abs().max()
        torch.testing.assert_close(b.lower, out, rtol=0, atol=2e-5 * scale)
        torch.testing.assert_close(b.upper, out, rtol=0, atol=2e-5 * scale)


# ---------------------------------------------------------------------------- soundness
@pytest.mark.parametrize("norm, eps", [("linf", 1e-5), ("l2", 1e-4), pytest.param("linf", 0.01, marks=pytest.mark.slow),
                                       pytest.param("l2", 0.1, marks=pytest.mark.slow)])
def test_bounds_contain_sampled_and_attacked_outputs(net, norm, eps):
    """No sample or PGD point leaves the bounds. At the small Linf eps CROWN-IBP is nearly exact (few
    unstable ReLUs), so the check is sharp there: PGD gets within a small factor of the bound."""
    name, model, x = net
    gen = torch.Generator().manual_seed(1)
    y = _labels(model, x)
    g = BoundGraph(model, x)
    points = _samples(x, eps, norm, 32, gen)
    with torch.no_grad():
        outs = torch.stack([model(p) for p in points])
        margins = torch.stack([_margins(model, p, y) for p in points]).amin(0)
        clean = _margins(model, x, y)
    margins = torch.minimum(margins, _pgd_min_margin(model, x, y, eps, norm, steps=20, restarts=1))
    methods = METHODS if name in ("cellnet", "nb201") else METHODS[:2]
    for method in methods:
        with torch.no_grad():
            b = g.output_bounds(x, eps, norm, method)
            lb = g.margin_lower(x, y, eps, norm, method)
        tol = 1e-6 * (1 + outs.abs().max())
        assert (b.lower <= outs.amin(0) + tol).all(), (method, (b.lower - outs.amin(0)).max())
        assert (b.upper >= outs.amax(0) - tol).all(), (method, (outs.amax(0) - b.upper).max())
        assert (lb <= margins + tol).all(), (method, (lb - margins).max())
        if method == "crown-ibp" and norm == "linf" and eps < 1e-3:  # (L2: box-shaped intermediate bounds)
            assert float((clean - lb).mean()) < 20 * float((clean - margins).mean())


def test_max_pool_relaxation_both_cases():
    """Windows where one input dominates and windows of near-ties: both relaxations are sound and, for
    disjoint windows feeding a linear layer, exact (the worst case of each window is a box corner)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 3)).eval()
    dominant = torch.tensor([[0.9, 0.1, 0.2, 0.8], [0.2, 0.3, 0.1, 0.3],
                             [0.1, 0.2, 0.3, 0.1], [0.7, 0.3, 0.2, 0.9]]).view(1, 1, 4, 4)
    ties = torch.tensor([[0.5, 0.52, 0.3, 0.31], [0.51, 0.49, 0.3, 0.29],
                         [0.6, 0.6, 0.1, 0.12], [0.6, 0.59, 0.11, 0.1]]).view(1, 1, 4, 4)
    x = torch.cat([dominant, ties])
    y = _labels(model, x)
    g = BoundGraph(model, x)
    gen = torch.Generator().manual_seed(0)
    eps = 0.02
    pts = x + (torch.rand((4096,) + tuple(x.shape), generator=gen) * 2 - 1) * eps
    corners = x + eps * torch.randint(0, 2, (4096,) + tuple(x.shape), generator=gen).mul(2).sub(1)
    with torch.no_grad():
        sampled = torch.stack([_margins(model, p, y) for p in torch.cat([pts, corners])]).amin(0)
    # disjoint windows: each pooled value ranges independently over [max_j l_j, max_j u_j]
    lo, hi = F.max_pool2d(x - eps, 2).flatten(1), F.max_pool2d(x + eps, 2).flatten(1)
    C = margin_spec(y, 3)
    a = C @ model[2].weight.detach()
    exact = C @ model[2].bias.detach() + torch.minimum(a * lo[:, None], a * hi[:, None]).sum(-1)
    assert (exact <= sampled + 1e-6).all()
    for method in METHODS:  # the relaxation (y >= x_j*, y <= x_j* if dominant else max u) attains it
        lb = g.margin_lower(x, y, eps, "linf", method, domain=None)
        torch.testing.assert_close(lb, exact, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------- exactness and tightness
def test_one_hidden_layer_net_against_a_brute_force_grid():
    """2-d input, 12 ReLUs, 3 classes: bound <= grid minimum of each margin; equal while no neuron is unstable."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(2, 12), nn.ReLU(), nn.Linear(12, 3)).double().eval()
    x = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    y = _labels(model, x)
    g = BoundGraph(model, x)
    t = torch.linspace(-1, 1, 401, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).view(-1, 2)
    with torch.no_grad():  # below this eps no hidden neuron changes sign over the box
        stable_eps = float(model[0](x).abs().min() / model[0].weight.abs().sum(1).max()) * 0.9
    for eps in (stable_eps, 0.1, 0.5):
        pts_inf = x + eps * grid
        pts_l2 = pts_inf[(eps * grid).norm(dim=1) <= eps + 1e-12]
        with torch.no_grad():
            true_inf = _margins(model, pts_inf, y.expand(len(pts_inf))).amin(0)
            true_l2 = _margins(model, pts_l2, y.expand(len(pts_l2))).amin(0)
        for method in METHODS:
            lb_inf = g.margin_lower(x, y, eps, "linf", method, domain=None)[0]
            lb_l2 = g.margin_lower(x, y, eps, "l2", method, domain=None)[0]
            assert (lb_inf <= true_inf + 1e-9).all() and (lb_l2 <= true_l2 + 1e-9).all()
            if eps == stable_eps and method != "ibp":  # affine on the box: CROWN is the minimum (at a corner)
                torch.testing.assert_close(lb_inf, true_inf, rtol=0, atol=1e-9)
                # over the disc the minimum is f(x) - eps ||grad||_2 (the grid only approximates it)
                J = torch.autograd.functional.jacobian(lambda z: _margins(model, z, y)[0], x)[:, 0]
                exact = _margins(model, x, y)[0] - eps * J.norm(dim=1)
                torch.testing.assert_close(lb_l2, exact.detach(), rtol=0, atol=1e-9)
                assert (true_l2 - exact).max() < 1e-4
        if eps == 0.5:
            gap = {m: float((true_inf - g.margin_lower(x, y, eps, "linf", m, domain=None)[0]).mean().detach()) for m in METHODS}
            assert gap["crown"] <= gap["crown-ibp"] + 1e-12 <= gap["ibp"] + 1e-12
            assert gap["crown-ibp"] < gap["ibp"]


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_ibp_is_exact_on_linear_networks_under_linf(kind):
    torch.manual_seed(4)
    if kind == "mlp":
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.Linear(7, 7), nn.Linear(7, 4)).eval()
    else:
        model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.AvgPool2d(2), nn.Conv2d(5, 2, 1), nn.Flatten(),
                              nn.Linear(2, 4)).eval()
    x = torch.rand(3, 3, 2, 2)
    y = _labels(model, x)
    eps = 0.05
    J = torch.autograd.functional.jacobian(lambda z: model(z).sum(0), x).flatten(2)  # (K, B, d)
    C = margin_spec(y, 4)
    CW = torch.einsum("bsk,kbd->bsd", C, J)
    exact = torch.einsum("bsk,bk->bs", C, model(x)) - eps * CW.abs().sum(-1)
    for method in ("ibp", "crown-zono"):  # the zonotope of an affine map is exact too
        lb = margin_bounds(model, x, y, eps, "linf", method, domain=None)
        torch.testing.assert_close(lb, exact.detach(), rtol=0, atol=1e-5)
    # one affine layer: the forward interval itself is exact
    layer = nn.Linear(12, 4)
    xf = x.flatten(1)
    b = BoundGraph(layer, xf).output_bounds(xf, eps, "linf", "ibp", domain=None)
    torch.testing.assert_close(b.lower, (layer(xf) - eps * layer.weight.abs().sum(1)).detach(), rtol=0, atol=1e-6)


def test_l2_input_set_concretisation():
    """Without clipping the L2 bound is Hölder's ``<A, x> - eps ||A||_2``; clipping only tightens it."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 4, generator=gen)
    A = torch.randn(5, 3, 4, generator=gen)
    eps = torch.tensor([0.1, 0.5, 2.0])
    free = InputSet(x, eps, "l2", None).lower_bound(A)
    torch.testing.assert_close(free, torch.einsum("sbd,bd->sb", A, x) - eps * A.norm(dim=-1))
    clipped = InputSet(x, eps, "l2").lower_bound(A)
    assert (clipped >= free - 1e-6).all()
    # the minimiser of the unclipped problem attains the bound
    xs = x - eps[:, None] * A / A.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(torch.einsum("sbd,sbd->sb", A, xs), free)


def test_crown_is_tighter_than_ibp(net):
    name, model, x = net
    y = _labels(model, x)
    g = BoundGraph(model, x)
    with torch.no_grad():
        for norm, eps in (("linf", 0.002), ("l2", 0.02)):
            ibp = g.margin_lower(x, y, eps, norm, "ibp")
            crown = g.margin_lower(x, y, eps, norm, "crown-ibp")
            assert crown.mean() > ibp.mean()
            assert (crown >= ibp - 1e-4 * ibp.abs().max()).float().mean() > 0.9


def test_crown_zono_is_nearly_as_tight_as_full_crown(net):
    """Zonotope intermediate bounds keep the correlations IBP loses at every convolution: on these nets
    the gap to the attacked margin is close to full CROWN's and far below CROWN-IBP's."""
    name, model, x = net
    y = _labels(model, x)
    g = BoundGraph(model, x)
    for norm, eps in (("linf", 0.003), ("l2", 0.03)):
        attacked = _pgd_min_margin(model, x, y, eps, norm, steps=20, restarts=1)
        with torch.no_grad():
            gap = {m: float((attacked - g.margin_lower(x, y, eps, norm, m)).mean())
                   for m in (("crown-ibp", "crown-zono", "crown") if name in ("cellnet", "nb201") else ("crown-ibp", "crown-zono"))}
        assert gap["crown-zono"] < 0.5 * gap["crown-ibp"], (name, norm, gap)
        if "crown" in gap:
            assert gap["crown-zono"] <= 1.5 * gap["crown"] + 1e-4, (name, norm, gap)


def test_zonotope_passes_in_chunks_equal_one_pass(net):
    """crown-zono bounds a few examples per pass (its generators hold d copies of every layer)."""
    name, model, x = net
    xs = torch.cat([x, x.flip(0), x[:1]])  # 5 examples
    y = _labels(model, xs)
    whole = BoundGraph(model, xs, zono_batch=8).margin_lower(xs, y, 0.004, "linf", "crown-zono")
    g = BoundGraph(model, xs, zono_batch=2)
    torch.testing.assert_close(g.margin_lower(xs, y, 0.004, "linf", "crown-zono"), whole, rtol=1e-5, atol=1e-5)
    where = torch.tensor([True, False, False, True, False])
    asked = g.certified(xs, y, 0.004, "linf", "crown-zono", where=where)
    assert not asked[~where].any()
    assert (asked[where] == (whole > 0).all(1)[where]).all()


def test_intersection_never_inverts_an_interval():
    """Two bounds that cross by rounding (lower of one above upper of the other) give their hull, so
    no radius turns negative and grows through the next layers."""
    a = Interval(torch.tensor([0.0, 1.0, 2.0000002]), torch.tensor([1.0, 3.0, 2.0000004]))
    b = Interval(torch.tensor([0.5, 0.0, 2.0000001]), torch.tensor([2.0, 2.0, 2.0000001]))
    c = a.intersect(b)
    assert (c.lower <= c.upper).all()
    torch.testing.assert_close(c.lower, torch.tensor([0.5, 1.0, 2.0000001]))
    torch.testing.assert_close(c.upper, torch.tensor([1.0, 2.0, 2.0000004]))


def test_full_crown_is_tighter_than_crown_ibp_on_a_small_net():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 16),
                          nn.ReLU(), nn.Linear(16, 5)).eval()
    x = torch.rand(4, 1, 8, 8)
    y = _labels(model, x)
    g = BoundGraph(model, x, crown_chunk=50)
    lbs = {m: g.margin_lower(x, y, 0.02, "linf", m) for m in METHODS}
    assert (lbs["crown"] >= lbs["crown-ibp"] - 1e-5).all() and lbs["crown"].mean() > lbs["crown-ibp"].mean()
    assert lbs["crown-ibp"].mean() > lbs["ibp"].mean()


def test_certified_radius_is_certified_and_tight():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 20), nn.ReLU(), nn.Linear(20, 4)).eval()
    x = torch.rand(16, 1, 4, 4)
    y = _labels(model, x)
    y[0] = (y[0] + 1) % 4  # one misclassified example: radius 0
    g = BoundGraph(model, x)
    for norm in ("linf", "l2"):
        for method in ("ibp", "crown-ibp", "crown-zono"):
            r = g.certified_radius(x, y, norm, method, rtol=0.01)
            assert r[0] == 0 and (r[1:] > 0).all()
            assert g.certified(x, y, r, norm, method)[1:].all()
            if method == "ibp":  # monotone in eps: the bisection brackets the radius
                assert not g.certified(x, y, r * 1.02, norm, method)[1:].any()
            else:  # the linear-bound search stops within rtol of a failed eps (bounds need not be monotone)
                assert g.certified(x, y, r * 1.05, norm, method)[1:].float().mean() < 0.2, (norm, method)


# ---------------------------------------------------------------------------- Jacobian bound
def test_jacobian_estimate_matches_a_per_logit_autograd_loop():
    torch.manual_seed(7)
    model = ImageClassifier(_randomise_bn(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                                                        nn.Linear(4 * 6 * 6, 6)), torch.Generator().manual_seed(0)),
                            8).eval()
    x = torch.rand(5, 1, 10, 10)
    ref = []
    for k in range(6):
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xr)[:, k].sum(), xr)
        ref.append(g.flatten(1))
    ref = torch.stack(ref, 1)  # (B, K, d)
    for norm, q in (("linf", 1), ("l2", 2)):
        torch.testing.assert_close(jacobian_norms(model, x, norm, chunk=4), ref.norm(p=q, dim=-1))
        bound = jacobian_estimate(model, x, 0.3, norm)
        torch.testing.assert_close(bound, -(0.3 / 6) * ref.norm(p=q, dim=-1).sum(1))
        model.zero_grad()
        bound.sum().backward()
        weights = [p for name, p in model.named_parameters() if name.endswith("weight")]  # biases do not move a gradient
        assert all(w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0 for w in weights)


# ---------------------------------------------------------------------------- differentiability
@pytest.mark.parametrize("method", METHODS)
def test_margin_bounds_gradcheck_wrt_weights(method):
    """float64 finite differences of the margin bounds w.r.t. a hidden layer's weights (away from kinks)."""
    torch.manual_seed(8)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3)).double().eval()
    x = torch.rand(3, 5, dtype=torch.float64)
    y = _labels(model, x)
    g = BoundGraph(model, x)

    def bound(weight: torch.Tensor) -> torch.Tensor:
        with g.using({"2.weight": weight}):
            return g.margin_lower(x, y, 0.05, "l2", method, domain=None)

    w = model[2].weight.detach().clone().requires_grad_(True)
    torch.testing.assert_close(bound(w), g.margin_lower(x, y, 0.05, "l2", method, domain=None))
    assert torch.autograd.gradcheck(bound, (w,), eps=1e-6, atol=1e-6)


def test_bounds_of_a_soft_supernet_are_differentiable_in_alpha():
    """DARTS-style mixed ops (softmax(alpha)-weighted sums, PC-DARTS partial channels) bound as they are."""
    torch.manual_seed(9)
    sp = get_space("nb201")
    supernet = sp.supernet(num_classes=10, channels=4, cells_per_stage=1, partial_channels=2)
    supernet.set_mode("soft")
    model = ImageClassifier(_randomise_bn(supernet, torch.Generator().manual_seed(0)), 8).eval()
    x = torch.rand(2, 1, 8, 8)
    y = _labels(model, x)
    g = BoundGraph(model, x)
    assert g.unsupported == []
    for method in ("ibp", "crown-ibp"):
        model.zero_grad()
        lb = g.margin_lower(x, y, 0.003, "linf", method)
        assert (lb <= _pgd_min_margin(model, x, y, 0.003, "linf", steps=10, restarts=1) + 1e-5).all()
        lb.sum().backward()
        alphas = supernet.arch_parameters()
        assert all(a.grad is not None and torch.isfinite(a.grad).all() for a in alphas)
        assert sum(float(a.grad.abs().sum()) for a in alphas) > 0


# ---------------------------------------------------------------------------- not boundable
class _Gate(nn.Module):
    def __init__(self, act: nn.Module):
        super().__init__()
        self.conv, self.act, self.fc = nn.Conv2d(3, 4, 3), act, nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


class _Square(nn.Module):
    def __init__(self, same: bool):
        super().__init__()
        self.same = same

    def forward(self, x):
        h = x.flatten(1)
        return h * h if self.same else h * h[:, :1]


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(48, 2)

    def forward(self, x):
        h = self.fc(x.flatten(1))
        return h if h.sum() > 0 else -h


class _SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 1), nn.Linear(4, 2)

    def forward(self, x):
        h = self.conv(x)
        gate = torch.sigmoid(h.mean((2, 3), keepdim=True))
        return self.fc((h * gate).mean((2, 3)))


@pytest.mark.parametrize("model, expected", [
    (_Gate(nn.SiLU()), "silu"),
    (_Gate(nn.GELU()), "gelu"),
    (_SqueezeExcite(), "sigmoid"),
    (_Square(same=False), "product of two input-dependent tensors"),
    (_Square(same=True), "product of two input-dependent tensors"),
    (_Branchy(), "data-dependent control flow"),
])
def test_unsupported_networks_say_why(model, expected):
    x = torch.rand(2, 3, 4, 4)
    reasons = unsupported_reasons(model.eval(), x)
    assert any(expected in r for r in reasons), reasons
    with pytest.raises(NotBoundableError, match="cannot bound"):
        margin_bounds(model, x, torch.zeros(2, dtype=torch.long), 0.1)


def test_batch_mixing_is_refused():
    class Mix(nn.Module):
        def forward(self, x):
            return x.flatten(1) - x.flatten(1).mean(0, keepdim=True)

    assert any("batch" in r for r in unsupported_reasons(Mix(), torch.rand(3, 2)))
