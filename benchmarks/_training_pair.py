"""Shared set-up of the benchmarks that train one bignas-small network twice on mnist5k: standard and PGD-AT."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainingPair:
    data: Any  # nasrobust.data.ImageData
    arch: Any  # nasrobust.space.Arch
    cost: Any  # its analytic params / MACs at 28 px
    base: Any  # the standard recipe: preset `quick` with `epochs`
    recipes: dict  # {"standard": base, "pgd-at": base + Madry PGD-AT}


def standard_and_pgd(encoding: str, epochs: int, eps: float, steps: int, alpha: float) -> TrainingPair:
    """mnist5k, the architecture, and two recipes that differ only in PGD-AT (Linf ``eps``, ``steps`` of ``alpha``)."""
    from nasrobust import get_space
    from nasrobust.data import load_dataset
    from nasrobust.train.recipe import get_preset

    space = get_space("bignas-small")
    arch = space.decode(encoding)
    base = get_preset("quick").replace(epochs=epochs)
    pgd = base.replace(adversarial="pgd", adv_eps=eps, adv_steps=steps, adv_alpha=alpha)
    return TrainingPair(load_dataset("mnist5k"), arch, space.cost(arch, num_classes=10, input_size=28), base,
                        {"standard": base, "pgd-at": pgd})


def train_runs(pair: TrainingPair, out, seeds) -> tuple[dict, float]:
    """Train (or resume) every recipe of ``pair`` for every seed in ``out/{name}-s{seed}``, keeping every epoch's
    weights; returns ``{(name, seed): run folder}`` and the wall seconds this took."""
    import time
    from pathlib import Path

    from nasrobust.train.api import train_standalone

    t0 = time.perf_counter()
    runs = {(name, seed): Path(out) / f"{name}-s{seed}" for seed in seeds for name in pair.recipes}
    for (name, seed), run in runs.items():
        train_standalone("bignas", pair.arch, pair.data, pair.recipes[name].replace(seed=seed), run, progress=False,
                         keep_epochs=True)
    return runs, time.perf_counter() - t0
