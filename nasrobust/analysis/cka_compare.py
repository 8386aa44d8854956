"""Comparing networks by CKA, with bootstrap intervals over test images.

What Cianfarani et al. (NeurIPS 2022) compare between standard and adversarially trained
networks, as numbers with uncertainty: each network's block structure
(:func:`~nasrobust.analysis.cka.block_structure`) and long-range similarity, the paired
difference of the two networks' block scores, the CKA of corresponding layers of two networks
of one architecture (standard vs robust, or one run's best vs last epoch), and whether that
similarity falls with depth ("robust overfitting mostly affects deeper layers").

The intervals are percentile bootstrap intervals over *batches of test images*: the minibatch
CKA is a ratio of averages of per-batch HSIC_1 values over disjoint random batches, so
resampling the batches with replacement resamples the images they hold, without running the
models again. (Resampling single images would put duplicates inside a batch, which biases the
HSIC U-statistic.) Both maps of a comparison are resampled together, so differences are paired.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nasrobust.analysis.cka import BatchHSIC, BlockStructure, CKAResult, block_scores, block_structure, long_range_similarity
from nasrobust.errors import NasRobustError


@dataclass(frozen=True)
class Interval:
    """A statistic and its percentile bootstrap interval (``low``/``high`` are None without a bootstrap)."""

    value: float
    low: float | None = None
    high: float | None = None

    @classmethod
    def of(cls, value: float, samples: np.ndarray | None, confidence: float) -> "Interval":
        if samples is None:
            return cls(float(value))
        tail = 100 * (1 - confidence) / 2
        low, high = np.nanpercentile(samples, [tail, 100 - tail])
        return cls(float(value), float(low), float(high))

    def to_dict(self) -> dict[str, float | None]:
        return {"value": self.value, "low": self.low, "high": self.high}

    def __str__(self) -> str:
        if self.low is None:
            return f"{self.value:.3f}"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True, eq=False)
class Resamples:
    """The CKA maps of ``n`` bootstrap resamples of the batches: (n, A, B), (n, A, A), (n, B, B)."""

    cross: np.ndarray
    self_a: np.ndarray
    self_b: np.ndarray


def bootstrap(per_batch: BatchHSIC, n_boot: int, seed: int) -> Resamples:
    """Resample the batches with replacement ``n_boot`` times (a ``numpy`` generator seeded with ``seed``)."""
    if per_batch.batches < 2:
        raise NasRobustError(f"a bootstrap over batches needs at least 2 batches, got {per_batch.batches}; "
                             f"lower the batch size or use more examples")
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(per_batch.batches, np.full(per_batch.batches, 1.0 / per_batch.batches), size=n_boot)
    return Resamples(*per_batch.cka(counts))


@dataclass(frozen=True)
class BlockSummary:
    """One network's block structure (:class:`BlockStructure`) with intervals and the block's layer names."""

    structure: BlockStructure
    score: Interval
    long_range: Interval
    first_layer: str
    last_layer: str

    def to_dict(self) -> dict[str, Any]:
        s = self.structure
        return {"score": self.score.to_dict(), "long_range": self.long_range.to_dict(),
                "block": {"first_layer": self.first_layer, "last_layer": self.last_layer, "start": s.start,
                          "stop": s.stop, "within": s.within, "outside": s.outside},
                "layers": s.layers, "min_block": s.min_size}


@dataclass(frozen=True)
class LayerSimilarity:
    """CKA between the same layer of two networks of one architecture."""

    layer: str
    depth: int  # position in execution order
    cka: Interval


@dataclass(frozen=True)
class DepthTrend:
    """Does the change between two networks (1 - per-layer CKA) grow with depth?

    ``spearman``: rank correlation of layer depth with 1 - CKA (> 0: deeper layers differ more);
    ``deep_minus_shallow``: mean 1 - CKA of the deeper half of the layers minus the shallower half's.
    """

    spearman: Interval
    deep_minus_shallow: Interval

    def to_dict(self) -> dict[str, Any]:
        return {"spearman": self.spearman.to_dict(), "deep_minus_shallow": self.deep_minus_shallow.to_dict()}


@dataclass(frozen=True, eq=False)
class CKAComparison:
    """Everything :func:`compare` measures on one :class:`CKAResult`; ``to_dict`` is the CLI's JSON."""

    result: CKAResult
    blocks: dict[str, BlockSummary | None]
    differences: dict[str, Interval]  # a - b, paired: "block_score", "long_range" (two models only)
    per_layer: tuple[LayerSimilarity, ...] | None
    depth_trend: DepthTrend | None
    n_boot: int
    seed: int
    confidence: float
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "kernel": r.kernel, "n_examples": r.n_examples, "batch_size": r.batch_size, "batches": r.batches,
            "epochs": r.epochs, "bootstrap": {"n_boot": self.n_boot, "seed": self.seed, "confidence": self.confidence,
                                              "unit": "batch of test images"},
            "layers_a": list(r.matrix.index), "layers_b": list(r.matrix.columns),
            "block_structure": {k: (v.to_dict() if v else None) for k, v in self.blocks.items()},
            "difference_a_minus_b": {k: v.to_dict() for k, v in self.differences.items()},
            "per_layer": None if self.per_layer is None else [
                {"layer": p.layer, "depth": p.depth, "cka": p.cka.to_dict()} for p in self.per_layer],
            "depth_trend": self.depth_trend.to_dict() if self.depth_trend else None,
            "notes": list(self.notes),
        }


def _rank(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)


def _spearman_with_depth(change: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of ``change`` (k, L) with 0..L-1."""
    depth = _rank(np.arange(change.shape[-1], dtype=np.float64))
    r = _rank(change)
    dc, rc = depth - depth.mean(), r - r.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rc @ dc) / np.sqrt((rc**2).sum(axis=-1) * (dc**2).sum())


def _deep_minus_shallow(change: np.ndarray) -> np.ndarray:
    half = change.shape[-1] // 2
    return change[..., -half:].mean(axis=-1) - change[..., :half].mean(axis=-1)


def _block(matrix, samples: np.ndarray | None, min_block: int, confidence: float) -> BlockSummary:
    s = block_structure(matrix, min_block)
    names = list(matrix.index)
    score = None if samples is None else block_scores(samples, min_block)
    long_range = None if samples is None else long_range_similarity(samples)
    return BlockSummary(s, Interval.of(s.score, score, confidence), Interval.of(s.long_range, long_range, confidence),
                        names[s.start], names[s.stop - 1])


def compare(result: CKAResult, *, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95,
            min_block: int = 3, two_models: bool | None = None) -> CKAComparison:
    """Block structure of each network, their paired difference, per-layer CKA and its trend with depth.

    ``two_models`` (default: ``not result.same_model``) says whether ``result`` compares two
    networks; per-layer CKA needs both to have the same layer names in the same order. Statistics
    that do not apply are None, with the reason in ``notes``.
    """
    if not 0 < confidence < 1:
        raise NasRobustError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 0:
        raise NasRobustError(f"the number of bootstrap resamples must be >= 0, got {n_boot}")
    if n_boot and result.epochs != 1:
        raise NasRobustError(f"bootstrap intervals resample disjoint batches of test images, but {result.epochs} epochs "
                             f"reuse each image; use 1 epoch, or no bootstrap")
    if n_boot and result.per_batch is None:
        raise NasRobustError("this CKA result has no per-batch HSIC values to bootstrap")
    two = (not result.same_model) if two_models is None else two_models
    samples = bootstrap(result.per_batch, n_boot, seed) if n_boot else None
    notes: list[str] = []
    maps = {"a": (result.self_a, None if samples is None else samples.self_a)}
    if two:
        maps["b"] = (result.self_b, None if samples is None else samples.self_b)
    blocks: dict[str, BlockSummary | None] = {}
    for key, (matrix, boot) in maps.items():
        if len(matrix) <= min_block:
            notes.append(f"no block structure for model {key}: {len(matrix)} layers, blocks need >= {min_block} "
                         f"with one layer outside")
            blocks[key] = None
        else:
            blocks[key] = _block(matrix, boot, min_block, confidence)
    differences: dict[str, Interval] = {}
    if two and blocks.get("a") and blocks.get("b"):
        for name, stat, value in (("block_score", lambda m: block_scores(m, min_block), lambda b: b.score.value),
                                  ("long_range", long_range_similarity, lambda b: b.long_range.value)):
            boot = None if samples is None else stat(samples.self_a) - stat(samples.self_b)
            differences[name] = Interval.of(value(blocks["a"]) - value(blocks["b"]), boot, confidence)
    per_layer, trend = None, None
    names = list(result.matrix.index)
    if two and names == list(result.matrix.columns):
        diag = np.diagonal(result.matrix.to_numpy())
        boot_diag = None if samples is None else np.diagonal(samples.cross, axis1=1, axis2=2)
        per_layer = tuple(LayerSimilarity(name, i, Interval.of(diag[i], None if boot_diag is None else boot_diag[:, i],
                                                                confidence)) for i, name in enumerate(names))
        change = 1.0 - diag
        if len(names) < 3:
            notes.append("no depth trend: fewer than 3 layers")
        elif np.ptp(change) < 1e-9:
            notes.append("no depth trend: every layer has the same CKA (identical networks?)")
        else:
            bc = None if boot_diag is None else 1.0 - boot_diag
            trend = DepthTrend(
                Interval.of(_spearman_with_depth(change[None])[0], None if bc is None else _spearman_with_depth(bc),
                            confidence),
                Interval.of(_deep_minus_shallow(change), None if bc is None else _deep_minus_shallow(bc), confidence),
            )
    elif two:
        notes.append("no per-layer CKA: the two networks' layers differ (names or order); compare the full matrix")
    return CKAComparison(result, blocks, differences, per_layer, trend, n_boot, seed, confidence, tuple(notes))
