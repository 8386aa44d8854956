"""The ``natural`` suite: ImageNet-C corruptions, CE / mCE, ImageNet-P flip probability, extra folders.

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019. For every corruption c and severity s the suite records accuracy;
with a reference model f_ref (by default the largest subnet of the same supernet) it records

* CE_c = sum_s E(f, c, s) / sum_s E(f_ref, c, s) and mCE = mean_c CE_c,
* relative CE_c = sum_s (E(f, c, s) - E(f, clean)) / sum_s (E(f_ref, c, s) - E(f_ref, clean)),
  relative mCE = mean_c relative CE_c,

where E is top-1 error. Corrupted test images depend on the data only, so they are made once
per (dataset, test subset, parameter set, seed), stored as uint8 (as ImageNet-C is
distributed as images) under the cache folder, and reused for every architecture.

Stability (ImageNet-P): for translate / rotate / scale / brightness / gaussian-noise
sequences the flip probability FP of the top-1 prediction (consecutive frames, or every frame
against the clean one for noise), recorded per sequence type, plus their mean (un-normalised
mFP; ImageNet-P normalises by AlexNet, which has no meaning on MNIST).

Optional folders (``extra_folders={"imagenet-a": path, ...}``): ImageNet-A/R and
Stylized-ImageNet are scored by accuracy with logits restricted to the classes present in the
folder (their published protocol); ImageNet-O by the AUPR of detecting its images among the
clean test images with the negative max-softmax as anomaly score.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from nasrobust.errors import NasRobustError
from nasrobust.inference import predict
from nasrobust.noise.base import CLEAN, SUITES, EvalContext, Measurement, MetricInfo, NoiseSuite, cached_tensor
from nasrobust.noise.corruptions import CORRUPTION_NAMES, corrupt
from nasrobust.noise.frost import frost_source
from nasrobust.noise.perturbations import PERTURBATIONS, flip_probability, perturbation_sequence
from nasrobust.options import option
from nasrobust.records import Protocol

log = logging.getLogger(__name__)

SUITE = "natural"
#: Metrics that rank architectures only when the per-corruption accuracies are not in a table.
_aggregate = partial(MetricInfo, rank_group=SUITE, rank_fallback=True)

FP_KINDS = ("translate", "rotate", "scale", "brightness", "gaussian_noise")
OOD_FOLDERS = ("imagenet-o",)


@dataclass(frozen=True)
class NaturalOptions:
    """Options of the natural suite."""

    corruptions: tuple[str, ...] = option(CORRUPTION_NAMES, "ImageNet-C corruptions", choices=CORRUPTION_NAMES,
                                          example="gaussian_noise,contrast")
    severities: tuple[int, ...] = option((1, 2, 3, 4, 5), "severities 1-5", choices=(1, 2, 3, 4, 5), example="1,3,5")
    parameter_set: str | None = option(None, "corruption parameters (default: cifar up to 64 px, else imagenet)",
                                       choices=("cifar", "imagenet"))
    fp_kinds: tuple[str, ...] = option(FP_KINDS, "ImageNet-P perturbation sequences (empty: none)",
                                       choices=lambda: tuple(PERTURBATIONS), allow_empty=True, example="translate")
    fp_examples: int = option(100, "test examples per perturbation sequence", ge=1)
    fp_length: int | None = option(None, "frames per sequence (default: the sequence's own)", ge=1)
    extra_folders: Mapping[str, str] = option({}, "NAME=FOLDER of ImageNet-A/R/O, Stylized, ...",
                                              allow_empty=True, example="imagenet-a=/data/imagenet-a")


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255


@SUITES.register(SUITE, "15 ImageNet-C corruptions x 5 severities, CE/mCE, ImageNet-P flip probability")
class NaturalNoise(NoiseSuite):
    """Common corruptions and perturbation stability. Options: :class:`NaturalOptions`."""

    name = SUITE
    Options = NaturalOptions
    metrics = (
        MetricInfo("accuracy", True, noise=CLEAN, rank_group=CLEAN, description="accuracy on the clean test examples"),
        MetricInfo("accuracy", True, headline="corruption acc", noise="mean_corruption",
                   description="accuracy averaged over every corruption and severity"),
        _aggregate("mce", False, headline="mCE", noise="mce",
                   description="mean corruption error relative to the reference model (Hendrycks & Dietterich 2019)"),
        MetricInfo("accuracy", True, rank_group=SUITE,
                   description="accuracy per corruption and severity (level), or on an extra folder (level 0)"),
        _aggregate("mean_accuracy", True, description="accuracy of one corruption averaged over its severities"),
        _aggregate("ce", False, description="corruption error of one corruption relative to the reference model"),
        _aggregate("relative_ce", False, description="error increase over clean, relative to the reference model's"),
        _aggregate("relative_mce", False, description="mean relative corruption error"),
        _aggregate("fp", False, description="ImageNet-P flip probability of the top-1 prediction along a sequence"),
        _aggregate("aupr", True, description="AUPR of detecting an out-of-distribution folder (ImageNet-O)"),
    )
    #: all 15 corruptions at severities 1, 3, 5; no ImageNet-P sequences
    cpu_options = MappingProxyType({"severities": (1, 3, 5), "fp_kinds": ()})

    def __init__(self, **options: Any):
        super().__init__(**options)
        for name, folder in self.options.extra_folders.items():
            if not Path(folder).expanduser().is_dir():
                raise NasRobustError(f"extra folder {name}={folder} does not exist")

    # ------------------------------------------------------------------ protocol and data
    def _set(self, ctx: EvalContext) -> str:
        return self.options.parameter_set or ("cifar" if max(ctx.images.shape[-2:]) <= 64 else "imagenet")

    def protocol(self, ctx: EvalContext) -> Protocol:
        return Protocol.make(
            seed=ctx.seed, n_examples=ctx.n_examples,
            params={
                "parameter_set": self._set(ctx),
                "corruptions": list(self.options.corruptions),
                "severities": list(self.options.severities),
                "reference": ctx.reference_name or "",
                "fp_kinds": list(self.options.fp_kinds),
                "fp_examples": min(self.options.fp_examples, ctx.n_examples),
                "fp_length": self.options.fp_length or 0,
                "storage": "uint8",
                "frost_textures": frost_source(),
                "extra_folders": sorted(self.options.extra_folders),
            },
        )

    def _corrupted(self, ctx: EvalContext, name: str, severity: int) -> torch.Tensor:
        pset = self._set(ctx)
        path = ctx.cache_path(self.name, kind="corruption", corruption=name, severity=severity, parameter_set=pset, seed=ctx.seed,
                              frost_textures=frost_source())

        def make() -> torch.Tensor:
            index = CORRUPTION_NAMES.index(name)
            gen = torch.Generator().manual_seed(ctx.seed * 1_000_003 + index * 10 + severity)
            parts = [to_uint8(corrupt(ctx.images[i:i + ctx.batch_size], name, severity, gen, pset))
                     for i in range(0, ctx.n_examples, ctx.batch_size)]
            return torch.cat(parts)

        return cached_tensor(path, make)

    def _sequence(self, ctx: EvalContext, kind: str) -> torch.Tensor:
        pset = self._set(ctx)
        n = min(self.options.fp_examples, ctx.n_examples)
        path = ctx.cache_path(self.name, kind="sequence", sequence=kind, parameter_set=pset, seed=ctx.seed, n=n, length=self.options.fp_length)

        def make() -> torch.Tensor:
            gen = torch.Generator().manual_seed(ctx.seed * 7919 + FP_KINDS.index(kind) if kind in FP_KINDS else ctx.seed)
            return to_uint8(perturbation_sequence(ctx.images[:n], kind, gen, length=self.options.fp_length, params=pset))

        return cached_tensor(path, make)

    def prepare(self, ctx: EvalContext) -> None:
        """Make (or find) every corrupted test set and perturbation sequence once."""
        from tqdm.auto import tqdm

        jobs = [(c, s) for c in self.options.corruptions for s in self.options.severities]
        for c, s in tqdm(jobs, desc="corrupting test set (cached)", leave=False,
                         disable=not (ctx.progress and log.isEnabledFor(logging.INFO))):
            self._corrupted(ctx, c, s)
        for kind in self.options.fp_kinds:
            self._sequence(ctx, kind)

    # ------------------------------------------------------------------ scoring
    def _accuracy(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, ctx: EvalContext) -> float:
        logits = predict(model, images, ctx.batch_size)
        return float((logits.argmax(1) == labels).float().mean())

    def run(self, model: nn.Module, ctx: EvalContext) -> Iterator[Measurement]:
        clean = float((ctx.clean_logits(model).argmax(1) == ctx.labels).float().mean())  # shared clean pass
        yield Measurement("clean", 0.0, "accuracy", clean)
        acc: dict[tuple[str, int], float] = {}
        for c in self.options.corruptions:
            for s in self.options.severities:
                acc[c, s] = self._accuracy(model, from_uint8(self._corrupted(ctx, c, s)), ctx.labels, ctx)
                yield Measurement(c, float(s), "accuracy", acc[c, s])
            yield Measurement(c, 0.0, "mean_accuracy", float(np.mean([acc[c, s] for s in self.options.severities])))
        yield Measurement("mean_corruption", 0.0, "accuracy", float(np.mean(list(acc.values()))))
        yield from self._corruption_errors(acc, clean, ctx)
        yield from self._flip_probabilities(model, ctx)
        yield from self._extra_folders(model, ctx)

    def _corruption_errors(self, acc: dict[tuple[str, int], float], clean: float, ctx: EvalContext) -> Iterator[Measurement]:
        """CE, relative CE and their means against the reference model's stored accuracies."""
        if ctx.reference is None:
            log.info("no reference model: CE / mCE not computed (pass a reference to the evaluator)")
            return
        ref = {(c, s): ctx.reference(self.name, c, float(s), "accuracy") for c, s in acc}
        ref_clean = ctx.reference(self.name, "clean", 0.0, "accuracy")
        if ref_clean is None or any(v is None for v in ref.values()):
            log.warning("reference %s has no natural-suite results under this protocol: CE / mCE skipped", ctx.reference_name)
            return
        ces, rel_ces = [], []
        for c in self.options.corruptions:
            err = sum(1 - acc[c, s] for s in self.options.severities)
            ref_err = sum(1 - ref[c, s] for s in self.options.severities)
            if ref_err > 0:
                ces.append(err / ref_err)
                yield Measurement(c, 0.0, "ce", ces[-1])
            gap = sum((1 - acc[c, s]) - (1 - clean) for s in self.options.severities)
            ref_gap = sum((1 - ref[c, s]) - (1 - ref_clean) for s in self.options.severities)
            if ref_gap > 0:
                rel_ces.append(gap / ref_gap)
                yield Measurement(c, 0.0, "relative_ce", rel_ces[-1])
        if ces:
            yield Measurement("mce", 0.0, "mce", float(np.mean(ces)))
        if rel_ces:
            yield Measurement("relative_mce", 0.0, "relative_mce", float(np.mean(rel_ces)))

    def _flip_probabilities(self, model: nn.Module, ctx: EvalContext) -> Iterator[Measurement]:
        fps = []
        for kind in self.options.fp_kinds:
            frames = self._sequence(ctx, kind)  # (T, N, C, H, W) uint8
            t, n = frames.shape[:2]
            logits = predict(model, from_uint8(frames.flatten(0, 1)), ctx.batch_size)
            preds = logits.argmax(1).view(t, n)
            fps.append(flip_probability(preds, compare=PERTURBATIONS[kind].compare))
            yield Measurement(f"fp/{kind}", 0.0, "fp", fps[-1])
        if fps:
            yield Measurement("fp/mean", 0.0, "fp", float(np.mean(fps)))

    def _extra_folders(self, model: nn.Module, ctx: EvalContext) -> Iterator[Measurement]:
        if not self.options.extra_folders:
            return
        from nasrobust.data import FolderImages, stack

        classes = getattr(ctx.data.test, "classes", None) or _folder_classes(ctx)
        for name, folder in sorted(self.options.extra_folders.items()):
            root = Path(folder).expanduser()
            present = sorted(p.name for p in root.iterdir() if p.is_dir())
            unknown = [c for c in present if c not in classes]
            if unknown:
                raise NasRobustError(f"{name}: classes {unknown[:5]} of {root} are not classes of {ctx.data.info.name}")
            images, labels = stack(FolderImages(root, classes, ctx.data.info.image_size))
            logits = predict(model, images, ctx.batch_size)
            if name in OOD_FOLDERS:
                from sklearn.metrics import average_precision_score

                clean_logits = ctx.clean_logits(model)
                score = -torch.cat([clean_logits, logits]).softmax(1).max(1).values
                is_ood = np.r_[np.zeros(len(clean_logits)), np.ones(len(logits))]
                yield Measurement(name, 0.0, "aupr", float(average_precision_score(is_ood, score.numpy())))
            else:
                mask = torch.full((logits.shape[1],), float("-inf"))
                mask[[classes.index(c) for c in present]] = 0
                acc = float(((logits + mask).argmax(1) == labels).float().mean())
                yield Measurement(name, 0.0, "accuracy", acc)


def _folder_classes(ctx: EvalContext) -> list[str]:
    samples = getattr(ctx.data.test, "samples", None)
    if not samples:
        raise NasRobustError("extra folders need an imagefolder dataset (class names to match)")
    return sorted({p.parent.name for p, _ in samples})
