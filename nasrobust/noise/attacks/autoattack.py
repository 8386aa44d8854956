"""AutoAttack "standard" (Croce & Hein, "Reliable Evaluation of Adversarial Robustness with an
Ensemble of Diverse Parameter-free Attacks", ICML 2020), exactly as the official
``autoattack/autoattack.py`` (``_set_version('standard')``) and RobustBench run it, built from
torchattacks' APGD / APGDT / FAB / Square with explicit arguments (torchattacks' own
``AutoAttack`` wrapper keeps their defaults: 10 iterations instead of 100, ``n_classes - 1``
targets instead of 9, and Square's rescaled schedule).

It runs once, at the suite's ``eps_autoattack``; it is the strongest rank of the
``aa_le_pgd_le_fgsm`` sanity check, and its last stage (Square, black-box) must break few
points the gradient stages could not.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch.nn as nn

from nasrobust.noise.attacks.base import AttackSettings, AttackSpec, Perturb, register_attack

#: AutoAttack "standard" as the official code sets it (autoattack.py ``_set_version``):
#: APGD-CE 100 iterations 1 restart, APGD-T 100 iterations 9 targets, FAB-T 100 iterations
#: 9 targets, Square 5,000 queries (p_init 0.8, no schedule rescaling).
AUTOATTACK_STANDARD: Mapping[str, Any] = MappingProxyType({
    "apgd_iters": 100, "apgd_restarts": 1, "apgd_rho": 0.75, "targets": 9, "fab_iters": 100,
    "fab_alpha_max": 0.1, "fab_eta": 1.05, "fab_beta": 0.9, "square_queries": 5000, "square_p_init": 0.8,
})
AUTOATTACK_STAGES: tuple[str, ...] = ("apgd-ce", "apgd-t", "fab-t", "square")


def autoattack_stages(model: nn.Module, eps: float, num_classes: int, seed: int,
                      norm: str = "Linf") -> list[tuple[str, Perturb]]:
    """AutoAttack "standard" as ``(stage name, attack)`` pairs, torchattacks classes, official arguments.

    torchattacks' APGDT and FAB take ``n_classes`` and attack ``n_classes - 1`` targets (the
    classes ranked 2nd..n_classes by the clean logits); the official code attacks 9 targets for
    every dataset. So ``n_classes = min(10, num_classes)``: 9 targets for CIFAR-10 *and*
    CIFAR-100/ImageNet, ``num_classes - 1`` only when fewer than 10 classes exist. Every
    stage gets the same seed, as the official ``get_seed()`` does. Square uses
    ``resc_schedule=False`` (the official AutoAttack sets it; torchattacks defaults to True).
    """
    import torchattacks

    s = AUTOATTACK_STANDARD
    n_cls = min(s["targets"] + 1, int(num_classes))
    return [
        ("apgd-ce", torchattacks.APGD(model, norm=norm, eps=eps, steps=s["apgd_iters"], n_restarts=s["apgd_restarts"],
                                      seed=seed, loss="ce", eot_iter=1, rho=s["apgd_rho"])),
        ("apgd-t", torchattacks.APGDT(model, norm=norm, eps=eps, steps=s["apgd_iters"], n_restarts=1, seed=seed,
                                      eot_iter=1, rho=s["apgd_rho"], n_classes=n_cls)),
        ("fab-t", torchattacks.FAB(model, norm=norm, eps=eps, steps=s["fab_iters"], n_restarts=1,
                                   alpha_max=s["fab_alpha_max"], eta=s["fab_eta"], beta=s["fab_beta"], seed=seed,
                                   multi_targeted=True, n_classes=n_cls)),
        ("square", torchattacks.Square(model, norm=norm, eps=eps, n_queries=s["square_queries"], n_restarts=1,
                                       p_init=s["square_p_init"], loss="margin", resc_schedule=False, seed=seed)),
    ]


def build_autoattack(model: nn.Module, eps: float, s: AttackSettings, num_classes: int, seed: int) -> list[tuple[str, Perturb]]:
    return autoattack_stages(model, eps, num_classes, seed)


def _params(s: AttackSettings, num_classes: int) -> Mapping[str, Any]:
    aa = AUTOATTACK_STANDARD
    return {"autoattack": "standard", "autoattack_targets": min(aa["targets"], num_classes - 1),
            "apgd_iters": aa["apgd_iters"], "fab_iters": aa["fab_iters"], "square_queries": aa["square_queries"]}


AUTOATTACK = register_attack(AttackSpec("autoattack", "linf", build_autoattack, order=70,
                                        doc="AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square (Linf)",
                                        single_budget=True, strength=3, black_box_last_stage=True, params=_params))
