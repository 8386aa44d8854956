"""NASLib's optimizer protocol on nasrobust spaces: conformance, and NASLib-style RE / LS loops driving it.

The two optimizers below are written the way NASLib's ``optimizers/discrete/re/optimizer.py`` and
``ls/optimizer.py`` are (``adapt_search_space`` / ``new_epoch`` / ``get_final_architecture``, models
as ``torch.nn.Module`` holders with ``.arch`` and ``.accuracy``, a ``ModuleList`` history) and touch
the search space only through the protocol: ``clone``, ``sample_random_architecture``, ``mutate``,
``get_nbhd``, ``query``, ``get_hash``.
"""

from __future__ import annotations

import collections
import enum

import numpy as np
import pytest
import torch

from nasrobust.errors import NasRobustError
from nasrobust.metrics import FunctionMetric, Oriented
from nasrobust.searchers.naslib import NASLibArch, run_naslib_optimizer
from nasrobust.space import get_space

SPACE = get_space("nb201")
W = np.random.default_rng(1).normal(size=30)


class Metric(enum.Enum):
    """Stand-in for ``naslib.search_spaces.core.query_metrics.Metric``."""

    VAL_ACCURACY = 2
    TRAIN_TIME = 6


def linear():
    return FunctionMetric(lambda a: float(SPACE.to_vector(a) @ W), "linear")


OPT = max(float(SPACE.to_vector(a) @ W) for a in SPACE.enumerate())


class MiniRegularizedEvolution:
    """NASLib's RE control flow, protocol calls only."""

    using_step_function = False

    def __init__(self, population_size=20, sample_size=5, seed=0):
        self.population_size, self.sample_size = population_size, sample_size
        self.population = collections.deque(maxlen=population_size)
        self.history = torch.nn.ModuleList()
        self.rng = np.random.default_rng(seed)

    def adapt_search_space(self, search_space, scope=None, dataset_api=None):
        assert search_space.QUERYABLE
        self.search_space = search_space.clone()

    def new_epoch(self, epoch):
        model = torch.nn.Module()
        model.arch = self.search_space.clone()
        if epoch < self.population_size:
            model.arch.sample_random_architecture(dataset_api=None)
        else:
            sample = [self.population[i] for i in self.rng.integers(len(self.population), size=self.sample_size)]
            parent = max(sample, key=lambda x: x.accuracy)
            model.arch.mutate(parent.arch, dataset_api=None)
        model.accuracy = model.arch.query(Metric.VAL_ACCURACY, "cifar10", dataset_api=None)
        self.population.append(model)
        self.history.append(model)

    def get_final_architecture(self):
        return max(self.history, key=lambda x: x.accuracy).arch


class MiniLocalSearch:
    """NASLib's LS control flow (best neighbour, restart at local optima), protocol calls only."""

    using_step_function = False

    def __init__(self, num_init=10):
        self.num_init = num_init
        self.nbhd, self.chosen, self.best_arch = [], None, None
        self.history = torch.nn.ModuleList()

    def adapt_search_space(self, search_space, scope=None, dataset_api=None):
        self.search_space = search_space.clone()

    def _random(self):
        model = torch.nn.Module()
        model.arch = self.search_space.clone()
        model.arch.sample_random_architecture(dataset_api=None)
        model.accuracy = model.arch.query(Metric.VAL_ACCURACY, "cifar10", dataset_api=None)
        return model

    def new_epoch(self, epoch):
        if epoch < self.num_init:
            model = self._random()
            if not self.best_arch or model.accuracy > self.best_arch.accuracy:
                self.best_arch = model
        elif not self.nbhd and self.chosen and self.best_arch.accuracy <= self.chosen.accuracy:
            model = self.chosen = self.best_arch = self._random()  # local optimum: restart
            self.nbhd = self.chosen.arch.get_nbhd(dataset_api=None)
        else:
            if not self.nbhd:
                self.chosen = self.best_arch
                self.nbhd = self.chosen.arch.get_nbhd(dataset_api=None)
            model = self.nbhd.pop()
            model.accuracy = model.arch.query(Metric.VAL_ACCURACY, "cifar10", dataset_api=None)
            if model.accuracy > self.best_arch.accuracy:
                self.best_arch = model
        self.history.append(model)

    def get_final_architecture(self):
        return max(self.history, key=lambda x: x.accuracy).arch


# ----------------------------------------------------------------------------- conformance
def test_protocol_conformance():
    metric = linear()
    g = NASLibArch(SPACE, metric, seed=0)
    assert g.QUERYABLE and g.get_type() == "nasrobust:nb201"
    g.sample_random_architecture(dataset_api=None)
    a = g.arch
    assert a.space == "nb201" and SPACE.arch(a.genome) == a
    c = g.clone()
    c.sample_random_architecture()
    assert g.arch == a, "a clone's architecture is its own"
    c.mutate(g, dataset_api=None)
    assert c.arch in SPACE.neighbors(a) and g.arch == a
    nbhd = g.get_nbhd(dataset_api=None)
    assert all(isinstance(m, torch.nn.Module) for m in nbhd)
    assert {m.arch.get_hash() for m in nbhd} == {n.encoding for n in SPACE.neighbors(a)}
    assert len(nbhd) == len(SPACE.neighbors(a))
    assert g.get_hash() == a.encoding and g.query(Metric.VAL_ACCURACY, "cifar10") == metric(a)
    assert g.query(Metric.TRAIN_TIME) == metric.measure(a).seconds >= 0
    np.testing.assert_array_equal(g.encode(), SPACE.to_vector(a))
    c.set_spec(a.encoding)
    assert c.get_hash() == g.get_hash()
    assert sum(1 for _ in g.get_arch_iterator()) == SPACE.size()


class _Encoding(enum.Enum):  # NASLib's EncodingType carries its name in .value
    ADJACENCY_ONE_HOT = "adjacency_one_hot"
    PATH = "path"


def test_attributes_npenas_bananas_and_trainer_read():
    g = NASLibArch(SPACE, linear(), seed=0)
    g.sample_random_architecture()
    assert g.instantiate_model is False, "True would make NPENAS/BANANAS call parse() to build a network"
    assert g.space_name == "nasrobust:nb201" and g.get_model_size() == 0.0
    np.testing.assert_array_equal(g.encode(encoding_type=_Encoding.ADJACENCY_ONE_HOT), SPACE.to_vector(g.arch))
    np.testing.assert_array_equal(g.encode(encoding_type=_Encoding.PATH), SPACE.path_vector(g.arch))
    with pytest.raises(NasRobustError, match="cannot produce encoding 'gcn' on space 'nb201'.*adjacency_one_hot, path"):
        g.encode(encoding_type="gcn")
    d = NASLibArch(get_space("darts"), linear(), seed=0)
    d.sample_random_architecture()
    np.testing.assert_array_equal(d.encode(encoding_type=_Encoding.PATH), get_space("darts").path_vector(d.arch))
    with pytest.raises(NasRobustError, match="cannot produce encoding 'gcn' on space 'darts'; supported: adjacency_one_hot, path"):
        d.encode(encoding_type="gcn")
    z = NASLibArch(get_space("zoo"), linear(), seed=0)
    z.sample_random_architecture()
    with pytest.raises(NasRobustError, match="cannot produce encoding 'path' on space 'zoo'; supported: adjacency_one_hot"):
        z.encode(encoding_type=_Encoding.PATH)


def test_nb201_path_encoding():
    """BANANAS' path encoding: one feature per op sequence on an input->output path; 'none' cuts a path."""
    conv3 = SPACE.arch(("nor_conv_3x3",) * 6)
    v = SPACE.path_vector(conv3)
    assert v.shape == (84,) and v.sum() == 3  # conv3 | conv3-conv3 (two paths, one feature) | conv3 x 3
    no_direct = SPACE.arch(("nor_conv_3x3",) * 3 + ("none",) + ("nor_conv_3x3",) * 2)
    assert SPACE.path_vector(no_direct).sum() == 2 and not SPACE.path_vector(no_direct)[v.nonzero()[0][0]]
    assert SPACE.path_vector(SPACE.arch(("none",) * 6)).sum() == 0
    # same ops, other places: the one-hot differs and so do the paths
    a = SPACE.arch(("skip_connect", "nor_conv_1x1", "avg_pool_3x3", "nor_conv_3x3", "nor_conv_3x3", "nor_conv_1x1"))
    b = SPACE.arch(("nor_conv_1x1", "skip_connect", "avg_pool_3x3", "nor_conv_3x3", "nor_conv_1x1", "nor_conv_3x3"))
    assert a != b and not np.array_equal(SPACE.path_vector(a), SPACE.path_vector(b))


def test_darts_path_encoding():
    """BANANAS' path encoding on darts: per cell and cell input, one feature per op sequence (length 1-4)
    on a path to an intermediate node; 'none' cuts a path; the two cells and two inputs are apart."""
    from nasrobust.spaces.darts import DartsGenome

    darts = get_space("darts")
    ops = ["max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
    # a chain: node i reads node i-1 (or input 1) through sep_conv_3x3 and input 0 through max_pool
    chain = tuple((("max_pool_3x3", 0), ("sep_conv_3x3", i + 1)) for i in range(4))
    v = darts.path_vector(darts.arch(DartsGenome(chain, chain)))
    assert v.shape == (2 * 2 * (7 + 49 + 343 + 2401),)
    # per cell: from input 0, max | max-sep | max-sep-sep | max-sep-sep-sep (4 features); from input 1,
    # sep | sep-sep | sep-sep-sep | sep-sep-sep-sep (4): 8 per cell, 16 in all
    assert v.sum() == 16
    sep, mx = ops.index("sep_conv_3x3"), ops.index("max_pool_3x3")
    assert v[2800 + 7 + 49 + 343 + sep * (1 + 7 + 49 + 343)]  # input 1 of the normal cell: sep x 4
    assert v[mx] and v[5600 + mx] and not v[2800 + mx]  # max from input 0 of both cells, never from input 1
    cut = tuple((("max_pool_3x3", 0), ("none" if i == 1 else "sep_conv_3x3", i + 1)) for i in range(4))
    w = darts.path_vector(darts.arch(DartsGenome(cut, chain)))
    assert w.sum() < v.sum() and np.all(w[5600:] == v[5600:])  # a 'none' edge cuts the normal cell's chain
    a, b = darts.sample(2, seed=0)
    assert not np.array_equal(darts.path_vector(a), darts.path_vector(b))


def test_query_is_oriented_for_lower_is_better_metrics():
    g = NASLibArch(SPACE, Oriented(linear(), higher_is_better=False), seed=0)
    g.sample_random_architecture()
    assert g.query() == -float(SPACE.to_vector(g.arch) @ W), "NASLib maximises, so a lower-is-better metric is negated"


# ----------------------------------------------------------------------------- NASLib-style optimizers
@pytest.mark.parametrize("make, epochs, min_hits", [
    (lambda seed: MiniRegularizedEvolution(seed=seed), 200, 3),
    (lambda seed: MiniLocalSearch(), 200, 6),
])
def test_naslib_style_optimizers_find_the_optimum(make, epochs, min_hits):
    """Over 10 seeds, each optimizer reaches the optimum of the linear metric far more often than random
    sampling of the same number of queries (about 200 / 15,625 draws of a one-cell class: < 0.03 per run,
    so 3 hits in 10 runs has p < 0.003)."""
    hits = 0
    for seed in range(10):
        final = run_naslib_optimizer(make(seed), SPACE, linear(), epochs, seed=seed)
        assert isinstance(final, NASLibArch)
        hits += final.query() == pytest.approx(OPT, abs=1e-12)
    assert hits >= min_hits
