"""FGSM (Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015).

One signed-gradient step of size eps in the Linf ball: the weakest gradient attack, so the
``aa_le_pgd_le_fgsm`` sanity check expects PGD-Linf to do at least as well (torchattacks ``FGSM``).
"""

from __future__ import annotations

import torch.nn as nn

from nasrobust.noise.attacks.base import AttackSettings, AttackSpec, Perturb, register_attack


def build_fgsm(model: nn.Module, eps: float, s: AttackSettings, num_classes: int, seed: int) -> list[tuple[str, Perturb]]:
    import torchattacks

    return [("fgsm", torchattacks.FGSM(model, eps=eps))]


FGSM = register_attack(AttackSpec("fgsm", "linf", build_fgsm, order=10, doc="FGSM: one signed-gradient step (Linf)",
                                  transferable=True, strength=1))
