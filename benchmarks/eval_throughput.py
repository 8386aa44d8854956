"""Subnets per hour on the study's CPU protocol: the evaluation path before issue 12 vs the new one (issue 12 item 3).

Trains the bignas-small supernet for ``--epochs`` of the ``quick`` recipe on mnist5k (or takes ``--supernet``)
and scores the same ``--subnets`` subnets (seed 11; the first is the mCE reference) on all four suites with
the study's CPU options (``nasrobust.study.CPU_PROTOCOL``), side by side in one run:

* **today's path** (before issue 12): one ``nasrobust evaluate --workers 1`` process with torch's default
  thread count and every saving off (``NASROBUST_NO_EARLY_EXIT=1``, ``NASROBUST_NO_SHARED_CLEAN=1``,
  ``NASROBUST_NO_INPUT_DEDUPE=1``, ``NASROBUST_NO_HEAP_REUSE=1``; BN re-calibration once per subnet was
  already the case);
* **new path**: ``nasrobust evaluate --workers 2`` (one torch thread each), every saving on (the default);
* **each saving on its own**, in this process at one thread, interleaved subnet by subnet: a baseline with
  every saving off times each suite and the BN re-calibration per subnet (the per-suite breakdown), then one
  row per saving (and one with all of them) re-times the suites that saving can touch (``TOUCHES``); a suite
  a row does not re-time keeps the baseline's seconds in that row's total.

Wall times of the two command-line paths include process start-up and model loading; cores busy is
user+sys CPU of the process tree / wall. Every path writes its own store and the script checks that every
stored number is identical between them (same seed), then writes the Markdown report.

    OMP_NUM_THREADS=1 python benchmarks/eval_throughput.py [--subnets 2] [--supernet DIR] [--out FILE] [--force]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _report import emit, refuse_overwrite
from _timed import timed_run
from nasrobust import checkpoint
from nasrobust.data import load_dataset
from nasrobust.evaluator import Evaluator, Reference, make_suites
from nasrobust.store import open_results
from nasrobust.study import CPU_PROTOCOL as P
from nasrobust.supernet import recalibrated_subnet
from nasrobust.train.api import train_supernet
from nasrobust.train.recipe import Recipe, get_preset

SUITES = ("adversarial", "natural", "system", "certified")
#: the switch of each saving (off: "1"), read by the code at run time
SWITCHES = {"early exit": "NASROBUST_NO_EARLY_EXIT", "shared clean pass": "NASROBUST_NO_SHARED_CLEAN",
            "system batch memo": "NASROBUST_NO_INPUT_DEDUPE", "heap reuse": "NASROBUST_NO_HEAP_REUSE"}
#: the suites whose work each saving can change (the others are not re-timed in its row)
TOUCHES = {"early exit": ("adversarial", "natural", "system"), "shared clean pass": ("adversarial", "natural", "system"),
           "system batch memo": ("adversarial", "natural", "system"), "heap reuse": ("certified",)}
#: the switches read at call time in this process (the others are set per Evaluator below)
CALL_TIME = ("early exit", "heap reuse")


def touched(on: set[str]) -> tuple[str, ...]:
    """The suites a row with these savings on re-times: every suite for the baseline."""
    return SUITES if not on else tuple(s for s in SUITES if any(s in TOUCHES[name] for name in on))
SAMPLE_SEED = 11


def _options() -> list[str]:
    """The CPU protocol's suite options as ``--suite-option`` arguments."""
    out = []
    for suite in SUITES:
        for key, value in P.suite_options.get(suite, {}).items():
            text = ",".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)
            out += ["--suite-option", f"{suite}.{key}={text}"]  # "natural.fp_kinds=" is the empty tuple, not the default
    return out


def _savings_env(on: set[str]) -> dict[str, str]:
    return {var: "0" if name in on else "1" for name, var in SWITCHES.items()}


def cli_run(ckpt: Path, encodings: list[str], db: Path, cache: Path, *, workers: int, savings_on: bool,
            limit_s: float) -> dict:
    """One ``nasrobust evaluate`` command; wall and CPU seconds, and whether it finished."""
    cmd = [sys.executable, "-m", "nasrobust", "evaluate", "--supernet", str(ckpt),
           *(x for e in encodings for x in ("--arch", e)), "--reference", encodings[0], "--suites", ",".join(SUITES),
           *_options(), "--n-examples", str(P.n_examples), "--recalib-images", str(P.recalib_images),
           "--cache-dir", str(cache), "--no-progress", "--db", str(db), "--workers", str(workers)]
    env = {**os.environ, **_savings_env(set(SWITCHES) if savings_on else set())}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(var, None)  # workers=1: torch's default (one thread per core); --workers N sets cores/N itself
    return timed_run(cmd, env, limit_s)


def rows_of(db: Path, suites: tuple[str, ...] = SUITES) -> dict:
    with open_results(db, create=False) as store:
        return {(r.key.encoding, r.key.suite, r.key.noise, r.key.level, r.key.metric): (r.value, r.protocol.hash)
                for r in store.query() if r.key.suite in suites}


def in_process(model, wid: str, archs: list, data, tmp: Path) -> tuple[dict, dict, dict]:
    """The one-thread rows: baseline per suite, then each saving (and all) on the suites it touches.

    Returns per row and subnet the seconds per suite (``recal`` = BN re-calibration), and each row's store."""
    rows = {"every saving off": set(), **{f"{name} only": {name} for name in SWITCHES}, "all savings": set(SWITCHES)}
    evs, dbs = {}, {}
    for i, (row, on) in enumerate(rows.items()):
        dbs[row] = tmp / f"c{i}.db"
        names = touched(on)
        suites = make_suites(names, {k: dict(v) for k, v in P.suite_options.items()})
        evs[row] = Evaluator(open_results(dbs[row], create=True), data, suites, n_examples=P.n_examples,
                             recalib_images=P.recalib_images, progress=False, cache_dir=tmp / "cache",
                             device=torch.device("cpu"), reference=Reference(archs[0].encoding, wid))
        evs[row].ctx.share_clean = "shared clean pass" in on
        evs[row].ctx.dedupe_inputs = "system batch memo" in on
        for s in suites:  # model-independent data, made once and cached: not part of the per-subnet cost
            s.prepare(evs[row].ctx)
            evs[row]._prepared.add(s.name)
    seconds: dict[str, list[dict[str, float]]] = {row: [] for row in rows}
    for k, arch in enumerate(archs):
        for row, on in (list(rows.items()) if k % 2 == 0 else list(rows.items())[::-1]):  # position bias cancels
            for name in CALL_TIME:
                os.environ[SWITCHES[name]] = "0" if name in on else "1"
            ev = evs[row]
            t0 = time.perf_counter()
            subnet = recalibrated_subnet(model, arch, data, P.recalib_images, seed=ev.ctx.seed)
            per = {"recal": time.perf_counter() - t0}
            for suite in ev.suites:
                t0 = time.perf_counter()
                ev.evaluate(subnet, arch, wid, [suite])
                per[suite.name] = time.perf_counter() - t0
            seconds[row].append(per)
            print(f"{row}: {arch.encoding[:40]} {per}", flush=True)
    for name in CALL_TIME:
        os.environ.pop(SWITCHES[name])
    for ev in evs.values():
        ev.store.close()
    return rows, seconds, dbs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subnets", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--supernet", help="a trained mnist5k bignas supernet to use instead of training one")
    ap.add_argument("--limit-s", type=float, default=600.0, help="a command-line run still going after this is killed")
    ap.add_argument("--out", default=str(Path(__file__).with_name("eval_throughput.md")))
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    refuse_overwrite(args.out, force=args.force)
    torch.set_num_threads(1)
    data = load_dataset("mnist5k")
    loads = {"start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ckpt = Path(args.supernet) if args.supernet else train_supernet(
            "bignas", data, Recipe.from_dict({**get_preset("quick").to_dict(), "epochs": args.epochs}), tmp / "supernet",
            device=torch.device("cpu"), progress=False).checkpoint
        model, payload = checkpoint.load_supernet(ckpt)
        wid = payload["weights_id"]
        archs = model.supernet.space.sample(args.subnets, seed=SAMPLE_SEED)
        encodings = [a.encoding for a in archs]
        rows, seconds, dbs = in_process(model, wid, archs, data, tmp)  # also fills the cache for the CLI runs
        loads["in-process rows done"] = os.getloadavg()
        cli = {}
        cli["today"] = cli_run(ckpt, encodings, tmp / "today.db", tmp / "cache", workers=1, savings_on=False, limit_s=args.limit_s)
        loads["today's path done"] = os.getloadavg()
        cli["new"] = cli_run(ckpt, encodings, tmp / "new.db", tmp / "cache", workers=2, savings_on=True, limit_s=args.limit_s)
        loads["new path done"] = os.getloadavg()
        checks = check_identical(tmp, cli, dbs, rows)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines = report(args, encodings, cli, rows, seconds, checks, loads, uptime)
    emit(lines, args.out)
    if any(ok is False for ok, _ in checks.values()):
        sys.exit("stored numbers differ between paths")


def check_identical(tmp: Path, cli: dict, dbs: dict, rows: dict) -> dict[str, tuple[bool | None, str]]:
    """Every path's stored (value, protocol hash) per key equals today's path's, on the suites it ran; None where a
    killed path left nothing to compare (not checked, which is not a difference)."""
    out: dict[str, tuple[bool | None, str]] = {}
    if not cli["today"]["finished"]:
        return {"today's path": (None, "today's path was killed before it finished: nothing to compare with")}
    today = rows_of(tmp / "today.db")
    if cli["new"]["finished"]:
        new = rows_of(tmp / "new.db")
        out["new path vs today's"] = (new == today and len(today) > 0, f"{len(new)} vs {len(today)} records")
    else:
        out["new path vs today's"] = (None, "the new path was killed before it finished")
    for row, on in rows.items():
        suites = touched(on)
        mine, ref = rows_of(dbs[row], suites), rows_of(tmp / "today.db", suites)
        out[f"{row} (1 thread) vs today's"] = (mine == ref and len(ref) > 0, f"{len(mine)} vs {len(ref)} records")
    return out


def _fmt_cli(r: dict, n: int) -> tuple[str, str, str]:
    if r["finished"]:
        return f"{r['wall']:.1f}", f"{r['wall'] / n:.1f}", f"{3600 * n / r['wall']:.0f}"
    return f"> {r['wall']:.0f} (killed)", f"> {r['wall'] / n:.0f}", f"< {3600 * n / r['wall']:.0f}"


def report(args, encodings, cli, rows, seconds, checks, loads, uptime) -> list[str]:
    n = len(encodings)
    base = seconds["every saving off"]

    def total(row: str) -> float:  # one-thread seconds for all subnets; a suite not re-run counts the baseline's
        return sum(sum(s.values()) + sum(base[i][k] for k in SUITES if k not in s) for i, s in enumerate(seconds[row]))

    today, new = cli["today"], cli["new"]
    ratio = today["wall"] / new["wall"]
    ratio_text = f"{ratio:.2f}x" + ("" if today["finished"] and new["finished"] else
                                    " (at least: today's path was killed)" if new["finished"] else " (new path killed)")
    lines = [
        "# Evaluation throughput on the study's CPU protocol: before issue 12 vs now",
        "",
        f"{n} bignas-small subnets (sample seed {SAMPLE_SEED}; the first is the mCE reference) of a mnist5k supernet "
        + (f"(`{args.supernet}`)" if args.supernet else f"trained {args.epochs} epoch(s) (quick recipe)")
        + f", all four suites on the study's CPU protocol ({P.description}). "
        f"Machine: {os.cpu_count()} cores, shared with other jobs; load average (1/5/15 min) "
        + "; ".join(f"{k}: {a:.1f} / {b:.1f} / {c:.1f}" for k, (a, b, c) in loads.items())
        + f". `uptime` at the end: {uptime}. Read the ratios, measured side by side in one run, not the seconds.",
        "",
        "## Today's path vs the new path (`nasrobust evaluate`, wall time incl. start-up)",
        "",
        "| path | processes x threads | savings | wall s | s / subnet | subnets / hour | cores busy |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for name, r, shape, sv in (("today's path (before issue 12)", today, "1 x default (one per core)", "none"),
                               ("new path", new, "`--workers 2` x 1", "all")):
        wall, per, rate = _fmt_cli(r, n)
        lines.append(f"| {name} | {shape} | {sv} | {wall} | {per} | {rate} | {r['cpu'] / r['wall']:.2f} |")
    one_thread = total("all savings") / n
    lines += ["", f"- **throughput ratio new / today: {ratio_text}** (issue target >= 2.5x)",
              f"- projection, not measured: with many subnets (the study scores 100) both workers stay busy to the end; "
              f"at the one-thread rate with every saving (below: {one_thread:.1f} s / subnet) two workers would score "
              f"{2 * 3600 / one_thread:.0f} subnets / hour if they did not slow each other. With {n} subnets the "
              "new path's wall time ends with one worker alone on the last certified unit (cores busy < 2)."]
    verdict = {True: "yes", False: "NO", None: "not checked"}
    lines += [f"- stored numbers identical, {k}: **{verdict[ok]}** ({why})" for k, (ok, why) in checks.items()]
    lines += [
        "",
        "Today's path is `nasrobust evaluate --workers 1` (no worker pool: the one-process path of before issue 12) "
        "with torch's default thread count and the switches `NASROBUST_NO_EARLY_EXIT=1 NASROBUST_NO_SHARED_CLEAN=1 "
        "NASROBUST_NO_INPUT_DEDUPE=1 NASROBUST_NO_HEAP_REUSE=1`; BN re-calibration was already once per subnet. The new path is the default "
        "command with `--workers 2`. Identical means: the same keys, and per key the same value and protocol hash "
        "(the switches are not suite options, so they are in no protocol).",
        "",
        "## Each saving on its own (one process, one thread, interleaved subnet by subnet, order reversed every other subnet)",
        "",
        "Seconds for all subnets. A row re-times the BN re-calibration and the suites its savings can touch (heap "
        "reuse: certified; the others: adversarial, natural, system); a suite in parentheses is the baseline's seconds.",
        "",
        "| row | adversarial s | natural s | system s | certified s | BN recal s | total s | subnets / hour | vs baseline |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    t0 = total("every saving off")
    for row in rows:
        col = {k: sum(s.get(k, 0.0) for s in seconds[row]) for k in (*SUITES, "recal")}
        shown = {k: f"{col[k]:.2f}" if k in touched(rows[row]) else f"({sum(b[k] for b in base):.2f})" for k in SUITES}
        t = total(row)
        lines.append(f"| {row} | {shown['adversarial']} | {shown['natural']} | {shown['system']} | {shown['certified']} | "
                     f"{col['recal']:.2f} | {t:.1f} | {3600 * n / t:.0f} | {t0 / t:.3f}x |")
    lines += [
        "",
        "## Where a subnet's time goes (baseline: today's code at one thread)",
        "",
        "| subnet | " + " | ".join(SUITES) + " | BN recal | total s |",
        "|---|" + "---:|" * (len(SUITES) + 2),
    ]
    for enc, s in zip(encodings, base):
        tot = sum(s.values())
        lines.append(f"| `{enc}` | " + " | ".join(f"{s[k]:.1f} ({100 * s[k] / tot:.0f}%)" for k in SUITES)
                     + f" | {s['recal']:.2f} | {tot:.1f} |")
    all_s = {k: sum(s[k] for s in base) for k in (*SUITES, "recal")}
    grand = sum(all_s.values())
    top = max(SUITES, key=all_s.get)
    lines += [
        "",
        f"- **{top} dominates: {100 * all_s[top] / grand:.0f}% of the one-thread time** "
        f"({all_s[top] / n:.1f} s of {grand / n:.1f} s per subnet on average).",
        "",
        f"Produced by `OMP_NUM_THREADS=1 python benchmarks/eval_throughput.py {' '.join(sys.argv[1:])}`.",
    ]
    return lines


if __name__ == "__main__":
    main()
