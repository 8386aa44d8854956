"""Rank correlation of zero-cost proxies with measured robustness on stored architectures.

For every architecture of the result store (optionally one ``--space``), compute each proxy at
initialisation (:class:`nasrobust.proxies.ProxyMetric`: fixed seed, one real data batch), then
for every stored quantity -- one ``(suite, noise, level, metric, weights_id, dataset)`` group --
report Kendall's tau and Spearman's rho between the proxy and the stored value over the
architectures that have both (non-finite proxy values are left out). The correlation is of the
raw values: the robustness proxies (``jacobian``, ``input_grad``) are lower-is-better, so a
*negative* correlation with robust accuracy is what would make them useful.

    python benchmarks/proxy_correlation.py --db results.db --space nb201 \\
        --out benchmarks/proxy_correlation.md [--json benchmarks/proxy_correlation.json]

Reference point for the clean proxies: Abdelfattah et al. (ICLR 2021, abstract) report a Spearman
rho of 0.82 between final validation accuracy and their best zero-cost proxy (synflow) on
NAS-Bench-201.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
log = logging.getLogger("proxy_correlation")

GROUP = ["suite", "noise", "level", "metric", "weights_id", "dataset"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from nasrobust.proxies import PROXIES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", required=True, help="result store")
    p.add_argument("--space", help="only architectures of this space (default: every registered space in the store)")
    p.add_argument("--proxies", default=",".join(PROXIES), help=f"comma-separated (default {','.join(PROXIES)})")
    p.add_argument("--dataset", default="mnist5k", help="data batch for the proxies (default mnist5k)")
    p.add_argument("--data-root")
    p.add_argument("--batch", type=int, default=64, help="images in the proxy batch (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--build", action="append", default=[], metavar="KEY=VALUE",
                   help="space.build option, e.g. channels=8 (default: the space's own network)")
    p.add_argument("--min-archs", type=int, default=5, help="skip groups with fewer architectures (default 5)")
    p.add_argument("--out", default=str(HERE / "proxy_correlation.md"))
    p.add_argument("--json", help="also write the rows as JSON")
    return p.parse_args(argv)


def proxy_values(encodings: list[str], proxies: list[str], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """``proxy -> encoding -> value`` for every architecture of a registered space."""
    from nasrobust.data import load_dataset
    from nasrobust.errors import NasRobustError
    from nasrobust.metrics import ProxyMetric
    from nasrobust.options import parse_assignments
    from nasrobust.space import decode

    build = parse_assignments(args.build, what="--build")
    data = load_dataset(args.dataset, root=args.data_root)
    archs = []
    for enc in encodings:
        try:
            archs.append(decode(enc))
        except NasRobustError as exc:
            log.warning("skipping %s: %s", enc, exc)
    out: dict[str, dict[str, float]] = {}
    for name in proxies:
        metric = ProxyMetric(name, dataset=data, batch_size=args.batch, seed=args.seed, device=args.device,
                             build_kwargs=build)
        t0 = time.perf_counter()
        out[name] = {a.encoding: metric.evaluate(a) for a in archs}
        log.info("%s: %d architectures in %.1f s", name, len(archs), time.perf_counter() - t0)
    return out


def correlations(frame: Any, values: dict[str, dict[str, float]], min_archs: int) -> list[dict[str, Any]]:
    """Kendall and Spearman of each proxy with each stored group."""
    from scipy import stats

    rows = []
    for key, group in frame.groupby(GROUP, sort=True):
        stored = dict(zip(group["encoding"], group["value"]))
        for name, proxy in values.items():
            common = [e for e in stored if e in proxy and math.isfinite(proxy[e])]
            if len(common) < min_archs:
                continue
            x = [proxy[e] for e in common]
            y = [stored[e] for e in common]
            tau, tau_p = stats.kendalltau(x, y)
            rho, rho_p = stats.spearmanr(x, y)
            rows.append({**dict(zip(GROUP, key)), "proxy": name, "n": len(common),
                         "kendall": float(tau), "kendall_p": float(tau_p), "spearman": float(rho), "spearman_p": float(rho_p)})
    return rows


#: The robustness numbers a reader looks at first: ``(suite, noise, level, metric, label)``.
HEADLINE = [
    ("adversarial", "clean", 0.0, "accuracy", "clean accuracy"),
    ("adversarial", "fgsm", 0.1, "accuracy", "FGSM accuracy, eps 0.1"),
    ("adversarial", "pgd_linf", 0.1, "accuracy", "PGD accuracy, eps 0.1"),
    ("adversarial", "worst_case", 1.0, "wcar", "WCAR (worst attack)"),
    ("natural", "mean_corruption", 0.0, "accuracy", "corruption accuracy"),
    ("natural", "mce", 0.0, "mce", "mCE (lower is better)"),
    ("system", "summary", 0.0, "mean", "system-noise mean accuracy"),
    ("system", "summary", 0.0, "worst", "system-noise worst accuracy"),
    ("certified", "ibp_linf", 0.0, "radius_mean", "IBP Linf radius"),
    ("certified", "jacobian_linf", 0.1, "jacobian_estimate", "Jacobian estimate, eps 0.1"),
]


def headline(rows: list[dict[str, Any]]) -> list[str]:
    """Spearman rho of every proxy with the headline metrics, one line per metric (* = p < 0.05, uncorrected)."""
    proxies = list(dict.fromkeys(r["proxy"] for r in rows))
    by_key = {(r["suite"], r["noise"], float(r["level"]), r["metric"], r["proxy"]): r for r in rows}
    lines = ["| measured | " + " | ".join(proxies) + " |", "|---|" + "---|" * len(proxies)]
    for suite, noise, level, metric, label in HEADLINE:
        cells = []
        for p in proxies:
            r = by_key.get((suite, noise, level, metric, p))
            cells.append("-" if r is None or not math.isfinite(r["spearman"]) else
                         f"{r['spearman']:+.2f}{'*' if r['spearman_p'] < 0.05 else ''}")
        if any(c != "-" for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, n_archs: int, seconds: float) -> str:
    lines = [
        "# Zero-cost proxies vs measured robustness",
        "",
        f"Store `{args.db}`{f', space `{args.space}`' if args.space else ''}: {n_archs} architectures; proxies at "
        f"initialisation on {args.batch} `{args.dataset}` training images (seed {args.seed}"
        f"{', build ' + ' '.join(args.build) if args.build else ''}); {seconds:.0f} s.",
        "Raw-value rank correlations (jacobian and input_grad are lower-is-better: negative is good).",
        "Command: `python benchmarks/proxy_correlation.py " + " ".join(sys.argv[1:]) + "`",
        "",
        "## Headline: Spearman rho (* p < 0.05, uncorrected)",
        "",
        *headline(rows),
        "",
        "## Every stored group",
        "",
        "| suite | noise | level | metric | weights | dataset | proxy | n | Kendall tau | Spearman rho |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['suite']} | {r['noise']} | {r['level']:g} | {r['metric']} | {r['weights_id']} | {r['dataset']} "
                     f"| {r['proxy']} | {r['n']} | {r['kendall']:+.3f} | {r['spearman']:+.3f} |")
    if not rows:
        lines.append("| (no group with enough architectures) | | | | | | | | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from nasrobust.store import open_results

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    t0 = time.perf_counter()
    with open_results(args.db, create=False) as store:
        frame = store.to_pandas(space=args.space)
        encodings = store.encodings(space=args.space)
    proxies = [p.strip() for p in args.proxies.split(",") if p.strip()]
    values = proxy_values(encodings, proxies, args)
    rows = correlations(frame, values, args.min_archs)
    Path(args.out).write_text(markdown(rows, args, len(encodings), time.perf_counter() - t0))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    log.info("wrote %s (%d rows)", args.out, len(rows))
    return rows


if __name__ == "__main__":
    main()
