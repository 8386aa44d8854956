"""The min-norm radius attack: deterministic, and consistent with PGD at a fixed eps."""

import math

import torch
import torch.nn as nn

from nasrobust.noise.attacks import attack_mode, within_budget
from nasrobust.noise.attacks.minnorm import MinNormPGD


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 32), nn.ReLU(), nn.Linear(32, 4)).eval()


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(24, 1, 6, 6, generator=g), torch.randint(0, 4, (24,), generator=g)


def test_same_seed_identical_radii() -> None:
    model, (x, y) = _model(), _data()
    with attack_mode(model):
        a = MinNormPGD(model, "linf", seed=3).distances(x, y)[1]
        b = MinNormPGD(model, "linf", seed=3).distances(x, y)[1]
    assert torch.equal(a, b)


def test_radius_brackets_fixed_eps_accuracy() -> None:
    model, (x, y) = _model(), _data()
    for norm in ("linf", "l2"):
        with attack_mode(model):
            adv, r = MinNormPGD(model, norm, seed=0).distances(x, y)
        fin = torch.isfinite(r)
        assert int(fin.sum()) > 0
        # each reported radius is witnessed: the adversarial example is misclassified and within r
        with torch.no_grad():
            wrong = model(adv).argmax(1) != y
        assert bool(wrong[fin].all())
        for i in fin.nonzero().flatten().tolist():
            assert bool(within_budget(adv[i:i + 1], x[i:i + 1], norm, float(r[i]))[0])
        assert all(math.isinf(v) or v >= 0 for v in r.tolist())


def test_radius_agrees_with_torchattacks_fab() -> None:
    import torchattacks

    from nasrobust.noise.attacks import lp_norms

    model = _model()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(32, 1, 6, 6, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    for norm, fab_norm in (("linf", "Linf"), ("l2", "L2")):
        with attack_mode(model):
            _, r = MinNormPGD(model, norm, seed=0).distances(x, y)
            adv = torchattacks.FAB(model, norm=fab_norm, eps=10.0, steps=100, n_restarts=1, n_classes=4, seed=0)(x, y)
        with torch.no_grad():
            both = (model(adv).argmax(1) != y) & torch.isfinite(r)
        ratio = r[both] / lp_norms(adv - x, norm)[both]
        assert int(both.sum()) >= 24
        assert float(ratio.median()) < 1.05 and float((ratio <= 1.1).double().mean()) >= 0.9, (norm, ratio)
