"""Noise suites: adversarial, natural (corruptions, perturbation sequences), system and certified.

Every public module is imported so that its suites register in
:data:`nasrobust.noise.base.SUITES`.
"""

from nasrobust.registry import import_submodules

import_submodules(__name__, __path__)
