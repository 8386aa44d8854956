"""The certified suite with and without heap reuse (nasrobust.allocator): CPU time, page faults, memory.

Each checkpoint's network runs the study's CPU certified protocol (CROWN-zono, Linf, its first test
images) in a fresh one-thread process, once with the saving on and once with
``NASROBUST_NO_HEAP_REUSE=1``, alternating which goes first. The recorded numbers must be identical.

    make study   # or any `nasrobust train` / study run: stand-alone checkpoints
    OMP_NUM_THREADS=1 python benchmarks/certified_alloc.py study/standalone/*/checkpoint.pt --out benchmarks/certified_alloc.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit  # noqa: E402

CHILD = r"""
import json, resource, sys, tempfile, time, torch
from pathlib import Path
from nasrobust.checkpoint import load_model
from nasrobust.data import load_dataset, stack
from nasrobust.noise.base import SUITES, EvalContext
from nasrobust.study import CPU_PROTOCOL
torch.set_num_threads(1)
model, _ = load_model(sys.argv[1])
data = load_dataset("mnist5k")
options = dict(CPU_PROTOCOL.suite_options["certified"])
suite = SUITES.create("certified", **options)
x, y = stack(data.test_subset(CPU_PROTOCOL.n_examples))
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
with tempfile.TemporaryDirectory() as tmp:
    got = {f"{m.noise}|{m.level}|{m.metric}": m.value for m in suite.run(model, EvalContext(data, x, y, Path(tmp), torch.device("cpu")))}
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": time.perf_counter() - t0, "user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime,
                  "faults": r1.ru_minflt - r0.ru_minflt, "maxrss_gb": r1.ru_maxrss / 2**20, "records": got}))
"""


def measure(checkpoint: str, reuse: bool) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("NASROBUST_NO_HEAP_REUSE", None)
    if not reuse:
        env["NASROBUST_NO_HEAP_REUSE"] = "1"
    out = subprocess.run([sys.executable, "-c", CHILD, checkpoint], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    load = os.getloadavg()
    lines = ["# Certified suite: heap reuse on vs off (`nasrobust/allocator.py`)", "",
             f"Produced by `OMP_NUM_THREADS=1 python benchmarks/certified_alloc.py {' '.join(args.checkpoints)}`. "
             "Each row: one network, the study's CPU certified protocol, in a fresh one-thread process per setting. "
             f"Load average at the start: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (2 cores). Other jobs inflate wall "
             "time, so compare CPU time (user + sys), which they inflate little.", "",
             "| checkpoint | CPU s off (user + sys) | CPU s on (user + sys) | CPU ratio off / on | page faults off / on | "
             "peak RSS GB off / on | records identical |", "|---|---:|---:|---:|---:|---:|---|"]
    ratios = []
    for i, ckpt in enumerate(args.checkpoints):
        order = (False, True) if i % 2 == 0 else (True, False)
        res = {reuse: measure(ckpt, reuse) for reuse in order}
        off, on = res[False], res[True]
        cpu_off, cpu_on = off["user"] + off["sys"], on["user"] + on["sys"]
        ratios.append(cpu_off / cpu_on)
        same = off["records"] == on["records"]
        lines.append(f"| `{ckpt}` | {cpu_off:.1f} ({off['user']:.1f} + {off['sys']:.1f}) | {cpu_on:.1f} ({on['user']:.1f} + "
                     f"{on['sys']:.1f}) | {cpu_off / cpu_on:.2f}x | {off['faults']:,} / {on['faults']:,} | "
                     f"{off['maxrss_gb']:.2f} / {on['maxrss_gb']:.2f} | {'yes' if same else '**no**'} |")
        if not same:
            raise SystemExit(f"{ckpt}: the records differ with heap reuse on and off")
    lines += ["", f"CPU-time ratio off / on: {min(ratios):.2f}x .. {max(ratios):.2f}x (geometric mean "
              f"{math.prod(ratios) ** (1 / len(ratios)):.2f}x)."]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
