"""MIM / MI-FGSM (Dong et al., "Boosting Adversarial Attacks with Momentum", CVPR 2018).

``steps`` Linf steps of ``step_fraction * eps`` with momentum decayed by ``mim_decay`` (the
paper's 1.0), no random start (torchattacks ``MIFGSM``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn as nn

from nasrobust.noise.attacks.base import AttackSettings, AttackSpec, Perturb, register_attack
from nasrobust.noise.attacks.pgd import step_params


def build_mim(model: nn.Module, eps: float, s: AttackSettings, num_classes: int, seed: int) -> list[tuple[str, Perturb]]:
    import torchattacks

    return [("mim", torchattacks.MIFGSM(model, eps=eps, alpha=s.step_fraction * eps, steps=s.steps, decay=s.mim_decay))]


def _params(s: AttackSettings, num_classes: int) -> Mapping[str, Any]:
    return {**step_params(s, num_classes), "mim_decay": s.mim_decay}


MIM = register_attack(AttackSpec("mim", "linf", build_mim, order=50, doc="momentum iterative FGSM (Linf)",
                                 transferable=True, params=_params))
