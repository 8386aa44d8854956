"""Compare minnorm_* radii with torchattacks FAB on a seeded toy ReLU net. Run: S=10 F=0.25 R=12 python benchmarks/adversarial_radius_fab_check.py"""
import torch, torch.nn as nn, torchattacks
from nasrobust.noise.attacks import attack_mode, lp_norms
from nasrobust.noise.attacks.minnorm import MinNormPGD
torch.manual_seed(0)
m = nn.Sequential(nn.Flatten(), nn.Linear(36, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
g = torch.Generator().manual_seed(1)
x, y = torch.rand(64, 1, 6, 6, generator=g), torch.randint(0, 4, (64,), generator=g)
with torch.no_grad(): y = m(x).argmax(1)
for norm, fn in (("linf","Linf"),("l2","L2")):
    with attack_mode(m):
        _, r = MinNormPGD(m, norm, steps=int(__import__("os").environ["S"]), step_fraction=float(__import__("os").environ["F"]), seed=0, rounds=int(__import__("os").environ["R"])).distances(x, y)
        adv = torchattacks.FAB(m, norm=fn, eps=10.0, steps=100, n_restarts=1, n_classes=4, seed=0)(x, y)
    with torch.no_grad(): ok = m(adv).argmax(1) != y
    rf = lp_norms(adv - x, norm)
    both = ok & torch.isfinite(r)
    ratio = (r[both] / rf[both])
    print(norm, "found ours", int(torch.isfinite(r).sum()), "fab", int(ok.sum()), "median ours/fab", float(ratio.median()), "frac ours<=1.1*fab", float((ratio <= 1.1).double().mean()))
