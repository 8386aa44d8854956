"""Attacks of the adversarial suite: one module per attack, each registering an :class:`AttackSpec`.

The public API (specs, registry, threat-model helpers, the cascade) is :mod:`.base`, re-exported
here; every public module of the package is imported so that its attacks register.
"""

from nasrobust.noise.attacks.base import (
    ATTACKS, FAMILY_DEFAULTS, NORMS, AttackSettings, AttackSpec, Builder, CascadeResult, EpsDefaults, Perturb,
    attack_mode, attack_names, attack_spec, budget_tolerance, build_attack, derive_seed, lp_norms, predict_labels,
    project, project_l1, register_attack, run_cascade, sanitize, seeded_global_rng, within_budget, zero_gradient_mask,
)
from nasrobust.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = [
    "ATTACKS", "FAMILY_DEFAULTS", "NORMS", "AttackSettings", "AttackSpec", "Builder", "CascadeResult", "EpsDefaults",
    "Perturb", "attack_mode", "attack_names", "attack_spec", "budget_tolerance", "build_attack", "derive_seed",
    "lp_norms", "predict_labels", "project", "project_l1", "register_attack", "run_cascade", "sanitize",
    "seeded_global_rng", "within_budget", "zero_gradient_mask",
]
