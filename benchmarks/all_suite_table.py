"""The all-suite table of stored subnets: one row per architecture, the headline number of every suite.

Reads a result store (e.g. the one ``make study`` writes) and prints / writes a Markdown table for
the first ``--n`` evaluated architectures in the order of ``--archs`` (the study's archs.jsonl):

    python benchmarks/all_suite_table.py --db study/results.db --archs study/archs.jsonl --n 20 \\
        --out benchmarks/all_suite_20.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _report import emit
from nasrobust import open_results

#: (suite, noise, level, metric, column, format)
COLUMNS = [
    ("adversarial", "clean", 0.0, "accuracy", "clean", "{:.2f}"),
    ("adversarial", "fgsm", 0.1, "accuracy", "FGSM 0.1", "{:.2f}"),
    ("adversarial", "pgd_linf", 0.1, "accuracy", "PGD-10 0.1", "{:.2f}"),
    ("adversarial", "pgd_linf", 0.1, "ar", "PGD AR", "{:.2f}"),
    ("adversarial", "worst_case", 1.0, "wcar", "WCAR", "{:.2f}"),
    ("natural", "mean_corruption", 0.0, "accuracy", "corr. acc", "{:.3f}"),
    ("natural", "mce", 0.0, "mce", "mCE", "{:.2f}"),
    ("natural", "relative_mce", 0.0, "relative_mce", "rel. mCE", "{:.2f}"),
    ("system", "summary", 0.0, "mean", "system mean", "{:.3f}"),
    ("system", "summary", 0.0, "std", "system std", "{:.3f}"),
    ("system", "summary", 0.0, "worst", "system worst", "{:.2f}"),
    ("certified", "ibp_linf", 0.0, "radius_mean", "IBP radius", "{:.1e}"),
    ("certified", "ibp_linf", 0.1, "certified_accuracy", "IBP cert. 0.1", "{:.2f}"),
    ("certified", "jacobian_linf", 0.1, "jacobian_estimate", "Jacobian estimate 0.1", "{:.1f}"),
]
SANITY = ("eps0_equals_clean", "monotonic_in_eps", "aa_le_pgd_le_fgsm", "no_zero_gradients")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--archs", required=True, help="archs.jsonl giving the order")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    store = open_results(args.db, create=False)
    order = [json.loads(line)["encoding"] for line in Path(args.archs).read_text().splitlines() if line.strip()]
    rows, encodings, n_examples = [], [], set()
    for enc in order:
        found = store.query(enc)
        if not found:
            continue
        recs = {(r.key.suite, r.key.noise, r.key.level, r.key.metric): r.value for r in found}
        n_examples |= {(r.key.suite, r.protocol.n_examples) for r in found}
        cells = [fmt.format(recs[c[:4]]) if c[:4] in recs else "-" for c in COLUMNS for fmt in [c[5]]]
        sanity = [recs.get(("adversarial", "sanity", 0.0, m)) for m in SANITY]
        cells.append("all pass" if all(v == 1.0 for v in sanity) else
                     "FLAGGED: " + ",".join(m for m, v in zip(SANITY, sanity) if v != 1.0))
        rows.append(cells)
        encodings.append(enc)
        if len(rows) == args.n:
            break
    header = ["#", *(c[4] for c in COLUMNS), "sanity checks"]
    counts = ", ".join(f"{suite} {n}" for suite, n in sorted(n_examples))
    lines = [f"# All-suite table: {len(rows)} subnets of `{args.db}`", "",
             f"Test images per suite: {counts}. Levels are Linf eps for FGSM / PGD / IBP / Jacobian; AR = accuracy "
             "among clean-correct images, WCAR = worst case over all attacks per image (AR form); corr. acc = mean "
             "over the stored corruptions and severities; mCE against the study's reference subnet; system = the "
             "decoder x resizer grid. The full protocol of every value is in the store (`nasrobust query --db DB "
             "--arch ENC`).", "",
             f"Reproduce: `python benchmarks/all_suite_table.py --db {args.db} --archs {args.archs} --n {args.n}`", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [f"| {i} | " + " | ".join(r) + " |" for i, r in enumerate(rows, 1)]
    lines += ["", "Architectures:", ""] + [f"{i}. `{e}`" for i, e in enumerate(encodings, 1)]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
