"""Search-space definitions, installed as ``nasrobust.spaces``.

Each public module here defines one family of spaces and registers it in
:data:`nasrobust.space.SPACES`; adding a space is one new file. Modules starting with ``_``
hold the torch modules a space builds and are imported lazily by ``build``.
"""

from nasrobust.registry import import_submodules

import_submodules(__name__, __path__)
