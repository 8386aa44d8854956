"""One evaluate process with torch's default threads vs ``--workers 2`` with one thread each.

Runs the real ``nasrobust evaluate`` command in a subprocess on the same subnets of a bignas-small
mnist5k supernet (the study's CPU options for the adversarial and natural suites, few test images)
four times, side by side in one run: (a) ``--workers 1`` with torch's default thread count and (b)
``--workers 2`` (one thread per worker), each on a quiet machine and with two competing CPU-bound
processes (``python -c "while True: pass"``, killed afterwards). Records per-subnet wall time, the
ratio a/b, and the cores kept busy (user+sys CPU time of the evaluate process tree / wall, from
``RUSAGE_CHILDREN`` around the subprocess), and checks that the four stores hold identical rows.

    python benchmarks/eval_workers.py --supernet <mnist5k bignas supernet dir> [--n 3] [--n-examples 20]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import emit
from _timed import timed_run
from nasrobust.study import CPU_PROTOCOL as P

SUITES = ("adversarial", "natural")


def _options() -> list[str]:
    out = []
    for suite in SUITES:
        for key, value in P.suite_options[suite].items():
            text = ",".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)
            if text:  # an empty tuple (natural.fp_kinds) is the suite's default for the CPU protocol
                out += ["--suite-option", f"{suite}.{key}={text}"]
    return out


def run(args: argparse.Namespace, db: Path, cache: Path, workers: int, default_threads: bool) -> dict:
    cmd = [sys.executable, "-m", "nasrobust", "evaluate", "--supernet", args.supernet, "--n", str(args.n),
           "--sample-seed", "3", "--suites", ",".join(SUITES), *_options(), "--n-examples", str(args.n_examples),
           "--recalib-images", str(args.recalib_images), "--cache-dir", str(cache), "--no-progress",
           "--db", str(db), "--workers", str(workers)]
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if default_threads:
            env.pop(var, None)  # torch's default: one thread per core
        else:
            env[var] = "1"
    r = timed_run(cmd, env, args.limit_s)
    return {**r, "units": _units(db), "rows": _rows(db) if r["finished"] else None}


def _units(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT COUNT(*) FROM units").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def _rows(db: Path) -> list[tuple]:
    con = sqlite3.connect(db)
    rows = con.execute("SELECT encoding, weights_id, suite, noise, level, metric, value FROM results "
                       "ORDER BY 1, 2, 3, 4, 5, 6").fetchall()
    con.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--supernet", required=True)
    ap.add_argument("--n", type=int, default=3, help="sampled subnets (the largest, the reference, is added)")
    ap.add_argument("--n-examples", type=int, default=20)
    ap.add_argument("--recalib-images", type=int, default=100)
    ap.add_argument("--limit-s", type=float, default=100.0, help="a run still going after this is killed and reported so")
    ap.add_argument("--md", default=str(Path(__file__).with_name("eval_workers.md")))
    args = ap.parse_args()
    n_subnets = args.n + 1
    results: dict[tuple[str, str], dict] = {}
    loads = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        cache = tmp_path / "cache"
        # model-independent data (corrupted images) made once and cached, outside the timed runs
        subprocess.run([sys.executable, "-m", "nasrobust", "evaluate", "--supernet", args.supernet, "--n", "1",
                        "--suites", ",".join(SUITES), *_options(), "--n-examples", str(args.n_examples),
                        "--recalib-images", str(args.recalib_images), "--cache-dir", str(cache), "--no-progress",
                        "--db", str(tmp_path / "warm.db"), "--workers", "1"],
                       check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
        for load in ("no added load", "+2 busy loops"):
            burners = []
            if load != "no added load":
                burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
                time.sleep(1.0)
            try:
                loads[load] = os.getloadavg()[0]
                results[load, "a"] = run(args, tmp_path / f"{load[0]}a.db", cache, 1, True)
                results[load, "b"] = run(args, tmp_path / f"{load[0]}b.db", cache, 2, False)
            finally:
                for p in burners:
                    p.kill()
                for p in burners:
                    p.wait()
    done = [r["rows"] for r in results.values() if r["finished"]]
    reference = done[0] if done else []
    identical = bool(done) and all(rows == reference for rows in done)
    lines = [
        "# Evaluation with worker processes: one process vs `--workers 2`",
        "",
        f"`nasrobust evaluate` on {n_subnets} bignas-small subnets of an mnist5k supernet ({args.n} sampled + the "
        f"largest, the reference), suites {', '.join(SUITES)} with the study's CPU options, {args.n_examples} test "
        f"images, {args.recalib_images} BN re-calibration images. (a) `--workers 1`, torch's default thread count "
        f"(one per core, {os.cpu_count()} cores); (b) `--workers 2`, one torch thread each. Wall time includes "
        "process start-up and model loading; CPU = user+sys of the whole evaluate process tree.",
        "",
        "| machine | run | wall s | s / subnet | cores busy | a / b wall | load avg (1 min) at start |",
        "|---|---|---|---|---|---|---|",
    ]
    for load in loads:
        a, b = results[load, "a"], results[load, "b"]
        for name, r in (("a: 1 process, default threads", a), ("b: --workers 2, 1 thread each", b)):
            wall = f"{r['wall']:.1f}" if r["finished"] else f"> {r['wall']:.0f} (killed, {r['units']}/{2 * n_subnets} units)"
            rate = f"; ~{r['wall'] / (r['units'] / 2):.0f} at the rate it reached" if r["units"] else ""
            per = f"{r['wall'] / n_subnets:.1f}" if r["finished"] else f"> {r['wall'] / n_subnets:.0f}{rate}"
            ratio = f"{a['wall'] / b['wall']:.2f}x" + ("" if a["finished"] and b["finished"] else " (at least)" if b["finished"] else " (b killed: n/a)")
            lines.append(f"| {load} | {name} | {wall} | {per} | {r['cpu'] / r['wall']:.2f} | {ratio} | {loads[load]:.2f} |")
    lines += [
        "",
        f"- stored rows identical in the {len(done)} finished runs: **{'yes' if identical else 'NO'}** ({len(reference)} rows each)",
        f"- `uptime` after the run: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}",
        "",
        "The machine is shared with other engineers' jobs (see the load averages: even 'no added load' ran on an "
        "oversubscribed machine, so 'cores busy' is this run's share of the cores), so these timings are indicative: "
        "compare the ratios within one row pair, measured side by side, not the absolute seconds. A killed run's "
        "CPU time is spent without finishing its units: OpenMP threads spinning against other runnable threads.",
        "",
        f"A run still going after {args.limit_s:.0f} s is killed; its s / subnet is then a strict lower bound (wall / "
        "subnets) followed by the pace it kept on the units it finished (a unit is one subnet's suite), and a/b is at "
        "least the ratio shown.",
        "",
        f"Produced by `python benchmarks/eval_workers.py --supernet <dir> --n {args.n} --n-examples {args.n_examples} "
        f"--limit-s {args.limit_s:.0f}`.",
    ]
    emit(lines, args.md)
    if done and not identical:
        raise SystemExit("stored rows differ between runs")


if __name__ == "__main__":
    main()
