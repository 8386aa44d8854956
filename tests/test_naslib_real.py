"""NASLib's REAL discrete optimizers (rs, re, ls) driving NASLibArch on nb201, from the peers' folder.

NASLib is not on PyPI; its package is read from ``$NASROBUST_NASLIB`` or ``../shared/peers/naslib``
(skipped only when that folder is absent). ``tests/naslib_harness.py`` imports it (stubbing only
uninstalled optional packages that NASLib's own files import, restoring ``collections`` aliases,
patching its numpy-2 bug); ``benchmarks/peer_searchers.py`` uses the same harness. Nothing of
NASLib is copied here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from nasrobust.metrics import FunctionMetric
from nasrobust.searchers.naslib import NASLibArch, run_naslib_optimizer
from nasrobust.space import get_space

sys.path.insert(0, str(Path(__file__).resolve().parent))
import naslib_harness  # noqa: E402

pytestmark = pytest.mark.skipif(not naslib_harness.available(),
                                reason=f"NASLib source not at {naslib_harness.ROOT} (set NASROBUST_NASLIB)")

SPACE = get_space("nb201")
W = np.random.default_rng(1).normal(size=30)
OPT = max(float(SPACE.to_vector(a) @ W) for a in SPACE.enumerate())


@pytest.fixture(scope="module")
def naslib():
    """NASLib's optimizer modules and Trainer, imported from its real source (tests/naslib_harness.py)."""
    with naslib_harness.naslib_modules() as mods:
        yield mods


def _config(epochs: int):
    return naslib_harness.search_config(epochs)


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



@pytest.mark.parametrize("space_name", ["nb201", "darts"])
def test_real_bananas_with_its_path_encoding_predictor(naslib, monkeypatch, space_name):
    """NASLib's BANANAS with its own predictor (``predictor_type`` bananas: an MLP on the path
    encoding) runs through NASLibArch on nb201 and darts: every architecture it fits or ranks is
    path-encoded, with the space's ``path_vector`` (84 values on nb201, 11,200 on darts)."""
    space = get_space(space_name)
    seen: list[str] = []
    sizes: set[int] = set()
    encode = NASLibArch.encode

    def spy(self, encoding_type=None):
        seen.append(str(getattr(encoding_type, "value", encoding_type)))
        out = encode(self, encoding_type)
        sizes.add(len(out))
        return out

    monkeypatch.setattr(NASLibArch, "encode", spy)
    config = _config(20)
    config.search.predictor_type = "bananas"
    np.random.seed(0)
    w = np.random.default_rng(1).normal(size=len(space.to_vector(space.sample(1, seed=0)[0])))
    metric = FunctionMetric(lambda a: float(space.to_vector(a) @ w), "linear", cache=False)
    best = run_naslib_optimizer(naslib["bananas"].Bananas(config), space, metric, 20, seed=0)
    assert metric.calls == 20  # one query per epoch
    assert space_name != "nb201" or best.query() <= OPT + 1e-9  # w is W on nb201
    assert seen and set(seen) == {"path"}
    assert sizes == {len(space.path_vector(best.arch))} == {84 if space_name == "nb201" else 11200}
