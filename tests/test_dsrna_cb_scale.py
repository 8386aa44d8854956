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
