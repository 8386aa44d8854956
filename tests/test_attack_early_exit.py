"""Issue 12 item 2: per-example early exit in our own attacks leaves every result unchanged."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from nasrobust.noise.attacks.base import run_cascade
from nasrobust.noise.attacks.pgd import SparseL1Descent


def _tiny_trained_net() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand((96, 1, 8, 8), generator=g)
    y = (x[:, 0, :4].mean(dim=(1, 2)) > x[:, 0, 4:].mean(dim=(1, 2))).long()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval(), x, y


def test_l1_descent_early_exit_gives_identical_robust_masks():
    net, x, y = _tiny_trained_net()
    clean_correct = net(x).argmax(dim=1) == y
    assert clean_correct.float().mean() > 0.8  # trained: the attack has real work to do
    masks, survivors = [], []
    for early in (False, True):
        attack = SparseL1Descent(net, eps=3.0, alpha=0.75, steps=10, generator=torch.Generator().manual_seed(1),
                                 early_exit=early)
        res = run_cascade(net, [attack], x, y, clean_correct, "l1", 3.0, torch.device("cpu"), 32)
        masks.append(res.robust)
        survivors.append(res.survivors)
    assert 0 < int(masks[0].sum()) < int(clean_correct.sum())  # some broken, some not: both branches exercised
    assert torch.equal(masks[0], masks[1])
    assert survivors[0] == survivors[1]
