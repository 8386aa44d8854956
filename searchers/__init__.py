"""Search algorithms, installed as ``nasrobust.searchers``.

Each public module registers its searchers in :data:`nasrobust.search.SEARCHERS`.
"""

from nasrobust.registry import import_submodules

import_submodules(__name__, __path__)
