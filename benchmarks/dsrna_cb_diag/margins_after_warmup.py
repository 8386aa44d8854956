"""Diagnosis (robust_search_nb201.md, 2026-12-06): supernet validation accuracy after W weights-only epochs and the
share of positive CROWN-IBP worst-margin lower bounds at each eps.  Usage: N_TRAIN W TOTAL_EPOCHS EPS,EPS,... METHOD"""
import sys, time, torch, numpy as np
from nasrobust.search import create_searcher
from nasrobust.diffsearch import BilevelRun
from nasrobust.bounds import BoundGraph
torch.set_num_threads(1)
n_train, W, total = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
EPS = [float(e) for e in sys.argv[4].split(",")]; METHOD = sys.argv[5]
s = create_searcher("dsrna-cb", "nb201", None, budget=total, seed=0, channels=8, cells_per_stage=1, n_train=n_train,
                    batch_size=64, warmup_epochs=W, a_lr=3e-3, n_score=250, recalib_images=250, cb_eps=0.01)
run = BilevelRun(s, None, None)
t0 = time.time()
for ep in range(W):  # the weights-only warm-up epochs
    run.train_epoch()
    if (ep + 1) % max(1, W // 4) == 0 or ep == W - 1:
        x, y = run._score_data()
        acc = run.accuracy(run.model, x, y)
        line = f"ep {ep+1} t {time.time()-t0:.0f}s val acc {acc:.3f}"
        run.model.eval()
        for eps in EPS:
            with torch.no_grad():
                g = BoundGraph(run.model, x[:64])
                m = g.margin_lower(x[:64], y[:64], eps, "linf", METHOD).min(1).values
            line += f" | eps {eps}: pos {float((m>0).float().mean()):.2f} R {float(m.mean()/m.abs().mean()):+.3f} med {float(m.median()):.3g}"
        run.model.train()
        print(line, flush=True)
