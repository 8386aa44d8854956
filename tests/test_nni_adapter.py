"""NNI 3.0 strategies on nasrobust spaces: genome dimensions (no NNI needed), and real NNI runs (extra ``nni``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

from nasrobust.metrics import FunctionMetric
from nasrobust.search import SearchError, create_searcher
from nasrobust.searchers.nni_adapter import GenomeLayout, flatten_genome, genome_shape, rebuild_genome
from nasrobust.space import get_space

SPACE = get_space("nb201")
W = np.random.default_rng(1).normal(size=30)
N_GENOMES = 15625


def linear(fail_after=None):
    count = [0]

    def f(arch):
        count[0] += 1
        if fail_after is not None and count[0] > fail_after:
            raise KeyboardInterrupt
        return float(SPACE.to_vector(arch) @ W)

    return FunctionMetric(f, "linear")


# ----------------------------------------------------------------------------- dimensions (no NNI)
@pytest.mark.parametrize("name", ["nb201", "darts", "robarch", "bignas", "zoo"])
def test_genome_round_trip(name):
    space = get_space(name)
    rng = np.random.default_rng(0)
    for _ in range(20):
        g = space.random_genome(rng)
        assert rebuild_genome(genome_shape(g), iter(flatten_genome(g))) == g


def test_layout_of_nb201():
    from nasrobust.spaces.nb201 import OP_NAMES

    layout = GenomeLayout.discover(SPACE, np.random.default_rng(0), probes=500)
    assert len(layout.choices) == 6 and all(set(c) == set(OP_NAMES) for c in layout.choices)
    sample = dict(zip(layout.labels, ["nor_conv_3x3"] * 6))
    assert SPACE.arch(layout.genome(sample)) == SPACE.named()["all-conv3x3"]


def test_layout_keeps_constants_and_refuses_ragged_genomes():
    layout = GenomeLayout.discover(get_space("bignas"), np.random.default_rng(0), probes=300)
    g = get_space("bignas").random_genome(np.random.default_rng(5))
    leaves = flatten_genome(g)
    fixed = dict(layout.constants)
    sample = dict(zip(layout.labels, [v for i, v in enumerate(leaves) if i not in fixed]))
    assert layout.genome(sample) == g
    with pytest.raises(SearchError, match="different shapes"):
        GenomeLayout.discover(get_space("ofa-mbv3"), np.random.default_rng(0), probes=200)
    assert dataclasses.is_dataclass(g)


# ----------------------------------------------------------------------------- NNI itself
def test_nni_searchers_are_registered_without_nni():
    from nasrobust.search import list_searchers

    assert {"nni-evolution", "nni-random"} <= set(list_searchers())


def test_nni_regularized_evolution_beats_chance():
    pytest.importorskip("nni", reason="optional extra: pip install 'nasrobust[nni]' (nni==3.0)")
    values = np.array([float(SPACE.to_vector(a) @ W) for a in SPACE.enumerate()])
    archs = list(SPACE.enumerate())
    top = np.argsort(-values)[:3]
    top_cells = sum(len(SPACE.indices(archs[i])) for i in top)
    budget, seeds = 120, range(6)
    in_top = 0
    for seed in seeds:
        result = create_searcher("nni-evolution", SPACE, linear(), budget=budget, seed=seed).run()
        assert len(result.history) == budget and result.stopped == "budget"
        in_top += result.best.values[0] >= values[top[-1]]
    chance = 1 - (1 - top_cells / N_GENOMES) ** (2 * budget)  # generous: random draws hitting a top-3 class
    assert stats.binom.sf(in_top - 1, len(seeds), chance) < 0.01, (in_top, chance)


def test_nni_search_resumes_exactly(tmp_path):
    pytest.importorskip("nni", reason="optional extra: pip install 'nasrobust[nni]' (nni==3.0)")
    full = create_searcher("nni-evolution", SPACE, linear(), budget=40, seed=3).run()
    state = tmp_path / "state.jsonl"
    with pytest.raises(KeyboardInterrupt):
        create_searcher("nni-evolution", SPACE, linear(fail_after=15), budget=40, seed=3).run(state)
    metric = linear()
    resumed = create_searcher("nni-evolution", SPACE, metric, budget=40, seed=3).run(state)
    assert [(e.encoding, e.values) for e in resumed.history] == [(e.encoding, e.values) for e in full.history]
    assert metric.calls == 40 - 15
    rnd = create_searcher("nni-random", SPACE, linear(), budget=30, seed=0).run()
    assert len(rnd.history) == 30
