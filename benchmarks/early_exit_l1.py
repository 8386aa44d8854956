"""Per-example early exit in PGD-L1 (SLIDE): time with it off vs on, side by side, identical robust masks (issue 12).

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/early_exit_l1.py (a few seconds; tiny trained net, 1024 images)."""
import time, torch, sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "tests"))
from test_attack_early_exit import _tiny_trained_net
from nasrobust.noise.attacks.pgd import SparseL1Descent
from nasrobust.noise.attacks.base import run_cascade
import torchattacks
net, x, y = _tiny_trained_net()
g = torch.Generator().manual_seed(5); X = torch.rand((1024,1,8,8), generator=g); Y=(X[:,0,:4].mean(dim=(1,2))>X[:,0,4:].mean(dim=(1,2))).long()
cc = net(X).argmax(1)==Y
for eps in (1.0, 3.0):
  out = {}
  for early in (False, True):
    a = SparseL1Descent(net, eps, eps/4, 20, generator=torch.Generator().manual_seed(1), early_exit=early)
    t=time.perf_counter(); r = run_cascade(net,[a],X,Y,cc,"l1",eps,torch.device("cpu"),256); out[early]=(time.perf_counter()-t, r.robust)
  print(f"eps={eps} clean={cc.float().mean():.3f} robust={out[True][1].float().mean():.3f} identical={torch.equal(out[False][1],out[True][1])} off={out[False][0]:.3f}s on={out[True][0]:.3f}s ratio={out[False][0]/out[True][0]:.2f}x")
# torchattacks PGD: examples misclassified at some step but correct at the last iterate
torch.manual_seed(0)
pgd = torchattacks.PGD(net, eps=0.1, alpha=0.025, steps=20, random_start=True)
seen = torch.zeros(len(X), dtype=torch.bool)
orig = net.forward
def hook(m, i, o): 
    if o.shape[0]==len(X): seen.__ior__(o.argmax(1)!=Y)
h = net.register_forward_hook(hook)
xa = pgd(X, Y); h.remove()
last_wrong = net(xa).argmax(1)!=Y
print("torchattacks PGD-Linf eps=0.1: broken at some step", int((seen&cc).sum()), "broken at last iterate", int((last_wrong&cc).sum()), "recovered", int((seen&cc&~last_wrong).sum()))
