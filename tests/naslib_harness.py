"""Import NASLib's real optimizers and Trainer from the peers' folder (for tests and benchmarks).

NASLib is not on PyPI; its package is read from ``$NASROBUST_NASLIB`` or ``../shared/peers/naslib``.
Its ``__init__`` files import many optional packages, and it uses ``collections.Iterable`` (gone in
Python 3.10): :func:`naslib_modules` stubs only modules that NASLib's own files import and that are
not installed, restores the aliases, and works around NASLib's numpy-2 bug
(``count_parameters_in_MB`` calls ``np.sum(generator)``). Nothing of NASLib is copied here, and
none of this is in the adapter (``nasrobust.searchers.naslib``).
"""

from __future__ import annotations

import collections
import collections.abc
import importlib
import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from unittest import mock

import numpy as np
import pytest

ROOT = Path(os.environ.get("NASROBUST_NASLIB", Path(__file__).resolve().parents[2] / "shared" / "peers" / "naslib"))
#: NASLib's discrete optimizers: module under ``naslib.optimizers.discrete`` -> class name.
OPTIMIZERS = {"rs": "RandomSearch", "re": "RegularizedEvolution", "ls": "LocalSearch", "npenas": "Npenas",
              "bananas": "Bananas"}


def available() -> bool:
    return (ROOT / "naslib").is_dir()


class _StubMissing(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answer NASLib's imports of uninstalled optional packages with mocks; nothing else."""

    def find_spec(self, name, path, target=None):
        top = name.split(".")[0]
        frame = sys._getframe(1)
        while frame and frame.f_code.co_filename.startswith("<frozen"):
            frame = frame.f_back
        if not (frame and frame.f_code.co_filename.startswith(str(ROOT))):
            return None
        if top == "naslib" or top in sys.stdlib_module_names:
            return None
        if not isinstance(sys.modules.get(top), mock.MagicMock) and (
                top in sys.modules or importlib.machinery.PathFinder.find_spec(top) is not None):
            return None
        return importlib.machinery.ModuleSpec(name, self, is_package=True)

    def create_module(self, spec):
        module = mock.MagicMock(name=spec.name)
        module.__path__, module.__spec__ = [], spec
        return module

    def exec_module(self, module):
        pass


def _count_parameters_in_mb(model) -> float:
    """NASLib's count_parameters_in_MB with a list sum instead of np.sum(generator)."""
    return sum(int(np.prod(v.size())) for name, v in model.named_parameters() if "auxiliary" not in name) / 1e6


class _NoCheckpointer:
    """fvcore's Checkpointer/PeriodicCheckpointer surface the Trainer calls, keeping nothing."""

    def __init__(self, *args, **kwargs):
        self.steps: list[int] = []

    def step(self, epoch: int) -> None:
        self.steps.append(epoch)

    def has_checkpoint(self) -> bool:
        return False


@contextmanager
def naslib_modules() -> Iterator[dict[str, ModuleType]]:
    """NASLib's optimizer modules (keys of :data:`OPTIMIZERS`) and ``trainer``, imported from its real source."""
    saved_path, saved_meta = list(sys.path), list(sys.meta_path)
    aliases = {n: getattr(collections, n, None) for n in ("Iterable", "Mapping", "Sequence", "MutableMapping")}
    for n in aliases:
        setattr(collections, n, getattr(collections.abc, n))
    sys.path.insert(0, str(ROOT))
    sys.meta_path.insert(0, _StubMissing())
    try:
        mods = {k: importlib.import_module(f"naslib.optimizers.discrete.{k}.optimizer") for k in OPTIMIZERS}
        mods["trainer"] = importlib.import_module("naslib.defaults.trainer")
        with pytest.MonkeyPatch.context() as mp:
            # NASLib's count_parameters_in_MB calls np.sum(generator), a TypeError on numpy 2; the
            # Trainer reaches it via optimizer.get_model_size(). Patch naslib.utils and every NASLib
            # module that imported it by name.
            for mod in [m for n, m in list(sys.modules.items()) if n.startswith("naslib")]:
                if getattr(mod, "count_parameters_in_MB", None) is not None and not isinstance(mod, mock.MagicMock):
                    mp.setattr(mod, "count_parameters_in_MB", _count_parameters_in_mb)
            # fvcore (uninstalled, so mocked) provides the Trainer's checkpointers; a class derived
            # from a mock is a mock whose side_effect runs dry after one call, so give the Trainer
            # checkpointers that keep nothing (resuming is not under test).
            mp.setattr(sys.modules["naslib.utils"], "Checkpointer", _NoCheckpointer)
            mp.setattr(mods["trainer"], "PeriodicCheckpointer", _NoCheckpointer)
            yield mods
    finally:
        sys.path[:], sys.meta_path[:] = saved_path, saved_meta
        for n, v in aliases.items():
            if v is None:
                delattr(collections, n)
            else:
                setattr(collections, n, v)


def search_config(epochs: int, seed: int = 0, encoding_type: str = "adjacency_one_hot"):
    """The ``config`` NASLib's optimizers read (its defaults for discrete search, ``predictor_type`` mlp)."""
    import types

    search = types.SimpleNamespace(epochs=epochs, sample_size=10, population_size=20, num_init=10,
                                   fidelity=-1, checkpoint_freq=1000, encoding_type=encoding_type,
                                   k=5, load_labeled=False, max_mutations=1, num_arches_to_mutate=2,
                                   num_candidates=20, num_ensemble=1, predictor_type="mlp", use_zc_api=False,
                                   zc_ensemble=False, zc_names=[], zc_only=False, acq_fn_type="its",
                                   acq_fn_optimization="mutation", predictor="mlp", seed=seed)
    return types.SimpleNamespace(dataset="cifar10", search=search, seed=seed, save="", save_arch_weights=False)
