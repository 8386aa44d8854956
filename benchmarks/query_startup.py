"""``nasrobust query`` in a fresh process: wall and CPU time, this tree vs a reference revision.

Target (issue 14): under 0.3 s. A short command's time is Python start-up plus imports plus
building the argument parser; the query needs only the store, so nothing else is imported and
only its own sub-parser is built. Both trees run alternately on the same small store, each
command ``--repeats`` times, with bytecode caching (``.pyc``) as users have it and without it
(``PYTHONDONTWRITEBYTECODE=1``, where every imported module of the tree is compiled each run).
CPU time (user + sys of the child) is reported beside wall time because the machine is shared:
wall time grows with the load, CPU time much less.

    python benchmarks/query_startup.py [--reference 7ea5a63] [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENCODING = "nb201:|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def make_store(path: Path) -> None:
    from nasrobust.records import Protocol, Record, ResultKey
    from nasrobust.store import open_results

    proto = Protocol.make(eps=8 / 255, norm="Linf", steps=20, restarts=1, seed=0, n_examples=500)
    with open_results(path, create=True) as store:
        store.write_many(Record(ResultKey("nb201", ENCODING, "w", "cifar10", "adversarial", "pgd_linf", e / 255,
                                          "accuracy"), 0.5 - e / 100, proto) for e in range(1, 9))


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one run (``cwd`` outside the repository: ``-m`` would import from it)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", default="7ea5a63", help="git revision to compare with (before issue 14)")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ref = tmp / "reference"
        ref.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.reference, "nasrobust"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(ref)], input=archive, check=True)
        make_store(tmp / "s.db")
        query = [sys.executable, "-m", "nasrobust", "query", "--db", str(tmp / "s.db"), "--arch", ENCODING]
        base = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
        rows = []
        for caching in ("pyc", "no pyc"):
            env = dict(base, **({"PYTHONDONTWRITEBYTECODE": "1"} if caching == "no pyc" else {}))
            variants = {"python -c pass": ([sys.executable, "-c", "pass"], env),
                        f"reference {args.reference}": (query, dict(env, PYTHONPATH=str(ref))),
                        "this tree": (query, env)}
            for cmd, e in variants.values():  # warm-up (writes .pyc where allowed)
                run(cmd, e, tmp)
            times: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
            for _ in range(args.repeats):
                for name, (cmd, e) in variants.items():
                    times[name].append(run(cmd, e, tmp))
            for name, t in times.items():
                wall, cpu = zip(*t)
                rows.append(f"| {caching} | {name} | {statistics.median(wall) * 1000:.0f} | {min(wall) * 1000:.0f} "
                            f"| {statistics.median(cpu) * 1000:.0f} |")
    print("| bytecode | command | wall median (ms) | wall min (ms) | CPU median (ms) |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nload average after the run: {', '.join(f'{v:.2f}' for v in os.getloadavg())} "
          f"({os.cpu_count()} CPUs); {args.repeats} alternating repeats")


if __name__ == "__main__":
    main()
