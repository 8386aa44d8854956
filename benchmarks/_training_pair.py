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
