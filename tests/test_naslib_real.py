"""NASLib's REAL discrete optimizers (rs, re, ls) driving NASLibArch on nb201, from the peers' folder.

NASLib is not on PyPI; its package is read from ``$NASROBUST_NASLIB`` or ``../shared/peers/naslib``
(skipped only when that folder is absent). Its ``__init__`` files import many optional packages,
and it uses ``collections.Iterable`` (gone in Python 3.10): the harness below stubs only
modules that NASLib's own files import and that are not installed, and restores the aliases.
Nothing of NASLib is copied here.
"""

from __future__ import annotations

import collections
import collections.abc
import importlib
import importlib.abc
import importlib.machinery
import os
import sys
import types
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from nasrobust.metrics import FunctionMetric
from nasrobust.searchers.naslib import NASLibArch, run_naslib_optimizer
from nasrobust.space import get_space

ROOT = Path(os.environ.get("NASROBUST_NASLIB", Path(__file__).resolve().parents[2] / "shared" / "peers" / "naslib"))
pytestmark = pytest.mark.skipif(not (ROOT / "naslib").is_dir(), reason=f"NASLib source not at {ROOT} (set NASROBUST_NASLIB)")

SPACE = get_space("nb201")
W = np.random.default_rng(1).normal(size=30)
OPT = max(float(SPACE.to_vector(a) @ W) for a in SPACE.enumerate())


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


@pytest.fixture(scope="module")
def naslib():
    """NASLib's rs, re and ls optimizer modules, imported from its real source."""
    saved_path, saved_meta = list(sys.path), list(sys.meta_path)
    aliases = {n: getattr(collections, n, None) for n in ("Iterable", "Mapping", "Sequence", "MutableMapping")}
    for n in aliases:
        setattr(collections, n, getattr(collections.abc, n))
    sys.path.insert(0, str(ROOT))
    sys.meta_path.insert(0, _StubMissing())
    try:
        mods = {k: importlib.import_module(f"naslib.optimizers.discrete.{k}.optimizer") for k in ("rs", "re", "ls", "npenas", "bananas")}
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


def _config(epochs: int) -> types.SimpleNamespace:
    search = types.SimpleNamespace(epochs=epochs, sample_size=10, population_size=20, num_init=10,
                                   fidelity=-1, checkpoint_freq=1000, encoding_type="adjacency_one_hot",
                                   k=5, load_labeled=False, max_mutations=1, num_arches_to_mutate=2,
                                   num_candidates=20, num_ensemble=1, predictor_type="mlp", use_zc_api=False,
                                   zc_ensemble=False, zc_names=[], zc_only=False, acq_fn_type="its",
                                   acq_fn_optimization="mutation", predictor="mlp", seed=0)
    return types.SimpleNamespace(dataset="cifar10", search=search, seed=0, save="", save_arch_weights=False)


def _best(naslib, name: str, cls: str, epochs: int, seed: int) -> float:
    np.random.seed(seed)  # NASLib's optimizers draw from the global numpy generator
    metric = FunctionMetric(lambda a: float(SPACE.to_vector(a) @ W), "linear")
    opt = getattr(naslib[name], cls)(_config(epochs))
    return run_naslib_optimizer(opt, SPACE, metric, epochs, seed=seed).query()


def _assert_beats_random_search(naslib, name: str, cls: str, seeds: range, epochs: int) -> None:
    """NASLib's ``name`` beats NASLib's RS at the same budget: one-sided Mann-Whitney p < 0.05."""
    found = [_best(naslib, name, cls, epochs, s) for s in seeds]
    rs = [_best(naslib, "rs", "RandomSearch", epochs, s) for s in seeds]
    assert all(v <= OPT + 1e-9 for v in found + rs)
    p = mannwhitneyu(found, rs, alternative="greater").pvalue
    print(f"{name}: found={np.round(found, 3).tolist()} rs={np.round(rs, 3).tolist()} opt={OPT:.3f} p={p:.4f}")
    assert p < 0.05, f"NASLib {name} {found} vs rs {rs}: one-sided Mann-Whitney p={p:.3f}"


@pytest.mark.parametrize("name, cls", [("re", "RegularizedEvolution"), ("ls", "LocalSearch")])
def test_real_naslib_optimizer_beats_its_random_search(naslib, name, cls):
    _assert_beats_random_search(naslib, name, cls, range(7), 60)


def _trainer_trajectory(naslib, cls_module: str, cls: str, epochs: int, seed: int, save: Path) -> tuple[list[float], float]:
    """NASLib's own Trainer.search over NASLibArch: the incumbent per epoch, and the final arch's score."""
    config = _config(epochs)
    config.search.seed, config.seed, config.save = seed, seed, str(save / f"{cls_module}-{seed}")
    opt = getattr(naslib[cls_module], cls)(config)
    opt.adapt_search_space(NASLibArch(SPACE, FunctionMetric(lambda a: float(SPACE.to_vector(a) @ W), "linear"), seed=seed))
    trainer = naslib["trainer"].Trainer(opt, config)
    trainer.search(report_incumbent=True)
    return list(trainer.search_trajectory.valid_acc), float(opt.get_final_architecture().query())


def test_real_naslib_trainer_runs_regularized_evolution(naslib, tmp_path):
    """NASLib's real Trainer.search drives its real RE through the adapter (get_model_size,
    checkpointing, train/test statistics, errors.json); RE's incumbent improves on its first
    architecture and beats NASLib's RS run by the same Trainer over seeds."""
    seeds, epochs = range(7), 60
    re_runs = [_trainer_trajectory(naslib, "re", "RegularizedEvolution", epochs, s, tmp_path) for s in seeds]
    rs_runs = [_trainer_trajectory(naslib, "rs", "RandomSearch", epochs, s, tmp_path) for s in seeds]
    for traj, final in re_runs + rs_runs:
        assert len(traj) == epochs and np.all(np.diff(traj) >= 0) and traj[-1] == pytest.approx(final)
        assert final <= OPT + 1e-9
    assert all(traj[-1] > traj[0] for traj, _ in re_runs), [traj[0] for traj, _ in re_runs]
    assert (tmp_path / "re-0" / "errors.json").is_file()
    found, rs = [f for _, f in re_runs], [f for _, f in rs_runs]
    p = mannwhitneyu(found, rs, alternative="greater").pvalue
    print(f"trainer re: found={np.round(found, 3).tolist()} rs={np.round(rs, 3).tolist()} opt={OPT:.3f} p={p:.4f}")
    assert p < 0.05, f"NASLib Trainer RE {found} vs RS {rs}: one-sided Mann-Whitney p={p:.3f}"

