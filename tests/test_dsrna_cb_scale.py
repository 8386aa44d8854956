"""DSRNA-CB's certified-margin regulariser is scale-free: its value and gradient ignore the bound's magnitude."""

import torch
import torch.nn as nn

from nasrobust.searchers.dsrna import CertifiedMarginRegularizer


def _model(scale: float) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        m[3].weight.mul_(scale)
        m[3].bias.mul_(scale)
    return m.eval()


def test_normalised_bound_is_scale_invariant() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 1, 4, 4, generator=g)
    y = torch.randint(0, 3, (6,), generator=g)
    vals, raws = [], []
    for scale in (1.0, 1e6):
        vals.append(float(CertifiedMarginRegularizer(0.1)(_model(scale), x, y).detach()))
        raws.append(float(CertifiedMarginRegularizer(0.1, normalize=False)(_model(scale), x, y).detach()))
    assert abs(raws[1]) > 1e4 * abs(raws[0])  # the raw bound scales with the logits
    assert abs(vals[0] - vals[1]) < 1e-4 * max(1.0, abs(vals[0]))  # the normalised one does not
    assert -1.0 - 1e-6 <= vals[0] <= 1.0 + 1e-6


def test_normalised_gradient_has_raw_direction() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(5, 1, 4, 4, generator=g)
    y = torch.randint(0, 3, (5,), generator=g)
    grads = []
    for normalize in (False, True):
        m = _model(1.0)
        CertifiedMarginRegularizer(0.1, normalize=normalize)(m, x, y).backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    cos = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert float(cos) > 0.999


def _deep(seed: int = 3) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    width = 16
    for _ in range(5):
        layers += [nn.Linear(width, 12), nn.ReLU()]
        width = 12
    m = nn.Sequential(*layers, nn.Linear(width, 3))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.6)
    return m.eval()


def test_tight_bound_on_the_first_examples_is_differentiable_and_tighter() -> None:
    """crown-zono (``bound_method``) on ``cb_examples`` images: the first images' bound, a gradient, and far less
    loose than CROWN-IBP on a deep network (where IBP's intermediate boxes blow up, as on the nb201 supernet)."""
    g = torch.Generator().manual_seed(4)
    x = torch.rand(6, 1, 4, 4, generator=g)
    y = torch.randint(0, 3, (6,), generator=g)
    m = _deep()
    first = CertifiedMarginRegularizer(0.05, method="crown-zono", normalize=False, examples=2)(m, x, y)
    alone = CertifiedMarginRegularizer(0.05, method="crown-zono", normalize=False)(m, x[:2], y[:2])
    assert torch.equal(first.detach(), alone.detach())
    first.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    assert any(float(p.grad.abs().sum()) > 0 for p in m.parameters())
    zono = float(CertifiedMarginRegularizer(0.05, method="crown-zono", normalize=False)(m, x, y).detach())
    ibp = float(CertifiedMarginRegularizer(0.05, method="crown-ibp", normalize=False)(m, x, y).detach())
    with torch.no_grad():
        out = m(x)
        true = (out.gather(1, y[:, None]) - out).masked_fill(torch.nn.functional.one_hot(y, 3).bool(), float("inf"))
    assert zono <= float(true.min(dim=1).values.mean()) + 1e-5  # a lower bound of the margin at the centre
    assert zono > ibp + 1.0, (zono, ibp)


def test_cb_examples_must_be_positive() -> None:
    import pytest

    from nasrobust.diffsearch import DiffOptions

    with pytest.raises(ValueError, match="cb_examples must be a positive integer"):
        DiffOptions(cb_examples=0)
