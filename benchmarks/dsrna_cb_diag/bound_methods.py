"""Diagnosis (robust_search_nb201.md, 2026-12-06): after 16 weights-only epochs, the worst-margin lower bound of the
nb201 soft supernet by ibp, crown-zono and crown at eps 1e-4, 1e-3, 3e-3 (64 images; crown-zono took 263 s)."""
import sys, time, torch
from nasrobust.search import create_searcher
from nasrobust.diffsearch import BilevelRun
from nasrobust.bounds import BoundGraph
torch.set_num_threads(1)
s = create_searcher("dsrna-cb", "nb201", None, budget=20, seed=0, channels=8, cells_per_stage=1, n_train=1000,
                    batch_size=64, warmup_epochs=16, a_lr=3e-3, n_score=250, recalib_images=250, cb_eps=0.01)
run = BilevelRun(s, None, None)
for ep in range(16):  # the weights-only warm-up epochs
    run.train_epoch()
x, y = run._score_data(); x, y = x[:64], y[:64]
run.model.eval()
print("alphas softmax:", [a.detach().softmax(-1).numpy().round(2).tolist() for a in run.alphas][:1])
g = BoundGraph(run.model, x)
for method in ("ibp", "crown-zono", "crown"):
    for eps in (1e-4, 1e-3, 3e-3):
        t0 = time.time()
        with torch.no_grad():
            m = g.margin_lower(x, y, eps, "linf", method).min(1).values
        print(method, eps, f"pos {float((m>0).float().mean()):.2f} med {float(m.median()):.3g} {time.time()-t0:.1f}s", flush=True)
