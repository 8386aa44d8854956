"""Zero-cost proxies checked against their published definitions and second implementations."""

from __future__ import annotations

import copy
import importlib.util
import math
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nasrobust.metrics import ProxyMetric
from nasrobust.proxies import (
    PROXIES,
    grad_norm,
    input_grad_norm,
    jacob_cov,
    jacob_cov_score,
    jacobian_norm,
    snip,
    synflow,
)
from nasrobust.space import get_space

SPACE = get_space("nb201")
SMALL = {"channels": 4, "cells_per_stage": 1}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mnist():
    from nasrobust.data import load_dataset

    return load_dataset("mnist5k")


def _small_net(seed=0):
    torch.manual_seed(seed)
    return SPACE.build(SPACE.named()["readme-example"], num_classes=10, **SMALL)


def _batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


# ----------------------------------------------------------------------------- definitions
def test_synflow_conservation_law():
    """Tanaka et al. 2020 (Thm. 2 / Fig. 3): in a bias-free positive network each layer's summed
    synaptic saliency equals R = sum f(1); so synflow = (number of layers) * R exactly."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1, bias=False), nn.ReLU(), nn.BatchNorm2d(5),
                        nn.Conv2d(5, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 7, bias=False))
    x = torch.rand(2, 3, 6, 6)
    got = synflow(net, x, torch.zeros(2, dtype=torch.long))
    ref = copy.deepcopy(net).double()
    ref[2] = nn.Identity()
    with torch.no_grad():
        for p in ref.parameters():
            p.abs_()
        r = float(ref(torch.ones(1, 3, 6, 6, dtype=torch.float64)).sum())
    assert got == pytest.approx(3 * r, rel=1e-10)
    assert net[0].weight.min() < 0, "the caller's network is left untouched"


def _snip_by_mask(net, x, y):
    """The reference formulation (Abdelfattah et al.'s snip.py): gradient of the loss w.r.t. an all-ones mask."""
    net = copy.deepcopy(net)
    masks = []
    for layer in net.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            layer.weight_mask = nn.Parameter(torch.ones_like(layer.weight))
            layer.weight.requires_grad = False
            masks.append(layer.weight_mask)
            conv = isinstance(layer, nn.Conv2d)
            layer.forward = types.MethodType(
                (lambda s, h: F.conv2d(h, s.weight * s.weight_mask, s.bias, s.stride, s.padding, s.dilation, s.groups))
                if conv else (lambda s, h: F.linear(h, s.weight * s.weight_mask, s.bias)), layer)
    F.cross_entropy(net(x), y).backward()
    return sum(float(m.grad.abs().sum()) for m in masks)


def test_snip_equals_mask_gradient_formulation():
    net = _small_net().train()
    x, y = _batch()
    assert snip(copy.deepcopy(net), x, y) == pytest.approx(_snip_by_mask(net, x, y), rel=1e-5)


def test_grad_norm_closed_form_for_softmax_regression():
    """One Linear layer: dL/dW = (softmax(Wx+b) - onehot(y))^T x / N (mean cross-entropy)."""
    torch.manual_seed(1)
    lin = nn.Linear(12, 5)
    x, y = torch.randn(9, 12), torch.randint(0, 5, (9,))
    p = torch.softmax(lin(x), 1).detach()
    grad = (p - F.one_hot(y, 5).double().float()).T @ x / len(x)
    assert grad_norm(lin, x, y) == pytest.approx(float(grad.norm()), rel=1e-5)


def test_jacobian_norm_equals_autograd_jacobian():
    net = _small_net()
    x, y = _batch(4)
    from nasrobust.supernet import recalibrate_bn

    recalibrate_bn(net, [x])
    net.eval()
    ref = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda v: net(v.unsqueeze(0))[0], xi)
        ref.append(float(jac.reshape(10, -1).norm()))
    assert jacobian_norm(net, x, y) == pytest.approx(float(np.mean(ref)), rel=1e-5)


def test_input_grad_norm_equals_per_example_l1_gradient():
    net = _small_net().eval()
    x, y = _batch(4)
    ref = []
    for xi, yi in zip(x, y):
        g = torch.autograd.functional.jacobian(lambda v: F.cross_entropy(net(v.unsqueeze(0)), yi.unsqueeze(0)), xi)
        ref.append(float(g.abs().sum()))
    assert input_grad_norm(net, x, y) == pytest.approx(float(np.mean(ref)), rel=1e-5)
    # first-order meaning: a small Linf step along sign(grad) raises the loss by ~ eps * ||grad||_1
    eps = 1e-4
    xi, yi = x[:1], y[:1]
    xg = xi.clone().requires_grad_(True)
    loss = F.cross_entropy(net(xg), yi, reduction="sum")
    (g,) = torch.autograd.grad(loss, xg)
    with torch.no_grad():
        rise = F.cross_entropy(net(xi + eps * g.sign()), yi, reduction="sum") - loss
    assert float(rise) == pytest.approx(eps * float(g.abs().sum()), rel=5e-2)


def test_jacob_cov_matches_formula():
    net = _small_net().train()
    x, y = _batch(6)
    xr = x.clone().requires_grad_(True)
    out = net(xr)
    out.backward(torch.ones_like(out))
    j = xr.grad.reshape(6, -1).double().numpy()
    corr = np.corrcoef(j)
    v = np.linalg.eig(corr)[0].real  # the reference code's eig
    ref = -np.sum(np.log(v + 1e-5) + 1.0 / (v + 1e-5))
    assert jacob_cov(_small_net().train(), x, y) == pytest.approx(ref, rel=1e-6)
    assert math.isnan(jacob_cov_score(np.zeros((4, 10))))  # constant gradients: undefined


# ----------------------------------------------------------------------------- the metric
def test_proxy_metric_is_deterministic_and_real(mnist):
    archs = SPACE.sample(3, seed=2)
    for name, proxy in PROXIES.items():
        m = ProxyMetric(name, dataset=mnist, batch_size=16, build_kwargs=SMALL)
        vals = [m(a) for a in archs]
        again = ProxyMetric(name, dataset=mnist, batch_size=16, build_kwargs=SMALL)(archs[0])
        assert again == vals[0], f"{name} must be a deterministic function of the architecture"
        assert all(math.isfinite(v) for v in vals) and len(set(vals)) == 3, (name, vals)
        assert m.higher_is_better == proxy.higher_is_better and m.last.source == "proxy"
    rng_state = torch.random.get_rng_state()
    ProxyMetric("snip", dataset=mnist, batch_size=8, build_kwargs=SMALL, cache=False)(archs[0])
    assert torch.equal(rng_state, torch.random.get_rng_state()), "the global RNG is untouched"


def test_unknown_build_option_is_a_user_error(mnist):
    from nasrobust.metrics import MetricError

    with pytest.raises(MetricError, match="build does not take"):
        ProxyMetric("snip", dataset=mnist, batch_size=4, build_kwargs={"colour": 1})(SPACE.sample(1)[0])


def test_disconnected_cell_is_input_independent(mnist):
    """The all-'none' cell: logits ignore the input, so the Jacobian and input gradient are exactly 0
    and jacob_cov is undefined (reported as the worst value)."""
    dead = SPACE.decode("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert ProxyMetric("jacobian", dataset=mnist, batch_size=8, build_kwargs=SMALL)(dead) == 0.0
    assert ProxyMetric("input_grad", dataset=mnist, batch_size=8, build_kwargs=SMALL)(dead) == 0.0
    jc = ProxyMetric("jacob_cov", dataset=mnist, batch_size=8, build_kwargs=SMALL)
    assert jc(dead) == -math.inf and jc.last.source == "proxy-undefined"


def test_proxy_correlation_benchmark(tmp_path):
    """benchmarks/proxy_correlation.py: a stored metric equal to a proxy correlates perfectly with it."""
    from nasrobust.records import Protocol, Record, ResultKey
    from nasrobust.store import open_results

    spec = importlib.util.spec_from_file_location("proxy_correlation", REPO / "benchmarks" / "proxy_correlation.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    archs = SPACE.sample(6, seed=4)
    proxy = ProxyMetric("synflow", dataset="digits", batch_size=8, build_kwargs=SMALL)
    db = tmp_path / "r.db"
    with open_results(db, create=True) as store:
        store.write_many([Record(ResultKey.of(a, weights_id="w", dataset="mnist5k", suite="adversarial", noise="pgd_linf",
                                              level=0.1, metric="accuracy"), math.log(proxy(a)), Protocol.make(seed=0))
                          for a in archs])
    out = tmp_path / "corr.md"
    rows = bench.main(["--db", str(db), "--proxies", "synflow,snip", "--dataset", "digits", "--batch", "8",
                       "--build", "channels=4",
                       "--build", "cells_per_stage=1", "--out", str(out)])
    syn = next(r for r in rows if r["proxy"] == "synflow")
    assert syn["n"] == 6 and syn["kendall"] == pytest.approx(1.0) and syn["spearman"] == pytest.approx(1.0)
    assert "synflow" in out.read_text() and "Kendall" in out.read_text()
