"""Write the example analysis report of a real study into ``benchmarks/example_report/``.

Usage (after ``nasrobust evaluate --supernet RUN --n 24 --suites adversarial,natural,system,certified
--db study.db`` on mnist5k)::

    python benchmarks/example_report.py --db study.db [--space bignas] [--supernet RUN]

It runs ``nasrobust analyze`` with the default protocol (1,000 bootstrap resamples, seed 0,
Benjamini-Hochberg, Kruskal-Wallis, gradient-boosted surrogates) into
``benchmarks/example_report/`` -- rerunning it on the same store rewrites identical files. With
``--supernet`` it also writes ``cka_largest.png`` (the largest subnet's layer x layer CKA, with
its block-structure score) and ``cka_largest_vs_smallest.png``. Extra arguments after ``--``
go to ``nasrobust analyze`` unchanged (e.g. ``-- --n-boot 2000``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nasrobust.cli.main import main as nasrobust

OUT = Path(__file__).resolve().parent / "example_report"


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="result store of the study")
    parser.add_argument("--space", help="space (default: the store's only space)")
    parser.add_argument("--out", default=str(OUT), help=f"report folder (default {OUT})")
    parser.add_argument("--supernet", help="supernet checkpoint of the study: also write CKA figures")
    parser.add_argument("--cka-examples", type=int, default=1000, help="test images for CKA")
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    # --force: this script regenerates the report in place
    cmd = ["analyze", "--db", args.db, "--out", args.out, "--force", *(["--space", args.space] if args.space else []),
           *extra]
    rc = nasrobust(cmd)
    if rc or not args.supernet:
        return rc
    from nasrobust import checkpoint

    model, _ = checkpoint.load_supernet(args.supernet)
    largest, smallest = model.supernet.largest().encoding, model.supernet.smallest().encoding
    out = Path(args.out)
    common = ["--n-examples", str(args.cka_examples), "--force"]
    rc = nasrobust(["cka", "--a", f"{args.supernet}#{largest}", "--out", str(out / "cka_largest.png"), *common])
    if rc:
        return rc
    return nasrobust(["cka", "--a", f"{args.supernet}#{largest}", "--b", f"{args.supernet}#{smallest}",
                      "--out", str(out / "cka_largest_vs_smallest.png"), *common])


if __name__ == "__main__":
    sys.exit(run())
