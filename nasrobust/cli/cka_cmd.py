"""``nasrobust cka``: layer-by-layer CKA of one network or between two, with block structure and bootstrap CIs."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
from pathlib import Path
from typing import Any

from nasrobust.cli.analyze_cmd import _csv
from nasrobust.cli.common import positive_int
from nasrobust.cli.guard import add_force
from nasrobust.outputs import check_output
from nasrobust.errors import NasRobustError

log = logging.getLogger(__name__)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cka",
        help="layer-by-layer CKA of one model or between two, with block-structure scores and bootstrap CIs",
        description="Minibatch linear (or RBF) CKA with the unbiased HSIC estimator (Nguyen et al. 2021) on a seeded "
        "random set of test images. With --b: the CKA of every layer of --a with every layer of --b, each model's own "
        "layer x layer map, and (same architecture) the CKA of corresponding layers and its trend with depth. "
        "Intervals: percentile bootstrap over batches of test images. A model is a stand-alone checkpoint, or "
        "SUPERNET_CKPT#ENCODING for a BN-recalibrated subnet. Writes OUT.png (heat maps), OUT.csv (the matrix), "
        "OUT_self_a.csv / OUT_self_b.csv (with --b) and OUT.json (every number).",
    )
    p.add_argument("--a", required=True, help="checkpoint (run folder or file), or SUPERNET_CKPT#ENCODING")
    p.add_argument("--b", help="second model (default: only --a, its layer x layer self-similarity)")
    p.add_argument("--dataset", help="images to compare on (default: the dataset both checkpoints were trained on)")
    p.add_argument("--data-root", help="folder of a dataset that is not bundled")
    p.add_argument("--n-examples", type=positive_int, default=1000,
                   help="test images used, drawn at random by --seed (default 1000)")
    p.add_argument("--batch-size", type=positive_int, default=50,
                   help="CKA minibatch size, >= 4 (default 50; the bootstrap resamples these batches)")
    p.add_argument("--epochs", type=positive_int, default=1,
                   help="passes over the images, reshuffled (default 1; more passes need --n-boot 0)")
    p.add_argument("--layers", type=_csv, help="module types or name globs to hook (default Conv2d,Linear)")
    p.add_argument("--kernel", choices=("linear", "rbf"), default="linear")
    p.add_argument("--rbf-threshold", type=float, default=1.0, help="RBF bandwidth as a multiple of the median distance")
    p.add_argument("--recalib-images", type=positive_int, default=2000, help="BN re-calibration images for subnets")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000; 0: no intervals)")
    p.add_argument("--confidence", type=float, default=0.95, help="level of the bootstrap intervals (default 0.95)")
    p.add_argument("--min-block", type=int, default=3, help="fewest layers of a block (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the image subset, its batches and the bootstrap")
    p.add_argument("--out", required=True, help="heat map image (.png); the CSV and JSON files go beside it")
    add_force(p, "an existing --out image and the files beside it")
    p.set_defaults(func=cmd_cka)


def output_files(out: Path, two_models: bool) -> dict[str, Path]:
    """Every file ``nasrobust cka --out OUT`` writes, by role."""
    files = {"heatmap": out, "matrix": out.with_suffix(".csv"), "json": out.with_suffix(".json")}
    if two_models:
        files["self_a"] = out.with_name(f"{out.stem}_self_a.csv")
        files["self_b"] = out.with_name(f"{out.stem}_self_b.csv")
    return files


def _check_options(args: argparse.Namespace) -> dict[str, Path]:
    """Every check that needs no model, before anything is loaded."""
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise NasRobustError(f"--out {out}: give a .png file (the CSV and JSON files are written beside it)")
    if args.batch_size < 4:
        raise NasRobustError(f"--batch-size {args.batch_size}: the unbiased HSIC estimator needs at least 4 examples per batch")
    if args.n_examples < 4:
        raise NasRobustError(f"--n-examples {args.n_examples}: CKA needs at least 4 examples")
    if args.n_boot < 0:
        raise NasRobustError(f"--n-boot must be >= 0, got {args.n_boot}")
    if args.n_boot and args.epochs > 1:
        raise NasRobustError("--epochs > 1 reuses every image, but the bootstrap resamples disjoint batches of images; "
                             "pass --epochs 1 or --n-boot 0")
    if args.n_boot and args.n_examples // args.batch_size < 2:
        raise NasRobustError(f"--n-examples {args.n_examples} makes {args.n_examples // args.batch_size} full batch(es) of "
                             f"{args.batch_size}; the bootstrap needs at least 2: pass --batch-size "
                             f"{max(4, args.n_examples // 2)} or less, or --n-boot 0")
    if not 0 < args.confidence < 1:
        raise NasRobustError(f"--confidence must be between 0 and 1 (e.g. 0.95), got {args.confidence}")
    if args.min_block < 2:
        raise NasRobustError(f"--min-block must be at least 2, got {args.min_block}")
    if args.rbf_threshold <= 0:
        raise NasRobustError(f"--rbf-threshold must be positive, got {args.rbf_threshold}")
    files = output_files(out, bool(args.b))
    check_output(out, force=args.force, companions=[p for role, p in files.items() if role != "heatmap"])
    return files


def _split(spec: str) -> tuple[str, str | None]:
    """``PATH`` -> (PATH, None); ``PATH#ENCODING`` -> (PATH, ENCODING)."""
    path, sep, encoding = spec.rpartition("#")
    if not sep:
        return spec, None
    if not encoding.strip():
        raise NasRobustError(f"{spec!r}: expected SUPERNET_CHECKPOINT#ENCODING with an encoding after '#'")
    return path, encoding.strip()


def load_model_spec(spec: str, data=None, *, recalib_images: int = 2000, seed: int = 0, device: Any = "cpu",
                    payload: dict | None = None):
    """A model from ``CHECKPOINT`` or ``SUPERNET_CHECKPOINT#ENCODING`` -> ``(model, meta, label)``.

    A subnet is BN-recalibrated on ``recalib_images`` training images of ``data`` (BigNAS /
    OFA: shared BN statistics do not fit a subnet) and extracted as a stand-alone module.
    ``payload`` is the already read checkpoint, if any.
    """
    from nasrobust import checkpoint
    from nasrobust.data import load_dataset

    path, encoding = _split(spec)
    payload = payload if payload is not None else checkpoint.read(path)
    meta = checkpoint.meta_of(payload)
    if encoding is None:
        if meta.kind == "supernet":
            raise NasRobustError(f"{path} is a supernet checkpoint; name one of its subnets as {path}#ENCODING")
        return checkpoint.model_from_payload(payload, path, device), meta, _label(path)
    if meta.kind != "supernet":
        raise NasRobustError(f"{path} is a {meta.kind} checkpoint, not a supernet; drop '#{encoding}' to use it as it is")
    from nasrobust.supernet import recalibrated_subnet

    supernet = checkpoint.supernet_from_payload(payload, path, device)
    arch = supernet.supernet.space.resolve(encoding)
    if data is None:
        data = load_dataset(meta.dataset["name"], root=meta.data_root)
    model = recalibrated_subnet(supernet, arch, data, n_images=recalib_images, seed=seed).to(device)
    return model, meta, f"{_label(path)}#{arch.encoding}"


def _label(path: str) -> str:
    """A short name of a checkpoint: its run folder, or ``RUN@epochNNN`` for a kept epoch."""
    p = Path(path)
    if p.name == "checkpoint.pt" or not p.suffix:  # the checkpoint of a run folder, or the folder
        return (p.parent if p.suffix else p).name or str(p)
    if p.parent.name == "epochs" and p.parent.parent.name:
        return f"{p.parent.parent.name}@{p.stem}"
    return p.name


def _dataset_name(args: argparse.Namespace, payloads: dict[str, dict]) -> str:
    from nasrobust import checkpoint

    trained = {key: checkpoint.meta_of(p).dataset["name"] for key, p in payloads.items()}
    if args.dataset:
        for key, name in trained.items():
            if name != args.dataset:
                log.warning("--%s was trained on %s; comparing it on %s images", key, name, args.dataset)
        return args.dataset
    if len(set(trained.values())) > 1:
        raise NasRobustError(f"--a was trained on {trained['a']} and --b on {trained['b']}; pass --dataset NAME to "
                             f"compare both on one dataset's test images")
    return trained["a"]


def _test_images(data, n: int, seed: int):
    """``n`` test images drawn by a generator seeded with ``seed`` (in that random order)."""
    import torch

    from nasrobust.data import stack

    total = len(data.test)
    if n > total:
        raise NasRobustError(f"--n-examples {n} exceeds the {total} test images of {data.info.name}; pass --n-examples {total} or less")
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].tolist()
    images, _ = stack(torch.utils.data.Subset(data.test, order))
    return images


def _command(args: argparse.Namespace) -> str:
    """The command with every option that changes a number spelled out (what the JSON says to rerun)."""
    parts = ["nasrobust", "cka", "--a", args.a]
    flags: list[tuple[str, Any]] = [
        ("--b", args.b), ("--dataset", args.dataset), ("--data-root", args.data_root), ("--n-examples", args.n_examples),
        ("--batch-size", args.batch_size), ("--epochs", args.epochs),
        ("--layers", ",".join(args.layers) if args.layers else None), ("--kernel", args.kernel),
        ("--rbf-threshold", args.rbf_threshold if args.kernel == "rbf" else None),
        ("--recalib-images", args.recalib_images if "#" in args.a + (args.b or "") else None),
        ("--n-boot", args.n_boot), ("--confidence", args.confidence), ("--min-block", args.min_block),
        ("--seed", args.seed), ("--out", args.out),
    ]
    for flag, value in flags:
        if value is not None:
            parts += [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def _panel_title(name: str, block) -> str:
    return name if block is None else f"{name}\nblock structure {block.score}"


def cmd_cka(args: argparse.Namespace) -> int:
    from nasrobust import checkpoint, distributed
    from nasrobust.analysis.cka import layer_cka
    from nasrobust.analysis.cka_compare import compare
    from nasrobust.analysis.plots import cka_heatmaps, to_png
    from nasrobust.data import load_dataset

    files = _check_options(args)
    specs = {"a": args.a} | ({"b": args.b} if args.b else {})
    paths = {key: _split(spec)[0] for key, spec in specs.items()}
    payloads = {key: checkpoint.read(path) for key, path in paths.items()}
    dataset = _dataset_name(args, payloads)
    meta_a = checkpoint.meta_of(payloads["a"])
    data = load_dataset(dataset, root=args.data_root or meta_a.data_root)
    images = _test_images(data, args.n_examples, args.seed)
    device = distributed.local_device()
    models, labels = {}, {}
    for key, spec in specs.items():
        models[key], _, labels[key] = load_model_spec(spec, data, recalib_images=args.recalib_images, seed=args.seed,
                                                      device=device, payload=payloads[key])
    result = layer_cka(models["a"], images, models.get("b"), layers_a=args.layers, layers_b=args.layers,
                       batch_size=args.batch_size, kernel=args.kernel, rbf_threshold=args.rbf_threshold,
                       epochs=args.epochs, seed=args.seed, device=device)
    two = bool(args.b)
    comparison = compare(result, n_boot=args.n_boot, seed=args.seed, confidence=args.confidence,
                         min_block=args.min_block, two_models=two)
    blocks = comparison.blocks
    if two:
        panels = [(_panel_title(f"a: {labels['a']}", blocks["a"]), result.self_a),
                  (_panel_title(f"b: {labels['b']}", blocks["b"]), result.self_b),
                  ("a vs b", result.matrix)]
    else:
        panels = [(_panel_title(labels["a"], blocks["a"]), result.self_a)]
    title = f"{args.kernel} CKA on {result.n_examples} {data.info.name} test images"
    files["heatmap"].parent.mkdir(parents=True, exist_ok=True)
    files["heatmap"].write_bytes(to_png(cka_heatmaps(panels, title)))
    (result.matrix if two else result.self_a).to_csv(files["matrix"], float_format="%.17g")
    if two:
        result.self_a.to_csv(files["self_a"], float_format="%.17g")
        result.self_b.to_csv(files["self_b"], float_format="%.17g")
    report = {
        "command": _command(args),
        "models": {key: {"spec": specs[key], "label": labels[key]} for key in specs},
        "dataset": data.info.name, "seed": args.seed, "layers": list(args.layers or ()) or "Conv2d,Linear",
        **comparison.to_dict(),
        "files": {role: str(path) for role, path in files.items()},
    }
    files["json"].write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")
    print(f"wrote {', '.join(str(p) for p in files.values())} ({len(result.matrix)} x {len(result.matrix.columns)} "
          f"layers, {result.batches} batches of <= {result.batch_size} images)")
    _print_summary(comparison, labels)
    return 0


def _print_summary(comparison, labels: dict[str, str]) -> None:
    level = f"{comparison.confidence:.0%} CI" if comparison.n_boot else "no CI"
    for key, block in comparison.blocks.items():
        if block is None:
            continue
        print(f"block structure of {labels[key]}: {block.score} ({level}; block {block.first_layer} .. "
              f"{block.last_layer}, long-range CKA {block.long_range})")
    for name, diff in comparison.differences.items():
        print(f"{name.replace('_', ' ')} a - b: {diff}")
    if comparison.per_layer:
        low = min(comparison.per_layer, key=lambda p: p.cka.value)
        print(f"per-layer CKA a vs b: lowest at {low.layer} ({low.cka}); mean "
              f"{sum(p.cka.value for p in comparison.per_layer) / len(comparison.per_layer):.3f}")
    if comparison.depth_trend is not None:
        t = comparison.depth_trend
        print(f"change (1 - CKA) vs depth: Spearman {t.spearman}; deeper half - shallower half {t.deep_minus_shallow}")
    for note in comparison.notes:
        print(f"note: {note}")
