"""Measure every ``zoo`` model and write ``spaces/zoo_costs.json`` (the zoo's cost table).

There is no analytic cost formula for arbitrary timm models, so the ``zoo`` space ships the
measured numbers: each model is built on the meta device and counted with
:func:`nasrobust.cost.measure_cost` (params exactly; MACs = half of
``torch.utils.flop_counter``'s FLOPs, the convention of BigNAS/OFA/RobustART) at its native
resolution (timm's ``pretrained_cfg`` / torchvision's default weights). It is measured with
two head sizes so that the classifier's cost per class is stored too (costs are linear in the
number of classes), which lets ``nasrobust sample --space zoo --num-classes 10`` answer
without torch.

Usage: ``python benchmarks/zoo_costs.py [--out spaces/zoo_costs.json] [--check]``.
``--check`` re-measures and exits 1 when the shipped table differs (e.g. after a timm upgrade).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import metadata
from pathlib import Path

from nasrobust.spaces._zoo_net import measure, native_config
from nasrobust.spaces.zoo import COST_TABLE, FAMILIES, MODELS

ROOT = Path(__file__).resolve().parents[1]
BASE_CLASSES = 1000
PROBE_CLASSES = 10  # a second head size, to get the per-class cost of the classifier


def measure_all() -> dict:
    models = {}
    for name, row in MODELS.items():
        start = time.perf_counter()
        res, mean, std = native_config(row)
        img_size = res if FAMILIES[row.family].fixed_size else None
        full = measure(row, BASE_CLASSES, res, img_size=img_size)
        probe = measure(row, PROBE_CLASSES, res, img_size=img_size).cost
        d_params = full.cost.params - probe.params
        d_macs = full.cost.flops - probe.flops
        span = BASE_CLASSES - PROBE_CLASSES
        if d_params % span or d_macs % span:
            raise RuntimeError(f"{name}: classifier cost is not linear in the number of classes")
        models[name] = {
            "source": row.source,
            "model": row.model,
            "resolution": res,
            "params": full.cost.params,
            "macs": full.cost.flops,
            "params_per_class": d_params // span,
            "macs_per_class": d_macs // span,
            "weight_layers": full.weight_layers,
            "mean": [round(float(v), 6) for v in mean],
            "std": [round(float(v), 6) for v in std],
        }
        print(
            f"{name:26s} {res:4d}px  {full.cost.params / 1e6:8.3f}M params  {full.cost.flops / 1e9:8.3f}G MACs"
            f"  ({time.perf_counter() - start:.2f} s)",
            file=sys.stderr,
        )
    return {
        "generated_by": "benchmarks/zoo_costs.py",
        "convention": "params exact; macs = torch.utils.flop_counter FLOPs / 2; batch 1, native resolution",
        "num_classes": BASE_CLASSES,
        "versions": {lib: metadata.version(lib) for lib in ("torch", "timm", "torchvision")},
        "models": models,
    }


def to_json(table: dict) -> str:
    """Pretty JSON with one line per model, so that diffs of the table stay readable."""
    head = json.dumps({k: v for k, v in table.items() if k != "models"}, indent=1)
    rows = ",\n".join(f"  {json.dumps(name)}: {json.dumps(row)}" for name, row in table["models"].items())
    return f'{head[:-2]},\n "models": {{\n{rows}\n }}\n}}\n'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "spaces" / COST_TABLE)
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    table = measure_all()
    elapsed = time.perf_counter() - start
    if args.check:
        shipped = json.loads(args.out.read_text())["models"]
        stale = [n for n in table["models"] if shipped.get(n) != table["models"][n]]
        print(f"measured {len(MODELS)} models in {elapsed:.1f} s; {len(stale)} differ from {args.out}: {stale}")
        return 1 if stale else 0
    args.out.write_text(to_json(table))
    print(f"measured {len(MODELS)} models in {elapsed:.1f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
