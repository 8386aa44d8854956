"""Benchmark: the batched torch corruptions vs the per-image numpy reference, 15 x 5.

Both run on the same real photographs (scikit-learn's two sample images, 427 x 640, cut
into 224 px crops; for the CIFAR set, the crops box-resized to 32 px). "Reference" is
``nasrobust.noise._corruption_reference``: the published ``make_imagenet_c.py`` /
``make_cifar_c.py`` ported to current libraries, one image at a time, algorithms unchanged
(glass blur's Python pixel loop included; ImageMagick's motion blur as a numpy port).
"Ours" is ``nasrobust.noise.corrupt`` on the whole batch, CPU, with 2 torch threads (and 1).

For every (corruption, severity) ours and the reference are timed back to back (wall
clock, ``time.perf_counter``; process CPU time beside it), after one untimed warm-up call
each (frost textures, cached operators). The design target is ours >= 10x the reference's
throughput over the whole 15 x 5 suite.

    python benchmarks/corruptions_bench.py                # writes benchmarks/corruptions.md
    python benchmarks/corruptions_bench.py --n 4 --n-cifar 16 --out /tmp/c.md   # quick look
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _report import emit
from nasrobust.noise._corruption_reference import reference_corrupt
from nasrobust.noise.corruptions import CORRUPTION_NAMES, SEVERITIES, corrupt
from nasrobust.noise.frost import frost_textures


WHERE_FROM = """* Where the speed-up comes from: glass blur, most of the reference's time, is solved in parallel
  (pointer jumping over the pixel loop's copy chains); zoom, motion, elastic and brightness are
  batched tensor ops; the pointwise noises, JPEG (the same PIL encoder per image), pixelate and
  frost cost about what the per-image code costs.""".splitlines()


def speedup(results: dict[str, dict[str, list[float]]], key: str) -> float:
    """Reference wall time over ours for the whole 15 x 5 suite."""
    return sum(sum(r["ref_wall"]) for r in results.values()) / sum(sum(r[key]) for r in results.values())


def reading(big: dict, small: dict, threads: list[int]) -> list[str]:
    """The target check, computed from this run's numbers."""
    lines = ["## Reading", ""]
    for t in threads:
        ratios = [speedup(big, f"ours{t}_wall"), speedup(small, f"ours{t}_wall")]
        met = "met" if min(ratios) >= 10 else "NOT met"
        lines.append(f"* {t} torch thread(s): {ratios[0]:.1f}x (ImageNet-C set), {ratios[1]:.1f}x (CIFAR-10-C set); "
                     f"target >= 10x at both sizes: {met}.")
    return lines + WHERE_FROM


def photo_crops(n: int, size: int) -> np.ndarray:
    """``n`` real-photo crops (uint8, (n, 224, 224, 3)), box-resized to ``size`` if smaller."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        p = photos[i % len(photos)]
        top, left = rng.integers(0, p.shape[0] - 224), rng.integers(0, p.shape[1] - 224)
        crop = p[top : top + 224, left : left + 224]
        if size != 224:
            crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.BOX))
        out.append(crop)
    return np.stack(out)


def _timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def run(images: np.ndarray, params: str, threads: list[int], seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """Per corruption: lists over severities of wall / CPU seconds for the whole batch, for the
    reference and for ours at each thread count, all timed back to back."""
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    results: dict[str, dict[str, list[float]]] = {}
    for name in CORRUPTION_NAMES:
        rec: dict[str, list[float]] = {"ref_wall": [], "ref_cpu": []}
        for severity in SEVERITIES:
            corrupt(batch[:2], name, severity, torch.Generator().manual_seed(seed), params)  # warm-up
            reference_corrupt(images[0], name, severity, np.random.RandomState(seed), params)
            for t in threads:
                torch.set_num_threads(t)
                g = torch.Generator().manual_seed(seed)
                w, c = _timed(lambda: corrupt(batch, name, severity, g, params))
                rec.setdefault(f"ours{t}_wall", []).append(w)
                rec.setdefault(f"ours{t}_cpu", []).append(c)
            rs = np.random.RandomState(seed)
            w, c = _timed(lambda: [reference_corrupt(im, name, severity, rs, params) for im in images])
            rec["ref_wall"].append(w)
            rec["ref_cpu"].append(c)
            ours = "  ".join(f"ours@{t} {rec[f'ours{t}_wall'][-1]:7.3f} s" for t in threads)
            print(f"{params:8s} {name:18s} s{severity}: ref {w:7.3f} s  {ours}", flush=True)
        results[name] = rec
    return results


def table(results: dict[str, dict[str, list[float]]], n: int, size: int, threads: list[int]) -> list[str]:
    cols = " | ".join(f"ours, {t} thr. | speed-up ({t} thr.)" for t in threads)
    lines = [f"| corruption | reference | {cols} |", "|---|---:|" + "---:|---:|" * len(threads)]
    tot: dict[str, float] = {}
    for name, rec in results.items():
        s = {k: sum(v) for k, v in rec.items()}
        for k, v in s.items():
            tot[k] = tot.get(k, 0.0) + v
        cells = " | ".join(f"{1000 * s[f'ours{t}_wall'] / n:.1f} | {s['ref_wall'] / s[f'ours{t}_wall']:.1f}x"
                           for t in threads)
        lines.append(f"| {name} | {1000 * s['ref_wall'] / n:.1f} | {cells} |")
    cells = " | ".join(f"**{1000 * tot[f'ours{t}_wall'] / n:.0f}** | **{tot['ref_wall'] / tot[f'ours{t}_wall']:.1f}x**"
                       for t in threads)
    lines.append(f"| **all 15 x 5** | **{1000 * tot['ref_wall'] / n:.0f}** | {cells} |")
    lines += ["", "Milliseconds of wall clock per image, summed over the 5 severities.", ""]
    for t in threads:
        lines.append(
            f"* ours with {t} thread(s): {n / tot[f'ours{t}_wall']:.3f} images/s through all 75 corruption-severities "
            f"({tot[f'ours{t}_wall'] / n / 5:.4f} s per image per severity) vs the reference's "
            f"{n / tot['ref_wall']:.3f} images/s ({tot['ref_wall'] / n / 5:.3f} s): "
            f"**{tot['ref_wall'] / tot[f'ours{t}_wall']:.1f}x** wall clock, "
            f"{tot['ref_cpu'] / tot[f'ours{t}_cpu']:.1f}x process CPU time."
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=16, help="224 px images (ImageNet-C set)")
    ap.add_argument("--n-cifar", type=int, default=64, help="32 px images (CIFAR-10-C set)")
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="torch thread counts for ours")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("corruptions.md"))
    args = ap.parse_args()
    frost_textures()  # one-time texture drawing, shared by both implementations
    load0 = os.getloadavg()
    t0 = time.time()
    big = run(photo_crops(args.n, 224), "imagenet", args.threads)
    small = run(photo_crops(args.n_cifar, 32), "cifar", args.threads)
    load1 = os.getloadavg()
    threads = " ".join(str(t) for t in args.threads)
    lines = [
        "# Corruption suite: batched torch vs per-image numpy reference",
        "",
        f"Recorded {datetime.date.today().isoformat()} with `python benchmarks/corruptions_bench.py "
        f"--n {args.n} --n-cifar {args.n_cifar} --threads {threads}` ({time.time() - t0:.0f} s in total).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs (load average "
        f"{load0[0]:.1f} at start, {load1[0]:.1f} at end), torch {torch.__version__}, numpy {np.__version__}. "
        "For every (corruption, severity) ours ran at each thread count and then the reference, back to "
        "back, on the same images, so all saw the same load. On an oversubscribed machine two torch "
        "threads can be slower than one (each parallel op waits for a descheduled thread), hence both.",
        "",
        "Inputs: real photographs (scikit-learn's `china.jpg`, `flower.jpg`), random 224 px crops; for the "
        "CIFAR set the crops box-resized to 32 px. Reference: `nasrobust/noise/_corruption_reference.py`, the "
        "published `make_imagenet_c.py` / `make_cifar_c.py` per image with the original algorithms (glass "
        "blur's Python loop; ImageMagick's motion blur as a numpy port, slower than the C original; frost "
        "with our synthetic textures). Ours: `nasrobust.noise.corrupt` on the whole batch, CPU.",
        "",
        f"## ImageNet-C parameters, {args.n} images x 224 px",
        "",
        *table(big, args.n, 224, args.threads),
        "",
        f"## CIFAR-10-C parameters, {args.n_cifar} images x 32 px",
        "",
        *table(small, args.n_cifar, 32, args.threads),
        "",
        *reading(big, small, args.threads),
    ]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
